//! The tracer's multi-step ptrace sequences finish when a stop signal (SIGTERM, Ctrl-C) has
//! reached the tracer: a remote system call borrows a thread's registers and single-steps
//! it, and attaching interrupts each thread and waits for its stop. Cut short, the thread
//! would be left running with borrowed registers (in the slot area, after the injected
//! `syscall`), and die once detached. Its own binary: the signal stays recorded for the
//! whole process, as it does in `probe`.

use std::ffi::OsStr;

use platform_linux::attach;
use platform_linux::maps::{mappings_of_file, module_span, read_maps};
use platform_linux::mem::ProcMem;
use platform_linux::remote::Injector;
use platform_linux::sys::{self, Options, Pid, SysError, WaitStatus};

#[test]
fn remote_syscalls_and_attach_finish_after_a_stop_signal() {
    sys::install_stop_handlers().unwrap();
    let spawned = sys::spawn_traced(
        OsStr::new("/bin/sleep"),
        &[OsStr::new("5")],
        Options::SPAWNED,
        None,
    )
    .unwrap();
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("5")
        .spawn()
        .unwrap();
    // SAFETY: raise only sends a signal to this thread; the handler only stores atomics.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    assert_eq!(sys::stop_requested(), Some(libc::SIGTERM));
    // A blocking wait for whatever comes next is cut short, as the event loop needs...
    assert!(matches!(sys::wait(None), Err(SysError::Interrupted(_))));

    // ...but a remote system call is not,
    remote_mmap_and_back(spawned);
    let _ = sys::kill(spawned, libc::SIGKILL);
    loop {
        match sys::wait_through_stop(Some(spawned)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
            Ok(_) => {
                let _ = sys::cont(spawned, 0); // its exit event stop
            }
        }
    }

    // nor is attaching (interrupt each thread, wait for its stop).
    let pid = Pid(child.id() as i32);
    let threads = attach::attach_process(pid, Options::ATTACHED).unwrap();
    assert_eq!(threads.len(), 1);
    remote_mmap_and_back(pid);
    attach::detach_all(&threads).unwrap();
    assert!(child.try_wait().unwrap().is_none(), "sleep died");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A remote `mmap` and `munmap` in stopped `pid` complete, and leave its registers as they
/// were.
fn remote_mmap_and_back(pid: Pid) {
    let before = sys::get_regs(pid).unwrap();
    let mem = ProcMem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let exe = std::fs::canonicalize(format!("/proc/{pid}/exe")).unwrap();
    let module = module_span(&mappings_of_file(&maps, &exe)).unwrap();
    let inj = Injector::new(&mem, &maps).unwrap();
    let at = inj
        .map_near(pid, module, 4096, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    inj.munmap(pid, at, 4096).unwrap();
    let after = sys::get_regs(pid).unwrap();
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
}
