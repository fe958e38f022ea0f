//! The core inside this kernel: its instance, the platform, and the trap handlers' calls.
//!
//! This and `text.rs` are the kernel's side of the glue; `platform_kernel` holds the rest.

use core::sync::atomic::{AtomicU64, Ordering};

use platform_kernel::percpu::PerCpu;
use platform_kernel::trap::{self, CpuTrap, KernelCore, TrapOutcome};
use platform_kernel::{KernelImage, KernelPlatform, TrapFrame};
use probe_core::{Consumer, HandlerAction, HitContext};

use crate::text::Mem;
use crate::{fatal, MAX_CPUS};

/// The platform type.
pub type Plat = KernelPlatform<Mem>;

/// Capacities: probe buckets, consumers, site buckets, slots, CPUs.
pub const PROBES: usize = 64;
pub const CONSUMERS: usize = 32;
pub const SITES: usize = 64;
pub const XOL: usize = 64;

/// The core.
pub type Core = KernelCore<Mem, Probe, PROBES, CONSUMERS, SITES, XOL, MAX_CPUS>;

/// The core, a `static` (its `new` is `const`).
pub static CORE: Core = Core::new();
static PLATFORM: spin::Once<Plat> = spin::Once::new();
static TRAPS: PerCpu<CpuTrap<32>, MAX_CPUS> = PerCpu::new();

/// The platform (set up by [`init`]).
pub fn platform() -> &'static Plat {
    match PLATFORM.get() {
        Some(p) => p,
        None => fatal(format_args!("probe platform used before init")),
    }
}

/// The slot area: `XOL` slots of 64 bytes in the read-only text pages (`.slots`, see the
/// linker script), filled with `int3` so that a stray jump into it traps.
#[link_section = ".slots"]
#[used]
static mut SLOT_AREA: [u8; XOL * 64] = [0xcc; XOL * 64];

/// The image's original bytes, copied before the first patch (the core's "file").
const ORIGINAL_MAX: usize = 4 << 20;
static mut ORIGINAL: [u8; ORIGINAL_MAX] = [0; ORIGINAL_MAX];

/// Hits counted per counter and CPU.
pub const COUNTERS: usize = 8;
pub static HITS: [[AtomicU64; MAX_CPUS]; COUNTERS] =
    [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; COUNTERS];

/// What the tests attach to probes.
#[derive(Debug)]
pub enum Probe {
    /// Count hits in `HITS[n]`.
    Count(usize),
    /// Allocate in the handler (must kill the kernel).
    Allocate,
}

impl Consumer<Plat> for Probe {
    fn handler(&self, ctx: &mut HitContext<'_, Plat>) -> HandlerAction {
        match *self {
            Probe::Count(n) => {
                HITS[n][ctx.cpu.0 as usize].fetch_add(1, Ordering::Relaxed);
            }
            Probe::Allocate => {
                let b = alloc::boxed::Box::new(ctx.addr.0);
                core::hint::black_box(b);
            }
        }
        HandlerAction::Keep
    }
}

/// Total of counter `n` over all CPUs.
pub fn hits(n: usize) -> u64 {
    HITS[n].iter().map(|h| h.load(Ordering::Relaxed)).sum()
}

/// Snapshot the image and set up the platform. Bootstrap processor, before any patch.
pub fn init() {
    let (start, end) = crate::image_range();
    let len = (end - start) as usize;
    if len > ORIGINAL_MAX {
        fatal(format_args!("image of {len} bytes exceeds the snapshot"));
    }
    // SAFETY: ORIGINAL is written only here, once, before anything reads it; the image range
    // is mapped and readable; the lengths were checked.
    let original: &'static [u8] = unsafe {
        let dst = (&raw mut ORIGINAL).cast::<u8>();
        core::ptr::copy_nonoverlapping(start as *const u8, dst, len);
        core::slice::from_raw_parts(dst, len)
    };
    let (slots, slots_end) = crate::slot_range();
    let cpus = crate::lapic::cpu_count().clamp(1, MAX_CPUS as u32);
    PLATFORM.call_once(|| {
        KernelPlatform::new(
            KernelImage {
                base: start,
                original,
                slots,
                slot_count: ((slots_end - slots) / 64) as usize,
            },
            u64::from(cpus),
            Mem,
        )
    });
    println!(
        "image: base {start:#x} len {len:#x} fnv {:#018x}; slots {slots:#x}..{slots_end:#x}",
        crate::fnv1a(original.iter().copied())
    );
}

/// `#BP` (interrupts off).
pub fn on_breakpoint(cpu: usize, f: &mut TrapFrame) {
    // SAFETY: this CPU's state, in an interrupt-gate handler (interrupts off): nothing else on
    // this CPU runs until it returns (no NMI use in this kernel).
    let Some(st) = (unsafe { TRAPS.get_mut(cpu) }) else {
        fatal(format_args!("cpu {cpu} has no trap state"))
    };
    match trap::on_int3(&CORE, platform(), cpu as u32, st, f) {
        TrapOutcome::Handled => {}
        TrapOutcome::NotOurs => fatal(format_args!("stray int3 at {:#x}", f.rip - 1)),
        TrapOutcome::Failed(e) => fatal(format_args!("probe at {:#x} failed: {e}", f.rip)),
    }
}

/// `#DB` (interrupts off, own IST stack).
pub fn on_debug(cpu: usize, f: &mut TrapFrame) {
    let dr6: u64;
    // SAFETY: reading DR6, then clearing its sticky status bits (the architectural reset
    // value), has no other effect.
    unsafe {
        core::arch::asm!("mov {0}, dr6", "mov dr6, {1}", out(reg) dr6, in(reg) 0xffff_0ff0u64, options(nomem, nostack));
    }
    if dr6 & (1 << 14) == 0 {
        fatal(format_args!("#DB without single step at {:#x}", f.rip));
    }
    // SAFETY: as in `on_breakpoint`.
    let Some(st) = (unsafe { TRAPS.get_mut(cpu) }) else {
        fatal(format_args!("cpu {cpu} has no trap state"))
    };
    match trap::on_debug(&CORE, platform(), st, f) {
        TrapOutcome::Handled => {}
        TrapOutcome::NotOurs => fatal(format_args!("stray single step at {:#x}", f.rip)),
        TrapOutcome::Failed(e) => fatal(format_args!("single step at {:#x} failed: {e}", f.rip)),
    }
}

/// The timer (interrupts off).
pub fn on_timer(cpu: usize, f: &TrapFrame) {
    // SAFETY: as in `on_breakpoint`; the timer never interrupts `#BP`/`#DB` (interrupt gates)
    // nor a single step (interrupts off while stepping).
    if let Some(st) = unsafe { TRAPS.get_mut(cpu) } {
        trap::on_interrupt(&CORE, st, f);
    }
    CORE.quiescent();
}
