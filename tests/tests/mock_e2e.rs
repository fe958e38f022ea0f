//! End-to-end scenarios of the core on the mock machine: register -> run -> each handler fires
//! exactly as often as its instruction executes -> unregister -> original bytes back in every
//! space; and every bad call gets a typed error and leaves everything intact.

use platform_mock::asm::Asm;
use platform_mock::isa::Reg;
use platform_mock::{FaultOp, FaultRule, Machine, ToyArch, PAGE_SIZE};
use probe_core::{
    Addr, Arch, Capacity, ConsumerOptions, Error, FileId, MemErrorKind, ProbeCore, ProbeKey, Range,
    Reject, SpaceId,
};
use probe_tests::mock::{report_mappings, Counter, Filter, MockCore, Runner};

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

/// main: calls `f` ten times; `f` starts with an 8-byte `li` that straddles a 64-byte page.
fn program() -> (Vec<u8>, u64, u64) {
    let mut a = Asm::new();
    a.label("main").li(r(0), 0).li(r(1), 10);
    a.label("loop").call("f").subi(r(1), 1).jnz("loop");
    a.out(r(0)).halt();
    a.nops_to(PAGE_SIZE as usize - 4);
    a.label("f")
        .li(r(2), 2)
        .add(r(0), r(2))
        .ldpc(r(3), "d")
        .add(r(0), r(3))
        .ret();
    a.label("d").word(1);
    let p = a.finish().unwrap();
    let f = p.offset("f");
    assert_eq!(f, PAGE_SIZE - 4, "li crosses the page boundary");
    (p.bytes.clone(), f, p.offset("main"))
}

fn setup() -> (Machine, Box<MockCore>, FileId, u64) {
    let (bytes, f, _) = program();
    let m = Machine::new();
    let file = m.add_file(&bytes);
    (m, Box::new(MockCore::new()), file, f)
}

fn spawn(m: &Machine, core: &MockCore, file: FileId) -> (SpaceId, probe_core::TaskId) {
    let (space, task) = m.spawn(file, 0).unwrap();
    report_mappings(m, core, space, &[file]).unwrap();
    (space, task)
}

/// The error a registration that must fail returns (the consumer comes back with it).
fn refused<
    const A: usize,
    const B: usize,
    const C: usize,
    const D: usize,
    const E: usize,
    const F: usize,
>(
    m: &Machine,
    core: &ProbeCore<Machine, Counter, A, B, C, D, E, F>,
    key: ProbeKey,
) -> Error {
    match core.register(m, key, Counter::new(), ConsumerOptions::new()) {
        Ok(h) => panic!("registration at {key:?} should fail, got {h:?}"),
        Err((e, _consumer)) => e,
    }
}

/// Register `c` at `key` with default options; the registration must succeed.
fn registered<
    const A: usize,
    const B: usize,
    const C: usize,
    const D: usize,
    const E: usize,
    const F: usize,
>(
    m: &Machine,
    core: &ProbeCore<Machine, Counter, A, B, C, D, E, F>,
    key: ProbeKey,
    c: Counter,
) -> probe_core::ConsumerHandle {
    core.register(m, key, c, ConsumerOptions::new())
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("registration at {key:?}: {e}"))
}

fn text(m: &Machine, space: SpaceId, len: usize) -> Vec<u8> {
    m.peek(space, Addr(platform_mock::TEXT_BASE), len).unwrap()
}

#[test]
fn every_plan_kind_counts_exactly_and_restores_every_space() {
    let (m, core, file, f) = setup();
    let bytes = m.file_bytes(file).unwrap();
    let (s1, t1) = spawn(&m, &core, file);
    let (s2, _t2) = spawn(&m, &core, file);
    // li (emulated, crossing a page), add (boosted), ldpc (single-stepped), ret (single-step).
    let offs = [f, f + 8, f + 12, f + 24];
    let kinds: Vec<_> = offs
        .iter()
        .map(|&o| {
            let plan = ToyArch::analyze(&bytes[o as usize..]).unwrap();
            ToyArch::plan_kind(&plan)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            probe_core::PlanKind::Emulate,
            probe_core::PlanKind::Boost,
            probe_core::PlanKind::SingleStep,
            probe_core::PlanKind::SingleStep
        ]
    );
    let counters: Vec<Counter> = offs.iter().map(|_| Counter::new()).collect();
    let handles: Vec<_> = offs
        .iter()
        .zip(&counters)
        .map(|(&o, c)| registered(&m, &*core, ProbeKey::new(file, o), c.clone()))
        .collect();
    assert_eq!(core.site_count(), 8, "4 probes x 2 spaces");
    // A child forked now inherits the breakpoints.
    let (s3, t3) = m.fork(t1).unwrap();
    core.on_fork(&m, s1, s3).unwrap();
    assert_eq!(core.site_count(), 12);

    let mut run = Runner::new();
    assert_eq!(run.run(&m, &core, t1, 10_000), Some(10 * 2 + 10));
    assert_eq!(m.output(t1), [30]);
    assert_eq!(run.run(&m, &core, t3, 10_000), Some(30));
    for c in &counters {
        assert_eq!(c.count(), 20, "10 calls in each of two tasks");
    }
    assert_eq!(run.stats.emulated, 20);
    assert_eq!(run.stats.boosted, 20);
    assert_eq!(run.stats.stepped, 40);

    for (h, c) in handles.into_iter().zip(&counters) {
        let back = core.unregister(&m, h).unwrap();
        assert_eq!(back.count(), c.count());
    }
    for s in [s1, s2, s3] {
        assert_eq!(text(&m, s, bytes.len()), bytes, "space {s} restored");
    }
    assert_eq!(core.site_count(), 0);
    assert_eq!(core.probe_count(), 0);
}

#[test]
fn filters_decide_where_the_breakpoint_lives_and_refilter_follows_changes() {
    let (m, core, file, f) = setup();
    let (s1, _) = spawn(&m, &core, file);
    let (s2, _) = spawn(&m, &core, file);
    let (even, odd) = if s1.0 % 2 == 0 { (s1, s2) } else { (s2, s1) };
    let c = Counter::filtered(Filter::EvenSpaces);
    let h = registered(&m, &*core, ProbeKey::new(file, f + 8), c);
    let at = Addr(platform_mock::TEXT_BASE + f + 8);
    assert!(core.is_installed(even, at));
    assert!(!core.is_installed(odd, at));
    // A second, unfiltered consumer wants every space.
    let h2 = registered(&m, &*core, ProbeKey::new(file, f + 8), Counter::new());
    assert!(core.is_installed(odd, at));
    core.unregister(&m, h2).unwrap();
    assert!(!core.is_installed(odd, at), "removed where nobody wants it");
    assert!(core.is_installed(even, at));
    core.refilter(&m, odd).unwrap();
    assert!(!core.is_installed(odd, at));
    core.unregister(&m, h).unwrap();
    assert!(!core.is_installed(even, at));
}

#[test]
fn a_handler_can_remove_the_probe_from_its_space() {
    let (m, core, file, f) = setup();
    let bytes = m.file_bytes(file).unwrap();
    let (s1, t1) = spawn(&m, &core, file);
    let mut c = Counter::new();
    c.remove_after_hit = true;
    let h = registered(&m, &*core, ProbeKey::new(file, f + 8), c.clone());
    let at = Addr(platform_mock::TEXT_BASE + f + 8);
    assert!(core.is_installed(s1, at));
    let mut run = Runner::new();
    run.run(&m, &core, t1, 10_000);
    // The first hit asked for removal; the runner's maintain() carried it out, so the other
    // nine calls ran at full speed.
    assert_eq!(c.count(), 1);
    assert!(!core.is_installed(s1, at));
    assert_eq!(text(&m, s1, bytes.len()), bytes);
    assert_eq!(m.output(t1), [30], "behaviour unchanged");
    core.unregister(&m, h).unwrap();
}

#[test]
fn bad_calls_get_typed_errors_and_change_nothing() {
    let (m, core, file, f) = setup();
    let bytes = m.file_bytes(file).unwrap();
    let (s1, _) = spawn(&m, &core, file);
    let len = bytes.len() as u64;

    let e = refused(&m, &*core, ProbeKey::new(file, len + 3));
    assert_eq!(
        e,
        Error::OffsetOutsideFile {
            file,
            offset: len + 3,
            size: len
        }
    );
    let e = refused(&m, &*core, ProbeKey::new(FileId(999), 0));
    assert_eq!(e, Error::NoSuchFile(FileId(999)));
    // Not an instruction boundary: the data word decodes as garbage or truncated.
    let e = refused(&m, &*core, ProbeKey::new(file, len - 2));
    assert!(
        matches!(
            e,
            Error::Rejected(Reject::Truncated { .. } | Reject::Invalid)
        ),
        "{e:?}"
    );

    core.blacklist_file(file, f..f + 4).unwrap();
    let e = refused(&m, &*core, ProbeKey::new(file, f));
    assert_eq!(e, Error::Blacklisted { file, offset: f });
    core.blacklist_addr(
        Some(s1),
        Range::new(
            Addr(platform_mock::TEXT_BASE + f + 8),
            Addr(platform_mock::TEXT_BASE + f + 12),
        ),
    )
    .unwrap();
    let e = refused(&m, &*core, ProbeKey::new(file, f + 8));
    assert!(matches!(e, Error::BlacklistedAddress { .. }), "{e:?}");

    // A patch that fails half-way through the rmap walk rolls the whole registration back.
    let (s2, _) = spawn(&m, &core, file);
    m.inject_fault(FaultRule {
        space: Some(s2),
        ..FaultRule::new(FaultOp::Patch, 1)
    });
    let e = refused(&m, &*core, ProbeKey::new(file, f + 20));
    assert!(
        matches!(e, Error::Memory(me) if me.kind == MemErrorKind::Io),
        "{e:?}"
    );
    m.clear_faults();

    for s in [s1, s2] {
        assert_eq!(text(&m, s, bytes.len()), bytes, "space {s} untouched");
    }
    assert_eq!(core.site_count(), 0);
    assert_eq!(core.probe_count(), 0);

    // Double unregister and a stale handle.
    let h = registered(&m, &*core, ProbeKey::new(file, f + 20), Counter::new());
    core.unregister(&m, h).unwrap();
    assert_eq!(core.unregister(&m, h).err(), Some(Error::UnknownConsumer));
}

#[test]
fn capacities_run_out_with_typed_errors() {
    let (m, _, file, f) = setup();
    // Two consumers at most; one XOL slot per space.
    let core: Box<ProbeCore<Machine, Counter, 64, 2, 64, 4, 1, 1>> = Box::new(ProbeCore::new());
    let (_s, _) = m.spawn(file, 0).unwrap();
    report_mappings(&m, &core, _s, &[file]).unwrap();
    let h1 = registered(&m, &*core, ProbeKey::new(file, f + 8), Counter::new());
    // The single-stepped `ret` needs a second slot.
    let e = refused(&m, &*core, ProbeKey::new(file, f + 24));
    assert_eq!(
        e,
        Error::CapacityExhausted {
            what: Capacity::XolSlots
        }
    );
    // An emulated probe needs none.
    let h2 = registered(&m, &*core, ProbeKey::new(file, f), Counter::new());
    let e = refused(&m, &*core, ProbeKey::new(file, f));
    assert_eq!(
        e,
        Error::CapacityExhausted {
            what: Capacity::Consumers
        }
    );
    core.unregister(&m, h1).unwrap();
    core.unregister(&m, h2).unwrap();
}

#[test]
fn exec_and_munmap_forget_breakpoints_and_a_new_mapping_gets_them() {
    let (m, core, file, f) = setup();
    let (s1, t1) = spawn(&m, &core, file);
    let c = Counter::new();
    let h = registered(&m, &*core, ProbeKey::new(file, f + 8), c.clone());
    assert_eq!(core.site_count(), 1);
    let mut ts = probe_core::TaskState::<32>::new();
    m.exec(t1, file, 0).unwrap();
    core.on_exec(&m, s1, &mut ts);
    assert_eq!(core.site_count(), 0, "exec starts clean");
    report_mappings(&m, &core, s1, &[file]).unwrap();
    assert_eq!(
        core.site_count(),
        1,
        "the new image's mapping gets the probe"
    );
    let mut run = Runner::new();
    run.run(&m, &core, t1, 10_000);
    assert_eq!(c.count(), 10);
    let base = platform_mock::TEXT_BASE;
    core.on_munmap(&m, s1, Range::new(Addr(base), Addr(base + 0x1000)));
    assert_eq!(core.site_count(), 0);
    core.unregister(&m, h).unwrap();
}

#[test]
fn overlapping_probes_are_refused_with_the_existing_offset() {
    let (m, core, file, f) = setup();
    let _ = spawn(&m, &core, file);
    // `li` at f is 8 bytes long: f + 4 lies inside it.
    let h = registered(&m, &*core, ProbeKey::new(file, f), Counter::new());
    assert_eq!(
        refused(&m, &core, ProbeKey::new(file, f + 4)),
        Error::Overlaps {
            file,
            offset: f + 4,
            existing: f
        }
    );
    // The next instruction boundary is fine.
    let h2 = registered(&m, &*core, ProbeKey::new(file, f + 8), Counter::new());
    core.unregister(&m, h).unwrap();
    // And the other way round: with only f + 4 registered (if it decodes), f covers it.
    if let Ok(h3) = core.register(
        &m,
        ProbeKey::new(file, f + 4),
        Counter::new(),
        ConsumerOptions::new(),
    ) {
        assert_eq!(
            refused(&m, &core, ProbeKey::new(file, f)),
            Error::Overlaps {
                file,
                offset: f,
                existing: f + 4
            }
        );
        core.unregister(&m, h3).unwrap();
    }
    core.unregister(&m, h2).unwrap();
}

/// Step `t` until its next breakpoint trap and hand it to the core with `trap` and `ts`.
fn trap_once(
    m: &Machine,
    core: &MockCore,
    t: probe_core::TaskId,
    space: SpaceId,
    trap: &mut probe_core::TrapState<ToyArch>,
    ts: &mut probe_core::TaskState,
) -> probe_core::Hit {
    for _ in 0..1000 {
        if let platform_mock::StepEvent::Breakpoint { .. } = m.step(t) {
            let mut regs = m.regs(t).unwrap();
            let hit = core.on_breakpoint(m, probe_core::CpuId(0), space, t, trap, ts, &mut regs);
            m.set_regs(t, regs);
            return hit;
        }
    }
    panic!("no breakpoint trap");
}

#[test]
fn a_nested_context_keeps_the_outer_slot_and_a_reentry_keeps_the_outer_step() {
    let (m, core, file, f) = setup();
    let (s1, t1) = spawn(&m, &core, file);
    let key_add = ProbeKey::new(file, f + 8);
    let key_ldpc = ProbeKey::new(file, f + 12);
    let (add, ldpc) = (Counter::new(), Counter::new());
    let ha = core
        .register(&m, key_add, add.clone(), ConsumerOptions::new())
        .map_err(|(e, _)| e)
        .unwrap();
    let hl = core
        .register(&m, key_ldpc, ldpc.clone(), ConsumerOptions::new())
        .map_err(|(e, _)| e)
        .unwrap();
    let mut trap = probe_core::TrapState::<ToyArch>::new();
    let mut ts = probe_core::TaskState::new();
    // The task is sent to add's boosted slot and is interrupted there.
    let hit = trap_once(&m, &core, t1, s1, &mut trap, &mut ts);
    let probe_core::Hit::Boosted { slot: outer } = hit else {
        panic!("{hit:?}")
    };
    assert_eq!(trap.slot(), Some(outer));
    // A signal handler runs on the same state and hits the single-stepped probe.
    trap.nest().unwrap();
    let mut regs = m.regs(t1).unwrap();
    regs.pc = platform_mock::TEXT_BASE + f + 12;
    let inner = core.on_breakpoint(
        &m,
        probe_core::CpuId(0),
        s1,
        t1,
        &mut trap,
        &mut ts,
        &mut regs,
    );
    let probe_core::Hit::SingleStep { slot: inner_slot } = inner else {
        panic!("{inner:?}")
    };
    assert_ne!(inner_slot, outer);
    assert_eq!(
        ldpc.hits.load(core::sync::atomic::Ordering::SeqCst),
        1,
        "a hit in an announced nested context runs its handlers"
    );
    // Mid-step, the same context traps on add again: a reentry, no handler, nmissed.
    let mut again = m.regs(t1).unwrap();
    again.pc = platform_mock::TEXT_BASE + f + 8;
    let re = core.on_breakpoint(
        &m,
        probe_core::CpuId(0),
        s1,
        t1,
        &mut trap,
        &mut ts,
        &mut again,
    );
    assert!(matches!(re, probe_core::Hit::Boosted { .. }), "{re:?}");
    assert_eq!(
        add.hits.load(core::sync::atomic::Ordering::SeqCst),
        1,
        "the reentered hit ran no handler"
    );
    assert_eq!(core.probe_nmissed(key_add), Some(1));
    assert!(
        trap.any_stepping(),
        "the nested level's step survived the reentry"
    );
    // The nested step completes (the reentry's boosted frame is done by then), the handler
    // returns: the outer level is current again and still counted in add's slot.
    regs.pc = inner_slot.0 + 4;
    assert_eq!(
        core.on_single_step(&m, s1, &mut trap, &mut regs),
        probe_core::Step::Done
    );
    assert_eq!(
        regs.pc,
        platform_mock::TEXT_BASE + f + 20,
        "past the 8-byte ldpc"
    );
    core.unnest(&mut trap);
    assert_eq!(trap.depth(), 0);
    assert_eq!(
        trap.slot(),
        Some(outer),
        "the outer slot record survived the nested context"
    );
    core.seen_at(&mut trap, platform_mock::TEXT_BASE + f + 12);
    assert!(trap.is_idle());
    core.unregister(&m, ha).unwrap();
    core.unregister(&m, hl).unwrap();
}

#[test]
fn a_fork_the_core_cannot_track_leaves_the_child_clean() {
    let (m, _, file, f) = setup();
    let bytes = m.file_bytes(file).unwrap();
    // Two space buckets: the parent and one child fit, a second child does not.
    let core: Box<ProbeCore<Machine, Counter, 64, 8, 64, 2, 8, 1>> = Box::new(ProbeCore::new());
    let (s1, t1) = m.spawn(file, 0).unwrap();
    report_mappings(&m, &*core, s1, &[file]).unwrap();
    let h = registered(&m, &*core, ProbeKey::new(file, f + 8), Counter::new());
    let (c1, _) = m.fork(t1).unwrap();
    core.on_fork(&m, s1, c1).unwrap();
    assert!(core.is_installed(c1, Addr(platform_mock::TEXT_BASE + f + 8)));
    let (c2, _) = m.fork(t1).unwrap();
    assert_ne!(
        text(&m, c2, bytes.len()),
        bytes,
        "the child inherited the breakpoint"
    );
    assert_eq!(
        core.on_fork(&m, s1, c2),
        Err(Error::CapacityExhausted {
            what: Capacity::Spaces
        })
    );
    assert_eq!(
        text(&m, c2, bytes.len()),
        bytes,
        "an untracked child keeps no breakpoint of ours"
    );
    core.unregister(&m, h).unwrap();
    assert_eq!(text(&m, s1, bytes.len()), bytes);
    assert_eq!(text(&m, c1, bytes.len()), bytes);
}
