//! An [`AddressSpace`] over a traced child's `/proc/PID/mem`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use probe_core::{Addr, AddressSpace, MemError, MemErrorKind, SpaceId};

/// The memory of a child process, through its `/proc/PID/mem` file.
#[derive(Debug)]
pub struct ProcMem<'a> {
    /// The child's pid (the space id).
    pub pid: i32,
    /// Its memory file.
    pub file: &'a File,
}

impl AddressSpace for ProcMem<'_> {
    fn id(&self) -> SpaceId {
        SpaceId(self.pid as u64)
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        match self.file.read_at(buf, addr.raw()) {
            Ok(0) | Err(_) => Err(MemError::new(addr, MemErrorKind::Unmapped)),
            Ok(n) => Ok(n),
        }
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.file
            .write_all_at(data, addr.raw())
            .map_err(|_| MemError::new(addr, MemErrorKind::Unmapped))
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.write(addr, data)
    }
}
