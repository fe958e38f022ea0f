//! The scenarios the host tests check, run on every CPU at once.
//!
//! The probed functions are written in assembly so that their first instruction, and so the
//! core's plan for it, is fixed:
//!
//! | function          | first instruction              | plan                           |
//! |-------------------|--------------------------------|--------------------------------|
//! | `pk_emulate`      | `push rbp`                     | emulated (writes the int3 gap) |
//! | `pk_boost`        | `lea rax, [rdi + 2]`           | boosted                        |
//! | `pk_riprel`       | `mov rax, [rip + pk_data]`     | boosted, displacement relocated|
//! | `pk_step`         | `push qword ptr [rip + pk_data]` | single-stepped in a slot     |
//! | `pk_call`         | `call pk_leaf` (rsp aligned)   | emulated (writes the int3 gap) |
//! | `pk_privileged`   | `mov rax, cr0`                 | single-stepped (ring 0)        |

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use probe_core::{ConsumerHandle, ConsumerOptions, PlanKind, ReturnOptions};

use crate::probes::{self, Probe, CORE};
use crate::{exit, fatal, online_cpus};

global_asm!(
    r#"
    .section .text.pk, "ax"
    .global pk_emulate
pk_emulate:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + 1]
    pop rbp
    ret
    .global pk_boost
pk_boost:
    lea rax, [rdi + 2]
    ret
    .global pk_riprel
pk_riprel:
    mov rax, qword ptr [rip + pk_data]
    add rax, rdi
    ret
    .global pk_step
pk_step:
    push qword ptr [rip + pk_data]
    pop rax
    add rax, rdi
    ret
    /* The probed `call` (pk_call_site) runs with rsp 16-aligned, as at any call site of the
       System V ABI: the CPU's exception frame then starts right below rsp, where the emulated
       call writes its return address (the int3 gap's reason). */
    .global pk_call
pk_call:
    sub rsp, 8
    .global pk_call_site
pk_call_site:
    call pk_leaf
    add rsp, 8
    ret
pk_leaf:
    lea rax, [rdi + 5]
    ret
    .global pk_privileged
pk_privileged:
    mov rax, cr0
    mov rax, rdi
    ret

    /* sum(n) = n + sum(n - 1), recursively: a return probe's workout. */
    .global pk_sum
pk_sum:
    push rbx
    mov rbx, rdi
    xor eax, eax
    test rdi, rdi
    jz 1f
    lea rdi, [rdi - 1]
    call pk_sum
    add rax, rbx
1:  pop rbx
    ret

    /* Called from the timer interrupt while the interrupted code sits in a slot. */
    .global pk_reenter
pk_reenter:
    lea rax, [rdi + 3]
    ret

    .section .data.pk, "aw"
    .p2align 3
    .global pk_data
pk_data:
    .quad 100
"#
);

extern "C" {
    fn pk_emulate(x: u64) -> u64;
    fn pk_boost(x: u64) -> u64;
    fn pk_riprel(x: u64) -> u64;
    fn pk_step(x: u64) -> u64;
    fn pk_call(x: u64) -> u64;
    static pk_call_site: u8;
    fn pk_privileged(x: u64) -> u64;
    fn pk_sum(n: u64) -> u64;
    fn pk_reenter(x: u64) -> u64;
}

/// A probed function, its expected result, and the plan the core must pick.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    f: unsafe extern "C" fn(u64) -> u64,
    add: u64,
    plan: Option<PlanKind>,
}

pub(crate) const TARGETS: [Target; 6] = [
    Target {
        name: "emulate",
        f: pk_emulate,
        add: 1,
        plan: Some(PlanKind::Emulate),
    },
    Target {
        name: "boost",
        f: pk_boost,
        add: 2,
        plan: Some(PlanKind::Boost),
    },
    Target {
        name: "riprel",
        f: pk_riprel,
        add: 100,
        plan: Some(PlanKind::Boost),
    },
    Target {
        name: "step",
        f: pk_step,
        add: 100,
        plan: Some(PlanKind::SingleStep),
    },
    Target {
        name: "call",
        f: pk_call,
        add: 5,
        plan: Some(PlanKind::Emulate),
    },
    Target {
        name: "privileged",
        f: pk_privileged,
        add: 0,
        plan: Some(PlanKind::SingleStep),
    },
];

/// The probed instruction of `t`: its first, but for `pk_call` its call site.
pub(crate) fn addr_of(t: &Target) -> u64 {
    if t.name == "call" {
        return &raw const pk_call_site as u64;
    }
    t.f as usize as u64
}

pub(crate) fn call(t: &Target, x: u64) -> u64 {
    // SAFETY: the target functions take one integer and return one, clobbering only
    // caller-saved registers (System V); `mov rax, cr0` is allowed in ring 0.
    unsafe { (t.f)(core::hint::black_box(x)) }
}

// ------------------------------------------------------------------------------ all CPUs

/// The work all CPUs run next: a function pointer, a generation, and how many finished.
static WORK: AtomicUsize = AtomicUsize::new(0);
static WORK_GEN: AtomicU64 = AtomicU64::new(0);
static WORK_DONE: AtomicUsize = AtomicUsize::new(0);
/// Wrong results seen by any CPU.
static WRONG: AtomicU64 = AtomicU64::new(0);

/// Run `f(cpu)` on every online CPU at once (this one included) and wait for all.
fn on_all_cpus(f: fn(usize)) {
    let n = online_cpus();
    WORK_DONE.store(0, Ordering::SeqCst);
    WORK.store(f as usize, Ordering::SeqCst);
    WORK_GEN.fetch_add(1, Ordering::SeqCst);
    f(0);
    while WORK_DONE.load(Ordering::Acquire) < n - 1 {
        core::hint::spin_loop();
    }
}

/// The application processors' loop: wait for work, run it, report.
pub fn worker(cpu: usize) -> ! {
    let mut seen = 0;
    loop {
        let g = WORK_GEN.load(Ordering::Acquire);
        if g == seen {
            core::hint::spin_loop();
            continue;
        }
        seen = g;
        let w = WORK.load(Ordering::Acquire);
        // SAFETY: WORK holds a `fn(usize)` stored by `on_all_cpus` before it bumped the
        // generation this CPU just read (release/acquire).
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(w) };
        f(cpu);
        WORK_DONE.fetch_add(1, Ordering::AcqRel);
    }
}

// ------------------------------------------------------------------------------ tests

const ITERS: u64 = 2000;

fn call_all(cpu: usize) {
    for i in 0..ITERS {
        let x = (cpu as u64) << 32 | i;
        for t in &TARGETS {
            if call(t, x) != x + t.add {
                WRONG.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn check(ok: bool, what: core::fmt::Arguments<'_>) {
    if ok {
        println!("ok: {what}");
    } else {
        fatal(format_args!("FAIL: {what}"));
    }
}

fn text_hash() -> u64 {
    let (start, end) = crate::image_range();
    // SAFETY: the image range is mapped and readable.
    let text = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    crate::fnv1a(text.iter().copied())
}

pub(crate) fn text_identical() -> bool {
    let (start, end) = crate::image_range();
    // SAFETY: as in `text_hash`.
    let text = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    text == probes::platform().image().original
}

/// Probes of every plan kind, hit from every CPU at once: exact counts.
fn plan_kinds() {
    let p = probes::platform();
    let n = online_cpus() as u64;
    let mut handles: [Option<ConsumerHandle>; 6] = [None; 6];
    for (i, t) in TARGETS.iter().enumerate() {
        let Some(key) = p.key_of(addr_of(t)) else {
            fatal(format_args!("{} is outside the image", t.name))
        };
        match (
            CORE.register(p, key, Probe::Count(i), ConsumerOptions::default()),
            t.plan,
        ) {
            (Ok(h), Some(want)) => {
                let got = CORE.plan_of(key).map(|pl| {
                    <probe_core::arch::x86_64::X86_64 as probe_core::Arch>::plan_kind(&pl)
                });
                check(
                    got == Some(want),
                    format_args!("{} planned as {got:?}", t.name),
                );
                // SAFETY: the first byte of a probed function, mapped and readable.
                let b = unsafe { (addr_of(t) as *const u8).read_volatile() };
                check(
                    b == 0xcc,
                    format_args!("{} patched with int3 ({b:#x})", t.name),
                );
                handles[i] = Some(h);
            }
            (Ok(_), None) => fatal(format_args!("{} unexpectedly accepted", t.name)),
            (Err((e, _)), _) => fatal(format_args!("register {}: {e}", t.name)),
        }
    }
    on_all_cpus(call_all);
    check(
        WRONG.load(Ordering::Relaxed) == 0,
        format_args!("every probed call returned the right value"),
    );
    for (i, t) in TARGETS.iter().enumerate() {
        let want = if handles[i].is_some() { n * ITERS } else { 0 };
        let got = probes::hits(i);
        let each = if handles[i].is_some() { ITERS } else { 0 };
        let per_cpu = (0..n as usize).all(|c| probes::HITS[i][c].load(Ordering::Relaxed) == each);
        check(per_cpu, format_args!("{} hits {each} on each cpu", t.name));
        check(
            got == want,
            format_args!("{} hits {got} of {want} from {n} cpus", t.name),
        );
    }
    for h in handles.into_iter().flatten() {
        if let Err(e) = CORE.unregister(p, h) {
            fatal(format_args!("unregister: {e}"));
        }
    }
    check(
        CORE.probe_count() == 0 && CORE.site_count() == 0,
        format_args!("no probes left"),
    );
    check(
        text_identical(),
        format_args!("text identical to the image after unregister"),
    );
}

// ------------------------------------------------------------------------------ stress

static STOP: AtomicBool = AtomicBool::new(false);
static HAMMER_CALLS: AtomicU64 = AtomicU64::new(0);
const STRESS_ROUNDS: usize = 2000;
/// The stressed targets: emulated, boosted, single-stepped.
const STRESSED: [usize; 3] = [0, 1, 3];

fn hammer(cpu: usize) {
    if cpu == 0 {
        return stress_writer();
    }
    let mut i = 0u64;
    while !STOP.load(Ordering::Acquire) {
        for &t in &STRESSED {
            let t = &TARGETS[t];
            let x = (cpu as u64) << 32 | i;
            if call(t, x) != x + t.add {
                WRONG.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        HAMMER_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Each stress registration's hit count when its `unregister` returned.
static FROZEN: [AtomicU64; probes::LIVES] = [const { AtomicU64::new(0) }; probes::LIVES];

/// CPU 0: register and unregister consumers (and so probes) thousands of times while the
/// other CPUs call the probed functions. Two consumers per round, on the same or on
/// different probes, so both the probe's creation and removal and the consumer list race.
fn stress_writer() {
    let p = probes::platform();
    for r in 0..STRESS_ROUNDS {
        if r % 500 == 0 {
            println!("stress: round {r}");
        }
        let ids = [2 * r, 2 * r + 1];
        let targets = [STRESSED[r % 3], STRESSED[(r + r / 3) % 3]];
        let mut hs = [None, None];
        for k in 0..2 {
            let key = p
                .key_of(addr_of(&TARGETS[targets[k]]))
                .unwrap_or_else(|| fatal(format_args!("no key")));
            match CORE.register(p, key, Probe::Live(ids[k]), ConsumerOptions::default()) {
                Ok(h) => hs[k] = Some(h),
                Err((e, _)) => fatal(format_args!("stress register: {e}")),
            }
            let at = addr_of(&TARGETS[targets[k]]);
            // SAFETY: the first byte of a probed function, mapped and readable.
            let b = unsafe { (at as *const u8).read_volatile() };
            if b != 0xcc {
                CORE.for_each_site(platform_kernel::KERNEL_SPACE, |a, key| {
                    println!("site {:#x} key {:#x}", a.0, key.offset);
                });
                fatal(format_args!(
                    "stress round {r}: {} at {at:#x} registered but not patched ({b:#x})",
                    TARGETS[targets[k]].name
                ));
            }
        }
        // Wait (by count, not time) until the hammering CPUs made calls under these
        // registrations.
        let start = HAMMER_CALLS.load(Ordering::Relaxed);
        let mut spins = 0u64;
        while HAMMER_CALLS.load(Ordering::Relaxed) < start + 2 {
            core::hint::spin_loop();
            spins += 1;
            if spins == 200_000_000 {
                CORE.for_each_site(platform_kernel::KERNEL_SPACE, |a, key| {
                    println!("site {:#x} key {:#x}", a.0, key.offset);
                });
                for t in &TARGETS {
                    // SAFETY: the first byte of a probed function, mapped and readable.
                    let b = unsafe { (addr_of(t) as *const u8).read_volatile() };
                    println!("{} at {:#x}: {b:#x}", t.name, addr_of(t));
                }
                fatal(format_args!(
                    "stress round {r}: the other cpus stopped making calls"
                ));
            }
        }
        for k in 0..2 {
            if let Some(h) = hs[k].take() {
                if let Err(e) = CORE.unregister(p, h) {
                    fatal(format_args!("stress unregister: {e}"));
                }
                // From here on no handler of this registration may run.
                probes::LIVE_DEAD[ids[k]].store(true, Ordering::Release);
                FROZEN[ids[k]].store(
                    probes::LIVE_HITS[ids[k]].load(Ordering::Acquire),
                    Ordering::Relaxed,
                );
            }
        }
    }
    STOP.store(true, Ordering::Release);
}

/// Registration and unregistration racing hits on the other CPUs.
fn stress() {
    stress_with(0);
}

/// [`stress`] with `kept` probes registered throughout.
fn stress_with(kept: usize) {
    let n = online_cpus();
    if n < 2 {
        println!("ok: stress skipped on one cpu");
        return;
    }
    WRONG.store(0, Ordering::Relaxed);
    on_all_cpus(hammer);
    let total: u64 = (0..2 * STRESS_ROUNDS)
        .map(|i| probes::LIVE_HITS[i].load(Ordering::Relaxed))
        .sum();
    // Every registration's count, read again now that all CPUs stopped, is what it was when
    // its unregister returned, and no handler saw its registration already unregistered.
    let moved = (0..2 * STRESS_ROUNDS)
        .filter(|&i| {
            probes::LIVE_HITS[i].load(Ordering::Relaxed) != FROZEN[i].load(Ordering::Relaxed)
        })
        .count();
    let late = probes::LATE_CALLS.load(Ordering::Relaxed) + moved as u64;
    check(
        WRONG.load(Ordering::Relaxed) == 0,
        format_args!("stress: every probed call returned the right value"),
    );
    check(
        late == 0,
        format_args!("stress: no handler ran after its unregister returned ({late} late calls)"),
    );
    check(
        total > 0,
        format_args!(
        "stress: {} registrations and unregistrations, {total} handler calls, {} calls on {} cpus",
        4 * STRESS_ROUNDS,
        HAMMER_CALLS.load(Ordering::Relaxed) * STRESSED.len() as u64,
        n - 1
    ),
    );
    check(
        CORE.probe_count() == kept && CORE.site_count() == kept,
        format_args!("stress: no probes left (besides {kept} kept)"),
    );
    check(
        kept > 0 || text_identical(),
        format_args!("stress: text identical to the image"),
    );
}

// ------------------------------------------------------------------------------ returns

const SUM_N: u64 = 8;
const RET_ITERS: u64 = 200;

fn call_sum(cpu: usize) {
    for i in 0..RET_ITERS {
        let n = (i + cpu as u64) % (SUM_N + 1);
        // SAFETY: pk_sum takes and returns one integer (System V), recursing n deep.
        if unsafe { pk_sum(core::hint::black_box(n)) } != n * (n + 1) / 2 {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Calls of `pk_sum` (entries, counting the recursion) that `call_sum` makes on `cpus`.
fn sum_entries(cpus: usize) -> u64 {
    (0..cpus as u64)
        .map(|c| {
            (0..RET_ITERS)
                .map(|i| (i + c) % (SUM_N + 1) + 1)
                .sum::<u64>()
        })
        .sum()
}

/// Return probes on a recursive function, on every CPU, with room for every call and then
/// with `maxactive` too small.
fn returns() {
    let p = probes::platform();
    let n = online_cpus();
    let key = p
        .key_of(pk_sum as *const () as u64)
        .unwrap_or_else(|| fatal(format_args!("no key")));
    for maxactive in [1000u32, 4] {
        for c in 0..crate::MAX_CPUS {
            probes::RET_ENTRIES[c].store(0, Ordering::Relaxed);
            probes::RET_RETURNS[c].store(0, Ordering::Relaxed);
        }
        WRONG.store(0, Ordering::Relaxed);
        let mut opts = ConsumerOptions::default();
        opts.ret = Some(ReturnOptions {
            maxactive,
            data_size: 8,
        });
        let h = match CORE.register(p, key, Probe::Ret, opts) {
            Ok(h) => h,
            Err((e, _)) => fatal(format_args!("register return probe: {e}")),
        };
        on_all_cpus(call_sum);
        let entries: u64 = probes::RET_ENTRIES
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum();
        let rets: u64 = probes::RET_RETURNS
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum();
        let missed = CORE.nmissed(h).unwrap_or(u64::MAX);
        let in_use = CORE.instances_in_use(h).unwrap_or(u32::MAX);
        let calls = sum_entries(n);
        let per_cpu = (0..n).all(|c| probes::RET_RETURNS[c].load(Ordering::Relaxed) > 0);
        check(
            WRONG.load(Ordering::Relaxed) == 0 && probes::RET_WRONG.load(Ordering::Relaxed) == 0,
            format_args!("returns (maxactive {maxactive}): every return value right, seen by the caller and the return handler"),
        );
        check(
            entries == rets && entries + missed == calls && in_use == 0,
            format_args!("returns (maxactive {maxactive}): {calls} calls = {entries} tracked + {missed} missed, {rets} returned"),
        );
        if maxactive == 1000 {
            check(
                missed == 0 && per_cpu,
                format_args!("returns: none missed with room for all, returns on every cpu"),
            );
        } else {
            check(
                missed > 0,
                format_args!("returns: maxactive {maxactive} misses calls deeper than it"),
            );
        }
        if let Err(e) = CORE.unregister(p, h) {
            fatal(format_args!("unregister return probe: {e}"));
        }
    }
    check(
        text_identical(),
        format_args!("returns: text identical to the image"),
    );
}

// ------------------------------------------------------------------------------ reentry

static REENTRY_ARMED: AtomicBool = AtomicBool::new(false);
static REENTRIES: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
static REENTRY_CALLS: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];
/// Reentries wanted before the CPUs stop (by count: how often a timer lands in a slot
/// depends on the machine's speed, so the CPUs call until they saw this many, up to a cap).
const REENTRIES_WANTED: u64 = 20;
const REENTRY_CAP: u64 = 2_000_000;

/// The timer interrupted code in a slot (interrupts off, timer handler): call a probed
/// function from here, a probe hit nested in the outer one's slot execution.
pub fn on_timer_in_slot(cpu: usize) {
    if !REENTRY_ARMED.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: pk_reenter takes and returns one integer (System V).
    let r = unsafe { pk_reenter(core::hint::black_box(cpu as u64)) };
    if r != cpu as u64 + 3 {
        WRONG.fetch_add(1, Ordering::Relaxed);
    }
    REENTRIES[cpu].fetch_add(1, Ordering::Relaxed);
}

fn reentries() -> u64 {
    REENTRIES.iter().map(|r| r.load(Ordering::Relaxed)).sum()
}

fn call_until_reentered(cpu: usize) {
    let mut i = 0;
    while reentries() < REENTRIES_WANTED && i < REENTRY_CAP {
        let x = (cpu as u64) << 32 | i;
        if call(&TARGETS[1], x) != x + 2 {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
    }
    REENTRY_CALLS[cpu].store(i, Ordering::Relaxed);
}

/// Reentry: the timer interrupt lands while a CPU executes a boosted slot (it is pending
/// during `#BP`, which runs with interrupts off, and taken as `iretq` enters the slot), and
/// its handler hits another probe. Both complete; every hit is counted.
fn reentry() {
    let p = probes::platform();
    let outer = p
        .key_of(addr_of(&TARGETS[1]))
        .unwrap_or_else(|| fatal(format_args!("no key")));
    let inner = p
        .key_of(pk_reenter as *const () as u64)
        .unwrap_or_else(|| fatal(format_args!("no key")));
    let ho = CORE.register(p, outer, Probe::Count(8), ConsumerOptions::default());
    let hi = CORE.register(p, inner, Probe::Count(9), ConsumerOptions::default());
    let (Ok(ho), Ok(hi)) = (ho, hi) else {
        fatal(format_args!("register reentry probes"))
    };
    WRONG.store(0, Ordering::Relaxed);
    REENTRY_ARMED.store(true, Ordering::Release);
    on_all_cpus(call_until_reentered);
    REENTRY_ARMED.store(false, Ordering::Release);
    let calls: u64 = REENTRY_CALLS
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let re = reentries();
    check(
        WRONG.load(Ordering::Relaxed) == 0,
        format_args!(
            "reentry: every call returned the right value, inside and outside the interrupt"
        ),
    );
    check(
        probes::hits(8) == calls && probes::hits(9) == re && re > 0,
        format_args!("reentry: {re} probe hits from the timer while a cpu sat in a slot; outer hits {} of {calls}, inner {} of {re}", probes::hits(8), probes::hits(9)),
    );
    for h in [ho, hi] {
        if let Err(e) = CORE.unregister(p, h) {
            fatal(format_args!("unregister: {e}"));
        }
    }
    check(
        text_identical(),
        format_args!("reentry: text identical to the image"),
    );
}

/// The stress run with the timer reentering probes from inside slots while CPU 0 registers
/// and unregisters (so slots are freed and reused): the timer's nesting level
/// (`on_interrupt_entry`) keeps the interrupted CPU counted in its slot through the inner
/// hit, so the writer must never reuse a slot a CPU is still executing. Its own boot
/// (`-append reentry-stress`, a host test on 4 vCPUs), not part of the default run.
fn reentry_stress() -> ! {
    let p = probes::platform();
    let inner = p
        .key_of(pk_reenter as *const () as u64)
        .unwrap_or_else(|| fatal(format_args!("no key")));
    let Ok(hi) = CORE.register(p, inner, Probe::Count(9), ConsumerOptions::default()) else {
        fatal(format_args!("register inner probe"))
    };
    REENTRY_ARMED.store(true, Ordering::Release);
    stress_with(1);
    REENTRY_ARMED.store(false, Ordering::Release);
    let _ = CORE.unregister(p, hi);
    check(
        probes::hits(9) == reentries(),
        format_args!(
            "reentry-stress: {} reentries, each hit counted",
            reentries()
        ),
    );
    check(
        text_identical(),
        format_args!("reentry-stress: text identical to the image"),
    );
    exit(true)
}

/// Entry of the tests (bootstrap processor).
pub fn run(cmd: &str) -> ! {
    println!("cmdline: {cmd:?}");
    if cmd.contains("alloc-in-trap") {
        forbidden_in_trap(Probe::Allocate, "allocates");
    }
    if cmd.contains("lock-in-trap") {
        forbidden_in_trap(Probe::TakeWriterLock, "takes the writer lock");
    }
    if cmd.contains("reentry-stress") {
        reentry_stress();
    }
    if cmd.contains("bench") {
        crate::bench::run();
        exit(true);
    }
    plan_kinds();
    returns();
    reentry();
    stress();
    let ticks: u64 = crate::TICKS.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    let quiet = crate::TICKS
        .iter()
        .take(online_cpus())
        .filter(|t| t.load(Ordering::Relaxed) == 0)
        .count();
    check(
        quiet == 0,
        format_args!("timer ticked on every cpu ({ticks} ticks)"),
    );
    println!("text fnv {:#018x}", text_hash());
    println!(
        "allocations {} (registration only)",
        crate::ALLOCATIONS.load(Ordering::Relaxed)
    );
    println!(
        "writer lock contended {} times",
        probes::WRITER_CONTENDED.load(Ordering::Relaxed)
    );
    println!("all tests passed");
    exit(true)
}

/// A handler that does what no trap handler may (`what`): the kernel must stop with a message
/// before this returns. `Probe::Allocate`: the allocator refuses; `Probe::TakeWriterLock` (it
/// calls `probe_count`): the writer lock refuses rather than let a trap spin on a lock its
/// CPU may hold.
fn forbidden_in_trap(consumer: Probe, what: &str) -> ! {
    let p = probes::platform();
    let key = p
        .key_of(addr_of(&TARGETS[1]))
        .unwrap_or_else(|| fatal(format_args!("no key")));
    if let Err((e, _)) = CORE.register(p, key, consumer, ConsumerOptions::default()) {
        fatal(format_args!("register: {e}"));
    }
    println!("calling a function whose probe handler {what}");
    call(&TARGETS[1], 1);
    println!("FAIL: a handler that {what} went unnoticed");
    exit(false)
}
