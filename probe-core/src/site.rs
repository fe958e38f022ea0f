//! Sites: one per installed breakpoint, keyed by `(space, address)`.
//!
//! The hit path goes address -> site -> probe in one lookup: the site is the mapping's
//! translation of (file, offset) into this space, made when the breakpoint was installed.
//! Sites sit on two writer-only doubly linked lists, the probe's and the space's, so that
//! unregistering a probe or tearing down a space touches only its own sites.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::table::{Payload, NIL};

/// A site table entry.
#[derive(Debug)]
pub(crate) struct SitePayload {
    /// Index of the probe in the probe table.
    pub(crate) probe: AtomicU32,
    /// Index of the space in the space table.
    pub(crate) space: AtomicU32,
    /// The out-of-line slot's index in its space (NIL for emulated probes).
    pub(crate) slot: AtomicU32,
    /// The slot's address.
    pub(crate) slot_addr: AtomicU64,
    /// Writer only: the address of the SDT semaphore this site incremented (0: none).
    pub(crate) sem_addr: AtomicU64,
    /// Writer only: links of the probe's site list.
    pub(crate) next_of_probe: AtomicU32,
    pub(crate) prev_of_probe: AtomicU32,
    /// Writer only: links of the space's site list.
    pub(crate) next_of_space: AtomicU32,
    pub(crate) prev_of_space: AtomicU32,
}

impl Payload for SitePayload {
    #[cfg(not(loom))]
    const BLANK: Self = SitePayload {
        probe: AtomicU32::new(NIL),
        space: AtomicU32::new(NIL),
        slot: AtomicU32::new(NIL),
        slot_addr: AtomicU64::new(0),
        sem_addr: AtomicU64::new(0),
        next_of_probe: AtomicU32::new(NIL),
        prev_of_probe: AtomicU32::new(NIL),
        next_of_space: AtomicU32::new(NIL),
        prev_of_space: AtomicU32::new(NIL),
    };
    #[cfg(loom)]
    fn blank() -> Self {
        SitePayload {
            probe: AtomicU32::new(NIL),
            space: AtomicU32::new(NIL),
            slot: AtomicU32::new(NIL),
            slot_addr: AtomicU64::new(0),
            sem_addr: AtomicU64::new(0),
            next_of_probe: AtomicU32::new(NIL),
            prev_of_probe: AtomicU32::new(NIL),
            next_of_space: AtomicU32::new(NIL),
            prev_of_space: AtomicU32::new(NIL),
        }
    }
}

/// Which of a site's two lists.
#[derive(Clone, Copy, Debug)]
pub(crate) enum List {
    Probe,
    Space,
}

impl SitePayload {
    #[inline]
    pub(crate) fn links(&self, l: List) -> (&AtomicU32, &AtomicU32) {
        match l {
            List::Probe => (&self.prev_of_probe, &self.next_of_probe),
            List::Space => (&self.prev_of_space, &self.next_of_space),
        }
    }

    /// The next site on list `l`.
    #[inline]
    pub(crate) fn next(&self, l: List) -> u32 {
        self.links(l).1.load(Ordering::Relaxed)
    }
}
