//! loom: two registrations of the same (file, offset) racing.
//!
//! Exactly one probe and one breakpoint result, both consumers run on a hit, and after both
//! unregister the text is pristine.
#![cfg(loom)]

mod loom_support;

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom_support::*;
use platform_mock::ToyArch;
use probe_core::{ConsumerOptions, CpuId, Hit, ProbeKey, TaskId, TaskState};

#[test]
fn loom_two_registrations_of_one_key() {
    model("loom_two_registrations_of_one_key", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let (a, b) = (Counter::new(), Counter::new());
        let key = ProbeKey::new(FILE, ADD_AT);

        let (p2, core2, b2) = (p.clone(), core.clone(), b.clone());
        let t = loom::thread::spawn(move || {
            core2
                .register(&p2, key, b2, ConsumerOptions::new())
                .unwrap()
        });
        let ha = core
            .register(&p, key, a.clone(), ConsumerOptions::new())
            .unwrap();
        let hb = t.join().unwrap();

        assert_eq!(core.probe_count(), 1);
        assert_eq!(core.site_count(), 1);
        assert!(core.is_installed(SPACE, probe_core::Addr(TEXT + ADD_AT)));

        let mut ts = TaskState::<32>::new();

        let mut trap = probe_core::TrapState::<ToyArch>::new();
        let mut regs = regs_at(TEXT + ADD_AT);
        let hit = core.on_breakpoint(
            &p,
            CpuId(0),
            SPACE,
            TaskId(1),
            &mut trap,
            &mut ts,
            &mut regs,
        );
        assert!(matches!(hit, Hit::Boosted { .. }), "{hit:?}");
        assert_eq!(a.hits.load(Ordering::SeqCst), 1);
        assert_eq!(b.hits.load(Ordering::SeqCst), 1);
        core.seen_at(&mut trap, TEXT + SUB_AT);

        core.unregister(&p, ha).unwrap();
        assert!(
            !p.text_pristine(),
            "the other consumer keeps the breakpoint"
        );
        core.unregister(&p, hb).unwrap();
        assert!(p.text_pristine());
    });
}
