//! Sites: one per installed breakpoint, keyed by `(space, address)`.
//!
//! The hit path goes address -> site -> probe in one lookup: the site is the mapping's
//! translation of (file, offset) into this space, made when the breakpoint was installed.
//! Sites sit on two writer-only doubly linked lists, the probe's and the space's, so that
//! unregistering a probe or tearing down a space touches only its own sites.

use crate::sync::{AtomicU64, Ordering};
use crate::table::{Link, Payload};

/// A site table entry.
#[derive(Debug)]
pub(crate) struct SitePayload {
    /// Index of the probe in the probe table.
    pub(crate) probe: Link,
    /// Index of the space in the space table.
    pub(crate) space: Link,
    /// The out-of-line slot's index in its space (NIL for emulated probes).
    pub(crate) slot: Link,
    /// The slot's address.
    pub(crate) slot_addr: AtomicU64,
    /// Writer only: the address of the SDT semaphore this site incremented (0: none).
    pub(crate) sem_addr: AtomicU64,
    /// Writer only: links of the probe's site list.
    pub(crate) next_of_probe: Link,
    pub(crate) prev_of_probe: Link,
    /// Writer only: links of the space's site list.
    pub(crate) next_of_space: Link,
    pub(crate) prev_of_space: Link,
}

impl Payload for SitePayload {
    #[cfg(not(loom))]
    const BLANK: Self = SitePayload {
        probe: Link::nil(),
        space: Link::nil(),
        slot: Link::nil(),
        slot_addr: AtomicU64::new(0),
        sem_addr: AtomicU64::new(0),
        next_of_probe: Link::nil(),
        prev_of_probe: Link::nil(),
        next_of_space: Link::nil(),
        prev_of_space: Link::nil(),
    };
    #[cfg(loom)]
    fn blank() -> Self {
        SitePayload {
            probe: Link::nil(),
            space: Link::nil(),
            slot: Link::nil(),
            slot_addr: AtomicU64::new(0),
            sem_addr: AtomicU64::new(0),
            next_of_probe: Link::nil(),
            prev_of_probe: Link::nil(),
            next_of_space: Link::nil(),
            prev_of_space: Link::nil(),
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
    pub(crate) fn links(&self, l: List) -> (&Link, &Link) {
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
