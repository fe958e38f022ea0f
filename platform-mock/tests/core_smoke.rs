//! Smoke test: the real `ProbeCore` over the simulated `Machine`, one probe per plan kind
//! (emulate, boost, single-step) in a recursive program. The traced program's output and exit
//! code are identical with and without probes; the file is never modified; a forked child
//! inherits the breakpoints.
#![cfg(not(loom))]

mod drive;

use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use platform_mock::asm::{Asm, Program};
use platform_mock::isa::*;
use platform_mock::{Machine, TaskStatus, ToyArch};
use probe_core::{
    Arch, Consumer, ConsumerOptions, HandlerAction, HitContext, PlanKind, ProbeCore, ProbeKey,
};

use drive::drive;

#[derive(Clone, Debug, Default)]
struct Count(Arc<AtomicUsize>);

impl Consumer<Machine> for Count {
    fn handler(&self, _ctx: &mut HitContext<'_, Machine>) -> HandlerAction {
        self.0.fetch_add(1, Ordering::SeqCst);
        HandlerAction::Keep
    }
}

type Core = ProbeCore<Machine, Count, 16, 16, 32, 8, 8, 2>;

fn program() -> Program {
    let mut a = Asm::new();
    a.label("main").li(R1, 10).call("fib").out(R0);
    a.label("ldpc").ldpc(R3, "k").add(R0, R3).halt(); // ldpc: single-stepped via r14
    a.label("fib").push(R1).pop(R1); // push: emulated
    a.label("cmp").cmpi(R1, 2).jlt("base"); // cmpi: boosted
    a.push(R1).subi(R1, 1).call("fib").pop(R1);
    a.push(R0).subi(R1, 2).call("fib").pop(R2);
    a.add(R0, R2);
    a.label("ret").ret(); // ret: single-stepped
    a.label("base").mov(R0, R1).ret();
    a.label("k").word(1000);
    a.finish().unwrap()
}

#[test]
fn probes_of_every_kind_leave_the_program_unchanged() {
    let p = program();
    let m = Machine::new();
    let file = m.add_file(&p.bytes);

    // Unprobed reference run.
    let (_, t0) = m.spawn(file, 0).unwrap();
    assert_eq!(m.run_to_exit(t0, 100_000), Some(55 + 1000));
    let want = m.output(t0);

    let (space, task) = m.spawn(file, 0).unwrap();
    let core = Core::new();
    let mut counts = Vec::new();
    for (label, kind) in [
        ("fib", PlanKind::Emulate),
        ("cmp", PlanKind::Boost),
        ("ret", PlanKind::SingleStep),
        ("ldpc", PlanKind::SingleStep),
    ] {
        let off = p.offset(label);
        let plan = ToyArch::analyze(&p.bytes[off as usize..]).unwrap();
        assert_eq!(ToyArch::plan_kind(&plan), kind);
        let c = Count::default();
        counts.push(c.0.clone());
        core.register(&m, ProbeKey::new(file, off), c, ConsumerOptions::new())
            .map_err(|(e, _)| e)
            .unwrap();
    }
    assert_eq!(m.stats(space).unwrap().text_patches, 4);
    assert_eq!(m.file_bytes(file).unwrap(), p.bytes);

    drive(&m, &m, &core, 0);
    assert_eq!(m.status(task), Some(TaskStatus::Exited(55 + 1000)));
    assert_eq!(m.output(task), want);
    // fib(10) makes 177 calls, each returning once through one of two `ret`s (89 base cases).
    let hits: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(hits, [177, 177, 177 - 89, 1]);
    assert_eq!(m.file_bytes(file).unwrap(), p.bytes);
}

#[test]
fn a_forked_child_keeps_hitting() {
    let p = program();
    let m = Machine::new();
    let file = m.add_file(&p.bytes);
    let (parent, task) = m.spawn(file, 0).unwrap();
    let core = Core::new();
    let c = Count::default();
    core.register(
        &m,
        ProbeKey::new(file, p.offset("cmp")),
        c.clone(),
        ConsumerOptions::new(),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let (child, ct) = m.fork(task).unwrap();
    core.on_fork(&m, parent, child).unwrap();
    drive(&m, &m, &core, 0);
    assert_eq!(m.status(task), Some(TaskStatus::Exited(1055)));
    assert_eq!(m.status(ct), Some(TaskStatus::Exited(1055)));
    assert_eq!(c.0.load(Ordering::SeqCst), 2 * 177);
}
