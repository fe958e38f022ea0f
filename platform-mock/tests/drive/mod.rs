//! Run every task of the mock machine to the end, driving a core on each trap.

use std::collections::HashMap;

use platform_mock::{Machine, Resume, Scheduler, StepEvent, StopReason, ToyArch};
use probe_core::{Consumer, CpuId, Hit, Platform, ProbeCore, Step, TaskId, TaskState, TrapState};

/// Run every task of `m` to the end; on each trap call `core` with `plat` (the machine itself,
/// or a platform wrapping it). `report_after` is how far past the `brk` this platform's traps
/// report the task's `pc` (0: at it, the machine's own convention).
pub(crate) fn drive<
    P: Platform<Arch = ToyArch>,
    K: Consumer<P>,
    const A: usize,
    const B: usize,
    const C: usize,
    const D: usize,
    const E: usize,
    const F: usize,
>(
    m: &Machine,
    plat: &P,
    core: &ProbeCore<P, K, A, B, C, D, E, F>,
    report_after: u64,
) {
    let mut states: HashMap<TaskId, (TrapState<ToyArch>, TaskState)> = HashMap::new();
    let out = m.run_all(&mut Scheduler::seeded(1), 100_000, |m, task, ev, regs| {
        let space = m.task_space(task).unwrap();
        let (trap, ts) = states.entry(task).or_default();
        match ev {
            StepEvent::Breakpoint { addr } => {
                regs.pc = addr.0 + report_after;
                match core.on_breakpoint(plat, CpuId(0), space, task, trap, ts, regs) {
                    Hit::Emulated | Hit::Boosted { .. } | Hit::Restart => {}
                    Hit::SingleStep { .. } => {
                        m.set_single_step(task, true);
                    }
                    other => panic!("hit at {addr:?}: {other:?}"),
                }
            }
            StepEvent::SingleStepDone => {
                assert_eq!(core.on_single_step(plat, space, trap, regs), Step::Done);
            }
            StepEvent::Exited(_) => {
                core.on_task_exit(ts);
                core.clear_trap(trap);
            }
            other => panic!("unexpected {other:?}"),
        }
        core.seen_at(trap, regs.pc);
        Resume::Continue
    });
    assert_eq!(out.reason, StopReason::AllDone);
}
