//! The real CPU as oracle for the x86-64 arch: every hand-written case and the first
//! instructions of every function of the system's libc and python3.11 are executed natively
//! and through their plan (emulated, boosted from a near and a far slot, or single-stepped and
//! fixed up); registers, flags, x87/SSE state and memory (stack and red zone included) must
//! match exactly.

use std::time::Instant;

use probe_tests::x86::corpus::hand_corpus;
use probe_tests::x86::elf::function_sites;
use probe_tests::x86::oracle::Oracle;

const BINARIES: [&str; 2] = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3.11"];

/// Instructions per function: the entry and the few after it.
const PER_FUNCTION: usize = 6;

/// At most this many instructions per binary (spread evenly), to keep the test quick.
const MAX_PER_BINARY: usize = 30000;

fn report(o: &Oracle, what: &str, started: Instant) {
    println!(
        "== {what} ({:.1?})\n{}",
        started.elapsed(),
        o.stats.summary()
    );
    for m in o.stats.mismatches.iter().take(40) {
        println!("MISMATCH {m}");
    }
}

#[test]
fn hand_corpus_matches_the_cpu() {
    let started = Instant::now();
    let mut o = Oracle::new().expect("start the traced child");
    for (i, c) in hand_corpus().iter().enumerate() {
        o.check(&c.bytes, c.variants, &format!("hand#{i}"));
    }
    report(&o, "hand corpus", started);
    assert!(
        o.stats.mismatches.is_empty(),
        "{} mismatches",
        o.stats.mismatches.len()
    );
    let checked: usize = o.stats.checked.values().sum();
    assert!(checked > 500, "only {checked} runs compared");
}

#[test]
fn function_entries_match_the_cpu() {
    let started = Instant::now();
    let mut o = Oracle::new().expect("start the traced child");
    let mut any = false;
    for bin in BINARIES {
        let Ok(sites) = function_sites(bin, PER_FUNCTION) else {
            println!("{bin}: not readable, skipped");
            continue;
        };
        any = true;
        let step = sites.len().div_ceil(MAX_PER_BINARY).max(1);
        for (i, s) in sites.iter().step_by(step).enumerate() {
            let v = i % 64;
            o.check_variants(
                &s.bytes,
                v..v + 1,
                &format!("{bin}@{:#x}+{}", s.addr, s.nth),
            );
        }
        println!(
            "{bin}: {} instructions, every {step}th checked",
            sites.len()
        );
    }
    report(&o, "function entries", started);
    assert!(
        o.stats.mismatches.is_empty(),
        "{} mismatches",
        o.stats.mismatches.len()
    );
    if any {
        let checked: usize = o.stats.checked.values().sum();
        assert!(checked > 2000, "only {checked} runs compared");
    }
}
