//! Tasks: a register file, the space they run in, what they printed, how they ended.

use probe_core::{Addr, MemErrorKind, SpaceId, TaskId};

use crate::arch::ToyRegs;

/// Whether a task still runs, and how it ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskStatus {
    /// Runnable.
    Running,
    /// Ran `halt` (or was exited by the platform) with this code.
    Exited(u64),
    /// Killed by the platform: another thread of its space called `exec`, or the space was
    /// destroyed.
    Killed,
    /// Died on a memory fault (the simulated SIGSEGV).
    Faulted {
        /// The faulting address.
        addr: Addr,
        /// Why the access failed.
        kind: MemErrorKind,
    },
    /// Died on bytes that do not decode (the simulated SIGILL).
    Illegal {
        /// The instruction's address.
        addr: Addr,
    },
}

impl TaskStatus {
    /// Whether the task can still run.
    pub fn is_running(&self) -> bool {
        matches!(self, TaskStatus::Running)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub(crate) id: TaskId,
    pub(crate) space: SpaceId,
    pub(crate) regs: ToyRegs,
    pub(crate) output: Vec<u64>,
    pub(crate) status: TaskStatus,
    pub(crate) single_step: bool,
}

impl Task {
    pub(crate) fn new(id: TaskId, space: SpaceId, regs: ToyRegs) -> Task {
        Task {
            id,
            space,
            regs,
            output: Vec::new(),
            status: TaskStatus::Running,
            single_step: false,
        }
    }
}
