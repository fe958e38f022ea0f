//! The out-of-line oracle: for every instruction of a corpus, executing it in place and
//! executing it through its plan (emulate; boosted slot then jump back; single-step in the
//! slot then `finish_step`) from the same state leave identical registers, memory, output and
//! status.

use probe_core::{Addr, AddressSpace, Arch, PlanKind, Platform, Registers};

use crate::isa::*;
use crate::{
    Machine, StepEvent, TaskStatus, ToyArch, ToyRegs, ToyStepState, DATA_BASE, STACK_TOP, TEXT_BASE,
};

fn corpus() -> Vec<Insn> {
    let mut v: Vec<Insn> = sample_insns().to_vec();
    v.extend([
        Insn::Push { rs: SP },
        Insn::Pop { rd: SP },
        Insn::Ld {
            rd: SP,
            base: SP,
            off: 8,
        },
        Insn::St {
            rs: SP,
            base: SP,
            off: -8,
        },
        Insn::Mov { rd: SP, rs: R1 },
        Insn::Ldpc { rd: R13, off: 8 },
        Insn::Ldpc { rd: SP, off: -0x40 },
        Insn::Ldpc { rd: R0, off: 4 },
        Insn::Call { off: -0x40 },
        Insn::Jr { rs: SP },
        Insn::Li {
            rd: R0,
            imm: i32::MAX,
        },
        Insn::CmpI { ra: R2, imm: -1 },
        Insn::AluI {
            op: AluOp::And,
            rd: R14,
            imm: 0xff,
        },
        Insn::AluI {
            op: AluOp::Xor,
            rd: R13,
            imm: -1,
        },
        Insn::Alu {
            op: AluOp::Sub,
            rd: R2,
            rs: R3,
        },
        Insn::Out { rs: SP },
    ]);
    v
}

fn initial_regs(zf: bool, nf: bool) -> ToyRegs {
    let mut r = ToyRegs {
        zf,
        nf,
        ..ToyRegs::default()
    };
    for (i, x) in r.r.iter_mut().enumerate() {
        *x = (i as u64).wrapping_mul(0x0123_4567_89ab_cdef) ^ 0x55;
    }
    r.r[2] = u64::MAX; // -1, for cmp edge cases
    r.r[3] = 1;
    r.r[7] = DATA_BASE + 0x100;
    r.r[9] = TEXT_BASE + 0x20;
    r.set_sp(STACK_TOP - 0x100);
    r
}

/// Snapshot of what an instruction may change.
#[derive(Debug, PartialEq, Eq)]
struct World {
    regs: ToyRegs,
    status: TaskStatus,
    output: Vec<u64>,
    data: Vec<u8>,
    stack: Vec<u8>,
}

fn world(m: &Machine, t: probe_core::TaskId) -> World {
    let s = m.task_space(t).unwrap();
    World {
        regs: m.regs(t).unwrap(),
        status: m.status(t).unwrap(),
        output: m.output(t),
        data: m.peek(s, Addr(DATA_BASE), 0x200).unwrap(),
        stack: m.peek(s, Addr(STACK_TOP - 0x200), 0x200).unwrap(),
    }
}

/// Run `insn` at file offset `off` both ways; `far` places the slot area out of `rel16`
/// reach.
fn check(insn: Insn, off: usize, zf: bool, nf: bool, far: bool) {
    let m = Machine::new();
    if far {
        m.set_xol_base(Some(Addr(0x100_0000)));
    }
    let mut text: Vec<u8> = (0..0x100).map(|i| (i * 13 + 5) as u8).collect();
    text[off..off + insn.len()].copy_from_slice(insn.encode().as_bytes());
    let file = m.add_file(&text);
    let (sa, ta) = m.spawn(file, off as u64).unwrap();
    let pattern: Vec<u8> = (0..0x200).map(|i| (i * 7 + 3) as u8).collect();
    m.poke(sa, Addr(DATA_BASE), &pattern).unwrap();
    m.poke(sa, Addr(STACK_TOP - 0x200), &pattern).unwrap();
    let insn_addr = Addr(TEXT_BASE + off as u64);
    let mut regs = initial_regs(zf, nf);
    regs.pc = insn_addr.0;
    m.set_regs(ta, regs);
    let (sb, tb) = m.fork(ta).unwrap();

    // In place.
    let ev = m.step(ta);
    assert!(
        matches!(ev, StepEvent::Normal | StepEvent::Exited(_)),
        "{insn}: {ev:?}"
    );
    let want = world(&m, ta);

    // Through the plan, with the breakpoint in the text as in real life.
    let plan = match ToyArch::analyze(&text[off..]) {
        Ok(p) => p,
        Err(_) => return,
    };
    let h = m.space(sb).unwrap();
    h.patch_code(insn_addr, ToyArch::BREAKPOINT).unwrap();
    assert_eq!(
        m.step(tb),
        StepEvent::Breakpoint { addr: insn_addr },
        "{insn}"
    );
    let mut r = m.regs(tb).unwrap();
    assert_eq!(ToyArch::breakpoint_address(r.ip()), insn_addr);
    match ToyArch::plan_kind(&plan) {
        PlanKind::Emulate => {
            ToyArch::emulate(&plan, insn_addr, &mut r, &h).unwrap();
            m.set_regs(tb, r);
        }
        kind => {
            let slot = m.xol_area(sb, insn_addr, 4).unwrap();
            let slot = Addr(slot.0 + ToyArch::SLOT_SIZE as u64); // use the second slot
            let mut buf = [0u8; ToyArch::SLOT_SIZE];
            let n = ToyArch::encode_slot(&plan, insn_addr, slot, &mut buf).unwrap();
            h.patch_code(slot, &buf[..n]).unwrap();
            let mut state = ToyStepState::default();
            ToyArch::prepare_xol(&plan, insn_addr, slot, &mut r, &mut state, &h).unwrap();
            m.set_regs(tb, r);
            if kind == PlanKind::Boost {
                let ev = m.step(tb);
                if ev == StepEvent::Normal {
                    assert_eq!(m.step(tb), StepEvent::Normal, "{insn}: jump back");
                } else {
                    assert!(matches!(ev, StepEvent::Exited(_)), "{insn}: {ev:?}");
                }
            } else {
                m.set_single_step(tb, true);
                assert_eq!(m.step(tb), StepEvent::SingleStepDone, "{insn}");
                let mut r = m.regs(tb).unwrap();
                ToyArch::finish_step(&plan, insn_addr, slot, &mut r, &state, &h).unwrap();
                m.set_regs(tb, r);
            }
        }
    }
    let mut got = world(&m, tb);
    if matches!(want.status, TaskStatus::Exited(_)) {
        // `halt` leaves `pc` at itself: in the slot for the boosted copy. The task is gone.
        got.regs.pc = want.regs.pc;
    }
    assert_eq!(got, want, "{insn} at {off:#x} zf={zf} nf={nf} far={far}");
}

#[test]
fn every_plan_matches_in_place_execution() {
    let mut checked = [0usize; 3];
    for insn in corpus() {
        let plan = ToyArch::analyze(insn.encode().as_bytes());
        let Ok(plan) = plan else { continue };
        checked[ToyArch::plan_kind(&plan) as usize] += 1;
        // 0x40: inside a page; 0x7c: an 8-byte instruction straddles a page boundary.
        for off in [0x40, 0x7c] {
            for (zf, nf) in [(false, false), (true, false), (false, true)] {
                for far in [false, true] {
                    check(insn, off, zf, nf, far);
                }
            }
        }
    }
    assert!(checked.iter().all(|&n| n >= 3), "{checked:?}");
}

#[test]
fn aborting_a_single_step_restores_the_scratch_register() {
    let insn = Insn::Ldpc { rd: R1, off: 16 };
    let plan = ToyArch::analyze(insn.encode().as_bytes()).unwrap();
    let before = initial_regs(false, false);
    let mut r = before;
    let mut state = ToyStepState::default();
    let m = Machine::new();
    let f = m.add_file(&[0; 64]);
    let (s, _) = m.spawn(f, 0).unwrap();
    let h = m.space(s).unwrap();
    let insn_addr = Addr(TEXT_BASE);
    let slot = Addr(0x9000);
    ToyArch::prepare_xol(&plan, insn_addr, slot, &mut r, &mut state, &h).unwrap();
    assert_eq!(r.pc, slot.0);
    assert_eq!(r.r[14], TEXT_BASE + 16);
    ToyArch::abort_step(&plan, insn_addr, slot, &mut r, &state);
    assert_eq!(
        r,
        ToyRegs {
            pc: insn_addr.0,
            ..before
        }
    );
}

#[test]
fn emulation_failures_change_nothing_and_return_addresses_live_on_the_stack() {
    let mut a = crate::asm::Asm::new();
    a.label("main").call("f").halt();
    a.label("f").push(R1).pop(R1).ret();
    let p = a.finish().unwrap();
    let m = Machine::new();
    let file = m.add_file(&p.bytes);
    let (s, t) = m.spawn(file, 0).unwrap();
    let h = m.space(s).unwrap();
    assert_eq!(m.step(t), StepEvent::Normal); // call f
    let mut r = m.regs(t).unwrap();
    assert_eq!(r.pc, TEXT_BASE + p.offset("f"));
    assert_eq!(ToyArch::return_address(&r, &h), Ok(Addr(TEXT_BASE + 4)));
    ToyArch::set_return_address(&mut r, &h, Addr(0xdead)).unwrap();
    assert_eq!(ToyArch::return_address(&r, &h), Ok(Addr(0xdead)));
    ToyArch::set_return_address(&mut r, &h, Addr(TEXT_BASE + 4)).unwrap();
    // A push onto an unmapped stack fails and changes nothing.
    let push = ToyArch::analyze(Insn::Push { rs: R1 }.encode().as_bytes()).unwrap();
    let mut bad = r;
    bad.set_sp(0x10);
    let copy = bad;
    assert!(ToyArch::emulate(&push, Addr(r.pc), &mut bad, &h).is_err());
    assert_eq!(bad, copy);
    // Emulating a non-emulate plan is refused.
    let mov = ToyArch::analyze(Insn::Mov { rd: R1, rs: R2 }.encode().as_bytes()).unwrap();
    assert!(ToyArch::emulate(&mov, Addr(r.pc), &mut bad, &h).is_err());
    assert_eq!(bad, copy);
    assert_eq!(m.run_to_exit(t, 10), Some(0));
}
