//! A traced child process that executes single instructions for the oracle.
//!
//! The child maps a large low window (read/write/execute, reserved lazily) and a small far
//! page for slots, then stops itself. The parent places code and data there through
//! `/proc/PID/mem` and drives it with `PTRACE_SETREGS`, `PTRACE_SINGLESTEP` and
//! `PTRACE_CONT`. All `unsafe` of the x86 tests lives in this file.

use core::time::Duration;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use probe_core::arch::x86_64::X86Regs;

/// Start of the low window (all of it mapped read/write/execute, lazily).
pub const LOW_START: u64 = 0x10_0000;
/// End of the low window.
pub const LOW_END: u64 = 0x1_1000_0000;
/// A far page for slots: more than 2 GiB from everything in the low window.
pub const FAR_START: u64 = 0x3000_0000_0000;
/// Size of the far area.
pub const FAR_LEN: u64 = 0x1_0000;

/// How a run of the child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A `SIGTRAP` (single-step completed or `int3` hit).
    Trap,
    /// Another signal (a fault, most likely).
    Signal(i32),
    /// The child did not stop within the time limit (it was stopped by force).
    Timeout,
}

/// The x87/SSE state as `PTRACE_GETFPREGS` returns it (`struct user_fpregs_struct`).
pub type FpRegs = libc::user_fpregs_struct;

/// A stopped, traced child process; killed when dropped.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    mem: File,
}

/// The register conversions are the tracer's (field by field, same layout as the kernel's).
fn to_libc(r: &X86Regs) -> libc::user_regs_struct {
    platform_linux::tracer::regs::to_sys(r)
}

fn from_libc(r: &libc::user_regs_struct) -> X86Regs {
    platform_linux::tracer::regs::to_core(r)
}

fn check(ret: libc::c_long, what: &str) -> io::Result<()> {
    if ret == -1 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(())
    }
}

impl Child {
    /// Fork a child that maps the low window and the far area, then stops.
    pub fn spawn() -> io::Result<Child> {
        // SAFETY: after fork the child only calls async-signal-safe functions (ptrace, mmap,
        // raise, _exit) and never returns into Rust code of the parent's threads.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; these are plain system calls on the child's own memory.
            unsafe {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    libc::_exit(10);
                }
                let prot = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
                let flags = libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_FIXED_NOREPLACE
                    | libc::MAP_NORESERVE;
                let low = libc::mmap(
                    LOW_START as *mut libc::c_void,
                    (LOW_END - LOW_START) as usize,
                    prot,
                    flags,
                    -1,
                    0,
                );
                if low as u64 != LOW_START {
                    libc::_exit(11);
                }
                let far = libc::mmap(
                    FAR_START as *mut libc::c_void,
                    FAR_LEN as usize,
                    prot,
                    flags,
                    -1,
                    0,
                );
                if far as u64 != FAR_START {
                    libc::_exit(12);
                }
                libc::raise(libc::SIGSTOP);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r != pid || !libc::WIFSTOPPED(status) {
            return Err(io::Error::other(format!(
                "child {pid} did not stop (status {status:#x}; exit codes 10-12 mean ptrace/mmap failed)"
            )));
        }
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))?;
        Ok(Child { pid, mem })
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The child's memory file (`/proc/PID/mem`).
    pub fn mem_file(&self) -> &File {
        &self.mem
    }

    /// Read the child's memory.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read_exact_at(buf, addr)
    }

    /// Write the child's memory (also read-only text: `/proc/PID/mem` forces it).
    pub fn write(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        self.mem.write_all_at(data, addr)
    }

    /// The general-purpose registers.
    pub fn regs(&self) -> io::Result<X86Regs> {
        // SAFETY: all-zero bytes are a valid `user_regs_struct` (plain integers).
        let mut r: libc::user_regs_struct = unsafe { core::mem::zeroed() };
        // SAFETY: the child is a stopped tracee of ours; `r` is a valid, writable
        // user_regs_struct the kernel fills.
        let ret = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGS,
                self.pid,
                0,
                &mut r as *mut libc::user_regs_struct,
            )
        };
        check(ret, "PTRACE_GETREGS")?;
        Ok(from_libc(&r))
    }

    /// Set the general-purpose registers.
    pub fn set_regs(&self, regs: &X86Regs) -> io::Result<()> {
        let r = to_libc(regs);
        // SAFETY: the child is a stopped tracee of ours; the kernel only reads `r`.
        let ret = unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGS,
                self.pid,
                0,
                &r as *const libc::user_regs_struct,
            )
        };
        check(ret, "PTRACE_SETREGS")
    }

    /// The x87/SSE registers.
    pub fn fpregs(&self) -> io::Result<FpRegs> {
        // SAFETY: all-zero bytes are a valid `user_fpregs_struct` (plain integers).
        let mut f: FpRegs = unsafe { core::mem::zeroed() };
        // SAFETY: stopped tracee; `f` is a valid, writable user_fpregs_struct.
        let ret =
            unsafe { libc::ptrace(libc::PTRACE_GETFPREGS, self.pid, 0, &mut f as *mut FpRegs) };
        check(ret, "PTRACE_GETFPREGS")?;
        Ok(f)
    }

    /// Set the x87/SSE registers.
    pub fn set_fpregs(&self, f: &FpRegs) -> io::Result<()> {
        // SAFETY: stopped tracee; the kernel only reads `f`.
        let ret = unsafe { libc::ptrace(libc::PTRACE_SETFPREGS, self.pid, 0, f as *const FpRegs) };
        check(ret, "PTRACE_SETFPREGS")
    }

    /// Execute one instruction.
    pub fn step(&self) -> io::Result<Stop> {
        // SAFETY: stopped tracee; no signal is injected.
        let ret = unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, self.pid, 0, 0) };
        check(ret, "PTRACE_SINGLESTEP")?;
        self.wait()
    }

    /// Run until the next stop (or the time limit).
    pub fn cont(&self) -> io::Result<Stop> {
        // SAFETY: stopped tracee; no signal is injected.
        let ret = unsafe { libc::ptrace(libc::PTRACE_CONT, self.pid, 0, 0) };
        check(ret, "PTRACE_CONT")?;
        self.wait()
    }

    fn wait(&self) -> io::Result<Stop> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut spins = 0u32;
        loop {
            let mut status = 0;
            // SAFETY: waiting for our own child; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == self.pid {
                if libc::WIFSTOPPED(status) {
                    let sig = libc::WSTOPSIG(status);
                    return Ok(if sig == libc::SIGTRAP {
                        Stop::Trap
                    } else {
                        Stop::Signal(sig)
                    });
                }
                return Err(io::Error::other(format!(
                    "child exited or was killed (status {status:#x})"
                )));
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if Instant::now() > deadline {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(self.pid, libc::SIGSTOP) };
                let mut status = 0;
                // SAFETY: as above.
                unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
                return Ok(Stop::Timeout);
            }
            spins += 1;
            if spins > 64 {
                std::thread::sleep(Duration::from_micros(20));
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child process.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, libc::__WALL);
        }
    }
}
