//! Consumers: what an embedder attaches to a probe.
//!
//! A probe at (file, offset) has one or more consumers. Each has a handler, an optional
//! filter (seed 000: a breakpoint is installed in a space only where some consumer wants it),
//! and options for the later features: a return handler with `maxactive` instances and
//! per-instance data (seed 002), and an SDT semaphore (seed 004).

use crate::addr::{Addr, CpuId, ProbeKey, SpaceId, TaskId};
use crate::arch::Arch;
use crate::platform::Platform;

/// The register file of platform `P`.
pub type RegsOf<P> = <<P as Platform>::Arch as Arch>::Regs;

/// What a handler sees of a hit.
#[derive(Debug)]
pub struct HitContext<'a, P: Platform> {
    /// The platform.
    pub platform: &'a P,
    /// The CPU the hit is handled on.
    pub cpu: CpuId,
    /// The task that hit the probe.
    pub task: TaskId,
    /// Its address space.
    pub space: SpaceId,
    /// The probe.
    pub key: ProbeKey,
    /// The probed instruction's address in this space.
    pub addr: Addr,
    /// The task's registers, as at the probed instruction (before it executes).
    pub regs: &'a mut RegsOf<P>,
}

/// What a handler asks the core to do after it ran.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum HandlerAction {
    /// Keep the probe.
    #[default]
    Keep,
    /// This consumer no longer wants this address space: the breakpoint is removed from the
    /// current space unless another consumer still wants it (the kernel's
    /// `UPROBE_HANDLER_REMOVE`). The consumer's filter must now decline the space's tasks, or
    /// a later filter re-evaluation installs it again.
    RemoveFromSpace,
}

/// A consumer. Implemented by the embedder; the core stores it by value.
///
/// Handlers run on the hit path: they must not block and should be short.
pub trait Consumer<P: Platform>: Send + Sync {
    /// Whether this consumer has a filter. A consumer without one wants every space.
    fn has_filter(&self) -> bool {
        false
    }

    /// Whether this consumer wants `task` of `space` (only asked when
    /// [`has_filter`](Consumer::has_filter) is true). Asked at registration and at events for
    /// every task of a space, and on each hit for the hitting task.
    fn filter(&self, platform: &P, space: SpaceId, task: TaskId) -> bool {
        let _ = (platform, space, task);
        true
    }

    /// Runs when a task the filter accepts executes the probed instruction.
    fn handler(&self, ctx: &mut HitContext<'_, P>) -> HandlerAction {
        let _ = ctx;
        HandlerAction::Keep
    }
}

/// Options of a consumer, fixed at registration.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// File offset of an SDT semaphore ("reference counter") this probe's installation
    /// increments (seed 004). All consumers of one probe must agree on it.
    pub semaphore: Option<u64>,
}

impl ConsumerOptions {
    /// No options: a plain entry consumer.
    pub const fn new() -> ConsumerOptions {
        ConsumerOptions { semaphore: None }
    }

    /// With an SDT semaphore at file offset `offset`.
    pub const fn with_semaphore(mut self, offset: u64) -> ConsumerOptions {
        self.semaphore = Some(offset);
        self
    }
}

/// A registered consumer, returned by `register` and given back to `unregister`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConsumerHandle {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConsumerHandle {
    /// A stable number for this registration (for the embedder's own tables and messages).
    pub const fn id(&self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }
}

mod slot {
    use crate::consumer::ConsumerOptions;
    use crate::sync::{AtomicBool, AtomicU32, AtomicU64, OwnedCell, Ordering, PublishCell};
    use crate::table::NIL;

    const FREE: u64 = 0;
    const LIVE: u64 = 1;
    const DEAD: u64 = 2;

    /// Storage of one registered consumer.
    #[derive(Debug)]
    pub(crate) struct ConsumerSlot<C> {
        /// `generation << 2 | {FREE, LIVE, DEAD}`.
        state: AtomicU64,
        /// Next consumer of the same probe (readers follow it).
        pub(crate) next: AtomicU32,
        /// The probe's index (writer only).
        pub(crate) probe: AtomicU32,
        /// Cached `has_filter()`.
        pub(crate) has_filter: AtomicBool,
        pub(crate) value: OwnedCell<C>,
        pub(crate) opts: PublishCell<ConsumerOptions>,
    }

    impl<C> ConsumerSlot<C> {
        crate::sync::const_fn! {
            pub(crate) fn new() -> ConsumerSlot<C> {
                ConsumerSlot {
                    state: AtomicU64::new(FREE),
                    next: AtomicU32::new(NIL),
                    probe: AtomicU32::new(NIL),
                    has_filter: AtomicBool::new(false),
                    value: OwnedCell::new(),
                    opts: PublishCell::new(ConsumerOptions::new()),
                }
            }
        }

        /// Whether the slot is free for a new consumer.
        pub(crate) fn is_free(&self) -> bool {
            self.state.load(Ordering::Acquire) & 3 == FREE
        }

        /// Whether the consumer is registered (readers: whether to run it).
        #[inline]
        pub(crate) fn is_live(&self) -> bool {
            self.state.load(Ordering::Acquire) & 3 == LIVE
        }

        /// The current generation.
        pub(crate) fn generation(&self) -> u32 {
            (self.state.load(Ordering::Acquire) >> 2) as u32
        }

        /// Make a free slot live with the next generation; returns it.
        pub(crate) fn activate(&self) -> u32 {
            let g = self.generation().wrapping_add(1);
            self.state.store(((g as u64) << 2) | LIVE, Ordering::Release);
            g
        }

        /// Mark dead: readers stop running it from now on.
        pub(crate) fn kill(&self) {
            let g = self.generation() as u64;
            self.state.store((g << 2) | DEAD, Ordering::Release);
        }

        /// Back to free (after a grace period).
        pub(crate) fn free(&self) {
            let g = self.generation() as u64;
            self.next.store(NIL, Ordering::Relaxed);
            self.probe.store(NIL, Ordering::Relaxed);
            self.state.store(g << 2 | FREE, Ordering::Release);
        }
    }
}
pub(crate) use slot::ConsumerSlot;
