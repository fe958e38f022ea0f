//! What a jump-patched entry probe costs on top of the bare call, from one run: `labs`
//! called through a pointer, bare, with the counting trampoline (`lock inc`), and with the
//! full trampoline that saves every register and the vector state and calls a counting Rust
//! handler (what an in-process probe's hit does before the core runs). Patches this very
//! process's libc (single-threaded here). `cargo bench -p probe-tests --bench jump_hit [N]`.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
}
