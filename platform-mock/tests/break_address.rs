//! The break address convention is the platform's: a platform whose traps report the address
//! after the breakpoint (as x86 CPUs do) and says so through `Platform::breakpoint_address`
//! gets every hit right, though its architecture (the toy's) reports the breakpoint's own
//! address.
#![cfg(not(loom))]

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::Arc;

use platform_mock::asm::{Asm, Program};
use platform_mock::isa::*;
use platform_mock::{Machine, Resume, Scheduler, StepEvent, TaskStatus, ToyArch};
use probe_core::{
    Addr, Arch, Consumer, ConsumerOptions, CpuId, FileId, HandlerAction, Hit, HitContext, Mapping,
    MemError, Platform, ProbeCore, ProbeKey, SpaceId, Step, TaskId, TaskState, TrapState,
};

/// The mock machine, with a trap convention of "after the breakpoint": the driver below
/// moves the trapped task's `pc` past the `brk` before it calls the core, as an x86 CPU does
/// with `int3`, and this platform undoes that.
#[derive(Debug, Default)]
struct After {
    m: Machine,
}

const BRK_LEN: u64 = <ToyArch as Arch>::BREAKPOINT.len() as u64;

impl Platform for After {
    type Arch = ToyArch;
    type Space<'a> = <Machine as Platform>::Space<'a>;
    fn space(&self, id: SpaceId) -> Option<Self::Space<'_>> {
        self.m.space(id)
    }
    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>) {
        self.m.for_each_mapping(file, f)
    }
    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>) {
        self.m.for_each_task(space, f)
    }
    fn file_size(&self, file: FileId) -> Option<u64> {
        self.m.file_size(file)
    }
    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        self.m.read_file(file, offset, buf)
    }
    fn xol_area(&self, space: SpaceId, near: Addr, count: usize) -> Option<Addr> {
        self.m.xol_area(space, near, count)
    }
    fn breakpoint_address(&self, trap_ip: u64) -> Addr {
        Addr(trap_ip.wrapping_sub(BRK_LEN))
    }
}

#[derive(Clone, Debug, Default)]
struct Count(Arc<AtomicUsize>);

impl Consumer<After> for Count {
    fn handler(&self, ctx: &mut HitContext<'_, After>) -> HandlerAction {
        // The handler sees the probed instruction's address, whatever the convention.
        assert_eq!(
            ctx.regs.pc, ctx.addr.0,
            "handler registers not at the probe"
        );
        self.0.fetch_add(1, Ordering::SeqCst);
        HandlerAction::Keep
    }
}

type Core = ProbeCore<After, Count, 16, 16, 32, 8, 8, 2>;

#[test]
fn hits_are_found_with_the_platforms_break_address_convention() {
    let mut a = Asm::new();
    a.label("main").li(R1, 10).call("fib").out(R0).halt();
    a.label("fib").push(R1).pop(R1); // push: emulated
    a.label("cmp").cmpi(R1, 2).jlt("base"); // cmpi: boosted
    a.push(R1).subi(R1, 1).call("fib").pop(R1);
    a.push(R0).subi(R1, 2).call("fib").pop(R2);
    a.add(R0, R2);
    a.label("ret").ret(); // ret: single-stepped
    a.label("base").mov(R0, R1).ret();
    let p: Program = a.finish().unwrap();

    let plat = After::default();
    let file = plat.m.add_file(&p.bytes);
    let (_, task) = plat.m.spawn(file, 0).unwrap();
    let core = Core::new();
    let mut counts = Vec::new();
    for label in ["fib", "cmp", "ret"] {
        let c = Count::default();
        counts.push(c.0.clone());
        core.register(
            &plat,
            ProbeKey::new(file, p.offset(label)),
            c,
            ConsumerOptions::new(),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }

    let mut states: HashMap<TaskId, (TrapState<ToyArch>, TaskState)> = HashMap::new();
    let out = plat
        .m
        .run_all(&mut Scheduler::seeded(1), 100_000, |m, task, ev, regs| {
            let space = m.task_space(task).unwrap();
            let (trap, ts) = states.entry(task).or_default();
            match ev {
                StepEvent::Breakpoint { addr } => {
                    // The CPU of this platform reports the address after the breakpoint.
                    regs.pc = addr.0 + BRK_LEN;
                    match core.on_breakpoint(&plat, CpuId(0), space, task, trap, ts, regs) {
                        Hit::Emulated | Hit::Boosted { .. } => {}
                        Hit::SingleStep { .. } => {
                            m.set_single_step(task, true);
                        }
                        other => panic!("hit at {addr:?}: {other:?}"),
                    }
                }
                StepEvent::SingleStepDone => {
                    assert_eq!(core.on_single_step(&plat, space, trap, regs), Step::Done);
                }
                StepEvent::Exited(_) => {
                    core.on_task_exit(ts);
                    core.clear_trap(trap);
                }
                other => panic!("unexpected {other:?}"),
            }
            core.seen_at(trap, regs.pc);
            Resume::Continue
        });
    assert_eq!(out.reason, platform_mock::StopReason::AllDone);
    assert_eq!(plat.m.status(task), Some(TaskStatus::Exited(55)));
    assert_eq!(plat.m.output(task), [55]);
    // fib(10): 177 calls, 89 of them base cases returning through the other `ret`.
    let hits: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(hits, [177, 177, 177 - 89]);
}
