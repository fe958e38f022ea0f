//! Per-task state, owned by the platform (as the kernel keeps `uprobe_task` in `task_struct`).
//!
//! The platform keeps one [`TaskState`] per task and passes it by `&mut` to every call about
//! that task; calls about one task are naturally never concurrent, so this state needs no lock
//! and the hit path touches no shared table for it. It holds the task's chain of return-probe
//! instances (instances are found by task, not by stack address: the kretprobe rework of
//! 2005, `kernel/kprobes.c`), bounded by `DEPTH`. A platform that wants the chain to grow
//! with the task's nesting keeps it in a type of its own that implements [`TaskReturns`]
//! (and grows it between calls into the core, never during one). What belongs to the trap
//! in flight (a slot, a single step) is per execution context instead:
//! [`TrapState`](crate::TrapState).

use heapless::Vec;

use crate::addr::{Addr, ProbeKey};

/// Most bytes of per-instance data a return consumer may ask for.
pub const RET_DATA_MAX: usize = 64;

/// One tracked call of a return-probed function (opaque to platforms, which only store it).
#[derive(Clone, Copy, Debug)]
pub struct RetInstance {
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

/// Where a task's tracked calls (return-probe instances) live: the core's fixed-capacity
/// [`TaskState`], or a platform's own store (one that grows with the task's nesting, say).
/// The core calls these on its hit and return paths: none may allocate, block or panic. A
/// store that grows does so between calls into the core, making room for
/// [`MAX_RETURNS_PER_HIT`] before each breakpoint trap; a call that finds no room is counted
/// as missed ([`ProbeCore::nmissed_nesting`](crate::ProbeCore::nmissed_nesting)).
pub trait TaskReturns {
    /// The tracked calls, outermost first.
    fn calls(&self) -> &[RetInstance];
    /// Track one more call (the innermost); hands it back when there is no room.
    fn push_call(&mut self, call: RetInstance) -> Result<(), RetInstance>;
    /// Forget the innermost tracked call, handing it back.
    fn pop_call(&mut self) -> Option<RetInstance>;
    /// How many more calls [`push_call`](Self::push_call) takes now.
    fn room(&self) -> usize;
    /// The tracked calls as unwinders need to see them.
    fn chain(&self) -> ReturnChain<'_> {
        ReturnChain { rets: self.calls() }
    }
}

/// Most calls one breakpoint hit tracks (return consumers of one probe): what a growing
/// [`TaskReturns`] makes room for before each trap.
pub const MAX_RETURNS_PER_HIT: usize = 8;

impl<const DEPTH: usize> TaskReturns for TaskState<DEPTH> {
    fn calls(&self) -> &[RetInstance] {
        &self.rets
    }

    fn push_call(&mut self, call: RetInstance) -> Result<(), RetInstance> {
        self.rets.push(call)
    }

    fn pop_call(&mut self) -> Option<RetInstance> {
        self.rets.pop()
    }

    fn room(&self) -> usize {
        DEPTH - self.rets.len()
    }
}
