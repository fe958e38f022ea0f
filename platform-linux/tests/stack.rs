//! `--stack` and `--folded` (issue 13, item 10) against `tests/programs/stack.c`, a known
//! call chain `main -> a -> b -> c` (and `main -> c` once) built with frame pointers,
//! without, and with frame pointers but no call-frame information, and against
//! `python3.11` under `libc:malloc`.

mod common;
use common::{probe, program, text};
use std::path::PathBuf;

/// The `@[` ... `]: N` stack blocks of the output: (frames innermost first, count).
fn stacks(stdout: &str) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in stdout.lines() {
        if l == "@[" {
            cur = Some(Vec::new());
        } else if let (Some(frames), Some(n)) = (cur.as_mut(), l.strip_prefix("]: ")) {
            out.push((core::mem::take(frames), n.parse().unwrap()));
            cur = None;
        } else if let Some(frames) = cur.as_mut() {
            assert!(l.starts_with("    "), "a frame line is indented: {l:?}");
            frames.push(l.trim().to_owned());
        }
    }
    out
}

/// A frame's function without its `+offset`.
fn func(frame: &str) -> &str {
    frame.rsplit_once('+').map_or(frame, |(f, _)| f)
}

/// A fresh path for each call: tests that trace the same program run in parallel in one
/// process, and one must not remove the file another is about to read.
fn folded_path(name: &str) -> PathBuf {
    static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("probe-folded-{name}-{}-{n}", std::process::id()))
}

/// Traces `prog 5` with `--stack` on `c` (plus `extra` specs) and checks the two chains.
fn check_chain(prog: &str, extra: &[&str]) {
    let p = program(prog);
    let p = p.to_str().unwrap();
    let c = format!("{p}:c");
    let folded = folded_path(prog);
    let folded_s = folded.to_str().unwrap();
    let mut args = vec!["trace", "--stack", "--folded", folded_s, &c];
    let extra: Vec<String> = extra
        .iter()
        .map(|s| s.replace("P:", &format!("{p}:")))
        .collect();
    args.extend(extra.iter().map(String::as_str));
    args.extend(["--", p, "5"]);
    let out = probe(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    // 5 * (0*3+... ): the program ran as untraced.
    assert!(stdout.starts_with("sum 156\n"), "{stdout}");
    let got = stacks(&stdout);
    assert_eq!(got.len(), 2, "two distinct stacks:\n{stdout}");
    // Least frequent first, as bpftrace sorts.
    let (direct, n1) = &got[0];
    let (chain, n5) = &got[1];
    assert_eq!((*n1, *n5), (1, 5), "{stdout}");
    let names = |f: &[String]| f.iter().map(|s| func(s).to_owned()).collect::<Vec<_>>();
    let chain = names(chain);
    let direct = names(direct);
    assert_eq!(chain[..4], ["c", "b", "a", "main"], "{prog}: {stdout}");
    assert_eq!(direct[..2], ["c", "main"], "{prog}: {stdout}");
    // Below main: libc's start code, then `_start` outermost.
    assert_eq!(chain.last().map(String::as_str), Some("_start"), "{stdout}");
    assert!(chain.iter().any(|f| f == "__libc_start_main"), "{stdout}");
    // The probe is on c's first instruction.
    assert_eq!(got[1].0[0], "c+0", "{stdout}");
    let f = std::fs::read_to_string(&folded).unwrap();
    let _ = std::fs::remove_file(&folded);
    let lines: Vec<&str> = f.lines().collect();
    assert_eq!(lines.len(), 2, "{f}");
    let want_chain = chain.iter().rev().cloned().collect::<Vec<_>>().join(";") + " 5";
    let want_direct = direct.iter().rev().cloned().collect::<Vec<_>>().join(";") + " 1";
    assert!(
        lines.contains(&want_chain.as_str()),
        "{f}\nwant {want_chain}"
    );
    assert!(
        lines.contains(&want_direct.as_str()),
        "{f}\nwant {want_direct}"
    );
    assert!(want_chain.ends_with(";main;a;b;c 5"), "{want_chain}");
}

#[test]
fn a_known_chain_with_frame_pointers() {
    check_chain("stack-fp", &[]);
}

#[test]
fn a_known_chain_without_frame_pointers_by_cfi() {
    check_chain("stack-nofp", &[]);
}

#[test]
fn a_known_chain_by_frame_pointers_without_cfi() {
    check_chain("stack-fp-nocfi", &[]);
}

#[test]
fn return_probed_frames_are_walked_through_the_trampoline() {
    // b's and a's return addresses are the trampoline while c runs.
    for prog in ["stack-fp", "stack-nofp", "stack-fp-nocfi"] {
        check_chain(prog, &["uretprobe:P:b", "uretprobe:P:a"]);
    }
}

#[test]
fn python_under_malloc_folds_with_malloc_innermost() {
    let python = "/usr/bin/python3.11";
    let folded = folded_path("python");
    let out = probe(&[
        "trace",
        "--folded",
        folded.to_str().unwrap(),
        "libc:malloc",
        "--",
        python,
        "-c",
        "import json; print(len(json.dumps(list(range(1000)))))",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.starts_with("4890\n"), "{stdout}");
    // Without --stack the stacks go to the file only.
    assert!(!stdout.contains("\n@[\n"), "{stdout}");
    let hits: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@[libc.so.6:malloc]: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no malloc count in {stdout}"));
    let f = std::fs::read_to_string(&folded).unwrap();
    let _ = std::fs::remove_file(&folded);
    let mut total = 0;
    let mut named_python = 0;
    for l in f.lines() {
        let (stack, n) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("no count: {l:?}"));
        total += n;
        let frames: Vec<&str> = stack.split(';').collect();
        assert_eq!(frames.last(), Some(&"malloc"), "malloc is innermost: {l}");
        if frames.contains(&"Py_BytesMain") && frames.contains(&"_PyEval_EvalFrameDefault") {
            named_python += n;
        }
    }
    // Every hit is in exactly one line.
    assert_eq!(total, hits, "{f}");
    // Most allocations are made by the interpreter, under its evaluation loop.
    assert!(named_python * 2 > hits, "{named_python} of {hits}:\n{f}");
}

#[test]
fn a_folded_file_that_cannot_be_written_is_refused_before_tracing() {
    let out = probe(&[
        "trace",
        "--folded",
        "/nonexistent-dir/x.folded",
        "libc:malloc",
        "--",
        "/bin/true",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open --folded file /nonexistent-dir/x.folded"),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "nothing was traced: {stderr}");
}

#[test]
fn stacks_are_taken_under_ret_by_insn_too() {
    // Entry probes then count calls through `--ret-by-insn`'s own consumer.
    check_chain("stack-nofp", &["--ret-by-insn", "uretprobe:P:b"]);
}
