//! Address spaces: mappings of file pages (private, copy-on-write) and anonymous memory.

use core::fmt;
use std::collections::BTreeMap;
use std::sync::Arc;

use probe_core::{Addr, FileId, Mapping, MemError, MemErrorKind, Range, SpaceId, TaskId};

use crate::file::{page_aligned, zero_page, File, PageRef, PAGE_SIZE};

/// Protection of a mapping. Every mapping is readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Prot {
    /// Data writes (the task's stores, [`AddressSpace::write`](probe_core::AddressSpace::write))
    /// are allowed.
    pub write: bool,
    /// Instructions may be fetched from it.
    pub exec: bool,
}

impl Prot {
    /// Read-only.
    pub const R: Prot = Prot {
        write: false,
        exec: false,
    };
    /// Read-write data.
    pub const RW: Prot = Prot {
        write: true,
        exec: false,
    };
    /// Text: read and execute.
    pub const RX: Prot = Prot {
        write: false,
        exec: true,
    };
    /// Everything.
    pub const RWX: Prot = Prot {
        write: true,
        exec: true,
    };
}

/// What a mapping maps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Backing {
    /// A file, from byte `offset` on.
    File {
        /// The file.
        file: FileId,
        /// File offset of the mapping's start.
        offset: u64,
    },
    /// Anonymous zero-filled memory.
    Anon,
}

/// A mapping as tests see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MapInfo {
    /// Its addresses.
    pub range: Range,
    /// Its protection.
    pub prot: Prot,
    /// What it maps.
    pub backing: Backing,
    /// Whether it is the space's out-of-line slot area.
    pub xol: bool,
}

/// Why a mapping could not be created.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MapError {
    /// The address, length or file offset is not page aligned, or the length is zero.
    Misaligned,
    /// The range overlaps an existing mapping or wraps around.
    Overlap {
        /// Start of the requested range.
        at: Addr,
    },
    /// No such address space.
    NoSuchSpace(SpaceId),
    /// No such file.
    NoSuchFile(FileId),
    /// No such task.
    NoSuchTask(TaskId),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Misaligned => write!(f, "mapping not page aligned or empty"),
            MapError::Overlap { at } => write!(f, "mapping at {at} overlaps an existing one"),
            MapError::NoSuchSpace(s) => write!(f, "no such address space: {s}"),
            MapError::NoSuchFile(x) => write!(f, "no such file: {x}"),
            MapError::NoSuchTask(t) => write!(f, "no such task: {t}"),
        }
    }
}

impl core::error::Error for MapError {}

/// Counters of the accesses made through a space's [`AddressSpace`](probe_core::AddressSpace)
/// handle (the core's accesses; the interpreter's own fetches, loads and stores are not
/// counted).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SpaceStats {
    /// Successful `read` calls.
    pub reads: u64,
    /// Successful `write` calls.
    pub writes: u64,
    /// Successful `patch_code` calls outside the slot area (breakpoints, restores).
    pub text_patches: u64,
    /// Successful `patch_code` calls inside the slot area (slot contents).
    pub xol_patches: u64,
}

/// How memory is accessed; decides the permission check.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// A data read.
    Read,
    /// An instruction fetch (needs `exec`).
    Fetch,
    /// A data write (needs `write`).
    Write,
    /// A code patch: allowed in any mapping, breaks copy-on-write.
    Patch,
}

#[derive(Clone, Debug)]
pub(crate) struct Vma {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) prot: Prot,
    pub(crate) backing: Backing,
    pub(crate) xol: bool,
    pub(crate) pages: Vec<PageRef>,
}

impl Vma {
    pub(crate) fn file(
        start: u64,
        len: u64,
        prot: Prot,
        file_id: FileId,
        offset: u64,
        file: &File,
    ) -> Vma {
        let first = offset / PAGE_SIZE;
        let pages = (0..len / PAGE_SIZE).map(|i| file.page(first + i)).collect();
        Vma {
            start,
            len,
            prot,
            backing: Backing::File {
                file: file_id,
                offset,
            },
            xol: false,
            pages,
        }
    }

    pub(crate) fn anon(start: u64, len: u64, prot: Prot) -> Vma {
        Vma {
            start,
            len,
            prot,
            backing: Backing::Anon,
            xol: false,
            pages: (0..len / PAGE_SIZE).map(|_| zero_page()).collect(),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end()
    }

    pub(crate) fn info(&self) -> MapInfo {
        MapInfo {
            range: Range::new(Addr(self.start), Addr(self.end())),
            prot: self.prot,
            backing: self.backing,
            xol: self.xol,
        }
    }

    /// The piece `[from, to)` of this mapping (both page aligned and inside it).
    fn slice(&self, from: u64, to: u64) -> Vma {
        let first = ((from - self.start) / PAGE_SIZE) as usize;
        let last = ((to - self.start) / PAGE_SIZE) as usize;
        let backing = match self.backing {
            Backing::File { file, offset } => Backing::File {
                file,
                offset: offset + (from - self.start),
            },
            Backing::Anon => Backing::Anon,
        };
        Vma {
            start: from,
            len: to - from,
            prot: self.prot,
            backing,
            xol: self.xol,
            pages: self.pages[first..last].to_vec(),
        }
    }

    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read | Access::Patch => true,
            Access::Fetch => self.prot.exec,
            Access::Write => self.prot.write,
        }
    }
}

/// The out-of-line slot area of a space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct XolArea {
    pub(crate) base: u64,
    pub(crate) count: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Space {
    pub(crate) id: SpaceId,
    vmas: BTreeMap<u64, Vma>,
    pub(crate) xol: Option<XolArea>,
    pub(crate) stats: SpaceStats,
}

impl Space {
    pub(crate) fn new(id: SpaceId) -> Space {
        Space {
            id,
            vmas: BTreeMap::new(),
            xol: None,
            stats: SpaceStats::default(),
        }
    }

    /// A copy for a forked child: every mapping, the slot area and every patched page (the
    /// pages are shared copy-on-write between parent and child). Counters start at zero.
    pub(crate) fn fork(&self, id: SpaceId) -> Space {
        Space {
            id,
            vmas: self.vmas.clone(),
            xol: self.xol,
            stats: SpaceStats::default(),
        }
    }

    /// Drop every mapping and the slot area (exec).
    pub(crate) fn clear(&mut self) {
        self.vmas.clear();
        self.xol = None;
    }

    pub(crate) fn find(&self, addr: u64) -> Option<&Vma> {
        let (_, v) = self.vmas.range(..=addr).next_back()?;
        v.contains(addr).then_some(v)
    }

    fn find_mut(&mut self, addr: u64) -> Option<&mut Vma> {
        let (_, v) = self.vmas.range_mut(..=addr).next_back()?;
        v.contains(addr).then_some(v)
    }

    /// Whether `[start, start + len)` is free.
    pub(crate) fn is_free(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let range = Range::new(Addr(start), Addr(end));
        !self
            .vmas
            .values()
            .any(|v| range.overlaps(Addr(v.start), v.len))
    }

    pub(crate) fn insert(&mut self, vma: Vma) -> Result<(), MapError> {
        if vma.len == 0 || !page_aligned(vma.start) || !page_aligned(vma.len) {
            return Err(MapError::Misaligned);
        }
        if let Backing::File { offset, .. } = vma.backing {
            if !page_aligned(offset) {
                return Err(MapError::Misaligned);
            }
        }
        if !self.is_free(vma.start, vma.len) {
            return Err(MapError::Overlap {
                at: Addr(vma.start),
            });
        }
        self.vmas.insert(vma.start, vma);
        Ok(())
    }

    /// Unmap `[start, start + len)`, splitting mappings that stick out. Returns the file-backed
    /// mappings (as they were) that lost pages.
    pub(crate) fn unmap(&mut self, start: u64, len: u64) -> Vec<MapInfo> {
        let end = start.saturating_add(len);
        let hit: Vec<u64> = self
            .vmas
            .values()
            .filter(|v| v.start < end && v.end() > start)
            .map(|v| v.start)
            .collect();
        let mut lost = Vec::new();
        for key in hit {
            let Some(v) = self.vmas.remove(&key) else {
                continue;
            };
            if v.xol {
                self.xol = None;
            }
            if matches!(v.backing, Backing::File { .. }) {
                lost.push(v.info());
            }
            let cut_from = start.max(v.start) / PAGE_SIZE * PAGE_SIZE;
            let cut_to = end.min(v.end()).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            if cut_from > v.start {
                let head = v.slice(v.start, cut_from);
                self.vmas.insert(head.start, head);
            }
            if cut_to < v.end() {
                let tail = v.slice(cut_to, v.end());
                self.vmas.insert(tail.start, tail);
            }
        }
        lost
    }

    pub(crate) fn maps(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// Every file-backed mapping, as the core's rmap walk reports it.
    pub(crate) fn file_mappings(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.vmas.values().filter_map(move |v| match v.backing {
            Backing::File { file, offset } => Some(Mapping {
                space: self.id,
                range: Range::new(Addr(v.start), Addr(v.end())),
                file,
                file_offset: offset,
                exec: v.prot.exec,
                write: v.prot.write,
            }),
            Backing::Anon => None,
        })
    }

    /// Whether `addr` lies in the slot area.
    pub(crate) fn in_xol(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|v| v.xol)
    }

    /// Partial read: up to the end of the page.
    pub(crate) fn read(
        &self,
        addr: u64,
        buf: &mut [u8],
        access: Access,
    ) -> Result<usize, MemError> {
        let err = |kind| MemError::new(Addr(addr), kind);
        if buf.is_empty() {
            return Err(err(MemErrorKind::Unmapped));
        }
        let vma = self.find(addr).ok_or(err(MemErrorKind::Unmapped))?;
        if !vma.allows(access) {
            return Err(err(MemErrorKind::Denied));
        }
        let rel = addr - vma.start;
        let page = &vma.pages[(rel / PAGE_SIZE) as usize];
        let in_page = (rel % PAGE_SIZE) as usize;
        let n = buf.len().min(PAGE_SIZE as usize - in_page);
        buf[..n].copy_from_slice(&page[in_page..in_page + n]);
        Ok(n)
    }

    /// Exact read across pages and mappings.
    pub(crate) fn read_exact(
        &self,
        addr: u64,
        buf: &mut [u8],
        access: Access,
    ) -> Result<(), MemError> {
        probe_core::memory::fill(addr, buf, |at, b| self.read(at, b, access))
    }

    /// Write `data` at `addr`, across pages and mappings, all or nothing: every page is
    /// checked before any is written. Written pages become private copies.
    pub(crate) fn write(&mut self, addr: u64, data: &[u8], access: Access) -> Result<(), MemError> {
        let len = data.len() as u64;
        let Some(end) = addr.checked_add(len) else {
            return Err(MemError::new(Addr(addr), MemErrorKind::Unmapped));
        };
        // Check.
        let mut at = addr;
        while at < end {
            let vma = self
                .find(at)
                .ok_or(MemError::new(Addr(at), MemErrorKind::Unmapped))?;
            if !vma.allows(access) {
                return Err(MemError::new(Addr(at), MemErrorKind::Denied));
            }
            at = (at / PAGE_SIZE + 1).saturating_mul(PAGE_SIZE);
        }
        // Write.
        let mut done = 0usize;
        while done < data.len() {
            let at = addr + done as u64;
            let vma = self
                .find_mut(at)
                .ok_or(MemError::new(Addr(at), MemErrorKind::Unmapped))?;
            let rel = at - vma.start;
            let in_page = (rel % PAGE_SIZE) as usize;
            let n = (data.len() - done).min(PAGE_SIZE as usize - in_page);
            let page = Arc::make_mut(&mut vma.pages[(rel / PAGE_SIZE) as usize]);
            page[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Whether the page at `addr` is still the file's own page (not copied by a write or a
    /// patch). `None` when `addr` is not in a file-backed mapping.
    pub(crate) fn shares_file_page(
        &self,
        addr: u64,
        files: &BTreeMap<FileId, File>,
    ) -> Option<bool> {
        let vma = self.find(addr)?;
        let Backing::File { file, offset } = vma.backing else {
            return None;
        };
        let idx = (addr - vma.start) / PAGE_SIZE;
        let f = files.get(&file)?;
        Some(f.shares(offset / PAGE_SIZE + idx, &vma.pages[idx as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space_with_file() -> (Space, BTreeMap<FileId, File>) {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut files = BTreeMap::new();
        files.insert(FileId(1), File::new(&bytes));
        let mut s = Space::new(SpaceId(1));
        s.insert(Vma::file(
            0x1000,
            256,
            Prot::RX,
            FileId(1),
            0,
            &files[&FileId(1)],
        ))
        .unwrap();
        s.insert(Vma::anon(0x2000, 128, Prot::RW)).unwrap();
        (s, files)
    }

    #[test]
    fn reads_stop_at_page_boundaries_and_check_access() {
        let (s, _) = space_with_file();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(0x1038, &mut buf, Access::Read), Ok(8));
        assert_eq!(buf[..8], [0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f]);
        s.read_exact(0x1038, &mut buf, Access::Fetch).unwrap();
        assert_eq!(buf[15], 0x47);
        assert_eq!(
            s.read(0x2000, &mut buf, Access::Fetch),
            Err(MemError::new(Addr(0x2000), MemErrorKind::Denied))
        );
        assert_eq!(
            s.read(0x1100, &mut buf, Access::Read),
            Err(MemError::new(Addr(0x1100), MemErrorKind::Unmapped))
        );
        // Exact read running off the end of a mapping fails where it stops.
        assert_eq!(
            s.read_exact(0x10f8, &mut buf, Access::Read),
            Err(MemError::new(Addr(0x1100), MemErrorKind::Unmapped))
        );
    }

    #[test]
    fn writes_are_all_or_nothing_and_patches_break_cow() {
        let (mut s, files) = space_with_file();
        assert_eq!(
            s.write(0x1000, &[1], Access::Write),
            Err(MemError::new(Addr(0x1000), MemErrorKind::Denied))
        );
        // Crossing from the stack mapping into nothing: nothing is written.
        assert!(s.write(0x207c, &[9; 8], Access::Write).is_err());
        let mut b = [0u8; 4];
        s.read_exact(0x207c, &mut b, Access::Read).unwrap();
        assert_eq!(b, [0; 4]);
        assert_eq!(s.shares_file_page(0x1040, &files), Some(true));
        s.write(0x103e, &[0xaa, 0xbb, 0xcc], Access::Patch).unwrap();
        assert_eq!(s.shares_file_page(0x1000, &files), Some(false));
        assert_eq!(s.shares_file_page(0x1040, &files), Some(false));
        assert_eq!(s.shares_file_page(0x1080, &files), Some(true));
        assert_eq!(files[&FileId(1)].bytes()[0x3e], 0x3e);
        s.read_exact(0x103d, &mut b, Access::Read).unwrap();
        assert_eq!(b, [0x3d, 0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn unmap_splits_and_keeps_file_offsets() {
        let (mut s, _) = space_with_file();
        let lost = s.unmap(0x1040, 0x40);
        assert_eq!(lost.len(), 1);
        let infos: Vec<MapInfo> = s.maps().map(Vma::info).collect();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].range, Range::new(Addr(0x1000), Addr(0x1040)));
        assert_eq!(infos[1].range, Range::new(Addr(0x1080), Addr(0x1100)));
        assert_eq!(
            infos[1].backing,
            Backing::File {
                file: FileId(1),
                offset: 0x80
            }
        );
        let mut b = [0u8; 1];
        s.read(0x1080, &mut b, Access::Read).unwrap();
        assert_eq!(b[0], 0x80);
        assert!(s.read(0x1040, &mut b, Access::Read).is_err());
        let m: Vec<Mapping> = s.file_mappings().collect();
        assert_eq!(m[1].file_offset, 0x80);
        assert_eq!(
            s.insert(Vma::anon(0x1010, 64, Prot::RW)),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            s.insert(Vma::anon(0x1000, 64, Prot::RW)),
            Err(MapError::Overlap { at: Addr(0x1000) })
        );
        s.insert(Vma::anon(0x1040, 64, Prot::RW)).unwrap();
    }
}
