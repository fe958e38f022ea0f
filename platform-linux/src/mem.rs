//! Reading and patching a tracee's memory through `/proc/PID/mem`.
//!
//! The kernel lets a ptrace tracer write through this file even into read-only text: it
//! breaks copy-on-write the same way `PTRACE_POKETEXT` does, so a patched shared library
//! page stays private to the traced process. One `pread`/`pwrite` moves any number of
//! bytes, where `PTRACE_PEEK/POKE` moves one word per system call.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::sys::{Errno, Pid};

/// Why a memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// `/proc/PID/mem` could not be opened.
    #[error(
        "cannot open /proc/{pid}/mem: {errno} (the process must exist and be traced by us, \
         or be ours to ptrace)"
    )]
    Open {
        /// The process.
        pid: Pid,
        /// The kernel's reason.
        errno: Errno,
    },
    /// The range is not (entirely) mapped, or the kernel refused.
    #[error("{what} {len} bytes at {addr:#x} in process {pid}: {errno}")]
    Access {
        /// `"reading"` or `"writing"`.
        what: &'static str,
        /// The process.
        pid: Pid,
        /// The first address.
        addr: u64,
        /// The length asked for.
        len: usize,
        /// The kernel's reason (`EIO` for unmapped memory).
        errno: Errno,
    },
    /// Only part of the range was mapped.
    #[error("{what} {len} bytes at {addr:#x} in process {pid}: only {done} were accessible")]
    Short {
        /// `"reading"` or `"writing"`.
        what: &'static str,
        /// The process.
        pid: Pid,
        /// The first address.
        addr: u64,
        /// The length asked for.
        len: usize,
        /// How many bytes were moved.
        done: usize,
    },
}

/// An open `/proc/PID/mem` of one address space.
///
/// The file stays bound to the address space it was opened on: after the process execs,
/// open it again (reads of the old one fail).
#[derive(Debug)]
pub struct ProcMem {
    pid: Pid,
    file: File,
}

impl ProcMem {
    /// Opens the memory of `pid` for reading and writing.
    pub fn open(pid: Pid) -> Result<Self, MemError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| MemError::Open {
                pid,
                errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(ProcMem { pid, file })
    }

    /// The process whose memory this is.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Reads up to `buf.len()` bytes at `addr`; returns how many were readable (a read that
    /// runs into an unmapped page stops there).
    pub fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => {
                    return Err(MemError::Access {
                        what: "reading",
                        pid: self.pid,
                        addr,
                        len: buf.len(),
                        errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                    })
                }
                Err(_) => break,
            }
        }
        Ok(done)
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let done = self.read_partial(addr, buf)?;
        if done != buf.len() {
            return Err(MemError::Short {
                what: "reading",
                pid: self.pid,
                addr,
                len: buf.len(),
                done,
            });
        }
        Ok(())
    }

    /// Reads a little-endian `u64` at `addr`.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes all of `data` at `addr`, read-only text included.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let mut done = 0;
        while done < data.len() {
            match self.file.write_at(&data[done..], addr + done as u64) {
                Ok(0) => {
                    return Err(MemError::Short {
                        what: "writing",
                        pid: self.pid,
                        addr,
                        len: data.len(),
                        done,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(MemError::Access {
                        what: "writing",
                        pid: self.pid,
                        addr: addr + done as u64,
                        len: data.len() - done,
                        errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                    })
                }
            }
        }
        Ok(())
    }
}
