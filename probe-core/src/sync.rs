//! The synchronisation shim: the only file that names atomics, cells and locks.
//!
//! Normal builds use `core`'s atomics and `spin`'s mutex; `--cfg loom` swaps in loom's, behind
//! the same API, so that every concurrent protocol of the core can be model-checked (the same
//! approach as tokio's `src/loom/` and crossbeam-epoch's `primitive` module). Neither `spin`
//! nor `heapless` knows loom, so nothing the core synchronises goes through them directly.
#![allow(unsafe_code)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Declares a constructor that is `const` in normal builds (so the core's tables can live in a
/// `static`) and plain under loom (whose primitives have no const constructors).
macro_rules! const_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$m])*
        #[cfg(not(loom))]
        $vis const fn $name() -> $ret $body
        $(#[$m])*
        #[cfg(loom)]
        $vis fn $name() -> $ret $body
    };
}
pub(crate) use const_fn;

/// Builds an array of `N` values from a constant expression: `[const { .. }; N]` in normal
/// builds, `core::array::from_fn` under loom.
macro_rules! array_of {
    ($e:expr; $n:expr) => {{
        #[cfg(not(loom))]
        let a = [const { $e }; $n];
        #[cfg(loom)]
        let a = core::array::from_fn(|_| $e);
        a
    }};
}
pub(crate) use array_of;

/// A value alone on its cache line (128 bytes: x86 prefetches lines in pairs), so that words
/// written by different CPUs never share one (crossbeam-utils' `CachePadded`).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Pad `value`.
    pub(crate) const fn new(value: T) -> CachePadded<T> {
        CachePadded { value }
    }
}

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Tell the CPU (or loom's scheduler) that we are spinning.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// The writer lock a core takes unless its embedder picks another: a test-and-set spin lock
/// (`spin`'s, through its [`lock_api::RawMutex`] implementation). Right for a platform whose
/// writer-side callbacks never sleep (a ptrace tracer, the mock, a kernel without a scheduler);
/// a kernel whose text patching sleeps picks its sleeping mutex instead (see
/// [`ProbeCore`](crate::ProbeCore)).
pub type SpinLock = spin::mutex::SpinMutex<()>;

/// A mutual-exclusion lock over the embedder's raw lock `R`: `lock_api::Mutex<R, T>` normally,
/// `loom::sync::Mutex` under loom (which models the exclusion; `R` is then not used).
pub(crate) struct Mutex<R, T> {
    #[cfg(not(loom))]
    inner: lock_api::Mutex<R, T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(loom)]
    _raw: core::marker::PhantomData<fn() -> R>,
}

impl<R, T> core::fmt::Debug for Mutex<R, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Mutex")
    }
}

impl<R: lock_api::RawMutex, T> Mutex<R, T> {
    /// A new unlocked mutex (`R::INIT` beside `v`).
    #[cfg(not(loom))]
    pub(crate) const fn new(v: T) -> Mutex<R, T> {
        Mutex {
            inner: lock_api::Mutex::new(v),
        }
    }
    /// A new unlocked mutex.
    #[cfg(loom)]
    pub(crate) fn new(v: T) -> Mutex<R, T> {
        Mutex {
            inner: loom::sync::Mutex::new(v),
            _raw: core::marker::PhantomData,
        }
    }

    /// Lock, waiting (as `R` waits: spinning, sleeping) while another holder has it.
    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> lock_api::MutexGuard<'_, R, T> {
        self.inner.lock()
    }
    /// Lock, yielding to loom's scheduler while another holder has it.
    #[cfg(loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(not(loom))]
type RawCell<T> = core::cell::UnsafeCell<T>;
#[cfg(loom)]
type RawCell<T> = loom::cell::UnsafeCell<T>;

/// A cell written by the core's single writer while no reader can reach it, and read by any
/// number of readers while it is published (the RCU discipline).
///
/// The protocol that makes this sound, enforced by every user in the core:
/// 1. [`set`](PublishCell::set) is called only while the holder (a table entry) is
///    unpublished: not reachable from any index, and past a grace period since it was last
///    unpublished, so no reader still holds it. Writers are serialised by the writer lock.
/// 2. A reader calls [`get`](PublishCell::get) only on an entry it reached through an index
///    while pinned in the epoch, after an `Acquire` load that observed the entry's
///    publication (which was a `Release` store after `set`).
///
/// Under loom, `RawCell` is loom's `UnsafeCell`, which checks rule violations at runtime.
#[derive(Debug)]
pub(crate) struct PublishCell<T: Copy> {
    cell: RawCell<T>,
}

// SAFETY: the cell hands out copies of `T` (no references escape), and the publication protocol
// above orders every write before the reads that may observe it; `T: Send + Sync` is required
// so that sharing copies across threads is itself sound.
unsafe impl<T: Copy + Send + Sync> Sync for PublishCell<T> {}

impl<T: Copy> PublishCell<T> {
    /// A cell holding `v`.
    #[cfg(not(loom))]
    pub(crate) const fn new(v: T) -> PublishCell<T> {
        PublishCell {
            cell: RawCell::new(v),
        }
    }
    /// A cell holding `v`.
    #[cfg(loom)]
    pub(crate) fn new(v: T) -> PublishCell<T> {
        PublishCell {
            cell: RawCell::new(v),
        }
    }

    /// Store `v`. Only while unpublished (rule 1 above).
    pub(crate) fn set(&self, v: T) {
        #[cfg(not(loom))]
        // SAFETY: rule 1: the entry is unreachable to readers and writers are serialised, so
        // nothing else accesses the cell during this write.
        unsafe {
            *self.cell.get() = v;
        }
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        self.cell.with_mut(|p| unsafe { *p = v });
    }

    /// A copy of the value. Only while published and reached under a pin (rule 2 above), or
    /// by the writer holding the writer lock.
    pub(crate) fn get(&self) -> T {
        #[cfg(not(loom))]
        // SAFETY: rule 2: the write that produced this value happened before the Release store
        // that published the entry, which this reader observed with Acquire; no write can
        // happen until a grace period after unpublication, which this reader's pin prevents.
        return unsafe { *self.cell.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return self.cell.with(|p| unsafe { *p });
    }
}

/// An `Option<T>` whose `None` is all zero bits: a flag and a possibly uninitialised value.
/// (`Option<T>` may put `None` in a niche of `T` with non-zero bits, which would keep tables of
/// them out of `.bss`.)
struct ZeroOption<T> {
    some: bool,
    value: core::mem::MaybeUninit<T>,
}

impl<T> ZeroOption<T> {
    const fn none() -> ZeroOption<T> {
        ZeroOption {
            some: false,
            value: core::mem::MaybeUninit::uninit(),
        }
    }

    /// Take the value out, leaving `None`.
    fn take(&mut self) -> Option<T> {
        if !self.some {
            return None;
        }
        self.some = false;
        // SAFETY: `some` was true, so `value` was initialised (by `put`), and it is read out
        // exactly once: `some` is now false.
        Some(unsafe { self.value.assume_init_read() })
    }

    /// Put `v` in (the slot must be `None`).
    fn put(&mut self, v: Option<T>) {
        debug_assert!(!self.some);
        if let Some(v) = v {
            self.value = core::mem::MaybeUninit::new(v);
            self.some = true;
        }
    }

    fn as_ref(&self) -> Option<&T> {
        // SAFETY: `some` is true only while `value` holds an initialised value.
        self.some.then(|| unsafe { self.value.assume_init_ref() })
    }
}

impl<T> Drop for ZeroOption<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// A cell holding an owned, non-`Copy` value (a consumer), with the same publication protocol as
/// [`PublishCell`]; readers get shared references that live no longer than their pin. Empty is
/// all zero bits.
pub(crate) struct OwnedCell<T> {
    cell: RawCell<ZeroOption<T>>,
}

impl<T> core::fmt::Debug for OwnedCell<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OwnedCell")
    }
}

// SAFETY: readers only take `&T` (needs `T: Sync`); the writer moves values in and out (needs
// `T: Send`); the publication protocol of `PublishCell` orders those accesses.
unsafe impl<T: Send + Sync> Sync for OwnedCell<T> {}

impl<T> OwnedCell<T> {
    const_fn! {
        /// An empty cell.
        pub(crate) fn new() -> OwnedCell<T> {
            OwnedCell {
                cell: RawCell::new(ZeroOption::none()),
            }
        }
    }

    /// Put `v` in, returning what was there. Only while unpublished (rule 1).
    pub(crate) fn replace(&self, v: Option<T>) -> Option<T> {
        let swap = |z: &mut ZeroOption<T>| {
            let old = z.take();
            z.put(v);
            old
        };
        #[cfg(not(loom))]
        // SAFETY: rule 1: unreachable to readers, writers serialised.
        return swap(unsafe { &mut *self.cell.get() });
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return self.cell.with_mut(|p| swap(unsafe { &mut *p }));
    }

    /// Run `f` on a shared reference to the value. Only while published and reached under a
    /// pin (rule 2); the reference cannot escape `f`.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        #[cfg(not(loom))]
        // SAFETY: rule 2: no writer touches the cell while this pinned reader can reach it, so
        // a shared reference for the duration of `f` is sound.
        return f(unsafe { (*self.cell.get()).as_ref() });
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return self.cell.with(|p| f(unsafe { (*p).as_ref() }));
    }
}

/// A [`PublishCell`] for an optional value whose blank state (`None`) is all zero bits, so that
/// tables of them can live in a zero-initialised static: `Option<T>` itself may encode `None`
/// in a niche of `T` with non-zero bits. Same publication protocol as [`PublishCell`].
#[derive(Debug)]
pub(crate) struct OptionCell<T: Copy> {
    /// `(true, init)` holds a value; `(false, _)` holds none and the payload may be
    /// uninitialised.
    cell: RawCell<(bool, core::mem::MaybeUninit<T>)>,
}

// SAFETY: as for `PublishCell`: copies out, writes ordered by the publication protocol.
unsafe impl<T: Copy + Send + Sync> Sync for OptionCell<T> {}

impl<T: Copy> OptionCell<T> {
    const_fn! {
        /// An empty cell (all zero bits but for the uninitialised payload).
        pub(crate) fn new() -> OptionCell<T> {
            OptionCell {
                cell: RawCell::new((false, core::mem::MaybeUninit::uninit())),
            }
        }
    }

    /// Store `v`. Only while unpublished (rule 1 of [`PublishCell`]).
    pub(crate) fn set(&self, v: Option<T>) {
        let val = match v {
            Some(v) => (true, core::mem::MaybeUninit::new(v)),
            None => (false, core::mem::MaybeUninit::uninit()),
        };
        #[cfg(not(loom))]
        // SAFETY: rule 1: the entry is unreachable to readers and writers are serialised.
        unsafe {
            *self.cell.get() = val;
        }
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        self.cell.with_mut(|p| unsafe { *p = val });
    }

    /// A copy of the value. Only while published and reached under a pin (rule 2 of
    /// [`PublishCell`]), or by the writer.
    pub(crate) fn get(&self) -> Option<T> {
        #[cfg(not(loom))]
        // SAFETY: rule 2 orders the write before this read; no write can race it.
        let (set, v) = unsafe { *self.cell.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        let (set, v) = self.cell.with(|p| unsafe { *p });
        // SAFETY: `set` is true only when `set(Some(v))` stored an initialised value with it.
        set.then(|| unsafe { v.assume_init() })
    }
}
