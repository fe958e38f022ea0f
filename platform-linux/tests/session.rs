//! The tracer as a library ([`Session`]): how each kind of probed instruction is resumed,
//! attach / run for a while / detach with the text read back, a process killed while its
//! threads are mid-hit, and the core's bookkeeping after each.

mod common;
use core::time::Duration;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use platform_linux::sys::{self, Pid};
use platform_linux::tracer::{Outcome, Session, SessionOptions};
use probe_core::SpaceId;

fn workload() -> PathBuf {
    common::program("workload")
}

fn spawn(args: &[&str]) -> Session {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Session::spawn(workload().as_os_str(), &args, SessionOptions::default()).unwrap()
}

fn spec(func: &str) -> String {
    format!("{}:{func}", workload().display())
}

#[test]
fn each_kind_of_first_instruction_takes_its_path() {
    let mut s = spawn(&["kinds", "500"]);
    for k in ["kind_emulated", "kind_boosted", "kind_riprel", "kind_step"] {
        assert_eq!(s.add_spec(&spec(k)).unwrap().added, 1);
    }
    let o = s.run(&mut |_, _| {}).unwrap();
    assert_eq!(o, Outcome::Exited(0));
    let st = s.stats();
    // endbr64 is emulated; lea and the RIP-relative mov are boosted (one stop per hit);
    // pushq (%rip) is single-stepped (two stops).
    assert_eq!(st.emulated, 500, "{st:?}");
    // + the dynamic linker's hook (its `ret`-led body is boosted), twice.
    assert_eq!(st.boosted, 1000 + 2, "{st:?}");
    assert_eq!(st.stepped, 500, "{st:?}");
    assert_eq!(st.not_ours + st.failed + st.aborted_steps, 0, "{st:?}");
    for (name, n) in s.counts() {
        assert_eq!(n, 500, "{name}");
    }
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

/// Every executable file mapping of `pid`, compared with the file on disk.
fn text_differences(pid: u32) -> Vec<String> {
    let maps = platform_linux::maps::read_maps(Pid(pid as i32)).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut diffs = Vec::new();
    for m in maps.iter().filter(|m| m.perms.exec && m.is_file()) {
        let mut live = vec![0u8; (m.range.end - m.range.start) as usize];
        mem.read_exact_at(&mut live, m.range.start).unwrap();
        let f = std::fs::File::open(&m.path).unwrap();
        let mut disk = vec![0u8; live.len()];
        let n = f.read_at(&mut disk, m.offset).unwrap();
        for i in (0..n).filter(|&i| live[i] != disk[i]) {
            diffs.push(format!("{}+{:#x}", m.path, m.offset + i as u64));
        }
    }
    diffs
}

#[test]
fn attach_run_detach_restores_every_byte() {
    let mut child = Command::new(workload())
        .arg("spin")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = Pid(child.id() as i32);
    let mut s = Session::attach(pid, SessionOptions::default()).unwrap();
    s.add_spec(&spec("work")).unwrap();
    let r = s.add_spec("libc:*").unwrap();
    assert!(r.added > 1000, "{r:?}");
    assert!(s.core().site_count() > 1000);
    // While attached, the breakpoints are in the text.
    assert!(!text_differences(child.id()).is_empty());
    let o = s
        .run_for(Duration::from_millis(300), &mut |_, _| {})
        .unwrap();
    assert_eq!(o, None, "still running");
    assert!(s.count_of("workload:work") > 10);
    let rep = s.detach().unwrap();
    assert!(rep.threads >= 1 && rep.errors.is_empty(), "{rep:?}");
    assert_eq!(s.core().site_count(), 0);
    assert_eq!(text_differences(child.id()), Vec::<String>::new());
    // The slot area is unmapped (tests/maps.rs checks the maps); the program runs on.
    std::thread::sleep(Duration::from_millis(20));
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_process_killed_while_its_threads_are_mid_hit_leaves_the_tracer_fine() {
    let mut s = spawn(&["threads", "8", "100000000"]);
    s.add_spec(&spec("work")).unwrap();
    assert_eq!(
        s.run_for(Duration::from_millis(300), &mut |_, _| {})
            .unwrap(),
        None
    );
    let before = s.count_of("workload:work");
    assert!(before > 100);
    sys::kill(s.pid(), libc::SIGKILL).unwrap();
    let o = s.run(&mut |_, _| {}).unwrap();
    assert_eq!(o, Outcome::Signaled(libc::SIGKILL));
    assert_eq!(o.exit_code(), 137);
    assert!(s.count_of("workload:work") >= before);
    // Nothing of the dead process is left in the core.
    assert_eq!(s.core().site_count(), 0);
    assert!(!s.platform().has_space(SpaceId(s.pid().0 as u64)));
}

#[test]
fn probes_on_a_library_are_pending_until_it_is_mapped() {
    let mut s = spawn(&["calls", "3"]);
    // At the exec stop only the executable and the dynamic linker are mapped: the libc
    // probe is registered but not installed yet; the hook on the dynamic linker is.
    s.add_spec("libc:puts").unwrap();
    s.add_spec("libc:printf").unwrap();
    let installed_at_start = s.core().site_count();
    assert_eq!(installed_at_start, 1, "only the dynamic linker's hook");
    let o = s.run(&mut |_, _| {}).unwrap();
    assert_eq!(o, Outcome::Exited(0));
    assert_eq!(s.count_of("libc.so.6:printf"), 1);
    assert!(s.stats().dl_events >= 1);
}

/// Timer signals while threads run boosted slots: a signal that finds a thread inside a slot
/// is held back until the thread has been stepped out (its handler must not run while the
/// interrupted code still has to resume in the slot). A timer signal that falls due during a
/// hit's ptrace stop is pending when the thread is resumed into its slot, so it is delivered
/// there before the slot's first instruction: with 40 000 hits and a 50 us timer that happens
/// many times in every run (about 9 signals in 10 on this machine), however fast or loaded it
/// is. Counts and output stay exact, and no trap is stray or failed.
#[test]
fn signals_in_boosted_slots_are_delivered_after_the_thread_left_them() {
    let mut s = spawn(&["alarm", "20000"]);
    for k in ["kind_boosted", "kind_riprel"] {
        assert_eq!(s.add_spec(&spec(k)).unwrap().added, 1);
    }
    let o = s.run(&mut |_, _| {}).unwrap();
    assert_eq!(o, Outcome::Exited(0));
    let st = s.stats();
    eprintln!("signals {} (held in a slot: {})", st.signals, st.slot_exits);
    assert!(st.signals > 0, "{st:?}");
    assert!(st.slot_exits > 0 && st.slot_exits <= st.deferred, "{st:?}");
    assert_eq!(st.not_ours + st.failed, 0, "{st:?}");
    for (name, n) in s.counts() {
        assert_eq!(n, 20000, "{name}");
    }
}
