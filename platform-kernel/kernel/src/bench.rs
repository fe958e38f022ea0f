//! The in-kernel benchmark (`-append bench`): cycles per probe hit for each plan kind, against
//! a bare `int3` -> handler -> `iretq` round trip through the same entry stub and dispatch,
//! from one run on the bootstrap processor (the others idle); and a boosted hit's cost with 1
//! and with 1 000 probes registered.
//!
//! A hit's cost is (cycles per call of the probed function) - (cycles per call of the same
//! function unprobed); the round trip's is (`int3; ret`) - (`nop; ret`). Each figure is the
//! lowest of several rounds (timer interrupts only ever add). Under TCG the TSC is the
//! host's clock scaled, so absolute figures mean little; the ratios are what to read.

use core::arch::global_asm;

use probe_core::ConsumerOptions;

use crate::fatal;
use crate::probes::{self, Probe, CORE};
use crate::tests::{addr_of, call, TARGETS};

global_asm!(
    r#"
    .section .text.pk_bench, "ax"
    .global pk_bare
pk_bare:
    int3
    ret
    .global pk_nop_ret
pk_nop_ret:
    nop
    ret
    /* Instructions to hang many probes on (nop: emulated). */
    .global pk_pad
pk_pad:
    .rept 1024
    nop
    .endr
    ret
"#
);

extern "C" {
    fn pk_bare();
    fn pk_nop_ret();
    static pk_pad: u8;
}

/// Address of the benchmark's bare `int3`.
pub fn bare_int3() -> u64 {
    pk_bare as *const () as u64
}

const CALLS: u64 = 20_000;
const ROUNDS: usize = 5;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Lowest cycles per call of `f` over `ROUNDS` rounds of `CALLS` calls.
fn cycles(mut f: impl FnMut(u64)) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..ROUNDS {
        let t0 = rdtsc();
        for i in 0..CALLS {
            f(i);
        }
        best = best.min((rdtsc() - t0) / CALLS);
    }
    best
}

fn ratio(x: u64, bare: u64) -> (u64, u64) {
    let r = x * 100 / bare.max(1);
    (r / 100, r % 100)
}

/// Run the benchmark and print its figures.
pub fn run() {
    let p = probes::platform();
    // SAFETY (both closures): the functions take nothing and return nothing; `int3` in
    // pk_bare is handled and resumed by `on_breakpoint`.
    let bare = cycles(|_| unsafe { pk_bare() });
    let nop = cycles(|_| unsafe { pk_nop_ret() });
    let bare = bare.saturating_sub(nop);
    println!("bench: bare int3 round trip: {bare} cycles");
    let mut boost_one = 0;
    for (i, t) in TARGETS.iter().enumerate().take(4) {
        let unprobed = cycles(|x| {
            call(t, x);
        });
        let key = p
            .key_of(addr_of(t))
            .unwrap_or_else(|| fatal(format_args!("no key")));
        let h = match CORE.register(p, key, Probe::Count(i), ConsumerOptions::default()) {
            Ok(h) => h,
            Err((e, _)) => fatal(format_args!("bench register: {e}")),
        };
        let probed = cycles(|x| {
            call(t, x);
        });
        let _ = CORE.unregister(p, h);
        let hit = probed.saturating_sub(unprobed);
        if t.name == "boost" {
            boost_one = hit;
        }
        let (a, b) = ratio(hit, bare);
        println!(
            "bench: {} hit: {hit} cycles = {a}.{b:02} x bare int3",
            t.name
        );
    }
    // A boosted hit with 1 000 probes registered (999 on pk_pad's nops).
    let pad = &raw const pk_pad as u64;
    let mut handles = [None; 999];
    for (k, h) in handles.iter_mut().enumerate() {
        let key = p
            .key_of(pad + k as u64)
            .unwrap_or_else(|| fatal(format_args!("no key")));
        match CORE.register(p, key, Probe::Count(7), ConsumerOptions::default()) {
            Ok(x) => *h = Some(x),
            Err((e, _)) => fatal(format_args!("bench register pad {k}: {e}")),
        }
    }
    let t = &TARGETS[1];
    let unprobed = cycles(|x| {
        call(t, x);
    });
    let key = p
        .key_of(addr_of(t))
        .unwrap_or_else(|| fatal(format_args!("no key")));
    let h = match CORE.register(p, key, Probe::Count(1), ConsumerOptions::default()) {
        Ok(h) => h,
        Err((e, _)) => fatal(format_args!("bench register: {e}")),
    };
    let probed = cycles(|x| {
        call(t, x);
    });
    let hit = probed.saturating_sub(unprobed);
    let (a, b) = ratio(hit, bare);
    let (c, d) = ratio(hit, boost_one);
    println!(
        "bench: boost hit with {} probes registered: {hit} cycles = {a}.{b:02} x bare int3, {c}.{d:02} x with 1 probe",
        CORE.probe_count()
    );
    let _ = CORE.unregister(p, h);
    for h in handles.into_iter().flatten() {
        let _ = CORE.unregister(p, h);
    }
    println!("bench: 100000 probes: not run (the core's tables are in .data; see README)");
    println!(
        "bench: core size {} bytes; probes left {}",
        core::mem::size_of::<probes::Core>(),
        CORE.probe_count()
    );
}
