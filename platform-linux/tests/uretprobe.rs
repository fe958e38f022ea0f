//! Return probes end to end (issue 5): `uretprobe:` and `--latency` on real programs
//! (`tests/programs/ret_prog.c`, `ret_exc.cc`): recursion, `longjmp` out of probed frames, C++
//! exceptions thrown through probed frames, threads, a fork inside a probed function, and
//! detaching while threads sit inside probed functions. Every test compares the program's
//! output and exit status with an untraced run and checks the counts exactly.

mod common;
use common::{count, latency_count, program_output, value};
use core::time::Duration;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use platform_linux::tracer::{Outcome, Session, SessionOptions};

fn program(name: &str) -> String {
    common::program(name).display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `probe trace SPECS... -- PROG ARGS...`, with `P:` in the specs standing for the program.
fn trace(prog: &str, specs: &[&str], args: &[&str]) -> Output {
    let p = program(prog);
    let mut v: Vec<String> = vec!["trace".into()];
    v.extend(specs.iter().map(|s| s.replace("P:", &format!("{p}:"))));
    v.push("--".into());
    v.push(p);
    v.extend(args.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(&v)
        .stdin(Stdio::null())
        .output()
        .expect("run probe")
}

fn untraced(prog: &str, args: &[&str]) -> Output {
    Command::new(program(prog)).args(args).output().unwrap()
}

/// Runs traced and untraced; asserts equal output and status; returns probe's stdout.
fn same_as_untraced(prog: &str, specs: &[&str], args: &[&str]) -> String {
    let o = trace(prog, specs, args);
    let u = untraced(prog, args);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), u.status.code(), "{}", text(&o.stderr));
    assert_eq!(program_output(&out), text(&u.stdout), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    out
}

#[test]
fn recursion_counts_every_entry_and_return_and_times_each_call() {
    let out = same_as_untraced(
        "ret-prog",
        &["uretprobe:P:fib", "uprobe:P:fib", "--latency"],
        &["fib", "15"],
    );
    assert_eq!(count(&out, "uretprobe:ret-prog:fib"), 1973);
    assert_eq!(count(&out, "ret-prog:fib"), 1973);
    assert_eq!(latency_count(&out, "uretprobe:ret-prog:fib"), 1973);
    assert_eq!(latency_count(&out, "ret-prog:fib"), 1973);
    assert!(value(&out, "nmissed", "ret-prog:fib").is_none(), "{out}");
}

#[test]
fn maxactive_bounds_tracked_calls_and_the_rest_is_reported_missed() {
    let o = trace(
        "ret-prog",
        &["uprobe:P:fib", "--latency", "--maxactive", "3"],
        &["fib", "10"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    // Every entry is counted, tracked or not.
    assert_eq!(count(&out, "ret-prog:fib"), 177);
    let missed = value(&out, "nmissed", "ret-prog:fib").expect("nmissed line");
    assert!(missed > 0 && missed < 177, "{out}");
    assert_eq!(latency_count(&out, "ret-prog:fib"), 177 - missed);
    assert!(text(&o.stderr).contains("were not tracked"));
}

#[test]
fn a_ten_thousand_deep_recursion_is_tracked_in_full_by_default() {
    let out = same_as_untraced(
        "ret-prog",
        &["uretprobe:P:deep", "uprobe:P:deep"],
        &["deep", "10000"],
    );
    assert_eq!(count(&out, "ret-prog:deep"), 10000);
    assert_eq!(count(&out, "uretprobe:ret-prog:deep"), 10000);
    assert!(
        value(&out, "nmissed", "uretprobe:ret-prog:deep").is_none(),
        "{out}"
    );
}

#[test]
fn calls_nested_deeper_than_max_ret_depth_are_reported_missed_by_nesting() {
    let o = trace(
        "ret-prog",
        &[
            "uretprobe:P:deep",
            "uprobe:P:deep",
            "--latency",
            "--max-ret-depth",
            "100",
        ],
        &["deep", "10000"],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    let u = untraced("ret-prog", &["deep", "10000"]);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(program_output(&out), text(&u.stdout), "{err}");
    // Every entry is counted. Each of the 100 outermost calls takes two instances (the
    // return probe and the entry probe --latency times) and both are tracked: the chain
    // holds 100 calls, so only the outermost 50 frames are tracked.
    assert_eq!(count(&out, "ret-prog:deep"), 10000);
    for name in ["uretprobe:ret-prog:deep", "ret-prog:deep"] {
        let returns = latency_count(&out, name);
        let missed = value(&out, "nmissed", name).expect("nmissed line");
        let nesting = value(&out, "nmissed_nesting", name).expect("nmissed_nesting line");
        assert_eq!(returns, 50, "{name}: {out}");
        assert_eq!(missed, 9950, "{name}: {out}");
        assert_eq!(nesting, missed, "{name}: {out}");
        assert!(
            err.contains(&format!(
                "9950 calls of {name} were not tracked (their returns are not counted): 9950 \
                 nested deeper than --max-ret-depth 100 in a thread"
            )),
            "{err}"
        );
    }
    assert_eq!(count(&out, "uretprobe:ret-prog:deep"), 50);
    assert_eq!(
        value(&out, "abandoned", "uretprobe:ret-prog:deep"),
        None,
        "{out}"
    );
}

#[test]
fn longjmp_out_of_probed_frames_loses_only_their_returns() {
    let out = same_as_untraced(
        "ret-prog",
        &[
            "uretprobe:P:inner",
            "uretprobe:P:jumper",
            "uprobe:P:inner",
            "uprobe:P:jumper",
        ],
        &["longjmp", "300"],
    );
    // 300 calls of inner() longjmp out of inner() and jumper(); 300 return normally.
    assert_eq!(count(&out, "ret-prog:inner"), 600);
    assert_eq!(count(&out, "ret-prog:jumper"), 300);
    assert_eq!(count(&out, "uretprobe:ret-prog:inner"), 300);
    assert_eq!(count(&out, "uretprobe:ret-prog:jumper"), 0);
    // The calls left by longjmp are said to have never returned.
    assert_eq!(
        value(&out, "abandoned", "uretprobe:ret-prog:inner"),
        Some(300)
    );
    assert_eq!(
        value(&out, "abandoned", "uretprobe:ret-prog:jumper"),
        Some(300)
    );
}

/// outer() -> catcher() -> mid() -> thrower() throws; catcher() catches. mid() and thrower()
/// are unwound (no return); catcher(), leaf() (called in the catch block) and outer()
/// return normally and must be reported.
fn exceptions(prog: &str, args: &[&str]) {
    let specs = [
        "uretprobe:P:outer",
        "uretprobe:P:catcher",
        "uretprobe:P:mid",
        "uretprobe:P:thrower",
        "uretprobe:P:leaf",
        "uprobe:P:thrower",
    ];
    let out = same_as_untraced(prog, &specs, args);
    let n: u64 = args[0].parse().unwrap();
    let name = |f: &str| format!("uretprobe:{prog}:{f}");
    assert_eq!(count(&out, &format!("{prog}:thrower")), n);
    assert_eq!(count(&out, &name("outer")), n);
    assert_eq!(count(&out, &name("catcher")), n);
    assert_eq!(count(&out, &name("leaf")), n);
    assert_eq!(count(&out, &name("mid")), 0);
    assert_eq!(count(&out, &name("thrower")), 0);
    // The unwound calls never returned, and are said so; the others all returned.
    assert_eq!(value(&out, "abandoned", &name("mid")), Some(n));
    assert_eq!(value(&out, "abandoned", &name("thrower")), Some(n));
    for f in ["outer", "catcher", "leaf"] {
        assert_eq!(value(&out, "abandoned", &name(f)), None, "{out}");
    }
}

#[test]
fn cxx_exceptions_through_probed_frames_unwind_and_outer_returns_fire() {
    exceptions("ret-exc", &["200"]);
}

#[test]
fn cxx_rethrow_from_a_catch_block_inside_probed_frames() {
    exceptions("ret-exc", &["100", "rethrow"]);
}

#[test]
fn cxx_exceptions_with_the_unwinder_linked_into_the_executable() {
    exceptions("ret-exc-static-rt", &["100", "rethrow"]);
}

#[test]
fn the_unwinder_hooks_restore_and_rehijack_return_addresses() {
    let p = program("ret-exc");
    let args = [OsStr::new("20")];
    let mut s = Session::spawn(OsStr::new(&p), &args, SessionOptions::default()).unwrap();
    for f in ["outer", "catcher", "mid", "thrower"] {
        s.add_spec(&format!("uretprobe:{p}:{f}")).unwrap();
    }
    let o = s.run(&mut |_, _| {}).unwrap();
    assert_eq!(o, Outcome::Exited(7));
    let u = s.unwind_stats();
    // Each throw: _Unwind_RaiseException puts back the four hijacked frames; its jump to
    // the cleanup in mid() hijacks the three that survive there (mid, catcher, outer); the
    // cleanup's _Unwind_Resume puts those back, and its jump to the catch in catcher()
    // hijacks catcher() and outer() again; __cxa_begin_catch finds nothing left to do.
    assert_eq!(u.starts, 40, "{u:?}");
    assert_eq!(u.landings, 40, "{u:?}");
    assert_eq!(u.catches, 20, "{u:?}");
    assert_eq!(u.restored, 20 * (4 + 3), "{u:?}");
    assert_eq!(u.rehijacked, 20 * (3 + 2), "{u:?}");
    assert_eq!(s.count_of("uretprobe:ret-exc:outer"), 20);
    assert_eq!(s.count_of("uretprobe:ret-exc:mid"), 0);
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

/// `tests/programs/panics.rs`: each round, `descend(6)` recurses to `descend(0)`, which
/// panics; `descend(3)` catches it with `catch_unwind`. Frames 0 to 2 are unwound (through
/// cleanup landing pads, their guards' drops), frames 3 to 6 survive and must return.
#[test]
fn rust_panics_caught_by_catch_unwind_leave_the_surviving_frames_returns_reported() {
    let flags = ["--crate-name", "panics", "-C", "opt-level=1"];
    let prog = common::programs::rust_program("panics", "panics.rs", &flags);
    let p = prog.display().to_string();
    let run = |traced: bool| {
        let mut c = if traced {
            let mut c = Command::new(env!("CARGO_BIN_EXE_probe"));
            c.args([
                "trace",
                &format!("uretprobe:{p}:panics::descend"),
                &format!("uprobe:{p}:panics::descend"),
                "--",
                &p,
            ]);
            c
        } else {
            Command::new(&prog)
        };
        c.arg("500").stdin(Stdio::null()).output().unwrap()
    };
    let (o, u) = (run(true), run(false));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(text(&u.stdout), "sum 52000 drops 3500\n");
    assert_eq!(program_output(&out), text(&u.stdout), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // Every entry's return is reported (frames 3 to 6) or said to have never come (frames
    // 0 to 2, unwound); none was missed.
    let name = "uretprobe:panics:panics::descend";
    assert_eq!(count(&out, "panics:panics::descend"), 500 * 7);
    assert_eq!(count(&out, name), 500 * 4);
    assert_eq!(value(&out, "abandoned", name), Some(500 * 3), "{out}");
    assert!(value(&out, "nmissed", name).is_none(), "{out}");
}

#[test]
fn eight_threads_calling_a_return_probed_function_count_exactly() {
    let out = same_as_untraced(
        "ret-prog",
        &["uretprobe:P:leaf", "--latency"],
        &["threads", "8", "2000"],
    );
    assert_eq!(count(&out, "uretprobe:ret-prog:leaf"), 16_000);
    assert_eq!(latency_count(&out, "uretprobe:ret-prog:leaf"), 16_000);
}

#[test]
fn a_fork_inside_a_probed_function_returns_in_parent_and_child() {
    let o = trace(
        "ret-prog",
        &["uretprobe:P:forking", "--print", "--json"],
        &["fork"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("child returned 100\n"), "{out}");
    assert!(out.contains("parent returned 200, child exit 5\n"), "{out}");
    let rets: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"ret\""))
        .collect();
    assert_eq!(rets.len(), 2, "{out}");
    fn pid(l: &str) -> Option<&str> {
        l.split("\"pid\":").nth(1)?.split(',').next()
    }
    assert_ne!(pid(rets[0]), pid(rets[1]), "{out}");
    let mut vals: Vec<bool> = [100, 200]
        .iter()
        .map(|v| rets.iter().any(|l| l.contains(&format!("\"retval\":{v},"))))
        .collect();
    vals.dedup();
    assert_eq!(vals, [true], "{out}");
    assert!(rets.iter().all(|l| l.contains("\"duration_ns\":")), "{out}");
    assert!(out.contains("{\"probe\":\"uretprobe:ret-prog:forking\",\"hits\":2}"));
}

#[test]
fn print_shows_each_return_with_value_and_duration() {
    let o = trace("ret-prog", &["uretprobe:P:fib", "--print"], &["fib", "2"]);
    let out = text(&o.stdout);
    let rets: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" uretprobe:ret-prog:fib ret="))
        .collect();
    // fib(2) returns 1 after fib(1) = 1 and fib(0) = 0.
    assert_eq!(rets.len(), 3, "{out}");
    assert!(rets[0].contains(" ret=0x1 duration="), "{}", rets[0]);
    assert!(rets[1].contains(" ret=0x0 duration="), "{}", rets[1]);
    assert!(rets[2].contains(" ret=0x1 duration="), "{}", rets[2]);
    assert!(rets[2].ends_with("ns"), "{}", rets[2]);
}

/// Attach to `ret-prog block 3`, let its three threads block inside `blocked()` and its
/// main thread inside `wait_line()` (all return-probed), detach with SIGINT while they are
/// inside, then release them: every one must return to its real caller.
#[test]
fn after_detach_no_hijacked_return_address_is_left_on_any_stack() {
    let mut prog = Command::new(program("ret-prog"))
        .args(["block", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = prog.stdin.take().unwrap();
    let mut lines = BufReader::new(prog.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert_eq!(next(), "ready");
    let p = program("ret-prog");
    let (blocked, wait_line) = (
        format!("uretprobe:{p}:blocked"),
        format!("uretprobe:{p}:wait_line"),
    );
    let (mut tracer, mut err) = common::attach(
        prog.id(),
        &["--latency", &blocked, &wait_line],
        "attached 2 probes",
    );
    // Now the threads enter the probed functions, traced.
    writeln!(stdin, "go").unwrap();
    assert_eq!(next(), "inside");
    assert_eq!(next(), "waiting");
    std::thread::sleep(Duration::from_millis(100));
    let st = Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let started = Instant::now();
    let status = tracer.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("detached from process"), "{rest}");
    assert!(!rest.contains("warning"), "{rest}");
    // Untraced now: release the main thread, which releases the others.
    writeln!(stdin, "release").unwrap();
    assert_eq!(next(), "line 8 sum 36");
    let st = prog.wait().unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn a_vfork_child_returns_through_its_parents_hijacked_return_address() {
    // libc's vfork() is return-probed: the child returns through the trampoline first (on
    // the parent's stack), execs itself as `calls 40`, then the parent returns.
    let out = same_as_untraced("workload", &["uretprobe:libc:vfork"], &["vfork", "40"]);
    assert_eq!(count(&out, "uretprobe:libc.so.6:vfork"), 2);
    // The child's copy of the parent's call is not a call of its own: none abandoned.
    assert_eq!(
        value(&out, "abandoned", "uretprobe:libc.so.6:vfork"),
        None,
        "{out}"
    );
}
