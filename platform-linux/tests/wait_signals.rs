//! The tracer's blocking wait and the signal state it borrows. Its own binary: SIGCHLD's
//! disposition is the whole process's, and other tests waiting beside this one would
//! change it while it looks.

use std::ffi::OsStr;

use platform_linux::sys::{self, Options, WaitStatus};

/// A blocking wait leaves the waiting thread's signal mask and SIGCHLD's disposition as they
/// were: a program started afterwards (`std::process::Command` does not reset the mask)
/// must not inherit SIGCHLD blocked (gdb hangs then), and SIGCHLD must not run a handler at
/// every later tracee stop.
#[test]
fn a_blocking_wait_leaves_the_signal_mask_and_sigchld_as_they_were() {
    let args = [OsStr::new("0.2")];
    let pid = sys::spawn_traced(OsStr::new("/bin/sleep"), &args, Options::SPAWNED, None).unwrap();
    sys::cont(pid, 0).unwrap();
    // Blocks: sleep runs for a while before it exits.
    loop {
        match sys::wait(Some(pid)).unwrap() {
            WaitStatus::Exited(p, 0) => break assert_eq!(p, pid),
            WaitStatus::Exited(_, c) => panic!("sleep exited {c}"),
            _ => sys::cont(pid, 0).unwrap(),
        }
    }
    // SAFETY: all-zero sigset_t/sigaction are valid to be filled in by the calls below.
    let (mut mask, mut act): (libc::sigset_t, libc::sigaction) =
        unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
    // SAFETY: querying only (null new values).
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut mask);
        libc::sigaction(libc::SIGCHLD, core::ptr::null(), &mut act);
    }
    // SAFETY: mask was filled in by pthread_sigmask.
    assert_eq!(unsafe { libc::sigismember(&mask, libc::SIGCHLD) }, 0);
    assert_eq!(act.sa_sigaction, libc::SIG_DFL);
    let out = std::process::Command::new("grep")
        .args(["SigBlk", "/proc/self/status"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SigBlk:\t0000000000000000"
    );
}
