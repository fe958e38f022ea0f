//! loom: a grace period racing a reader, where nothing synchronizes for the writer.
//!
//! A reader is inside the hit path of boosted probe X while the writer takes X's text away
//! (`on_munmap`: the site is forgotten and the slot retired without waiting for anyone), runs
//! `maintain` (which sweeps tombstones), and registers Y (emulated, so it needs no slot) in a
//! site table of one bucket, so that Y can only reuse X's site. A third context ticks the
//! epoch twice. The
//! entries must not be reused while the reader can still reach them: the reader must only
//! ever run X's consumer for X's address and execute X's slot code (X's slot is not reused:
//! `loom_slot_reuse` covers that), and Y's registration
//! either reuses the entries (the reader was done) or fails with a typed capacity error (it
//! was still pinned). Both outcomes must be reached.
#![cfg(loom)]

mod loom_support;

use loom::sync::Arc;
use loom_support::*;
use probe_core::{Addr, Arch, Capacity, ConsumerOptions, Error, Hit, ProbeKey, Range};

const NAME: &str = "loom_grace_period_races_reader";

fn slot_code(at: u64) -> Vec<u8> {
    let file = program();
    let plan = platform_mock::ToyArch::analyze(&file[at as usize..]).unwrap();
    let mut out = [0u8; platform_mock::ToyArch::SLOT_SIZE];
    let n = platform_mock::ToyArch::encode_slot(&plan, Addr(TEXT + at), Addr(XOL_BASE), &mut out)
        .unwrap();
    out[..n].to_vec()
}

#[test]
fn loom_grace_period_races_reader() {
    races_reader(NAME, false);
}

/// The same with the whole space torn down (`on_space_exit`: its sites, slots and the space
/// entry itself are forgotten without waiting) before the re-registration.
#[test]
fn loom_space_exit_races_reader() {
    races_reader(SPACE_EXIT, true);
}

const SPACE_EXIT: &str = "loom_space_exit_races_reader";

fn races_reader(name: &'static str, space_exit: bool) {
    model(name, &["reused", "still pinned"], move || {
        let p = Arc::new(LoomPlatform::new());
        // Probes, sites, XOL slots: one site bucket and one slot, so Y must reuse X's.
        let core: Arc<AtCore<8, 1, 1>> = Arc::new(AtCore::new());
        let x = AtAddr::new(ADD_AT);
        core.register(
            &p,
            ProbeKey::new(FILE, ADD_AT),
            x.clone(),
            ConsumerOptions::new(),
        )
        .unwrap();
        let x_code = slot_code(ADD_AT);

        let (p2, core2) = (p.clone(), core.clone());
        let reader = loom::thread::spawn(move || {
            let (hit, regs, mut trap) = hit_at(&*core2, &p2, 1, ADD_AT);
            match hit {
                Hit::Boosted { slot } => {
                    assert_eq!((slot.0, regs.pc), (XOL_BASE, XOL_BASE));
                    // "Execute" the slot: it must still hold X's relocated instruction.
                    assert_eq!(
                        p2.peek(XOL_BASE, x_code.len()),
                        x_code,
                        "slot reused under a task"
                    );
                    core2.seen_at(&mut trap, TEXT + SUB_AT);
                }
                // The site was already forgotten; the int3 is still in the (unmapped) text: not
                // ours, or (the sites changed since the lookup) restarted to trap again.
                Hit::NotOurs | Hit::Restart => assert_eq!(regs.pc, TEXT + ADD_AT),
                other => panic!("unexpected {other:?}"),
            }
        });
        let core3 = core.clone();
        let ticker = loom::thread::spawn(move || {
            core3.advance_epoch();
            core3.advance_epoch();
        });

        let len = program().len() as u64;
        if space_exit {
            core.on_space_exit(&p, SPACE);
        } else {
            core.on_munmap(&p, SPACE, Range::new(Addr(TEXT), Addr(TEXT + len)));
        }
        let _ = core.maintain(&p);
        let y = AtAddr::new(NOP_AT);
        match core.register(&p, ProbeKey::new(FILE, NOP_AT), y, ConsumerOptions::new()) {
            Ok(_) => reached(name, "reused"),
            Err((
                Error::CapacityExhausted {
                    what: Capacity::Sites | Capacity::Spaces,
                },
                _,
            )) => reached(name, "still pinned"),
            Err((e, _)) => panic!("unexpected {e:?}"),
        }
        reader.join().unwrap();
        ticker.join().unwrap();
    });
}
