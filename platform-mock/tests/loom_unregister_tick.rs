//! loom: a hit on one CPU, the unregistration of one of the probe's two consumers, and a
//! third context advancing the epoch (a timer tick calling `advance_epoch`).
//!
//! Epochs advanced by someone else must not count towards the unregistering writer's grace
//! period while the hit is still inside the consumer chain: after `unregister` returns the
//! removed consumer's handler never runs (it asserts so), its value is never read while being
//! dropped (loom's cell tracking), and the other consumer keeps running.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use probe_core::{ConsumerOptions, Hit, ProbeKey};

#[test]
fn loom_unregister_races_hit_and_tick() {
    model("loom_unregister_races_hit_and_tick", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let key = ProbeKey::new(FILE, NOP_AT);
        let gone = Counter::new();
        let stays = Counter::new();
        let h_gone = core
            .register(&p, key, gone.clone(), ConsumerOptions::new())
            .unwrap();
        let h_stays = core
            .register(&p, key, stays.clone(), ConsumerOptions::new())
            .unwrap();

        let (p2, core2) = (p.clone(), core.clone());
        let hitter = loom::thread::spawn(move || {
            let (hit, regs, _) = hit_at(&*core2, &p2, 0, NOP_AT);
            (hit, regs.pc)
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || {
            core3.advance_epoch();
            core3.advance_epoch();
        });

        let back = core.unregister(&p, h_gone).unwrap();
        back.unregistered.store(true, Ordering::SeqCst);

        let (hit, pc) = hitter.join().unwrap();
        ticker.join().unwrap();
        assert_eq!(hit, Hit::Emulated);
        assert_eq!(pc, TEXT + NOP_AT + 4);
        assert_eq!(
            stays.hits.load(Ordering::SeqCst),
            1,
            "the other consumer ran"
        );
        assert!(gone.hits.load(Ordering::SeqCst) <= 1);
        core.unregister(&p, h_stays).unwrap();
        assert!(p.text_pristine());
    });
}
