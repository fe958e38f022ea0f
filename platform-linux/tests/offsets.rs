//! Probe offsets (issue 12 d): a probe inside an instruction, a return probe (or `--latency`)
//! anywhere but a function's entry are refused with the reason, before the program runs one
//! instruction; offsets on instruction boundaries, by `SYMBOL+OFF` or raw file offset, work
//! and count exactly.

mod common;

use common::{probe, program, text};

fn workload() -> String {
    program("workload").display().to_string()
}

/// `probe trace SPEC [extra] -- workload one emulated 50`.
fn trace(spec: &str, extra: &[&str]) -> std::process::Output {
    let w = workload();
    let mut args = vec!["trace", spec];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &w, "one", "emulated", "50"]);
    probe(&args)
}

/// The file offset of `kind_emulated`, from `probe list`.
fn kind_emulated_offset() -> u64 {
    let o = probe(&["list", &workload(), "kind_emulated"]);
    let out = text(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.ends_with(" kind_emulated"))
        .unwrap_or_else(|| panic!("{out}"));
    u64::from_str_radix(
        line.split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

fn refused(o: &std::process::Output, why: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(why), "{err}");
    assert!(
        text(&o.stdout).is_empty(),
        "nothing ran: {}",
        text(&o.stdout)
    );
}

fn counted(o: &std::process::Output, name: &str, n: u64) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let want = format!("@[{name}]: {n}");
    assert!(
        text(&o.stdout).contains(&want),
        "{want} in {}",
        text(&o.stdout)
    );
}

// kind_emulated: endbr64 (4 bytes) at +0, push %rbp (1) at +4, mov %rsp,%rbp (3) at +5,
// lea 1(%rdi),%rax at +8.

#[test]
fn an_offset_inside_an_instruction_is_refused_with_the_instruction_named() {
    let w = workload();
    for off in ["1", "3", "6"] {
        let o = trace(&format!("uprobe:{w}:kind_emulated+{off}"), &[]);
        refused(&o, "is inside the instruction at kind_emulated+");
    }
    let o = trace(&format!("uprobe:{w}:kind_emulated+6"), &[]);
    refused(
        &o,
        "inside the instruction at kind_emulated+0x5 (the next one starts at kind_emulated+0x8)",
    );
    // libc's malloc+1, as in the issue.
    let o = probe(&["trace", "uprobe:libc:malloc+1", "--", "/bin/true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("malloc+0x1 is inside the instruction"),
        "{err}"
    );
}

#[test]
fn offsets_on_instruction_boundaries_count_exactly() {
    let w = workload();
    for off in ["4", "5", "8"] {
        let o = trace(&format!("uprobe:{w}:kind_emulated+{off}"), &[]);
        counted(
            &o,
            &format!("workload:kind_emulated+{off:#}").replace("+", "+0x"),
            50,
        );
    }
}

#[test]
fn raw_file_offsets_are_checked_against_the_containing_function() {
    let w = workload();
    let base = kind_emulated_offset();
    let o = trace(&format!("uprobe:{w}:{:#x}", base + 2), &[]);
    refused(
        &o,
        "kind_emulated+0x2 is inside the instruction at kind_emulated+0x0",
    );
    let o = trace(&format!("uprobe:{w}:{:#x}", base + 4), &[]);
    counted(&o, "workload:kind_emulated+0x4", 50);
}

#[test]
fn return_probes_and_latency_only_at_a_function_entry() {
    let w = workload();
    let o = trace(&format!("uretprobe:{w}:kind_emulated+4"), &[]);
    refused(&o, "a return probe must be on a function's entry");
    let o = probe(&["trace", "uretprobe:libc:malloc+4", "--", "/bin/true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a return probe must be on a function's entry"),
        "{err}"
    );
    let base = kind_emulated_offset();
    let o = trace(&format!("uretprobe:{w}:{:#x}", base + 4), &[]);
    refused(&o, "a return probe must be on a function's entry");
    let o = trace(&format!("uprobe:{w}:kind_emulated+4"), &["--latency"]);
    refused(&o, "--latency times calls from a function's entry");
    // At the entry both work.
    let o = trace(&format!("uretprobe:{w}:kind_emulated"), &[]);
    counted(&o, "uretprobe:workload:kind_emulated", 50);
    let o = trace(&format!("uprobe:{w}:kind_emulated"), &["--latency"]);
    counted(&o, "workload:kind_emulated", 50);
}

/// `workload selfstep KIND 30`, untraced and with `kind_KIND` probed: the program's own
/// single-step traps are the same (no trap inside our slots, none lost to an emulation).
#[test]
fn a_program_that_single_steps_itself_sees_the_same_traps() {
    let w = workload();
    for kind in ["emulated", "boosted", "riprel", "step"] {
        let untraced = std::process::Command::new(&w)
            .args(["selfstep", kind, "30"])
            .output()
            .unwrap();
        let expected = text(&untraced.stdout);
        assert!(
            expected.contains(" foreign: 0 other traps: 0"),
            "{expected}"
        );
        let o = probe(&[
            "trace",
            &format!("uprobe:{w}:kind_{kind}"),
            "--",
            &w,
            "selfstep",
            kind,
            "30",
        ]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{kind}: {err}");
        let out = text(&o.stdout);
        assert!(
            out.starts_with(&expected),
            "{kind}: {out} against {expected}"
        );
        assert!(
            out.contains(&format!("@[workload:kind_{kind}]: 30")),
            "{out}"
        );
    }
}
