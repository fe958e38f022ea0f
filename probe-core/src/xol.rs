//! Execute-out-of-line slots (uprobes' XOL area, `kernel/events/uprobes.c`).
//!
//! Each address space gets one slot area from the platform ([`Platform::xol_area`]), within
//! reach of the code where it can. A probe whose plan needs a slot (boost or single-step) gets
//! its own slot in each space where it is installed, written once at install time, so the hit
//! path never writes a slot and never allocates: many tasks may run the same slot at once.
//!
//! A slot is reused only when no task's instruction pointer can be inside it: the hit path
//! counts a task into the slot (its *occupancy*) and the task is counted out the next time the
//! core sees it outside the slot (its next trap at the same nesting level, a single-step
//! completion, or the platform's [`seen_at`](crate::ProbeCore::seen_at) report, e.g. from a
//! context switch, as proposed for uprobes on LKML, Nov 2011). A removed slot is *retired*; it
//! becomes free once a grace period has passed (no reader can still be sending a task into
//! it) and its occupancy is zero.
//!
//! **Running out.** When every slot of a space is used or still retired, installing a
//! slot-needing probe in that space fails with
//! `Error::CapacityExhausted { what: Capacity::XolSlots }`: at registration the whole
//! registration is rolled back; at an mmap or fork event that probe stays uninstalled in that
//! space (the event reports the error) and the rest proceed. Emulated probes need no slot.
//!
//! [`Platform::xol_area`]: crate::platform::Platform::xol_area

use crate::addr::Addr;
use crate::reclaim::Epochs;
use crate::sync::{array_of, AtomicU32, AtomicU64, Ordering};

const FREE: u64 = 0;
const USED: u64 = 1;
const RETIRED_TAG: u64 = 2;

/// One slot's bookkeeping.
#[derive(Debug)]
pub(crate) struct XolSlot {
    /// FREE, USED, or `epoch << 2 | RETIRED_TAG`.
    state: AtomicU64,
    /// Tasks that may have their IP inside the slot.
    pub(crate) occupancy: AtomicU32,
}

impl XolSlot {
    crate::sync::const_fn! {
        fn new() -> XolSlot {
            XolSlot {
                state: AtomicU64::new(FREE),
                occupancy: AtomicU32::new(0),
            }
        }
    }
}

/// One space's slot area: where it is, and the bookkeeping of its `XOL` slots.
#[derive(Debug)]
pub(crate) struct XolArea<const XOL: usize> {
    /// Base of the slot area (0: not created yet).
    pub(crate) base: AtomicU64,
    /// Writer only: where the next slot search starts.
    cursor: AtomicU32,
    /// Writer only: one past the highest slot ever taken since the last reset. Slots at and
    /// above it were never written, so a reset leaves them alone: a space's bookkeeping
    /// costs memory in proportion to the slots it used (an embedder's zeroed, lazily
    /// committed core never touches the rest).
    high: AtomicU32,
    pub(crate) slots: [XolSlot; XOL],
}

impl<const XOL: usize> XolArea<XOL> {
    crate::sync::const_fn! {
        /// No area yet, every slot free.
        pub(crate) fn new() -> XolArea<XOL> {
            XolArea {
                base: AtomicU64::new(0),
                cursor: AtomicU32::new(0),
                high: AtomicU32::new(0),
                slots: array_of![XolSlot::new(); XOL],
            }
        }
    }

    /// Forget the area (a space entry reused for another space). Records of the earlier
    /// space are stale from then on (their space generation differs), so its occupancy counts
    /// could never drain: they start at zero. The entry is reused only a grace period after
    /// that space was forgotten.
    pub(crate) fn reset(&self) {
        self.base.store(0, Ordering::Relaxed);
        self.cursor.store(0, Ordering::Relaxed);
        let high = self.high.swap(0, Ordering::Relaxed) as usize;
        for s in self.slots.iter().take(high) {
            s.state.store(FREE, Ordering::Relaxed);
            s.occupancy.store(0, Ordering::Relaxed);
        }
    }

    /// Slot `i` is taken: raise the high-water mark. Writer only.
    fn taken(&self, i: usize) {
        let above = (i + 1) as u32;
        if self.high.load(Ordering::Relaxed) < above {
            self.high.store(above, Ordering::Relaxed);
        }
    }

    /// The address of slot `i`.
    #[inline]
    pub(crate) fn slot_addr(&self, i: u32, slot_size: usize) -> Option<Addr> {
        let base = self.base.load(Ordering::Relaxed);
        Addr(base).checked_add((i as u64).checked_mul(slot_size as u64)?)
    }

    /// Take a free slot. Writer only.
    pub(crate) fn alloc<const C: usize>(&self, epochs: &Epochs<C>) -> Option<u32> {
        let start = self.cursor.load(Ordering::Relaxed) as usize;
        for k in 0..XOL {
            let i = (start + k) % XOL;
            let s = &self.slots[i];
            let st = s.state.load(Ordering::Acquire);
            let free = st == FREE
                || (st & 3 == RETIRED_TAG
                    && epochs.expired(st >> 2)
                    && s.occupancy.load(Ordering::Acquire) == 0);
            if free {
                s.state.store(USED, Ordering::Relaxed);
                self.taken(i);
                self.cursor.store(((i + 1) % XOL) as u32, Ordering::Relaxed);
                return Some(i as u32);
            }
        }
        None
    }

    /// Give slot `i` back; reusable after a grace period once no task is inside. Writer only,
    /// and only after everything that leads readers to the slot (its site) is unpublished:
    /// the stamp is read after a full fence (`reclaim.rs`).
    pub(crate) fn retire<const C: usize>(&self, i: u32, epochs: &Epochs<C>) {
        if let Some(s) = self.slots.get(i as usize) {
            let stamp = epochs.retire_stamp();
            s.state.store((stamp << 2) | RETIRED_TAG, Ordering::Release);
        }
    }

    /// Mark slot `i` used (a forked child inherits its parent's slots). Writer only.
    pub(crate) fn mark_used(&self, i: u32) {
        if let Some(s) = self.slots.get(i as usize) {
            s.state.store(USED, Ordering::Relaxed);
            self.taken(i as usize);
        }
    }

    /// Count a task into slot `i`.
    #[inline]
    pub(crate) fn enter(&self, i: u32) {
        if let Some(s) = self.slots.get(i as usize) {
            s.occupancy.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Count a task out of slot `i` (saturating: a stale record never underflows).
    #[inline]
    pub(crate) fn leave(&self, i: u32) {
        if let Some(s) = self.slots.get(i as usize) {
            let _ = s
                .occupancy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
    }
}
