//! One value per CPU, each on its own cache line (crossbeam's `CachePadded`).
//!
//! A CPU reaches its own value with [`PerCpu::get_mut`], which is `unsafe`: the caller
//! promises that it runs on that CPU with interrupts off (or in a handler no other handler of
//! this CPU can interrupt while it holds the reference), so nothing else aliases it. Other CPUs
//! never touch it.

use core::cell::UnsafeCell;

/// A type with a value known at compile time, to fill a `static` [`PerCpu`].
pub trait ConstInit {
    /// The initial value.
    const INIT: Self;
}

impl ConstInit for u32 {
    const INIT: u32 = 0;
}

/// A value padded to a cache line (64 bytes; 128 would cover adjacent-line prefetch).
#[repr(C, align(64))]
#[derive(Debug)]
struct Padded<T>(UnsafeCell<T>);

/// `N` values of `T`, one per CPU.
#[derive(Debug)]
pub struct PerCpu<T, const N: usize> {
    cells: [Padded<T>; N],
}

// SAFETY: each cell is only reached by its own CPU through `get_mut`, whose contract excludes
// concurrent access; `T: Send` because a value is created on one CPU and used on another.
unsafe impl<T: Send, const N: usize> Sync for PerCpu<T, N> {}

impl<T: ConstInit, const N: usize> Default for PerCpu<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> PerCpu<T, N> {
    /// Every CPU's value [`ConstInit::INIT`], built at compile time (a `static` needs no
    /// run-time set-up).
    pub const fn new() -> Self
    where
        T: ConstInit,
    {
        PerCpu {
            cells: [const { Padded(UnsafeCell::new(T::INIT)) }; N],
        }
    }

    /// Number of CPUs.
    pub const fn len(&self) -> usize {
        N
    }

    /// Whether there are no CPUs.
    pub const fn is_empty(&self) -> bool {
        N == 0
    }

    /// The value of `cpu`, or `None` when `cpu >= N`.
    ///
    /// # Safety
    ///
    /// The caller runs on CPU `cpu`, and no other reference to this CPU's value is live for
    /// as long as the returned one is (interrupts off, or a handler that nothing else on
    /// this CPU that uses the value can interrupt).
    #[allow(clippy::mut_from_ref)] // The contract above is what makes it exclusive.
    pub unsafe fn get_mut(&self, cpu: usize) -> Option<&mut T> {
        let c = self.cells.get(cpu)?;
        // SAFETY: exclusivity is the caller's promise (see above).
        Some(unsafe { &mut *c.0.get() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_separate_and_padded() {
        let p: PerCpu<u32, 3> = PerCpu::new();
        // SAFETY: a single-threaded test; each reference is dropped before the next is taken.
        unsafe {
            *p.get_mut(1).unwrap() += 12;
            assert_eq!(*p.get_mut(0).unwrap(), 0);
            assert_eq!(*p.get_mut(1).unwrap(), 12);
            assert!(p.get_mut(3).is_none());
        }
        assert_eq!(core::mem::size_of::<PerCpu<u32, 3>>(), 3 * 64);
    }
}
