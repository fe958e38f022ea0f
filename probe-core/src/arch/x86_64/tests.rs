//! Unit tests with static byte fixtures: one per class and per rejection reason.

use alloc::collections::BTreeMap;
use core::cell::RefCell;

use super::plan::Op;
use super::*;
use crate::addr::{Addr, SpaceId};
use crate::arch::{Arch, PlanKind, Reject};
use crate::error::{MemError, MemErrorKind};
use crate::platform::AddressSpace;

/// A byte-granular sparse memory.
#[derive(Default)]
struct Mem(RefCell<BTreeMap<u64, u8>>);

impl Mem {
    fn map(&self, at: u64, len: u64) {
        let mut m = self.0.borrow_mut();
        for a in at..at + len {
            m.insert(a, 0);
        }
    }
    fn u64_at(&self, at: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read_exact(Addr(at), &mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

impl AddressSpace for Mem {
    fn id(&self) -> SpaceId {
        SpaceId(1)
    }
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        let m = self.0.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *m
                .get(&(addr.0 + i as u64))
                .ok_or(MemError::new(addr, MemErrorKind::Unmapped))?;
        }
        Ok(buf.len())
    }
    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        let mut m = self.0.borrow_mut();
        for i in 0..data.len() as u64 {
            if !m.contains_key(&(addr.0 + i)) {
                return Err(MemError::new(addr, MemErrorKind::Unmapped));
            }
        }
        for (i, &b) in data.iter().enumerate() {
            m.insert(addr.0 + i as u64, b);
        }
        Ok(())
    }
    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.write(addr, data)
    }
}

fn kind(code: &[u8]) -> Result<PlanKind, Reject> {
    X86_64::analyze(code).map(|p| X86_64::plan_kind(&p))
}

static EMULATED: &[&[u8]] = &[
    &[0x90],                                        // nop
    &[0x66, 0x90],                                  // xchg ax,ax
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],                // nop dword [rax+rax]
    &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], // nop word cs:[rax+rax]
    &[0xf3, 0x0f, 0x1e, 0xfa],                      // endbr64
    &[0xeb, 0x10],                                  // jmp rel8
    &[0xe9, 1, 2, 3, 4],                            // jmp rel32
    &[0xe8, 0, 0, 0, 0],                            // call rel32
    &[0x74, 0x05],                                  // je rel8
    &[0x0f, 0x8f, 0, 1, 0, 0],                      // jg rel32
    &[0x55],                                        // push rbp
    &[0x41, 0x57],                                  // push r15
    &[0x6a, 0xff],                                  // push -1
    &[0x5d],                                        // pop rbp
    &[0x48, 0x89, 0xe5],                            // mov rbp,rsp
    &[0x4c, 0x8b, 0xc7],                            // mov r8,rdi
    &[0xc3],                                        // ret
    &[0xf2, 0xc3],                                  // bnd ret
    &[0xc2, 0x10, 0x00],                            // ret 16
    &[0xff, 0xe0],                                  // jmp rax
    &[0x41, 0xff, 0xd3],                            // call r11
    &[0xff, 0x25, 0x10, 0, 0, 0],                   // jmp [rip+0x10]
    &[0xff, 0x14, 0xc5, 0, 1, 0, 0],                // call [rax*8+0x100]
    &[0x64, 0xff, 0x24, 0x25, 0x28, 0, 0, 0],       // jmp fs:[0x28]
    &[0x48, 0x8d, 0x3d, 0xf0, 0xff, 0xff, 0xff],    // lea rdi,[rip-0x10]
    &[0x8d, 0x05, 0xf0, 0xff, 0xff, 0xff],          // lea eax,[rip-0x10]
];

static BOOSTED: &[&[u8]] = &[
    &[0x48, 0x83, 0xec, 0x08],                      // sub rsp,8
    &[0x31, 0xc0],                                  // xor eax,eax
    &[0x48, 0x8b, 0x05, 0x10, 0, 0, 0],             // mov rax,[rip+0x10]
    &[0xc7, 0x05, 0x10, 0, 0, 0, 1, 0, 0, 0],       // mov dword [rip+0x10],1
    &[0xf3, 0x90],                                  // pause
    &[0xf3, 0x48, 0xa5],                            // rep movsq
    &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0], // mov rax,fs:[0x28]
    &[0xc5, 0xfd, 0x6f, 0x05, 0x10, 0, 0, 0],       // vmovdqa ymm0,[rip+0x10]
    &[0x9c],                                        // pushfq
    &[0xc9],                                        // leave
    &[0xff, 0x20],                                  // jmp [rax] (kept: emulated)
];

static STEPPED: &[&[u8]] = &[
    &[0xe2, 0xfe],                // loop $
    &[0xe3, 0x10],                // jrcxz
    &[0x67, 0xe2, 0x10],          // loopd (ecx)
    &[0xff, 0x35, 0x10, 0, 0, 0], // push [rip+0x10]
    &[0x67, 0xff, 0x10],          // call [eax]
];

static REJECTED: &[(&[u8], Reject)] = &[
    (&[0xcc], Reject::Trap),
    (&[0xcd, 0x80], Reject::Trap),
    (&[0xf1], Reject::Trap),
    (&[0x0f, 0x0b], Reject::Trap),
    (&[0xf4], Reject::Privileged),
    (&[0xfa], Reject::Privileged),
    (&[0xfb], Reject::Privileged),
    (&[0x0f, 0x22, 0xd8], Reject::Privileged), // mov cr3,rax
    (&[0x0f, 0x30], Reject::Privileged),       // wrmsr
    (&[0xe4, 0x60], Reject::PortIo),
    (&[0xee], Reject::PortIo),
    (&[0x6c], Reject::PortIo),
    (&[0x6f], Reject::PortIo),
    (&[0x0f, 0x05], Reject::SystemCall),
    (&[0x0f, 0x34], Reject::SystemCall),
    (&[0x0f, 0x07], Reject::SystemCall),       // sysret
    (&[0x8e, 0xd0], Reject::StackSegmentLoad), // mov ss,ax
    (&[0x66, 0xe8, 0, 0, 0, 0], Reject::Prefix),
    (&[0x66, 0x74, 0x00], Reject::Prefix),
    (&[0x48, 0x8b], Reject::Truncated { have: 2 }),
    (&[0xe8, 0, 0], Reject::Truncated { have: 3 }),
    (&[], Reject::Truncated { have: 0 }),
    (&[0x06, 0x90, 0x90], Reject::Invalid), // push es (invalid in 64-bit mode)
    (&[0x0f, 0xff, 0xff], Reject::Trap),    // ud0
    (&[0xcb], Reject::Unsupported),         // retf
    (&[0x48, 0xcf], Reject::Unsupported),   // iretq
    (&[0xc7, 0xf8, 0, 0, 0, 0], Reject::Unsupported), // xbegin
    (&[0x67, 0x8b, 0x05, 0, 0, 0, 0], Reject::Unsupported), // mov eax,[eip+0]
];

#[test]
fn classes() {
    for c in EMULATED {
        assert_eq!(kind(c), Ok(PlanKind::Emulate), "{c:02x?}");
    }
    for c in &BOOSTED[..BOOSTED.len() - 1] {
        assert_eq!(kind(c), Ok(PlanKind::Boost), "{c:02x?}");
    }
    assert_eq!(kind(BOOSTED[BOOSTED.len() - 1]), Ok(PlanKind::Emulate));
    for c in STEPPED {
        assert_eq!(kind(c), Ok(PlanKind::SingleStep), "{c:02x?}");
    }
    for (c, why) in REJECTED {
        assert_eq!(kind(c), Err(*why), "{c:02x?}");
    }
}

#[test]
fn trailing_bytes_are_ignored() {
    let p = X86_64::analyze(&[0x55, 0x48, 0x89, 0xe5, 0xcc]).unwrap();
    assert_eq!(X86_64::insn_len(&p), 1);
    assert_eq!(p.bytes(), &[0x55]);
    assert!(core::mem::size_of::<Plan>() <= 48);
}

fn regs() -> X86Regs {
    X86Regs {
        rax: 0x1111,
        rbp: 0x2222,
        rsp: 0x8000,
        r11: 0x4000,
        rip: 0x1000,
        eflags: 0x202,
        ..X86Regs::default()
    }
}

#[test]
fn emulate_push_call_ret() {
    let mem = Mem::default();
    mem.map(0x7f00, 0x200);
    let insn = Addr(0x1000);

    let mut r = regs();
    X86_64::emulate(&X86_64::analyze(&[0x55]).unwrap(), insn, &mut r, &mem).unwrap();
    assert_eq!((r.rsp, r.rip, mem.u64_at(0x7ff8)), (0x7ff8, 0x1001, 0x2222));

    let mut r = regs();
    let call = X86_64::analyze(&[0xe8, 0x10, 0, 0, 0]).unwrap();
    X86_64::emulate(&call, insn, &mut r, &mem).unwrap();
    assert_eq!((r.rsp, r.rip, mem.u64_at(0x7ff8)), (0x7ff8, 0x1015, 0x1005));
    assert_eq!(X86_64::return_address(&r, &mem), Ok(Addr(0x1005)));
    X86_64::set_return_address(&mut r, &mem, Addr(0x9999)).unwrap();

    let ret = X86_64::analyze(&[0xc2, 0x08, 0x00]).unwrap();
    X86_64::emulate(&ret, Addr(0x1015), &mut r, &mem).unwrap();
    assert_eq!((r.rsp, r.rip), (0x8008, 0x9999));

    // A failed push leaves the registers alone.
    let mut r = regs();
    r.rsp = 0x10;
    let before = r;
    assert!(X86_64::emulate(&call, insn, &mut r, &mem).is_err());
    assert_eq!(r, before);
}

#[test]
fn emulate_jcc_flags() {
    let mem = Mem::default();
    // (cc, flags that make it taken)
    let cases: [(u8, u64, u64); 8] = [
        (0x0, 1 << 11, 0),                   // jo
        (0x2, 1, 0),                         // jb
        (0x4, 1 << 6, 0),                    // je
        (0x6, 1 << 6, 0),                    // jbe
        (0x8, 1 << 7, 0),                    // js
        (0xa, 1 << 2, 0),                    // jp
        (0xc, 1 << 7, (1 << 7) | (1 << 11)), // jl: SF!=OF
        (0xe, 1 << 6, 1 << 7 | 1 << 11),     // jle
    ];
    for (cc, taken, not_taken) in cases {
        let p = X86_64::analyze(&[0x70 + cc, 0x10]).unwrap();
        let np = X86_64::analyze(&[0x71 + cc, 0x10]).unwrap();
        let mut r = regs();
        r.eflags = 0x202 | taken;
        X86_64::emulate(&p, Addr(0x1000), &mut r, &mem).unwrap();
        assert_eq!(r.rip, 0x1012, "cc {cc:x}");
        let mut r = regs();
        r.eflags = 0x202 | taken;
        X86_64::emulate(&np, Addr(0x1000), &mut r, &mem).unwrap();
        assert_eq!(r.rip, 0x1002, "ncc {cc:x}");
        let mut r = regs();
        r.eflags = 0x202 | not_taken;
        X86_64::emulate(&p, Addr(0x1000), &mut r, &mem).unwrap();
        assert_eq!(r.rip, 0x1002, "cc {cc:x} not taken");
    }
}

#[test]
fn emulate_indirect_through_memory() {
    let mem = Mem::default();
    mem.map(0x2000, 0x100);
    mem.map(0x7f00, 0x200);
    mem.write(Addr(0x2016), &0xdead_beef_u64.to_le_bytes())
        .unwrap();
    // jmp [rip+0x1010] at 0x1000 (len 6): 0x1006 + 0x1010 = 0x2016
    let p = X86_64::analyze(&[0xff, 0x25, 0x10, 0x10, 0, 0]).unwrap();
    let mut r = regs();
    X86_64::emulate(&p, Addr(0x1000), &mut r, &mem).unwrap();
    assert_eq!(r.rip, 0xdead_beef);
    // call [r11+rax*1-0x1ffb] with r11=0x4000, rax=0x1111: 0x5111 - 0x30fb = 0x2016
    let p = X86_64::analyze(&[0x41, 0xff, 0x94, 0x03, 0x05, 0xcf, 0xff, 0xff]).unwrap();
    let mut r = regs();
    X86_64::emulate(&p, Addr(0x1000), &mut r, &mem).unwrap();
    assert_eq!(
        (r.rip, r.rsp, mem.u64_at(0x7ff8)),
        (0xdead_beef, 0x7ff8, 0x1008)
    );
}

#[test]
fn boost_slots_near_and_far() {
    let insn = Addr(0x40_0000);
    // mov rax,[rip+0x10] -> target 0x400017
    let p = X86_64::analyze(&[0x48, 0x8b, 0x05, 0x10, 0, 0, 0]).unwrap();
    let mut out = [0u8; 64];
    let n = X86_64::encode_slot(&p, insn, Addr(0x50_0000), &mut out).unwrap();
    // near: disp re-aimed (0x400017 - 0x500007), then jmp back to 0x400007
    let d = (0x40_0017i64 - 0x50_0007) as i32;
    assert_eq!(&out[..3], &[0x48, 0x8b, 0x05]);
    assert_eq!(&out[3..7], &d.to_le_bytes());
    assert_eq!(out[7], 0xe9);
    assert_eq!(n, 12);
    // far: scratch register sequence
    let far = Addr(0x7f00_0000_0000);
    let n = X86_64::encode_slot(&p, insn, far, &mut out).unwrap();
    assert_eq!(&out[..5], &[0x48, 0x8d, 0x64, 0x24, 0x80]);
    assert!(n <= 64);
    assert_eq!(&out[n - 14..n - 8], &[0xff, 0x25, 0, 0, 0, 0]);
    // a short buffer is refused, untouched past its end
    let mut small = [0u8; 8];
    assert!(matches!(
        X86_64::encode_slot(&p, insn, far, &mut small),
        Err(Reject::SlotTooSmall { .. })
    ));
    // push [rip]: single-step, out of reach through a scratch register
    let p = X86_64::analyze(&[0xff, 0x35, 0x10, 0, 0, 0]).unwrap();
    assert!(X86_64::encode_slot(&p, insn, far, &mut out).is_ok());
    let Op::StepRipRel { rip } = p.op else {
        panic!("{p:?}")
    };
    let mut r = regs();
    let mut st = StepState::default();
    let saved = r.gpr(rip.scratch);
    X86_64::prepare_xol(&p, insn, far, &mut r, &mut st, &Mem::default()).unwrap();
    assert_eq!(r.rip, far.0);
    assert_eq!(r.gpr(rip.scratch), 0x40_0016);
    r.rip = far.0 + u64::from(rip.far_len);
    X86_64::finish_step(&p, insn, far, &mut r, &st, &Mem::default()).unwrap();
    assert_eq!((r.rip, r.gpr(rip.scratch)), (0x40_0006, saved));
}

#[test]
fn loop_step_fixup() {
    let insn = Addr(0x1000);
    let slot = Addr(0x9000);
    let p = X86_64::analyze(&[0xe2, 0xf0]).unwrap(); // loop 0x1000+2-16
    let mut out = [0u8; 64];
    let n = X86_64::encode_slot(&p, insn, slot, &mut out).unwrap();
    assert_eq!(&out[..n], &[0xe2, 0x02, 0xcc, 0xcc]);
    let mem = Mem::default();
    let mut st = StepState::default();
    let mut r = regs();
    X86_64::prepare_xol(&p, insn, slot, &mut r, &mut st, &mem).unwrap();
    r.rip = 0x9004;
    X86_64::finish_step(&p, insn, slot, &mut r, &st, &mem).unwrap();
    assert_eq!(r.rip, 0x1002 - 16);
    r.rip = 0x9002;
    X86_64::finish_step(&p, insn, slot, &mut r, &st, &mem).unwrap();
    assert_eq!(r.rip, 0x1002);
    X86_64::abort_step(&p, insn, slot, &mut r, &st);
    assert_eq!(r.rip, 0x1000);
    assert_eq!(X86_64::breakpoint_address(0x1001), Addr(0x1000));
    assert_eq!(X86_64::breakpoint_address(0), Addr(u64::MAX));
}

#[test]
fn plan_size() {
    // Reported in the design notes; keep it small (it lives in every probe).
    assert_eq!(core::mem::size_of::<Plan>(), 44);
}

#[test]
fn privileged_code_steps_or_emulates_what_user_code_refuses() {
    let k = |code: &[u8]| X86_64::analyze_privileged(code).map(|p| X86_64::plan_kind(&p));
    // mov cr3,rax; wrmsr; invlpg [rax]; lgdt [rax]: stepped from the slot.
    for code in [
        &[0x0f, 0x22, 0xd8][..],
        &[0x0f, 0x30],
        &[0x0f, 0x01, 0x38],
        &[0x0f, 0x01, 0x10],
    ] {
        assert_eq!(
            kind(code),
            Err(Reject::Privileged),
            "{code:x?} in user code"
        );
        assert_eq!(k(code), Ok(PlanKind::SingleStep), "{code:x?} in ring 0");
    }
    // hlt would wait forever with interrupts off; a RIP-relative operand is not relocated.
    assert_eq!(k(&[0xf4]), Err(Reject::Privileged));
    assert_eq!(
        k(&[0x0f, 0x01, 0x15, 0x10, 0, 0, 0]),
        Err(Reject::Unsupported)
    ); // lgdt [rip+16]
       // cli and sti only change IF: emulated.
    let mem = Mem::default();
    let mut r = regs();
    r.eflags |= super::regs::RFlags::IF.bits();
    let cli = X86_64::analyze_privileged(&[0xfa]).unwrap();
    assert_eq!(X86_64::plan_kind(&cli), PlanKind::Emulate);
    X86_64::emulate(&cli, Addr(0x1000), &mut r, &mem).unwrap();
    assert_eq!(
        (r.eflags & super::regs::RFlags::IF.bits(), r.rip),
        (0, 0x1001)
    );
    let sti = X86_64::analyze_privileged(&[0xfb]).unwrap();
    X86_64::emulate(&sti, Addr(0x1001), &mut r, &mem).unwrap();
    assert_eq!(
        (r.eflags & super::regs::RFlags::IF.bits(), r.rip),
        (super::regs::RFlags::IF.bits(), 0x1002)
    );
    // The slot of a stepped privileged instruction holds it as it is, then a breakpoint; the
    // fall-through maps back after the instruction.
    let wrmsr = X86_64::analyze_privileged(&[0x0f, 0x30]).unwrap();
    let mut out = [0u8; X86_64::SLOT_SIZE];
    let n = X86_64::encode_slot(&wrmsr, Addr(0x1000), Addr(0x9000), &mut out).unwrap();
    assert_eq!(&out[..n], &[0x0f, 0x30, 0xcc]);
    let mut r = regs();
    let mut st = Default::default();
    X86_64::prepare_xol(&wrmsr, Addr(0x1000), Addr(0x9000), &mut r, &mut st, &mem).unwrap();
    assert_eq!(r.rip, 0x9000);
    r.rip = 0x9002;
    X86_64::finish_step(&wrmsr, Addr(0x1000), Addr(0x9000), &mut r, &st, &mem).unwrap();
    assert_eq!(r.rip, 0x1002);
}
