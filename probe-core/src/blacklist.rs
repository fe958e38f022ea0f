//! Locations that must never be probed (kprobes' blacklist, `NOKPROBE_SYMBOL`): the embedder's own exception path, the
//! return trampoline, a dynamic linker's debug hook. Registering there is refused with a typed
//! error.

use heapless::Vec;

use crate::addr::{Addr, FileId, Range, SpaceId};
use crate::error::{Capacity, Error};

/// Entries per kind of blacklist.
pub const BLACKLIST_CAPACITY: usize = 32;

/// File-offset ranges and address ranges that must not be probed.
#[derive(Debug, Default)]
pub(crate) struct Blacklist {
    files: Vec<(FileId, u64, u64), BLACKLIST_CAPACITY>,
    addrs: Vec<(Option<SpaceId>, Range), BLACKLIST_CAPACITY>,
}

impl Blacklist {
    pub(crate) const fn new() -> Blacklist {
        Blacklist {
            files: Vec::new(),
            addrs: Vec::new(),
        }
    }

    pub(crate) fn add_file(&mut self, file: FileId, start: u64, end: u64) -> Result<(), Error> {
        self.files
            .push((file, start, end))
            .map_err(|_| Error::CapacityExhausted {
                what: Capacity::Blacklist,
            })
    }

    pub(crate) fn add_addr(&mut self, space: Option<SpaceId>, range: Range) -> Result<(), Error> {
        self.addrs
            .push((space, range))
            .map_err(|_| Error::CapacityExhausted {
                what: Capacity::Blacklist,
            })
    }

    /// Refuse an instruction of `len` bytes at `offset` of `file` that overlaps an entry.
    pub(crate) fn check_file(&self, file: FileId, offset: u64, len: u64) -> Result<(), Error> {
        let end = offset.saturating_add(len.max(1));
        if self
            .files
            .iter()
            .any(|&(f, s, e)| f == file && offset < e && end > s)
        {
            return Err(Error::Blacklisted { file, offset });
        }
        Ok(())
    }

    /// Refuse an instruction of `len` bytes at `addr` in `space` that overlaps an entry.
    pub(crate) fn check_addr(&self, space: SpaceId, addr: Addr, len: u64) -> Result<(), Error> {
        if self
            .addrs
            .iter()
            .any(|&(s, r)| s.is_none_or(|s| s == space) && r.overlaps(addr, len.max(1)))
        {
            return Err(Error::BlacklistedAddress { space, addr });
        }
        Ok(())
    }
}
