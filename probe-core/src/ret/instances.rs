//! A return consumer's instance accounting: `maxactive` instances per registration
//! generation, and `nmissed`, the calls that found none free (kretprobes, `kernel/kprobes.c`).

use crate::sync::{AtomicU64, Ordering};

/// A return consumer's instance accounting (kretprobes' `maxactive` and `nmissed`): how many
/// of its `maxactive` instances are in use, per registration generation, and the calls that
/// found none free.
#[derive(Debug)]
pub(crate) struct Instances {
    /// `generation << 32 | instances in use`.
    active: AtomicU64,
    /// Calls that found no free instance.
    pub(crate) nmissed: AtomicU64,
    /// Of those, calls that found the task's chain of tracked calls full (nested too deep).
    pub(crate) nested: AtomicU64,
    /// Tracked calls that never returned: their frames were abandoned (`longjmp`,
    /// unwinding) or their task exited or exec'd inside them.
    pub(crate) abandoned: AtomicU64,
}

impl Instances {
    crate::sync::const_fn! {
        pub(crate) fn new() -> Instances {
            Instances {
                active: AtomicU64::new(0),
                nmissed: AtomicU64::new(0),
                nested: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
            }
        }
    }

    /// Start generation `g` with nothing in use and nothing missed.
    pub(crate) fn reset(&self, g: u32) {
        self.active.store((g as u64) << 32, Ordering::Relaxed);
        self.nmissed.store(0, Ordering::Relaxed);
        self.nested.store(0, Ordering::Relaxed);
        self.abandoned.store(0, Ordering::Relaxed);
    }

    /// Take one of `max` instances for generation `g`; counts a miss when none is free.
    #[inline]
    pub(crate) fn take_instance(&self, g: u32, max: u32) -> bool {
        let mut v = self.active.load(Ordering::Relaxed);
        loop {
            if (v >> 32) as u32 != g {
                return false;
            }
            if (v as u32) >= max {
                self.nmissed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self
                .active
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    /// Count an instance in unconditionally (a forked child's copy).
    pub(crate) fn add_instance(&self, g: u32) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                ((v >> 32) as u32 == g).then_some(v + 1)
            });
    }

    /// Give an instance of generation `g` back (ignored once the slot was reused).
    #[inline]
    pub(crate) fn put_instance(&self, g: u32) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                ((v >> 32) as u32 == g && v as u32 > 0).then_some(v - 1)
            });
    }

    /// Give back the instance of a call that never returned (counted in `abandoned`).
    pub(crate) fn abandon_instance(&self, g: u32) {
        if (self.active.load(Ordering::Relaxed) >> 32) as u32 == g {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        self.put_instance(g);
    }

    /// Instances in use.
    pub(crate) fn instances(&self) -> u32 {
        self.active.load(Ordering::Relaxed) as u32
    }
}
