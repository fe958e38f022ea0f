//! [`TraceError`]: why a tracing session failed, with the cause and, where there is one, the
//! fix.

use crate::maps::MapsError;
use crate::mem::MemError;
use crate::resolve::ResolveError;
use crate::sys::SysError;

/// Why a tracing session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A ptrace or process operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A probe spec could not be parsed or resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The tracee's memory could not be opened.
    #[error(transparent)]
    Mem(#[from] MemError),
    /// The tracee's mappings could not be read.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// A file named by a probe could not be opened.
    #[error("cannot open {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The core refused a probe.
    #[error("cannot probe {probe}: {reason}")]
    Register {
        /// The probe's name (`libc.so.6:malloc`).
        probe: String,
        /// The core's reason, with a hint.
        reason: String,
    },
    /// The operation needs a traced process and there is none left.
    #[error("no traced process is left")]
    NoTracee,
    /// `-p PID` names something that cannot be traced.
    #[error("cannot attach to process {pid}: {why}")]
    NotAttachable {
        /// The process id given.
        pid: i32,
        /// Why not.
        why: crate::attach::NotAttachable,
    },
    /// The address space for the core's tables could not be reserved (nothing was started
    /// or attached).
    #[error(
        "cannot reserve {} MiB of address space for the probe core's tables (mmap: {errno}); they \
         are committed only as they are used, but `ulimit -v` or `vm.overcommit_memory = 2` \
         refuses the reservation",
        bytes >> 20
    )]
    CoreMemory {
        /// The size asked for.
        bytes: usize,
        /// Why `mmap` failed.
        errno: crate::sys::Errno,
    },
}
