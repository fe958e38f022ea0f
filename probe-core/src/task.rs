//! Per-task state, owned by the platform (as the kernel keeps `uprobe_task` in `task_struct`).
//!
//! The platform keeps one [`TaskState`] per task and passes it by `&mut` to every call about
//! that task; calls about one task are naturally never concurrent, so this state needs no lock
//! and the hit path touches no shared table for it.

use crate::addr::{Addr, SpaceId};
use crate::arch::Arch;

/// The task's record of an out-of-line slot its IP may be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct XolRecord {
    pub(crate) space: SpaceId,
    pub(crate) space_index: u32,
    pub(crate) slot: u32,
    pub(crate) addr: Addr,
}

/// A single step in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepRecord<A: Arch> {
    pub(crate) plan: A::Plan,
    pub(crate) insn: Addr,
    pub(crate) slot: Addr,
    pub(crate) state: A::StepState,
}

/// What the core remembers about one task between calls.
#[derive(Debug)]
pub struct TaskState<A: Arch> {
    pub(crate) xol: Option<XolRecord>,
    pub(crate) step: Option<StepRecord<A>>,
}

impl<A: Arch> TaskState<A> {
    /// A task the core has not seen yet.
    pub const fn new() -> TaskState<A> {
        TaskState {
            xol: None,
            step: None,
        }
    }

    /// Whether a single step is pending: the platform must report its completion with
    /// `on_single_step` (or its abandonment with `abort_single_step`).
    pub fn stepping(&self) -> bool {
        self.step.is_some()
    }

    /// Whether the task may be executing inside an out-of-line slot.
    pub fn in_slot(&self) -> bool {
        self.xol.is_some()
    }

    /// The slot the task was last sent to, if it may still be inside.
    pub fn slot(&self) -> Option<Addr> {
        self.xol.map(|r| r.addr)
    }
}

impl<A: Arch> Default for TaskState<A> {
    fn default() -> Self {
        Self::new()
    }
}
