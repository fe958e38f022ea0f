//! The core inside this kernel: its instance, the platform, and the trap handlers' calls.
//!
//! This and `text.rs` are the kernel's side of the glue; `platform_kernel` holds the rest.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use platform_kernel::percpu::PerCpu;
use platform_kernel::trap::{self, CpuTrap, KernelCore, TrapOutcome};
use platform_kernel::{KernelImage, KernelPlatform, TrapFrame};
use probe_core::lock_api::{GuardNoSend, RawMutex};
use probe_core::{Consumer, EntryAction, HandlerAction, HitContext, ReturnContext};

use crate::text::Mem;
use crate::{fatal, MAX_CPUS};

/// The platform type.
pub type Plat = KernelPlatform<Mem>;

/// Capacities: probe buckets, consumers, site buckets, slots, CPUs. Big enough for the
/// benchmark's 100 000 probes (a table holds 7/8 of its buckets); the core is all zero bits,
/// in `.bss`.
pub const PROBES: usize = 131_072;
pub const CONSUMERS: usize = 100_100;
/// Return-chain depth per CPU.
pub const DEPTH: usize = 32;
pub const SITES: usize = 131_072;
pub const XOL: usize = 64;

/// The core, with this kernel's writer lock.
pub type Core = KernelCore<Mem, Probe, PROBES, CONSUMERS, SITES, XOL, MAX_CPUS, WriterLock>;

/// The core's writer lock, this kernel's pick for [`ProbeCore`](probe_core::ProbeCore)'s `L`.
///
/// This kernel has no scheduler, so nothing can sleep: a spin lock it is. But it is one that
/// checks the two rules its holders rely on, and fails loudly when broken (as Linux's
/// `might_sleep()` does for `kprobe_mutex`):
/// - it is taken in process context only, never from a trap or interrupt handler (a handler
///   could interrupt the holder on its own CPU and spin forever);
/// - it is taken with interrupts on: the holder's text patch waits until every other CPU has
///   taken its sync IPI (`text.rs`), so a CPU waiting for the lock with interrupts off would
///   deadlock the holder.
///
/// Its unlocked state is all zero bits, so the static core stays in `.bss`. A kernel with a
/// scheduler picks its sleeping mutex here instead, and its `patch_text` may then sleep
/// (take `text_mutex`, wait for the sync IPIs by sleeping).
///
/// It also records its holder, so that the text write path can check the core's promise that
/// `patch_code` is only ever called with the writer lock held ([`writer_held_here`]).
#[derive(Debug)]
pub struct WriterLock {
    /// The holder's CPU number plus one; 0 when free.
    holder: AtomicUsize,
}

/// Writer-lock acquisitions that found it held.
pub static WRITER_CONTENDED: AtomicU64 = AtomicU64::new(0);
/// The CPU holding a `WriterLock` plus one, 0 for none (this kernel has one core, so one).
static WRITER_HOLDER: AtomicUsize = AtomicUsize::new(0);

/// Whether this CPU holds the core's writer lock.
pub fn writer_held_here() -> bool {
    WRITER_HOLDER.load(Ordering::Relaxed) == crate::this_cpu() + 1
}

impl WriterLock {
    fn check_context() {
        let cpu = crate::this_cpu();
        if cpu < MAX_CPUS && crate::IN_TRAP[cpu].load(Ordering::Relaxed) != 0 {
            fatal(format_args!(
                "the core's writer lock taken from a trap handler"
            ));
        }
        if !x86_64::instructions::interrupts::are_enabled() {
            fatal(format_args!(
                "the core's writer lock taken with interrupts off"
            ));
        }
    }

    fn try_lock_unchecked(&self) -> bool {
        let me = crate::this_cpu() + 1;
        let got = self
            .holder
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if got {
            WRITER_HOLDER.store(me, Ordering::Relaxed);
        }
        got
    }
}

// SAFETY: `holder` is a test-and-set word: `lock`/`try_lock` succeed only by swapping it from
// 0 to the caller's CPU (Acquire), `unlock` stores 0 (Release), so at most one holder at a
// time and the holder's writes happen before the next holder's reads. The guard is not
// `Send`: the holder is a CPU, and this kernel never moves work between CPUs.
unsafe impl RawMutex for WriterLock {
    const INIT: Self = WriterLock {
        holder: AtomicUsize::new(0),
    };
    type GuardMarker = GuardNoSend;

    fn lock(&self) {
        Self::check_context();
        if self.try_lock_unchecked() {
            return;
        }
        WRITER_CONTENDED.fetch_add(1, Ordering::Relaxed);
        loop {
            while self.holder.load(Ordering::Relaxed) != 0 {
                core::hint::spin_loop();
            }
            if self.try_lock_unchecked() {
                return;
            }
        }
    }

    fn try_lock(&self) -> bool {
        Self::check_context();
        self.try_lock_unchecked()
    }

    unsafe fn unlock(&self) {
        WRITER_HOLDER.store(0, Ordering::Relaxed);
        self.holder.store(0, Ordering::Release);
    }
}

/// The core, a `static` (its `new` is `const`).
pub static CORE: Core = Core::new();
static PLATFORM: spin::Once<Plat> = spin::Once::new();
static TRAPS: PerCpu<CpuTrap<DEPTH>, MAX_CPUS> = PerCpu::new();

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
pub const COUNTERS: usize = 10;
pub static HITS: [[AtomicU64; MAX_CPUS]; COUNTERS] =
    [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; COUNTERS];

/// Registrations the stress test makes; each has its own hit count and "unregistered" flag.
pub const LIVES: usize = 4096;
/// Hits per stress registration.
pub static LIVE_HITS: [AtomicU64; LIVES] = [const { AtomicU64::new(0) }; LIVES];
/// Set once `unregister` of that registration returned.
pub static LIVE_DEAD: [AtomicBool; LIVES] = [const { AtomicBool::new(false) }; LIVES];
/// Handler calls of a registration whose `unregister` had already returned.
pub static LATE_CALLS: AtomicU64 = AtomicU64::new(0);

/// Return-probe entries (entry handlers run) and returns (return handlers run), per CPU.
pub static RET_ENTRIES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub static RET_RETURNS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Return handlers that saw a wrong return value or a data mismatch.
pub static RET_WRONG: AtomicU64 = AtomicU64::new(0);

/// What the tests attach to probes.
#[derive(Debug)]
pub enum Probe {
    /// Count hits in `HITS[n]`.
    Count(usize),
    /// A stress registration: counts in `LIVE_HITS[n]`, checks `LIVE_DEAD[n]`.
    Live(usize),
    /// A return consumer on `pk_sum` (sum of 0..=n): checks the return value against the
    /// argument the entry handler saved.
    Ret,
    /// Allocate in the handler (must kill the kernel).
    Allocate,
    /// Take the core's writer lock in the handler (must kill the kernel).
    TakeWriterLock,
}

impl Consumer<Plat> for Probe {
    fn handler(&self, ctx: &mut HitContext<'_, Plat>) -> HandlerAction {
        match *self {
            Probe::Count(n) => {
                if let Some(h) = HITS.get(n).and_then(|c| c.get(ctx.cpu.0 as usize)) {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            }
            Probe::Live(n) => {
                if let (Some(dead), Some(hits)) = (LIVE_DEAD.get(n), LIVE_HITS.get(n)) {
                    if dead.load(Ordering::Acquire) {
                        LATE_CALLS.fetch_add(1, Ordering::Relaxed);
                    }
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Probe::Ret => {}
            Probe::Allocate => {
                let b = alloc::boxed::Box::new(ctx.addr.0);
                core::hint::black_box(b);
            }
            Probe::TakeWriterLock => {
                core::hint::black_box(CORE.probe_count());
            }
        }
        HandlerAction::Keep
    }

    fn entry_handler(&self, ctx: &mut HitContext<'_, Plat>, data: &mut [u8]) -> EntryAction {
        if let Some(e) = RET_ENTRIES.get(ctx.cpu.0 as usize) {
            e.fetch_add(1, Ordering::Relaxed);
        }
        let arg = ctx.regs.rdi;
        if let Some(d) = data.get_mut(..8) {
            d.copy_from_slice(&arg.to_le_bytes());
        }
        EntryAction::Track
    }

    fn return_handler(&self, ctx: &mut ReturnContext<'_, Plat>, data: &mut [u8]) {
        if let Some(r) = RET_RETURNS.get(ctx.cpu.0 as usize) {
            r.fetch_add(1, Ordering::Relaxed);
        }
        // Handlers run on the hit path: no slicing that could panic.
        let Some(Ok(b)) = data.get(..8).map(<[u8; 8]>::try_from) else {
            RET_WRONG.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = u64::from_le_bytes(b);
        if ctx.regs.rax != n * (n + 1) / 2 {
            RET_WRONG.fetch_add(1, Ordering::Relaxed);
        }
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

/// Traps on an `int3` that memory no longer holds (a CPU that fetched it before it was
/// removed), per CPU.
pub static STALE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// `#BP` (interrupts off).
pub fn on_breakpoint(cpu: usize, f: &mut TrapFrame) {
    // SAFETY: this CPU's state, in an interrupt-gate handler (interrupts off): nothing else on
    // this CPU runs until it returns (no NMI use in this kernel).
    let Some(st) = (unsafe { TRAPS.get_mut(cpu) }) else {
        fatal(format_args!("cpu {cpu} has no trap state"))
    };
    if f.rip - 1 == crate::bench::bare_int3() {
        // The benchmark's bare int3: the same entry and dispatch, no core.
        return;
    }
    // An int3 this CPU executed though memory no longer holds it: once is the removal race
    // the core restarts from; forever is a CPU (an emulator) that never refetches.
    // SAFETY: rip - 1 is the int3 this CPU just executed: mapped, readable.
    let byte = unsafe { ((f.rip - 1) as *const u8).read_volatile() };
    if byte != 0xcc {
        let n = STALE[cpu].fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1_000_000 {
            fatal(format_args!(
                "the int3 at {:#x} was executed {n} times after it was removed (memory holds \
                 {byte:#x}): this CPU runs stale code (QEMU multi-threaded TCG?)",
                f.rip - 1
            ));
        }
    }
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
    // nor a single step (interrupts off while stepping). The borrow ends before the handler's
    // own probe hits take this CPU's state again.
    let nested = match unsafe { TRAPS.get_mut(cpu) } {
        Some(st) => trap::on_interrupt_entry(&CORE, st, f),
        None => false,
    };
    CORE.advance_epoch();
    let (slots, slots_end) = crate::slot_range();
    if nested && (slots..slots_end).contains(&f.rip) {
        // The interrupted code sits in a boosted slot: the handler hits probes meanwhile.
        crate::tests::on_timer_in_slot(cpu);
    }
    // SAFETY: as above; the handler's hits are over.
    if let Some(st) = unsafe { TRAPS.get_mut(cpu) } {
        trap::on_interrupt_exit(&CORE, st);
    }
}
