//! Helpers shared by the integration tests: the test programs, running `probe`, reading its
//! output, and tracefs for the kernel-oracle tests.
#![allow(dead_code, unreachable_pub)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

pub mod programs;
pub use programs::program;

/// `workload spin`, untraced, past its "ready" line.
pub fn spin() -> Child {
    let mut child = Command::new(program("workload"))
        .arg("spin")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// `probe trace -p PID SPECS...`, past its first stderr line, which must contain `attached`.
pub fn attach(pid: u32, specs: &[&str], attached: &str) -> (Child, BufReader<ChildStderr>) {
    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "-p", &pid.to_string()])
        .args(specs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tracer.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains(attached), "{first}");
    (tracer, err)
}

/// What `tracer` wrote to its stderr, to its end.
pub fn stderr_of(tracer: &mut Child) -> String {
    let mut err = String::new();
    tracer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Run the `probe` binary with `args` (no stdin).
pub fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run probe")
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `@[name]: count` lines of a summary.
pub fn counts(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("@[")?;
            let (name, n) = rest.rsplit_once("]: ")?;
            Some((name.to_owned(), n.parse().ok()?))
        })
        .collect()
}

/// The count of `name` in a summary (its `@[name]: N` line).
pub fn count(stdout: &str, name: &str) -> u64 {
    counts(stdout)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no count for {name} in:\n{stdout}"))
        .1
}

/// The number after `@TAG[name]: ` (its leading digits).
pub fn value(stdout: &str, tag: &str, name: &str) -> Option<u64> {
    let head = format!("@{tag}[{name}]: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

/// The `count N` of a latency histogram's header.
pub fn latency_count(stdout: &str, name: &str) -> u64 {
    let head = format!("@latency_ns[{name}]: count ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|n| n.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no histogram for {name} in:\n{stdout}"))
}

/// What the traced program printed: everything before the summary's first `@[`.
pub fn program_output(stdout: &str) -> &str {
    match stdout.find("\n@[") {
        Some(i) => &stdout[..i],
        None => stdout,
    }
}

/// The tracefs directory with `uprobe_events`, mounting tracefs if needed and possible.
pub fn tracefs() -> Result<PathBuf, String> {
    for d in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(d).join("uprobe_events").exists() {
            return Ok(PathBuf::from(d));
        }
    }
    let d = "/sys/kernel/tracing";
    let out = Command::new("mount")
        .args(["-t", "tracefs", "nodev", d])
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if Path::new(d).join("uprobe_events").exists() {
        return Ok(PathBuf::from(d));
    }
    Err(format!(
        "no tracefs with uprobe_events (mounting it at {d} failed: {}); needs root and a \
         kernel with CONFIG_UPROBE_EVENTS",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(format!("{line}\n").as_bytes())
}

/// Compares every executable file mapping of `pid` with the file on disk.
pub fn assert_text_matches_disk(pid: u32) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut checked = 0;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
            continue;
        }
        let (a, b) = f[0].split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let off = u64::from_str_radix(f[2], 16).unwrap();
        let mut live = vec![0u8; (b - a) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut live, a).unwrap();
        let disk = std::fs::read(f[5]).unwrap();
        let end = ((off as usize) + live.len()).min(disk.len());
        let disk = &disk[off as usize..end];
        let diffs = live
            .iter()
            .zip(disk)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, _)| a + i as u64)
            .collect::<Vec<_>>();
        assert!(
            diffs.is_empty(),
            "{} differs from the file at {:x?}",
            f[5],
            &diffs[..diffs.len().min(8)]
        );
        checked += 1;
    }
    assert!(checked >= 3, "{maps}");
}
