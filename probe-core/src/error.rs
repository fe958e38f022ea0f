//! The core's error types: small, `Copy`, with fields a person can act on.

use core::fmt;

use crate::addr::{Addr, FileId, SpaceId};
use crate::arch::Reject;
pub use crate::memory::{MemError, MemErrorKind};

/// Which fixed-capacity table ran out. Capacities are chosen by the embedder through the core's
/// const generics; running out is never a panic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Capacity {
    /// The probe table (`PROBES`).
    Probes,
    /// The consumer table (`CONSUMERS`).
    Consumers,
    /// The installed-breakpoint table (`SITES`).
    Sites,
    /// The address-space table (`SPACES`).
    Spaces,
    /// The per-task state table (`TASKS`).
    Tasks,
    /// The out-of-line slots of one address space (`XOL`).
    XolSlots,
    /// The blacklist.
    Blacklist,
    /// A CPU number at or above `CPUS`.
    Cpus,
    /// Return-probe instances.
    ReturnInstances,
    /// The per-space mapping table.
    Mappings,
    /// Nested traps of one context (a trap taken while an outer one is still in its slot or
    /// single step) beyond what its [`TrapState`](crate::TrapState) holds, or read-side
    /// sections of one CPU nested more than 65 535 deep.
    Nesting,
}

/// Errors of the core's control operations (register, unregister, events).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A fixed-capacity table is full; raise the named capacity.
    CapacityExhausted {
        /// Which table.
        what: Capacity,
    },
    /// The consumer handle is not registered (never was, or already unregistered).
    UnknownConsumer,
    /// The offset lies outside the file.
    OffsetOutsideFile {
        /// The file.
        file: FileId,
        /// The requested offset.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// The location is on the blacklist and must never be probed.
    Blacklisted {
        /// The file.
        file: FileId,
        /// The requested offset.
        offset: u64,
    },
    /// The location maps to a blacklisted address in some address space.
    BlacklistedAddress {
        /// The address space.
        space: SpaceId,
        /// The address.
        addr: Addr,
    },
    /// The instruction cannot be probed.
    Rejected(Reject),
    /// A memory access failed.
    Memory(MemError),
    /// Installing or removing a breakpoint found other bytes than expected: someone else
    /// changed the text. Nothing was written.
    BytesChanged {
        /// The address space.
        space: SpaceId,
        /// Where.
        addr: Addr,
    },
    /// The platform knows no such address space.
    NoSuchSpace(SpaceId),
    /// The platform could not provide an out-of-line slot area for this space.
    NoXolArea(SpaceId),
    /// Another call is using this task's state right now (the platform called the core twice
    /// for one task at once). Nothing was changed.
    TaskBusy,
    /// A consumer's options conflict with the probe's (e.g. a different SDT semaphore).
    OptionsConflict,
    /// The file is not known to the platform.
    NoSuchFile(FileId),
    /// The consumer's options are invalid (e.g. `maxactive` of 0, or more per-instance data
    /// than `RET_DATA_MAX`).
    BadOptions,
    /// The new probe's instruction would overlap the instruction of an existing probe of the
    /// same file (one lies inside the other): removing one could leave half an instruction
    /// patched. Probe instruction boundaries only.
    Overlaps {
        /// The file.
        file: FileId,
        /// The requested offset.
        offset: u64,
        /// The offset of the existing probe it overlaps.
        existing: u64,
    },
}

impl From<MemError> for Error {
    fn from(e: MemError) -> Error {
        Error::Memory(e)
    }
}

impl From<Reject> for Error {
    fn from(r: Reject) -> Error {
        Error::Rejected(r)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::CapacityExhausted { what } => {
                write!(
                    f,
                    "capacity exhausted: the {what:?} table is full; raise its capacity"
                )
            }
            Error::UnknownConsumer => {
                write!(
                    f,
                    "no such consumer: it was never registered or is already unregistered"
                )
            }
            Error::OffsetOutsideFile { file, offset, size } => write!(
                f,
                "offset {offset:#x} is outside file {file} ({size} bytes)"
            ),
            Error::Blacklisted { file, offset } => {
                write!(
                    f,
                    "file {file} offset {offset:#x} is blacklisted and must not be probed"
                )
            }
            Error::BlacklistedAddress { space, addr } => write!(
                f,
                "the probe would land at blacklisted address {addr} in space {space}"
            ),
            Error::Rejected(r) => write!(f, "instruction cannot be probed: {r}"),
            Error::Memory(m) => fmt::Display::fmt(&m, f),
            Error::BytesChanged { space, addr } => write!(
                f,
                "the text at {addr} in space {space} is not what the probe expects; left untouched"
            ),
            Error::NoSuchSpace(s) => write!(f, "no such address space: {s}"),
            Error::NoXolArea(s) => write!(f, "no out-of-line slot area in space {s}"),
            Error::TaskBusy => write!(f, "the task's state is in use by another call"),
            Error::OptionsConflict => {
                write!(
                    f,
                    "the consumer's options conflict with the probe's existing options"
                )
            }
            Error::NoSuchFile(file) => write!(f, "no such file: {file}"),
            Error::Overlaps {
                file,
                offset,
                existing,
            } => write!(
                f,
                "offset {offset:#x} of file {file} overlaps the instruction of the probe at {existing:#x}; probe instruction boundaries only"
            ),
            Error::BadOptions => write!(
                f,
                "invalid consumer options: maxactive must be at least 1 and data_size at most {}",
                crate::task::RET_DATA_MAX
            ),
        }
    }
}

impl core::error::Error for Error {}
