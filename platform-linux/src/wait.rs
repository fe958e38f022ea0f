//! How the tracer waits for the next ptrace stop, and where tracer and tracee run.
//!
//! A hit costs two context switches (tracee → tracer → tracee). When tracer and tracee
//! sit on different CPUs, a blocked tracer's CPU goes idle and waking an idle (virtual)
//! CPU costs tens of microseconds; on one CPU the switch is a few microseconds. A tracer
//! that polls with `WNOHANG` for a short while before it blocks keeps its CPU awake while
//! stops come quickly, and blocks (burning nothing) when the tracee is quiet.
//! `probe-bench` measures each choice; [`WaitStrategy::DEFAULT`] is the winner there.

use core::time::Duration;
use std::time::Instant;

use crate::sys::{self, Pid, SysError, WaitStatus};

/// How to wait for a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Block in `waitpid` at once.
    Block,
    /// Poll with `WNOHANG` for up to this long, then block.
    Spin(Duration),
    /// Like `Spin`, but yield the CPU between polls (lets a tracee on the same CPU run).
    SpinYield(Duration),
}

impl WaitStrategy {
    /// The strategy `probe` uses: see the crate's benchmark notes for the figures.
    pub const DEFAULT: WaitStrategy = WaitStrategy::SpinYield(Duration::from_micros(100));

    /// Waits for a stop of `pid` (or any tracee, for `None`) with this strategy.
    pub fn wait(self, pid: Option<Pid>) -> Result<WaitStatus, SysError> {
        let (limit, yield_between) = match self {
            WaitStrategy::Block => return sys::wait(pid),
            WaitStrategy::Spin(d) => (d, false),
            WaitStrategy::SpinYield(d) => (d, true),
        };
        let start = Instant::now();
        loop {
            match sys::try_wait(pid)? {
                WaitStatus::StillAlive => {}
                status => return Ok(status),
            }
            if let Some(sig) = sys::stop_requested() {
                return Err(SysError::Interrupted(sig));
            }
            if start.elapsed() >= limit {
                return sys::wait(pid);
            }
            if yield_between {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }
}

/// Where tracer and tracee run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Leave both to the scheduler.
    Free,
    /// Pin the tracer thread and the tracee to one CPU (serialises a multi-threaded
    /// tracee: only for single-threaded programs or measurements).
    SameCpu(usize),
    /// Pin the tracer to one CPU; the tracee runs where the scheduler puts it.
    TracerOnly(usize),
    /// Pin the tracer to one CPU and the tracee to another.
    SeparateCpus {
        /// The tracer's CPU.
        tracer: usize,
        /// The tracee's CPU.
        tracee: usize,
    },
}

impl Placement {
    /// Pins the calling (tracer) thread; returns the CPUs the tracee should get, if any.
    /// `Free` gives the tracer `original` back: the mask the process started with, read
    /// once before anything was pinned (the calling thread's mask at this point may be an
    /// earlier pin).
    pub fn pin_tracer(self, original: &[usize]) -> Result<Option<Vec<usize>>, SysError> {
        match self {
            Placement::Free => {
                sys::set_affinity(None, original)?;
                Ok(None)
            }
            Placement::SameCpu(c) => {
                sys::set_affinity(None, &[c])?;
                Ok(Some(vec![c]))
            }
            Placement::TracerOnly(c) => {
                sys::set_affinity(None, &[c])?;
                Ok(None)
            }
            Placement::SeparateCpus { tracer, tracee } => {
                sys::set_affinity(None, &[tracer])?;
                Ok(Some(vec![tracee]))
            }
        }
    }
}
