//! How `probe trace` ends (issue 12 b, c, e): a closed output pipe detaches and exits, a
//! write error is an error, `-o` never truncates a file our stdout shares, a SIGINT sent to
//! probe alone reaches a spawned command, and every catchable fatal signal sent to the tracer
//! detaches cleanly from a `-p` process (its text restored, the process running on).
//! Nothing is timed: each step waits for a printed hit or a line of the program.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};

use common::{assert_text_matches_disk, attach, program, spin, stderr_of};

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

/// `workload lines`: feeds `lines` to it one at a time, reading the answer of each.
fn feed(prog: &mut Child, out: &mut BufReader<ChildStdout>, n: u32) -> String {
    use std::io::Write;
    writeln!(prog.stdin.as_mut().unwrap(), "{n}").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line
}

fn lines_program() -> (Child, BufReader<ChildStdout>) {
    ready("lines")
}

/// `workload MODE` with its stdin and stdout ours, past the `ready` it prints.
fn ready(mode: &str) -> (Child, BufReader<ChildStdout>) {
    let mut prog = Command::new(program("workload"))
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(prog.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (prog, out)
}

/// Every answer and the exit of `workload lines` fed 5, 3, 7, then EOF; `attach` runs after
/// the first answer (and `after_attach` after the second).
fn lines_session(
    attach: impl FnOnce(&mut Child) -> Option<(Child, BufReader<ChildStderr>)>,
    after_attach: impl FnOnce(&mut Child, Option<(Child, BufReader<ChildStderr>)>),
) -> (Vec<String>, Option<i32>) {
    let (mut prog, mut out) = lines_program();
    let mut answers = vec![feed(&mut prog, &mut out, 5)];
    let tracer = attach(&mut prog);
    answers.push(feed(&mut prog, &mut out, 3));
    after_attach(&mut prog, tracer);
    answers.push(feed(&mut prog, &mut out, 7));
    drop(prog.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    answers.push(rest);
    (answers, prog.wait().unwrap().code())
}

/// The system call `pid` is blocked in (`/proc/PID/syscall`), if any.
fn syscall_of(pid: u32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

#[test]
fn sigkill_of_probe_mid_trace_leaves_a_p_process_running_as_untraced() {
    let untraced = lines_session(|_| None, |_, _| {});
    let traced = lines_session(
        |prog| {
            // Count work() and take over read()'s return address at each call.
            Some(attach(
                prog.id(),
                &[&work(), "uretprobe:libc:read"],
                "attached 2 probes",
            ))
        },
        |prog, tracer| {
            let (mut tracer, mut err) = tracer.unwrap();
            // It answered and went back to read(): blocked there with its return address
            // taken over by the tracer.
            while syscall_of(prog.id()) != Some(libc::SYS_read) {
                std::thread::yield_now();
            }
            // SIGKILL the probe the user started.
            kill(tracer.id(), libc::SIGKILL);
            let status = tracer.wait().unwrap();
            assert_eq!(status.code(), None, "killed");
            // The tracer it forked detaches, restoring everything, and exits (closing the
            // stderr it shares with the guardian).
            let mut rest = String::new();
            err.read_to_string(&mut rest).unwrap();
            assert!(rest.contains("detached from process"), "{rest}");
            assert_eq!(tracer_pid_of(prog.id()), 0);
            assert_text_matches_disk(prog.id());
        },
    );
    assert_eq!(traced, untraced);
    assert_eq!(traced.1, Some(0));
}

/// The state letter of `pid` (`/proc/PID/stat` field 3).
fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[test]
fn a_stopped_process_stays_stopped_while_traced_and_after_detach() {
    let (mut prog, mut out) = lines_program();
    let first = feed(&mut prog, &mut out, 2);
    kill(prog.id(), libc::SIGSTOP);
    while state_of(prog.id()) != 'T' {
        std::thread::yield_now();
    }
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "-p", &prog.id().to_string(), &work()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("attached 1 probe"), "{line}");
    // A line for the program: a stopped one does not answer. (Waiting can only make a
    // wrong resume show; it never fails a correct run.)
    use std::io::Write;
    writeln!(prog.stdin.as_mut().unwrap(), "4").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        tx.send(l.clone()).unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        l + &rest
    });
    assert!(
        rx.recv_timeout(core::time::Duration::from_millis(1500))
            .is_err(),
        "the stopped program ran while traced"
    );
    kill(tracer.id(), libc::SIGINT);
    let status = tracer.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    let mut summary = String::new();
    tracer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    assert!(summary.contains("@[workload:work]: 0"), "{summary}");
    // Stopped as it was, untraced.
    assert_eq!(tracer_pid_of(prog.id()), 0);
    assert_eq!(state_of(prog.id()), 'T');
    assert!(rx.try_recv().is_err(), "it ran at detach");
    kill(prog.id(), libc::SIGCONT);
    drop(prog.stdin.take());
    let rest = reader.join().unwrap();
    assert_eq!(first, "work calls: 2 sum: 4\n");
    assert_eq!(rest, "work calls: 6 sum: 20\ndone\n");
    assert_eq!(prog.wait().unwrap().code(), Some(0));
}

/// The tracer `probe` forked (`probe` itself is the guardian).
fn tracer_child(probe: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{probe}/task/{probe}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("probe {probe} has no tracer child"))
}

#[test]
fn sigkill_of_the_tracer_itself_is_repaired_by_the_guardian() {
    guardian_repairs(&[&work()], "attached 1 probe");
}

/// The same, with `read()`'s return address taken over while the program blocks in it: the
/// guardian puts it back (else the program returns into the trampoline's `int3`, untraced,
/// and dies of SIGTRAP).
#[test]
fn sigkill_of_the_tracer_mid_call_has_the_guardian_restore_the_return_address() {
    guardian_repairs(&[&work(), "uretprobe:libc:read"], "attached 2 probes");
}

/// Runs `workload lines` with `probe trace -p` attached with `specs`, SIGKILLs the tracer
/// process (not `probe`, the guardian) while the program blocks in `read()`, and checks that
/// the guardian restored the text and that the program answered as untraced.
fn guardian_repairs(specs: &[&str], attached: &str) {
    let untraced = lines_session(|_| None, |_, _| {});
    let traced = lines_session(
        |prog| Some(attach(prog.id(), specs, attached)),
        |prog, tracer| {
            let (mut guardian, mut err) = tracer.unwrap();
            // Between hits: back in read(), nothing of ours in flight.
            while syscall_of(prog.id()) != Some(libc::SYS_read) {
                std::thread::yield_now();
            }
            kill(tracer_child(guardian.id()), libc::SIGKILL);
            let status = guardian.wait().unwrap();
            let mut rest = String::new();
            err.read_to_string(&mut rest).unwrap();
            assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{rest}");
            assert!(rest.contains("killed by signal 9"), "{rest}");
            assert!(rest.contains("probe: restored "), "{rest}");
            assert_eq!(tracer_pid_of(prog.id()), 0);
            assert_text_matches_disk(prog.id());
        },
    );
    assert_eq!(traced, untraced);
    assert_eq!(traced.1, Some(0));
}

/// Detaching while four threads hit a stepped and a boosted probe as fast as they can, ten
/// times over the same process: the detach's `PTRACE_INTERRUPT` meets threads that have just
/// taken an `int3` or a single-step trap not yet reported, threads mid-step, and (when it
/// comes right after attaching) the remote `mmap` of the slot area. Every time the process
/// runs on untraced, its text as on disk.
#[test]
fn detaching_from_threads_mid_hit_leaves_them_running() {
    let mut prog = Command::new(program("workload"))
        .args(["threxec", "100000000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let exe = program("workload");
    let specs = [
        format!("{}:kind_step", exe.display()),
        format!("{}:kind_boosted", exe.display()),
    ];
    for round in 0..10 {
        let (mut tracer, mut err) =
            attach(prog.id(), &["--print", &specs[0], &specs[1]], "attached");
        let mut out = BufReader::new(tracer.stdout.take().unwrap());
        if round % 2 == 1 {
            // Past the first hits: the slot area is mapped by then.
            let mut hit = String::new();
            out.read_line(&mut hit).unwrap();
            assert!(hit.contains("workload:kind_"), "round {round}: {hit}");
        }
        kill(tracer.id(), libc::SIGTERM);
        let mut hits = String::new();
        out.read_to_string(&mut hits).unwrap();
        let status = tracer.wait().unwrap();
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        assert_eq!(status.code(), Some(0), "round {round}: {rest}");
        assert!(
            rest.contains("detached from process"),
            "round {round}: {rest}"
        );
        if let Some(st) = prog.try_wait().unwrap() {
            panic!("round {round}: the tracee died: {st:?}; probe said: {rest}");
        }
        assert_released(&mut prog);
    }
    // A trap left queued would kill it at its next return to user space.
    std::thread::sleep(core::time::Duration::from_millis(100));
    assert_released(&mut prog);
    prog.kill().unwrap();
    prog.wait().unwrap();
}

/// Issue 12, item 6: a process under a seccomp filter (this one kills itself at any `mmap`)
/// gets no injected system call: a probe that needs a slot is refused, naming seccomp, and
/// one that probe emulates is traced; the process runs on as untraced throughout.
#[test]
fn a_process_under_seccomp_is_never_sent_an_injected_system_call() {
    let (mut prog, mut out) = ready("seccomp");
    let pid = prog.id().to_string();
    let exe = program("workload");
    let step = format!("{}:kind_step", exe.display());
    let emulated = format!("{}:kind_emulated", exe.display());

    let o = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "-p", &pid, &emulated, &step])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot probe workload:kind_step") && err.contains("seccomp"),
        "{err}"
    );
    assert!(prog.try_wait().unwrap().is_none(), "the process died");
    assert_released(&mut prog);

    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "--print", "-p", &pid, &emulated])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hits = BufReader::new(tracer.stdout.take().unwrap());
    let mut hit = String::new();
    hits.read_line(&mut hit).unwrap();
    assert!(hit.trim_end().ends_with("workload:kind_emulated"), "{hit}");
    kill(tracer.id(), libc::SIGTERM);
    let mut rest = String::new();
    hits.read_to_string(&mut rest).unwrap();
    let status = tracer.wait().unwrap();
    let err = stderr_of(&mut tracer);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_released(&mut prog);

    drop(prog.stdin.take());
    let mut tail = String::new();
    out.read_to_string(&mut tail).unwrap();
    assert!(tail.starts_with("calls: "), "{tail}");
    assert_eq!(prog.wait().unwrap().code(), Some(0));
}
