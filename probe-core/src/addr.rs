//! Addresses and identities.
//!
//! [`Addr`] is a virtual address in some address space. It has no arithmetic operators on
//! purpose (rust-vmm's `GuestAddress` does the same): every computation is checked, so a wild
//! offset from untrusted input becomes an error instead of a silent wrap.

use core::fmt;

/// A virtual address in an address space.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Addr(pub u64);

impl Addr {
    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + off`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, off: u64) -> Option<Addr> {
        match self.0.checked_add(off) {
            Some(v) => Some(Addr(v)),
            None => None,
        }
    }

    /// `self - off`, or `None` on underflow.
    #[inline]
    pub const fn checked_sub(self, off: u64) -> Option<Addr> {
        match self.0.checked_sub(off) {
            Some(v) => Some(Addr(v)),
            None => None,
        }
    }

    /// `self - base`, or `None` when `self < base`.
    #[inline]
    pub const fn offset_from(self, base: Addr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// `self + delta` for a signed delta, or `None` on overflow.
    #[inline]
    pub const fn checked_add_signed(self, delta: i64) -> Option<Addr> {
        match self.0.checked_add_signed(delta) {
            Some(v) => Some(Addr(v)),
            None => None,
        }
    }

    /// The address `delta` bytes on, wrapping (CPU semantics: used only by instruction
    /// emulation, where the hardware wraps too).
    #[inline]
    pub const fn wrapping_add_signed(self, delta: i64) -> Addr {
        Addr(self.0.wrapping_add_signed(delta))
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open address range `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Range {
    /// First address in the range.
    pub start: Addr,
    /// First address past the range.
    pub end: Addr,
}

impl Range {
    /// `[start, end)`.
    pub const fn new(start: Addr, end: Addr) -> Range {
        Range { start, end }
    }

    /// Whether `a` lies inside.
    #[inline]
    pub const fn contains(&self, a: Addr) -> bool {
        a.0 >= self.start.0 && a.0 < self.end.0
    }

    /// Whether `[a, a + len)` overlaps this range.
    #[inline]
    pub const fn overlaps(&self, a: Addr, len: u64) -> bool {
        let end = a.0.saturating_add(len);
        a.0 < self.end.0 && end > self.start.0
    }

    /// Length in bytes (0 for an inverted range).
    #[inline]
    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether the range is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// Identifies a file (an inode, a module, a loaded image) whose code can be probed.
    /// Probes are keyed by file and offset, never by process (as uprobes keys them by inode and offset).
    FileId
);
id_type!(
    /// Identifies an address space (an `mm`, a process, a guest page table).
    SpaceId
);
id_type!(
    /// Identifies a task (a thread) that runs in an address space.
    TaskId
);

/// Identifies a CPU, the unit of concurrency of the core's read side. Two calls into the core
/// that may run at the same time must name different CPUs; the embedder picks the numbering,
/// below the core's `CPUS` capacity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct CpuId(pub u32);

/// Where a probe lives: a file and a byte offset in it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ProbeKey {
    /// The file.
    pub file: FileId,
    /// Byte offset of the probed instruction in the file.
    pub offset: u64,
}

impl ProbeKey {
    /// `(file, offset)`.
    pub const fn new(file: FileId, offset: u64) -> ProbeKey {
        ProbeKey { file, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic() {
        assert_eq!(Addr(u64::MAX).checked_add(1), None);
        assert_eq!(Addr(0).checked_sub(1), None);
        assert_eq!(Addr(10).offset_from(Addr(4)), Some(6));
        assert_eq!(Addr(4).offset_from(Addr(10)), None);
        assert_eq!(Addr(10).checked_add_signed(-11), None);
        let r = Range::new(Addr(0x1000), Addr(0x2000));
        assert!(r.contains(Addr(0x1fff)) && !r.contains(Addr(0x2000)));
        assert!(r.overlaps(Addr(0xfff), 2) && !r.overlaps(Addr(0x2000), 5));
        assert!(!r.overlaps(Addr(0xff0), 0x10));
    }
}
