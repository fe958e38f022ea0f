//! # probe-core
//!
//! An embeddable, `#![no_std]` rebuild of the Linux kernel's kprobes/uprobes machinery.
//!
//! Layers, bottom up:
//!
//! - [`addr`]: checked addresses and identities ([`Addr`], [`FileId`], [`SpaceId`], [`TaskId`]).
//! - `sync`: the one shim through which every atomic, cell and lock goes, so that `loom`
//!   can replace them (`--cfg loom`).
//! - [`arch`]: the [`Arch`] trait (breakpoint, analysis into a plan, slot encoding, emulation,
//!   return addresses) and `arch::x86_64` (iced-x86).
//! - [`platform`]: what the core asks the platform ([`Platform`], [`AddressSpace`]).
//! - [`consumer`]: what an embedder attaches to a probe ([`Consumer`]).
//! - [`sdt`]: `.note.stapsdt` notes and argument specs, parsed zero-copy.
//! - the engine, [`ProbeCore`], over fixed tables (`table.rs`: lock-free lookups, one writer)
//!   and grace periods (`reclaim.rs`): registration (`engine.rs`), filter chains
//!   (`filter.rs`), installing and removing breakpoints and slots (`install.rs`, `xol.rs`; the space
//!   table entry in `space.rs`),
//!   the platform's events (`events.rs`), the hit and single-step paths (`hit.rs`), return
//!   probes (`ret/`: the engine side in `mod.rs`, `maxactive`/`nmissed` accounting in `instances.rs`; per-task state in [`task`]) and SDT semaphores (`sdt/semaphore.rs`).
//!
//! The core owns no threads, clocks or I/O. The platform calls into it on events and applies
//! the action it returns. No allocation happens on the hit, return or single-step paths; the
//! tables are fixed-capacity and sized by the embedder through const generics.
#![no_std]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "x86_64")]
extern crate alloc;

pub mod addr;
pub mod arch;
pub mod consumer;
pub mod error;
pub mod memory;
pub mod platform;
pub mod sdt;

pub use addr::{Addr, CpuId, FileId, ProbeKey, Range, SpaceId, TaskId};
pub use arch::{Arch, PlanKind, Registers, Reject};
pub use consumer::{
    Consumer, ConsumerHandle, ConsumerOptions, EntryAction, HandlerAction, HitContext,
    ReturnContext, ReturnOptions,
};
pub use error::{Capacity, Error, MemError, MemErrorKind};
pub use platform::{AddressSpace, Mapping, Platform};

pub(crate) mod blacklist;
mod engine;
mod events;
mod filter;
mod hit;
mod install;
#[cfg(not(loom))]
mod layout;
pub(crate) mod probe;
mod reclaim;
mod ret;
pub(crate) mod site;
pub(crate) mod space;
pub(crate) mod sync;
pub(crate) mod table;
pub mod task;
pub mod trap;
pub(crate) mod xol;

pub use blacklist::BLACKLIST_CAPACITY;
pub use engine::ProbeCore;
pub use hit::{Hit, Step};
pub use lock_api;
pub use sync::SpinLock;
pub use task::{
    RetInstance, ReturnChain, TaskReturns, TaskState, MAX_RETURNS_PER_HIT, RET_DATA_MAX,
};
pub use trap::TrapState;
