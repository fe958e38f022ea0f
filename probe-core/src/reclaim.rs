//! Grace periods: epoch-based reclamation for the core's fixed tables, in the style of
//! crossbeam-epoch (`crossbeam-epoch/src/internal.rs`) and of RCU's "wait for readers that
//! began before".
//!
//! - A reader *pins* its CPU for the length of one event: one atomic read-modify-write of the
//!   CPU's own word (`epoch << DEPTH_BITS | depth`, on its own cache line), then a fence.
//!   Nesting (an interrupt or NMI taking a trap while the CPU is already pinned) only bumps
//!   the depth, in the same single RMW, so a nested section can start or end at any instant
//!   of the outer one without leaving the word half-changed. Nothing shared is written.
//! - A writer *unpublishes* an entry, issues a `SeqCst` fence, and only then reads the global
//!   epoch `r` as the entry's retire stamp ([`Epochs::retire_stamp`]). The entry may be reused
//!   once the global epoch is `r + 2` ([`Epochs::expired`]).
//! - The epoch advances from `e` to `e + 1` only when every pinned CPU is pinned at `e`
//!   ([`Epochs::try_advance`]); any context may try it, as often as it likes.
//!
//! Why reuse at `r + 2` is safe, with any number of CPUs advancing the epoch. Take a reader R
//! that can still see the entry: its fence comes before the writer's fence in the single
//! order of `SeqCst` operations (otherwise its reads, which follow its fence, would see the
//! unpublication). So R's pin, and the epoch `p` it pinned at, precede the stamp: `p <= r`.
//! The advance from `r + 1` to `r + 2` read the epoch `r + 1`, which was stored after the
//! stamp was read; so its scan of the CPU words comes after R's pin, sees R pinned at
//! `p <= r != r + 1`, and fails while R is inside. Hence the epoch reaches `r + 2` only after
//! R has unpinned, and the unpin (`Release`) happens before the reuse (the scan reads it with
//! `Acquire`, the advance publishes with `Release`, the writer reads the epoch with
//! `Acquire`). [`Epochs::synchronize`] is the same argument with a stamp and no entry: it
//! returns once every section that could have begun before it has ended.

use crate::addr::CpuId;
use crate::error::{Capacity, Error};
use crate::sync::{array_of, const_fn, fence, spin_loop, AtomicU64, CachePadded, Ordering};

/// Low bits of a CPU's word: the nesting depth of its read-side sections (0: not pinned).
const DEPTH_BITS: u32 = 16;
const DEPTH_MASK: u64 = (1 << DEPTH_BITS) - 1;

#[inline]
const fn depth_of(w: u64) -> u64 {
    w & DEPTH_MASK
}

#[inline]
const fn epoch_of(w: u64) -> u64 {
    w >> DEPTH_BITS
}

/// The epoch clock and one word per CPU.
#[derive(Debug)]
pub(crate) struct Epochs<const CPUS: usize> {
    global: CachePadded<AtomicU64>,
    /// Per CPU: `epoch << DEPTH_BITS | depth`; pinned iff `depth > 0`.
    local: [CachePadded<AtomicU64>; CPUS],
}

/// A pinned read-side section. Unpins on drop.
#[derive(Debug)]
pub(crate) struct Guard<'a, const CPUS: usize> {
    epochs: &'a Epochs<CPUS>,
    cpu: usize,
}

impl<const CPUS: usize> Drop for Guard<'_, CPUS> {
    #[inline]
    fn drop(&mut self) {
        // One RMW: every read of the section happens before a writer that sees the lower
        // depth (Release; being an RMW, it also continues the release sequence of earlier
        // unpins, so a later pin seen by a writer still proves this section ended).
        self.epochs.local[self.cpu].fetch_sub(1, Ordering::Release);
    }
}

impl<const CPUS: usize> Epochs<CPUS> {
    const_fn! {
        /// A clock at epoch 0 with no CPU pinned (all zero bits: a core can live in `.bss`).
        pub(crate) fn new() -> Epochs<CPUS> {
            Epochs {
                global: CachePadded::new(AtomicU64::new(0)),
                local: array_of![CachePadded::new(AtomicU64::new(0)); CPUS],
            }
        }
    }

    /// Enter a read-side section on `cpu`. Sections nest (an interrupt or NMI on the same
    /// CPU may pin again at any point of an outer section); two contexts that are not nested
    /// must not name the same CPU at once.
    #[inline]
    pub(crate) fn pin(&self, cpu: CpuId) -> Result<Guard<'_, CPUS>, Error> {
        let i = cpu.0 as usize;
        let Some(word) = self.local.get(i) else {
            return Err(Error::CapacityExhausted {
                what: Capacity::Cpus,
            });
        };
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            if depth_of(cur) == DEPTH_MASK {
                return Err(Error::CapacityExhausted {
                    what: Capacity::Nesting,
                });
            }
            let next = if depth_of(cur) > 0 {
                // Already pinned (an outer section of this CPU): nested sections end before
                // the outer one resumes, so the outer pin still holds; keep its epoch.
                cur + 1
            } else {
                (self.global.load(Ordering::SeqCst) << DEPTH_BITS) | 1
            };
            // A nested section that came and went between our load and here changed the
            // word (its epoch); then retry with what it left.
            match word.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // StoreLoad: our pin is ordered before every read of the section (pairs with the
        // writers' fence in `retire_stamp` and the scan in `try_advance`).
        fence(Ordering::SeqCst);
        Ok(Guard {
            epochs: self,
            cpu: i,
        })
    }

    /// The current epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.global.load(Ordering::Acquire)
    }

    /// The retire stamp for entries the caller has just unpublished: a full fence after the
    /// unpublication, then the epoch.
    #[inline]
    pub(crate) fn retire_stamp(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.global.load(Ordering::SeqCst)
    }

    /// Whether something stamped `stamp` by [`retire_stamp`](Self::retire_stamp) can be
    /// reused now: two advances have passed since.
    #[inline]
    pub(crate) fn expired(&self, stamp: u64) -> bool {
        self.now() >= stamp.saturating_add(2)
    }

    /// Advance the epoch if every pinned CPU is pinned at the current one. Returns the epoch
    /// after the attempt. Lock-free; any context may call it, as often as it likes.
    pub(crate) fn try_advance(&self) -> u64 {
        // Pairs with the readers' fence: either this scan sees their pin, or they see
        // everything unpublished before this fence.
        fence(Ordering::SeqCst);
        let e = self.global.load(Ordering::SeqCst);
        for l in self.local.iter() {
            let w = l.load(Ordering::SeqCst);
            if depth_of(w) != 0 && epoch_of(w) != e {
                return e;
            }
        }
        // Every section seen ended (or pinned at `e`) happens before the advance.
        fence(Ordering::Acquire);
        match self
            .global
            .compare_exchange(e, e + 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => e + 1,
            Err(now) => now,
        }
    }

    /// Wait until every read-side section that may have begun before this call has ended.
    /// Call it after unpublishing what those sections may see. Must not be called from inside
    /// a read-side section (it would wait for itself).
    pub(crate) fn synchronize(&self) {
        let stamp = self.retire_stamp();
        let target = stamp + 2;
        while self.try_advance() < target {
            spin_loop();
        }
        // The advance that reached `target` saw every such section end; make their reads
        // happen before what the caller does next.
        fence(Ordering::Acquire);
    }

    /// Whether `cpu` is inside a read-side section (tests and assertions).
    #[cfg(test)]
    pub(crate) fn is_pinned(&self, cpu: usize) -> bool {
        depth_of(self.local[cpu].load(Ordering::Relaxed)) != 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn nested_pins_keep_the_outer_epoch_and_block_advances() {
        let e: Epochs<2> = Epochs::new();
        let g1 = e.pin(CpuId(0)).unwrap();
        let start = e.now();
        // Pinned at the current epoch: one advance is allowed, the second is not.
        assert_eq!(e.try_advance(), start + 1);
        let g2 = e.pin(CpuId(0)).unwrap();
        assert_eq!(e.try_advance(), start + 1);
        drop(g2);
        assert!(e.is_pinned(0));
        assert_eq!(e.try_advance(), start + 1);
        drop(g1);
        assert!(!e.is_pinned(0));
        assert_eq!(e.try_advance(), start + 2);
    }

    #[test]
    fn stamps_expire_after_two_advances() {
        let e: Epochs<1> = Epochs::new();
        let s = e.retire_stamp();
        assert!(!e.expired(s));
        e.try_advance();
        assert!(!e.expired(s));
        e.try_advance();
        assert!(e.expired(s));
    }

    #[test]
    fn unknown_cpu_is_a_typed_error() {
        let e: Epochs<1> = Epochs::new();
        assert!(matches!(
            e.pin(CpuId(1)),
            Err(Error::CapacityExhausted {
                what: Capacity::Cpus
            })
        ));
    }

    #[test]
    fn cpu_words_sit_on_their_own_cache_lines() {
        let e: Epochs<2> = Epochs::new();
        let a = &*e.local[0] as *const AtomicU64 as usize;
        let b = &*e.local[1] as *const AtomicU64 as usize;
        assert!(b - a >= 64);
        assert_eq!(a % 64, 0);
    }
}
