//! The trap in flight: what one execution context (a CPU in a kernel, a thread under ptrace)
//! must remember between a breakpoint and the moment it is done with the probe's slot.
//!
//! This is kept apart from the task's state ([`TaskState`](crate::TaskState): its chain of
//! return instances) because a kernel has both: a single step runs with interrupts off and
//! never migrates, so its record belongs to the CPU; return instances follow the task.
//!
//! **Nesting.** A context may take a trap while an outer trap is still in flight: a signal
//! handler or an interrupt hits another probe while the interrupted code sits in a boosted
//! slot or mid single-step. The record of the outer trap must survive, or its slot could be
//! reused under it and its single step would be reported as not ours. A [`TrapState`] is a
//! small stack of frames, one per nesting level:
//!
//! - The platform that runs a nested context on the same state (a signal handler, an
//!   interrupt handler) calls [`TrapState::nest`] before and
//!   [`ProbeCore::unnest`](crate::ProbeCore::unnest) after it. (A platform may instead give
//!   each nesting level a `TrapState` of its own: a kernel keeps one per CPU for process and
//!   interrupt context and one for NMIs.)
//! - Within one frame, a breakpoint trap while the frame still records a boosted slot means
//!   the context has left that slot (it traps elsewhere at the same level): the slot is
//!   counted out.
//! - A breakpoint trap while the frame records a single step in flight is a *reentry*, as
//!   kprobes defines it (`kernel/kprobes.c`, `reenter_kprobe` in
//!   `arch/x86/kernel/kprobes/core.c`): a handler or an unannounced nested context hit a
//!   probe. The outer step is kept, the inner hit runs **no handlers** and is counted in the
//!   probe's `nmissed` ([`ProbeCore::probe_nmissed`](crate::ProbeCore::probe_nmissed)); its
//!   instruction is resumed the usual way in a frame of its own, popped when it completes.
//!   When no frame is left, the hit fails with `CapacityExhausted { what: Nesting }` and the
//!   registers are left at the probed instruction.

use heapless::Vec;

use crate::addr::{Addr, SpaceId};
use crate::arch::Arch;
use crate::error::{Capacity, Error};

/// A context's record of an out-of-line slot its IP may be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct XolRecord {
    pub(crate) space: SpaceId,
    pub(crate) space_index: u32,
    /// The space entry's generation when the context entered (a reused entry is another
    /// space: the record is then stale and counts nothing out).
    pub(crate) space_gen: u32,
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

/// One nesting level.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<A: Arch> {
    pub(crate) xol: Option<XolRecord>,
    pub(crate) step: Option<StepRecord<A>>,
    /// Pushed by the core for a reentered hit (popped when that hit's instruction is done),
    /// rather than by the platform's [`TrapState::nest`].
    pub(crate) reentry: bool,
}

impl<A: Arch> Frame<A> {
    pub(crate) const EMPTY: Frame<A> = Frame {
        xol: None,
        step: None,
        reentry: false,
    };

    pub(crate) fn is_idle(&self) -> bool {
        self.xol.is_none() && self.step.is_none()
    }
}

/// What one execution context remembers about its traps in flight; see the module docs.
/// `NEST` bounds the nesting (outer trap plus reentries and nested contexts); the default 4
/// covers a trap, a signal or interrupt handler's trap, and a reentry in each.
#[derive(Debug)]
pub struct TrapState<A: Arch, const NEST: usize = 4> {
    /// Nesting levels above the base level (the base level is `base`).
    pub(crate) above: Vec<Frame<A>, NEST>,
    pub(crate) base: Frame<A>,
}

impl<A: Arch, const NEST: usize> TrapState<A, NEST> {
    /// A context with no trap in flight.
    pub const fn new() -> TrapState<A, NEST> {
        TrapState {
            above: Vec::new(),
            base: Frame::EMPTY,
        }
    }

    /// The platform is about to run a nested context (a signal handler, an interrupt handler)
    /// on this state, while the current level may still be in a slot or a single step: its
    /// record is kept until [`ProbeCore::unnest`](crate::ProbeCore::unnest). Fails when
    /// `NEST` levels are in use; then nothing changed.
    pub fn nest(&mut self) -> Result<(), Error> {
        self.above
            .push(Frame::EMPTY)
            .map_err(|_| Error::CapacityExhausted {
                what: Capacity::Nesting,
            })
    }

    /// Nesting levels in use above the base level.
    pub fn depth(&self) -> usize {
        self.above.len()
    }

    /// Whether a single step is pending at the current level: the platform must report its
    /// completion with `on_single_step` (or its abandonment with `abort_single_step`).
    pub fn stepping(&self) -> bool {
        self.top().step.is_some()
    }

    /// Whether a single step is pending at any level.
    pub fn any_stepping(&self) -> bool {
        self.base.step.is_some() || self.above.iter().any(|f| f.step.is_some())
    }

    /// Whether the context may be executing inside an out-of-line slot (current level).
    pub fn in_slot(&self) -> bool {
        self.top().xol.is_some()
    }

    /// The slot the current level was last sent to, if it may still be inside.
    pub fn slot(&self) -> Option<Addr> {
        self.top().xol.map(|r| r.addr)
    }

    /// Whether nothing is in flight at any level.
    pub fn is_idle(&self) -> bool {
        self.base.is_idle() && self.above.iter().all(Frame::is_idle)
    }

    pub(crate) fn top(&self) -> &Frame<A> {
        self.above.last().unwrap_or(&self.base)
    }

    pub(crate) fn top_mut(&mut self) -> &mut Frame<A> {
        match self.above.last_mut() {
            Some(f) => f,
            None => &mut self.base,
        }
    }

    /// Push a reentry frame. Fails when full.
    pub(crate) fn push_reentry(&mut self) -> Result<(), Error> {
        self.above
            .push(Frame {
                reentry: true,
                ..Frame::EMPTY
            })
            .map_err(|_| Error::CapacityExhausted {
                what: Capacity::Nesting,
            })
    }

    /// Pop the top frame (the base level is cleared instead). Returns its slot record.
    pub(crate) fn pop(&mut self) -> Option<XolRecord> {
        match self.above.pop() {
            Some(f) => f.xol,
            None => {
                let r = self.base.xol.take();
                self.base.step = None;
                r
            }
        }
    }
}

impl<A: Arch, const NEST: usize> Default for TrapState<A, NEST> {
    fn default() -> Self {
        Self::new()
    }
}
