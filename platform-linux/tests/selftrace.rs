//! A traced program's own `ptrace` calls (issue 13, item 8): while `probe` follows a
//! program's children, the program cannot trace them (a process has one tracer), and its
//! `PTRACE_TRACEME` or `PTRACE_SEIZE` fails with EPERM. The program still runs to its end,
//! and `probe` says why the call failed. Against `tests/programs/selftrace.c`.

mod common;
use common::{probe, program, text};
use std::process::Command;

/// The untraced program's line for `mode`: its own `ptrace` works.
fn untraced(mode: &str) -> String {
    let out = Command::new(program("selftrace"))
        .arg(mode)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
}

fn traced(mode: &str) -> (String, String) {
    let prog = program("selftrace");
    let spec = format!("uprobe:{}:work", prog.display());
    let out = probe(&["trace", &spec, "--", prog.to_str().unwrap(), mode]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("@[selftrace:work]: 1"), "{stdout}");
    (stdout, text(&out.stderr))
}

#[test]
fn a_followed_child_asking_to_be_traced_is_told_why_it_cannot() {
    assert_eq!(untraced("traceme"), "traceme: ok\n");
    let (stdout, stderr) = traced("traceme");
    assert!(
        stdout.starts_with("traceme: Operation not permitted\n"),
        "{stdout}"
    );
    let warning = stderr
        .lines()
        .find(|l| l.contains("ptrace(PTRACE_TRACEME)"))
        .unwrap_or_else(|| panic!("no warning about the failed call in {stderr}"));
    assert!(warning.contains("(selftrace) called"), "{warning}");
    assert!(warning.contains("EPERM"), "{warning}");
    assert!(warning.contains("--no-follow"), "{warning}");
}

#[test]
fn seizing_a_followed_child_is_told_why_it_fails() {
    assert_eq!(untraced("seize"), "seize: ok\n");
    let (stdout, stderr) = traced("seize");
    assert!(
        stdout.starts_with("seize: Operation not permitted\n"),
        "{stdout}"
    );
    let warning = stderr
        .lines()
        .find(|l| l.contains("ptrace(PTRACE_SEIZE, "))
        .unwrap_or_else(|| panic!("no warning about the failed call in {stderr}"));
    assert!(warning.contains("probe is tracing process"), "{warning}");
    assert!(warning.contains("--no-follow"), "{warning}");
}
