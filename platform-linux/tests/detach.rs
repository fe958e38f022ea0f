//! How `probe trace` ends (issue 12 b, c, e): a closed output pipe detaches and exits, a
//! write error is an error, `-o` never truncates a file our stdout shares, a SIGINT sent to
//! probe alone reaches a spawned command, and every catchable fatal signal sent to the tracer
//! detaches cleanly from a `-p` process (its text restored, the process running on).
//! Nothing is timed: each step waits for a printed hit or a line of the program.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::{assert_text_matches_disk, program};

fn work() -> String {
    format!("uprobe:{}:work", program("workload").display())
}

fn kill(pid: u32, sig: i32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

fn tracer_pid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// `workload spin`, untraced, past its "ready" line.
fn spin() -> Child {
    let mut child = Command::new(program("workload"))
        .arg("spin")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// `probe trace --print -p PID work`, past its first printed hit.
fn attach_printing(pid: u32) -> (Child, BufReader<ChildStdout>) {
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "--print", "-p", &pid.to_string(), &work()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tracer.stdout.take().unwrap());
    let mut hit = String::new();
    out.read_line(&mut hit).unwrap();
    assert!(hit.contains("workload:work"), "{hit}");
    (tracer, out)
}

fn stderr_of(tracer: &mut Child) -> String {
    let mut err = String::new();
    tracer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// The process was let go with its text as on disk, and runs on.
fn assert_released(prog: &mut Child) {
    assert_eq!(tracer_pid_of(prog.id()), 0, "still traced");
    assert!(prog.try_wait().unwrap().is_none(), "the tracee died");
    assert_text_matches_disk(prog.id());
}

#[test]
fn a_closed_output_pipe_detaches_and_exits() {
    // `probe trace --print -p PID ... | head -2`
    let mut prog = spin();
    let (mut tracer, mut out) = attach_printing(prog.id());
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    drop(out); // head exits
    let status = tracer.wait().unwrap();
    let err = stderr_of(&mut tracer);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("detached from process"), "{err}");
    assert!(!err.contains("error"), "{err}");
    assert_released(&mut prog);
    prog.kill().unwrap();
    prog.wait().unwrap();
}

#[test]
fn a_write_error_is_an_error_and_the_command_finishes_untraced() {
    let o = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "--print", "-o", "/dev/full", &work(), "--"])
        .arg(program("workload"))
        .args(["calls", "20000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writing output"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // The command ran to its end, with its own output.
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("work calls: 20000"), "{out}");
}

#[test]
fn output_to_dev_stdout_does_not_truncate_the_file_stdout_shares() {
    let path = std::env::temp_dir().join(format!("probe-devstdout-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "-o", "/dev/stdout", &work(), "--"])
        .arg(program("workload"))
        .args(["calls", "7"])
        .stdin(Stdio::null())
        .stdout(file)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    // Both the program's output and probe's summary, neither over the other.
    assert!(text.starts_with("work calls: 7 sum: "), "{text:?}");
    assert!(text.contains("@[workload:work]: 7\n"), "{text:?}");
}

#[test]
fn an_existing_regular_output_file_is_replaced() {
    let path = std::env::temp_dir().join(format!("probe-outfile-{}", std::process::id()));
    std::fs::write(&path, "old contents that must go\n".repeat(100)).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "-o"])
        .arg(&path)
        .args([&work(), "--"])
        .arg(program("workload"))
        .args(["calls", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(text.trim_start(), "@[workload:work]: 3\n", "{text:?}");
}

#[test]
fn sigint_sent_to_probe_alone_reaches_the_spawned_command() {
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "--print", &work(), "--"])
        .arg(program("workload"))
        .arg("spin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tracer.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("workload:work") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no hit printed");
    }
    kill(tracer.id(), libc::SIGINT);
    let status = tracer.wait().unwrap();
    let err = stderr_of(&mut tracer);
    // The command died of the SIGINT passed on, as under a terminal's Ctrl-C: 128 + 2.
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{err}");
    assert!(err.contains("killed by signal 2"), "{err}");
}

#[test]
fn every_catchable_fatal_signal_to_the_tracer_detaches_from_a_p_process() {
    let rt = libc::SIGRTMIN() + 3;
    for sig in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGQUIT,
        libc::SIGPWR,
        rt,
    ] {
        let mut prog = spin();
        let (mut tracer, out) = attach_printing(prog.id());
        kill(tracer.id(), sig);
        let status = tracer.wait().unwrap();
        drop(out);
        let err = stderr_of(&mut tracer);
        assert_eq!(status.code(), Some(0), "signal {sig}: {err}");
        assert!(err.contains("detached from process"), "signal {sig}: {err}");
        assert_released(&mut prog);
        prog.kill().unwrap();
        prog.wait().unwrap();
    }
}
