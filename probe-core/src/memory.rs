//! Memory: the [`AddressSpace`] trait through which the core reads and patches a space, and
//! the error a memory access returns. The lowest layer above addresses: the architecture
//! (`arch`), the platform (`platform`) and the core's errors (`error`) all stand on it.

use core::fmt;

use crate::addr::{Addr, SpaceId};

/// Why a memory access failed. Returned by [`AddressSpace`]
/// implementations and passed through unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MemErrorKind {
    /// Nothing is mapped there.
    Unmapped,
    /// Mapped, but the platform refused the access.
    Denied,
    /// The address space (or the file) is gone.
    Gone,
    /// The platform's own I/O failed (e.g. a short write to `/proc/PID/mem`).
    Io,
    /// The platform claimed to have read more bytes than were asked for (a platform bug);
    /// nothing read was used.
    Overread,
}

/// A failed memory access at `addr`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemError {
    /// Where the access failed.
    pub addr: Addr,
    /// Why.
    pub kind: MemErrorKind,
}

impl MemError {
    /// A new memory error.
    pub const fn new(addr: Addr, kind: MemErrorKind) -> MemError {
        MemError { addr, kind }
    }
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            MemErrorKind::Unmapped => "nothing is mapped there",
            MemErrorKind::Denied => "the platform denied the access",
            MemErrorKind::Gone => "the address space or file is gone",
            MemErrorKind::Io => "the platform's I/O failed",
            MemErrorKind::Overread => "the platform claimed to read more bytes than asked for",
        };
        write!(f, "memory access at {} failed: {}", self.addr, why)
    }
}

impl core::error::Error for MemError {}

/// Memory of one address space, consumer side only (modelled on rust-vmm's `vm-memory`).
pub trait AddressSpace {
    /// Which space this is.
    fn id(&self) -> SpaceId;

    /// Read up to `buf.len()` bytes at `addr`; returns how many were read. A read may stop
    /// short at a boundary the platform cannot cross in one go (a page, a mapping); it then
    /// returns the bytes it did read. Reading nothing at all is an error.
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError>;

    /// Write data (a stack slot, an SDT semaphore). Must not change code protections.
    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError>;

    /// Patch code: a write that lands even in read-only text, breaking copy-on-write the
    /// platform's way, so that the file and other spaces never see it.
    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError>;

    /// Read exactly `buf.len()` bytes, crossing page boundaries with as many partial reads as
    /// it takes.
    fn read_exact(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        fill(addr.0, buf, |at, b| self.read(Addr(at), b))
    }
}

/// Fill `buf` from position `start` on with as many partial reads as it takes. Never trusts
/// the count a read returns: nothing (`Unmapped`) and more than asked (`Overread`) are errors,
/// and positions that would pass `u64::MAX` are `Unmapped`. The one exact-read loop of
/// [`AddressSpace::read_exact`], [`crate::platform::read_file_exact`] and a platform's own
/// page-by-page reads.
pub fn fill(
    start: u64,
    buf: &mut [u8],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<usize, MemError>,
) -> Result<(), MemError> {
    let mut done = 0;
    while done < buf.len() {
        let at = start
            .checked_add(done as u64)
            .ok_or(MemError::new(Addr(start), MemErrorKind::Unmapped))?;
        let want = buf.len() - done;
        let n = read(at, &mut buf[done..])?;
        if n == 0 {
            return Err(MemError::new(Addr(at), MemErrorKind::Unmapped));
        }
        if n > want {
            return Err(MemError::new(Addr(at), MemErrorKind::Overread));
        }
        done += n;
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fill_never_trusts_the_count_a_read_returns() {
        let mut buf = [0u8; 8];
        // More than asked: a platform bug, refused.
        let e = fill(0x1000, &mut buf, |_, b| Ok(b.len() + 1)).unwrap_err();
        assert_eq!(e.kind, MemErrorKind::Overread);
        // Nothing: unmapped, at the position reached.
        let e = fill(0x1000, &mut buf, |at, b| {
            if at == 0x1000 {
                b[..4].fill(7);
                Ok(4)
            } else {
                Ok(0)
            }
        })
        .unwrap_err();
        assert_eq!(e, MemError::new(Addr(0x1004), MemErrorKind::Unmapped));
        // Partial reads add up.
        fill(0x1000, &mut buf, |at, b| {
            b[0] = at as u8;
            Ok(1)
        })
        .unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
        // Positions past u64::MAX are unmapped, never a wrap or a panic.
        let e = fill(u64::MAX, &mut buf, |_, _| Ok(1)).unwrap_err();
        assert_eq!(e.kind, MemErrorKind::Unmapped);
    }
}
