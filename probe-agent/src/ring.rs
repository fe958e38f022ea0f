//! Hit records without stops: one ring of fixed-size records per traced thread, written by
//! that thread (and by signal handlers nested on it) and read by the controller in another
//! process, the idea of perf's ring buffer (`kernel/events/ring_buffer.c`).
//!
//! The writer side follows perf's nesting rule. A handler that interrupts a write on the same
//! thread may write records of its own, but only the outermost writer publishes `head`:
//!
//! 1. `nest += 1`;
//! 2. reserve the next record by a compare-and-swap of `reserve` (after checking against
//!    `tail` that the ring has room; a full ring counts the record in `dropped`);
//! 3. write the record;
//! 4. if `nest == 1`: publish `head = reserve`, then `nest -= 1`, and if `reserve` moved
//!    meanwhile (a nested writer ran between), take `nest` again and publish once more;
//!    otherwise `nest -= 1`.
//!
//! So the reader never sees a record that an interrupted writer has reserved but not
//! finished: `head` only passes it once the outermost writer has finished everything below.
//! The reader reads `head` (acquire), the records from `tail` to it, then stores `tail`
//! (release) so the writers may reuse the space.
//!
//! Every operation is an atomic on the ring's own header; a thread writes only its own ring.

use crate::sync::{AtomicU64, Ordering};

/// Words in a record.
pub const RECORD_WORDS: usize = 8;

/// One record: the probe, the thread, and six words the probe chose (arguments, say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The probe's number.
    pub probe: u32,
    /// The thread.
    pub tid: u32,
    /// The words (a record has room for six).
    pub words: [u64; RECORD_WORDS - 2],
}

/// The header and records of one ring, laid out in shared memory. `N` records, a power of
/// two.
#[derive(Debug)]
#[repr(C)]
pub struct Ring<const N: usize> {
    /// Records up to here are complete (written by the outermost writer only).
    head: AtomicU64,
    /// Records up to here are reserved.
    reserve: AtomicU64,
    /// Writers on this thread now (nesting depth).
    nest: AtomicU64,
    /// Records that did not fit.
    dropped: AtomicU64,
    /// Records up to here are read (written by the reader).
    tail: AtomicU64,
    slots: [[AtomicU64; RECORD_WORDS]; N],
}

impl<const N: usize> Ring<N> {
    const MASK: u64 = {
        assert!(N.is_power_of_two(), "a ring holds a power of two records");
        N as u64 - 1
    };

    /// An empty ring (for tests and the loom models; shared memory starts zeroed, which is
    /// the same state).
    pub fn new() -> Self {
        Ring {
            head: AtomicU64::new(0),
            reserve: AtomicU64::new(0),
            nest: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Writes `rec` (the writer side: the ring's own thread, or a signal handler nested on
    /// it). Returns false when the ring was full (the record is counted in `dropped`). No
    /// lock, no allocation, no system call.
    pub fn push(&self, rec: &Record) -> bool {
        self.push_at(rec, &mut |_| {})
    }

    /// [`push`](Self::push), calling `at(k)` at its numbered points between atomic steps:
    /// where the loom models run a nested writer (a signal handler) on the same thread.
    #[inline(always)]
    fn push_at(&self, rec: &Record, at: &mut dyn FnMut(u32)) -> bool {
        self.nest.fetch_add(1, Ordering::Relaxed);
        at(0);
        let written = self.reserve_and_write(rec, at);
        at(3);
        self.publish(at);
        written
    }

    fn reserve_and_write(&self, rec: &Record, at: &mut dyn FnMut(u32)) -> bool {
        let mut r = self.reserve.load(Ordering::Relaxed);
        loop {
            if r.wrapping_sub(self.tail.load(Ordering::Acquire)) >= N as u64 {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.reserve.compare_exchange(
                r,
                r.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => r = now,
            }
        }
        at(1);
        let slot = &self.slots[(r & Self::MASK) as usize];
        slot[0].store(
            u64::from(rec.probe) | (u64::from(rec.tid) << 32),
            Ordering::Relaxed,
        );
        for (s, w) in slot[2..].iter().zip(rec.words.iter()) {
            s.store(*w, Ordering::Relaxed);
        }
        at(2);
        // Word 1: the record's sequence number, so a reader can tell a stale slot.
        slot[1].store(r, Ordering::Relaxed);
        true
    }

    /// Step 4: the outermost writer publishes `head`, again if a nested writer reserved more
    /// while it did.
    fn publish(&self, at: &mut dyn FnMut(u32)) {
        loop {
            if self.nest.load(Ordering::Relaxed) != 1 {
                // Nested: the writer we interrupted publishes our record with its own.
                self.nest.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let h = self.reserve.load(Ordering::Relaxed);
            at(4);
            self.head.store(h, Ordering::Release);
            at(5);
            self.nest.fetch_sub(1, Ordering::Relaxed);
            at(6);
            if self.reserve.load(Ordering::Relaxed) == h {
                return;
            }
            // A writer nested between our store and our decrement reserved more and saw
            // `nest > 1`: publish its records too.
            self.nest.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads every complete record not read yet, oldest first, into `out` (the reader
    /// side); returns how many.
    pub fn drain(&self, out: &mut impl FnMut(u64, Record)) -> usize {
        let t = self.tail.load(Ordering::Relaxed);
        let h = self.head.load(Ordering::Acquire);
        let mut n = 0;
        let mut i = t;
        while i != h {
            let slot = &self.slots[(i & Self::MASK) as usize];
            let w0 = slot[0].load(Ordering::Relaxed);
            let seq = slot[1].load(Ordering::Relaxed);
            let mut words = [0u64; RECORD_WORDS - 2];
            for (w, s) in words.iter_mut().zip(slot[2..].iter()) {
                *w = s.load(Ordering::Relaxed);
            }
            out(
                seq,
                Record {
                    probe: w0 as u32,
                    tid: (w0 >> 32) as u32,
                    words,
                },
            );
            n += 1;
            i = i.wrapping_add(1);
        }
        self.tail.store(h, Ordering::Release);
        n
    }

    /// Records that did not fit so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Records per thread ring in a [`RecordRegion`] (64 KiB of records a thread).
pub const THREAD_RING: usize = 1024;

/// The first word of a record region: "PROBEREC".
pub const RECORD_MAGIC: u64 = u64::from_le_bytes(*b"PROBEREC");

/// A record region's header (one cache line).
#[repr(C, align(64))]
#[derive(Debug)]
struct RecordHeader {
    magic: u64,
    rings: u64,
    /// The next ring to hand out.
    next: AtomicU64,
    /// Records of threads that found no ring left.
    orphaned: AtomicU64,
}

/// The shared memory the agent writes records into and the controller drains: a header,
/// then one [`Ring`] per thread (threads past them drop their records, counted).
#[derive(Clone, Copy, Debug)]
pub struct RecordRegion {
    base: *const u8,
    rings: u64,
}

// SAFETY: every access through the view is atomic.
unsafe impl Send for RecordRegion {}
// SAFETY: as above.
unsafe impl Sync for RecordRegion {}

impl RecordRegion {
    const RING_BYTES: usize = core::mem::size_of::<Ring<THREAD_RING>>();

    /// Bytes of a region of `rings` rings.
    pub fn bytes(rings: u64) -> Option<usize> {
        Self::RING_BYTES
            .checked_mul(usize::try_from(rings).ok()?)?
            .checked_add(64)
    }

    /// Writes the header of a fresh (zeroed) region.
    ///
    /// # Safety
    /// `base` is 64-byte aligned and points to [`RecordRegion::bytes`]`(rings)` zeroed
    /// writable bytes nothing else uses yet.
    #[cfg(not(loom))]
    pub unsafe fn init(base: *mut u8, rings: u64) {
        let h = base as *mut RecordHeader;
        // SAFETY: the caller's contract; the rest is zero, which is an empty ring.
        unsafe {
            core::ptr::write(
                h,
                RecordHeader {
                    magic: RECORD_MAGIC,
                    rings,
                    next: AtomicU64::new(0),
                    orphaned: AtomicU64::new(0),
                },
            )
        };
    }

    /// The region at `base`, `len` bytes, checked.
    ///
    /// # Safety
    /// `base` points to `len` mapped bytes for as long as the view is used, written only
    /// through this module.
    pub unsafe fn from_raw(base: *const u8, len: usize) -> Option<RecordRegion> {
        if base as usize % 64 != 0 || len < 64 {
            return None;
        }
        // SAFETY: aligned, a header long, mapped (the contract).
        let h = unsafe { &*(base as *const RecordHeader) };
        if h.magic != RECORD_MAGIC || Self::bytes(h.rings)? > len {
            return None;
        }
        Some(RecordRegion {
            base,
            rings: h.rings,
        })
    }

    fn header(&self) -> &RecordHeader {
        // SAFETY: checked in `from_raw`.
        unsafe { &*(self.base as *const RecordHeader) }
    }

    /// Ring `i` (`i < rings`).
    pub fn ring(&self, i: u64) -> Option<&Ring<THREAD_RING>> {
        (i < self.rings).then(|| {
            // SAFETY: i < rings: inside the region (checked in `from_raw`); zeroed memory
            // or a ring's own writes.
            unsafe {
                &*(self.base.add(64 + i as usize * Self::RING_BYTES) as *const Ring<THREAD_RING>)
            }
        })
    }

    /// Hands the calling thread a ring, if any is left.
    pub fn claim(&self) -> Option<&Ring<THREAD_RING>> {
        let i = self.header().next.fetch_add(1, Ordering::Relaxed);
        self.ring(i)
    }

    /// Counts a record of a thread without a ring.
    pub fn orphan(&self) {
        self.header().orphaned.fetch_add(1, Ordering::Relaxed);
    }

    /// Drains every ring handed out (the controller's side).
    pub fn drain(&self, out: &mut impl FnMut(u64, Record)) -> usize {
        let claimed = self.header().next.load(Ordering::Relaxed).min(self.rings);
        (0..claimed)
            .filter_map(|i| self.ring(i))
            .map(|r| r.drain(out))
            .sum()
    }

    /// Records lost: dropped by full rings, and those of threads without a ring.
    pub fn lost(&self) -> u64 {
        let claimed = self.header().next.load(Ordering::Relaxed).min(self.rings);
        (0..claimed)
            .filter_map(|i| self.ring(i))
            .map(|r| r.dropped())
            .sum::<u64>()
            + self.header().orphaned.load(Ordering::Relaxed)
    }
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn rec(probe: u32, w: u64) -> Record {
        Record {
            probe,
            tid: 7,
            words: [w; 6],
        }
    }

    #[test]
    fn records_come_out_in_order_and_a_full_ring_drops() {
        let r: Ring<4> = Ring::new();
        for i in 0..6 {
            let _ = r.push(&rec(i, u64::from(i) * 10));
        }
        assert_eq!(r.dropped(), 2);
        let mut got = Vec::new();
        assert_eq!(
            r.drain(&mut |seq, x| got.push((seq, x.probe, x.words[5]))),
            4
        );
        assert_eq!(got, vec![(0, 0, 0), (1, 1, 10), (2, 2, 20), (3, 3, 30)]);
        assert!(r.push(&rec(9, 90)));
        got.clear();
        r.drain(&mut |seq, x| got.push((seq, x.probe, x.words[0])));
        assert_eq!(got, vec![(4, 9, 90)]);
    }
}

/// The ring under loom: the outer writer (the ring's thread), a nested writer (a signal
/// handler run on that thread at each of `push`'s points in turn) and the reader (the
/// controller), with the reader's steps interleaved every way loom finds. The reader must
/// only ever see complete records, each once, in order; nothing is lost or dropped.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    fn rec(probe: u32) -> Record {
        Record {
            probe,
            tid: probe,
            words: [u64::from(probe) * 11; 6],
        }
    }

    /// Checks what one drain gave; returns the probes seen.
    fn check(seen: &mut Vec<u32>, seq: u64, r: Record) {
        assert!(
            r.probe != 0,
            "a record read before it was written (slot {seq})"
        );
        assert_eq!(r.tid, r.probe, "a torn record");
        assert_eq!(r.words, [u64::from(r.probe) * 11; 6], "a torn record");
        assert_eq!(seq as usize, seen.len(), "records out of order");
        seen.push(r.probe);
    }

    #[test]
    fn loom_ring_nested_writer_and_reader() {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for point in 0..=6u32 {
            loom::model(move || {
                RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ring: Arc<Ring<4>> = Arc::new(Ring::new());
                let reader = {
                    let ring = ring.clone();
                    loom::thread::spawn(move || {
                        let mut seen = Vec::new();
                        ring.drain(&mut |seq, r| check(&mut seen, seq, r));
                        seen
                    })
                };
                // The outer write, with a nested one (a signal handler) at `point`.
                let mut nested_done = false;
                ring.push_at(&rec(1), &mut |k| {
                    if k == point && !nested_done {
                        nested_done = true;
                        assert!(ring.push(&rec(2)));
                    }
                });
                let mut seen = reader.join().unwrap();
                // After both writers are done, everything not yet read is there to read.
                ring.drain(&mut |seq, r| check(&mut seen, seq, r));
                seen.sort_unstable();
                assert_eq!(seen, vec![1, 2], "every record read exactly once");
                assert_eq!(ring.dropped(), 0);
            });
        }
        std::println!(
            "loom model loom_ring_nested_writer_and_reader: {} interleavings over 7 nesting points",
            RUNS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
