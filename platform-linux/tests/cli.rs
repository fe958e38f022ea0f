//! The `probe` binary: `probe list` against system files, and the errors of `probe trace`.

mod common;
use std::process::{Command, Output};

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(args)
        .output()
        .expect("run probe")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_libc_with_a_glob_by_short_name() {
    let o = probe(&["list", "libc", "str*"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(rows.len() > 40, "{text}");
    assert!(rows
        .iter()
        .all(|r| r.split_whitespace().nth(2).unwrap().starts_with("str")));
    assert!(rows.iter().any(|r| r.contains("strlen")));
    assert!(text.starts_with("# /"), "{text}");
    // Each row: 0x-prefixed file offset, size, name.
    let first: Vec<&str> = rows[0].split_whitespace().collect();
    assert!(first[0].starts_with("0x") && first[1].parse::<u64>().is_ok());
}

#[test]
fn list_a_stripped_binary_and_a_substring() {
    let o = probe(&["list", "/bin/ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("_obstack_begin"));
    let o = probe(&["list", "libc.so.6", "malloc"]);
    let text = stdout(&o);
    assert!(text.contains("malloc@@GLIBC_2.2.5"), "{text}");
    assert!(text.contains("malloc_usable_size"), "{text}");
}

#[test]
fn list_of_a_missing_library_names_the_search() {
    let o = probe(&["list", "libnosuchthing"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("no executable or library `libnosuchthing`"),
        "{e}"
    );
    assert!(e.contains("ldconfig -p"), "{e}");
}

#[test]
fn trace_reports_bad_specs_with_suggestions() {
    let o = probe(&["trace", "libc:mallocc", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("did you mean malloc"), "{e}");
    let o = probe(&["trace", "libc:malloc"]);
    assert!(stderr(&o).contains("-p PID"), "{}", stderr(&o));
    let o = probe(&["trace", "nocolon"]);
    assert!(stderr(&o).contains("bad probe spec"), "{}", stderr(&o));
    let o = probe(&["trace", "libc:malloc", "-p", "1", "--", "/bin/true"]);
    assert!(stderr(&o).contains("not both"), "{}", stderr(&o));
    let o = probe(&["trace", "libc:malloc", "--args", "9", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects --args 9");
}

#[test]
fn trace_without_a_file_uses_the_command() {
    let prog = common::program("hits").display().to_string();
    let o = probe(&["trace", "uprobe:probe_target", "--", &prog, "25"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The program's own output first, then the count.
    assert!(out.starts_with("625\n"), "{out}");
    assert!(out.contains("@[hits:probe_target]: 25"), "{out}");
}

/// Issue 13, item 7: `-p` on what cannot be traced names the cause.
#[test]
fn attach_errors_name_the_real_cause() {
    // No such process: pid_max itself is never a process id.
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let o = probe(&["trace", "-p", max.trim(), "libc:malloc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such process"), "{}", stderr(&o));

    // A zombie: a child of this test that exited and is not reaped yet.
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let zpid = child.id();
    let state = || {
        let s = std::fs::read_to_string(format!("/proc/{zpid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
    };
    while state() != 'Z' {
        std::thread::yield_now();
    }
    let o = probe(&["trace", "-p", &zpid.to_string(), "libc:malloc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("zombie"), "{}", stderr(&o));
    child.wait().unwrap();

    // probe itself: the shell execs into probe, so `$$` is probe's own pid.
    let o = Command::new("/bin/sh")
        .args([
            "-c",
            "exec \"$0\" trace -p $$ libc:malloc",
            env!("CARGO_BIN_EXE_probe"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("this probe itself"), "{}", stderr(&o));

    // A kernel thread (PF_KTHREAD in /proc/PID/stat's flags), if this machine shows one.
    let kthread = std::fs::read_dir("/proc").unwrap().find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let flags: u64 = s[s.rfind(')')? + 2..].split(' ').nth(6)?.parse().ok()?;
        (flags & 0x0020_0000 != 0).then_some(pid)
    });
    match kthread {
        Some(k) => {
            let o = probe(&["trace", "-p", &k.to_string(), "libc:malloc"]);
            assert_eq!(o.status.code(), Some(1));
            assert!(stderr(&o).contains("kernel thread"), "{}", stderr(&o));
        }
        None => eprintln!("NOT TESTED: no kernel thread is visible in /proc here"),
    }
}

/// Without the address space for the core's tables (`ulimit -v`), `probe` says so and what
/// refuses it, and starts nothing, instead of panicking.
#[test]
fn a_refused_core_reservation_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_probe"));
    cmd.args(["trace", "libc:malloc", "--", "/bin/echo", "started"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reserve") && err.contains("ulimit -v"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "nothing may start: {:?}", out.stdout);
}
