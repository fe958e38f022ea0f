//! The analysed instruction: its bytes and a compact classification that tells the emulator,
//! the slot encoder and the single-step fix-up what to do without decoding again.

use crate::arch::PlanKind;

/// Register number meaning "no register" in a [`MemRef`].
pub(crate) const NO_REG: u8 = 0xff;

/// A memory operand with 64-bit addressing, as the emulator needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemRef {
    /// Base register number, [`NO_REG`], or [`MemRef::RIP`].
    pub(crate) base: u8,
    /// Index register number or [`NO_REG`].
    pub(crate) index: u8,
    /// Index scale (1, 2, 4 or 8).
    pub(crate) scale: u8,
    /// Segment whose base is added (`fs`/`gs`; others are flat in 64-bit mode).
    pub(crate) seg: Seg,
    /// Sign-extended displacement (relative to the next instruction for RIP).
    pub(crate) disp: i32,
}

impl MemRef {
    /// Base "register" number for RIP-relative addressing.
    pub(crate) const RIP: u8 = 0xfe;
}

/// A segment override that changes the effective address in 64-bit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// No base (cs, ds, es, ss or none).
    Flat,
    /// `fs:` (base in `fs_base`).
    Fs,
    /// `gs:` (base in `gs_base`).
    Gs,
}

/// What the core does with the instruction: the emulated operation, the boost, or the
/// single-step fix-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    // ---- Emulate ----
    /// Any nop form, `endbr32/64`.
    Nop,
    /// `jmp rel8/rel32`.
    Jmp { rel: i32 },
    /// `call rel32`.
    Call { rel: i32 },
    /// `jcc rel8/rel32`; `cc` is the condition nibble of the opcode (0 = o ... 15 = g).
    Jcc { cc: u8, rel: i32 },
    /// `push r64`.
    Push { reg: u8 },
    /// `push imm8/imm32` (sign-extended to 64 bits).
    PushImm { imm: i32 },
    /// `pop r64`.
    Pop { reg: u8 },
    /// `mov r64, r64`.
    MovRR { dst: u8, src: u8 },
    /// `lea r64, [rip+disp]` (`wide`) or `lea r32, [rip+disp]` (zero-extended).
    LeaRip { dst: u8, disp: i32, wide: bool },
    /// `ret` / `ret imm16` (near, 64-bit).
    Ret { pop: u16 },
    /// `jmp r64`.
    JmpReg { reg: u8 },
    /// `call r64`.
    CallReg { reg: u8 },
    /// `jmp qword [mem]` (64-bit addressing).
    JmpMem { mem: MemRef },
    /// `call qword [mem]` (64-bit addressing).
    CallMem { mem: MemRef },
    /// `cli` in ring 0: clear IF.
    Cli,
    /// `sti` in ring 0: set IF.
    Sti,
    // ---- Boost ----
    /// Copied to the slot and followed by a jump back.
    Boost {
        /// Where the RIP-relative operand is, if there is one.
        rip: Option<RipRel>,
    },
    // ---- Single-step ----
    /// `loop`/`loope`/`loopne`/`jrcxz`/`jecxz` (rel8): stepped with its displacement replaced
    /// by [`LOOP_PROBE_REL`], then rip is mapped back to the real fall-through or target.
    StepLoop { rel: i8 },
    /// An instruction with a RIP-relative operand that also uses RSP (so the scratch-register
    /// sequence cannot run around it): stepped with the displacement relocated or, out of
    /// range, through a scratch register loaded by `prepare_xol`.
    StepRipRel { rip: RipRel },
    /// An indirect `call` the emulator does not do (32-bit addressing): stepped, then the
    /// return address it pushed is rewritten.
    StepCall,
    /// A privileged instruction in ring 0 (`mov cr`, `wrmsr`, `invlpg`, ...): stepped from
    /// its slot as it is (it has no RIP-relative operand).
    StepPrivileged,
}

/// The displacement placed in a single-stepped `loop`/`jrcxz` (a jump over two `int3`s).
pub(crate) const LOOP_PROBE_REL: u8 = 2;

/// Where a RIP-relative displacement sits in the instruction and how to rewrite it through a
/// scratch register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RipRel {
    /// Offset of the 32-bit displacement in the instruction bytes.
    pub(crate) disp_off: u8,
    /// The displacement.
    pub(crate) disp: i32,
    /// A general-purpose register the instruction does not use.
    pub(crate) scratch: u8,
    /// Length of the instruction rewritten to `[scratch]` (address-independent).
    pub(crate) far_len: u8,
    /// The rewritten instruction (`[scratch]` instead of `[rip+disp]`).
    pub(crate) far: [u8; 15],
}

impl RipRel {
    /// The operand's absolute address for the instruction at `insn` of length `len`.
    pub(crate) fn target(&self, insn: u64, len: usize) -> u64 {
        insn.wrapping_add(len as u64)
            .wrapping_add_signed(i64::from(self.disp))
    }

    /// The rewritten (`[scratch]`) instruction's bytes.
    pub(crate) fn far_bytes(&self) -> &[u8] {
        &self.far[..usize::from(self.far_len).min(self.far.len())]
    }
}

/// The analysis of one x86-64 instruction: its original bytes and what to do with it.
///
/// `Copy` and address-independent; relocation happens when the slot is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub(crate) bytes: [u8; 15],
    pub(crate) len: u8,
    pub(crate) op: Op,
}

impl Plan {
    /// The instruction's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(self.bytes.len())]
    }

    /// The instruction's length.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always `false`: an analysed instruction has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the instruction is resumed.
    pub fn kind(&self) -> PlanKind {
        match self.op {
            Op::Boost { .. } => PlanKind::Boost,
            Op::StepLoop { .. } | Op::StepRipRel { .. } | Op::StepCall | Op::StepPrivileged => {
                PlanKind::SingleStep
            }
            _ => PlanKind::Emulate,
        }
    }

    /// The same instruction run from a slot, for emulations that touch the stack: `push`
    /// (register or immediate), `pop` and `ret` behave identically from a slot (none depends
    /// on its own address; `ret` leaves the slot by itself). `call` is not offered: from a
    /// slot it would push the slot's address.
    pub(crate) fn boost_instead(&self) -> Option<Plan> {
        match self.op {
            Op::Push { .. } | Op::PushImm { .. } | Op::Pop { .. } | Op::Ret { .. } => Some(Plan {
                op: Op::Boost { rip: None },
                ..*self
            }),
            _ => None,
        }
    }

    /// Whether the instruction has a RIP-relative memory operand (relocated in the slot).
    pub fn is_rip_relative(&self) -> bool {
        matches!(self.op, Op::Boost { rip: Some(_) } | Op::StepRipRel { .. })
            || matches!(
                self.op,
                Op::JmpMem { mem } | Op::CallMem { mem } if mem.base == MemRef::RIP
            )
            || matches!(self.op, Op::LeaRip { .. })
    }

    /// A short name of the classification, for reports ("nop", "jcc", "boost-riprel", ...).
    pub fn class_name(&self) -> &'static str {
        match self.op {
            Op::Nop => "nop",
            Op::Jmp { .. } => "jmp",
            Op::Call { .. } => "call",
            Op::Jcc { .. } => "jcc",
            Op::Push { .. } => "push",
            Op::PushImm { .. } => "push-imm",
            Op::Pop { .. } => "pop",
            Op::MovRR { .. } => "mov-reg",
            Op::LeaRip { .. } => "lea-rip",
            Op::Ret { .. } => "ret",
            Op::JmpReg { .. } => "jmp-reg",
            Op::CallReg { .. } => "call-reg",
            Op::JmpMem { .. } => "jmp-mem",
            Op::CallMem { .. } => "call-mem",
            Op::Boost { rip: None } => "boost",
            Op::Boost { rip: Some(_) } => "boost-riprel",
            Op::StepLoop { .. } => "step-loop",
            Op::StepRipRel { .. } => "step-riprel",
            Op::StepCall => "step-call",
            Op::StepPrivileged => "step-privileged",
            Op::Cli => "cli",
            Op::Sti => "sti",
        }
    }
}
