//! What the core asks of the platform: memory of an address space, the mappings of a file
//! across spaces (the rmap walk), the tasks of a space, and the original bytes of a file.
//!
//! The traits are small and split by capability (tock TRD 3): reading memory, writing data and
//! patching code are separate methods; mapping and unmapping are events the platform reports
//! to the core, not trait methods the core calls.

use core::ops::ControlFlow;

use crate::addr::{Addr, FileId, Range, SpaceId, TaskId};
use crate::arch::Arch;
use crate::error::MemError;
use crate::memory::fill;
pub use crate::memory::AddressSpace;

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
///
/// Contexts (the full table is on [`ProbeCore`](crate::ProbeCore)):
/// - every method may be called with the core's writer lock held (the embedder's choice of
///   lock, so these may sleep if that lock allows sleeping);
/// - [`space`](Platform::space) and [`breakpoint_address`](Platform::breakpoint_address),
///   and [`AddressSpace::read`] and [`AddressSpace::write`] on what `space` returns, are
///   also called on the hit, single-step and return paths: in the trap
///   handler, possibly in interrupt or NMI context, where they must neither sleep, take a
///   lock a trapped context may hold, nor allocate;
/// - [`AddressSpace::patch_code`] is called only with the writer lock held, never on the
///   hit path: it may take the kernel's text mutex and sleep if the writer lock is a
///   sleeping one.
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

    /// The probed instruction's address, given the instruction pointer of a context that
    /// trapped on one of the core's breakpoints. The default is the architecture's convention,
    /// [`Arch::breakpoint_address`] (x86-64: the CPU reports the address after `int3`, so
    /// one less). A platform whose trap reports the breakpoint's own address (a hypervisor
    /// seeing a guest's `#BP` as a VM exit, whose guest `rip` is the `int3`'s; a trap entry
    /// that rewinds the frame itself) returns `Addr(trap_ip)`. Called on the hit path, in
    /// whatever context the trap handler runs.
    fn breakpoint_address(&self, trap_ip: u64) -> Addr {
        <Self::Arch as Arch>::breakpoint_address(trap_ip)
    }

    /// Whether the probed code runs privileged (ring 0: a kernel or hypervisor probing its
    /// own text). Then privileged instructions are analysed with
    /// [`Arch::analyze_privileged`] (on x86-64: `cli`/`sti`
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
