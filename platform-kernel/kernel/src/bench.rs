//! The in-kernel benchmark (`-append bench`): cycles per probe hit for each plan kind, against
//! a bare `int3` -> handler -> `iretq` round trip through the same entry stub and dispatch,
//! from one run on the bootstrap processor (the others spin idle); and a boosted hit's cost
//! with 1, 1 000 and 100 000 probes registered (the others on `pk_pad`'s nops), with how long
//! registering and unregistering them took.
//!
//! A hit's cost is (cycles per call of the probed function) - (cycles per call of the same
//! function unprobed); the round trip's is (`int3; ret`) - (`nop; ret`). Each figure is the
//! lowest of several rounds (timer interrupts only ever add). Under TCG the TSC is the
//! host's clock scaled, so absolute figures mean little; the ratios are what to read.

use core::arch::global_asm;

use alloc::vec::Vec;

use probe_core::{ConsumerHandle, ConsumerOptions};

use crate::fatal;
use crate::probes::{self, hits, Probe, CORE};
use crate::tests::{addr_of, call, text_identical, Target, TARGETS};

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
    /* Instructions to hang many probes on: PAD one-byte nops (emulated, so they need no
       slot; adjacent, so the probes' keys are consecutive offsets). Never executed. */
    .global pk_pad
pk_pad:
    .rept {pad}
    nop
    .endr
    ret
"#,
    pad = const PAD,
);

/// Probes the scaling run hangs on `pk_pad`: all but the benchmark's own of the most it
/// registers.
pub const PAD: usize = SCALE[SCALE.len() - 1] - 1;
/// Registered probes at which the boosted hit is measured.
const SCALE: [usize; 3] = [1, 1_000, 100_000];

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
const ROUNDS: usize = 15;

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

/// Lowest cycles per call of target `t`. Every figure of a target goes through this one
/// function, so that probed and unprobed runs execute the same guest code around the call
/// (under TCG two copies of the same loop can differ by hundreds of cycles).
#[inline(never)]
fn calls_of(t: &Target) -> u64 {
    cycles(|x| {
        call(t, x);
    })
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
    for (i, t) in TARGETS.iter().enumerate().take(4) {
        let unprobed = calls_of(t);
        let key = p
            .key_of(addr_of(t))
            .unwrap_or_else(|| fatal(format_args!("no key")));
        let h = match CORE.register(p, key, Probe::Count(i), ConsumerOptions::default()) {
            Ok(h) => h,
            Err((e, _)) => fatal(format_args!("bench register: {e}")),
        };
        let probed = calls_of(t);
        let _ = CORE.unregister(p, h);
        let hit = probed.saturating_sub(unprobed);
        let (a, b) = ratio(hit, bare);
        println!(
            "bench: {} hit: {hit} cycles = {a}.{b:02} x bare int3",
            t.name
        );
    }
    scaling(bare);
    println!(
        "bench: core size {} bytes; probes left {}",
        core::mem::size_of::<probes::Core>(),
        CORE.probe_count()
    );
}

/// The boosted hit's cost with 1, 1 000 and 100 000 probes registered: the benchmark's probe on
/// `TARGETS[1]` first, then probes on `pk_pad`'s nops up to each count. Registration and
/// unregistration are timed in TSC cycles (under TCG the host's; the host test also stamps the
/// lines with wall-clock time).
fn scaling(bare: u64) {
    let p = probes::platform();
    let t = &TARGETS[1];
    let unprobed = calls_of(t);
    let key = p
        .key_of(addr_of(t))
        .unwrap_or_else(|| fatal(format_args!("no key")));
    let h = match CORE.register(p, key, Probe::Count(1), ConsumerOptions::default()) {
        Ok(h) => h,
        Err((e, _)) => fatal(format_args!("bench register: {e}")),
    };
    let pad = &raw const pk_pad as u64;
    // Registration time: the heap is for process context, which this is.
    let mut handles: Vec<ConsumerHandle> = Vec::with_capacity(PAD);
    let mut lone = 0;
    for &n in &SCALE {
        let more = n - 1 - handles.len();
        if more > 0 {
            println!("bench: registering {more} more probes");
        }
        let t0 = rdtsc();
        for k in handles.len()..n - 1 {
            let key = p
                .key_of(pad + k as u64)
                .unwrap_or_else(|| fatal(format_args!("no key")));
            match CORE.register(p, key, Probe::Count(7), ConsumerOptions::default()) {
                Ok(x) => handles.push(x),
                Err((e, _)) => fatal(format_args!("bench register pad {k}: {e}")),
            }
        }
        let took = rdtsc() - t0;
        let registered = CORE.probe_count();
        if registered != n {
            fatal(format_args!("{registered} probes registered, not {n}"));
        }
        if more > 0 {
            println!(
                "bench: registered {more} probes in {took} cycles ({} per probe)",
                took / more as u64
            );
        }
        let probed = calls_of(t);
        let hit = probed.saturating_sub(unprobed);
        if n == 1 {
            lone = hit;
        }
        let (a, b) = ratio(hit, bare);
        let (c, d) = ratio(hit, lone);
        println!(
            "bench: boost hit with {n} probes registered: {hit} cycles = {a}.{b:02} x bare int3, {c}.{d:02} x the lone probe's"
        );
    }
    if hits(7) != 0 {
        fatal(format_args!("{} hits on pk_pad, which never runs", hits(7)));
    }
    println!("bench: unregistering {} probes", handles.len() + 1);
    let t0 = rdtsc();
    let _ = CORE.unregister(p, h);
    for h in handles {
        if let Err(e) = CORE.unregister(p, h) {
            fatal(format_args!("bench unregister: {e}"));
        }
    }
    let took = rdtsc() - t0;
    println!(
        "bench: unregistered {} probes in {took} cycles ({} per probe)",
        PAD + 1,
        took / (PAD as u64 + 1)
    );
    if !text_identical() {
        fatal(format_args!(
            "text differs from the image after the scaling run"
        ));
    }
    println!("bench: text identical to the image");
}
