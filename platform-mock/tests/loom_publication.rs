//! loom: publication racing a reader. A new probe (its plan, its site) and a new consumer on a
//! live probe are filled in before they are published; a reader that finds them must see them
//! whole (loom's cell tracking fails the model on a read that is not ordered after the
//! write), with a tick advancing the epoch beside them. And a task that traps on the new
//! breakpoint must find its probe: the site is published before the breakpoint is written.
#![cfg(loom)]

mod loom_support;

use loom::sync::Arc;
use loom_support::*;
use probe_core::{ConsumerOptions, Hit, ProbeKey};

const NEW_PROBE: &str = "loom_new_probe_races_hit";
const NEW_CONSUMER: &str = "loom_new_consumer_races_hit";
const TRAP_FINDS: &str = "loom_trap_finds_published_probe";

#[test]
fn loom_new_probe_races_hit() {
    model(NEW_PROBE, &["found", "not yet"], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<AtCore<4, 2, 1>> = Arc::new(AtCore::new());
        let x = AtAddr::new(NOP_AT);
        let (p2, core2, x2) = (p.clone(), core.clone(), x.clone());
        let reader = loom::thread::spawn(move || {
            // A trap that did not synchronize with the text write (a stale breakpoint of an
            // earlier registration, another CPU's view): whatever it finds it must see whole.
            let (hit, regs, _) = hit_at(&*core2, &p2, 1, NOP_AT);
            match hit {
                Hit::Emulated => {
                    assert_eq!(regs.pc, TEXT + NOP_AT + 4);
                    assert_eq!(x2.hits.load(loom::sync::atomic::Ordering::SeqCst), 1);
                    reached(NEW_PROBE, "found");
                }
                Hit::Restart | Hit::NotOurs => reached(NEW_PROBE, "not yet"),
                other => panic!("unexpected {other:?}"),
            }
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());
        core.register(&p, ProbeKey::new(FILE, NOP_AT), x, ConsumerOptions::new())
            .unwrap();
        reader.join().unwrap();
        ticker.join().unwrap();
    });
}

#[test]
fn loom_trap_finds_published_probe() {
    model(TRAP_FINDS, &["found", "not yet"], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<AtCore<4, 2, 1>> = Arc::new(AtCore::new());
        let x = AtAddr::new(NOP_AT);
        let (p2, core2, x2) = (p.clone(), core.clone(), x.clone());
        let reader = loom::thread::spawn(move || {
            // The task traps only once the breakpoint is in its text; the site was published
            // before that, so the trap must find it.
            if p2.peek(TEXT + NOP_AT, 4) == p2.file[NOP_AT as usize..NOP_AT as usize + 4] {
                reached(TRAP_FINDS, "not yet");
                return;
            }
            let (hit, regs, _) = hit_at(&*core2, &p2, 1, NOP_AT);
            assert_eq!(
                hit,
                Hit::Emulated,
                "a trap on our breakpoint found no probe"
            );
            assert_eq!(regs.pc, TEXT + NOP_AT + 4);
            assert_eq!(x2.hits.load(loom::sync::atomic::Ordering::SeqCst), 1);
            reached(TRAP_FINDS, "found");
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());
        core.register(&p, ProbeKey::new(FILE, NOP_AT), x, ConsumerOptions::new())
            .unwrap();
        reader.join().unwrap();
        ticker.join().unwrap();
    });
}

#[test]
fn loom_new_consumer_races_hit() {
    model(NEW_CONSUMER, &["both", "first only"], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<AtCore<4, 2, 1>> = Arc::new(AtCore::new());
        let key = ProbeKey::new(FILE, NOP_AT);
        let a = AtAddr::new(NOP_AT);
        core.register(&p, key, a.clone(), ConsumerOptions::new())
            .unwrap();
        let b = AtAddr::new(NOP_AT);
        let (p2, core2, b2) = (p.clone(), core.clone(), b.clone());
        let reader = loom::thread::spawn(move || {
            let (hit, _, _) = hit_at(&*core2, &p2, 1, NOP_AT);
            assert_eq!(hit, Hit::Emulated);
            if b2.hits.load(loom::sync::atomic::Ordering::SeqCst) == 1 {
                reached(NEW_CONSUMER, "both");
            } else {
                reached(NEW_CONSUMER, "first only");
            }
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || core3.advance_epoch());
        core.register(&p, key, b, ConsumerOptions::new()).unwrap();
        reader.join().unwrap();
        ticker.join().unwrap();
        assert_eq!(a.hits.load(loom::sync::atomic::Ordering::SeqCst), 1);
    });
}
