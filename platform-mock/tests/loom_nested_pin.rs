//! loom: nesting on one CPU. A handler on CPU 0 takes a second trap on the same CPU (as an
//! interrupt or NMI handler hitting another probe would) while a writer unregisters the outer
//! consumer and a third context ticks the epoch.
//!
//! - The inner section's end must not end the outer one: the writer's grace period waits for
//!   the outer handler (loom's cell tracking fails the model if the consumer is dropped while
//!   its handler runs; the handler also asserts it never runs after `unregister` returned).
//! - The outer context is mid single-step when the inner trap comes on the same trap state
//!   (a reentry): the inner hit runs no handler and counts in the probe's `nmissed`, and the
//!   outer single step is still ours afterwards.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom_support::*;
use platform_mock::{ToyArch, ToyRegs};
use probe_core::{
    Consumer, ConsumerOptions, CpuId, HandlerAction, Hit, HitContext, ProbeCore, ProbeKey, Step,
    TaskId, TaskState, TrapState,
};

type NCore = ProbeCore<LoomPlatform, Nester, 8, 4, 4, 2, 2, 2>;

/// A consumer whose handler, for the outer probe, takes a nested trap on the same CPU.
#[derive(Debug, Clone)]
struct Nester {
    core: Arc<std::sync::Mutex<Option<Arc<NCore>>>>,
    nest: bool,
    hits: Arc<AtomicUsize>,
    unregistered: Arc<AtomicBool>,
}

impl Consumer<LoomPlatform> for Nester {
    fn handler(&self, ctx: &mut HitContext<'_, LoomPlatform>) -> HandlerAction {
        assert!(
            !self.unregistered.load(Ordering::SeqCst),
            "handler ran after unregister returned"
        );
        if self.nest {
            // An interrupt on this CPU: its own trap and task state, the same CPU.
            let core = self.core.lock().unwrap().clone().unwrap();
            let mut trap = TrapState::<ToyArch>::new();
            let mut ts = TaskState::<4>::new();
            let mut regs = regs_at(TEXT + SUB_AT);
            let hit = core.on_breakpoint(
                ctx.platform,
                ctx.cpu,
                SPACE,
                TaskId(9),
                &mut trap,
                &mut ts,
                &mut regs,
            );
            assert!(matches!(hit, Hit::Boosted { .. }), "{hit:?}");
            core.seen_at(&mut trap, TEXT);
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        HandlerAction::Keep
    }
}

fn nester(core: &Arc<std::sync::Mutex<Option<Arc<NCore>>>>, nest: bool) -> Nester {
    Nester {
        core: core.clone(),
        nest,
        hits: Arc::new(AtomicUsize::new(0)),
        unregistered: Arc::new(AtomicBool::new(false)),
    }
}

#[test]
fn loom_nested_pin_on_one_cpu() {
    model("loom_nested_pin_on_one_cpu", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let cell = Arc::new(std::sync::Mutex::new(None));
        let core: Arc<NCore> = Arc::new(ProbeCore::new());
        *cell.lock().unwrap() = Some(core.clone());
        let outer = nester(&cell, true);
        let h = core
            .register(
                &p,
                ProbeKey::new(FILE, NOP_AT),
                outer.clone(),
                ConsumerOptions::new(),
            )
            .unwrap();
        core.register(
            &p,
            ProbeKey::new(FILE, SUB_AT),
            nester(&cell, false),
            ConsumerOptions::new(),
        )
        .unwrap();

        let (p2, core2) = (p.clone(), core.clone());
        let cpu0 = loom::thread::spawn(move || hit_at(&*core2, &p2, 0, NOP_AT).0);
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());

        let back = core.unregister(&p, h).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        let hit = cpu0.join().unwrap();
        ticker.join().unwrap();
        assert!(matches!(hit, Hit::Emulated | Hit::Restart), "{hit:?}");
        // Break the cycle core -> consumer -> core.
        *cell.lock().unwrap() = None;
    });
}

/// Reentry on one trap state: no loom threads needed for the property, but the writer races
/// the outer step to show the step record survives a concurrent unregistration too.
#[test]
fn loom_reentry_keeps_the_outer_step() {
    model("loom_reentry_keeps_the_outer_step", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let outer = Counter::new();
        let inner = Counter::new();
        let ho = core
            .register(
                &p,
                ProbeKey::new(FILE, RET_AT),
                outer.clone(),
                ConsumerOptions::new(),
            )
            .unwrap();
        core.register(
            &p,
            ProbeKey::new(FILE, SUB_AT),
            inner.clone(),
            ConsumerOptions::new(),
        )
        .unwrap();

        let (p2, core2) = (p.clone(), core.clone());
        let cpu0 = loom::thread::spawn(move || {
            let mut trap = TrapState::<ToyArch>::new();
            let mut ts = TaskState::<4>::new();
            let mut regs = regs_at(TEXT + RET_AT);
            let hit = core2.on_breakpoint(
                &p2,
                CpuId(0),
                SPACE,
                TaskId(1),
                &mut trap,
                &mut ts,
                &mut regs,
            );
            let Hit::SingleStep { slot } = hit else {
                assert_eq!(hit, Hit::Restart);
                return;
            };
            // Mid-step, the same context traps again (a handler or an unannounced signal
            // handler hits another probe): a reentry.
            let mut inner_regs = regs_at(TEXT + SUB_AT);
            let ih = core2.on_breakpoint(
                &p2,
                CpuId(0),
                SPACE,
                TaskId(1),
                &mut trap,
                &mut ts,
                &mut inner_regs,
            );
            assert!(matches!(ih, Hit::Boosted { .. }), "{ih:?}");
            assert!(
                trap.stepping() || trap.any_stepping(),
                "the outer step survived"
            );
            // The outer step completes: still ours.
            regs.pc = slot.0 + 4;
            let st = core2.on_single_step(&p2, SPACE, &mut trap, &mut regs);
            assert_eq!(st, Step::Done);
            assert_eq!(regs.pc, TEXT + RET_AT + 4);
            assert!(trap.is_idle());
        });
        let back = core.unregister(&p, ho).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        cpu0.join().unwrap();
        assert_eq!(
            inner.hits.load(Ordering::SeqCst),
            0,
            "a reentered hit runs no handler"
        );
        let _ = ToyRegs::default();
    });
}
