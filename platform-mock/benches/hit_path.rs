//! The core's hit-path cost on the mock: nanoseconds per breakpoint hit with 1 and with
//! 100 000 registered probes, from one run, with their ratio. Run it with
//! `cargo bench -p platform-mock --bench hit_path`.
//!
//! Each hit is a full `on_breakpoint`: pin, site lookup, consumer chain, handler, emulation of
//! the probed `nop`, unpin. The platform's own cost (the mock's memory handle) is included.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use platform_mock::asm::Asm;
use platform_mock::{Machine, ToyArch, ToyRegs, TEXT_BASE};
use probe_core::{
    Consumer, ConsumerOptions, CpuId, HandlerAction, Hit, HitContext, ProbeCore, ProbeKey, TaskId,
    TaskState, TrapState,
};

struct Count(AtomicU64);

impl Consumer<Machine> for Count {
    fn handler(&self, _ctx: &mut HitContext<'_, Machine>) -> HandlerAction {
        self.0.fetch_add(1, Ordering::Relaxed);
        HandlerAction::Keep
    }
}

const N_PROBES: usize = 100_000;
type Core = ProbeCore<Machine, Count, 131_072, 131_072, 131_072, 4, 4, 1>;
static BIG: Core = Core::new();
static SMALL: Core = Core::new();

fn bench(core: &Core, m: &Machine, space: probe_core::SpaceId, probes: usize, hits: u64) -> f64 {
    let (mut trap, mut ts) = (TrapState::<ToyArch>::new(), TaskState::<32>::new());
    let mut regs = ToyRegs::default();
    // Visit the probes in a scattered order so the lookups are not all cache-hot.
    let mut i: u64 = 0;
    let start = Instant::now();
    for _ in 0..hits {
        i = (i + 7919) % probes as u64;
        regs.pc = TEXT_BASE + 4 * i;
        let hit = core.on_breakpoint(m, CpuId(0), space, TaskId(1), &mut trap, &mut ts, &mut regs);
        debug_assert_eq!(hit, Hit::Emulated);
        let _ = black_box(hit);
    }
    start.elapsed().as_nanos() as f64 / hits as f64
}

fn main() {
    let m = Machine::new();
    let mut a = Asm::new();
    for _ in 0..N_PROBES {
        a.nop();
    }
    a.halt();
    let bytes = a.finish().expect("assembles").bytes;
    // One file (and space) per core: two cores must not patch the same text.
    let small_file = m.add_file(&bytes);
    let file = m.add_file(&bytes);
    let (small_space, _) = m.spawn(small_file, 0).expect("spawn");
    let (space, _task) = m.spawn(file, 0).expect("spawn");

    let t = Instant::now();
    {
        let core = &SMALL;
        core.register(
            &m,
            ProbeKey::new(small_file, 0),
            Count(AtomicU64::new(0)),
            ConsumerOptions::new(),
        )
        .map_err(|(e, _)| e)
        .expect("register");
    }
    for k in 0..N_PROBES as u64 {
        BIG.register(
            &m,
            ProbeKey::new(file, 4 * k),
            Count(AtomicU64::new(0)),
            ConsumerOptions::new(),
        )
        .map_err(|(e, _)| e)
        .expect("register");
    }
    let reg = t.elapsed();

    let hits = 2_000_000;
    // Warm up, then measure both in the same run.
    bench(&SMALL, &m, small_space, 1, hits / 10);
    bench(&BIG, &m, space, N_PROBES, hits / 10);
    let one = bench(&SMALL, &m, small_space, 1, hits);
    let many = bench(&BIG, &m, space, N_PROBES, hits);
    println!("core hit path on the mock (emulated nop, one consumer):");
    println!("  1 probe registered:        {one:8.1} ns/hit");
    println!(
        "  {N_PROBES} probes registered: {many:8.1} ns/hit  ({:.2}x the 1-probe cost)",
        many / one
    );
    println!(
        "registration: {N_PROBES} probes in {:.2} s ({:.1} us each, rmap walk and install included)",
        reg.as_secs_f64(),
        reg.as_secs_f64() * 1e6 / N_PROBES as f64
    );
    println!(
        "sizes: ProbeCore<131072 probes, 131072 consumers, 131072 sites, 4 spaces, 4 slots, 1 cpu> = {} bytes; TaskState = {} bytes",
        core::mem::size_of::<Core>(),
        core::mem::size_of::<TaskState>()
    );
}
