//! SIGTERM to the tracer ends a blocking wait with `Interrupted`, so the tracer can
//! restore and detach instead of dying. (Its own test binary: handlers are per process.)

use std::ffi::OsStr;

use platform_linux::sys::{self, Options, Pid, SysError, WaitStatus};

#[test]
fn sigterm_interrupts_a_blocking_wait() {
    sys::install_stop_handlers().unwrap();
    let pid = sys::spawn_traced(
        OsStr::new("/bin/sleep"),
        &[OsStr::new("5")],
        Options::SPAWNED,
        None,
    )
    .unwrap();
    sys::cont(pid, 0).unwrap();
    let me = sys::gettid();
    let us = Pid(std::process::id() as i32);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(core::time::Duration::from_millis(100));
        sys::tgkill(us, me, libc::SIGTERM).unwrap();
    });
    let started = std::time::Instant::now();
    let r = sys::wait(Some(pid));
    assert_eq!(r, Err(SysError::Interrupted(libc::SIGTERM)));
    assert!(started.elapsed() < core::time::Duration::from_secs(4));
    assert_eq!(sys::stop_requested(), Some(libc::SIGTERM));
    killer.join().unwrap();
    // The tracee is unharmed; end it (non-blocking waits still work).
    sys::kill(pid, libc::SIGKILL).unwrap();
    loop {
        match sys::try_wait(Some(pid)).unwrap() {
            WaitStatus::Signaled(..) | WaitStatus::Exited(..) => break,
            WaitStatus::StillAlive => std::thread::yield_now(),
            _ => {
                let _ = sys::cont(pid, 0);
            }
        }
    }
}
