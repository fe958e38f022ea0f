//! The ptrace layer against real processes: spawn, attach, breakpoints through
//! `/proc/PID/mem`, fork/clone following, and injected system calls.

mod common;
use common::program;
use std::ffi::OsStr;

use platform_linux::attach;
use platform_linux::maps::{mappings_of_file, module_span, read_maps};
use platform_linux::mem::ProcMem;
use platform_linux::remote::{find_slot_near, inject_at_ip, Injector, REACH};
use platform_linux::resolve::Resolver;
use platform_linux::sys::{self, Event, Options, Pid, SysError, WaitStatus};

fn spawn(prog: &std::path::Path, args: &[&str]) -> Pid {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    sys::spawn_traced(prog.as_os_str(), &args, Options::SPAWNED, None).unwrap()
}

/// Continues `pid` until it exits, passing signals through; returns the exit code.
fn run_to_exit(pid: Pid) -> i32 {
    sys::cont(pid, 0).unwrap();
    loop {
        match sys::wait(Some(pid)).unwrap() {
            WaitStatus::Exited(_, code) => return code,
            WaitStatus::Signaled(_, sig, _) => panic!("killed by signal {sig}"),
            WaitStatus::Stopped(_, sig) => sys::cont(pid, sig).unwrap(),
            _ => sys::cont(pid, 0).unwrap(),
        }
    }
}

fn kill_and_reap(pid: Pid) {
    let _ = sys::kill(pid, libc::SIGKILL);
    loop {
        match sys::wait(Some(pid)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
            Ok(_) => {
                let _ = sys::cont(pid, 0);
            }
        }
    }
}

#[test]
fn spawn_stops_at_exec_and_exit_status_comes_through() {
    let pid = spawn(&program("hits"), &["3", "7"]);
    let regs = sys::get_regs(pid).unwrap();
    assert_ne!(regs.rip, 0);
    assert_eq!(run_to_exit(pid), 7);
}

#[test]
fn spawning_a_missing_program_names_the_cause() {
    let e =
        sys::spawn_traced(OsStr::new("/no/such/prog"), &[], Options::SPAWNED, None).unwrap_err();
    assert!(matches!(e, SysError::Spawn { .. }), "{e}");
    assert!(e.to_string().contains("No such file"), "{e}");
    let e = sys::spawn_traced(OsStr::new("/etc/passwd"), &[], Options::SPAWNED, None).unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
}

#[test]
fn int3_stops_are_sigtraps_from_the_kernel() {
    let pid = spawn(&program("int3-loop"), &["3"]);
    sys::cont(pid, 0).unwrap();
    let mut traps = 0;
    loop {
        match sys::wait(Some(pid)).unwrap() {
            WaitStatus::Stopped(_, libc::SIGTRAP) => {
                let info = sys::sig_info(pid).unwrap();
                assert_eq!(info.code, libc::SI_KERNEL);
                traps += 1;
                sys::cont(pid, 0).unwrap();
            }
            WaitStatus::Exited(_, code) => {
                assert_eq!(code, 0);
                break;
            }
            _ => sys::cont(pid, 0).unwrap(),
        }
    }
    assert_eq!(traps, 3);
}

/// A breakpoint written into read-only text through /proc/PID/mem, hit N times, stepped
/// over each time; the program's result is unchanged.
#[test]
fn breakpoint_through_proc_mem_counts_every_call() {
    for prog in ["hits", "hits-nopie", "hits-stripped"] {
        let path = program(prog);
        let pid = spawn(&path, &["5", "0"]);
        let mut resolver = Resolver::new(Some(pid));
        let spec = format!("{}:probe_target", path.display());
        let probe = resolver.resolve_text(&spec).unwrap().remove(0);
        let maps = read_maps(pid).unwrap();
        let addr = mappings_of_file(&maps, &probe.file)
            .iter()
            .find_map(|m| m.addr_of_offset(probe.file_offset))
            .unwrap();
        let mem = ProcMem::open(pid).unwrap();
        let mut orig = [0u8; 1];
        mem.read(addr, &mut orig).unwrap();
        mem.write(addr, &[0xcc]).unwrap();
        let mut hits = 0;
        sys::cont(pid, 0).unwrap();
        let code = loop {
            match sys::wait(Some(pid)).unwrap() {
                WaitStatus::Stopped(_, libc::SIGTRAP) => {
                    let mut regs = sys::get_regs(pid).unwrap();
                    assert_eq!(regs.rip, addr + 1, "{prog}");
                    hits += 1;
                    // Step the original instruction in place, then re-arm.
                    mem.write(addr, &orig).unwrap();
                    regs.rip = addr;
                    sys::set_regs(pid, &regs).unwrap();
                    sys::single_step(pid, 0).unwrap();
                    assert!(matches!(
                        sys::wait(Some(pid)).unwrap(),
                        WaitStatus::Stopped(_, libc::SIGTRAP)
                    ));
                    mem.write(addr, &[0xcc]).unwrap();
                    sys::cont(pid, 0).unwrap();
                }
                WaitStatus::Exited(_, code) => break code,
                WaitStatus::Stopped(_, sig) => sys::cont(pid, sig).unwrap(),
                _ => sys::cont(pid, 0).unwrap(),
            }
        };
        assert_eq!((prog, hits, code), (prog, 5, 0));
    }
}

#[test]
fn seize_interrupt_and_detach_a_running_process() {
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let pid = Pid(child.id() as i32);
    // We may attach while `sleep` is still in execve: attach copes with its exec stop.
    let threads = attach::attach_process(pid, Options::ATTACHED).unwrap();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].tid, pid);
    assert_eq!(sys::threads(pid).unwrap(), vec![pid]);
    let regs = sys::get_regs(pid).unwrap();
    assert_ne!(regs.rip, 0);
    attach::detach_all(&threads).unwrap();
    // Detached: still alive and ours to kill.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn fork_and_clone_are_followed() {
    let pid = spawn(&program("forker"), &[]);
    sys::cont(pid, 0).unwrap();
    let mut clones = 0;
    let mut forked = None;
    let mut alive = 1;
    let mut parent_code = None;
    while alive > 0 {
        let st = sys::wait(None).unwrap();
        match st {
            WaitStatus::Event(p, _, Event::Clone) => {
                clones += 1;
                assert_eq!(p, pid);
                alive += 1;
                sys::cont(p, 0).unwrap();
            }
            WaitStatus::Event(p, _, Event::Fork) => {
                forked = Some(Pid(sys::event_msg(p).unwrap() as i32));
                alive += 1;
                sys::cont(p, 0).unwrap();
            }
            WaitStatus::Exited(p, code) => {
                alive -= 1;
                if p == pid {
                    parent_code = Some(code);
                }
            }
            WaitStatus::Signaled(..) => alive -= 1,
            WaitStatus::Stopped(p, sig) => sys::cont(p, sig).unwrap(),
            other => sys::cont(other.pid().unwrap(), 0).unwrap(),
        }
    }
    assert_eq!(clones, 1);
    assert!(forked.is_some());
    assert_eq!(parent_code, Some(13));
}

#[test]
fn remote_mmap_near_the_executable_and_back() {
    let pid = spawn(OsStr::new("/bin/sleep").as_ref(), &["5"]);
    let mem = ProcMem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let exe = std::fs::canonicalize(format!("/proc/{pid}/exe")).unwrap();
    let module = module_span(&mappings_of_file(&maps, &exe)).unwrap();
    let before = sys::get_regs(pid).unwrap();
    let mut text = [0u8; 16];
    mem.read(before.rip, &mut text).unwrap();

    let inj = Injector::new(&mem, &maps).unwrap();
    let len = 4096;
    let at = inj
        .map_near(pid, module.clone(), len, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    assert!(at + len - module.start <= REACH && module.end - at <= REACH);
    let after = read_maps(pid).unwrap();
    let slot = after
        .iter()
        .find(|m| m.range.start == at)
        .expect("slot mapped");
    assert_eq!(slot.range.end, at + len);
    assert!(slot.perms.exec && !slot.perms.write);
    // The slot is readable through /proc/PID/mem and writable even though it is r-x.
    mem.write(at, &[0xcc, 0x90]).unwrap();
    let mut b = [0u8; 2];
    mem.read(at, &mut b).unwrap();
    assert_eq!(b, [0xcc, 0x90]);
    inj.munmap(pid, at, len).unwrap();
    assert!(!read_maps(pid).unwrap().iter().any(|m| m.range.start == at));

    let regs = sys::get_regs(pid).unwrap();
    assert_eq!(format!("{before:?}"), format!("{regs:?}"));
    let mut text2 = [0u8; 16];
    mem.read(before.rip, &mut text2).unwrap();
    assert_eq!(text, text2);
    kill_and_reap(pid);
}

#[test]
fn injection_into_a_sleeping_thread_restarts_its_sleep() {
    let pid = spawn(OsStr::new("/bin/sleep").as_ref(), &["0.3"]);
    sys::cont(pid, 0).unwrap();
    std::thread::sleep(core::time::Duration::from_millis(100));
    sys::interrupt(pid).unwrap();
    assert!(matches!(
        sys::wait(Some(pid)).unwrap(),
        WaitStatus::Event(_, _, Event::Stop)
    ));
    let before = sys::get_regs(pid).unwrap();
    let mem = ProcMem::open(pid).unwrap();
    let inj = Injector::new(&mem, &read_maps(pid).unwrap()).unwrap();
    let tgid = inj.syscall(pid, libc::SYS_getpid, &[]).unwrap();
    assert_eq!(tgid, i64::from(pid.0));
    // A failing call reports -errno.
    let r = inj.syscall(pid, libc::SYS_close, &[99_999]).unwrap();
    assert_eq!(r, -i64::from(libc::EBADF));
    assert_eq!(
        format!("{before:?}"),
        format!("{:?}", sys::get_regs(pid).unwrap())
    );
    let started = std::time::Instant::now();
    assert_eq!(run_to_exit(pid), 0);
    // It slept the rest of its time rather than returning early.
    assert!(started.elapsed() >= core::time::Duration::from_millis(100));
}

#[test]
fn injection_by_patching_the_current_instruction() {
    let pid = spawn(&program("hits"), &["1"]);
    let mem = ProcMem::open(pid).unwrap();
    let before = sys::get_regs(pid).unwrap();
    let mut text = [0u8; 4];
    mem.read(before.rip, &mut text).unwrap();
    let r = inject_at_ip(&mem, pid, libc::SYS_getpid, &[]).unwrap();
    assert_eq!(r, i64::from(pid.0));
    let mut text2 = [0u8; 4];
    mem.read(before.rip, &mut text2).unwrap();
    assert_eq!(text, text2);
    assert_eq!(
        format!("{before:?}"),
        format!("{:?}", sys::get_regs(pid).unwrap())
    );
    assert_eq!(run_to_exit(pid), 0);
}

#[test]
fn slot_placement_is_near_libc_in_a_real_process() {
    let pid = spawn(&program("hits"), &["1"]);
    // Run to the first breakpoint-free point where libc is mapped: main's first call.
    let mut resolver = Resolver::new(Some(pid));
    let path = program("hits");
    let probe = resolver
        .resolve_text(&format!("{}:probe_target", path.display()))
        .unwrap()
        .remove(0);
    let maps = read_maps(pid).unwrap();
    let addr = mappings_of_file(&maps, &probe.file)
        .iter()
        .find_map(|m| m.addr_of_offset(probe.file_offset))
        .unwrap();
    let mem = ProcMem::open(pid).unwrap();
    mem.write(addr, &[0xcc]).unwrap();
    sys::cont(pid, 0).unwrap();
    assert!(matches!(
        sys::wait(Some(pid)).unwrap(),
        WaitStatus::Stopped(_, libc::SIGTRAP)
    ));
    let maps = read_maps(pid).unwrap();
    let libc_maps: Vec<_> = maps
        .iter()
        .filter(|m| m.file_name().starts_with("libc.so"))
        .collect();
    let libc = module_span(&libc_maps).unwrap();
    let at = find_slot_near(&maps, libc.clone(), 4096).unwrap();
    assert!(at + 4096 <= libc.start || at >= libc.end);
    let inj = Injector::new(&mem, &maps).unwrap();
    let got = inj
        .map_near(pid, libc.clone(), 4096, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    assert!(got.abs_diff(libc.start) < REACH);
    kill_and_reap(pid);
}

#[test]
fn attach_stops_every_thread_and_detach_leaves_them_running() {
    let mut child = std::process::Command::new(program("threads"))
        .arg("5")
        .spawn()
        .unwrap();
    let pid = Pid(child.id() as i32);
    // Let it start its threads.
    for _ in 0..100 {
        if sys::threads(pid).unwrap().len() == 4 {
            break;
        }
        std::thread::sleep(core::time::Duration::from_millis(5));
    }
    let threads = attach::attach_process(pid, Options::ATTACHED).unwrap();
    assert_eq!(threads.len(), 4, "{threads:?}");
    assert_eq!(threads[0].tid, pid);
    for t in &threads {
        // Every thread is in a ptrace-stop: its registers can be read.
        sys::get_regs(t.tid).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", t.tid)).unwrap();
        assert!(status.contains("(tracing stop)"), "{status}");
    }
    attach::detach_all(&threads).unwrap();
    std::thread::sleep(core::time::Duration::from_millis(20));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn spawned_programs_get_default_signal_dispositions() {
    // The Rust runtime ignores SIGPIPE; the traced program must not inherit that.
    let pid = spawn(
        OsStr::new("/bin/sh").as_ref(),
        &["-c", "kill -PIPE $$; exit 0"],
    );
    sys::cont(pid, 0).unwrap();
    let end = loop {
        match sys::wait(Some(pid)).unwrap() {
            WaitStatus::Stopped(_, sig) => sys::cont(pid, sig).unwrap(),
            st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break st,
            _ => sys::cont(pid, 0).unwrap(),
        }
    };
    assert_eq!(end, WaitStatus::Signaled(pid, libc::SIGPIPE, false));
}

#[test]
fn a_forked_child_inherits_the_slot_page_at_the_same_address() {
    let pid = spawn(&program("forker"), &[]);
    let mem = ProcMem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let exe = std::fs::canonicalize(program("forker")).unwrap();
    let module = module_span(&mappings_of_file(&maps, &exe)).unwrap();
    let inj = Injector::new(&mem, &maps).unwrap();
    let slot = inj
        .map_near(pid, module, 4096, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    mem.write(slot, b"slot").unwrap();
    sys::cont(pid, 0).unwrap();
    let mut checked = false;
    let mut alive = 1;
    while alive > 0 {
        match sys::wait(None).unwrap() {
            WaitStatus::Event(p, _, Event::Fork) => {
                let child = Pid(sys::event_msg(p).unwrap() as i32);
                alive += 1;
                let cmaps = read_maps(child).unwrap();
                let m = cmaps
                    .iter()
                    .find(|m| m.range.start == slot)
                    .expect("slot in child");
                assert!(m.perms.exec);
                let mut b = [0u8; 4];
                ProcMem::open(child).unwrap().read(slot, &mut b).unwrap();
                assert_eq!(&b, b"slot");
                checked = true;
                sys::cont(p, 0).unwrap();
            }
            WaitStatus::Event(p, _, Event::Clone) => {
                alive += 1;
                sys::cont(p, 0).unwrap();
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => alive -= 1,
            WaitStatus::Stopped(p, sig) => sys::cont(p, sig).unwrap(),
            other => sys::cont(other.pid().unwrap(), 0).unwrap(),
        }
    }
    assert!(checked);
}
