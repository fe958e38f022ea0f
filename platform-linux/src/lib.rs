//! The Linux backend of `probe-core`: a ptrace tracer for real, unmodified programs, and
//! the pieces of the `probe` command line.
//!
//! Layers, bottom up:
//! - [`sys`]: the only unsafe code: ptrace, wait, signals, affinity, spawning a tracee.
//! - [`agent`]: the counter region shared with the in-process agent (`probe-agent`).
//! - [`attach`]: seizing every thread of a running process (`-p PID`).
//! - [`mem`]: a tracee's memory through `/proc/PID/mem` (patches read-only text too).
//! - [`maps`]: `/proc/PID/maps` as typed mappings.
//! - [`elf`]: function symbols of executables and libraries, keyed by file offset.
//! - [`journal`]: what the tracer patched, for the guardian to restore if it dies.
//! - [`insn`]: whether a probe offset starts an instruction (iced-x86).
//! - [`resolve`]: probe specs (`uprobe:libc:malloc`, `libc:str*`) into (file, offset)s.
//! - [`stack`]: `--stack`, user stacks walked (CFI via `gimli`, frame pointers), counted, folded.
//! - [`usdt`]: SDT markers of a file (offsets, semaphores, arguments) and their decoding.
//! - [`inproc`]: jump-patched entries in a stopped process whose agent is loaded (in-process probes).
//! - [`remote`]: system calls injected into a stopped tracee (remote `mmap` of slot pages).
//! - [`wait`]: how the tracer waits for the next stop (blocking, spinning, CPU placement).
//! - [`placement`]: the CPUs a session gives the tracer and the traced threads.
//! - [`tracer`]: the core driven over ptrace: platform, consumers, event loop, sessions.
//! - [`latency`]: log2 histograms of call durations (`probe trace --latency`).
//! - [`output`]: how `probe trace` prints hits and counts (text and JSON lines).
//! - [`cli`]: the `probe` command line.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod agent;
pub mod attach;
pub mod cli;
pub mod elf;
pub mod inproc;
pub mod insn;
pub mod journal;
mod json;
pub mod latency;
pub mod maps;
pub mod mem;
pub mod output;
pub mod placement;
pub mod remote;
pub mod resolve;
pub mod setid;
pub mod stack;
#[allow(unsafe_code)]
pub mod sys;
pub mod tracer;
pub mod usdt;
pub mod wait;
