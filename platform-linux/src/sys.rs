//! The system calls of the tracer: ptrace, wait, signals, CPU affinity and the fork/exec of
//! a traced child, each behind a safe wrapper. The only file of this crate that calls `libc`
//! unsafely.
//!
//! The ptrace requests nix covers go through [`nix::sys::ptrace`] (`PTRACE_SEIZE`,
//! `SETOPTIONS`, `INTERRUPT`, `GETREGS`, `SETREGS`, `POKEUSER`, `GETEVENTMSG`, `GETSIGINFO`,
//! `SETSIGINFO`), and so do `sched_getaffinity`/`sched_setaffinity`/`sched_getcpu`
//! ([`nix::sched`]), `gettid` and the thread's CPU clock. What is still written here by hand,
//! and why:
//!
//! - the restarting requests (`PTRACE_CONT`, `SINGLESTEP`, `DETACH`), `kill` and `tgkill`:
//!   a tracer passes on whatever signal a tracee was stopped with, real-time ones included,
//!   and nix's `Signal` names only the classic signals (nix wraps neither `PTRACE_LISTEN` nor
//!   `tgkill`);
//! - `waitpid`: nix's `WaitStatus` decodes a stop by a real-time signal as an error, after
//!   the kernel has already handed the stop over, so it would be lost;
//! - `PTRACE_PEEKSIGINFO`, which nix names but does not wrap;
//! - the stop-signal handlers and the blocking wait's signal mask: they cover the real-time
//!   signals too, which nix's `SigAction`/`SigSet` cannot name;
//! - [`spawn_traced`]: between `fork` and `execve` the child stops itself for the seize and
//!   may use only async-signal-safe calls on memory prepared before the fork;
//!   `std::process::Command` waits for the exec, which a stopped child never reaches;
//! - [`fork_guardian`]'s signal forwarding (real-time signals again) and its
//!   `PR_SET_PDEATHSIG`, `flock` and [`ZeroedMap`]'s `mmap`, which the nix features this crate
//!   takes do not cover (each a single call).
//!
//! Every wrapper returns a [`SysError`] whose text names the cause and, where there is one,
//! the fix (a refused attach explains Yama's `ptrace_scope`, ownership and `CAP_SYS_PTRACE`).
//!
//! Ptrace requests must come from the thread that attached the tracee: keep one tracer
//! thread per traced process tree.

use core::fmt;
use core::mem::MaybeUninit;
use core::ptr;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched;
use nix::sys::ptrace;

/// A Linux process or thread id (a tid is a pid for every call here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub i32);

impl Pid {
    /// The same id as nix spells it.
    fn nix(self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `errno` value, printed the way `strerror` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Why a system call on a tracee failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SysError {
    /// The kernel refused to let us trace the process.
    #[error(
        "not permitted to trace process {pid} ({op}): {}",
        permission_hint(*pid, *yama_scope, *tracer)
    )]
    NotPermitted {
        /// The ptrace request.
        op: &'static str,
        /// The process we tried to trace.
        pid: Pid,
        /// `/proc/sys/kernel/yama/ptrace_scope`, if Yama is enabled.
        yama_scope: Option<u8>,
        /// The pid of the tracer already attached to `pid`, if any.
        tracer: Option<i32>,
    },
    /// The process or thread does not exist, or it is not in a ptrace-stop for us.
    #[error(
        "{op} on {pid}: no such process, or it is not stopped under our trace \
         (it exited, or it is running: stop it first)"
    )]
    NoSuchProcess {
        /// The request.
        op: &'static str,
        /// The process or thread.
        pid: Pid,
    },
    /// Any other failure of a request on a process.
    #[error("{op} on {pid} failed: {errno}")]
    Failed {
        /// The request.
        op: &'static str,
        /// The process or thread (0 where none applies).
        pid: Pid,
        /// The kernel's reason.
        errno: Errno,
    },
    /// The command to trace could not be started.
    #[error("cannot run `{program}`: {errno}{}", spawn_hint(*errno))]
    Spawn {
        /// The program, as given.
        program: String,
        /// Why `fork` or `execve` failed.
        errno: Errno,
    },
    /// A wait was cut short by SIGINT, SIGTERM or SIGHUP (see [`install_stop_handlers`]).
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// A program name or argument holds a NUL byte.
    #[error("argument `{0}` contains a NUL byte")]
    NulInArgument(String),
}

fn spawn_hint(errno: Errno) -> &'static str {
    match errno.0 {
        libc::ENOENT => " (check the path, or that it is on PATH)",
        libc::EACCES => " (is it executable? chmod +x, and not on a noexec mount)",
        libc::ENOEXEC => " (not an executable this system can run)",
        _ => "",
    }
}

fn permission_hint(pid: Pid, scope: Option<u8>, tracer: Option<i32>) -> String {
    if let Some(t) = tracer {
        return format!(
            "it is already traced by process {t} (a debugger or another tracer); \
             detach that one first"
        );
    }
    let mut s = String::from("the kernel refused ptrace. ");
    match scope {
        Some(0) | None => {}
        Some(1) => s.push_str(
            "Yama's /proc/sys/kernel/yama/ptrace_scope is 1: only a parent may trace its \
             children. Start the program under `probe ... -- CMD`, or run as root / with \
             CAP_SYS_PTRACE, or `echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`. ",
        ),
        Some(2) => s.push_str(
            "Yama's /proc/sys/kernel/yama/ptrace_scope is 2: only CAP_SYS_PTRACE may trace. \
             Run as root or grant CAP_SYS_PTRACE. ",
        ),
        Some(n) => s.push_str(&format!(
            "Yama's /proc/sys/kernel/yama/ptrace_scope is {n}: ptrace is disabled until \
             reboot. "
        )),
    }
    s.push_str(&format!(
        "Process {pid} must belong to your user (or you need CAP_SYS_PTRACE), must not be \
         setuid, and in a container the seccomp profile must allow ptrace \
         (docker: --cap-add=SYS_PTRACE)."
    ));
    s
}

fn read_yama_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn read_tracer(pid: Pid) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("TracerPid:"))?;
    let t: i32 = line["TracerPid:".len()..].trim().parse().ok()?;
    (t != 0).then_some(t)
}

fn ptrace_error(op: &'static str, pid: Pid, errno: Errno) -> SysError {
    match errno.0 {
        libc::ESRCH => SysError::NoSuchProcess { op, pid },
        libc::EPERM if op == "PTRACE_SEIZE" || op == "PTRACE_ATTACH" => SysError::NotPermitted {
            op,
            pid,
            yama_scope: read_yama_scope(),
            tracer: read_tracer(pid),
        },
        _ => SysError::Failed { op, pid, errno },
    }
}

/// The registers of a stopped thread, exactly as `PTRACE_GETREGS` hands them.
pub type Regs = libc::user_regs_struct;

/// The zeroed register set, a starting point for tests and builders.
pub fn zeroed_regs() -> Regs {
    // SAFETY: `user_regs_struct` is a plain struct of integers: all-zero is a valid value.
    unsafe { MaybeUninit::<Regs>::zeroed().assume_init() }
}

/// What a traced process asks to follow, for [`seize`] and [`set_options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// Follow `clone` (threads and clone()d processes).
    pub clone: bool,
    /// Follow `fork`.
    pub fork: bool,
    /// Follow `vfork`.
    pub vfork: bool,
    /// Stop at `execve`.
    pub exec: bool,
    /// Stop at exit, while the task can still be inspected.
    pub exit: bool,
    /// Kill the tracees if the tracer dies (for spawned commands, not attached ones).
    pub exit_kill: bool,
}

impl Options {
    /// Follow everything; kill the tracees if we die. For commands we start ourselves.
    pub const SPAWNED: Options = Options {
        clone: true,
        fork: true,
        vfork: true,
        exec: true,
        exit: true,
        exit_kill: true,
    };
    /// Follow everything, and let the tracees live on if we die. For `-p PID`.
    pub const ATTACHED: Options = Options {
        exit_kill: false,
        ..Options::SPAWNED
    };

    fn flags(self) -> ptrace::Options {
        let mut b = ptrace::Options::empty();
        b.set(ptrace::Options::PTRACE_O_TRACECLONE, self.clone);
        b.set(ptrace::Options::PTRACE_O_TRACEFORK, self.fork);
        b.set(ptrace::Options::PTRACE_O_TRACEVFORK, self.vfork);
        b.set(ptrace::Options::PTRACE_O_TRACEEXEC, self.exec);
        b.set(ptrace::Options::PTRACE_O_TRACEEXIT, self.exit);
        b.set(ptrace::Options::PTRACE_O_EXITKILL, self.exit_kill);
        b
    }
}

/// A ptrace event reported in a stop (`status >> 16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A new thread or `clone`d process; [`event_msg`] gives its id.
    Clone,
    /// A `fork`; [`event_msg`] gives the child's pid.
    Fork,
    /// A `vfork`; [`event_msg`] gives the child's pid.
    VFork,
    /// A `vfork`ed child released its parent.
    VForkDone,
    /// A successful `execve`; [`event_msg`] gives the former thread id.
    Exec,
    /// The task is about to exit; [`event_msg`] gives the wait status.
    Exit,
    /// A group-stop or a [`interrupt`] stop of a seized task.
    Stop,
    /// An event this crate does not name.
    Other(i32),
}

impl Event {
    fn from_raw(e: i32) -> Self {
        match e {
            libc::PTRACE_EVENT_CLONE => Event::Clone,
            libc::PTRACE_EVENT_FORK => Event::Fork,
            libc::PTRACE_EVENT_VFORK => Event::VFork,
            libc::PTRACE_EVENT_VFORK_DONE => Event::VForkDone,
            libc::PTRACE_EVENT_EXEC => Event::Exec,
            libc::PTRACE_EVENT_EXIT => Event::Exit,
            libc::PTRACE_EVENT_STOP => Event::Stop,
            other => Event::Other(other),
        }
    }
}

/// A decoded `waitpid` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitStatus {
    /// The task exited with this code.
    Exited(Pid, i32),
    /// The task was killed by this signal (`true`: it dumped core).
    Signaled(Pid, i32, bool),
    /// A signal-delivery-stop: the task is about to receive this signal (a breakpoint or a
    /// single-step shows as `SIGTRAP`).
    Stopped(Pid, i32),
    /// A ptrace event stop, with the stop's signal.
    Event(Pid, i32, Event),
    /// A syscall-stop (only with `PTRACE_O_TRACESYSGOOD`, never set here).
    Syscall(Pid),
    /// A stopped child we do not trace yet (before [`seize`]).
    Continued(Pid),
    /// `WNOHANG` and nothing to report.
    StillAlive,
}

impl WaitStatus {
    /// Decodes the `status` word returned by `waitpid` for `pid`.
    pub fn from_raw(pid: Pid, status: i32) -> Self {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(pid, libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(pid, libc::WTERMSIG(status), libc::WCOREDUMP(status))
        } else if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            if event != 0 {
                WaitStatus::Event(pid, sig, Event::from_raw(event))
            } else if sig == libc::SIGTRAP | 0x80 {
                WaitStatus::Syscall(pid)
            } else {
                WaitStatus::Stopped(pid, sig)
            }
        } else {
            WaitStatus::Continued(pid)
        }
    }

    /// The task this status is about, if any.
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            WaitStatus::Exited(p, _)
            | WaitStatus::Signaled(p, _, _)
            | WaitStatus::Stopped(p, _)
            | WaitStatus::Event(p, _, _)
            | WaitStatus::Syscall(p)
            | WaitStatus::Continued(p) => Some(p),
            WaitStatus::StillAlive => None,
        }
    }
}

fn check(op: &'static str, pid: Pid, ret: libc::c_long) -> Result<libc::c_long, SysError> {
    if ret == -1 {
        Err(ptrace_error(op, pid, Errno::last()))
    } else {
        Ok(ret)
    }
}

/// A nix result as ours: the request's name and the tracee go into the error.
fn nix_result<T>(op: &'static str, pid: Pid, r: nix::Result<T>) -> Result<T, SysError> {
    r.map_err(|e| ptrace_error(op, pid, Errno(e as i32)))
}

/// `PTRACE_SEIZE`: attach to `pid` (one thread) without stopping it.
pub fn seize(pid: Pid, options: Options) -> Result<(), SysError> {
    nix_result(
        "PTRACE_SEIZE",
        pid,
        ptrace::seize(pid.nix(), options.flags()),
    )
}

/// `PTRACE_SETOPTIONS` on a stopped tracee.
pub fn set_options(pid: Pid, options: Options) -> Result<(), SysError> {
    nix_result(
        "PTRACE_SETOPTIONS",
        pid,
        ptrace::setoptions(pid.nix(), options.flags()),
    )
}

/// `PTRACE_INTERRUPT`: stop a seized, running thread (it reports [`Event::Stop`]).
pub fn interrupt(pid: Pid) -> Result<(), SysError> {
    nix_result("PTRACE_INTERRUPT", pid, ptrace::interrupt(pid.nix()))
}

fn restart(req: libc::c_uint, op: &'static str, pid: Pid, sig: i32) -> Result<(), SysError> {
    // SAFETY: restarting requests take no pointer: addr is ignored, data is a signal number.
    let r = unsafe { libc::ptrace(req, pid.0, 0usize, sig as libc::c_long) };
    check(op, pid, r).map(drop)
}

/// `PTRACE_CONT`, delivering `sig` (0 for none).
pub fn cont(pid: Pid, sig: i32) -> Result<(), SysError> {
    restart(libc::PTRACE_CONT, "PTRACE_CONT", pid, sig)
}

/// `PTRACE_SINGLESTEP`, delivering `sig` (0 for none).
pub fn single_step(pid: Pid, sig: i32) -> Result<(), SysError> {
    restart(libc::PTRACE_SINGLESTEP, "PTRACE_SINGLESTEP", pid, sig)
}

/// `PTRACE_LISTEN`: leave a seized task in its group-stop but let it report new events.
pub fn listen(pid: Pid) -> Result<(), SysError> {
    restart(libc::PTRACE_LISTEN, "PTRACE_LISTEN", pid, 0)
}

/// `PTRACE_DETACH`, delivering `sig` (0 for none).
pub fn detach(pid: Pid, sig: i32) -> Result<(), SysError> {
    restart(libc::PTRACE_DETACH, "PTRACE_DETACH", pid, sig)
}

/// `PTRACE_GETREGS`.
pub fn get_regs(pid: Pid) -> Result<Regs, SysError> {
    nix_result("PTRACE_GETREGS", pid, ptrace::getregs(pid.nix()))
}

/// `PTRACE_SETREGS`.
pub fn set_regs(pid: Pid, regs: &Regs) -> Result<(), SysError> {
    nix_result("PTRACE_SETREGS", pid, ptrace::setregs(pid.nix(), *regs))
}

/// `PTRACE_POKEUSER` of one register: `index` is the register's position in
/// `user_regs_struct` (rip is 16). Cheaper than [`set_regs`] when one or two registers
/// changed.
pub fn poke_reg(pid: Pid, index: usize, value: u64) -> Result<(), SysError> {
    if index >= core::mem::size_of::<Regs>() / 8 {
        return Err(SysError::Failed {
            op: "PTRACE_POKEUSER",
            pid,
            errno: Errno(libc::EINVAL),
        });
    }
    // The address is an offset into `struct user` (checked above to lie in its register
    // block), not a pointer.
    let offset = ptr::without_provenance_mut(index * 8);
    nix_result(
        "PTRACE_POKEUSER",
        pid,
        ptrace::write_user(pid.nix(), offset, value as libc::c_long),
    )
}

/// `PTRACE_GETEVENTMSG`: the new pid of a clone/fork/vfork, the former tid of an exec,
/// or the exit status of an exit event.
pub fn event_msg(pid: Pid) -> Result<u64, SysError> {
    // The kernel's `unsigned long`, which nix hands over as a `long`.
    nix_result("PTRACE_GETEVENTMSG", pid, ptrace::getevent(pid.nix())).map(|m| m as u64)
}

/// The parts of a stop's `siginfo_t` a tracer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SigInfo {
    /// The signal.
    pub signo: i32,
    /// `si_code`: `SI_KERNEL` (0x80) for an `int3`, `TRAP_TRACE` (2) for a single-step,
    /// `SI_USER`/`SI_TKILL` for a signal sent by a process.
    pub code: i32,
    /// The sender's pid for signals sent by a process (`si_pid`), else 0.
    pub sender: i32,
}

/// `PTRACE_GETSIGINFO`, decoded.
pub fn sig_info(pid: Pid) -> Result<SigInfo, SysError> {
    let info = sig_info_raw(pid)?.0;
    let sender = if info.si_code <= 0 {
        // SAFETY: si_code <= 0 means a user-sent signal, whose union member is `_kill`.
        unsafe { info.si_pid() }
    } else {
        0
    };
    Ok(SigInfo {
        signo: info.si_signo,
        code: info.si_code,
        sender,
    })
}

/// A whole `siginfo_t`, kept to deliver a signal later exactly as it arrived
/// ([`set_sig_info`] before the restart that injects it).
#[derive(Clone, Copy)]
pub struct RawSigInfo(libc::siginfo_t);

impl RawSigInfo {
    /// The signal number.
    pub fn signo(&self) -> i32 {
        self.0.si_signo
    }

    /// `si_code`.
    pub fn code(&self) -> i32 {
        self.0.si_code
    }

    /// Makes this a single-step trap (`SIGTRAP`, `TRAP_TRACE`) at `addr`, as the kernel
    /// reports one: for a program that single-steps itself, the trap of an instruction we
    /// ran for it.
    pub fn set_trap_trace(&mut self, addr: u64) {
        self.0.si_signo = libc::SIGTRAP;
        self.0.si_code = 2; // TRAP_TRACE
        self.0.si_errno = 0;
        // SAFETY: siginfo_t is 128 bytes; for SIGTRAP its union holds the fault layout,
        // whose first field, `si_addr`, sits at offset 16 (after signo, errno, code and
        // padding) on x86-64: an aligned 8-byte write inside the struct.
        unsafe {
            core::ptr::addr_of_mut!(self.0)
                .cast::<u8>()
                .add(16)
                .cast::<u64>()
                .write(addr);
        }
    }
}

impl fmt::Debug for RawSigInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSigInfo")
            .field("signo", &self.0.si_signo)
            .field("code", &self.0.si_code)
            .finish_non_exhaustive()
    }
}

/// `PTRACE_GETSIGINFO`, keeping the whole structure.
pub fn sig_info_raw(pid: Pid) -> Result<RawSigInfo, SysError> {
    nix_result("PTRACE_GETSIGINFO", pid, ptrace::getsiginfo(pid.nix())).map(RawSigInfo)
}

/// Whether a `SIGTRAP` waits in the thread's own queue of pending signals
/// (`PTRACE_PEEKSIGINFO`, which reads the queue without taking anything off it). A thread that
/// took a trap (an `int3` or a single step) just as `PTRACE_INTERRUPT` reached it reports the
/// interrupt's stop first: its trap is still queued, and would kill it if it were detached now.
pub fn sigtrap_pending(pid: Pid) -> Result<bool, SysError> {
    const PEEK: usize = 16;
    let args = libc::ptrace_peeksiginfo_args {
        off: 0,
        flags: 0,
        nr: PEEK as i32,
    };
    let mut infos = [MaybeUninit::<libc::siginfo_t>::zeroed(); PEEK];
    // SAFETY: addr points to the arguments, data to room for `nr` `siginfo_t`s; the kernel
    // writes at most that many and returns how many it wrote.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKSIGINFO,
            pid.0,
            ptr::from_ref(&args),
            infos.as_mut_ptr(),
        )
    };
    let n = check("PTRACE_PEEKSIGINFO", pid, r)? as usize;
    Ok(infos[..n.min(PEEK)].iter().any(|i| {
        // SAFETY: zeroed is a valid `siginfo_t`, and the kernel wrote the first `n` whole.
        unsafe { i.assume_init_ref() }.si_signo == libc::SIGTRAP
    }))
}

/// `PTRACE_SETSIGINFO`: the `siginfo_t` of the signal the next restart delivers (restart with
/// the same signal number, or the kernel replaces it with a plain `SI_USER` one).
pub fn set_sig_info(pid: Pid, info: &RawSigInfo) -> Result<(), SysError> {
    nix_result(
        "PTRACE_SETSIGINFO",
        pid,
        ptrace::setsiginfo(pid.nix(), &info.0),
    )
}

static STOP_SIGNAL: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
/// Whether the stop signal came from the kernel (a terminal's Ctrl-C or hangup, which the
/// whole foreground process group received) rather than from `kill`.
static STOP_FROM_KERNEL: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO; reading si_code is a plain
    // load, async-signal-safe.
    let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
    // The first signal wins; a second one must not change what the first asked for.
    if STOP_SIGNAL
        .compare_exchange(
            0,
            sig,
            core::sync::atomic::Ordering::SeqCst,
            core::sync::atomic::Ordering::SeqCst,
        )
        .is_ok()
    {
        STOP_FROM_KERNEL.store(
            code == libc::SI_KERNEL,
            core::sync::atomic::Ordering::SeqCst,
        );
    }
}

/// The signals whose default action ends the tracer and that a process can catch, sent
/// asynchronously (by `kill`, a terminal, a timer or a resource limit): each must end in a
/// detach that restores the tracees, not in a death that leaves breakpoints behind. SIGPIPE
/// is left ignored (the Rust runtime's setting: a closed output is a write error, `EPIPE`);
/// faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) and SIGABRT are the tracer's own bugs, not
/// requests, and the guardian process restores the tracees if they kill it.
pub const STOP_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSTKFLT,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSYS,
    libc::SIGTRAP,
];

/// The real-time signals (default action: terminate), also stop signals.
fn realtime_signals() -> core::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// Makes every signal of [`STOP_SIGNALS`] (and the real-time ones) end blocking waits with
/// [`SysError::Interrupted`] instead of killing the tracer, so it can restore the tracees'
/// code and detach.
///
/// The handlers only record the signal (and whether the kernel sent it); [`stop_requested`]
/// and [`stop_from_terminal`] read it. They are installed without `SA_RESTART`, so a blocked
/// `waitpid` returns `EINTR`.
pub fn install_stop_handlers() -> Result<(), SysError> {
    for sig in STOP_SIGNALS.iter().copied().chain(realtime_signals()) {
        if sig == libc::SIGHUP && ignored(sig) {
            continue; // `nohup probe ...`: hangups are meant to be ignored
        }
        // SAFETY: all-zero is a valid sigaction (empty mask, no flags) that we fill in.
        let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
        act.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO;
        // SAFETY: act.sa_mask is a valid sigset_t to clear; the handler only stores to
        // atomics, which is async-signal-safe; the old action is not asked for.
        let r = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, ptr::null_mut())
        };
        if r == -1 {
            return Err(SysError::Failed {
                op: "sigaction",
                pid: Pid(0),
                errno: Errno::last(),
            });
        }
    }
    Ok(())
}

/// Whether `sig` is ignored (`SIG_IGN`, e.g. inherited from `nohup`).
fn ignored(sig: i32) -> bool {
    // SAFETY: all-zero is a valid sigaction for the kernel to fill in.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, a valid sigaction.
    let r = unsafe { libc::sigaction(sig, ptr::null(), &mut old) };
    r == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// The stop signal received since [`install_stop_handlers`], if any.
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(core::sync::atomic::Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whether the stop signal was sent by the kernel (`SI_KERNEL`: a terminal's Ctrl-C,
/// Ctrl-\ or hangup, which reached the whole foreground process group, a spawned command
/// included) rather than by a process.
pub fn stop_from_terminal() -> bool {
    STOP_FROM_KERNEL.load(core::sync::atomic::Ordering::SeqCst)
}

fn wait_raw(pid: i32, flags: i32) -> Result<WaitStatus, SysError> {
    wait_inner(pid, flags, true)
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// A blocking wait that a stop signal ends, without the race of checking the flag and then
/// blocking in `waitpid` (a signal in between would leave us blocked until the next tracee
/// event, forever for a stopped tracee): the stop signals and SIGCHLD are blocked on this
/// thread, and `ppoll` unblocks them atomically while it sleeps. SIGCHLD (sent to the tracer
/// at every tracee stop) gets a handler that does nothing, so that it wakes `ppoll`; a
/// timeout of 100 ms bounds the wait should a signal go to another thread.
///
/// The handler is there only during this wait: installed for good, it would run (a signal
/// frame and an `rt_sigreturn`, about a microsecond) at every tracee stop, a hit's
/// included, while the tracer polls with `WNOHANG`; with SIGCHLD's own disposition back
/// (by default: ignored) a stop costs no signal at all. Neither the mask nor the disposition
/// is left changed: children started later inherit the mask (`std::process::Command` does
/// not reset it, and a debugger started with SIGCHLD blocked hangs).
fn wait_blocking_interruptible(pid: i32, flags: i32) -> Result<WaitStatus, SysError> {
    // SAFETY: all-zero sigset_t values are valid to fill with sigemptyset/sigaddset.
    let mut block: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: as above; `old` is written by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: block is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        for sig in STOP_SIGNALS.iter().copied().chain(realtime_signals()) {
            libc::sigaddset(&mut block, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
    }
    // With SIGCHLD blocked, a stop from now on stays pending whatever its disposition.
    // SAFETY: all-zero is a valid sigaction we fill in; the handler does nothing.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: as above; written by sigaction.
    let mut old_act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = on_sigchld as *const () as libc::sighandler_t;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: act.sa_mask is a valid sigset_t to clear; old_act receives the action before.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGCHLD, &act, &mut old_act);
    }
    let result = loop {
        if let Some(sig) = stop_requested() {
            break Err(SysError::Interrupted(sig));
        }
        match wait_inner(pid, flags | libc::WNOHANG, false) {
            Ok(WaitStatus::StillAlive) => {}
            other => break other,
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: no fds (null, 0); ts and old are valid for the call. It returns on a
        // signal (EINTR), which is the point, or on the timeout.
        unsafe { libc::ppoll(ptr::null_mut(), 0, &ts, &old) };
    };
    // SAFETY: old_act is the action read above, old the mask; the action goes back while
    // SIGCHLD is still blocked, so a pending one meets the program's own disposition.
    unsafe {
        libc::sigaction(libc::SIGCHLD, &old_act, ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
    }
    result
}

fn wait_inner(pid: i32, flags: i32, interruptible: bool) -> Result<WaitStatus, SysError> {
    if interruptible && flags & libc::WNOHANG == 0 {
        return wait_blocking_interruptible(pid, flags);
    }
    loop {
        let mut status = 0;
        // SAFETY: status points to a writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == -1 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(SysError::Failed {
                op: "waitpid",
                pid: Pid(pid),
                errno: e,
            });
        }
        if r == 0 {
            return Ok(WaitStatus::StillAlive);
        }
        return Ok(WaitStatus::from_raw(Pid(r), status));
    }
}

/// `waitpid(pid, __WALL | __WNOTHREAD)`, blocking; `None` waits for any tracee or child
/// *of the calling thread* (other threads' tracees are theirs to reap). Returns
/// [`SysError::Interrupted`] once a stop signal arrived (see [`install_stop_handlers`]).
pub fn wait(pid: Option<Pid>) -> Result<WaitStatus, SysError> {
    wait_raw(pid.map_or(-1, |p| p.0), libc::__WALL | libc::__WNOTHREAD)
}

/// Like [`wait`], but not cut short by a stop signal: for the tracer's own clean-up after
/// one arrived (stopping every thread, restoring the text, detaching).
pub fn wait_through_stop(pid: Option<Pid>) -> Result<WaitStatus, SysError> {
    wait_inner(
        pid.map_or(-1, |p| p.0),
        libc::__WALL | libc::__WNOTHREAD,
        false,
    )
}

/// Like [`wait`] with `WNOHANG`: [`WaitStatus::StillAlive`] if nothing is pending.
pub fn try_wait(pid: Option<Pid>) -> Result<WaitStatus, SysError> {
    wait_raw(
        pid.map_or(-1, |p| p.0),
        libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG,
    )
}

/// `kill(pid, sig)`.
pub fn kill(pid: Pid, sig: i32) -> Result<(), SysError> {
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid.0, sig) } == -1 {
        return Err(ptrace_error("kill", pid, Errno::last()));
    }
    Ok(())
}

/// `tgkill(tgid, tid, sig)`: a signal to one thread.
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> Result<(), SysError> {
    // SAFETY: tgkill takes three integers and no pointers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid.0, tid.0, sig) };
    if r == -1 {
        return Err(ptrace_error("tgkill", tid, Errno::last()));
    }
    Ok(())
}

/// Which side of [`fork_guardian`] we are on.
#[derive(Debug)]
pub enum Forked {
    /// The child: it does the tracing; the write end of the journal pipe (close-on-exec).
    Tracer(std::fs::File),
    /// The parent: it forwards signals to the tracer and waits for it; the read end.
    Guardian(Pid, std::fs::File),
}

static FORWARD_TO: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO; a plain load.
    let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
    let child = FORWARD_TO.load(core::sync::atomic::Ordering::SeqCst);
    // A signal from the terminal reached the tracer too (same process group).
    if child > 0 && code != libc::SI_KERNEL {
        // SAFETY: kill is async-signal-safe and takes no pointers.
        unsafe { libc::kill(child, sig) };
    }
}

/// Splits `probe` into a guardian (the parent, the process the user sees) and the tracer (the
/// child), before any thread exists. The tracer gets `death_signal` when the guardian dies,
/// even by SIGKILL (`PR_SET_PDEATHSIG`), so that killing `probe` in any way ends in a clean
/// detach; the guardian forwards every stop signal (except the terminal's, which reached the
/// tracer directly) to the tracer.
pub fn fork_guardian(death_signal: i32) -> Result<Forked, SysError> {
    use std::os::fd::FromRawFd;
    // SAFETY: getpid takes no arguments.
    let parent = unsafe { libc::getpid() };
    let mut fds = [0; 2];
    // SAFETY: fds points to two writable ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(SysError::Failed {
            op: "pipe2",
            pid: Pid(parent),
            errno: Errno::last(),
        });
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fork takes no arguments; the caller is single-threaded (documented), so the
    // child may run ordinary code.
    let child = unsafe { libc::fork() };
    if child == -1 {
        return Err(SysError::Failed {
            op: "fork",
            pid: Pid(parent),
            errno: Errno::last(),
        });
    }
    if child == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer; getppid no arguments.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong);
            if libc::getppid() != parent {
                // The guardian died before the prctl: as if the signal had come.
                libc::raise(death_signal);
            }
        }
        drop(rd);
        return Ok(Forked::Tracer(wr));
    }
    drop(wr);
    FORWARD_TO.store(child, core::sync::atomic::Ordering::SeqCst);
    for sig in STOP_SIGNALS.iter().copied().chain(realtime_signals()) {
        if sig == libc::SIGHUP && ignored(sig) {
            continue;
        }
        // SAFETY: all-zero is a valid sigaction that we fill in.
        let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
        act.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: act.sa_mask is a valid sigset_t; the handler only loads an atomic and
        // calls kill, both async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, ptr::null_mut());
        }
    }
    Ok(Forked::Guardian(Pid(child), rd))
}

/// The calling thread's id.
pub fn gettid() -> Pid {
    Pid(nix::unistd::gettid().as_raw())
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`; zero if the clock
/// cannot be read, which Linux never refuses for the calling thread).
pub fn thread_cpu_time() -> core::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(core::time::Duration::ZERO, core::time::Duration::from)
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> Option<usize> {
    sched::sched_getcpu().ok()
}

/// The CPUs the calling thread may run on.
pub fn cpus_allowed() -> Vec<usize> {
    affinity_of(None).unwrap_or_else(|_| vec![0])
}

/// `sched_getaffinity(tid)`: the CPUs thread `tid` (`None`: the calling thread) may run on.
pub fn affinity_of(tid: Option<Pid>) -> Result<Vec<usize>, SysError> {
    let pid = tid.unwrap_or(Pid(0));
    let set = sched::sched_getaffinity(pid.nix()).map_err(|e| {
        if e == nix::errno::Errno::ESRCH {
            SysError::NoSuchProcess {
                op: "sched_getaffinity",
                pid,
            }
        } else {
            SysError::Failed {
                op: "sched_getaffinity",
                pid,
                errno: Errno(e as i32),
            }
        }
    })?;
    Ok((0..sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// `sched_setaffinity(tid, cpus)`; `None` means the calling thread. CPUs past the set's size
/// (`CPU_SETSIZE`) are left out, as before.
pub fn set_affinity(tid: Option<Pid>, cpus: &[usize]) -> Result<(), SysError> {
    let mut set = sched::CpuSet::new();
    for &c in cpus {
        // Only a CPU at or past CPU_SETSIZE fails, and it is left out.
        let _ = set.set(c);
    }
    let pid = tid.unwrap_or(Pid(0));
    sched::sched_setaffinity(pid.nix(), &set).map_err(|e| SysError::Failed {
        op: "sched_setaffinity",
        pid,
        errno: Errno(e as i32),
    })
}

/// `flock(file, LOCK_EX)`: waits until this process holds the file's exclusive lock (released
/// when the file is closed). Used to serialise the tests' builds of their programs.
pub fn lock_exclusive(file: &std::fs::File) -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock takes a file descriptor, which `file` keeps open, and no pointer.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let errno = Errno::last();
        if errno.0 != libc::EINTR {
            return Err(SysError::Failed {
                op: "flock",
                pid: Pid(0),
                errno,
            });
        }
    }
}

/// Finds `program` the way `execvp` would: as given if it holds a `/`, else on `PATH`.
pub fn find_program(program: &OsStr) -> Option<PathBuf> {
    let p = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|cand| is_executable(cand))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn cstring(s: &OsStr) -> Result<CString, SysError> {
    CString::new(s.as_bytes())
        .map_err(|_| SysError::NulInArgument(s.to_string_lossy().into_owned()))
}

/// Starts `program args...` as a seized tracee of the calling thread.
///
/// The child stops itself before `execve`, we `PTRACE_SEIZE` it with `options` and let
/// it run to its exec stop, then let it leave the `execve` call and stop again
/// ([`leave_syscall`]): the new program has not run one instruction, and the thread is in
/// an [`Event::Stop`] where its registers can be changed freely (at the exec stop itself
/// the kernel would still overwrite `rax` with `execve`'s result). A failed exec is
/// reported as [`SysError::Spawn`] with the child's `errno`.
///
/// `cpus` pins the child (and what it starts) to these CPUs before the exec, if given.
pub fn spawn_traced(
    program: &OsStr,
    args: &[&OsStr],
    options: Options,
    cpus: Option<&[usize]>,
) -> Result<Pid, SysError> {
    let shown = program.to_string_lossy().into_owned();
    let path = find_program(program).ok_or(SysError::Spawn {
        program: shown.clone(),
        errno: Errno(libc::ENOENT),
    })?;
    // Everything the child touches is built before fork: after fork only async-signal-safe
    // calls are allowed (we may be one thread of many).
    let c_path = cstring(path.as_os_str())?;
    let mut c_args = vec![cstring(program)?];
    for a in args {
        c_args.push(cstring(a)?);
    }
    let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let c_env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut envp: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
    envp.push(ptr::null());
    // SAFETY: all-zero is a valid, empty cpu_set_t (a plain bit array).
    let mut cpu_set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    if let Some(cpus) = cpus {
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: `c` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut cpu_set) };
        }
    }
    let pin = cpus.is_some();

    let mut fds = [0; 2];
    // SAFETY: fds points to two writable ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(SysError::Spawn {
            program: shown,
            errno: Errno::last(),
        });
    }
    let (rd, wr) = (fds[0], fds[1]);

    // SAFETY: fork is safe to call; the child below only makes async-signal-safe calls on
    // memory prepared before the fork, then execs or _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: child side: signal/sigemptyset/pthread_sigmask/getpid/kill/
        // sched_setaffinity/execve/write/_exit are async-signal-safe (a zeroed sigset_t is
        // a valid value) and use only pointers built before fork (argv and envp are
        // NUL-terminated arrays of NUL-terminated strings that outlive the exec).
        unsafe {
            libc::close(rd);
            if pin {
                libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &cpu_set);
            }
            // As std::process::Command does: the Rust runtime ignores SIGPIPE, and an
            // ignored disposition or a blocked mask would survive exec and change how the
            // program behaves (`probe -- yes | head` must end `yes` by SIGPIPE).
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut empty: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
            libc::kill(libc::getpid(), libc::SIGSTOP);
            libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let err = *libc::__errno_location();
            libc::write(wr, ptr::from_ref(&err).cast(), core::mem::size_of::<i32>());
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copy of the write end, a valid fd we own.
    unsafe { libc::close(wr) };
    if child == -1 {
        let errno = Errno::last();
        // SAFETY: rd is a valid fd we own.
        unsafe { libc::close(rd) };
        return Err(SysError::Spawn {
            program: shown,
            errno,
        });
    }
    let pid = Pid(child);
    let result = finish_spawn(pid, options, rd, &shown);
    // SAFETY: rd is a valid fd we own.
    unsafe { libc::close(rd) };
    if result.is_err() {
        let _ = kill(pid, libc::SIGKILL);
        let _ = wait(Some(pid));
    }
    result.map(|()| pid)
}

fn finish_spawn(pid: Pid, options: Options, rd: i32, shown: &str) -> Result<(), SysError> {
    // Wait for the child's self-inflicted SIGSTOP (it is not traced yet: WUNTRACED).
    let mut status = 0;
    loop {
        // SAFETY: status points to a writable int.
        let r = unsafe { libc::waitpid(pid.0, &mut status, libc::WUNTRACED) };
        if r == -1 && Errno::last().0 == libc::EINTR {
            continue;
        }
        if r == -1 {
            return Err(SysError::Failed {
                op: "waitpid",
                pid,
                errno: Errno::last(),
            });
        }
        break;
    }
    if !libc::WIFSTOPPED(status) {
        return Err(SysError::Spawn {
            program: shown.to_owned(),
            errno: Errno(libc::ECHILD),
        });
    }
    seize(pid, options)?;
    kill(pid, libc::SIGCONT)?;
    loop {
        match wait(Some(pid))? {
            WaitStatus::Event(_, _, Event::Exec) => return leave_syscall(pid),
            WaitStatus::Event(_, _, Event::Stop) => cont(pid, 0)?,
            WaitStatus::Stopped(_, sig) if sig == libc::SIGCONT || sig == libc::SIGSTOP => {
                cont(pid, 0)?
            }
            WaitStatus::Stopped(_, sig) => cont(pid, sig)?,
            WaitStatus::Event(..) | WaitStatus::Syscall(_) | WaitStatus::Continued(_) => {
                cont(pid, 0)?
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                let mut err = 0i32;
                // SAFETY: err is a writable int of the size passed; rd is our pipe end.
                let n = unsafe {
                    libc::read(
                        rd,
                        ptr::from_mut(&mut err).cast(),
                        core::mem::size_of::<i32>(),
                    )
                };
                let errno = if n == 4 { err } else { libc::ECHILD };
                return Err(SysError::Spawn {
                    program: shown.to_owned(),
                    errno: Errno(errno),
                });
            }
            WaitStatus::StillAlive => {}
        }
    }
}

/// Takes a thread stopped *inside* a system call (the clone, fork, vfork, exec and exit
/// event stops) out of it, to a [`Event::Stop`] just before its next user instruction.
///
/// In those stops the kernel has yet to store the call's result, so a register write
/// there loses `rax`; after this, registers can be read and written as in any stop (the
/// result is in `rax`). Signals that arrive meanwhile are passed on.
pub fn leave_syscall(tid: Pid) -> Result<(), SysError> {
    interrupt(tid)?;
    cont(tid, 0)?;
    loop {
        match wait_through_stop(Some(tid))? {
            WaitStatus::Event(_, _, Event::Stop) => return Ok(()),
            WaitStatus::Stopped(_, sig) => cont(tid, sig)?,
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                return Err(SysError::NoSuchProcess {
                    op: "leaving a system call",
                    pid: tid,
                })
            }
            _ => cont(tid, 0)?,
        }
    }
}

/// The thread ids of process `pid`, from `/proc/PID/task`.
pub fn threads(pid: Pid) -> Result<Vec<Pid>, SysError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| SysError::Failed {
        op: "reading /proc/PID/task",
        pid,
        errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let mut tids: Vec<Pid> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok().map(Pid))
        .collect();
    tids.sort();
    Ok(tids)
}

/// The fields of `/proc/PID/stat` after the command name: field 3 (the state) first. The
/// name (field 2) may hold spaces and parentheses, so they start after its last `)`. `None`
/// if there is no such process.
pub fn stat_fields(pid: Pid) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_ascii_whitespace().map(str::to_owned).collect())
}

/// The seccomp mode of process `pid` (`Seccomp:` in `/proc/PID/status`: 0 none, 1 strict,
/// 2 filter), if it can be read.
pub fn seccomp_mode(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A `T` in its own anonymous private mapping, which starts as zero bits: the kernel commits
/// a page only when it is first written, so a large, sparsely used `T` costs memory in
/// proportion to its use (the global allocator would zero an over-aligned block by writing
/// it whole). For types whose all-zero bits are a valid value only.
pub struct ZeroedMap<T> {
    ptr: ptr::NonNull<T>,
    len: usize,
}

impl<T> ZeroedMap<T> {
    /// Maps a zeroed `T`.
    ///
    /// # Safety
    /// All zero bits must be a valid `T`.
    pub unsafe fn new() -> Result<Self, SysError> {
        let len = core::mem::size_of::<T>().max(1);
        assert!(
            core::mem::align_of::<T>() <= 4096,
            "page alignment suffices"
        );
        // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel
        // picks; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(SysError::Failed {
                op: "mmap",
                pid: Pid(0),
                errno: Errno::last(),
            });
        }
        let ptr = ptr::NonNull::new(p.cast::<T>()).ok_or(SysError::Failed {
            op: "mmap",
            pid: Pid(0),
            errno: Errno(libc::ENOMEM),
        })?;
        Ok(ZeroedMap { ptr, len })
    }
}

impl<T> core::ops::Deref for ZeroedMap<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping holds a valid `T` (zero bits, valid by `new`'s contract) for as
        // long as `self` lives, and only `&self`/`&mut self` reach it.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> core::ops::DerefMut for ZeroedMap<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for ZeroedMap<T> {
    fn drop(&mut self) {
        // SAFETY: the `T` is valid and dropped once, here; then its mapping (ours, `len`
        // bytes) is unmapped with nothing referring to it.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ZeroedMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

// SAFETY: a `ZeroedMap<T>` owns its `T` as a `Box<T>` does.
unsafe impl<T: Send> Send for ZeroedMap<T> {}
// SAFETY: as above: shared access is `&T`.
unsafe impl<T: Sync> Sync for ZeroedMap<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_attach_explains_the_fix() {
        let e = SysError::NotPermitted {
            op: "PTRACE_SEIZE",
            pid: Pid(42),
            yama_scope: Some(1),
            tracer: None,
        };
        let text = e.to_string();
        assert!(
            text.contains("/proc/sys/kernel/yama/ptrace_scope is 1"),
            "{text}"
        );
        assert!(text.contains("CAP_SYS_PTRACE"), "{text}");
        let e = SysError::NotPermitted {
            op: "PTRACE_SEIZE",
            pid: Pid(42),
            yama_scope: Some(0),
            tracer: Some(7),
        };
        assert!(e.to_string().contains("already traced by process 7"), "{e}");
    }

    #[test]
    fn wait_statuses_decode() {
        let pid = Pid(5);
        assert_eq!(
            WaitStatus::from_raw(pid, 3 << 8),
            WaitStatus::Exited(pid, 3)
        );
        assert_eq!(
            WaitStatus::from_raw(pid, 9),
            WaitStatus::Signaled(pid, 9, false)
        );
        let trap = (libc::SIGTRAP << 8) | 0x7f;
        assert_eq!(
            WaitStatus::from_raw(pid, trap),
            WaitStatus::Stopped(pid, libc::SIGTRAP)
        );
        let exec = trap | (libc::PTRACE_EVENT_EXEC << 16);
        assert_eq!(
            WaitStatus::from_raw(pid, exec),
            WaitStatus::Event(pid, libc::SIGTRAP, Event::Exec)
        );
    }
}
