//! Consumers: what an embedder attaches to a probe.
//!
//! A probe at (file, offset) has one or more consumers. Each has a handler, an optional
//! filter (a breakpoint is installed in a space only where some consumer wants it: the uprobes filter design, LKML, Sep 2010),
//! and options for the later features: a return handler with `maxactive` instances and
//! per-instance data (kretprobes' `entry_handler` and `data_size`), and an SDT semaphore (uprobes' `ref_ctr_offset`).

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
    /// The task's tracked calls, for unwinders that meet the return trampoline on the stack.
    pub returns: crate::task::ReturnChain<'a>,
}

/// What a return handler sees when a probed function returns.
#[derive(Debug)]
pub struct ReturnContext<'a, P: Platform> {
    /// The platform.
    pub platform: &'a P,
    /// The CPU the return is handled on.
    pub cpu: CpuId,
    /// The task returning.
    pub task: TaskId,
    /// Its address space.
    pub space: SpaceId,
    /// The probe (the function's entry).
    pub key: ProbeKey,
    /// The function's entry address in this space.
    pub func: Addr,
    /// The real return address, where the task resumes.
    pub ret: Addr,
    /// The task's registers at the return (the return value is in them).
    pub regs: &'a mut RegsOf<P>,
}

/// What an entry handler decides for one call of a return-probed function (kretprobes' `entry_handler`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum EntryAction {
    /// Track this call: its return handler runs when it returns.
    #[default]
    Track,
    /// Do not track this call: the instance is recycled and no return handler runs.
    Decline,
}

/// Options of a return consumer (kretprobes' `maxactive` and `data_size`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReturnOptions {
    /// How many calls of the function may be tracked at once, over all tasks. A call that
    /// finds none free is counted in `nmissed` and not tracked.
    pub maxactive: u32,
    /// Bytes of per-instance data shared by the entry and the return handler (at most
    /// [`RET_DATA_MAX`](crate::RET_DATA_MAX)).
    pub data_size: usize,
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

    /// Runs when a task the filter accepts executes the probed instruction. (For a return
    /// consumer, [`entry_handler`](Consumer::entry_handler) runs instead.)
    fn handler(&self, ctx: &mut HitContext<'_, P>) -> HandlerAction {
        let _ = ctx;
        HandlerAction::Keep
    }

    /// Return consumers only: runs at the function's entry when an instance was free, with the
    /// instance's data (`data_size` bytes, zeroed). Declining recycles the instance.
    fn entry_handler(&self, ctx: &mut HitContext<'_, P>, data: &mut [u8]) -> EntryAction {
        let _ = (ctx, data);
        EntryAction::Track
    }

    /// Return consumers only: runs when a tracked call returns, with the data the entry
    /// handler left.
    fn return_handler(&self, ctx: &mut ReturnContext<'_, P>, data: &mut [u8]) {
        let _ = (ctx, data);
    }
}

/// Options of a consumer, fixed at registration.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// File offset of an SDT semaphore ("reference counter") this probe's installation
    /// increments (uprobes' `ref_ctr_offset`). All consumers of one probe must agree on it.
    pub semaphore: Option<u64>,
    /// Make this a return consumer.
    pub ret: Option<ReturnOptions>,
}

impl ConsumerOptions {
    /// No options: a plain entry consumer.
    pub const fn new() -> ConsumerOptions {
        ConsumerOptions {
            semaphore: None,
            ret: None,
        }
    }

    /// A return consumer tracking up to `maxactive` calls at once, with `data_size` bytes of
    /// per-instance data.
    pub const fn with_return(mut self, maxactive: u32, data_size: usize) -> ConsumerOptions {
        self.ret = Some(ReturnOptions {
            maxactive,
            data_size,
        });
        self
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
    use crate::ret::Instances;
    use crate::sync::{AtomicBool, AtomicU64, Ordering, OwnedCell, PublishCell};
    use crate::table::{Link, NIL};

    const FREE: u64 = 0;
    const LIVE: u64 = 1;
    const DEAD: u64 = 2;

    /// Storage of one registered consumer.
    #[derive(Debug)]
    pub(crate) struct ConsumerSlot<C> {
        /// `generation << 2 | {FREE, LIVE, DEAD}`.
        state: AtomicU64,
        /// Next consumer of the same probe (readers follow it).
        pub(crate) next: Link,
        /// The probe's index (writer only).
        pub(crate) probe: Link,
        /// Cached `has_filter()`.
        pub(crate) has_filter: AtomicBool,
        pub(crate) value: OwnedCell<C>,
        pub(crate) opts: PublishCell<ConsumerOptions>,
        /// Return consumers: their instance accounting (`ret.rs`).
        pub(crate) rets: Instances,
    }

    impl<C> ConsumerSlot<C> {
        crate::sync::const_fn! {
            pub(crate) fn new() -> ConsumerSlot<C> {
                ConsumerSlot {
                    state: AtomicU64::new(FREE),
                    next: Link::nil(),
                    probe: Link::nil(),
                    has_filter: AtomicBool::new(false),
                    value: OwnedCell::new(),
                    opts: PublishCell::new(ConsumerOptions::new()),
                    rets: Instances::new(),
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
            self.rets.reset(g);
            self.state
                .store(((g as u64) << 2) | LIVE, Ordering::Release);
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

    /// The consumer chain of one probe, from its head (loaded by the caller with `Acquire`)
    /// through each slot's `next` (`Acquire`): every slot on it, live or being unregistered,
    /// at most `N` (a chain can never be longer than the table).
    #[derive(Debug)]
    pub(crate) struct Chain<'a, C, const N: usize> {
        slots: &'a [ConsumerSlot<C>; N],
        next: u32,
        left: usize,
    }

    impl<'a, C, const N: usize> Chain<'a, C, N> {
        pub(crate) fn new(slots: &'a [ConsumerSlot<C>; N], head: u32) -> Chain<'a, C, N> {
            Chain {
                slots,
                next: head,
                left: N,
            }
        }
    }

    impl<'a, C, const N: usize> Iterator for Chain<'a, C, N> {
        type Item = (u32, &'a ConsumerSlot<C>);

        #[inline]
        fn next(&mut self) -> Option<Self::Item> {
            if self.next == NIL || self.left == 0 {
                return None;
            }
            let i = self.next;
            let slot = self.slots.get(i as usize)?;
            self.next = slot.next.load(Ordering::Acquire);
            self.left -= 1;
            Some((i, slot))
        }
    }
}
pub(crate) use slot::{Chain, ConsumerSlot};
