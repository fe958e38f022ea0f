//! The atomics of the agent's protocols: `core`'s, or loom's under `--cfg loom` (as in
//! `probe-core`'s `sync`), so that the ring's loom models check the code that runs.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};
