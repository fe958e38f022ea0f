//! Programs that change their own mappings under the tracer (issue 12, items 7, 11 and 12):
//! one that maps over the slot area with `MAP_FIXED`, one that takes exec away from probed
//! text and gives it back, one that maps a probed file itself (a loader's `mmap` +
//! `mprotect`), and detach leaving no mapping of ours. The programs are in
//! `tests/programs/maps.c`; nothing is timed: the tests wait for the program's exit or for the
//! hit of its `done_fn`.

mod common;
use core::time::Duration;
use std::ffi::OsStr;

use platform_linux::sys::{self, Pid, WaitStatus};
use platform_linux::tracer::{Outcome, Session, SessionOptions};

use common::{assert_text_matches_disk, program};

fn spawn(prog: &str, args: &[&str]) -> Session {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Session::spawn(program(prog).as_os_str(), &args, SessionOptions::default()).unwrap()
}

fn spec(prog: &str, func: &str) -> String {
    format!("{}:{func}", program(prog).display())
}

/// The anonymous `r-x` mappings of `pid` (a program of ours makes none: the slot area's).
fn anonymous_exec(pid: Pid) -> Vec<String> {
    platform_linux::maps::read_maps(pid)
        .unwrap()
        .iter()
        .filter(|m| m.perms.exec && m.inode == 0 && m.path.is_empty())
        .map(|m| format!("{:#x}-{:#x} {}", m.range.start, m.range.end, m.perms))
        .collect()
}

/// Kills a waiting program when a test fails before it was killed and reaped (detach lets
/// it run on; a panic would leave it waiting forever).
struct KillOnPanic(Pid);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = sys::kill(self.0, libc::SIGKILL);
        }
    }
}

/// Runs `s` until its `done_fn` was hit (the program then waits forever).
fn run_until_done(s: &mut Session, prog: &str) {
    let done = format!("{prog}:done_fn");
    while s.count_of(&done) == 0 {
        let o = s
            .run_for(Duration::from_millis(50), &mut |_, _| {})
            .unwrap();
        assert_eq!(
            o,
            None,
            "the program ended early; warnings {:?}",
            s.warnings()
        );
    }
}

/// Detaches `s` from its waiting program: every byte restored and the slot area unmapped,
/// the program still alive; then kills it.
fn detach_and_check(mut s: Session) {
    let pid = s.pid();
    assert!(!anonymous_exec(pid).is_empty(), "a slot area while traced");
    let rep = s.detach().unwrap();
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(rep.slot_areas_left.is_empty(), "{rep:?}");
    assert_text_matches_disk(pid.0 as u32);
    assert_eq!(anonymous_exec(pid), Vec::<String>::new());
    // It lives on, untraced (waiting in pause()), until killed.
    sys::kill(pid, libc::SIGKILL).unwrap();
    assert!(matches!(
        sys::wait_through_stop(Some(pid)).unwrap(),
        WaitStatus::Signaled(_, libc::SIGKILL, _)
    ));
}

/// Item 7: the program maps over the slot area (read-write, or read-exec again so its page
/// counts look unchanged) and keeps calling the probed function: it finishes with the right
/// result and status; the hit that found the area gone counts, and no thread was sent there.
#[test]
fn a_program_that_maps_over_the_slot_area_runs_on_correctly() {
    for prog in ["maps", "maps-static"] {
        for how in ["rw", "rx"] {
            let mut s = spawn(prog, &["remap", "20", "30", how]);
            assert_eq!(s.add_spec(&spec(prog, "iso_fn")).unwrap().added, 1);
            let base = s.xol_base().expect("iso_fn's imul needs a slot");
            if prog == "maps-static" {
                // Not just below the image at 0x400000, where such programs map their own.
                assert!(base >= 0x4000_0000, "{base:#x}");
            }
            let o = s.run(&mut |_, _| {}).unwrap();
            assert_eq!(o, Outcome::Exited(0), "{prog} {how}: {:?}", s.warnings());
            let st = s.stats();
            assert_eq!(
                s.count_of(&format!("{prog}:iso_fn")),
                21,
                "{prog} {how}: {:?} {st:?}",
                s.counts()
            );
            assert_eq!(st.slot_areas_lost, 1, "{prog} {how}: {st:?}");
            assert_eq!(st.not_ours + st.failed, 0, "{prog} {how}: {st:?}");
            assert!(
                s.warnings().iter().any(|w| w.contains("slot area")),
                "{prog} {how}: {:?}",
                s.warnings()
            );
        }
    }
}

/// Item 11: `mprotect(PROT_READ)` over probed text while the dynamic linker's hook makes the
/// tracer read the maps, then exec back: every hit counts, and detach restores every byte.
#[test]
fn an_mprotect_that_drops_exec_keeps_the_breakpoints() {
    let lib = program("libplugin.so");
    let mut s = spawn("maps", &["mprotect", "20", "30", lib.to_str().unwrap()]);
    let _kill = KillOnPanic(s.pid());
    for f in ["iso_fn", "done_fn"] {
        assert_eq!(s.add_spec(&spec("maps", f)).unwrap().added, 1);
    }
    run_until_done(&mut s, "maps");
    assert_eq!(s.count_of("maps:iso_fn"), 50);
    let st = s.stats();
    assert!(
        st.dl_events >= 2,
        "the maps were read while and after: {st:?}"
    );
    assert_eq!(st.not_ours + st.failed, 0, "{st:?}");
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    detach_and_check(s);
}

/// Item 11: the program maps the probed page of its own file again and makes it executable,
/// no dynamic linker involved: the next hit notices, and the copy's calls count.
#[test]
fn a_loaders_executable_mapping_of_a_probed_file_is_probed() {
    let mut s = spawn("maps", &["loader", "20", "30"]);
    let _kill = KillOnPanic(s.pid());
    for f in ["iso_fn", "done_fn"] {
        assert_eq!(s.add_spec(&spec("maps", f)).unwrap().added, 1);
    }
    run_until_done(&mut s, "maps");
    // 20 calls, one more of the original (the hit that notices the copy), 30 of the copy.
    assert_eq!(s.count_of("maps:iso_fn"), 51);
    let st = s.stats();
    assert!(st.map_changes >= 1, "{st:?}");
    assert_eq!(st.not_ours + st.failed, 0, "{st:?}");
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    detach_and_check(s);
}

/// Item 12: `probe trace -p PID` detaches (SIGINT) and leaves nothing of ours mapped; the
/// process runs on (it keeps calling `work`, whose hits the next tracer sees).
#[test]
fn detach_unmaps_the_slot_area() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = common::spin();
    let pid = Pid(child.id() as i32);
    let _kill = KillOnPanic(pid);
    let work = format!("uprobe:{}:work", program("workload").display());
    for round in 0..2 {
        let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["trace", "--print", "-p", &pid.to_string(), &work])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(tracer.stdout.take().unwrap());
        let mut hit = String::new();
        out.read_line(&mut hit).unwrap();
        assert!(hit.contains("workload:work"), "round {round}: {hit}");
        assert!(!anonymous_exec(pid).is_empty(), "a slot area while traced");
        sys::kill(Pid(tracer.id() as i32), libc::SIGINT).unwrap();
        let o = tracer.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "round {round}: {err}");
        assert!(!err.contains("stays mapped"), "round {round}: {err}");
        assert_eq!(anonymous_exec(pid), Vec::<String>::new(), "round {round}");
        assert_text_matches_disk(pid.0 as u32);
        assert!(child.try_wait().unwrap().is_none(), "round {round}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
