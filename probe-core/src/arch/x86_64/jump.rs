//! Whether a function entry can be probed by jump patching instead of a breakpoint: the
//! idea of the kernel's optprobes (`arch/x86/kernel/kprobes/opt.c`). A 5-byte `jmp rel32`
//! replaces the first instructions; they run, relocated, from a trampoline that jumps back
//! after them. That is only sound when
//!
//! - the displaced instructions (those the 5 bytes overlap, whole) lie inside the function
//!   and each runs the same from another address: no branch, call or return among them, no
//!   instruction the core would single-step or refuse, RIP-relative operands relocated;
//! - no instruction of the function branches into the displaced bytes past their first
//!   (a thread sent there would land in the middle of the `jmp`), found by decoding the whole
//!   function from its entry;
//! - the function has no indirect jump (a jump table could reach the displaced bytes; the
//!   kernel refuses these functions too). Indirect calls are fine: they leave the function.
//!
//! Code outside the function that jumps into its displaced bytes other than at the entry is
//! not seen, as in the kernel. A function whose first instruction is `endbr64` is patched
//! after it ([`entry_patch_offset`]), so that an indirect call still lands on an `endbr64`.
//!
//! [`jump_patch`] decides; [`encode_displaced`] writes the displaced instructions, relocated,
//! and the jump back, for the trampoline. Registration time, no allocation.

use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};

use super::analyze::analyze;
use super::plan::Op;
use crate::addr::Addr;
use crate::arch::Reject;

/// Length of the patched jump (`jmp rel32`).
pub const JUMP_LEN: usize = 5;

/// How a function entry can be jump-patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JumpPatch {
    /// Offset in the function where the jump goes.
    pub at: usize,
    /// Bytes the jump displaces (whole instructions, at least [`JUMP_LEN`]).
    pub displaced: usize,
    /// How many instructions those bytes hold.
    pub insns: usize,
    /// Whether one of them has a RIP-relative operand (the trampoline must be within
    /// +/-2 GiB of its target, as a slot must).
    pub rip_relative: bool,
}

/// Why a function entry cannot be jump-patched (it can still take a breakpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JumpRefusal {
    /// The function ends before the displaced instructions do.
    TooShort {
        /// The function's length.
        len: usize,
    },
    /// A displaced instruction is a branch, call or return (at this offset).
    Branch {
        /// Offset of the instruction in the function.
        offset: usize,
    },
    /// A displaced instruction cannot run from another address as it is (the core
    /// single-steps it, or refuses it: the reason is given).
    NotRelocatable {
        /// Offset of the instruction in the function.
        offset: usize,
        /// Why the core's analysis refuses it, if it does (`None`: it is single-stepped).
        reject: Option<Reject>,
    },
    /// An instruction of the function branches into the displaced bytes.
    BranchIntoDisplaced {
        /// Offset of the branching instruction.
        from: usize,
        /// Offset of its target.
        to: usize,
    },
    /// The function has an indirect jump (a jump table may reach the displaced bytes).
    IndirectJump {
        /// Offset of the jump.
        offset: usize,
    },
    /// Part of the function does not decode (data in the text, or a wrong size).
    Undecodable {
        /// Offset of the first byte that does not decode.
        offset: usize,
    },
}

/// `endbr64`.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Where a function's entry jump goes: after an `endbr64`, else at the entry.
pub fn entry_patch_offset(func: &[u8]) -> usize {
    if func.starts_with(&ENDBR64) {
        ENDBR64.len()
    } else {
        0
    }
}

/// Whether the function `func` (its whole body, from its entry) can take a jump at offset
/// `at` (see the module docs).
pub fn jump_patch(func: &[u8], at: usize) -> Result<JumpPatch, JumpRefusal> {
    // The displaced instructions.
    let mut off = at;
    let mut insns = 0;
    let mut rip_relative = false;
    while off < at + JUMP_LEN {
        if off >= func.len() {
            return Err(JumpRefusal::TooShort { len: func.len() });
        }
        let plan = match analyze(&func[off..], false) {
            Ok(p) => p,
            Err(Reject::Truncated { .. }) => {
                return Err(JumpRefusal::TooShort { len: func.len() });
            }
            Err(r) => {
                return Err(JumpRefusal::NotRelocatable {
                    offset: off,
                    reject: Some(r),
                });
            }
        };
        match plan.op {
            Op::Nop | Op::Push { .. } | Op::PushImm { .. } | Op::Pop { .. } | Op::MovRR { .. } => {}
            Op::Boost { rip } => rip_relative |= rip.is_some(),
            Op::LeaRip { .. } => rip_relative = true,
            Op::Jmp { .. }
            | Op::Call { .. }
            | Op::Jcc { .. }
            | Op::Ret { .. }
            | Op::JmpReg { .. }
            | Op::CallReg { .. }
            | Op::JmpMem { .. }
            | Op::CallMem { .. } => return Err(JumpRefusal::Branch { offset: off }),
            Op::StepLoop { .. }
            | Op::StepRipRel { .. }
            | Op::StepCall
            | Op::StepPrivileged
            | Op::Cli
            | Op::Sti => {
                return Err(JumpRefusal::NotRelocatable {
                    offset: off,
                    reject: None,
                })
            }
        }
        off += plan.len();
        insns += 1;
    }
    let displaced = off - at;
    check_branches(func, at, displaced)?;
    Ok(JumpPatch {
        at,
        displaced,
        insns,
        rip_relative,
    })
}

/// What a trampoline calls: `handler(regs, ctx)`, a C-ABI function given the register file
/// at the probe (an [`X86Regs`](super::X86Regs), `rip` the probed address) and a word of the
/// embedder's; it may change the general registers (not `rip`, `rsp` or `eflags`: those
/// are not taken back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerCall {
    /// The handler's address.
    pub handler: u64,
    /// Its second argument (the probe's identity, say).
    pub ctx: u64,
    /// How the vector and x87 state is kept across the handler: the handler may use any
    /// vector register, and at a function's entry the vector arguments are live.
    pub state: ExtendedState,
}

/// How a trampoline saves the extended (x87, SSE, AVX, AVX-512) state around its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendedState {
    /// `fxsave64`/`fxrstor64` (512 bytes: x87 and SSE only), for CPUs without `xsave`.
    Fxsave,
    /// `xsave64` of every component XCR0 enables; the size is CPUID leaf 0xD, sub-leaf 0,
    /// EBX.
    Xsave(u32),
    /// `xsavec64` (compacted, components in their initial state skipped: much cheaper when
    /// the upper AVX/AVX-512 state is clean, as it is between most calls); the size is
    /// CPUID leaf 0xD, sub-leaf 1, EBX; CPUID.(0xD,1):EAX bit 1 says it exists.
    Xsavec(u32),
    /// Only the eight vector argument registers, at this width: at a function's entry (the
    /// only place `jump_patch` puts a jump) the SysV ABI leaves nothing else of the vector
    /// state live that a C-ABI handler may change (xmm8-15 and every upper half are
    /// caller-saved, MXCSR's and the x87 control bits callee-saved). The cheapest choice;
    /// the width must cover the widest vector argument the CPU can pass (`Zmm` where
    /// AVX-512 is enabled, `Ymm` with AVX).
    ArgumentVectors(VectorWidth),
}

/// The width of the vector registers an [`ExtendedState::ArgumentVectors`] trampoline keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorWidth {
    /// `xmm0`-`xmm7` (SSE).
    Xmm,
    /// `ymm0`-`ymm7` (AVX).
    Ymm,
    /// `zmm0`-`zmm7` (AVX-512).
    Zmm,
}

/// Words of the register file saved on the stack.
const FRAME: i64 = 27 * 8;
/// The red zone below the interrupted stack pointer, stepped over first.
const RED_ZONE: i64 = 128;

/// Writes into `out`, for a trampoline at `tramp`, the whole trampoline of a jump-patched
/// probe: step over the red zone, save the register file (as an `X86Regs`) and the
/// extended state, call `call.handler(regs, call.ctx)` on a 64-byte aligned stack, restore
/// everything (general registers as the handler left them), then the displaced instructions
/// relocated and the jump back ([`encode_displaced`]). Returns the bytes written. Registration
/// time: it allocates (iced-x86's encoder).
pub fn encode_trampoline(
    func: &[u8],
    patch: &JumpPatch,
    func_addr: Addr,
    tramp: Addr,
    call: &HandlerCall,
    out: &mut [u8],
) -> Result<usize, Reject> {
    let head = trampoline_head(func_addr.raw().wrapping_add(patch.at as u64), call)
        .ok_or(Reject::Unsupported)?;
    let dst = out.get_mut(..head.len()).ok_or(Reject::SlotTooSmall {
        need: u16::try_from(head.len()).unwrap_or(u16::MAX),
    })?;
    dst.copy_from_slice(&head);
    let rest = &mut out[head.len()..];
    let tail = encode_displaced(
        func,
        patch,
        func_addr,
        Addr(tramp.raw().wrapping_add(head.len() as u64)),
        rest,
    )?;
    Ok(head.len() + tail)
}

/// The trampoline up to the displaced instructions (position-independent).
fn trampoline_head(probed: u64, call: &HandlerCall) -> Option<alloc::vec::Vec<u8>> {
    use iced_x86::{Code as C, Encoder, Instruction as I, MemoryOperand, Register as R};
    // The general registers in `X86Regs` order, by word index.
    const GPRS: [(R, i64); 15] = [
        (R::R15, 0),
        (R::R14, 1),
        (R::R13, 2),
        (R::R12, 3),
        (R::RBP, 4),
        (R::RBX, 5),
        (R::R11, 6),
        (R::R10, 7),
        (R::R9, 8),
        (R::R8, 9),
        (R::RAX, 10),
        (R::RCX, 11),
        (R::RDX, 12),
        (R::RSI, 13),
        (R::RDI, 14),
    ];
    const ORIG_RAX: i64 = 15;
    const RIP: i64 = 16;
    const EFLAGS: i64 = 18;
    const RSP: i64 = 19;
    let at = |word: i64| MemoryOperand::with_base_displ(R::RSP, word * 8);
    let mut v: alloc::vec::Vec<I> = alloc::vec::Vec::new();
    v.push(
        I::with2(
            C::Lea_r64_m,
            R::RSP,
            MemoryOperand::with_base_displ(R::RSP, -RED_ZONE),
        )
        .ok()?,
    );
    v.push(
        I::with2(
            C::Lea_r64_m,
            R::RSP,
            MemoryOperand::with_base_displ(R::RSP, -FRAME),
        )
        .ok()?,
    );
    for (r, w) in GPRS {
        v.push(I::with2(C::Mov_rm64_r64, at(w), r).ok()?);
    }
    v.push(I::with(C::Pushfq));
    v.push(I::with1(C::Pop_rm64, at(EFLAGS)).ok()?);
    v.push(
        I::with2(
            C::Lea_r64_m,
            R::RAX,
            MemoryOperand::with_base_displ(R::RSP, FRAME + RED_ZONE),
        )
        .ok()?,
    );
    v.push(I::with2(C::Mov_rm64_r64, at(RSP), R::RAX).ok()?);
    v.push(I::with2(C::Mov_r64_imm64, R::RAX, probed).ok()?);
    v.push(I::with2(C::Mov_rm64_r64, at(RIP), R::RAX).ok()?);
    for w in 15..27 {
        if w == RIP || w == EFLAGS || w == RSP {
            continue;
        }
        let val: i32 = if w == ORIG_RAX { -1 } else { 0 };
        v.push(I::with2(C::Mov_rm64_imm32, at(w), val).ok()?);
    }
    // rbx holds the frame across the call (callee-saved, and saved above).
    v.push(I::with2(C::Mov_rm64_r64, R::RBX, R::RSP).ok()?);
    // How the extended state is kept: a whole-state instruction, or moves of the eight
    // argument registers (code, register size).
    let (whole, vectors) = match call.state {
        ExtendedState::Fxsave => (
            Some((C::Fxsave64_m512byte, C::Fxrstor64_m512byte, 512, false)),
            None,
        ),
        ExtendedState::Xsave(n) => (
            Some((C::Xsave64_mem, C::Xrstor64_mem, i64::from(n), true)),
            None,
        ),
        ExtendedState::Xsavec(n) => (
            Some((C::Xsavec64_mem, C::Xrstor64_mem, i64::from(n), true)),
            None,
        ),
        ExtendedState::ArgumentVectors(w) => (
            None,
            Some(match w {
                VectorWidth::Xmm => (C::Movdqu_xmmm128_xmm, C::Movdqu_xmm_xmmm128, 16, R::XMM0),
                VectorWidth::Ymm => (
                    C::VEX_Vmovdqu_ymmm256_ymm,
                    C::VEX_Vmovdqu_ymm_ymmm256,
                    32,
                    R::YMM0,
                ),
                VectorWidth::Zmm => (
                    C::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
                    C::EVEX_Vmovdqu64_zmm_k1z_zmmm512,
                    64,
                    R::ZMM0,
                ),
            }),
        ),
    };
    let size = whole.map_or(0, |w| w.2) + vectors.map_or(0, |v| 8 * v.2);
    let area = MemoryOperand::with_base(R::RSP);
    v.push(
        I::with2(
            C::Lea_r64_m,
            R::RSP,
            MemoryOperand::with_base_displ(R::RSP, -size),
        )
        .ok()?,
    );
    v.push(I::with2(C::And_rm64_imm8, R::RSP, -64i32).ok()?);
    let vreg = |first: R, k: i64| R::try_from(first as usize + k as usize).ok();
    if let Some((store, _, bytes, first)) = vectors {
        for k in 0..8 {
            let m = MemoryOperand::with_base_displ(R::RSP, k * bytes);
            v.push(I::with2(store, m, vreg(first, k)?).ok()?);
        }
    }
    if let Some((save, _, _, xsave)) = whole {
        if xsave {
            // XRSTOR faults on a header (bytes 512-575) with reserved bits set, and XSAVE
            // leaves most of it as it was: zero it first.
            for k in 0..8 {
                let m = MemoryOperand::with_base_displ(R::RSP, 512 + 8 * k);
                v.push(I::with2(C::Mov_rm64_imm32, m, 0i32).ok()?);
            }
            v.push(I::with2(C::Mov_r32_imm32, R::EAX, u32::MAX).ok()?);
            v.push(I::with2(C::Mov_r32_imm32, R::EDX, u32::MAX).ok()?);
        }
        v.push(I::with1(save, area).ok()?);
    }
    v.push(I::with2(C::Mov_rm64_r64, R::RDI, R::RBX).ok()?);
    v.push(I::with2(C::Mov_r64_imm64, R::RSI, call.ctx).ok()?);
    v.push(I::with2(C::Mov_r64_imm64, R::RAX, call.handler).ok()?);
    v.push(I::with1(C::Call_rm64, R::RAX).ok()?);
    if let Some((_, restore, _, xsave)) = whole {
        if xsave {
            v.push(I::with2(C::Mov_r32_imm32, R::EAX, u32::MAX).ok()?);
            v.push(I::with2(C::Mov_r32_imm32, R::EDX, u32::MAX).ok()?);
        }
        v.push(I::with1(restore, area).ok()?);
    }
    if let Some((_, load, bytes, first)) = vectors {
        for k in 0..8 {
            let m = MemoryOperand::with_base_displ(R::RSP, k * bytes);
            v.push(I::with2(load, vreg(first, k)?, m).ok()?);
        }
    }
    v.push(I::with2(C::Mov_rm64_r64, R::RSP, R::RBX).ok()?);
    // The status flags are not put back: at a function's entry they carry nothing (the
    // SysV ABI passes nothing in them and has DF clear), and `popfq` would cost more than
    // the rest of the way back.
    for (r, w) in GPRS {
        v.push(I::with2(C::Mov_r64_rm64, r, at(w)).ok()?);
    }
    v.push(
        I::with2(
            C::Lea_r64_m,
            R::RSP,
            MemoryOperand::with_base_displ(R::RSP, FRAME + RED_ZONE),
        )
        .ok()?,
    );
    let mut enc = Encoder::new(64);
    for i in &v {
        enc.encode(i, 0).ok()?;
    }
    Some(enc.take_buffer())
}

/// Writes into `out`, for a trampoline at `tramp`, the instructions `patch` displaces from
/// the function `func` loaded at `func_addr`, each relocated to where it lands in the
/// trampoline, then a jump back to the instruction after them; returns the bytes written.
/// RIP-relative operands must stay within reach (+/-2 GiB of the trampoline): otherwise
/// [`Reject::RipRelativeOutOfRange`]. `out` too small: [`Reject::SlotTooSmall`].
pub fn encode_displaced(
    func: &[u8],
    patch: &JumpPatch,
    func_addr: Addr,
    tramp: Addr,
    out: &mut [u8],
) -> Result<usize, Reject> {
    super::slot::encode_displaced(func, patch.at, patch.displaced, func_addr, tramp, out)
}

/// The `jmp rel32` written at `func_addr + patch.at` to reach `target`, if in reach.
pub fn jump_bytes(patch: &JumpPatch, func_addr: Addr, target: Addr) -> Option<[u8; JUMP_LEN]> {
    let from = func_addr
        .raw()
        .wrapping_add(patch.at as u64)
        .wrapping_add(JUMP_LEN as u64);
    let rel = i32::try_from(target.raw().wrapping_sub(from) as i64).ok()?;
    let r = rel.to_le_bytes();
    Some([0xe9, r[0], r[1], r[2], r[3]])
}

/// Decodes all of `func` and refuses a branch into `(at, at + displaced)` or an indirect
/// jump anywhere.
fn check_branches(func: &[u8], at: usize, displaced: usize) -> Result<(), JumpRefusal> {
    let Ok(mut dec) = Decoder::try_with_ip(64, func, 0, DecoderOptions::NONE) else {
        return Err(JumpRefusal::Undecodable { offset: 0 });
    };
    while dec.can_decode() {
        let pos = dec.position();
        let ins = dec.decode();
        if ins.is_invalid() {
            return Err(JumpRefusal::Undecodable { offset: pos });
        }
        match ins.flow_control() {
            FlowControl::IndirectBranch => return Err(JumpRefusal::IndirectJump { offset: pos }),
            FlowControl::UnconditionalBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Call
            | FlowControl::XbeginXabortXend => {
                if matches!(
                    ins.op0_kind(),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                ) {
                    let to = ins.near_branch_target();
                    if to > at as u64 && to < (at + displaced) as u64 {
                        return Err(JumpRefusal::BranchIntoDisplaced {
                            from: pos,
                            to: to as usize,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_prologue_is_patched_over_whole_instructions() {
        // push rbp; mov rbp,rsp; sub rsp,0x10; xor eax,eax; leave; ret
        let f = [
            0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0x31, 0xc0, 0xc9, 0xc3,
        ];
        let p = jump_patch(&f, 0).unwrap();
        assert_eq!(
            p,
            JumpPatch {
                at: 0,
                displaced: 8,
                insns: 3,
                rip_relative: false
            }
        );
    }

    #[test]
    fn endbr64_stays_and_the_jump_goes_after_it() {
        // endbr64; push rbp; mov rbp,rsp; pop rbp; ret
        let f = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3];
        assert_eq!(entry_patch_offset(&f), 4);
        let p = jump_patch(&f, 4).unwrap();
        assert_eq!((p.at, p.displaced, p.insns), (4, 5, 3));
    }

    #[test]
    fn a_rip_relative_load_is_displaced_and_marked() {
        // mov rax,[rip+0x100]; ret
        let f = [0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3];
        let p = jump_patch(&f, 0).unwrap();
        assert!(p.rip_relative);
        assert_eq!(p.displaced, 7);
    }

    #[test]
    fn short_functions_branches_and_calls_are_refused() {
        // xor eax,eax; ret
        assert_eq!(
            jump_patch(&[0x31, 0xc0, 0xc3], 0),
            Err(JumpRefusal::Branch { offset: 2 })
        );
        // xor eax,eax; inc eax (4 bytes, function ends)
        assert_eq!(
            jump_patch(&[0x31, 0xc0, 0xff, 0xc0], 0),
            Err(JumpRefusal::TooShort { len: 4 })
        );
        // push rbp; call rel32 ...
        let f = [0x55, 0xe8, 0, 0, 0, 0, 0x5d, 0xc3];
        assert_eq!(jump_patch(&f, 0), Err(JumpRefusal::Branch { offset: 1 }));
        // test edi,edi; je +0 (jcc in the displaced bytes)
        let f = [0x85, 0xff, 0x74, 0x00, 0x90, 0x90, 0xc3];
        assert_eq!(jump_patch(&f, 0), Err(JumpRefusal::Branch { offset: 2 }));
    }

    #[test]
    fn a_branch_back_into_the_displaced_bytes_is_refused() {
        // 0: push rbp; 1: mov rbp,rsp; 4: push rbx; 5: dec edi; 7: jne 1; 9: pop rbx; pop rbp; ret
        let f = [
            0x55, 0x48, 0x89, 0xe5, 0x53, 0xff, 0xcf, 0x75, 0xf8, 0x5b, 0x5d, 0xc3,
        ];
        assert_eq!(
            jump_patch(&f, 0),
            Err(JumpRefusal::BranchIntoDisplaced { from: 7, to: 1 })
        );
        // The same loop back to the entry itself is fine: the entry is the jump.
        let f = [
            0x55, 0x48, 0x89, 0xe5, 0x53, 0xff, 0xcf, 0x75, 0xf7, 0x5b, 0x5d, 0xc3,
        ];
        assert!(jump_patch(&f, 0).is_ok());
    }

    #[test]
    fn indirect_jumps_and_undecodable_bytes_are_refused() {
        // push rbp; mov rbp,rsp; push rbx; jmp rax
        let f = [0x55, 0x48, 0x89, 0xe5, 0x53, 0xff, 0xe0];
        assert_eq!(
            jump_patch(&f, 0),
            Err(JumpRefusal::IndirectJump { offset: 5 })
        );
        // push rbp; mov rbp,rsp; push rbx; then 0x06 (`push es`), invalid in 64-bit mode.
        let f = [0x55, 0x48, 0x89, 0xe5, 0x53, 0x06];
        assert_eq!(
            jump_patch(&f, 0),
            Err(JumpRefusal::Undecodable { offset: 5 })
        );
    }

    #[test]
    fn displaced_instructions_are_relocated_into_the_trampoline() {
        // push rbp; mov rax,[rip+0x100]; lea rcx,[rip-0x20]; ret   at 0x1000
        let f = [
            0x55, 0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0x48, 0x8d, 0x0d, 0xe0, 0xff, 0xff,
            0xff, 0xc3,
        ];
        let p = jump_patch(&f, 0).unwrap();
        assert_eq!((p.displaced, p.insns), (8, 2));
        let (func, tramp) = (Addr(0x1000), Addr(0x9000));
        let mut out = [0u8; 64];
        let n = encode_displaced(&f, &p, func, tramp, &mut out).unwrap();
        // push rbp; mov rax,[rip+d] aimed at 0x1108 from 0x9008; jmp 0x1008.
        let d = (0x1108i64 - 0x9008) as i32;
        let mut want = [0u8; 13];
        want[..4].copy_from_slice(&[0x55, 0x48, 0x8b, 0x05]);
        want[4..8].copy_from_slice(&d.to_le_bytes());
        want[8] = 0xe9;
        want[9..].copy_from_slice(&((0x1008i64 - 0x900d) as i32).to_le_bytes());
        assert_eq!(&out[..n], &want[..]);
        assert_eq!(
            jump_bytes(&p, func, tramp),
            Some([0xe9, 0xfb, 0x7f, 0x00, 0x00])
        );
        // Out of reach: refused, not mis-encoded.
        assert!(matches!(
            encode_displaced(&f, &p, func, Addr(0x1_0000_0000), &mut out),
            Err(Reject::RipRelativeOutOfRange { .. })
        ));
        assert!(matches!(
            encode_displaced(&f, &p, func, tramp, &mut [0u8; 8]),
            Err(Reject::SlotTooSmall { .. })
        ));
    }

    #[test]
    fn a_syscall_in_the_displaced_bytes_is_not_relocatable() {
        // mov eax,60; syscall
        let f = [0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05, 0xc3];
        // mov eax,imm32 is 5 bytes: the jump covers only it.
        assert!(jump_patch(&f, 0).is_ok());
        // xor eax,eax; syscall: the syscall is displaced.
        let f = [0x31, 0xc0, 0x0f, 0x05, 0x90, 0xc3];
        assert_eq!(
            jump_patch(&f, 0),
            Err(JumpRefusal::NotRelocatable {
                offset: 2,
                reject: Some(Reject::SystemCall)
            })
        );
    }
}
