//! What the kernel's trap handlers call, and the per-CPU state of the trap in flight.
//!
//! - `#BP` (vector 3, interrupt gate: interrupts off): [`on_int3`]. The frame's `rip` is after
//!   the `int3`, the core's convention on x86-64. On [`TrapOutcome::Handled`] the handler
//!   returns with `iretq` through the updated frame: to the emulated instruction's successor,
//!   into a boosted slot, or into a slot with `TF` set and `IF` cleared for a single step
//!   (interrupts stay off while a CPU single-steps in a slot; the step's `#DB` restores `IF`).
//! - `#DB` (vector 1): [`on_debug`] when DR6 says single step (`BS`).
//! - Any other interrupt from kernel mode (the timer): [`on_interrupt_entry`] first, which
//!   counts the CPU out of a boosted slot once its `rip` has left it and opens a nesting level
//!   of the trap state (the interrupted code may still be in a slot: its record must survive
//!   the handler's own probe hits), and [`on_interrupt_exit`] last, which closes it.
//!
//! [`CpuTrap`] holds the core's two states: the trap in flight ([`TrapState`], per CPU: a CPU
//! in a `#BP`, `#DB` or single step never switches away) and the return-probe chain
//! ([`TaskState`], which in a kernel with threads belongs to the thread; this kernel has none,
//! so the CPU's serves). An NMI handler that hits probes needs a `CpuTrap` of its own (this
//! kernel has no NMI users).
//!
//! All three run with interrupts off, allocate nothing, take no lock and do not panic.

use probe_core::arch::x86_64::X86_64;
use probe_core::lock_api::RawMutex;
use probe_core::{
    Consumer, CpuId, Error, Hit, ProbeCore, SpinLock, Step, TaskId, TaskState, TrapState,
};

use crate::frame::{TrapFrame, IF, TF};
use crate::percpu::ConstInit;
use crate::platform::{KernelMemory, KernelPlatform, KERNEL_SPACE};

/// The core for the kernel platform.
pub type KernelCore<
    M,
    C,
    const P: usize,
    const N: usize,
    const S: usize,
    const X: usize,
    const CPUS: usize,
    L = SpinLock,
> = ProbeCore<KernelPlatform<M>, C, P, N, S, 2, X, CPUS, L>;

/// The state of one CPU's trap in flight.
#[derive(Debug)]
pub struct CpuTrap<const DEPTH: usize = 32> {
    /// The core's trap in flight: slot occupancy and the pending single step, per nesting
    /// level.
    pub trap: TrapState<X86_64>,
    /// The core's return chain.
    pub ts: TaskState<DEPTH>,
    /// `IF` of the context being single-stepped, given back when the step completes.
    step_if: bool,
}

impl<const DEPTH: usize> ConstInit for CpuTrap<DEPTH> {
    const INIT: Self = CpuTrap {
        trap: TrapState::new(),
        ts: TaskState::new(),
        step_if: false,
    };
}

/// What the handler does after the core saw its trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TrapOutcome {
    /// The frame was updated: `iretq`.
    Handled,
    /// Not a trap of the core's: handle it the kernel's way (e.g. a stray `int3` is a bug).
    NotOurs,
    /// The core could not resume the instruction; the frame points at the probed
    /// instruction. The kernel's answer is an oops.
    Failed(Error),
}

/// `#BP` from kernel mode on `cpu`.
#[allow(clippy::too_many_arguments)]
pub fn on_int3<
    M: KernelMemory,
    C: Consumer<KernelPlatform<M>>,
    const P: usize,
    const N: usize,
    const S: usize,
    const X: usize,
    const CPUS: usize,
    const D: usize,
    L: RawMutex,
>(
    core: &KernelCore<M, C, P, N, S, X, CPUS, L>,
    p: &KernelPlatform<M>,
    cpu: u32,
    st: &mut CpuTrap<D>,
    frame: &mut TrapFrame,
) -> TrapOutcome {
    let mut regs = frame.regs();
    let hit = core.on_breakpoint(
        p,
        CpuId(cpu),
        KERNEL_SPACE,
        TaskId(u64::from(cpu)),
        &mut st.trap,
        &mut st.ts,
        &mut regs,
    );
    match hit {
        Hit::Emulated | Hit::Boosted { .. } | Hit::Restart | Hit::Returned { .. } => {
            frame.set_regs(&regs);
            TrapOutcome::Handled
        }
        Hit::SingleStep { .. } => {
            frame.set_regs(&regs);
            st.step_if = frame.rflags & IF != 0;
            frame.rflags = (frame.rflags | TF) & !IF;
            TrapOutcome::Handled
        }
        Hit::NotOurs | Hit::StrayTrampoline => TrapOutcome::NotOurs,
        Hit::Failed(e) => {
            frame.set_regs(&regs);
            TrapOutcome::Failed(e)
        }
    }
}

/// `#DB` with DR6.BS set (a single step completed) from kernel mode on `cpu`.
pub fn on_debug<
    M: KernelMemory,
    C: Consumer<KernelPlatform<M>>,
    const P: usize,
    const N: usize,
    const S: usize,
    const X: usize,
    const CPUS: usize,
    const D: usize,
    L: RawMutex,
>(
    core: &KernelCore<M, C, P, N, S, X, CPUS, L>,
    p: &KernelPlatform<M>,
    st: &mut CpuTrap<D>,
    frame: &mut TrapFrame,
) -> TrapOutcome {
    if !st.trap.stepping() {
        return TrapOutcome::NotOurs;
    }
    let mut regs = frame.regs();
    let step = core.on_single_step(p, KERNEL_SPACE, &mut st.trap, &mut regs);
    frame.set_regs(&regs);
    frame.rflags &= !TF;
    if st.step_if {
        frame.rflags |= IF;
    }
    match step {
        Step::Done => TrapOutcome::Handled,
        Step::NotOurs => TrapOutcome::NotOurs,
        Step::Failed(e) => TrapOutcome::Failed(e),
    }
}

/// Any other interrupt that arrived from kernel mode on this CPU (interrupts off), before its
/// handler does anything that may hit a probe: if the interrupted code was counted into a
/// boosted slot and has left it, count it out; then open a nesting level, so that the
/// handler's own hits keep the interrupted code's record. Returns `false` when no level is
/// left (the handler must then not hit probes); call [`on_interrupt_exit`] either way.
pub fn on_interrupt_entry<
    M: KernelMemory,
    C: Consumer<KernelPlatform<M>>,
    const P: usize,
    const N: usize,
    const S: usize,
    const X: usize,
    const CPUS: usize,
    const D: usize,
    L: RawMutex,
>(
    core: &KernelCore<M, C, P, N, S, X, CPUS, L>,
    st: &mut CpuTrap<D>,
    frame: &TrapFrame,
) -> bool {
    core.seen_at(&mut st.trap, frame.rip);
    st.trap.nest().is_ok()
}

/// The interrupt handler is done: close the level [`on_interrupt_entry`] opened (counting
/// the CPU out of any slot the handler's hits left it in).
pub fn on_interrupt_exit<
    M: KernelMemory,
    C: Consumer<KernelPlatform<M>>,
    const P: usize,
    const N: usize,
    const S: usize,
    const X: usize,
    const CPUS: usize,
    const D: usize,
    L: RawMutex,
>(
    core: &KernelCore<M, C, P, N, S, X, CPUS, L>,
    st: &mut CpuTrap<D>,
) {
    core.unnest(&mut st.trap);
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::sync::atomic::{AtomicU64, Ordering};

    use probe_core::{Addr, AddressSpace, ConsumerOptions, HandlerAction, HitContext, Platform};

    use super::*;
    use crate::platform::tests::{platform, Buffer, BASE, SLOTS};

    static HITS: AtomicU64 = AtomicU64::new(0);

    #[derive(Debug)]
    struct Count;
    impl Consumer<KernelPlatform<Buffer>> for Count {
        fn handler(&self, _ctx: &mut HitContext<'_, KernelPlatform<Buffer>>) -> HandlerAction {
            HITS.fetch_add(1, Ordering::Relaxed);
            HandlerAction::Keep
        }
    }

    type Core = KernelCore<Buffer, Count, 16, 8, 16, 8, 2>;

    fn frame_at(rip: u64, rsp: u64) -> TrapFrame {
        TrapFrame {
            rip,
            rsp,
            cs: 0x08,
            ss: 0x10,
            rflags: IF | 2,
            rbp: 0x1234,
            rdi: 41,
            ..TrapFrame::default()
        }
    }

    #[test]
    fn emulated_push_boosted_lea_and_restored_text() {
        let p = platform();
        let core = Core::new();
        let before = p.mem().mem.borrow().clone();
        let h0 = core
            .register(
                &p,
                p.key_of(BASE).unwrap(),
                Count,
                ConsumerOptions::default(),
            )
            .map_err(|e| e.0)
            .unwrap();
        let h1 = core
            .register(
                &p,
                p.key_of(BASE + 4).unwrap(),
                Count,
                ConsumerOptions::default(),
            )
            .map_err(|e| e.0)
            .unwrap();
        assert_eq!(p.mem().mem.borrow()[0], 0xcc);
        assert_eq!(p.mem().mem.borrow()[4], 0xcc);

        // push rbp at BASE: emulated, the stack below rsp gets rbp.
        let mut st = CpuTrap::<32>::INIT;
        let rsp = BASE + 0x1800;
        let mut f = frame_at(BASE + 1, rsp);
        assert_eq!(on_int3(&core, &p, 0, &mut st, &mut f), TrapOutcome::Handled);
        assert_eq!(f.rip, BASE + 1);
        assert_eq!(f.rsp, rsp - 8);
        let mut w = [0u8; 8];
        p.space(KERNEL_SPACE)
            .unwrap()
            .read_exact(Addr(rsp - 8), &mut w)
            .unwrap();
        assert_eq!(u64::from_le_bytes(w), 0x1234);

        // lea rax, [rdi+1] at BASE+4: boosted into a slot, interrupts untouched.
        let mut f = frame_at(BASE + 5, rsp);
        assert_eq!(on_int3(&core, &p, 1, &mut st, &mut f), TrapOutcome::Handled);
        assert!(f.rip >= SLOTS && f.rip < SLOTS + 0x1000, "{:#x}", f.rip);
        assert_eq!(f.rflags & (IF | TF), IF);
        // A timer interrupt while the CPU is still in the slot keeps it counted in, through
        // the handler and after.
        assert!(on_interrupt_entry(&core, &mut st, &f));
        assert_eq!(st.trap.depth(), 1);
        on_interrupt_exit(&core, &mut st);
        assert!(st.trap.in_slot(), "still executing the slot");
        // One after it left the slot counts it out.
        assert!(on_interrupt_entry(&core, &mut st, &frame_at(BASE + 8, rsp)));
        on_interrupt_exit(&core, &mut st);
        assert!(!st.trap.in_slot());
        assert_eq!(HITS.load(Ordering::Relaxed), 2);

        // Not ours: an int3 the core did not plant.
        p.mem().write(Addr(BASE + 0x100), &[0xcc]).unwrap();
        let mut f = frame_at(BASE + 0x101, rsp);
        assert_eq!(on_int3(&core, &p, 0, &mut st, &mut f), TrapOutcome::NotOurs);
        // A #DB without a step in flight is not ours either.
        assert_eq!(on_debug(&core, &p, &mut st, &mut f), TrapOutcome::NotOurs);

        core.unregister(&p, h0).unwrap();
        core.unregister(&p, h1).unwrap();
        p.mem().write(Addr(BASE + 0x100), &[0]).unwrap();
        assert_eq!(p.mem().mem.borrow()[..0x1000], before[..0x1000]);
    }
}

#[cfg(test)]
mod reuse_tests {
    extern crate std;

    use probe_core::{ConsumerOptions, HandlerAction, HitContext};

    use super::*;
    use crate::platform::tests::{platform, Buffer, BASE};

    #[derive(Debug)]
    struct Nop;
    impl Consumer<KernelPlatform<Buffer>> for Nop {
        fn handler(&self, _ctx: &mut HitContext<'_, KernelPlatform<Buffer>>) -> HandlerAction {
            HandlerAction::Keep
        }
    }
    type Core = KernelCore<Buffer, Nop, 64, 32, 64, 64, 8>;

    #[test]
    fn reregistration_patches_the_right_address() {
        let p = platform();
        let core = Core::new();
        let before = p.mem().mem.borrow().clone();
        for round in 0..4 {
            let mut hs = std::vec::Vec::new();
            for off in [0u64, 4, 8] {
                let h = core
                    .register(
                        &p,
                        p.key_of(BASE + off).unwrap(),
                        Nop,
                        ConsumerOptions::default(),
                    )
                    .map_err(|e| e.0)
                    .unwrap();
                hs.push(h);
            }
            for h in hs {
                core.unregister(&p, h).unwrap();
            }
            let h = core
                .register(&p, p.key_of(BASE).unwrap(), Nop, ConsumerOptions::default())
                .map_err(|e| e.0)
                .unwrap();
            let m = p.mem().mem.borrow().clone();
            assert_eq!(m[0], 0xcc, "round {round}");
            assert_eq!(m[4], before[4], "round {round}: int3 at the wrong probe");
            assert_eq!(m[8], before[8], "round {round}: int3 at the wrong probe");
            core.unregister(&p, h).unwrap();
        }
    }
}
