//! loom: return-probe instances under concurrency.
//!
//! - `loom_instances_from_concurrent_tasks`: two tasks call a function with a return consumer
//!   of `maxactive` 1 at once: never more than one instance is out, every call is tracked or
//!   counted in `nmissed`, every tracked call returns through the trampoline to the right
//!   address, and no instance is left in use.
//! - `loom_task_exit_races_unregister`: a task holding instances of two consumers exits while
//!   one of them is unregistered: nothing leaks into the slot's next registration.
//! - `loom_unregister_with_outstanding_instance`: a consumer is unregistered while a task is
//!   inside the function: its return handler never runs after `unregister` returned, the task
//!   still returns to the real address, and the instance is not leaked.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use platform_mock::ToyArch;
use probe_core::{ConsumerOptions, ProbeKey, TaskState};

fn ret_opts(max: u32) -> ConsumerOptions {
    ConsumerOptions::new().with_return(max, 8)
}

#[test]
fn loom_instances_from_concurrent_tasks() {
    model("loom_instances_from_concurrent_tasks", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let c = Counter::new();
        let h = core
            .register(&p, ProbeKey::new(FILE, NOP_AT), c.clone(), ret_opts(1))
            .unwrap();
        let (p2, core2) = (p.clone(), core.clone());
        let t = loom::thread::spawn(move || {
            let mut ts = TaskState::<32>::new();
            call_once(&core2, &p2, 1, 2, STACK2, &mut ts);
            assert!(ts.returns().is_empty());
        });
        let mut ts = TaskState::<32>::new();
        call_once(&core, &p, 0, 1, STACK1, &mut ts);
        t.join().unwrap();
        let tracked = c.returns.load(Ordering::SeqCst) as u64;
        assert_eq!(
            c.hits.load(Ordering::SeqCst) as u64,
            tracked,
            "every tracked call returned"
        );
        assert_eq!(tracked + core.nmissed(h).unwrap(), 2);
        assert_eq!(core.instances_in_use(h).unwrap(), 0);
        core.unregister(&p, h).unwrap();
    });
}

#[test]
fn loom_task_exit_races_unregister() {
    model("loom_task_exit_races_unregister", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let (a, b) = (Counter::new(), Counter::new());
        let key = ProbeKey::new(FILE, NOP_AT);
        let ha = core.register(&p, key, a.clone(), ret_opts(4)).unwrap();
        let hb = core.register(&p, key, b.clone(), ret_opts(4)).unwrap();
        // Fill the other consumer slots, so that the next registration must reuse B's.
        let fillers: Vec<_> = (0..2)
            .map(|_| {
                core.register(
                    &p,
                    ProbeKey::new(FILE, SUB_AT),
                    Counter::new(),
                    ConsumerOptions::new(),
                )
                .unwrap()
            })
            .collect();
        // The task enters the function (both consumers track it), then dies inside.
        let mut ts = TaskState::<32>::new();
        let mut trap = probe_core::TrapState::<ToyArch>::new();
        p.push_return(STACK1, 0x1234);
        let mut regs = platform_mock::ToyRegs {
            pc: TEXT + NOP_AT,
            ..Default::default()
        };
        regs.r[15] = STACK1;
        let _ = core.on_breakpoint(
            &p,
            probe_core::CpuId(0),
            SPACE,
            probe_core::TaskId(1),
            &mut trap,
            &mut ts,
            &mut regs,
        );
        assert_eq!(ts.returns().len(), 2);

        // Meanwhile B is unregistered and its slot reused by C at once (a new generation),
        // and a tick advances the epoch: the dying task's give-back of B's instance must not
        // touch C's count, whenever it lands.
        let (p2, core2) = (p.clone(), core.clone());
        let t = loom::thread::spawn(move || {
            let back = core2.unregister(&p2, hb).unwrap();
            back.unregistered.store(true, Ordering::SeqCst);
            let hc = core2
                .register(&p2, key, Counter::new(), ret_opts(4))
                .unwrap();
            assert_eq!(hc.id() as u32, hb.id() as u32, "C reuses B's slot");
            hc
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());
        core.on_task_exit(&mut ts);
        let hc = t.join().unwrap();
        ticker.join().unwrap();
        assert_eq!(core.instances_in_use(ha).unwrap(), 0);
        assert_eq!(
            core.instances_in_use(hc).unwrap(),
            0,
            "C starts with nothing in use"
        );
        core.unregister(&p, ha).unwrap();
        core.unregister(&p, hc).unwrap();
        for h in fillers {
            core.unregister(&p, h).unwrap();
        }
        assert!(p.text_pristine());
    });
}

#[test]
fn loom_unregister_with_outstanding_instance() {
    model("loom_unregister_with_outstanding_instance", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let c = Counter::new();
        let h = core
            .register(&p, ProbeKey::new(FILE, NOP_AT), c.clone(), ret_opts(4))
            .unwrap();
        let (p2, core2) = (p.clone(), core.clone());
        let t = loom::thread::spawn(move || {
            let mut ts = TaskState::<32>::new();
            // Returns to the real address whatever happened to the consumer meanwhile.
            assert_eq!(call_once(&core2, &p2, 1, 2, STACK2, &mut ts), 0x1234);
            assert!(ts.returns().is_empty());
        });
        let back = core.unregister(&p, h).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        t.join().unwrap();
        assert!(c.returns.load(Ordering::SeqCst) <= c.hits.load(Ordering::SeqCst));
        // No leak: the slot's next registration starts empty.
        let h2 = core
            .register(&p, ProbeKey::new(FILE, NOP_AT), Counter::new(), ret_opts(4))
            .unwrap();
        assert_eq!(core.instances_in_use(h2).unwrap(), 0);
        core.unregister(&p, h2).unwrap();
        assert!(p.text_pristine());
    });
}
