//! `probe trace` end to end against real programs: the C workload built by `build.rs`
//! (which counts its own calls and prints them), `/bin/ls` and `python3.11`.
//!
//! Every test compares the tracer's counts with the program's own, and the program's output
//! and exit status with an untraced run where they must be equal.

mod common;
use common::{assert_text_matches_disk, count, probe, program, program_output, text};
use core::time::Duration;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workload() -> String {
    program("workload").display().to_string()
}

/// A number printed after `label` by the workload.
fn printed(stdout: &str, label: &str) -> u64 {
    let i = stdout
        .find(label)
        .unwrap_or_else(|| panic!("`{label}` not in:\n{stdout}"));
    stdout[i + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{stdout}"))
}

fn trace_workload(specs: &[&str], args: &[&str]) -> Output {
    let w = workload();
    let mut v: Vec<String> = vec!["trace".into()];
    v.extend(specs.iter().map(|s| s.replace("W:", &format!("{w}:"))));
    v.push("--".into());
    v.push(w.clone());
    v.extend(args.iter().map(|s| s.to_string()));
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    probe(&v)
}

#[test]
fn single_threaded_counts_are_exact() {
    let o = trace_workload(&["W:work"], &["calls", "5000"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "work calls:"), 5000);
    assert_eq!(count(&out, "workload:work"), 5000);
    assert!(text(&o.stderr).contains("attached 1 probe to process"));
}

#[test]
fn emulated_boosted_riprel_and_single_stepped_entries_count_exactly() {
    let o = trace_workload(
        &[
            "W:kind_emulated",
            "W:kind_boosted",
            "W:kind_riprel",
            "W:kind_step",
        ],
        &["kinds", "3000"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let untraced = Command::new(workload())
        .args(["kinds", "3000"])
        .output()
        .unwrap();
    assert_eq!(program_output(&out), text(&untraced.stdout));
    for k in ["emulated", "boosted", "riprel", "step"] {
        assert_eq!(count(&out, &format!("workload:kind_{k}")), 3000, "{k}");
    }
}

#[test]
fn eight_threads_hammering_one_function_count_exactly() {
    let o = trace_workload(&["W:work"], &["threads", "8", "20000"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "work calls:"), 160_000);
    assert_eq!(count(&out, "workload:work"), 160_000);
}

#[test]
fn recursion_counts_every_call() {
    let o = trace_workload(&["W:fib"], &["recurse", "20"]);
    let out = text(&o.stdout);
    assert_eq!(printed(&out, "fib calls:"), 21_891);
    assert_eq!(count(&out, "workload:fib"), 21_891);
}

#[test]
fn a_forked_child_inherits_the_probes() {
    let o = trace_workload(&["W:work"], &["fork", "300"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The child inherited the parent's 300 and added 300.
    assert_eq!(printed(&out, "child work calls:"), 600);
    assert_eq!(printed(&out, "child exit"), 3);
    assert_eq!(count(&out, "workload:work"), 600);
}

/// Issue 12, item 1: hundreds of processes live at once, each with the breakpoints it
/// inherited, are all followed (the space table once held 56: the rest died of SIGTRAP, or
/// ran unprobed).
#[test]
fn three_hundred_live_children_are_all_followed() {
    let o = trace_workload(&["W:work"], &["forks", "300", "10"]);
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        out.contains("children: 300, exited 0: 300 (last other status 0)"),
        "{out}"
    );
    assert_eq!(count(&out, "workload:work"), 3000, "{out}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn exec_starts_clean_and_probes_the_new_image() {
    let o = trace_workload(&["W:work"], &["exec", "100", "250"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "before exec work calls:"), 100);
    assert_eq!(printed(&out, "\nwork calls:"), 250);
    assert_eq!(count(&out, "workload:work"), 350);
}

#[test]
fn a_vfork_child_runs_in_its_parent_space_until_it_execs() {
    let o = trace_workload(&["W:work"], &["vfork", "40"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "parent work calls:"), 2);
    assert_eq!(printed(&out, "work calls:"), 40);
    assert_eq!(count(&out, "workload:work"), 42);
}

#[test]
fn a_library_loaded_later_gets_its_pending_probe() {
    let lib = program("libplugin.so").display().to_string();
    let w = workload();
    let spec = format!("{lib}:plugin_fn");
    let o = probe(&["trace", &spec, "--", &w, "dlopen", &lib, "150"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Loaded, called 150 times, unloaded, loaded again (perhaps elsewhere), 150 more.
    assert_eq!(printed(&out, "plugin calls:"), 300);
    assert_eq!(count(&out, "libplugin.so:plugin_fn"), 300);
}

#[test]
fn timer_signals_during_hits_leave_output_and_status_unchanged() {
    let specs = [
        "W:work",
        "W:kind_emulated",
        "W:kind_boosted",
        "W:kind_riprel",
        "W:kind_step",
    ];
    let o = trace_workload(&specs, &["alarm", "20000"]);
    let out = text(&o.stdout);
    let untraced = Command::new(workload())
        .args(["alarm", "20000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), untraced.status.code());
    assert_eq!(program_output(&out), text(&untraced.stdout));
    assert!(out.contains("alarms: yes"), "{out}");
    assert_eq!(count(&out, "workload:work"), 20000);
    assert_eq!(count(&out, "workload:kind_step"), 20000);
    assert_eq!(count(&out, "workload:kind_boosted"), 20000);
}

#[test]
fn the_programs_own_sigtraps_reach_it_unchanged() {
    let o = trace_workload(&["W:work"], &["traps"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "traps:"), 2);
    assert_eq!(count(&out, "workload:work"), 1);
}

#[test]
fn a_tracee_killed_mid_trace_is_reported_and_its_status_passed_on() {
    let o = trace_workload(&["W:work"], &["selfkill", "70"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(128 + 9));
    assert_eq!(count(&out, "workload:work"), 70);
    assert!(
        text(&o.stderr).contains("killed by signal 9 (SIGKILL)"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn the_exit_status_is_the_commands() {
    let o = trace_workload(&["W:work"], &["nosuchmode"]);
    assert_eq!(o.status.code(), Some(2));
    let o = probe(&["trace", "libc:malloc", "--", "/bin/sh", "-c", "exit 42"]);
    assert_eq!(o.status.code(), Some(42), "{}", text(&o.stderr));
}

#[test]
fn print_and_json_show_each_hit_and_a_summary() {
    let o = trace_workload(&["W:work", "--print", "--args", "2"], &["calls", "4"]);
    let out = text(&o.stdout);
    let hits: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" workload:work "))
        .collect();
    assert_eq!(hits.len(), 4, "{out}");
    // work(i): the first argument is i.
    assert!(hits[3].contains("arg0=0x3 arg1="), "{}", hits[3]);
    let o = trace_workload(
        &["W:work", "--print", "--args", "1", "--json"],
        &["calls", "3"],
    );
    let out = text(&o.stdout);
    let json: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(json.len(), 4, "{out}");
    assert!(
        json[0].starts_with("{\"type\":\"hit\",\"time_ns\":"),
        "{}",
        json[0]
    );
    assert!(json[2].contains("\"probe\":\"workload:work\",\"args\":[2]"));
    assert!(
        json[3].starts_with("{\"type\":\"summary\"")
            && json[3].contains("\"outcome\":\"exited\",\"exit_code\":0")
            && json[3].contains("{\"probe\":\"workload:work\",\"hits\":3}"),
        "{}",
        json[3]
    );
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("probe-test-{}-{name}", std::process::id()))
}

#[test]
fn ls_output_is_identical_under_libc_probes() {
    let dir = "/usr/lib/x86_64-linux-gnu";
    let plain = Command::new("/bin/ls").arg(dir).output().unwrap();
    let out_file = temp("ls");
    let o = probe(&[
        "trace",
        "libc:malloc",
        "libc:strcoll",
        "-o",
        out_file.to_str().unwrap(),
        "--",
        "/bin/ls",
        dir,
    ]);
    let summary = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    assert_eq!(o.status.code(), plain.status.code(), "{}", text(&o.stderr));
    assert!(o.stdout == plain.stdout, "ls output differs under probes");
    assert!(count(&summary, "libc.so.6:malloc") > 0, "{summary}");
    assert!(count(&summary, "libc.so.6:strcoll") > 10, "{summary}");
}

#[test]
fn python_under_malloc_and_free_behaves_as_untraced() {
    let python = "/usr/bin/python3.11";
    if !Path::new(python).exists() {
        eprintln!("skipped: {python} is not installed");
        return;
    }
    let script = "import json, sys\n\
                  d = {str(i): [i] * (i % 7) for i in range(3000)}\n\
                  print(len(json.dumps(d)), sum(map(len, d.values())))\n\
                  sys.exit(3)\n";
    let plain = Command::new(python).args(["-c", script]).output().unwrap();
    let out_file = temp("py");
    let o = probe(&[
        "trace",
        "libc:malloc",
        "libc:free",
        "-o",
        out_file.to_str().unwrap(),
        "--",
        python,
        "-c",
        script,
    ]);
    let summary = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(o.status.code(), plain.status.code());
    assert_eq!(text(&o.stdout), text(&plain.stdout));
    assert!(count(&summary, "libc.so.6:malloc") > 1000, "{summary}");
    assert!(count(&summary, "libc.so.6:free") > 1000, "{summary}");
}

/// Starts `workload spin` untraced, attaches `probe trace -p` with every libc function and
/// the workload's `work`, sends `sig` to probe, and checks the tracee's text afterwards.
fn attach_then_signal(sig: i32) {
    let mut spin = common::spin();
    let w = format!("{}:work", workload());
    // Wait until it attached and hits of both kinds were printed (no timing assumed).
    let (mut tracer, mut err) = common::attach(spin.id(), &["--print", &w, "libc:*"], "attached");
    let mut hits = BufReader::new(tracer.stdout.take().unwrap());
    let (mut seen_work, mut seen_usleep) = (false, false);
    while !(seen_work && seen_usleep) {
        let mut hit = String::new();
        assert!(hits.read_line(&mut hit).unwrap() > 0, "probe ended early");
        seen_work |= hit.trim_end().ends_with(" workload:work");
        seen_usleep |= hit.trim_end().ends_with(" libc.so.6:usleep");
    }
    send_signal(tracer.id(), sig);
    let status = tracer.wait().unwrap();
    let mut out = String::new();
    hits.read_to_string(&mut out).unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("detached from process"), "{rest}");
    assert!(count(&out, "workload:work") >= 1, "{out}");
    assert!(count(&out, "libc.so.6:usleep") >= 1, "{out}");
    // The tracee runs on, with every byte of its text as on disk.
    std::thread::sleep(Duration::from_millis(50));
    if let Some(st) = spin.try_wait().unwrap() {
        panic!("the tracee died: {st:?}; probe said: {rest}");
    }
    assert_text_matches_disk(spin.id());
    spin.kill().unwrap();
    spin.wait().unwrap();
}

fn send_signal(pid: u32, sig: i32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn sigint_detaches_from_an_attached_process_and_restores_its_text() {
    attach_then_signal(libc::SIGINT);
}

#[test]
fn sigterm_detaches_from_an_attached_process_and_restores_its_text() {
    attach_then_signal(libc::SIGTERM);
}

#[test]
fn sigterm_to_probe_reaches_a_spawned_command_after_detach() {
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", &format!("{}:work", workload()), "--"])
        .arg(workload())
        .arg("spin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tracer.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    std::thread::sleep(Duration::from_millis(200));
    send_signal(tracer.id(), libc::SIGTERM);
    let status = tracer.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    // The command died of the SIGTERM passed on: 128 + 15, as a shell reports it.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest}");
    assert!(count(&rest, "workload:work") > 10, "{rest}");
}

#[test]
fn a_spec_that_cannot_be_probed_names_the_cause_and_runs_nothing() {
    // `kind_syscall` starts with `syscall`, which cannot run out of line.
    let o = trace_workload(&["W:work", "W:kind_syscall"], &["calls", "3"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("cannot probe workload:kind_syscall"), "{e}");
    assert!(
        e.contains("system-call instructions cannot be probed"),
        "{e}"
    );
    assert!(
        !text(&o.stdout).contains("work calls"),
        "the command must not run"
    );
}

#[test]
fn exec_while_other_threads_sit_in_slots() {
    let o = trace_workload(
        &["W:work", "W:kind_boosted", "W:kind_step"],
        &["threxec", "100"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "work calls:"), 10);
    assert_eq!(count(&out, "workload:work"), 10);
    assert!(count(&out, "workload:kind_boosted") > 100, "{out}");
}

#[test]
fn exit_while_other_threads_sit_in_slots() {
    let o = trace_workload(&["W:kind_boosted", "W:kind_step"], &["threxit", "100"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(out.starts_with("exiting\n"), "{out}");
    assert!(count(&out, "workload:kind_step") > 100, "{out}");
}

#[test]
fn return_probes_count_every_return_of_a_recursion_and_show_return_values() {
    let o = trace_workload(&["uretprobe:W:fib"], &["recurse", "15"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(printed(&out, "fib calls:"), 1973);
    assert_eq!(count(&out, "uretprobe:workload:fib"), 1973);
    let o = trace_workload(&["uretprobe:W:work", "--print"], &["calls", "3"]);
    let out = text(&o.stdout);
    // work(i) returns 2i + 1.
    let rets: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("uretprobe:workload:work ret="))
        .collect();
    assert_eq!(rets.len(), 3, "{out}");
    assert!(rets[2].contains(" ret=0x5 duration="), "{}", rets[2]);
}

/// `sh -c 'exec 3<&0; workload lines <&3 & echo main'` under `probe trace W:work`, its stdin
/// and stdout ours; returns probe (the guardian), its stdout, and once `sh` has exited (the
/// tracer has no child left: `lines` was reparented, still traced).
fn command_leaving_a_descendant() -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let w = workload();
    let script = format!("exec 3<&0; {w} lines <&3 & echo main");
    let mut probe = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args([
            "trace",
            &format!("{w}:work"),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(probe.stdout.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{seen:?}");
        seen.push(line);
    }
    seen.sort();
    assert_eq!(seen, ["main\n", "ready\n"]);
    let tracer = {
        let c = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", probe.id()));
        c.unwrap().trim().parse::<u32>().unwrap()
    };
    while !std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
        .unwrap()
        .trim()
        .is_empty()
    {
        std::thread::yield_now();
    }
    (probe, out)
}

/// Issue 13, item 2: a descendant that outlives the command is followed until it exits
/// (as `strace -f` does); stopped early, the summary names it.
#[test]
fn descendants_outliving_the_command_are_followed_to_their_end() {
    use std::io::Write;
    let (mut probe, mut out) = command_leaving_a_descendant();
    writeln!(probe.stdin.as_mut().unwrap(), "7").unwrap();
    let mut answer = String::new();
    out.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("work calls: 7 "), "{answer}");
    drop(probe.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = probe.wait().unwrap();
    let err = common::stderr_of(&mut probe);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(count(&rest, "workload:work"), 7, "{rest}{err}");
    assert!(!err.contains("still running"), "{err}");

    // Stopped (SIGTERM to probe) while only the descendant is left: it is let go, named.
    let (mut probe, mut out) = command_leaving_a_descendant();
    let mut stdin = probe.stdin.take().unwrap(); // kept open across probe's wait
    send_signal(probe.id(), libc::SIGTERM);
    let status = probe.wait().unwrap();
    // It runs on untraced (and holds probe's stderr until it ends).
    writeln!(stdin, "3").unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let err = common::stderr_of(&mut probe);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("descendants still running were detached"),
        "{err}"
    );
    assert!(rest.contains("\nwork calls: 3 "), "{rest}");
    assert_eq!(count(&rest, "workload:work"), 0, "{rest}");
}

/// Issue 13, item 6: `--str N` on a function's argument reads the C string it points to.
#[test]
fn str_shows_a_function_argument_as_a_string() {
    // `ls` looks up its locale: setlocale(LC_ALL, "") asks getenv("LC_ALL") first.
    let o = probe(&[
        "trace",
        "libc:getenv",
        "--print",
        "--str",
        "0",
        "--",
        "/bin/ls",
        "/",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let hits: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("libc.so.6:getenv arg0="))
        .collect();
    assert!(!hits.is_empty(), "{out}");
    assert!(
        hits.iter().all(|l| l.trim_end().ends_with('"')),
        "every argument shown as a string: {out}"
    );
    assert!(
        hits.iter()
            .any(|l| l.trim_end().ends_with("arg0=\"LC_ALL\"")),
        "{out}"
    );
}
