//! Probes: one per (file, offset), holding the original instruction, its analysis (the plan)
//! and the chain of consumers. Stored in the probe table keyed by `(file, offset)`.
//!
//! Every file with probes also has a *file entry* in the same table, keyed by
//! `(file, FILE_ENTRY)`: the head of the list of that file's probes, which the mmap event and
//! filter re-evaluation walk (the kernel keeps its tree sorted on inode:offset for the same
//! range query).

use crate::arch::Arch;
use crate::consumer::ConsumerOptions;
use crate::sync::{AtomicU64, OptionCell, Ordering, PublishCell};
use crate::table::{Link, Payload, NIL};

/// The key offset of a file entry; no instruction lives at offset `u64::MAX`.
pub(crate) const FILE_ENTRY: u64 = u64::MAX;

/// Longest original instruction the core stores.
pub(crate) const MAX_ORIG: usize = 16;

/// A probe table entry.
#[derive(Debug)]
pub(crate) struct ProbePayload<A: Arch> {
    /// The analysis (`None` for a file entry).
    pub(crate) plan: OptionCell<A::Plan>,
    /// The original instruction's bytes (its first `insn_len` are meaningful).
    pub(crate) orig: PublishCell<[u8; MAX_ORIG]>,
    /// Options shared by all consumers (the SDT semaphore).
    pub(crate) opts: PublishCell<ConsumerOptions>,
    /// Head of the consumer chain (readers follow it).
    pub(crate) consumers: Link,
    /// Writer only: head of this probe's site list.
    pub(crate) sites: Link,
    /// Writer only: for a file entry, the head of the file's probe list; for a probe, the next
    /// probe of the same file.
    pub(crate) next_of_file: Link,
    /// Writer only: the previous probe of the same file (NIL for the first).
    pub(crate) prev_of_file: Link,
    /// Hits that ran no handler because they were reentries (kprobes' `nmissed`).
    pub(crate) nmissed: AtomicU64,
}

impl<A: Arch> Payload for ProbePayload<A> {
    #[cfg(not(loom))]
    const BLANK: Self = ProbePayload {
        plan: OptionCell::new(),
        orig: PublishCell::new([0; MAX_ORIG]),
        opts: PublishCell::new(ConsumerOptions::new()),
        consumers: Link::nil(),
        sites: Link::nil(),
        next_of_file: Link::nil(),
        prev_of_file: Link::nil(),
        nmissed: AtomicU64::new(0),
    };
    #[cfg(loom)]
    fn blank() -> Self {
        ProbePayload {
            plan: OptionCell::new(),
            orig: PublishCell::new([0; MAX_ORIG]),
            opts: PublishCell::new(ConsumerOptions::new()),
            consumers: Link::nil(),
            sites: Link::nil(),
            next_of_file: Link::nil(),
            prev_of_file: Link::nil(),
            nmissed: AtomicU64::new(0),
        }
    }
}

impl<A: Arch> ProbePayload<A> {
    /// Reset the writer-side links of a freshly claimed entry.
    pub(crate) fn reset(&self) {
        self.consumers.store(NIL, Ordering::Relaxed);
        self.sites.store(NIL, Ordering::Relaxed);
        self.next_of_file.store(NIL, Ordering::Relaxed);
        self.prev_of_file.store(NIL, Ordering::Relaxed);
        self.nmissed.store(0, Ordering::Relaxed);
    }
}
