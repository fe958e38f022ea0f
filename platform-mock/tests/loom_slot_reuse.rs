//! loom: reuse of an out-of-line slot racing a task inside it.
//!
//! A task is sent to probe X's boosted slot and executes it (here: reads the slot's bytes)
//! before it reports leaving. Meanwhile X is unregistered and Y, another boosted probe, is
//! registered with a single slot per space. Y may only get the slot once the task is out: the
//! task must always execute X's code, and Y's registration otherwise fails with a typed error.
//! A third context ticks the epoch meanwhile.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use platform_mock::ToyArch;
use probe_core::{
    Addr, Arch, Capacity, ConsumerOptions, CpuId, Error, Hit, ProbeKey, TaskId, TaskState,
};

fn slot_code(at: u64) -> Vec<u8> {
    let file = program();
    let plan = ToyArch::analyze(&file[at as usize..]).unwrap();
    let mut out = [0u8; ToyArch::SLOT_SIZE];
    let n = ToyArch::encode_slot(&plan, Addr(TEXT + at), Addr(XOL_BASE), &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn loom_slot_reuse_races_task_in_slot() {
    model("loom_slot_reuse_races_task_in_slot", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 1>> = Arc::new(Core::new());
        let x = Counter::new();
        let hx = core
            .register(
                &p,
                ProbeKey::new(FILE, ADD_AT),
                x.clone(),
                ConsumerOptions::new(),
            )
            .unwrap();
        let x_code = slot_code(ADD_AT);

        let (p2, core2) = (p.clone(), core.clone());
        let task = loom::thread::spawn(move || {
            let mut ts = TaskState::<32>::new();
            let mut trap = probe_core::TrapState::<ToyArch>::new();
            let mut regs = regs_at(TEXT + ADD_AT);
            let hit = core2.on_breakpoint(
                &p2,
                CpuId(1),
                SPACE,
                TaskId(2),
                &mut trap,
                &mut ts,
                &mut regs,
            );
            if let Hit::Boosted { slot } = hit {
                assert_eq!(slot.0, XOL_BASE);
                assert_eq!(regs.pc, XOL_BASE);
                // The task may sit in the slot for a while (preempted) before it executes it.
                loom::thread::yield_now();
                // "Execute" the slot: it must still hold X's relocated instruction.
                let code = p2.peek(XOL_BASE, x_code.len());
                assert_eq!(code, x_code, "slot reused under a running task");
                // Back in the original text after the jump: counted out.
                core2.seen_at(&mut trap, TEXT + SUB_AT);
            } else {
                assert!(matches!(hit, Hit::Restart), "{hit:?}");
            }
        });

        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());
        let back = core.unregister(&p, hx).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);
        let hy = core.register(
            &p,
            ProbeKey::new(FILE, SUB_AT),
            Counter::new(),
            ConsumerOptions::new(),
        );
        task.join().unwrap();
        ticker.join().unwrap();
        match hy {
            Ok(h) => {
                assert_eq!(p.peek(XOL_BASE, 4), slot_code(SUB_AT)[..4].to_vec());
                core.unregister(&p, h).unwrap();
            }
            Err((
                Error::CapacityExhausted {
                    what: Capacity::XolSlots,
                },
                _,
            )) => {}
            Err((e, _)) => panic!("unexpected {e:?}"),
        }
        assert!(p.text_pristine());
    });
}
