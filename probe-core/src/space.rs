//! The space table entry: what the core keeps per address space with breakpoints — the head
//! of its site list, its return trampoline, a pending filter re-evaluation, and its slot area
//! (`xol.rs`).

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::table::{Link, Payload, NIL};
use crate::xol::XolArea;

/// A space table entry.
#[derive(Debug)]
pub(crate) struct SpacePayload<const XOL: usize> {
    /// The return trampoline's address (0: none yet); it occupies one slot.
    pub(crate) trampoline: AtomicU64,
    /// Writer only: head of the space's site list.
    pub(crate) sites: Link,
    /// Bumped each time the entry is (re)used for a space: records of an earlier use are
    /// stale and count nothing out.
    generation: AtomicU32,
    /// A handler asked for this space's filters to be re-evaluated.
    pub(crate) refilter: AtomicBool,
    /// The out-of-line slot area.
    pub(crate) xol: XolArea<XOL>,
}

impl<const XOL: usize> Payload for SpacePayload<XOL> {
    #[cfg(not(loom))]
    const BLANK: Self = SpacePayload {
        trampoline: AtomicU64::new(0),
        sites: Link::nil(),
        generation: AtomicU32::new(0),
        refilter: AtomicBool::new(false),
        xol: XolArea::new(),
    };
    #[cfg(loom)]
    fn blank() -> Self {
        SpacePayload {
            trampoline: AtomicU64::new(0),
            sites: Link::nil(),
            generation: AtomicU32::new(0),
            refilter: AtomicBool::new(false),
            xol: XolArea::new(),
        }
    }
}

impl<const XOL: usize> SpacePayload<XOL> {
    /// Reset a freshly claimed space entry.
    pub(crate) fn reset(&self) {
        self.trampoline.store(0, Ordering::Relaxed);
        self.sites.store(NIL, Ordering::Relaxed);
        self.refilter.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.xol.reset();
    }

    /// The entry's current generation.
    #[inline]
    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }
}
