//! Running tasks: a pluggable event loop and a deterministic scheduler.
//!
//! [`Machine::run`] steps one task; [`Machine::run_all`] interleaves every running task, one
//! instruction at a time, in an order a [`Scheduler`] picks (round-robin, or a seeded PRNG so
//! that a failing interleaving can be replayed from its seed). Every event other than
//! [`StepEvent::Normal`] goes to the caller's `on_event` with a copy of the task's registers;
//! changes the callback makes to that copy are written back to the task.

use probe_core::TaskId;

use crate::arch::ToyRegs;
use crate::interp::StepEvent;
use crate::machine::Machine;

/// What the event callback wants next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resume {
    /// Keep running.
    Continue,
    /// Stop the run now.
    Stop,
}

/// Why a run ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopReason {
    /// No task is left running.
    AllDone,
    /// The step budget ran out.
    MaxSteps,
    /// The callback returned [`Resume::Stop`].
    Stopped,
}

/// How a run ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunOutcome {
    /// Instructions stepped.
    pub steps: u64,
    /// Why it ended.
    pub reason: StopReason,
}

/// How the next task is picked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    /// Each running task in turn, by id.
    RoundRobin,
    /// Uniformly at random from a seeded PRNG (xorshift64*).
    Random {
        /// The seed (0 is replaced by a fixed non-zero constant).
        seed: u64,
    },
}

/// A deterministic scheduler.
#[derive(Clone, Debug)]
pub struct Scheduler {
    policy: Policy,
    rng: u64,
    last: Option<TaskId>,
}

impl Scheduler {
    /// A scheduler with `policy`.
    pub fn new(policy: Policy) -> Scheduler {
        let rng = match policy {
            Policy::Random { seed: 0 } | Policy::RoundRobin => 0x9e37_79b9_7f4a_7c15,
            Policy::Random { seed } => seed,
        };
        Scheduler {
            policy,
            rng,
            last: None,
        }
    }

    /// Round-robin.
    pub fn round_robin() -> Scheduler {
        Scheduler::new(Policy::RoundRobin)
    }

    /// Random, from `seed`.
    pub fn seeded(seed: u64) -> Scheduler {
        Scheduler::new(Policy::Random { seed })
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Pick one of `runnable` (sorted by id), or `None` if it is empty.
    pub fn pick(&mut self, runnable: &[TaskId]) -> Option<TaskId> {
        if runnable.is_empty() {
            return None;
        }
        let t = match self.policy {
            Policy::RoundRobin => match self.last {
                Some(last) => runnable
                    .iter()
                    .copied()
                    .find(|t| *t > last)
                    .unwrap_or(runnable[0]),
                None => runnable[0],
            },
            Policy::Random { .. } => {
                runnable[(self.next_random() % runnable.len() as u64) as usize]
            }
        };
        self.last = Some(t);
        Some(t)
    }
}

impl Machine {
    fn dispatch<F>(&self, task: TaskId, ev: StepEvent, on_event: &mut F) -> Resume
    where
        F: FnMut(&Machine, TaskId, StepEvent, &mut ToyRegs) -> Resume,
    {
        let Some(before) = self.regs(task) else {
            return on_event(self, task, ev, &mut ToyRegs::default());
        };
        let mut regs = before;
        let resume = on_event(self, task, ev, &mut regs);
        if regs != before {
            self.set_regs(task, regs);
        }
        resume
    }

    /// Step `task` until it stops running, `max_steps` instructions ran, or `on_event`
    /// returns [`Resume::Stop`].
    pub fn run<F>(&self, task: TaskId, max_steps: u64, mut on_event: F) -> RunOutcome
    where
        F: FnMut(&Machine, TaskId, StepEvent, &mut ToyRegs) -> Resume,
    {
        let mut steps = 0;
        while steps < max_steps {
            let ev = self.step(task);
            if ev == StepEvent::NotRunnable {
                return RunOutcome {
                    steps,
                    reason: StopReason::AllDone,
                };
            }
            steps += 1;
            if ev != StepEvent::Normal && self.dispatch(task, ev, &mut on_event) == Resume::Stop {
                return RunOutcome {
                    steps,
                    reason: StopReason::Stopped,
                };
            }
        }
        let reason = if self.status(task).is_some_and(|s| s.is_running()) {
            StopReason::MaxSteps
        } else {
            StopReason::AllDone
        };
        RunOutcome { steps, reason }
    }

    /// Run every running task (including ones created meanwhile), one instruction per pick.
    pub fn run_all<F>(&self, sched: &mut Scheduler, max_steps: u64, mut on_event: F) -> RunOutcome
    where
        F: FnMut(&Machine, TaskId, StepEvent, &mut ToyRegs) -> Resume,
    {
        let mut steps = 0;
        loop {
            let runnable = self.running_tasks();
            let Some(task) = sched.pick(&runnable) else {
                return RunOutcome {
                    steps,
                    reason: StopReason::AllDone,
                };
            };
            if steps >= max_steps {
                return RunOutcome {
                    steps,
                    reason: StopReason::MaxSteps,
                };
            }
            let ev = self.step(task);
            steps += 1;
            if ev != StepEvent::Normal
                && ev != StepEvent::NotRunnable
                && self.dispatch(task, ev, &mut on_event) == Resume::Stop
            {
                return RunOutcome {
                    steps,
                    reason: StopReason::Stopped,
                };
            }
        }
    }

    /// Run `task` alone, ignoring every event, until it stops running or `max_steps` ran;
    /// its exit code if it exited.
    pub fn run_to_exit(&self, task: TaskId, max_steps: u64) -> Option<u64> {
        self.run(task, max_steps, |_, _, _, _| Resume::Continue);
        match self.status(task)? {
            crate::task::TaskStatus::Exited(code) => Some(code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_seeded_are_deterministic() {
        let ts = [TaskId(1), TaskId(2), TaskId(3)];
        let mut rr = Scheduler::round_robin();
        let picks: Vec<u64> = (0..5).map(|_| rr.pick(&ts).unwrap().0).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2]);
        let run = |seed| {
            let mut s = Scheduler::seeded(seed);
            (0..32).map(|_| s.pick(&ts).unwrap().0).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|t| (1..=3).contains(t)));
        assert_eq!(Scheduler::seeded(1).pick(&[]), None);
    }
}
