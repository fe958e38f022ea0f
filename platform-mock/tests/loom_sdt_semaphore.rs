//! loom: concurrent install and removal of two probes sharing one SDT semaphore.
//! The counter always ends equal to the number of installed probes that use it, and never
//! goes below zero.
#![cfg(loom)]

mod loom_support;

use loom::sync::Arc;
use loom_support::*;
use probe_core::{ConsumerOptions, ProbeKey};

#[test]
fn loom_shared_semaphore_install_remove() {
    model("loom_shared_semaphore_install_remove", &[], || {
        let p = Arc::new(LoomPlatform::new());
        let core: Arc<Core<8, 2>> = Arc::new(Core::new());
        let opts = ConsumerOptions::new().with_semaphore(SEM_OFF);
        let (p2, core2) = (p.clone(), core.clone());
        let t = loom::thread::spawn(move || {
            let h = core2
                .register(&p2, ProbeKey::new(FILE, NOP_AT), Counter::new(), opts)
                .unwrap();
            core2.unregister(&p2, h).unwrap();
        });
        let h = core
            .register(&p, ProbeKey::new(FILE, ADD_AT), Counter::new(), opts)
            .unwrap();
        let during = p.semaphore();
        assert!(during == 1 || during == 2, "{during}");
        t.join().unwrap();
        assert_eq!(p.semaphore(), 1);
        core.unregister(&p, h).unwrap();
        assert_eq!(p.semaphore(), 0);
        assert!(p.text_pristine());
    });
}
