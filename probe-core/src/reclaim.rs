//! Grace periods: epoch-based reclamation for the core's fixed tables.
//!
//! Readers (the hit, single-step and trampoline paths) *pin* their CPU for the length of one
//! event: one store to a CPU-local word and a fence, no lock, nothing shared is written. Writers
//! unpublish an entry, note the epoch, and reuse the entry only once the global epoch has
//! advanced twice past it: by then every reader that could have reached it has unpinned (the
//! crossbeam-epoch argument). The epoch advances when the platform reports a quiescent state
//! ([`ProbeCore::quiescent`](crate::ProbeCore::quiescent)), on demand when a writer needs an
//! entry back, and in [`Epochs::synchronize`], which waits for every reader pinned before it
//! was called (what `unregister` uses to promise that a handler never runs after it returns).

use crate::addr::CpuId;
use crate::error::{Capacity, Error};
use crate::sync::{array_of, const_fn, fence, spin_loop, AtomicU64, Ordering};

/// Low bit of a CPU's local word: pinned.
const PINNED: u64 = 1;

/// The epoch clock and one local word per CPU.
#[derive(Debug)]
pub(crate) struct Epochs<const CPUS: usize> {
    global: AtomicU64,
    /// `0` when the CPU is not in a read-side section; `epoch << 1 | PINNED` when it is.
    local: [AtomicU64; CPUS],
    /// Nesting depth of read-side sections per CPU (touched only by that CPU).
    depth: [AtomicU64; CPUS],
}

/// A pinned read-side section. Unpins on drop.
#[derive(Debug)]
pub(crate) struct Guard<'a, const CPUS: usize> {
    epochs: &'a Epochs<CPUS>,
    cpu: usize,
}

impl<const CPUS: usize> Drop for Guard<'_, CPUS> {
    fn drop(&mut self) {
        let d = &self.epochs.depth[self.cpu];
        let depth = d.load(Ordering::Relaxed);
        if depth > 1 {
            d.store(depth - 1, Ordering::Relaxed);
        } else {
            d.store(0, Ordering::Relaxed);
            // Release: every read of the section happens before a writer sees us unpinned.
            self.epochs.local[self.cpu].store(0, Ordering::Release);
        }
    }
}

impl<const CPUS: usize> Epochs<CPUS> {
    const_fn! {
        /// A clock at epoch 2 with no CPU pinned.
        pub(crate) fn new() -> Epochs<CPUS> {
            Epochs {
                global: AtomicU64::new(2),
                local: array_of![AtomicU64::new(0); CPUS],
                depth: array_of![AtomicU64::new(0); CPUS],
            }
        }
    }

    /// Enter a read-side section on `cpu`. Nested sections on one CPU are allowed; two
    /// concurrent callers must not name the same CPU.
    #[inline]
    pub(crate) fn pin(&self, cpu: CpuId) -> Result<Guard<'_, CPUS>, Error> {
        let i = cpu.0 as usize;
        if i >= CPUS {
            return Err(Error::CapacityExhausted {
                what: Capacity::Cpus,
            });
        }
        let depth = self.depth[i].load(Ordering::Relaxed);
        self.depth[i].store(depth + 1, Ordering::Relaxed);
        if depth == 0 {
            let e = self.global.load(Ordering::Relaxed);
            self.local[i].store((e << 1) | PINNED, Ordering::Relaxed);
            // StoreLoad: our pin is visible to writers before we read any shared entry.
            fence(Ordering::SeqCst);
        }
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

    /// Whether something unpublished at epoch `retired` can be reused now.
    #[inline]
    pub(crate) fn expired(&self, retired: u64) -> bool {
        self.now() >= retired.saturating_add(2)
    }

    /// Advance the epoch if every pinned CPU has seen the current one. Returns the epoch after
    /// the attempt. Lock-free; any thread may call it.
    pub(crate) fn try_advance(&self) -> u64 {
        // Pairs with the readers' fence: either we see their pin, or they see our new epoch
        // and everything unpublished before it.
        fence(Ordering::SeqCst);
        let e = self.global.load(Ordering::Relaxed);
        for l in self.local.iter() {
            let v = l.load(Ordering::Relaxed);
            if v & PINNED != 0 && (v >> 1) != e {
                return e;
            }
        }
        fence(Ordering::Acquire);
        match self
            .global
            .compare_exchange(e, e + 1, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => e + 1,
            Err(now) => now,
        }
    }

    /// Wait until every read-side section that began before this call has ended. Must not be
    /// called from inside a read-side section (it would wait for itself).
    pub(crate) fn synchronize(&self) {
        let target = self.global.load(Ordering::Acquire) + 2;
        while self.try_advance() < target {
            spin_loop();
        }
    }
}
