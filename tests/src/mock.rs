//! Driving `probe-core` on `platform-mock`: a runner that feeds the machine's events (breakpoint
//! traps, single-step completions, exits) to the core and applies what it returns, plus a
//! counting consumer. Used by the end-to-end tests, the model-based test and the benchmark.

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::Arc;

use platform_mock::sched::Resume;
use platform_mock::{Machine, StepEvent, ToyArch};
use probe_core::{
    Consumer, CpuId, FileId, HandlerAction, Hit, HitContext, Mapping, Platform, ProbeCore, SpaceId,
    Step, TaskId, TaskState, TrapState,
};

/// Which tasks a [`Counter`] wants.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filter {
    /// No filter: every space.
    None,
    /// Only tasks of spaces with an even id.
    EvenSpaces,
    /// Only tasks of spaces with an odd id.
    OddSpaces,
}

impl Filter {
    /// Whether the filter accepts tasks of `space`.
    pub fn accepts(self, space: SpaceId) -> bool {
        match self {
            Filter::None => true,
            Filter::EvenSpaces => space.0 % 2 == 0,
            Filter::OddSpaces => space.0 % 2 == 1,
        }
    }
}

/// A consumer counting its hits, with an optional filter.
#[derive(Clone, Debug)]
pub struct Counter {
    /// Hits so far.
    pub hits: Arc<AtomicU64>,
    /// Its filter.
    pub filter: Filter,
    /// Whether the handler asks to be removed from the space after its first hit (its filter
    /// then declines every task).
    pub remove_after_hit: bool,
    /// Set by the handler when it asked for removal.
    pub declined: Arc<core::sync::atomic::AtomicBool>,
}

impl Counter {
    /// An unfiltered counter.
    pub fn new() -> Counter {
        Counter::filtered(Filter::None)
    }

    /// A counter with `filter`.
    pub fn filtered(filter: Filter) -> Counter {
        Counter {
            hits: Arc::new(AtomicU64::new(0)),
            filter,
            remove_after_hit: false,
            declined: Arc::default(),
        }
    }

    /// Hits so far.
    pub fn count(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl Consumer<Machine> for Counter {
    fn has_filter(&self) -> bool {
        self.filter != Filter::None || self.remove_after_hit
    }
    fn filter(&self, _p: &Machine, space: SpaceId, _task: TaskId) -> bool {
        !self.declined.load(Ordering::SeqCst) && self.filter.accepts(space)
    }
    fn handler(&self, _ctx: &mut HitContext<'_, Machine>) -> HandlerAction {
        self.hits.fetch_add(1, Ordering::Relaxed);
        if self.remove_after_hit {
            self.declined.store(true, Ordering::SeqCst);
            HandlerAction::RemoveFromSpace
        } else {
            HandlerAction::Keep
        }
    }
}

/// The core as the mock tests size it.
pub type MockCore = ProbeCore<Machine, Counter, 256, 64, 1024, 16, 32, 4>;

/// Counts of what the runner saw.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RunStats {
    /// Breakpoint traps handed to the core.
    pub traps: u64,
    /// Hits resumed by emulation.
    pub emulated: u64,
    /// Hits resumed in a boosted slot.
    pub boosted: u64,
    /// Hits resumed by a single step.
    pub stepped: u64,
    /// Restarts (probe gone while trapping).
    pub restarts: u64,
    /// Returns through the trampoline.
    pub returns: u64,
}

/// Feeds a machine's events to a core.
#[derive(Debug, Default)]
pub struct Runner {
    /// Per-task core state, owned by the platform as the core expects.
    pub tasks: HashMap<TaskId, (TrapState<ToyArch>, TaskState)>,
    /// What happened.
    pub stats: RunStats,
}

impl Runner {
    /// A runner with no task state yet.
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Run `task` until it exits (or `max_steps`), handling every probe event. Returns the exit
    /// code. Panics on a trap the core does not claim or a failed hit: in these tests every
    /// `brk` is the core's.
    pub fn run<
        K: Consumer<Machine>,
        const A: usize,
        const B: usize,
        const C: usize,
        const D: usize,
        const E: usize,
        const F: usize,
    >(
        &mut self,
        m: &Machine,
        core: &ProbeCore<Machine, K, A, B, C, D, E, F>,
        task: TaskId,
        max_steps: u64,
    ) -> Option<u64> {
        let tasks = &mut self.tasks;
        let stats = &mut self.stats;
        m.run(task, max_steps, |m, t, ev, regs| {
            let (trap, ts) = tasks.entry(t).or_default();
            let space = m.task_space(t).expect("task has a space");
            match ev {
                StepEvent::Breakpoint { .. } => {
                    stats.traps += 1;
                    match core.on_breakpoint(m, CpuId(0), space, t, trap, ts, regs) {
                        Hit::Emulated => stats.emulated += 1,
                        Hit::Boosted { .. } => stats.boosted += 1,
                        Hit::SingleStep { .. } => {
                            stats.stepped += 1;
                            m.set_single_step(t, true);
                        }
                        Hit::Restart => stats.restarts += 1,
                        Hit::Returned { .. } => stats.returns += 1,
                        other => panic!("unexpected hit outcome {other:?} at {:#x}", regs.pc),
                    }
                    let _ = core.maintain(m);
                }
                StepEvent::SingleStepDone => match core.on_single_step(m, space, trap, regs) {
                    Step::Done => {}
                    other => panic!("unexpected step outcome {other:?}"),
                },
                StepEvent::Exited(_) => {
                    core.on_task_exit(ts);
                    core.clear_trap(trap);
                }
                _ => {}
            }
            Resume::Continue
        });
        if let Some((trap, _)) = self.tasks.get_mut(&task) {
            core.seen_at(trap, m.regs(task).map_or(0, |r| r.pc));
        }
        match m.status(task)? {
            platform_mock::task::TaskStatus::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// Report every file mapping of `space` to the core (as a platform does after spawn or exec).
pub fn report_mappings<
    K: Consumer<Machine>,
    const A: usize,
    const B: usize,
    const C: usize,
    const D: usize,
    const E: usize,
    const F: usize,
>(
    m: &Machine,
    core: &ProbeCore<Machine, K, A, B, C, D, E, F>,
    space: SpaceId,
    files: &[FileId],
) -> Result<(), probe_core::Error> {
    let mut maps: Vec<Mapping> = Vec::new();
    for &f in files {
        m.for_each_mapping(f, &mut |mp| {
            if mp.space == space {
                maps.push(mp);
            }
            ControlFlow::Continue(())
        });
    }
    let mut first = Ok(());
    for mp in maps {
        if let Err(e) = core.on_mmap(m, mp) {
            first = first.and(Err(e));
        }
    }
    first
}
