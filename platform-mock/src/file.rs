//! Files: immutable bytes stored as small pages that address spaces map and share.

use std::sync::Arc;

use probe_core::{Addr, MemError, MemErrorKind};

/// Page size of the simulated machine, in bytes. Small on purpose, so that instructions and
/// reads cross page boundaries often.
pub const PAGE_SIZE: u64 = 64;

/// One page of memory.
pub(crate) type Page = [u8; PAGE_SIZE as usize];

/// A shared page. Spaces hold clones of a file's pages until they write; then
/// [`Arc::make_mut`] gives them a private copy (copy-on-write).
pub(crate) type PageRef = Arc<Page>;

/// `x` rounded up to a page boundary.
pub const fn page_round_up(x: u64) -> u64 {
    x.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// Whether `x` is page aligned.
pub const fn page_aligned(x: u64) -> bool {
    x % PAGE_SIZE == 0
}

pub(crate) fn zero_page() -> PageRef {
    Arc::new([0u8; PAGE_SIZE as usize])
}

/// A file's contents.
#[derive(Debug)]
pub(crate) struct File {
    size: u64,
    pages: Vec<PageRef>,
}

impl File {
    pub(crate) fn new(bytes: &[u8]) -> File {
        let pages = bytes
            .chunks(PAGE_SIZE as usize)
            .map(|c| {
                let mut p = [0u8; PAGE_SIZE as usize];
                p[..c.len()].copy_from_slice(c);
                Arc::new(p)
            })
            .collect();
        File {
            size: bytes.len() as u64,
            pages,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The page holding file offset `index * PAGE_SIZE`: shared with every space that maps
    /// it and has not written it. Past the end of the file: a fresh zero page.
    pub(crate) fn page(&self, index: u64) -> PageRef {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.pages.get(i))
            .cloned()
            .unwrap_or_else(zero_page)
    }

    /// Whether `page` is this file's page `index` (i.e. still shared, not copied).
    pub(crate) fn shares(&self, index: u64, page: &PageRef) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.pages.get(i))
            .is_some_and(|p| Arc::ptr_eq(p, page))
    }

    /// Partial read: stops at the end of the page or of the file.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        if offset >= self.size || buf.is_empty() {
            return Err(MemError::new(Addr(offset), MemErrorKind::Unmapped));
        }
        let in_page = (offset % PAGE_SIZE) as usize;
        let n = buf
            .len()
            .min(PAGE_SIZE as usize - in_page)
            .min((self.size - offset) as usize);
        let page = &self.pages[(offset / PAGE_SIZE) as usize];
        buf[..n].copy_from_slice(&page[in_page..in_page + n]);
        Ok(n)
    }

    /// All bytes.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.pages.iter().flat_map(|p| p.iter().copied()).collect();
        v.truncate(self.size as usize);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_reads_stop_at_pages_and_eof() {
        let bytes: Vec<u8> = (0..150u8).collect();
        let f = File::new(&bytes);
        assert_eq!(f.size(), 150);
        let mut buf = [0u8; 16];
        assert_eq!(f.read(60, &mut buf), Ok(4));
        assert_eq!(&buf[..4], &[60, 61, 62, 63]);
        assert_eq!(f.read(64, &mut buf), Ok(16));
        assert_eq!(f.read(140, &mut buf), Ok(10));
        assert_eq!(
            f.read(150, &mut buf),
            Err(MemError::new(Addr(150), MemErrorKind::Unmapped))
        );
        assert_eq!(f.bytes(), bytes);
        assert!(f.shares(1, &f.page(1)));
        assert!(!f.shares(5, &f.page(5)));
    }
}
