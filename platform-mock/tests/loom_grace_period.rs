//! loom: a grace period racing a reader.
//!
//! A reader is inside the hit path of probe X while a writer unregisters X (freeing its probe
//! entry) and registers probe Y in a table so small that Y can only reuse X's entries. The
//! entries must not be reused while the reader can still see them: loom's cell tracking fails
//! the model on any write racing the reader, and the reader must see X's data whole.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use platform_mock::ToyArch;
use probe_core::{Capacity, ConsumerOptions, CpuId, Error, Hit, ProbeKey, TaskId, TaskState};

#[test]
fn loom_grace_period_races_reader() {
    loom::model(|| {
        let p = Arc::new(LoomPlatform::new());
        // Two probe buckets: the file entry and one probe.
        let core: Arc<Core<2, 2>> = Arc::new(Core::new());
        let x = Counter::new();
        let hx = core
            .register(
                &p,
                ProbeKey::new(FILE, NOP_AT),
                x.clone(),
                ConsumerOptions::new(),
            )
            .unwrap();

        let (p2, core2) = (p.clone(), core.clone());
        let reader = loom::thread::spawn(move || {
            let mut ts = TaskState::<32>::new();
            let mut trap = probe_core::TrapState::<ToyArch>::new();
            let mut regs = regs_at(TEXT + NOP_AT);
            let hit = core2.on_breakpoint(
                &p2,
                CpuId(1),
                SPACE,
                TaskId(2),
                &mut trap,
                &mut ts,
                &mut regs,
            );
            (hit, regs.pc)
        });

        let back = core.unregister(&p, hx).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        let y = Counter::new();
        let hy = core.register(&p, ProbeKey::new(FILE, SUB_AT), y, ConsumerOptions::new());

        let (hit, pc) = reader.join().unwrap();
        match hit {
            // X's plan (a nop) was read whole: emulated past it.
            Hit::Emulated => assert_eq!(pc, TEXT + NOP_AT + 4),
            Hit::Restart => assert_eq!(pc, TEXT + NOP_AT),
            other => panic!("unexpected {other:?}"),
        }
        match hy {
            Ok(h) => {
                core.unregister(&p, h).unwrap();
            }
            // The reader still pinned the old entries: the writer may not reuse them.
            Err((
                Error::CapacityExhausted {
                    what: Capacity::Probes,
                },
                _,
            )) => {}
            Err((e, _)) => panic!("unexpected {e:?}"),
        }
        assert!(p.text_pristine());
    });
}
