//! loom: a handler's `RemoveFromSpace` request, then `maintain` on the writer side, racing a
//! hit on another CPU, with a tick.
//!
//! Whichever CPU's handler runs first asks for the probe to leave the space; the writer's `maintain`
//! re-evaluates the space's filters (removing the breakpoint without waiting for anyone) and
//! then registers Y, which can only reuse X's site bucket. The second CPU hits X meanwhile: it
//! must only ever run X's consumer for X's address, and find X or find it gone.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use probe_core::{Capacity, ConsumerOptions, Error, Hit, ProbeKey};

const NAME: &str = "loom_remove_from_space_then_maintain";

#[test]
fn loom_remove_from_space_then_maintain() {
    model(NAME, &["removed", "not yet"], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<AtCore<8, 1, 1>> = Arc::new(AtCore::new());
        let mut x = AtAddr::new(NOP_AT);
        x.remove = true;
        core.register(
            &p,
            ProbeKey::new(FILE, NOP_AT),
            x.clone(),
            ConsumerOptions::new(),
        )
        .unwrap();

        let (p2, core2) = (p.clone(), core.clone());
        let asker = loom::thread::spawn(move || {
            let (hit, regs, _) = hit_at(&*core2, &p2, 0, NOP_AT);
            match hit {
                Hit::Emulated => assert_eq!(regs.pc, TEXT + NOP_AT + 4),
                // The other CPU's hit asked first and maintain already removed it.
                Hit::Restart => assert_eq!(regs.pc, TEXT + NOP_AT),
                other => panic!("unexpected {other:?}"),
            }
        });
        let (p3, core3) = (p.clone(), core.clone());
        let other = loom::thread::spawn(move || {
            let (hit, regs, _) = hit_at(&*core3, &p3, 1, NOP_AT);
            match hit {
                Hit::Emulated => assert_eq!(regs.pc, TEXT + NOP_AT + 4),
                // Removed from the space already: the original instruction runs again.
                Hit::Restart => assert_eq!(regs.pc, TEXT + NOP_AT),
                other => panic!("unexpected {other:?}"),
            }
            core3.advance_epoch();
        });

        let _ = core.maintain(&p);
        let removed = !core.is_installed(SPACE, probe_core::Addr(TEXT + NOP_AT));
        reached(NAME, if removed { "removed" } else { "not yet" });
        // Y (emulated too, at another address) can only take X's site bucket.
        let y = AtAddr::new(ADD_AT);
        match core.register(&p, ProbeKey::new(FILE, ADD_AT), y, ConsumerOptions::new()) {
            Ok(_)
            | Err((
                Error::CapacityExhausted {
                    what: Capacity::Sites | Capacity::XolSlots,
                },
                _,
            )) => {}
            Err((e, _)) => panic!("unexpected {e:?}"),
        }
        asker.join().unwrap();
        other.join().unwrap();
        assert!(x.hits.load(Ordering::SeqCst) >= 1);
    });
}
