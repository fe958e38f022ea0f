//! The [`Arch`] trait, its register view and its rejection reasons.

use core::fmt;

use crate::addr::Addr;
use crate::memory::AddressSpace;
use crate::memory::MemError;

/// How a probed instruction is resumed after the handlers ran, in order of preference.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PlanKind {
    /// Executed by the core itself on the register file: no slot, one trap per hit.
    Emulate,
    /// Copied (relocated) into a slot followed by a jump back: one trap per hit.
    Boost,
    /// Single-stepped in a slot, then fixed up: two traps per hit.
    SingleStep,
}

/// Why an instruction cannot be probed. The reason names what a person can do about it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Reject {
    /// Fewer bytes were available than the instruction needs (end of file or mapping).
    Truncated {
        /// How many bytes were available.
        have: u8,
    },
    /// The bytes do not decode to a valid instruction.
    Invalid,
    /// A breakpoint or software-interrupt instruction (`int3`, `int n`, `int1`, `into`):
    /// it traps by itself, so probing it would confuse whose trap it is.
    Trap,
    /// Privileged or system instruction (`hlt`, `cli`/`sti`, control-register moves, ...).
    Privileged,
    /// Port I/O (`in`, `out`, `ins`, `outs`).
    PortIo,
    /// A system-call instruction (`syscall`, `sysenter`, `sysret`): the kernel would see the
    /// slot's address as the return address.
    SystemCall,
    /// A load of the stack segment (`mov ss`, `pop ss`): it inhibits the single-step trap of
    /// the next instruction.
    StackSegmentLoad,
    /// A prefix the core refuses (e.g. a `fs`/`gs`-irrelevant legacy prefix combination, or
    /// `lock` on an instruction that would be rewritten).
    Prefix,
    /// A RIP-relative operand that cannot be reached from the slot and cannot be rewritten
    /// through a scratch register either.
    RipRelativeOutOfRange {
        /// Distance from the slot to the target.
        distance: i64,
    },
    /// The relocated instruction does not fit in one slot.
    SlotTooSmall {
        /// Bytes needed.
        need: u16,
    },
    /// A valid instruction this architecture support does not handle out of line.
    Unsupported,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reject::Truncated { have } => write!(
                f,
                "only {have} bytes are available at that offset; the instruction is truncated"
            ),
            Reject::Invalid => write!(f, "the bytes do not decode to a valid instruction; check the offset lands on an instruction boundary"),
            Reject::Trap => write!(f, "a breakpoint or software-interrupt instruction cannot be probed"),
            Reject::Privileged => write!(f, "privileged or system instructions cannot be probed"),
            Reject::PortIo => write!(f, "port I/O instructions cannot be probed"),
            Reject::SystemCall => write!(f, "system-call instructions cannot be probed; probe the instruction before or after"),
            Reject::StackSegmentLoad => write!(f, "loads of the stack segment inhibit single-step and cannot be probed"),
            Reject::Prefix => write!(f, "the instruction carries a prefix that cannot be executed out of line"),
            Reject::RipRelativeOutOfRange { distance } => write!(
                f,
                "a RIP-relative operand {distance:#x} bytes away cannot be relocated"
            ),
            Reject::SlotTooSmall { need } => write!(
                f,
                "the relocated instruction needs {need} bytes, more than one out-of-line slot"
            ),
            Reject::Unsupported => write!(f, "this instruction is not supported out of line"),
        }
    }
}

impl core::error::Error for Reject {}

/// The architecture's register file, as the core and the handlers see it.
pub trait Registers: Clone + fmt::Debug + Send + Sync + 'static {
    /// Instruction pointer.
    fn ip(&self) -> u64;
    /// Set the instruction pointer.
    fn set_ip(&mut self, ip: u64);
    /// Stack pointer.
    fn sp(&self) -> u64;
    /// Set the stack pointer.
    fn set_sp(&mut self, sp: u64);
    /// The ABI's integer return-value register.
    fn return_value(&self) -> u64;
    /// Set the ABI's integer return-value register.
    fn set_return_value(&mut self, v: u64);
    /// The ABI's `n`-th integer argument register (0-based), if the ABI passes it in a register.
    fn arg(&self, n: usize) -> Option<u64>;
}

/// An instruction-set architecture, as the core needs it.
///
/// The analysis and slot encoding run at registration or install time only and may use the
/// `alloc` crate (iced-x86 does); [`emulate`](Arch::emulate),
/// [`prepare_xol`](Arch::prepare_xol), [`finish_step`](Arch::finish_step) and the
/// return-address hooks run on the hit path and must not allocate, block or panic.
pub trait Arch: Sized + 'static {
    /// The breakpoint instruction's bytes.
    const BREAKPOINT: &'static [u8];
    /// Longest instruction, in bytes.
    const MAX_INSN_LEN: usize;
    /// Size of one out-of-line slot, in bytes.
    const SLOT_SIZE: usize;

    /// The register file.
    type Regs: Registers;
    /// The analysis of one instruction, stored in the probe.
    type Plan: Copy + fmt::Debug + Send + Sync + 'static;
    /// Per-task state carried from [`prepare_xol`](Arch::prepare_xol) to
    /// [`finish_step`](Arch::finish_step) (e.g. a scratch register's saved value).
    type StepState: Copy + Default + fmt::Debug + Send + Sync + 'static;

    /// Analyse the instruction whose bytes start `code` (as many as were available, at most
    /// [`MAX_INSN_LEN`](Arch::MAX_INSN_LEN)). Address-independent: relocation happens in
    /// [`encode_slot`](Arch::encode_slot).
    fn analyze(code: &[u8]) -> Result<Self::Plan, Reject>;

    /// Like [`analyze`](Arch::analyze), for code that runs privileged (a kernel probing its
    /// own text, [`Platform::privileged`](crate::Platform::privileged)): instructions refused
    /// as `Privileged` in user code may be emulated or single-stepped instead. By default the
    /// same analysis.
    fn analyze_privileged(code: &[u8]) -> Result<Self::Plan, Reject> {
        Self::analyze(code)
    }

    /// How this plan resumes the instruction.
    fn plan_kind(plan: &Self::Plan) -> PlanKind;

    /// For an `Emulate` plan whose emulation reads or writes memory (a push, a pop, a return):
    /// an equivalent `Boost` plan, if the instruction runs correctly from a slot. The core uses
    /// it on platforms where a memory access costs more than a slot
    /// ([`Platform::prefer_boost`](crate::platform::Platform::prefer_boost)). The default
    /// offers none.
    fn boost_instead(plan: &Self::Plan) -> Option<Self::Plan> {
        let _ = plan;
        None
    }

    /// Length of the analysed instruction in bytes.
    fn insn_len(plan: &Self::Plan) -> usize;

    /// The probed instruction's address, given the instruction pointer reported by a
    /// breakpoint trap (x86 reports the address after `int3`).
    fn breakpoint_address(trap_ip: u64) -> Addr;

    /// Encode the slot at `slot` for the instruction at `insn` into `out`
    /// (`out.len() == SLOT_SIZE`); returns the bytes used. Called for `Boost` and `SingleStep`
    /// plans at install time; never writes past `out`.
    fn encode_slot(
        plan: &Self::Plan,
        insn: Addr,
        slot: Addr,
        out: &mut [u8],
    ) -> Result<usize, Reject>;

    /// Execute an `Emulate` plan for the instruction at `insn` on `regs` (and on `mem` where
    /// the instruction writes memory, e.g. a push). On error nothing visible was changed.
    fn emulate<M: AddressSpace + ?Sized>(
        plan: &Self::Plan,
        insn: Addr,
        regs: &mut Self::Regs,
        mem: &M,
    ) -> Result<(), MemError>;

    /// Point `regs` at the slot for a `Boost` or `SingleStep` plan.
    fn prepare_xol<M: AddressSpace + ?Sized>(
        plan: &Self::Plan,
        insn: Addr,
        slot: Addr,
        regs: &mut Self::Regs,
        state: &mut Self::StepState,
        mem: &M,
    ) -> Result<(), MemError>;

    /// After a single step from the slot, make `regs` and memory look as if the instruction
    /// had run at `insn`.
    fn finish_step<M: AddressSpace + ?Sized>(
        plan: &Self::Plan,
        insn: Addr,
        slot: Addr,
        regs: &mut Self::Regs,
        state: &Self::StepState,
        mem: &M,
    ) -> Result<(), MemError>;

    /// Abandon a single step that did not complete (e.g. a signal arrived): leave `regs` so
    /// that the task re-executes the probed instruction from the start.
    fn abort_step(
        plan: &Self::Plan,
        insn: Addr,
        slot: Addr,
        regs: &mut Self::Regs,
        state: &Self::StepState,
    );

    /// At a function's first instruction: the return address the call pushed (or the link
    /// register's value).
    fn return_address<M: AddressSpace + ?Sized>(
        regs: &Self::Regs,
        mem: &M,
    ) -> Result<Addr, MemError>;

    /// At a function's first instruction: replace the return address with `ret`.
    fn set_return_address<M: AddressSpace + ?Sized>(
        regs: &mut Self::Regs,
        mem: &M,
        ret: Addr,
    ) -> Result<(), MemError>;

    /// At the return trampoline, with the stack pointer `sp` as the return left it: the stack
    /// pointer the returning function had at its first instruction (its *frame*, as recorded
    /// by return probes). The default is for ISAs whose call pushes a 64-bit return address
    /// that the return pops.
    fn returned_frame(sp: u64) -> u64 {
        sp.wrapping_sub(8)
    }

    /// Put `ret` back in the return-address slot of the function whose frame (its stack
    /// pointer at entry) is `frame`, if the slot still holds `trampoline`; returns whether it
    /// wrote. Used to take hijacked return addresses back out of a stack on detach. The
    /// default is for ISAs whose call pushes a 64-bit little-endian return address at the
    /// entry stack pointer.
    fn restore_return_address<M: AddressSpace + ?Sized>(
        frame: u64,
        mem: &M,
        trampoline: Addr,
        ret: Addr,
    ) -> Result<bool, MemError> {
        let mut cur = [0u8; 8];
        mem.read_exact(Addr(frame), &mut cur)?;
        if u64::from_le_bytes(cur) != trampoline.0 {
            return Ok(false);
        }
        mem.write(Addr(frame), &ret.0.to_le_bytes())?;
        Ok(true)
    }
}
