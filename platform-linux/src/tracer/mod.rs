//! The tracer: `probe-core` driven over ptrace.
//!
//! - [`platform`]: [`LinuxPlatform`], the core's platform (files by device and inode, spaces
//!   by process, tasks by thread, memory through `/proc/PID/mem`, slot areas mapped by an
//!   injected `mmap`).
//! - [`consumer`]: [`LinuxConsumer`], what the tracer attaches to each probe (counting,
//!   recording hits, the dynamic linker's hook), and the state it shares with the loop.
//! - [`session`]: [`Session`], spawn or attach, add probes, run, detach.
//! - [`capacity`]: the core's sizes, chosen for node-sized programs, and what a full table
//!   means.
//! - [`skips`]: the points a spec matched that are not probed, each with its reason.
//! - `specs`: the specs of a session, resolved at the start and again in each new image
//!   (`exec`, a library mapped) whose file a spec names.
//! - `event_loop`: what each ptrace stop means and how the thread is resumed.
//! - `slots`: the slot areas from the session's side (a lost area, unmapping at detach).
//! - `usdt`: [`Session`]'s registration of USDT markers (every location, with semaphores).
//! - [`regs`]: register-file conversions.
//! - [`returns`]: return probes' durations, `--latency`, `nmissed`, and the unwinder hooks
//!   that keep C++ exceptions working through hijacked frames.
//! - [`ret_insn`]: `--ret-by-insn`, return probes by breakpoints on a function's `ret`
//!   instructions, for Go programs (which move stacks) and any function.
//! - `stacks`: `--stack`, the user stack of each hit walked while the thread is stopped
//!   (the walker itself is [`crate::stack`]).
//! - [`error`]: the session's error type, [`TraceError`].

pub mod capacity;
pub mod consumer;
pub mod error;
mod event_loop;
pub mod platform;
mod ptrace_hook;
pub mod regs;
pub mod ret_insn;
pub mod returns;
pub mod session;
pub mod skips;
mod slots;
mod specs;
mod stacks;
mod usdt;

pub use consumer::{HitRecord, LinuxConsumer, Role, Shared};
pub use error::TraceError;
pub use platform::{LinuxPlatform, LinuxSpace};
pub use session::{
    AddReport, Core, DetachReport, Outcome, ProbeEntry, Session, SessionOptions, Stats,
};
