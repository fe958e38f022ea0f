//! loom: a hit racing the unregistration of its probe's only consumer.
//!
//! After `unregister` returns, the handler never runs (the consumer asserts it), the original
//! bytes are back, and the racing hit either ran the handler and emulated the instruction or
//! found the probe gone and restarts it.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use platform_mock::ToyArch;
use probe_core::{ConsumerOptions, CpuId, Hit, ProbeKey, TaskState};

#[test]
fn loom_hit_races_unregister() {
    model("loom_hit_races_unregister", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let c = Counter::new();
        let h = core
            .register(
                &p,
                ProbeKey::new(FILE, NOP_AT),
                c.clone(),
                ConsumerOptions::new(),
            )
            .unwrap();
        assert!(!p.text_pristine());

        let (p2, core2) = (p.clone(), core.clone());
        let hitter = loom::thread::spawn(move || {
            let mut ts = TaskState::<32>::new();
            let mut trap = probe_core::TrapState::<ToyArch>::new();
            let mut regs = regs_at(TEXT + NOP_AT);
            let hit = core2.on_breakpoint(
                &p2,
                CpuId(0),
                SPACE,
                probe_core::TaskId(1),
                &mut trap,
                &mut ts,
                &mut regs,
            );
            (hit, regs.pc)
        });

        let back = core.unregister(&p, h).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        assert!(p.text_pristine(), "original bytes restored");

        let (hit, pc) = hitter.join().unwrap();
        match hit {
            Hit::Emulated => assert_eq!(pc, TEXT + NOP_AT + 4),
            Hit::Restart => assert_eq!(pc, TEXT + NOP_AT),
            other => panic!("unexpected {other:?}"),
        }
        assert!(c.hits.load(Ordering::SeqCst) <= 1);
        assert_eq!(core.site_count(), 0);
        assert_eq!(core.probe_count(), 0);
    });
}
