//! Return probes end to end on the mock: recursion, several return probes
//! on one function, tail calls, frames abandoned by a longjmp, maxactive and nmissed, entry
//! handlers that decline, per-instance data, fork with a pending return, task exit,
//! unregister while instances are outstanding, and detach restoring every hijacked return
//! address.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use platform_mock::asm::Asm;
use platform_mock::isa::{Reg, SP};
use platform_mock::{Machine, ToyArch, TEXT_BASE};
use probe_core::{
    ConsumerOptions, EntryAction, FileId, HitContext, ProbeCore, ProbeKey, ReturnContext,
    TaskState, TrapState,
};
use probe_tests::mock::{report_mappings, Runner};

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

/// What a return consumer saw.
#[derive(Default, Debug)]
struct Seen {
    entries: AtomicU64,
    returns: AtomicU64,
    /// (argument r1 saved at entry in the instance data, return value r0).
    pairs: Mutex<Vec<(u64, u64)>>,
    /// Real return addresses the return handler was given.
    rets: Mutex<Vec<u64>>,
}

#[derive(Clone, Debug, Default)]
struct RetProbe {
    seen: Arc<Seen>,
    decline_odd: bool,
}

impl probe_core::Consumer<Machine> for RetProbe {
    fn entry_handler(&self, ctx: &mut HitContext<'_, Machine>, data: &mut [u8]) -> EntryAction {
        self.seen.entries.fetch_add(1, Ordering::SeqCst);
        let n = ctx.regs.r[1];
        data[..8].copy_from_slice(&n.to_le_bytes());
        if self.decline_odd && n % 2 == 1 {
            EntryAction::Decline
        } else {
            EntryAction::Track
        }
    }
    fn return_handler(&self, ctx: &mut ReturnContext<'_, Machine>, data: &mut [u8]) {
        self.seen.returns.fetch_add(1, Ordering::SeqCst);
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        self.seen.pairs.lock().unwrap().push((n, ctx.regs.r[0]));
        self.seen.rets.lock().unwrap().push(ctx.ret.0);
    }
}

type Core = ProbeCore<Machine, RetProbe, 64, 16, 256, 8, 16, 2>;

fn fib_program(n: i32) -> platform_mock::Program {
    let mut a = Asm::new();
    a.label("main").li(r(1), n).call("fib").out(r(0)).halt();
    a.label("fib").cmpi(r(1), 2).jlt("base");
    a.push(r(1)).subi(r(1), 1).call("fib").pop(r(1));
    a.push(r(0))
        .push(r(1))
        .subi(r(1), 2)
        .call("fib")
        .pop(r(1))
        .pop(r(2));
    a.add(r(0), r(2)).ret();
    a.label("base").mov(r(0), r(1)).ret();
    a.finish().unwrap()
}

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn calls(n: u64) -> u64 {
    if n < 2 {
        1
    } else {
        1 + calls(n - 1) + calls(n - 2)
    }
}

fn ret_opts(maxactive: u32) -> ConsumerOptions {
    ConsumerOptions::new().with_return(maxactive, 8)
}

fn setup(prog: &platform_mock::Program) -> (Machine, Box<Core>, FileId) {
    let m = Machine::new();
    let file = m.add_file(&prog.bytes);
    (m, Box::new(Core::new()), file)
}

fn spawn(m: &Machine, core: &Core, file: FileId) -> (probe_core::SpaceId, probe_core::TaskId) {
    let (space, task) = m.spawn(file, 0).unwrap();
    report_mappings(m, core, space, &[file]).unwrap();
    (space, task)
}

fn run(m: &Machine, core: &Core, runner: &mut Runner, task: probe_core::TaskId) -> Option<u64> {
    runner.run(m, core, task, 1_000_000)
}

#[test]
fn recursion_counts_exactly_and_sees_every_return_value() {
    let prog = fib_program(10);
    let (m, core, file) = setup(&prog);
    let (_, task) = spawn(&m, &core, file);
    let p = RetProbe::default();
    let h = core
        .register(
            &m,
            ProbeKey::new(file, prog.offset("fib")),
            p.clone(),
            ret_opts(64),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    let mut runner = Runner::new();
    assert_eq!(run(&m, &core, &mut runner, task), Some(55));
    assert_eq!(m.output(task), [55], "output unchanged");
    assert_eq!(p.seen.entries.load(Ordering::SeqCst), calls(10));
    assert_eq!(p.seen.returns.load(Ordering::SeqCst), calls(10));
    for &(n, v) in p.seen.pairs.lock().unwrap().iter() {
        assert_eq!(v, fib(n), "fib({n}) returned {v}");
    }
    assert_eq!(core.nmissed(h).unwrap(), 0);
    assert_eq!(core.instances_in_use(h).unwrap(), 0);
    core.unregister(&m, h).unwrap();
}

#[test]
fn maxactive_counts_misses_and_entry_handlers_may_decline() {
    let prog = fib_program(8);
    let (m, core, file) = setup(&prog);
    let (_, task) = spawn(&m, &core, file);
    let key = ProbeKey::new(file, prog.offset("fib"));
    let one = RetProbe::default();
    let h1 = core
        .register(&m, key, one.clone(), ret_opts(1))
        .map_err(|(e, _)| e)
        .unwrap();
    let odd = RetProbe {
        decline_odd: true,
        ..RetProbe::default()
    };
    let h2 = core
        .register(&m, key, odd.clone(), ret_opts(64))
        .map_err(|(e, _)| e)
        .unwrap();
    let mut runner = Runner::new();
    assert_eq!(run(&m, &core, &mut runner, task), Some(21));
    // maxactive 1: only the outermost call is tracked; every nested call missed.
    assert_eq!(one.seen.returns.load(Ordering::SeqCst), 1);
    assert_eq!(core.nmissed(h1).unwrap(), calls(8) - 1);
    assert_eq!(
        core.nmissed_nesting(h1).unwrap(),
        0,
        "missed by maxactive, not nesting"
    );
    // Declined calls (odd n) get no return handler and are not misses.
    let even = odd.seen.pairs.lock().unwrap().len() as u64;
    assert!(odd
        .seen
        .pairs
        .lock()
        .unwrap()
        .iter()
        .all(|&(n, _)| n % 2 == 0));
    assert_eq!(odd.seen.entries.load(Ordering::SeqCst), calls(8));
    assert!(even > 0 && even < calls(8));
    assert_eq!(core.nmissed(h2).unwrap(), 0);
    core.unregister(&m, h1).unwrap();
    core.unregister(&m, h2).unwrap();
}

/// `deep(n)`: recursion `n` calls deep, returning `n`.
fn deep_program(n: i32) -> platform_mock::Program {
    let mut a = Asm::new();
    a.label("main").li(r(1), n).call("deep").out(r(0)).halt();
    a.label("deep").cmpi(r(1), 2).jlt("base");
    a.push(r(1)).subi(r(1), 1).call("deep").pop(r(1));
    a.addi(r(0), 1).ret();
    a.label("base").li(r(0), 1).ret();
    a.finish().unwrap()
}

#[test]
fn calls_nested_deeper_than_the_task_chain_are_missed_by_nesting() {
    // The runner's TaskState holds 32 calls: of 40 nested ones the innermost 8 are missed.
    let prog = deep_program(40);
    let (m, core, file) = setup(&prog);
    let (_, task) = spawn(&m, &core, file);
    let p = RetProbe::default();
    let key = ProbeKey::new(file, prog.offset("deep"));
    let h = core
        .register(&m, key, p.clone(), ret_opts(64))
        .map_err(|(e, _)| e)
        .unwrap();
    let mut runner = Runner::new();
    assert_eq!(run(&m, &core, &mut runner, task), Some(40));
    assert_eq!(p.seen.returns.load(Ordering::SeqCst), 32);
    assert_eq!(core.nmissed(h).unwrap(), 8);
    assert_eq!(core.nmissed_nesting(h).unwrap(), 8);
    assert_eq!(core.abandoned(h).unwrap(), 0);
    core.unregister(&m, h).unwrap();
}

#[test]
fn several_return_probes_on_one_function_and_tail_calls() {
    let mut a = Asm::new();
    a.label("main").li(r(1), 5).call("f").out(r(0)).halt();
    a.label("f").addi(r(1), 1).jmp("g"); // tail call
    a.label("g").mov(r(0), r(1)).ret();
    let prog = a.finish().unwrap();
    let (m, core, file) = setup(&prog);
    let (_, task) = spawn(&m, &core, file);
    let (f1, f2, g) = (
        RetProbe::default(),
        RetProbe::default(),
        RetProbe::default(),
    );
    let kf = ProbeKey::new(file, prog.offset("f"));
    let kg = ProbeKey::new(file, prog.offset("g"));
    let hs = [
        core.register(&m, kf, f1.clone(), ret_opts(4))
            .map_err(|(e, _)| e)
            .unwrap(),
        core.register(&m, kf, f2.clone(), ret_opts(4))
            .map_err(|(e, _)| e)
            .unwrap(),
        core.register(&m, kg, g.clone(), ret_opts(4))
            .map_err(|(e, _)| e)
            .unwrap(),
    ];
    let mut runner = Runner::new();
    assert_eq!(run(&m, &core, &mut runner, task), Some(6));
    let after_call = TEXT_BASE + prog.offset("main") + 8 + 4;
    for p in [&f1, &f2, &g] {
        let pairs = p.seen.pairs.lock().unwrap().clone();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].1, 6, "return value");
        assert_eq!(
            *p.seen.rets.lock().unwrap(),
            [after_call],
            "real return address"
        );
    }
    for h in hs {
        assert_eq!(core.instances_in_use(h).unwrap(), 0);
        core.unregister(&m, h).unwrap();
    }
}

#[test]
fn frames_abandoned_by_longjmp_are_dropped() {
    // catcher saves sp, calls mid -> thrower, which restores sp and jumps to `catch`
    // (a longjmp past two return-probed frames); catcher then returns normally.
    let build = |catch_addr: i32| {
        let mut a = Asm::new();
        a.label("main").li(r(5), 0).li(r(1), 3);
        a.label("loop").call("catcher").subi(r(1), 1).jnz("loop");
        a.out(r(5)).mov(r(0), r(5)).halt();
        a.label("catcher")
            .mov(r(10), SP)
            .li(r(11), catch_addr)
            .call("mid");
        a.label("catch").addi(r(5), 1).ret();
        a.label("mid").call("thrower").ret();
        a.label("thrower").mov(SP, r(10)).jr(r(11));
        a.finish().unwrap()
    };
    let first = build(0);
    let prog = build((TEXT_BASE + first.offset("catch")) as i32);
    let (m, core, file) = setup(&prog);
    let (_, task) = spawn(&m, &core, file);
    let probes: Vec<RetProbe> = (0..3).map(|_| RetProbe::default()).collect();
    let hs: Vec<_> = ["catcher", "mid", "thrower"]
        .iter()
        .zip(&probes)
        .map(|(f, p)| {
            core.register(
                &m,
                ProbeKey::new(file, prog.offset(f)),
                p.clone(),
                ret_opts(8),
            )
            .map_err(|(e, _)| e)
            .unwrap()
        })
        .collect();
    let mut runner = Runner::new();
    assert_eq!(run(&m, &core, &mut runner, task), Some(3));
    assert_eq!(m.output(task), [3]);
    assert_eq!(
        probes[0].seen.returns.load(Ordering::SeqCst),
        3,
        "catcher returns"
    );
    assert_eq!(
        probes[1].seen.returns.load(Ordering::SeqCst),
        0,
        "mid never returns"
    );
    assert_eq!(
        probes[2].seen.returns.load(Ordering::SeqCst),
        0,
        "thrower never returns"
    );
    // Tracked calls that never returned are counted as abandoned, the others not.
    let abandoned: Vec<u64> = hs.iter().map(|&h| core.abandoned(h).unwrap()).collect();
    assert_eq!(abandoned, [0, 3, 3]);
    for h in hs {
        assert_eq!(
            core.instances_in_use(h).unwrap(),
            0,
            "abandoned instances freed"
        );
        core.unregister(&m, h).unwrap();
    }
}

fn stop_inside_fib(m: &Machine, core: &Core, runner: &mut Runner, task: probe_core::TaskId) {
    // Run until the task has several tracked calls outstanding.
    for _ in 0..200 {
        runner.run(m, core, task, 1);
        if runner
            .tasks
            .get(&task)
            .is_some_and(|(_, ts)| ts.returns().len() >= 4)
        {
            return;
        }
    }
    panic!("never got 4 calls deep");
}

#[test]
fn fork_with_pending_returns_and_task_exit() {
    let prog = fib_program(9);
    let (m, core, file) = setup(&prog);
    let (space, task) = spawn(&m, &core, file);
    let p = RetProbe::default();
    let h = core
        .register(
            &m,
            ProbeKey::new(file, prog.offset("fib")),
            p.clone(),
            ret_opts(64),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    let mut runner = Runner::new();
    stop_inside_fib(&m, &core, &mut runner, task);
    let (cspace, child) = m.fork(task).unwrap();
    core.on_fork(&m, space, cspace).unwrap();
    let mut cts = TaskState::<32>::new();
    core.on_task_fork(&runner.tasks[&task].1, &mut cts);
    assert_eq!(cts.returns().len(), runner.tasks[&task].1.returns().len());
    runner.tasks.insert(child, (TrapState::new(), cts));
    assert_eq!(run(&m, &core, &mut runner, task), Some(34));
    assert_eq!(
        run(&m, &core, &mut runner, child),
        Some(34),
        "child returns correctly"
    );
    assert_eq!(m.output(child), [34]);
    for &(n, v) in p.seen.pairs.lock().unwrap().iter() {
        assert_eq!(v, fib(n));
    }
    assert_eq!(core.instances_in_use(h).unwrap(), 0);

    // A task that dies mid-recursion gives its instances back.
    let (_, t2) = spawn(&m, &core, file);
    stop_inside_fib(&m, &core, &mut runner, t2);
    assert!(core.instances_in_use(h).unwrap() >= 4);
    m.exit(t2, 9);
    core.on_task_exit(&mut runner.tasks.get_mut(&t2).unwrap().1);
    assert_eq!(core.instances_in_use(h).unwrap(), 0);
    core.unregister(&m, h).unwrap();
}

#[test]
fn unregister_with_outstanding_instances_and_detach() {
    let prog = fib_program(9);
    let (m, core, file) = setup(&prog);
    let (space, task) = spawn(&m, &core, file);
    let key = ProbeKey::new(file, prog.offset("fib"));
    let p = RetProbe::default();
    let h = core
        .register(&m, key, p.clone(), ret_opts(64))
        .map_err(|(e, _)| e)
        .unwrap();
    let mut runner = Runner::new();
    stop_inside_fib(&m, &core, &mut runner, task);
    core.unregister(&m, h).unwrap();
    let before = p.seen.returns.load(Ordering::SeqCst);
    // The pending returns still go through the trampoline to the right places, silently.
    assert_eq!(run(&m, &core, &mut runner, task), Some(34));
    assert_eq!(m.output(task), [34]);
    assert_eq!(
        p.seen.returns.load(Ordering::SeqCst),
        before,
        "no handler after unregister"
    );

    // Detach mid-recursion: text restored by unregister, stack restored by restore_returns;
    // the program then runs to the end with no core at all.
    let (space2, t2) = spawn(&m, &core, file);
    let h = core
        .register(&m, key, p.clone(), ret_opts(64))
        .map_err(|(e, _)| e)
        .unwrap();
    stop_inside_fib(&m, &core, &mut runner, t2);
    core.unregister(&m, h).unwrap();
    core.restore_returns(&m, space2, &mut runner.tasks.get_mut(&t2).unwrap().1)
        .unwrap();
    assert!(runner.tasks[&t2].1.returns().is_empty());
    assert_eq!(
        m.run_to_exit(t2, 1_000_000),
        Some(34),
        "no hijacked return address left"
    );
    assert_eq!(m.output(t2), [34]);
    let _ = space;
}

#[test]
fn a_stale_instance_never_touches_the_next_consumer_in_its_slot() {
    // Two consumer slots, so that B reuses A's slot with a new generation.
    type Small = ProbeCore<Machine, RetProbe, 64, 2, 256, 8, 16, 2>;
    let prog = fib_program(9);
    let m = Machine::new();
    let file = m.add_file(&prog.bytes);
    let core: Box<Small> = Box::new(Small::new());
    let key = ProbeKey::new(file, prog.offset("fib"));
    let (s1, t1) = m.spawn(file, 0).unwrap();
    let (s2, t2) = m.spawn(file, 0).unwrap();
    for s in [s1, s2] {
        report_mappings(&m, &*core, s, &[file]).unwrap();
    }
    let hx = core
        .register(&m, key, RetProbe::default(), ConsumerOptions::new())
        .map_err(|(e, _)| e)
        .unwrap();
    let ha = core
        .register(&m, key, RetProbe::default(), ret_opts(8))
        .map_err(|(e, _)| e)
        .unwrap();
    // Drive t1 into fib by hand: one entry trap.
    let mut ts1 = TaskState::<32>::new();
    let mut ts2 = TaskState::<32>::new();
    let enter = |t, ts: &mut TaskState, space| {
        let mut trap = TrapState::<ToyArch>::new();
        for _ in 0..10 {
            if let platform_mock::StepEvent::Breakpoint { .. } = m.step(t) {
                let mut regs = m.regs(t).unwrap();
                let hit = core.on_breakpoint(
                    &m,
                    probe_core::CpuId(0),
                    space,
                    t,
                    &mut trap,
                    ts,
                    &mut regs,
                );
                m.set_regs(t, regs);
                assert!(matches!(hit, probe_core::Hit::Boosted { .. }), "{hit:?}");
                return;
            }
        }
        panic!("no entry trap");
    };
    enter(t1, &mut ts1, s1);
    assert_eq!(ts1.returns().len(), 1, "A tracked t1's call");
    core.unregister(&m, ha).unwrap();
    let hb = core
        .register(&m, key, RetProbe::default(), ret_opts(8))
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(hb.id() as u32, ha.id() as u32, "B reuses A's slot");
    enter(t2, &mut ts2, s2);
    assert_eq!(core.instances_in_use(hb).unwrap(), 1);
    // t1 dies holding A's (stale) instance: B's count must not move.
    core.on_task_exit(&mut ts1);
    assert_eq!(core.instances_in_use(hb).unwrap(), 1);
    core.on_task_exit(&mut ts2);
    assert_eq!(core.instances_in_use(hb).unwrap(), 0);
    core.unregister(&m, hb).unwrap();
    core.unregister(&m, hx).unwrap();
}
