//! Stress with real threads: four "CPU" threads run tasks through probed instructions of every
//! plan kind while a writer thread registers and unregisters consumers (and so whole probes,
//! sites and slots) thousands of times in small tables, and a ticker thread drives the grace
//! periods. This complements the loom models: far fewer interleavings are explored, but with
//! the whole core (every table, the rmap walk, slots, reclamation) and far longer histories.
//!
//! **The exact invariant.** Each logical consumer `(k, j)` (instruction `k`, consumer `j`) has
//! a state word the writer bumps: odd while a registration of it is *stably live* (its
//! `register` returned, its `unregister` not yet called), even otherwise; each registration
//! gets its own odd generation. A CPU thread reads the words of instruction `k` before each
//! step whose `pc` is at `k` and again after the step (and the core's handling of its trap),
//! and reads its own per-CPU handler counters around the trap. Then, for every such step:
//!
//! - a normal (untrapped) step, or a trap the core answers with `Restart`, runs no handler,
//!   and no consumer of `k` was stably live across it (else a registered probe was missed);
//! - a trap answered `Emulated`, `Boosted` or `SingleStep` runs each consumer of `k` at most
//!   once, and exactly once, with the stably live generation, if one was stably live across;
//! - no other answer (`NotOurs`, `Failed`, ...) ever occurs, no trap is taken outside `k`'s
//!   addresses, and no handler runs outside its own CPU's `on_breakpoint`: the per-trap deltas
//!   summed per CPU equal the handler counters, and the consumers' own counts equal both.
//!
//! Besides: no handler runs after its `unregister` (or failed `register`) returned (each
//! consumer's flag is set right then; handlers count violations instead of panicking inside
//! the core); each task's output equals an untraced run's; and at the end the text of every
//! space is the file's again, with no site and no probe left; and nothing leaked: with the
//! grace periods passed, every instruction can be probed at once again and every execution of
//! each hits it.
//!
//! The second test, `a_trap_that_misses_a_probe_reinstalled_meanwhile_is_still_ours`, is the
//! core bug this stress test found (a spurious `NotOurs`), made deterministic with a hook in
//! the platform's memory reads; it fails until the core is fixed.
//!
//! Counts bound every loop; no correctness depends on timing. A run prints its statistics
//! (`--nocapture`).
#![cfg(not(loom))]

mod wrapped;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use core::time::Duration;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use platform_mock::asm::{Asm, Program};
use platform_mock::isa::*;
use platform_mock::{Machine, StepEvent, ToyArch, ToyRegs, STACK_TOP, TEXT_BASE};
use probe_core::{
    Addr, AddressSpace, Arch, Capacity, Consumer, ConsumerHandle, ConsumerOptions, CpuId, Error,
    FileId, HandlerAction, Hit, HitContext, MemError, PlanKind, Platform, ProbeCore, ProbeKey,
    SpaceId, Step, TaskId, TaskState, TrapState,
};
use wrapped::wrapped_machine;

/// CPU threads (and tasks).
const CPUS: usize = 4;
/// Consumers per probed instruction.
const J: usize = 2;
/// Writer cycles (one register or unregister each): about 1.5 s in a debug build, 1.5 s for
/// the larger count in a release build.
const CYCLES: usize = if cfg!(debug_assertions) {
    10_000
} else {
    50_000
};
/// Steps every CPU runs after the writer is done.
const EXTRA_STEPS: u64 = 2_000;
/// Left alone, either side can run far ahead of the other (a spinning thread starves one
/// blocked on the machine's lock; the scheduler favours whom it likes), and registration
/// periods would meet no execution, or executions no writer. So they keep in step, by
/// counts: writer cycle `c` starts once every CPU has run `c * PACE - SLACK` steps, and a CPU
/// runs step `n` once the writer has started cycle `(n - SLACK) / PACE`.
const PACE: u64 = 12;
const SLACK: u64 = 64 * PACE;
/// A side waiting for the other parks (it is unparked as the other progresses) at most this
/// many times, each for at most `PACE_PARK`: then pacing is off for good. A thread that
/// stopped must not hang the others, and the checks hold either way.
const PACE_PARKS: u32 = 1_000;
const PACE_PARK: Duration = Duration::from_millis(1);
/// Hard bound on any CPU's steps: reaching it fails the test instead of hanging.
const MAX_STEPS: u64 = 20_000_000;

/// Probes, consumers, sites, spaces, slots per space, CPUs: small, so that table entries,
/// sites and slots are reused (and sometimes run out) all the time.
type Core = ProbeCore<Machine, Probe, 16, 8, 16, 8, 4, CPUS>;

/// The probed instructions: (label, plan kind).
const PROBED: [(&str, PlanKind); 6] = [
    ("p_nop", PlanKind::Emulate),
    ("p_add", PlanKind::Boost),
    ("p_call", PlanKind::Emulate),
    ("p_sub", PlanKind::Boost),
    ("p_ldpc", PlanKind::SingleStep),
    ("p_ret", PlanKind::SingleStep),
];
const K: usize = PROBED.len();

/// Rounds forever (until `r5 == r6`): each round sums `i + 3` for `i` in 8..=1 through a call,
/// adds the round number and prints it: round `n` prints `60 + n`.
fn program() -> Program {
    let mut a = Asm::new();
    a.label("main").li(R5, 0);
    a.label("round").cmp(R5, R6).jz("done");
    a.li(R0, 0).li(R1, 8);
    a.label("inner");
    a.label("p_nop").nop();
    a.label("p_add").add(R0, R1);
    a.push(R1);
    a.label("p_call").call("f");
    a.pop(R1);
    a.label("p_sub").subi(R1, 1);
    a.jnz("inner");
    a.add(R0, R5).out(R0).addi(R5, 1).jmp("round");
    a.label("done").halt();
    a.label("f");
    a.label("p_ldpc").ldpc(R3, "k");
    a.add(R0, R3);
    a.label("p_ret").ret();
    a.label("k").word(3);
    a.finish().unwrap()
}

/// What every thread shares: the writer's state words and the handlers' records.
#[derive(Debug)]
struct Shared {
    /// Per logical consumer: odd while a registration is stably live (see the module docs).
    state: [[AtomicU64; J]; K],
    /// Handler calls per CPU and logical consumer.
    calls: [[[AtomicU64; J]; K]; CPUS],
    /// The generation of the last handler call per CPU and logical consumer.
    last_gen: [[[AtomicU64; J]; K]; CPUS],
    /// Handler calls after the consumer's `unregister` (or failed `register`) returned.
    late: AtomicU64,
    /// Handler calls with a wrong key, address, registers or CPU.
    wrong: AtomicU64,
    /// Handler calls while the writer was registering or unregistering that very consumer.
    raced: AtomicU64,
    /// Handlers running right now, and the most seen at once.
    running: AtomicU64,
    max_running: AtomicU64,
    /// Steps run per CPU, writer cycles started, and whether pacing gave up (see `PACE`).
    steps: [AtomicU64; CPUS],
    cycle: AtomicU64,
    pacing_off: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            state: Default::default(),
            calls: Default::default(),
            last_gen: Default::default(),
            late: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            raced: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_running: AtomicU64::new(0),
            steps: Default::default(),
            cycle: AtomicU64::new(0),
            pacing_off: AtomicBool::new(false),
        }
    }
}

/// One registration of logical consumer `(k, j)`.
#[derive(Debug)]
struct Probe {
    k: usize,
    j: usize,
    generation: u64,
    key: ProbeKey,
    /// The probed instruction's address (every space maps the file at `TEXT_BASE`).
    addr: u64,
    hits: Arc<AtomicU64>,
    /// Set right after `unregister` (or a failed `register`) returned.
    gone: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Consumer<Machine> for Probe {
    fn handler(&self, ctx: &mut HitContext<'_, Machine>) -> HandlerAction {
        let s = &*self.shared;
        let now = s.running.fetch_add(1, SeqCst) + 1;
        s.max_running.fetch_max(now, SeqCst);
        if self.gone.load(SeqCst) {
            s.late.fetch_add(1, SeqCst);
        }
        if s.state[self.k][self.j].load(SeqCst) != self.generation {
            s.raced.fetch_add(1, SeqCst);
        }
        let cpu = ctx.cpu.0 as usize;
        if ctx.key != self.key || ctx.addr.0 != self.addr || ctx.regs.pc != self.addr || cpu >= CPUS
        {
            s.wrong.fetch_add(1, SeqCst);
        } else {
            s.calls[cpu][self.k][self.j].fetch_add(1, SeqCst);
            s.last_gen[cpu][self.k][self.j].store(self.generation, SeqCst);
        }
        self.hits.fetch_add(1, SeqCst);
        // Stay a little, so that unregistrations meet running handlers.
        for _ in 0..16 {
            core::hint::spin_loop();
        }
        s.running.fetch_sub(1, SeqCst);
        HandlerAction::Keep
    }
}

/// What one CPU thread saw.
#[derive(Clone, Copy, Debug, Default)]
struct CpuStats {
    steps: u64,
    /// Steps at a probed instruction (trapped or not).
    at_probe: u64,
    untrapped: u64,
    emulated: u64,
    boosted: u64,
    stepped: u64,
    restarts: u64,
    /// Handler calls accounted to this CPU's traps.
    handled: u64,
    /// (step, consumer) pairs where the consumer was stably live across the step.
    stable: u64,
    /// Invariant violations (described in `first`).
    violations: u64,
}

/// One CPU thread's result.
#[derive(Debug)]
struct CpuResult {
    stats: CpuStats,
    accounted: [[u64; J]; K],
    first: Option<String>,
}

struct Cpu<'a> {
    i: usize,
    m: &'a Machine,
    core: &'a Core,
    shared: &'a Shared,
    space: SpaceId,
    task: TaskId,
    addrs: [u64; K],
    /// The writer's thread, unparked as this CPU makes progress.
    writer: std::thread::Thread,
    /// The program's text (outside: in a slot).
    text: core::ops::Range<u64>,
    stats: CpuStats,
    accounted: [[u64; J]; K],
    first: Option<String>,
}

impl Cpu<'_> {
    fn violation(&mut self, what: String) {
        self.stats.violations += 1;
        if self.first.is_none() {
            self.first = Some(format!("cpu {}: {what}", self.i));
        }
    }

    fn snapshot(&self, k: usize) -> ([u64; J], [u64; J]) {
        let s = self.shared;
        let states = core::array::from_fn(|j| s.state[k][j].load(SeqCst));
        let calls = core::array::from_fn(|j| s.calls[self.i][k][j].load(SeqCst));
        (states, calls)
    }

    /// Wait (bounded) while this CPU is ahead of the writer (see `PACE`).
    fn pace(&self, done: &AtomicBool) {
        let s = self.shared;
        let ahead = || s.steps[self.i].load(SeqCst) > s.cycle.load(SeqCst) * PACE + SLACK;
        let mut parks = 0;
        while ahead() && !done.load(SeqCst) && !s.pacing_off.load(SeqCst) {
            if parks == PACE_PARKS {
                s.pacing_off.store(true, SeqCst);
                break;
            }
            std::thread::park_timeout(PACE_PARK);
            parks += 1;
        }
    }

    /// Run until the writer is done plus `EXTRA_STEPS`, and until nothing is in flight.
    fn run(mut self, done: &AtomicBool) -> CpuResult {
        let (m, core) = (self.m, self.core);
        let mut trap = TrapState::<ToyArch>::new();
        let mut ts: TaskState = TaskState::new();
        let mut extra = 0u64;
        while self.stats.steps < MAX_STEPS && self.stats.violations < 100 {
            let regs = m.regs(self.task).expect("task exists");
            core.seen_at(&mut trap, regs.pc);
            if done.load(SeqCst) {
                extra += 1;
                if extra > EXTRA_STEPS && trap.is_idle() && self.text.contains(&regs.pc) {
                    break;
                }
            }
            let at = self.addrs.iter().position(|&a| a == regs.pc);
            let before = at.map(|k| self.snapshot(k));
            self.stats.steps += 1;
            self.pace(done);
            if self.shared.steps[self.i].fetch_add(1, SeqCst) % PACE == 0 {
                self.writer.unpark();
            }
            let ev = m.step(self.task);
            match ev {
                StepEvent::Normal => {
                    if let (Some(k), Some((g0, c0))) = (at, before) {
                        self.stats.at_probe += 1;
                        self.stats.untrapped += 1;
                        self.check(k, g0, c0, None);
                    }
                }
                StepEvent::Breakpoint { addr } => {
                    let (Some(k), Some((g0, c0))) = (at, before) else {
                        self.violation(format!("trap at {:#x}, not a probed address", addr.0));
                        break;
                    };
                    self.stats.at_probe += 1;
                    let mut regs: ToyRegs = m.regs(self.task).expect("task exists");
                    let hit = core.on_breakpoint(
                        m,
                        CpuId(self.i as u32),
                        self.space,
                        self.task,
                        &mut trap,
                        &mut ts,
                        &mut regs,
                    );
                    m.set_regs(self.task, regs);
                    match hit {
                        Hit::Emulated => self.stats.emulated += 1,
                        Hit::Boosted { .. } => self.stats.boosted += 1,
                        Hit::SingleStep { .. } => {
                            self.stats.stepped += 1;
                            m.set_single_step(self.task, true);
                        }
                        Hit::Restart => {
                            self.stats.restarts += 1;
                            if regs.pc != addr.0 {
                                self.violation(format!("restart moved pc to {:#x}", regs.pc));
                            }
                        }
                        other => {
                            let (g1, _) = self.snapshot(k);
                            let installed = core.is_installed(self.space, addr);
                            self.violation(format!(
                                "{other:?} at {:#x} (probe {k}; consumer states {g0:?} -> \
                                 {g1:?}; a site of ours is there now: {installed})",
                                addr.0
                            ));
                            // Deliver nothing: the trap was ours. Leaving the task at the
                            // `brk` retries it, as the platform's fallback would.
                        }
                    }
                    self.check(k, g0, c0, Some(hit));
                }
                StepEvent::SingleStepDone => {
                    let mut regs = m.regs(self.task).expect("task exists");
                    match core.on_single_step(m, self.space, &mut trap, &mut regs) {
                        Step::Done => {}
                        other => self.violation(format!("single step: {other:?}")),
                    }
                    m.set_regs(self.task, regs);
                }
                other => {
                    self.violation(format!("unexpected event {other:?} at {:#x}", regs.pc));
                    break;
                }
            }
        }
        if self.stats.steps >= MAX_STEPS {
            self.violation("step bound reached".into());
        }
        core.clear_trap(&mut trap);
        core.on_task_exit(&mut ts);
        CpuResult {
            stats: self.stats,
            accounted: self.accounted,
            first: self.first,
        }
    }

    /// The invariant for one step at probed instruction `k` (see the module docs); `hit` is
    /// the core's answer if the step trapped.
    fn check(&mut self, k: usize, g0: [u64; J], c0: [u64; J], hit: Option<Hit>) {
        let (g1, c1) = self.snapshot(k);
        let resumed = matches!(
            hit,
            Some(Hit::Emulated | Hit::Boosted { .. } | Hit::SingleStep { .. })
        );
        for j in 0..J {
            let delta = c1[j] - c0[j];
            self.accounted[k][j] += delta;
            self.stats.handled += delta;
            let stable = g0[j] == g1[j] && g0[j] % 2 == 1;
            self.stats.stable += u64::from(stable);
            if !resumed && delta != 0 {
                self.violation(format!(
                    "{hit:?} at probe {k} ran consumer {j} {delta} times"
                ));
            }
            if delta > 1 {
                self.violation(format!(
                    "one trap at probe {k} ran consumer {j} {delta} times"
                ));
            }
            if stable {
                if !resumed {
                    self.violation(format!(
                        "probe {k} with consumer {j} stably registered (gen {}): {hit:?}",
                        g0[j]
                    ));
                } else if delta != 1 {
                    self.violation(format!(
                        "probe {k}: stably registered consumer {j} ran {delta} times"
                    ));
                } else {
                    let got = self.shared.last_gen[self.i][k][j].load(SeqCst);
                    if got != g0[j] {
                        self.violation(format!(
                            "probe {k}: consumer {j} ran generation {got}, registered {}",
                            g0[j]
                        ));
                    }
                }
            }
        }
    }
}

/// What the writer did.
#[derive(Clone, Copy, Debug, Default)]
struct WriterStats {
    registered: u64,
    unregistered: u64,
    failed: [u64; 3],
    /// Registrations that created a probe (the instruction had no consumer).
    probes_created: u64,
    max_live: u64,
    /// Hits counted by the consumers handed back, per logical consumer.
    hits: [[u64; J]; K],
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn writer(
    m: &Machine,
    core: &Core,
    shared: &Arc<Shared>,
    file: FileId,
    offsets: [u64; K],
    cpus: &[std::thread::Thread],
    failures: &mut Vec<String>,
) -> WriterStats {
    let mut stats = WriterStats::default();
    // The live registration of each logical consumer: its handle and its `gone` flag.
    type Live = Option<(ConsumerHandle, Arc<AtomicBool>)>;
    let mut handles: [[Live; J]; K] = Default::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for cycle in 0..CYCLES + K * J {
        // Wait (bounded) while some CPU is behind (see `PACE`), then let the CPUs on.
        let behind =
            || (0..CPUS).any(|i| shared.steps[i].load(SeqCst) + SLACK < cycle as u64 * PACE);
        let mut parks = 0;
        while behind() && !shared.pacing_off.load(SeqCst) {
            if parks == PACE_PARKS {
                shared.pacing_off.store(true, SeqCst);
                break;
            }
            std::thread::park_timeout(PACE_PARK);
            parks += 1;
        }
        shared.cycle.store(cycle as u64 + 1, SeqCst);
        for t in cpus {
            t.unpark();
        }
        // The last K * J cycles unregister whatever is left.
        let (k, j) = if cycle < CYCLES {
            (rng.below(K), rng.below(J))
        } else {
            ((cycle - CYCLES) / J, (cycle - CYCLES) % J)
        };
        if let Some((h, gone)) = handles[k][j].take() {
            let st = &shared.state[k][j];
            st.store(st.load(SeqCst) + 1, SeqCst); // even: no longer stably live
            let res = core.unregister(m, h);
            gone.store(true, SeqCst);
            match res {
                Ok(c) => {
                    assert!(Arc::ptr_eq(&c.gone, &gone));
                    stats.hits[k][j] += c.hits.load(SeqCst);
                    stats.unregistered += 1;
                }
                Err(e) => failures.push(format!("unregister ({k}, {j}): {e:?}")),
            }
        } else if cycle < CYCLES {
            let st = &shared.state[k][j];
            let v = st.load(SeqCst);
            debug_assert_eq!(v % 2, 0);
            let gone = Arc::new(AtomicBool::new(false));
            let probe = Probe {
                k,
                j,
                generation: v + 1,
                key: ProbeKey::new(file, offsets[k]),
                addr: TEXT_BASE + offsets[k],
                hits: Arc::default(),
                gone: gone.clone(),
                shared: shared.clone(),
            };
            let fresh = handles[k].iter().all(Option::is_none);
            match core.register(m, probe.key, probe, ConsumerOptions::new()) {
                Ok(h) => {
                    st.store(v + 1, SeqCst); // odd: stably live from here on
                    handles[k][j] = Some((h, gone));
                    stats.registered += 1;
                    stats.probes_created += u64::from(fresh);
                }
                Err((e, c)) => {
                    gone.store(true, SeqCst);
                    st.store(v + 2, SeqCst);
                    stats.hits[k][j] += c.hits.load(SeqCst);
                    let slot = match e {
                        Error::CapacityExhausted {
                            what: Capacity::Consumers,
                        } => 0,
                        Error::CapacityExhausted {
                            what: Capacity::XolSlots,
                        } => 1,
                        Error::CapacityExhausted { .. } => 2,
                        other => {
                            failures.push(format!("register ({k}, {j}): {other:?}"));
                            continue;
                        }
                    };
                    stats.failed[slot] += 1;
                }
            }
        }
        let live = handles.iter().flatten().filter(|h| h.is_some()).count() as u64;
        stats.max_live = stats.max_live.max(live);
        if cycle % 16 == 0 {
            if let Err(e) = core.maintain(m) {
                failures.push(format!("maintain: {e:?}"));
            }
        }
    }
    stats
}

/// Register one consumer on every probed instruction; every registration must succeed.
fn register_all(
    m: &Machine,
    core: &Core,
    shared: &Arc<Shared>,
    file: FileId,
    offsets: [u64; K],
) -> Vec<(ConsumerHandle, Arc<AtomicU64>)> {
    (0..K)
        .map(|k| {
            let st = &shared.state[k][0];
            let v = st.load(SeqCst);
            assert_eq!(v % 2, 0);
            let probe = Probe {
                k,
                j: 0,
                generation: v + 1,
                key: ProbeKey::new(file, offsets[k]),
                addr: TEXT_BASE + offsets[k],
                hits: Arc::default(),
                gone: Arc::default(),
                shared: shared.clone(),
            };
            let hits = probe.hits.clone();
            let h = core
                .register(m, probe.key, probe, ConsumerOptions::new())
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("after the stress, probe {k}: {e:?}"));
            st.store(v + 1, SeqCst);
            (h, hits)
        })
        .collect()
}

#[test]
fn consumers_come_and_go_under_four_cpus() {
    let p = program();
    let offsets: [u64; K] = core::array::from_fn(|k| p.offset(PROBED[k].0));
    for (k, &(label, kind)) in PROBED.iter().enumerate() {
        let plan = ToyArch::analyze(&p.bytes[offsets[k] as usize..]).unwrap();
        assert_eq!(ToyArch::plan_kind(&plan), kind, "{label}");
    }
    let addrs = offsets.map(|o| TEXT_BASE + o);

    let m = Machine::new();
    let file = m.add_file(&p.bytes);
    // Two spaces with two threads each: tasks of one space share its sites and slots.
    let mut tasks = Vec::new();
    for _ in 0..CPUS / 2 {
        let (space, t0) = m.spawn(file, p.offset("main")).unwrap();
        let mut regs = m.regs(t0).unwrap();
        regs.set(R6, u64::MAX);
        m.set_regs(t0, regs);
        regs.set(SP, STACK_TOP - 0x800);
        let t1 = m.new_task(space, regs).unwrap();
        tasks.push((space, t0));
        tasks.push((space, t1));
    }

    let core: Core = Core::new();
    let shared = Arc::new(Shared::new());
    let cpu = |i: usize| Cpu {
        i,
        m: &m,
        core: &core,
        shared: &shared,
        space: tasks[i].0,
        task: tasks[i].1,
        addrs,
        writer: std::thread::current(),
        text: TEXT_BASE..TEXT_BASE + p.bytes.len() as u64,
        stats: CpuStats::default(),
        accounted: [[0; J]; K],
        first: None,
    };
    let done = AtomicBool::new(false);
    let ticks = AtomicU64::new(0);
    let start = Instant::now();
    let mut failures = Vec::new();
    let (wstats, results) = std::thread::scope(|s| {
        let cpus: Vec<_> = (0..CPUS)
            .map(|i| {
                let cpu = cpu(i);
                let done = &done;
                s.spawn(move || cpu.run(done))
            })
            .collect();
        s.spawn(|| {
            // Bounded by the writer's end (and by a count, should it never come).
            for n in 0..1u64 << 40 {
                if done.load(SeqCst) {
                    break;
                }
                core.advance_epoch();
                if n % 64 == 0 {
                    let _ = core.maintain(&m);
                }
                ticks.fetch_add(1, SeqCst);
                std::thread::yield_now();
            }
        });
        let threads: Vec<_> = cpus.iter().map(|h| h.thread().clone()).collect();
        let w = writer(&m, &core, &shared, file, offsets, &threads, &mut failures);
        done.store(true, SeqCst);
        for t in &threads {
            t.unpark();
        }
        let results: Vec<CpuResult> = cpus.into_iter().map(|h| h.join().unwrap()).collect();
        (w, results)
    });
    let elapsed = start.elapsed();

    // Totals, and the accounting of every handler call: per CPU, the calls seen inside its
    // traps are all the calls made on it; per consumer, what the consumers counted.
    let mut total = CpuStats::default();
    for (i, r) in results.iter().enumerate() {
        let t = &r.stats;
        total.steps += t.steps;
        total.at_probe += t.at_probe;
        total.untrapped += t.untrapped;
        total.emulated += t.emulated;
        total.boosted += t.boosted;
        total.stepped += t.stepped;
        total.restarts += t.restarts;
        total.handled += t.handled;
        total.stable += t.stable;
        total.violations += t.violations;
        for k in 0..K {
            for j in 0..J {
                assert_eq!(
                    r.accounted[k][j],
                    shared.calls[i][k][j].load(SeqCst),
                    "cpu {i}: a handler of ({k}, {j}) ran outside this CPU's traps"
                );
            }
        }
    }
    for k in 0..K {
        for j in 0..J {
            let calls: u64 = (0..CPUS).map(|i| shared.calls[i][k][j].load(SeqCst)).sum();
            assert_eq!(
                wstats.hits[k][j], calls,
                "consumer ({k}, {j}): hits vs calls"
            );
        }
    }
    let traps = total.at_probe - total.untrapped;
    println!(
        "{elapsed:?}: writer {wstats:?}\n  pacing gave up: {}, ticks {}, {total:?}\n  handlers racing their \
         (un)registration {}, most handlers at once {}, {:.0} traps/s, {:.0} handler calls/s",
        shared.pacing_off.load(SeqCst),
        ticks.load(SeqCst),
        shared.raced.load(SeqCst),
        shared.max_running.load(SeqCst),
        traps as f64 / elapsed.as_secs_f64(),
        total.handled as f64 / elapsed.as_secs_f64(),
    );
    let firsts: Vec<&String> = results.iter().filter_map(|r| r.first.as_ref()).collect();
    assert_eq!(
        total.violations, 0,
        "invariant violations, first: {firsts:?}"
    );
    assert!(failures.is_empty(), "writer: {failures:?}");
    assert_eq!(shared.late.load(SeqCst), 0, "handlers ran after unregister");
    assert_eq!(shared.wrong.load(SeqCst), 0, "handlers saw a wrong context");

    // Everything is gone and every space's text is the file's again.
    assert_eq!(core.site_count(), 0);
    assert_eq!(core.probe_count(), 0);
    for &(space, _) in &tasks {
        let text = m.peek(space, Addr(TEXT_BASE), p.bytes.len()).unwrap();
        assert_eq!(text, p.bytes, "space {space:?}");
    }
    assert_eq!(m.file_bytes(file).unwrap(), p.bytes);

    // Nothing leaked (a consumer, a probe or site entry, a slot counted as occupied): once
    // the grace periods pass, every instruction can be probed at once, in both spaces, and
    // every execution of each hits.
    for _ in 0..4 {
        core.advance_epoch();
        core.maintain(&m).unwrap();
    }
    let all = register_all(&m, &core, &shared, file, offsets);
    assert_eq!(core.site_count(), K * CPUS / 2);
    for i in 0..CPUS {
        let r = cpu(i).run(&done);
        assert_eq!(r.stats.violations, 0, "after the stress: {:?}", r.first);
        assert_eq!(r.stats.untrapped, 0);
        assert_eq!(r.stats.stable, r.stats.at_probe);
        assert_eq!(r.stats.handled, r.stats.at_probe - r.stats.restarts);
    }
    for (k, (h, hits)) in all.into_iter().enumerate() {
        assert!(
            hits.load(SeqCst) > 0,
            "probe {k} never hit after the stress"
        );
        core.unregister(&m, h).unwrap();
    }
    assert_eq!(core.site_count(), 0);
    assert_eq!(core.probe_count(), 0);
    for &(space, _) in &tasks {
        let text = m.peek(space, Addr(TEXT_BASE), p.bytes.len()).unwrap();
        assert_eq!(text, p.bytes, "space {space:?}");
    }

    // The programs computed what they compute untraced.
    let longest = tasks.iter().map(|&(_, t)| m.output(t).len()).max().unwrap();
    let reference = Machine::new();
    let rf = reference.add_file(&p.bytes);
    let (_, rt) = reference.spawn(rf, p.offset("main")).unwrap();
    let mut regs = reference.regs(rt).unwrap();
    regs.set(R6, longest as u64);
    reference.set_regs(rt, regs);
    assert_eq!(
        reference.run_to_exit(rt, 1 << 40),
        Some(60 + longest as u64 - 1)
    );
    let want = reference.output(rt);
    assert_eq!(want.len(), longest);
    assert!(want.iter().enumerate().all(|(n, &v)| v == 60 + n as u64));
    for &(_, t) in &tasks {
        let got = m.output(t);
        assert!(!got.is_empty(), "task {t:?} completed no round");
        assert_eq!(got, want[..got.len()], "task {t:?}");
    }

    // The run exercised what it is for.
    assert!(wstats.registered >= CYCLES as u64 / 4, "{wstats:?}");
    assert!(total.emulated > 0 && total.boosted > 0 && total.stepped > 0);
    assert!(total.stable > 0 && total.handled > 0);
}

// ------------------------------------------------------------------------------------------
// The interleaving the stress test found, made deterministic.

/// The machine, with a hook on one read: the next read of `addr` by the hit path waits until
/// the test says go (the writer acts in between).
#[derive(Debug, Default)]
struct Hooked {
    m: Machine,
    #[allow(clippy::type_complexity)]
    arm: std::sync::Mutex<Option<(u64, mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

#[derive(Debug)]
struct HookedSpace<'a> {
    inner: platform_mock::SpaceHandle<'a>,
    p: &'a Hooked,
}

impl AddressSpace for HookedSpace<'_> {
    fn id(&self) -> SpaceId {
        self.inner.id()
    }
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        let hook = {
            let mut arm = self.p.arm.lock().unwrap();
            match *arm {
                Some((at, _, _)) if at == addr.0 => arm.take(),
                _ => None,
            }
        };
        if let Some((_, reached, go)) = hook {
            reached.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        self.inner.read(addr, buf)
    }
    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(addr, data)
    }
    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.inner.patch_code(addr, data)
    }
}

wrapped_machine!(Hooked {
    type Space<'a> = HookedSpace<'a>;
    fn space(&self, id: SpaceId) -> Option<HookedSpace<'_>> {
        Platform::space(&self.m, id).map(|inner| HookedSpace { inner, p: self })
    }
});

#[derive(Debug, Default)]
struct Count(Arc<AtomicU64>);

impl Consumer<Hooked> for Count {
    fn handler(&self, _: &mut HitContext<'_, Hooked>) -> HandlerAction {
        self.0.fetch_add(1, SeqCst);
        HandlerAction::Keep
    }
}

/// A task traps on a probe's `brk`; before the hit path looks the site up, the probe's last
/// consumer is unregistered (the original bytes go back, the site is unpublished). The
/// lookup misses, so the hit path reads the text to tell "gone" from "not ours". Before that
/// read, a new consumer is registered on the same instruction: the site is published again
/// and the `brk` rewritten. The read sees a `brk`, and the core answers `NotOurs`, although
/// the trap was ours and a site of ours is installed there: the platform would deliver a
/// SIGTRAP to a traced program that did nothing wrong. (Found by the stress test above, which
/// reports it as `NotOurs at ... a site of ours is there now: true`.) The right answer is
/// `Restart`: the task re-executes the address and traps into the new probe.
#[test]
fn a_trap_that_misses_a_probe_reinstalled_meanwhile_is_still_ours() {
    let p = program();
    let hk = Hooked::default();
    let file = hk.m.add_file(&p.bytes);
    let (space, task) = hk.m.spawn(file, p.offset("main")).unwrap();
    let core: ProbeCore<Hooked, Count, 16, 8, 16, 8, 4, 2> = ProbeCore::new();
    let key = ProbeKey::new(file, p.offset("p_nop"));
    let addr = TEXT_BASE + key.offset;

    // The task trapped on the first consumer's `brk`; the consumer is unregistered before
    // the hit path runs.
    let first = Count::default();
    let h = core
        .register(&hk, key, first, ConsumerOptions::new())
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(core.is_installed(space, Addr(addr)));
    let first = core.unregister(&hk, h).unwrap();
    assert!(!core.is_installed(space, Addr(addr)));

    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *hk.arm.lock().unwrap() = Some((addr, reached_tx, go_rx));
    let (hit, pc) = std::thread::scope(|s| {
        let cpu = s.spawn(|| {
            let mut trap = TrapState::<ToyArch>::new();
            let mut ts: TaskState = TaskState::new();
            let mut regs = hk.m.regs(task).unwrap();
            regs.pc = addr;
            let hit = core.on_breakpoint(&hk, CpuId(0), space, task, &mut trap, &mut ts, &mut regs);
            (hit, regs.pc)
        });
        // The hit path missed the site and is about to read the text: register again.
        reached_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the hit path reads the text after missing the site");
        let second = Count::default();
        let hits = second.0.clone();
        core.register(&hk, key, second, ConsumerOptions::new())
            .map_err(|(e, _)| e)
            .unwrap();
        go_tx.send(()).unwrap();
        let r = cpu.join().unwrap();
        assert_eq!(hits.load(SeqCst), 0);
        r
    });
    assert_eq!(first.0.load(SeqCst), 0);
    assert!(
        core.is_installed(space, Addr(addr)),
        "a site of ours is there"
    );
    assert_eq!(
        hk.m.peek(space, Addr(addr), BRK_BYTES.len()).unwrap(),
        BRK_BYTES,
        "and its breakpoint"
    );
    assert_eq!(
        (hit, pc),
        (Hit::Restart, addr),
        "the trap was ours: restart the instruction (it traps again, into the new probe)"
    );
}
