//! What the core asks of the platform: memory of an address space, the mappings of a file
//! across spaces (the rmap walk), the tasks of a space, and the original bytes of a file.
//!
//! The traits are small and split by capability (tock TRD 3): reading memory, writing data and
//! patching code are separate methods; mapping and unmapping are events the platform reports
//! to the core, not trait methods the core calls.

use core::ops::ControlFlow;

use crate::addr::{Addr, FileId, Range, SpaceId, TaskId};
use crate::arch::Arch;
use crate::error::{MemError, MemErrorKind};

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
/// and positions that would pass `u64::MAX` are `Unmapped`.
fn fill(
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

/// One file-backed mapping of a space: `range` maps the file from `file_offset` on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// The address space.
    pub space: SpaceId,
    /// The mapped addresses.
    pub range: Range,
    /// The file.
    pub file: FileId,
    /// File offset of `range.start`.
    pub file_offset: u64,
    /// Whether the mapping is executable (only executable mappings get breakpoints).
    pub exec: bool,
    /// Whether the mapping is writable (SDT semaphores live in writable mappings).
    pub write: bool,
}

impl Mapping {
    /// The address of file offset `offset` in this mapping, if mapped here.
    pub fn addr_of(&self, offset: u64) -> Option<Addr> {
        let rel = offset.checked_sub(self.file_offset)?;
        if rel >= self.range.len() {
            return None;
        }
        self.range.start.checked_add(rel)
    }

    /// The file offset of `addr`, if `addr` lies in this mapping.
    pub fn offset_of(&self, addr: Addr) -> Option<u64> {
        if !self.range.contains(addr) {
            return None;
        }
        addr.offset_from(self.range.start)?
            .checked_add(self.file_offset)
    }
}

/// The platform as the core sees it.
///
/// The core never stores a platform; every operation borrows one. Methods taking closures
/// run at registration, event and filter-evaluation time only, never on the hit path.
pub trait Platform {
    /// The architecture.
    type Arch: Arch;
    /// A handle to one address space's memory.
    type Space<'a>: AddressSpace
    where
        Self: 'a;

    /// The memory of space `id`, if it exists.
    fn space(&self, id: SpaceId) -> Option<Self::Space<'_>>;

    /// The rmap walk: every mapping of `file` in every address space.
    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>);

    /// Every live task of space `space`.
    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>);

    /// Size of `file` in bytes, or `None` for a file the platform does not know.
    fn file_size(&self, file: FileId) -> Option<u64>;

    /// Read the file's original bytes at `offset` (as [`AddressSpace::read`]: may stop short
    /// at a page boundary; reading nothing is an error).
    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError>;

    /// The out-of-line slot area of `space`: `count` slots of `Arch::SLOT_SIZE` bytes starting
    /// at the returned address, placed (where the platform can) within reach of `near`. The
    /// platform creates it on first use and keeps it for the life of the space, at the same
    /// address in a forked child. `None` when it cannot provide one.
    fn xol_area(&self, space: SpaceId, near: Addr, count: usize) -> Option<Addr>;

    /// Whether running an instruction from its slot is cheaper here than emulating it when the
    /// emulation touches the task's memory. A ptrace platform says yes (every memory access of
    /// the emulator is a system call, while a slot costs one register write); an in-kernel
    /// platform keeps the default, no. Asked once per probe, at registration.
    fn prefer_boost(&self) -> bool {
        false
    }

    /// Whether the probed code runs privileged (ring 0: a kernel or hypervisor probing its
    /// own text). Then privileged instructions are analysed with
    /// [`Arch::analyze_privileged`](crate::Arch::analyze_privileged) (on x86-64: `cli`/`sti`
    /// emulated, the others single-stepped with interrupts off) instead of refused. Asked once
    /// per probe, at registration.
    fn privileged(&self) -> bool {
        false
    }
}

/// Read exactly `buf.len()` bytes of a file, across as many partial reads as it takes.
pub fn read_file_exact<P: Platform + ?Sized>(
    p: &P,
    file: FileId,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), MemError> {
    fill(offset, buf, |at, b| p.read_file(file, at, b))
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
