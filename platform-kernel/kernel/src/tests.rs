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
//! | `pk_privileged`   | `mov rax, cr0`                 | (refused by the core today)    |

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use probe_core::{ConsumerHandle, ConsumerOptions, Error, PlanKind, Reject};

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
    .global pk_privileged
pk_privileged:
    mov rax, cr0
    mov rax, rdi
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
    fn pk_privileged(x: u64) -> u64;
}

/// A probed function, its expected result, and the plan the core must pick.
struct Target {
    name: &'static str,
    f: unsafe extern "C" fn(u64) -> u64,
    add: u64,
    plan: Option<PlanKind>,
}

const TARGETS: [Target; 5] = [
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
        name: "privileged",
        f: pk_privileged,
        add: 0,
        plan: None,
    },
];

fn addr_of(t: &Target) -> u64 {
    t.f as usize as u64
}

fn call(t: &Target, x: u64) -> u64 {
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

fn text_identical() -> bool {
    let (start, end) = crate::image_range();
    // SAFETY: as in `text_hash`.
    let text = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    text == probes::platform().image().original
}

/// Probes of every plan kind, hit from every CPU at once: exact counts.
fn plan_kinds() {
    let p = probes::platform();
    let n = online_cpus() as u64;
    let mut handles: [Option<ConsumerHandle>; 5] = [None; 5];
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
            (Err((Error::Rejected(Reject::Privileged), _)), None) => {
                println!(
                    "ok: {} refused by the core: privileged instruction (core change needed)",
                    t.name
                );
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

/// Entry of the tests (bootstrap processor).
pub fn run(cmd: &str) -> ! {
    println!("cmdline: {cmd:?}");
    if cmd.contains("alloc-in-trap") {
        alloc_in_trap();
    }
    plan_kinds();
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
    println!("all tests passed");
    exit(true)
}

/// A handler that allocates: the allocator must stop the kernel with a message.
fn alloc_in_trap() -> ! {
    let p = probes::platform();
    let key = p
        .key_of(addr_of(&TARGETS[1]))
        .unwrap_or_else(|| fatal(format_args!("no key")));
    if let Err((e, _)) = CORE.register(p, key, Probe::Allocate, ConsumerOptions::default()) {
        fatal(format_args!("register: {e}"));
    }
    println!("calling a function whose probe handler allocates");
    call(&TARGETS[1], 1);
    println!("FAIL: the allocation in a trap handler went unnoticed");
    exit(false)
}
