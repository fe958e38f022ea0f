//! The controller's side of the in-process agent (`probe-agent`): the counter region it
//! shares with the agents in the traced processes.
//!
//! The region is a `memfd` the controller maps and hands to a spawned command: its
//! descriptor is inherited across the `exec` and named by `PROBE_AGENT_FD`, and the agent's
//! constructor maps it, closes it and removes the variable. The controller reads the counts
//! whenever it likes, without stopping a thread, and still after every traced process has
//! exited (its own mapping keeps the region).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use probe_agent::counters::{Counters, Layout};

pub use probe_agent::FD_VARIABLE;

/// A counter region for `probes` probes, mapped here.
#[derive(Debug)]
pub struct AgentRegion {
    file: File,
    base: *mut u8,
    len: usize,
    counters: Counters,
}

impl AgentRegion {
    /// A fresh region for `probes` probes and `threads` thread blocks (threads past them
    /// share one block: slower, still exact).
    pub fn new(probes: u32, threads: u32) -> io::Result<AgentRegion> {
        let layout = Layout::new(probes, threads)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let len = layout
            .bytes()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let name = CString::new("probe-agent-counters").expect("no NUL");
        // SAFETY: a NUL-terminated name; the descriptor returned is new and ours.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor nobody else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(len as u64)?;
        // Unmapped only in `drop`.
        let base =
            probe_agent::map_shared(file.as_raw_fd(), len).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: page aligned, `len` zeroed bytes (a fresh file), not shared with anyone yet.
        unsafe { layout.init(base) };
        // SAFETY: mapped for the life of `self`, written only through the counter module.
        let counters = unsafe { Counters::from_raw(base, len) }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(AgentRegion {
            file,
            base,
            len,
            counters,
        })
    }

    /// The hits of `probe` counted so far, in every process that shares the region.
    pub fn total(&self, probe: u32) -> u64 {
        self.counters.total(probe)
    }

    /// The region's mapping here (base, length): what a process that shares the mapping
    /// (a forked child) hands its agent with `probe_agent_attach`.
    pub fn mapping(&self) -> (*mut u8, usize) {
        (self.base, self.len)
    }

    /// How many threads have counted a hit.
    pub fn threads_seen(&self) -> u32 {
        self.counters.claimed()
    }

    /// Hands the region to the command `cmd` will spawn: its descriptor is kept across the
    /// `exec` (and nowhere else) and named in [`FD_VARIABLE`].
    pub fn pass_to(&self, cmd: &mut Command) {
        let fd = self.file.as_raw_fd();
        cmd.env(FD_VARIABLE, fd.to_string());
        let clear = move || {
            // SAFETY: fcntl is async-signal-safe; `fd` is open in the child (inherited).
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure only calls fcntl, which is async-signal-safe, between fork
        // and exec.
        unsafe { std::os::unix::process::CommandExt::pre_exec(cmd, clear) };
    }
}

impl Drop for AgentRegion {
    fn drop(&mut self) {
        // SAFETY: our mapping, not used after this.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}
