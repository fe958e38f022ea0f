//! A fixed-capacity, open-addressing hash table with lock-free lookups and a single writer.
//!
//! Entries never move: an entry's index is its identity for as long as it is live, so other
//! tables can link to it by index. A removed entry becomes a tombstone stamped with the epoch
//! of its removal and is reused only after a grace period ([`Epochs::expired`]), so a pinned
//! reader that reached it keeps reading valid (if stale) data. Tombstones whose successor is
//! empty turn back into empty buckets, which keeps miss lookups short.
//!
//! Writers (insert, remove) are serialised by the core's writer lock; lookups run anywhere.

use crate::error::{Capacity, Error};
use crate::reclaim::Epochs;
use crate::sync::{array_of, const_fn, AtomicU32, AtomicU64, Ordering};

/// No entry.
pub(crate) const NIL: u32 = u32::MAX;

/// An atomic link to a table entry (an index, or [`NIL`]), stored complemented so that a
/// blank link is all zero bits: tables full of them can live in a zero-initialised static
/// (`.bss`) rather than in the image's data. Same API as the `AtomicU32` it wraps.
#[derive(Debug)]
pub(crate) struct Link(AtomicU32);

impl Link {
    const_fn! {
        /// A link to nothing.
        pub(crate) fn nil() -> Link {
            Link(AtomicU32::new(0))
        }
    }

    /// The index linked to, or [`NIL`].
    #[inline]
    pub(crate) fn load(&self, o: Ordering) -> u32 {
        !self.0.load(o)
    }

    /// Link to `i` (or [`NIL`]).
    #[inline]
    pub(crate) fn store(&self, i: u32, o: Ordering) {
        self.0.store(!i, o);
    }
}

const EMPTY: u64 = 0;
const LIVE: u64 = 1;
const CLAIMED: u64 = 2;
const RETIRED_TAG: u64 = 3;

/// A retire stamp no epoch reaches: the entry is unpublished but not yet stamped.
const NEVER: u64 = u64::MAX >> 4;

#[inline]
const fn retired(epoch: u64) -> u64 {
    (epoch << 2) | RETIRED_TAG
}

#[inline]
const fn is_retired(s: u64) -> bool {
    s & 3 == RETIRED_TAG
}

/// The payload of a table entry: interior-mutable, const-constructible.
pub(crate) trait Payload {
    /// A blank payload.
    #[cfg(not(loom))]
    const BLANK: Self;
    /// A blank payload.
    #[cfg(loom)]
    fn blank() -> Self;
}

/// One bucket.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    state: AtomicU64,
    k0: AtomicU64,
    k1: AtomicU64,
    pub(crate) val: V,
}

impl<V: Payload> Entry<V> {
    const_fn! {
        fn new() -> Entry<V> {
            Entry {
                state: AtomicU64::new(EMPTY),
                k0: AtomicU64::new(0),
                k1: AtomicU64::new(0),
                #[cfg(not(loom))]
                val: V::BLANK,
                #[cfg(loom)]
                val: V::blank(),
            }
        }
    }
}

impl<V> Entry<V> {
    /// The entry's key (meaningful while live, or to a pinned reader that reached it live).
    #[inline]
    pub(crate) fn key(&self) -> (u64, u64) {
        (
            self.k0.load(Ordering::Relaxed),
            self.k1.load(Ordering::Relaxed),
        )
    }

    /// Whether the entry is live (published and not removed).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) == LIVE
    }
}

/// The table.
#[derive(Debug)]
pub(crate) struct Table<V, const N: usize> {
    entries: [Entry<V>; N],
    /// Live and claimed entries (writer-maintained).
    used: AtomicU64,
    /// Tombstones (writer-maintained).
    tombs: AtomicU64,
}

#[inline]
fn mix(k0: u64, k1: u64) -> u64 {
    // A 64-bit finaliser (splitmix64) over both words: cheap, and spreads sequential offsets.
    let mut z = k0.rotate_left(29) ^ k1.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<V: Payload, const N: usize> Table<V, N> {
    const_fn! {
        /// An empty table.
        pub(crate) fn new() -> Table<V, N> {
            Table {
                entries: array_of![Entry::new(); N],
                used: AtomicU64::new(0),
                tombs: AtomicU64::new(0),
            }
        }
    }
}

impl<V, const N: usize> Table<V, N> {
    /// Most entries the table accepts: 7/8 of its buckets, so probes stay short.
    pub(crate) const LIMIT: usize = N - N / 8;

    #[inline]
    fn home(k0: u64, k1: u64) -> usize {
        (mix(k0, k1) % N as u64) as usize
    }

    /// The entry at `i` (an index this table handed out).
    #[inline]
    pub(crate) fn at(&self, i: u32) -> &Entry<V> {
        &self.entries[i as usize % N]
    }

    /// Find the live entry with key `(k0, k1)`. Lock-free; call pinned.
    #[inline]
    pub(crate) fn lookup(&self, k0: u64, k1: u64) -> Option<u32> {
        if N == 0 {
            return None;
        }
        let mut i = Self::home(k0, k1);
        for _ in 0..N {
            let e = &self.entries[i];
            let s = e.state.load(Ordering::Acquire);
            if s == EMPTY {
                return None;
            }
            if s == LIVE && e.k0.load(Ordering::Relaxed) == k0 && e.k1.load(Ordering::Relaxed) == k1
            {
                return Some(i as u32);
            }
            i += 1;
            if i == N {
                i = 0;
            }
        }
        None
    }

    /// Claim a bucket for key `(k0, k1)`, which must not be live. The caller fills the payload
    /// and then calls [`publish`](Table::publish), or [`abandon`](Table::abandon)s it.
    /// Writer only.
    pub(crate) fn claim<const C: usize>(
        &self,
        k0: u64,
        k1: u64,
        epochs: &Epochs<C>,
        what: Capacity,
    ) -> Result<u32, Error> {
        let full = Error::CapacityExhausted { what };
        if N == 0 || self.used.load(Ordering::Relaxed) as usize >= Self::LIMIT {
            return Err(full);
        }
        let mut i = Self::home(k0, k1);
        for _ in 0..N {
            let e = &self.entries[i];
            let s = e.state.load(Ordering::Acquire);
            let free = s == EMPTY || (is_retired(s) && epochs.expired(s >> 2));
            if free
                && e.state
                    .compare_exchange(s, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                if s != EMPTY {
                    self.tombs.fetch_sub(1, Ordering::Relaxed);
                }
                e.k0.store(k0, Ordering::Relaxed);
                e.k1.store(k1, Ordering::Relaxed);
                self.used.fetch_add(1, Ordering::Relaxed);
                return Ok(i as u32);
            }
            i += 1;
            if i == N {
                i = 0;
            }
        }
        Err(full)
    }

    /// Make a claimed entry visible to lookups. Everything written to its payload before this
    /// call is visible to the readers that find it.
    #[inline]
    pub(crate) fn publish(&self, i: u32) {
        self.entries[i as usize]
            .state
            .store(LIVE, Ordering::Release);
    }

    /// Unpublish entry `i`; it is reused after a grace period. Writer only.
    ///
    /// Unpublish first (a tombstone that never expires), then stamp: the stamp is read after
    /// a full fence, so no reader pinned at a later epoch can still see the entry live
    /// (`reclaim.rs` gives the argument).
    pub(crate) fn remove<const C: usize>(&self, i: u32, epochs: &Epochs<C>) {
        let e = &self.entries[i as usize];
        e.state.store(retired(NEVER), Ordering::Release);
        let stamp = epochs.retire_stamp();
        e.state.store(retired(stamp), Ordering::Release);
        self.used.fetch_sub(1, Ordering::Relaxed);
        self.tombs.fetch_add(1, Ordering::Relaxed);
    }

    /// Turn expired tombstones ending at `i` back into empty buckets, where the bucket after
    /// them is empty: no chain of a live key can pass through them (every live key's chain
    /// from its home bucket is free of empty buckets), so lookups stay correct. Writer only,
    /// and only sound because this table has a single writer.
    fn sweep<const C: usize>(&self, i: usize, epochs: &Epochs<C>) {
        let next = if i + 1 == N { 0 } else { i + 1 };
        if self.entries[next].state.load(Ordering::Acquire) != EMPTY {
            return;
        }
        let mut j = i;
        for _ in 0..N {
            let s = self.entries[j].state.load(Ordering::Acquire);
            if !(is_retired(s) && epochs.expired(s >> 2)) {
                return;
            }
            self.entries[j].state.store(EMPTY, Ordering::Release);
            self.tombs.fetch_sub(1, Ordering::Relaxed);
            j = if j == 0 { N - 1 } else { j - 1 };
        }
    }

    /// Sweep every expired tombstone that can be swept, when tombstones make up more than an
    /// eighth of the table (so miss lookups stay short). Writer only.
    pub(crate) fn maybe_sweep<const C: usize>(&self, epochs: &Epochs<C>) {
        if (self.tombs.load(Ordering::Relaxed) as usize) <= N / 8 {
            return;
        }
        for i in (0..N).rev() {
            self.sweep(i, epochs);
        }
    }

    /// Number of live (and claimed) entries.
    pub(crate) fn len(&self) -> usize {
        self.used.load(Ordering::Relaxed) as usize
    }

    /// Indices of live entries. Writer only (a snapshot under the writer lock).
    pub(crate) fn live_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_live())
            .map(|(i, _)| i as u32)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! loom: the table's own reclamation, below the engine. Run with
    //! `RUSTFLAGS="--cfg loom" cargo test -p probe-core --release --lib`.
    extern crate std;

    use loom::sync::Arc;

    use super::*;
    use crate::addr::CpuId;
    use crate::sync::PublishCell;

    #[derive(Debug)]
    struct Val(PublishCell<u64>);

    impl Payload for Val {
        fn blank() -> Self {
            Val(PublishCell::new(0))
        }
    }

    type T = Table<Val, 2>;

    /// Two keys with the same home bucket, so the second can only take the first's bucket.
    fn colliding() -> ((u64, u64), (u64, u64)) {
        let a = (1, 0x1000);
        let b = (1..10_000u64)
            .map(|k| (1, 0x1000 + k))
            .find(|&(k0, k1)| T::home(k0, k1) == T::home(a.0, a.1))
            .unwrap();
        (a, b)
    }

    /// A lookup of entry A races its removal, a sweep of its tombstone and the insertion of
    /// B into the same bucket, with a third context advancing the epoch: B's payload must
    /// never be written while the reader can still read A's.
    #[test]
    fn loom_sweep_races_lookup() {
        let (a, b) = colliding();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        loom::model(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t: Arc<T> = Arc::new(T::new());
            let e: Arc<Epochs<2>> = Arc::new(Epochs::new());
            let ia = t.claim(a.0, a.1, &*e, Capacity::Probes).unwrap();
            t.at(ia).val.0.set(1);
            t.publish(ia);

            let (t2, e2) = (t.clone(), e.clone());
            let reader = loom::thread::spawn(move || {
                let _g = e2.pin(CpuId(0)).unwrap();
                if let Some(i) = t2.lookup(a.0, a.1) {
                    assert_eq!(t2.at(i).val.0.get(), 1, "read another key's payload");
                }
            });
            let e3 = e.clone();
            let ticker = loom::thread::spawn(move || {
                e3.try_advance();
                e3.try_advance();
            });

            t.remove(ia, &*e);
            t.maybe_sweep(&*e);
            if let Ok(ib) = t.claim(b.0, b.1, &*e, Capacity::Probes) {
                t.at(ib).val.0.set(2);
                t.publish(ib);
            }
            reader.join().unwrap();
            ticker.join().unwrap();
        });
        let n = runs.load(std::sync::atomic::Ordering::Relaxed);
        std::println!("loom model loom_sweep_races_lookup: {n} interleavings explored");
        assert!(n > 1);
    }
}
