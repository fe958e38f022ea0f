//! What a jump-patched entry probe costs on top of the bare call, from one run: `labs`
//! called through a pointer, bare, with the counting trampoline (`lock inc`), and with the
//! full trampoline that saves every register and the vector state and calls a counting Rust
//! handler (what an in-process probe's hit does before the core runs). Patches this very
//! process's libc (single-threaded here). `cargo bench -p probe-tests --bench jump_hit [N]`.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use platform_linux::agent::AgentRegion;
use probe_core::arch::x86_64::X86Regs;
use probe_tests::x86::jump::{
    dlsym, extended_state, libc_functions, patch_entry, whole_extended_state, Tramp,
};

static HITS: AtomicU64 = AtomicU64::new(0);

/// Counts without a locked instruction, as a per-thread counter would (one thread here): a
/// `lock`ed add costs about 15 ns on this VM, more than the rest of the handler's call.
extern "C" fn count(_regs: *mut X86Regs, _ctx: u64) {
    HITS.store(HITS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A handler that counts in one shared word with a `lock`ed add: what per-thread counters
/// avoid (every hit writes a line the other threads write too).
extern "C" fn count_shared(_regs: *mut X86Regs, _ctx: u64) {
    HITS.fetch_add(1, Ordering::Relaxed);
}

/// CPU nanoseconds per call of `f` over `threads` threads calling it `n` times each at
/// once (the best of 3 runs; each run's figure is the mean of its threads'). Thread CPU
/// time, not wall time, so that threads sharing the machine's CPUs are not counted twice.
fn per_call_threads(f: extern "C" fn(i64) -> i64, n: u64, threads: usize) -> f64 {
    (0..3)
        .map(|_| {
            let start = std::sync::Barrier::new(threads);
            let total: f64 = std::thread::scope(|s| {
                let ws: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let t = platform_linux::sys::thread_cpu_time();
                            let mut acc = 0i64;
                            for i in 0..n {
                                acc = acc.wrapping_add(black_box(f)(black_box(i as i64 - 7)));
                            }
                            black_box(acc);
                            (platform_linux::sys::thread_cpu_time() - t).as_nanos() as f64
                                / n as f64
                        })
                    })
                    .collect();
                ws.into_iter().map(|w| w.join().unwrap()).sum()
            });
            total / threads as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Nanoseconds per call of `f` (the best of 5 runs of `n` calls).
fn per_call(f: extern "C" fn(i64) -> i64, n: u64) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut acc = 0i64;
            for i in 0..n {
                acc = acc.wrapping_add(black_box(f)(black_box(i as i64 - 7)));
            }
            black_box(acc);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let raw = dlsym("labs");
    // SAFETY: dlsym's `labs`, of this C signature.
    let labs: extern "C" fn(i64) -> i64 = unsafe { core::mem::transmute(raw) };
    let bodies = libc_functions();
    let bare = per_call(labs, n);
    let p = patch_entry(raw, &bodies, Tramp::Count).expect("labs can be jump-patched");
    let counting = per_call(labs, n);
    let counted = p.count();
    p.restore();
    let mut handled = Vec::new();
    for (name, state) in [
        ("argument vectors", extended_state()),
        ("whole state", whole_extended_state()),
    ] {
        let p = patch_entry(
            raw,
            &bodies,
            Tramp::Handler {
                handler: count as *const () as u64,
                ctx: None,
                state,
            },
        )
        .expect("labs can be jump-patched");
        handled.push((name, state, per_call(labs, n)));
        p.restore();
    }
    assert_eq!(counted, 5 * n, "every call counted");
    assert_eq!(HITS.load(Ordering::Relaxed), 10 * n, "every call handled");
    println!("labs, {n} calls, best of 5 (ns per call):");
    println!("  bare call                                   {bare:8.2}");
    println!(
        "  jump-patched, counting trampoline           {counting:8.2}  (+{:.2} ns)",
        counting - bare
    );
    for (name, state, t) in handled {
        println!(
            "  jump-patched, registers + {name} ({state:?}) + handler: {t:.2}  (+{:.2} ns)",
            t - bare
        );
    }
    agent_rows(raw, labs, &bodies, n);
}

/// The in-process agent's handler (`probe_agent_hit`, per-thread counters in a shared
/// region) against a handler counting in one shared word, with 1 and 4 threads.
fn agent_rows(
    raw: *const core::ffi::c_void,
    labs: extern "C" fn(i64) -> i64,
    bodies: &std::collections::HashMap<u64, Vec<u8>>,
    n: u64,
) {
    let region = AgentRegion::new(1, 64).unwrap();
    let (base, len) = region.mapping();
    // SAFETY: the region stays mapped until the end of main.
    assert_eq!(unsafe { probe_agent::probe_agent_attach(base, len) }, 0);
    let n4 = n / 4;
    let bare1 = per_call_threads(labs, n4, 1);
    let bare4 = per_call_threads(labs, n4, 4);
    let mut rows = Vec::new();
    for (name, handler) in [
        (
            "agent (per-thread block)",
            probe_agent::probe_agent_hit as *const () as u64,
        ),
        (
            "one shared word, lock add",
            count_shared as *const () as u64,
        ),
    ] {
        let p = patch_entry(
            raw,
            bodies,
            Tramp::Handler {
                handler,
                ctx: Some(0),
                state: extended_state(),
            },
        )
        .expect("labs can be jump-patched");
        let one = per_call_threads(labs, n4, 1);
        let four = per_call_threads(labs, n4, 4);
        p.restore();
        rows.push((name, one, four));
    }
    assert_eq!(region.total(0), 3 * n4 * 5, "the agent counted every call");
    println!("labs, {n4} calls per thread, best of 3, CPU ns per call per thread:");
    println!("  bare call                  1 thread {bare1:8.2}   4 threads {bare4:8.2}");
    for (name, one, four) in rows {
        println!(
            "  {name:<27}1 thread {one:8.2} (+{:.2})   4 threads {four:8.2} (+{:.2}, {:.2}x the 1-thread hit)",
            one - bare1,
            four - bare4,
            (four - bare4) / (one - bare1)
        );
    }
}
