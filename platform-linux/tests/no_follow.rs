//! `--no-follow` and set-ID programs (issue 13, item 8), against real programs:
//! `tests/programs/selftrace.c`, which uses ptrace itself and forks children that call the
//! probed function, `ret_prog.c` (a fork inside a return-probed function, threads) and a
//! set-user-ID copy of `/usr/bin/id`.
//!
//! Without `--no-follow` every child is traced, so a child's own `PTRACE_TRACEME` (or its
//! parent's `PTRACE_ATTACH` to it) fails; with it, a fork child is let go before it runs,
//! with nothing of ours left in its memory, and only the traced process is counted.

mod common;
use common::{count, program, program_output, text};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

/// `probe trace ARGS... -- PROG PARGS...`, with `P:` in ARGS standing for the program.
fn trace(args: &[&str], prog: &str, pargs: &[&str]) -> Output {
    let p = program(prog).display().to_string();
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .arg("trace")
        .args(args.iter().map(|s| s.replace("P:", &format!("{p}:"))))
        .arg("--")
        .arg(&p)
        .args(pargs)
        .stdin(Stdio::null())
        .output()
        .expect("run probe")
}

fn untraced(prog: &str, pargs: &[&str]) -> Output {
    Command::new(program(prog)).args(pargs).output().unwrap()
}

/// Traced with `--no-follow` and untraced: same output and status, no warning, the child
/// named as let go; returns the tracer's stdout.
fn same_as_untraced_not_following(args: &[&str], prog: &str, pargs: &[&str]) -> String {
    let mut v = vec!["--no-follow"];
    v.extend_from_slice(args);
    let o = trace(&v, prog, pargs);
    let u = untraced(prog, pargs);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), u.status.code(), "{err}\n{out}");
    assert_eq!(program_output(&out), text(&u.stdout), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(err.contains("--no-follow: process(es) "), "{err}");
    assert!(
        err.contains(" started by the traced process ran untraced"),
        "{err}"
    );
    out
}

#[test]
fn no_follow_counts_only_the_traced_process_and_its_fork_child_runs_unharmed() {
    // The child calls work() 100 times through the breakpoint it inherited, untraced: it
    // must have been taken out of its memory (else SIGTRAP kills it, status 133).
    let out = same_as_untraced_not_following(&["P:work"], "selftrace", &["plain", "100"]);
    assert!(out.contains("child status 0,"), "{out}");
    assert_eq!(count(&out, "selftrace:work"), 100);
    // Followed (the default), the child's calls count too.
    let o = trace(&["P:work"], "selftrace", &["plain", "100"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(count(&text(&o.stdout), "selftrace:work"), 200);
}

/// selftrace MODE 100 with `--no-follow`: its own ptrace calls work (`MODE: ptrace ok`) and
/// only the parent's calls count; followed (the default), they fail with `failure`, and
/// probe's warning names the call (`call`), says why it failed and points at `--no-follow`.
fn its_own_ptrace_works_only_unfollowed(mode: &str, failure: &str, call: &str) {
    let out = same_as_untraced_not_following(&["P:work"], "selftrace", &[mode, "100"]);
    assert!(out.contains(&format!("{mode}: ptrace ok,")), "{out}");
    assert_eq!(count(&out, "selftrace:work"), 100);
    let o = trace(&["P:work"], "selftrace", &[mode, "100"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(failure), "{out}");
    let err = text(&o.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains(call))
        .unwrap_or_else(|| panic!("no warning naming {call} in {err}"));
    assert!(warning.contains("(selftrace) called"), "{warning}");
    assert!(warning.contains("fails with EPERM"), "{warning}");
    assert!(warning.contains("probe is tracing process"), "{warning}");
    assert!(warning.contains("--no-follow"), "{warning}");
}

#[test]
fn a_child_calling_ptrace_traceme_works_under_no_follow() {
    // Followed, the child is ours already: its PTRACE_TRACEME fails.
    its_own_ptrace_works_only_unfollowed(
        "traceme",
        "child: PTRACE_TRACEME failed",
        "ptrace(PTRACE_TRACEME)",
    );
}

#[test]
fn a_parent_attaching_to_its_child_works_under_no_follow() {
    its_own_ptrace_works_only_unfollowed(
        "attach",
        "parent: PTRACE_ATTACH failed",
        "ptrace(PTRACE_ATTACH, ",
    );
}

#[test]
fn a_vfork_child_is_let_go_at_its_exec() {
    let out = same_as_untraced_not_following(&["P:work"], "selftrace", &["vfork", "100"]);
    assert!(out.contains("vfork child exit 0 sum 5050"), "{out}");
    assert_eq!(count(&out, "selftrace:work"), 100);
}

#[test]
fn a_fork_child_let_go_inside_a_return_probed_function_returns_normally() {
    // forking() forks: the child's copy of the stack holds the trampoline as forking()'s
    // return address; let go, it must return to the real one (else SIGTRAP kills it).
    let out = same_as_untraced_not_following(&["uretprobe:P:forking"], "ret-prog", &["fork"]);
    assert!(out.contains("child returned 100\n"), "{out}");
    assert!(out.contains("parent returned 200, child exit 5\n"), "{out}");
    assert_eq!(count(&out, "uretprobe:ret-prog:forking"), 1);
}

#[test]
fn threads_of_the_traced_process_are_still_traced_under_no_follow() {
    let o = trace(
        &["--no-follow", "P:leaf"],
        "ret-prog",
        &["threads", "4", "500"],
    );
    let u = untraced("ret-prog", &["threads", "4", "500"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(program_output(&out), text(&u.stdout));
    assert_eq!(count(&out, "ret-prog:leaf"), 2000);
    assert!(
        !text(&o.stderr).contains("--no-follow:"),
        "{}",
        text(&o.stderr)
    );
}

/// A set-user-ID-root copy of `id` run by an unprivileged user: `id -u` prints 0 untraced,
/// and under `probe` (run by that user, no CAP_SYS_PTRACE) the kernel drops the privilege:
/// it prints the user's uid, and `probe` warns once. Needs root to make the copy and to run
/// as another user.
#[test]
fn a_setuid_program_started_under_the_tracer_is_warned_about() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    if euid != "0" {
        eprintln!("skipped: making a set-user-ID-root program and switching users needs root");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = dir.join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let as_nobody = |prog: &str, args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", prog])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv (util-linux)")
    };
    let idp = id.display().to_string();
    let u = as_nobody(&idp, &["-u"]);
    let o = as_nobody(
        env!("CARGO_BIN_EXE_probe"),
        &["trace", "libc:geteuid", "--", &idp, "-u"],
    );
    // As root, nothing is lost: no warning.
    let root = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "libc:geteuid", "--", &idp, "-u"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(text(&u.stdout), "0\n");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(program_output(&out), "65534\n", "{err}");
    let warning = format!(
        "probe: warning: {idp} is set-user-ID (to uid 0): traced, it runs without those \
         privileges (with uid 65534 and gid 65534"
    );
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
    assert!(
        text(&root.stdout).starts_with("0\n"),
        "{}",
        text(&root.stderr)
    );
    assert!(
        !text(&root.stderr).contains("warning"),
        "{}",
        text(&root.stderr)
    );
}
