//! Per-task state, owned by the platform (as the kernel keeps `uprobe_task` in `task_struct`).
//!
//! The platform keeps one [`TaskState`] per task and passes it by `&mut` to every call about
//! that task; calls about one task are naturally never concurrent, so this state needs no lock
//! and the hit path touches no shared table for it. It holds the task's chain of return-probe
//! instances (instances are found by task, not by stack address: the kretprobe rework of
//! 2005, `kernel/kprobes.c`), bounded by `DEPTH`. What belongs to the trap in flight (a slot,
//! a single step) is per execution context instead: [`TrapState`](crate::TrapState).

use heapless::Vec;

use crate::addr::{Addr, ProbeKey};

/// Most bytes of per-instance data a return consumer may ask for.
pub const RET_DATA_MAX: usize = 64;

/// One tracked call of a return-probed function.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetInstance {
    pub(crate) consumer: u32,
    pub(crate) generation: u32,
    pub(crate) key: ProbeKey,
    /// The function's entry address.
    pub(crate) func: Addr,
    /// The return address found at entry (the trampoline itself when `chained`).
    pub(crate) ret: Addr,
    /// The stack pointer at entry.
    pub(crate) frame: u64,
    /// The return address was already the trampoline (another return probe on the same
    /// frame, or a tail call): the real one is in an older instance.
    pub(crate) chained: bool,
    pub(crate) data_len: u8,
    pub(crate) data: [u8; RET_DATA_MAX],
}

/// A read-only view of a task's tracked calls, innermost first; what unwinders need to see
/// through the trampoline.
#[derive(Clone, Copy, Debug)]
pub struct ReturnChain<'a> {
    pub(crate) rets: &'a [RetInstance],
}

impl<'a> ReturnChain<'a> {
    /// The real return address of the `n`-th frame (0 = innermost) whose return-address slot
    /// holds the trampoline: an unwinder that meets the trampoline for the `n`-th time
    /// substitutes this.
    pub fn real_return_address(&self, n: usize) -> Option<Addr> {
        self.rets
            .iter()
            .rev()
            .filter(|r| !r.chained)
            .nth(n)
            .map(|r| r.ret)
    }

    /// Number of tracked calls (instances) in the chain.
    pub fn len(&self) -> usize {
        self.rets.len()
    }

    /// Whether no call is tracked.
    pub fn is_empty(&self) -> bool {
        self.rets.is_empty()
    }

    /// The frames whose return address is hijacked, innermost first: (entry stack pointer,
    /// function entry, real return address).
    pub fn frames(&self) -> impl Iterator<Item = (u64, Addr, Addr)> + 'a {
        self.rets
            .iter()
            .rev()
            .filter(|r| !r.chained)
            .map(|r| (r.frame, r.func, r.ret))
    }
}

/// What the core remembers about one task between calls: its tracked calls. `DEPTH` bounds
/// the chain of tracked calls (return-probe instances); a call that would go deeper is counted
/// as missed.
#[derive(Debug)]
pub struct TaskState<const DEPTH: usize = 32> {
    pub(crate) rets: Vec<RetInstance, DEPTH>,
}

impl<const DEPTH: usize> TaskState<DEPTH> {
    /// A task the core has not seen yet.
    pub const fn new() -> TaskState<DEPTH> {
        TaskState { rets: Vec::new() }
    }

    /// The task's tracked calls (return-probe instances).
    pub fn returns(&self) -> ReturnChain<'_> {
        ReturnChain { rets: &self.rets }
    }
}

impl<const DEPTH: usize> Default for TaskState<DEPTH> {
    fn default() -> Self {
        Self::new()
    }
}
