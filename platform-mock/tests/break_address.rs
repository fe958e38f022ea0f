//! The break address convention is the platform's: a platform whose traps report the address
//! after the breakpoint (as x86 CPUs do) and says so through `Platform::breakpoint_address`
//! gets every hit right, though its architecture (the toy's) reports the breakpoint's own
//! address.
#![cfg(not(loom))]

mod drive;
mod wrapped;

use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use drive::drive;
use platform_mock::asm::{Asm, Program};
use platform_mock::isa::*;
use platform_mock::{Machine, TaskStatus, ToyArch};
use probe_core::{
    Addr, Arch, Consumer, ConsumerOptions, HandlerAction, HitContext, Platform, ProbeCore,
    ProbeKey, SpaceId,
};
use wrapped::wrapped_machine;

/// The mock machine, with a trap convention of "after the breakpoint": the driver below
/// moves the trapped task's `pc` past the `brk` before it calls the core, as an x86 CPU does
/// with `int3`, and this platform undoes that.
#[derive(Debug, Default)]
struct After {
    m: Machine,
}

const BRK_LEN: u64 = <ToyArch as Arch>::BREAKPOINT.len() as u64;

wrapped_machine!(After {
    type Space<'a> = <Machine as Platform>::Space<'a>;
    fn space(&self, id: SpaceId) -> Option<Self::Space<'_>> {
        self.m.space(id)
    }
    fn breakpoint_address(&self, trap_ip: u64) -> Addr {
        Addr(trap_ip.wrapping_sub(BRK_LEN))
    }
});

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

    // This platform's CPU reports the address after the breakpoint.
    drive(&plat.m, &plat, &core, BRK_LEN);
    assert_eq!(plat.m.status(task), Some(TaskStatus::Exited(55)));
    assert_eq!(plat.m.output(task), [55]);
    // fib(10): 177 calls, 89 of them base cases returning through the other `ret`.
    let hits: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(hits, [177, 177, 177 - 89]);
}
