//! The whole in-process hit on the CPU: libc functions jump-patched in a forked child, each
//! trampoline calling the agent's handler (`probe_agent_hit`) with its probe number, four
//! threads calling them, and the counts read by the parent from the shared counter region:
//! every call counted once, in its own thread's block, and nothing after the bytes are back.

use core::hint::black_box;

use platform_linux::agent::AgentRegion;
use probe_tests::x86::jump::{dlsym, extended_state, libc_functions, patch_entry, Tramp};

const THREADS: u64 = 4;
const CALLS: u64 = 50_000;

/// The child: attach the region, patch `labs` (probe 0) and `abs` (probe 1), call them from
/// four threads, restore, call again. Exit status 0 when every step worked.
fn child(region: &AgentRegion) -> i32 {
    let (base, len) = region.mapping();
    // SAFETY: the region's mapping is inherited from the parent, shared, for our whole life.
    if unsafe { probe_agent::probe_agent_attach(base, len) } != 0 {
        return 10;
    }
    let bodies = libc_functions();
    let (labs, abs) = (dlsym("labs"), dlsym("abs"));
    let mut patched = Vec::new();
    for (probe, f) in [labs, abs].into_iter().enumerate() {
        let tramp = Tramp::Handler {
            handler: probe_agent::probe_agent_hit as *const () as u64,
            ctx: Some(probe as u64),
            state: extended_state(),
        };
        match patch_entry(f, &bodies, tramp) {
            Ok(p) => patched.push(p),
            Err(_) => return 11 + probe as i32,
        }
    }
    // SAFETY: dlsym's `labs` and `abs`, of these C signatures.
    let labs: extern "C" fn(i64) -> i64 = unsafe { core::mem::transmute(labs) };
    // SAFETY: as above.
    let abs: extern "C" fn(i32) -> i32 = unsafe { core::mem::transmute(abs) };
    let wrong = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut wrong = 0u64;
                    for i in 0..CALLS {
                        let v = -(i as i64) - 1;
                        wrong += u64::from(black_box(labs)(black_box(v)) != i as i64 + 1);
                    }
                    for i in 0..(t + 1) * 100 {
                        wrong += u64::from(black_box(abs)(black_box(-(i as i32))) != i as i32);
                    }
                    wrong
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
    });
    for p in &patched {
        p.restore();
    }
    // Not counted: the bytes are back.
    for i in 0..1000 {
        black_box(labs(black_box(i)));
    }
    if wrong != 0 {
        return 20;
    }
    0
}

#[test]
fn jump_patched_entries_count_through_the_agent_per_thread_exactly() {
    std::env::set_var("PROBE_JUMP_ORACLE", "yes");
    let region = AgentRegion::new(4, 16).unwrap();
    // SAFETY: the child runs this test's code only (the harness's other threads do not
    // exist in it; glibc's malloc is fork-safe), then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child(&region);
        // SAFETY: leaving the child without unwinding into the harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );
    assert_eq!(region.total(0), THREADS * CALLS, "labs");
    let abs_calls: u64 = (1..=THREADS).map(|t| t * 100).sum();
    assert_eq!(region.total(1), abs_calls, "abs");
    assert_eq!(
        region.threads_seen(),
        THREADS as u32,
        "one block per thread"
    );
}
