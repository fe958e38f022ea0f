//! Issue 13, items 1 and 4: every point a spec matches is attached or skipped with its true
//! reason (counted per reason, listed with `--verbose`), a full slot table never costs an
//! attached probe its hits, and specs are resolved again in each new image (a wrapper
//! script's `exec`, a `dlopen`), with a warning at the end for a spec that matched nothing.

mod common;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{probe, program, program_output, text};
use platform_linux::tracer::skips::SkipReason;
use platform_linux::tracer::{Outcome, Session, SessionOptions};
use probe_core::{Capacity, Reject};

fn spawn(prog: &Path, args: &[&str]) -> Session {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Session::spawn(prog.as_os_str(), &args, SessionOptions::default()).unwrap()
}

/// A fresh directory under the test target's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resolution-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A shell script at `path` that execs `target` with its arguments.
fn wrapper(path: &Path, target: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", target.display()),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn each_skipped_function_is_counted_under_its_own_reason() {
    let prog = program("skips").display().to_string();
    let skips = format!("{prog}:skip_*");
    let oks = format!("{prog}:ok_*");
    let o = probe(&["trace", &skips, &oks, "--", &prog, "calls", "5"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert_eq!(program_output(&out), "45\n", "{out}");
    assert!(out.contains("@[skips:ok_one]: 5") && out.contains("@[skips:ok_two]: 5"));
    // skip_outer is probed; the seven others are skipped, each for its reason.
    assert!(
        err.contains("7 of the 8 points it matched were skipped"),
        "{err}"
    );
    assert!(err.contains("attached 3 probes"), "{err}");
    for line in [
        "2 skipped: their first instruction traps by itself",
        "1 skipped: their first instruction is privileged",
        "1 skipped: their first instruction is port I/O",
        "1 skipped: their first instruction is a system call",
        "1 skipped: they start inside the first instruction of another probed function",
        "1 skipped: their symbols are not in executable code",
    ] {
        assert!(err.contains(line), "no `{line}` in:\n{err}");
    }
    assert!(err.contains("--verbose lists them"), "{err}");
    assert!(
        !err.contains("skip_int3"),
        "listed without --verbose:\n{err}"
    );

    // --verbose: every skipped function, its file offset and its own reason.
    let o = probe(&["trace", "--verbose", &skips, "--", &prog, "calls", "1"]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    for (func, why) in [
        (
            "skip_int3",
            "its first instruction, `int3`, traps by itself",
        ),
        ("skip_ud2", "its first instruction, `ud2`, traps by itself"),
        ("skip_hlt", "its first instruction, `hlt`"),
        ("skip_inb", "its first instruction, `in`"),
        ("skip_syscall", "its first instruction, `syscall`"),
        (
            "skip_inner",
            "starts inside the first instruction of skips:skip_outer",
        ),
        ("skip_data", "not in an executable segment"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("skips:{func} (file offset 0x")))
            .unwrap_or_else(|| panic!("{func} not listed:\n{err}"));
        assert!(line.contains(why), "{func}: {line}");
    }
}

#[test]
fn a_glob_accounts_for_every_function_it_matches() {
    for (prog, spec) in [("skips", "libc:*"), ("many", "many:*")] {
        let path = program(prog);
        let mut s = spawn(&path, &["mallocs", "10"]);
        let spec = match spec {
            "many:*" => format!("{}:*", path.display()),
            s => s.to_owned(),
        };
        let r = s.add_spec(&spec).unwrap();
        assert_eq!(
            r.added + r.duplicates + r.skipped.len(),
            r.matched,
            "{spec}"
        );
        // Every match is a function of the file, once per address.
        assert!(r.matched > 2000, "{spec}: {}", r.matched);
        let attached = s.probes().iter().filter(|p| p.error.is_none()).count();
        assert_eq!(attached, r.added, "{spec}");
        if prog == "many" {
            // More functions than a process's slot area holds: the rest are skipped, and
            // said so, never lost after being attached.
            let full = r
                .skipped
                .iter()
                .filter(|k| k.reason == SkipReason::Capacity(Capacity::XolSlots))
                .count();
            assert!(full > 5000, "{full}");
            assert!(r.skipped.iter().any(|k| matches!(
                k.reason,
                SkipReason::Instruction {
                    reject: Reject::Trap,
                    ..
                }
            )));
        }
        assert_eq!(s.run(&mut |_, _| {}).unwrap(), Outcome::Exited(0));
    }
}

#[test]
fn malloc_counts_stay_exact_when_the_slot_table_fills() {
    // 140 000 functions of the program and all of libc after malloc and free: more than
    // a process's slot area holds. The probes attached first keep their slots when libc is
    // mapped; what did not fit is skipped and reported at the start.
    let many = program("many").display().to_string();
    let all = format!("{many}:*");
    let o = probe(&[
        "trace",
        "libc:malloc",
        "libc:free",
        &all,
        "libc:*",
        "--",
        &many,
        "mallocs",
        "1000",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert_eq!(program_output(&out), "1000\n", "{out}");
    assert!(out.contains("@[libc.so.6:malloc]: 1000\n"), "{out}");
    assert!(out.contains("@[libc.so.6:free]: 1000\n"), "{out}");
    assert!(
        err.contains("skipped: they need an out-of-line slot"),
        "{err}"
    );
    assert!(!err.contains("could not be installed"), "{err}");
}

#[test]
fn a_wrapper_script_is_followed_to_the_program_it_execs() {
    let real = program("hits");
    let dir = temp_dir("wrapper");
    let hits = dir.join("hits");
    wrapper(&hits, &real);
    let cmd = hits.display().to_string();
    // The short name: found nowhere before the command starts (the wrapper is no ELF file),
    // placed when the exec'd program maps it.
    for spec in ["hits:probe_target", "uprobe:probe_target"] {
        let o = probe(&["trace", spec, "--", &cmd, "25"]);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{spec}: {err}");
        assert_eq!(program_output(&out), "625\n", "{out}");
        assert!(
            out.contains("@[hits:probe_target]: 25\n"),
            "{spec}: {out}\n{err}"
        );
        assert!(err.contains("resolved in"), "{spec}: {err}");
        assert!(!err.contains("matched nothing"), "{spec}: {err}");
    }

    // As with pyenv's shims: the short name finds another file of that name first (here an
    // executable `hits` on PATH), which the wrapper does not run.
    let other = dir.join("bin");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(program("hits-nopie"), other.join("hits")).unwrap();
    let path = format!("{}:{}", other.display(), std::env::var("PATH").unwrap());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["trace", "hits:probe_target", "--", &cmd, "25"])
        .env("PATH", path)
        .output()
        .unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("@[hits:probe_target]: 25\n"), "{out}\n{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_library_named_by_its_short_name_is_resolved_when_dlopen_maps_it() {
    // libplugin.so is in no library directory: found only when the program maps it.
    let w = program("workload").display().to_string();
    let lib = program("libplugin.so").display().to_string();
    let o = probe(&[
        "trace",
        "libplugin:plugin_fn",
        "--",
        &w,
        "dlopen",
        &lib,
        "40",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("plugin calls: 80"), "{out}");
    assert!(
        out.contains("@[libplugin.so:plugin_fn]: 80\n"),
        "{out}\n{err}"
    );
    assert!(
        err.contains("is placed when a traced process maps"),
        "{err}"
    );
    assert!(!err.contains("matched nothing"), "{err}");
}

#[test]
fn a_spec_that_matched_nothing_is_warned_about_at_the_end() {
    let prog = program("skips").display().to_string();
    let ok = format!("{prog}:ok_one");
    // A library the program never loads, and a short name no file has.
    let lib = format!("{}:plugin_fn", program("libplugin.so").display());
    let o = probe(&[
        "trace",
        &ok,
        &lib,
        "libnosuchlibrary_xyz:f",
        "--",
        &prog,
        "calls",
        "3",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("@[skips:ok_one]: 3"), "{out}");
    let warned = |spec: &str| {
        err.lines().any(|l| {
            l.contains("warning")
                && l.contains(&format!("`{spec}` matched nothing in any traced process"))
        })
    };
    assert!(warned(&lib), "{err}");
    assert!(warned("libnosuchlibrary_xyz:f"), "{err}");
    assert!(!warned(&ok), "{err}");
    assert!(err.contains("which no traced process mapped"), "{err}");
}
