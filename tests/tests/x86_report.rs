//! How the x86-64 arch resumes the function-entry instructions of real binaries: the share
//! that is emulated, boosted, single-stepped or refused. Run with `--nocapture` to see it.

use std::collections::BTreeMap;

use probe_core::arch::x86_64::jump::{entry_patch_offset, jump_patch, JumpRefusal};
use probe_core::arch::x86_64::X86_64;
use probe_core::{Arch, PlanKind};
use probe_tests::x86::elf::{function_sites, functions, Site};

const BINARIES: [&str; 2] = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3.11"];

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

/// Print the shares for `entries`; returns (no-single-step share of all, of the accepted).
fn shares(bin: &str, what: &str, entries: &[&Site]) -> (f64, f64, usize) {
    {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rejects: BTreeMap<String, usize> = BTreeMap::new();
        for s in entries {
            match X86_64::analyze(&s.bytes) {
                Ok(p) => {
                    let k = match X86_64::plan_kind(&p) {
                        PlanKind::Emulate => "emulate",
                        PlanKind::Boost => "boost",
                        PlanKind::SingleStep => "single-step",
                    };
                    *kinds.entry(k).or_default() += 1;
                    *classes.entry(p.class_name()).or_default() += 1;
                }
                Err(r) => {
                    *kinds.entry("reject").or_default() += 1;
                    *rejects.entry(format!("{r:?}")).or_default() += 1;
                }
            }
        }
        let total = entries.len();
        let get = |k: &str| kinds.get(k).copied().unwrap_or(0);
        let one_trap = get("emulate") + get("boost");
        let accepted = total - get("reject");
        println!("{bin}: {total} {what}");
        for k in ["emulate", "boost", "single-step", "reject"] {
            println!("  {k:<12} {:>6}  {:5.1}%", get(k), pct(get(k), total));
        }
        println!(
            "  no single-step needed: {:.2}% of all entries, {:.2}% of the accepted ones",
            pct(one_trap, total),
            pct(one_trap, accepted)
        );
        let mut top: Vec<_> = classes.into_iter().collect();
        top.sort_by_key(|e| core::cmp::Reverse(e.1));
        let line: Vec<String> = top.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("  classes: {}", line.join(", "));
        let mut top: Vec<_> = rejects.into_iter().collect();
        top.sort_by_key(|e| core::cmp::Reverse(e.1));
        let line: Vec<String> = top.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("  reject reasons: {}", line.join(", "));
        (pct(one_trap, total), pct(one_trap, accepted), total)
    }
}

#[test]
fn function_entry_plan_shares() {
    for bin in BINARIES {
        let Ok(sites) = function_sites(bin, 6) else {
            println!("{bin}: not readable, skipped");
            continue;
        };
        let entries: Vec<_> = sites.iter().filter(|s| s.nth == 0).collect();
        let (all, accepted, total) = shares(bin, "function entries", &entries);
        assert!(total > 100, "{bin}: too few functions found ({total})");
        assert!(
            all >= 95.0,
            "{bin}: only {all:.2}% of entries avoid single-step"
        );
        assert!(
            accepted >= 95.0,
            "{bin}: only {accepted:.2}% of accepted entries"
        );
        let first: Vec<_> = sites.iter().collect();
        shares(
            bin,
            "instructions among the first 6 of each function",
            &first,
        );
    }
}

/// The refusal's kind, for counting.
fn refusal_name(r: &JumpRefusal) -> &'static str {
    match r {
        JumpRefusal::TooShort { .. } => "too short",
        JumpRefusal::Branch { .. } => "branch, call or ret in the displaced bytes",
        JumpRefusal::NotRelocatable { .. } => "displaced instruction not relocatable",
        JumpRefusal::BranchIntoDisplaced { .. } => "branch into the displaced bytes",
        JumpRefusal::IndirectJump { .. } => "indirect jump in the function",
        JumpRefusal::Undecodable { .. } => "undecodable bytes in the function",
    }
}

/// The share of function entries a 5-byte jump could replace (issue 11: optprobes in the
/// traced process), and why the others cannot take one.
#[test]
fn function_entry_jump_patch_shares() {
    for bin in BINARIES {
        let Ok(funcs) = functions(bin) else {
            println!("{bin}: not readable, skipped");
            continue;
        };
        let mut ok = 0usize;
        let mut rip = 0usize;
        let mut why: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, body) in &funcs {
            match jump_patch(body, entry_patch_offset(body)) {
                Ok(p) => {
                    ok += 1;
                    rip += usize::from(p.rip_relative);
                    assert!(p.displaced >= 5 && p.at + p.displaced <= body.len());
                }
                Err(r) => *why.entry(refusal_name(&r)).or_default() += 1,
            }
        }
        let total = funcs.len();
        assert!(total > 100, "{bin}: too few functions found ({total})");
        println!(
            "{bin}: {total} functions, {ok} can be jump-patched ({:.1}%; {rip} with a \
             RIP-relative displaced instruction)",
            pct(ok, total)
        );
        let mut top: Vec<_> = why.into_iter().collect();
        top.sort_by_key(|e| core::cmp::Reverse(e.1));
        for (w, n) in top {
            println!("  {w:<45} {n:>6}  {:5.1}%", pct(n, total));
        }
        // Most of a C library's functions are plain enough; fewer than a third would mean
        // the analysis refuses what it should not.
        assert!(pct(ok, total) > 33.0, "{bin}: only {ok} of {total}");
    }
}
