//! The controller's side of the in-process agent (`probe-agent`): the regions it shares with
//! the agents in the traced processes, one of counters and one of hit records.
//!
//! Each region is a `memfd` the controller maps and hands to a spawned command: its
//! descriptor is inherited across the `exec` and named by a variable (`PROBE_AGENT_FD`,
//! `PROBE_AGENT_RECORDS_FD`), and the agent's constructor maps it, closes it and removes the
//! variable. The controller reads whenever it likes, without stopping a thread, and still
//! after every traced process has exited (its own mapping keeps the region).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use probe_agent::counters::{Counters, Layout};
use probe_agent::ring::{Record, RecordRegion};

pub use probe_agent::{FD_VARIABLE, RECORDS_FD_VARIABLE};

/// A `memfd` of `len` zeroed bytes, mapped here shared.
#[derive(Debug)]
struct SharedFile {
    file: File,
    base: *mut u8,
    len: usize,
}

impl SharedFile {
    fn new(name: &str, len: usize) -> io::Result<SharedFile> {
        let name = CString::new(name).expect("no NUL");
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
        Ok(SharedFile { file, base, len })
    }

    /// Keeps the descriptor open across `cmd`'s `exec` (and nowhere else), named in `var`.
    fn pass_to(&self, cmd: &mut Command, var: &str) {
        let fd = self.file.as_raw_fd();
        cmd.env(var, fd.to_string());
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

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: our mapping; the views into it live no longer than the owner.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "region too large")
}

/// A counter region for `probes` probes, mapped here.
#[derive(Debug)]
pub struct AgentRegion {
    shared: SharedFile,
    counters: Counters,
}

impl AgentRegion {
    /// A fresh region for `probes` probes and `threads` thread blocks (threads past them
    /// share one block: slower, still exact).
    pub fn new(probes: u32, threads: u32) -> io::Result<AgentRegion> {
        let layout = Layout::new(probes, threads).ok_or_else(too_large)?;
        let len = layout.bytes().ok_or_else(too_large)?;
        let shared = SharedFile::new("probe-agent-counters", len)?;
        // SAFETY: page aligned, `len` zeroed bytes (a fresh file), not shared with anyone yet.
        unsafe { layout.init(shared.base) };
        // SAFETY: mapped for the life of `self`, written only through the counter module.
        let counters = unsafe { Counters::from_raw(shared.base, len) }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(AgentRegion { shared, counters })
    }

    /// The hits of `probe` counted so far, in every process that shares the region.
    pub fn total(&self, probe: u32) -> u64 {
        self.counters.total(probe)
    }

    /// The region's mapping here (base, length): what a process that shares the mapping
    /// (a forked child) hands its agent with `probe_agent_attach`.
    pub fn mapping(&self) -> (*mut u8, usize) {
        (self.shared.base, self.shared.len)
    }

    /// How many threads have counted a hit.
    pub fn threads_seen(&self) -> u32 {
        self.counters.claimed()
    }

    /// Hands the region to the command `cmd` will spawn ([`FD_VARIABLE`]).
    pub fn pass_to(&self, cmd: &mut Command) {
        self.shared.pass_to(cmd, FD_VARIABLE);
    }
}

/// A record region of `rings` per-thread rings, mapped here.
#[derive(Debug)]
pub struct AgentRecords {
    shared: SharedFile,
    view: RecordRegion,
}

impl AgentRecords {
    /// A fresh region with a ring for each of `rings` threads (later threads' records are
    /// counted as lost).
    pub fn new(rings: u64) -> io::Result<AgentRecords> {
        let len = RecordRegion::bytes(rings).ok_or_else(too_large)?;
        let shared = SharedFile::new("probe-agent-records", len)?;
        // SAFETY: page aligned, `len` zeroed bytes, not shared yet.
        unsafe { RecordRegion::init(shared.base, rings) };
        // SAFETY: mapped for the life of `self`, written only through the ring module.
        let view = unsafe { RecordRegion::from_raw(shared.base, len) }
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record region"))?;
        Ok(AgentRecords { shared, view })
    }

    /// Takes every complete record not taken yet (each ring's oldest first): `out(sequence
    /// number in its ring, record)`; returns how many.
    pub fn drain(&self, out: &mut impl FnMut(u64, Record)) -> usize {
        self.view.drain(out)
    }

    /// Records lost so far: full rings, threads without a ring.
    pub fn lost(&self) -> u64 {
        self.view.lost()
    }

    /// Hands the region to the command `cmd` will spawn ([`RECORDS_FD_VARIABLE`]).
    pub fn pass_to(&self, cmd: &mut Command) {
        self.shared.pass_to(cmd, RECORDS_FD_VARIABLE);
    }
}
