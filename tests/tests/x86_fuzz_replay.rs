//! Replays the `x86_analyze` fuzz corpus (`fuzz/corpus/x86_analyze/`) through the fuzz
//! driver, plus a deterministic sweep of pseudo-random and mutated inputs.

use std::path::Path;

use probe_tests::x86::corpus::hand_corpus;
use probe_tests::x86::fuzz::x86_analyze;

#[test]
fn replay_seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/x86_analyze");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        if path.is_file() {
            x86_analyze(&std::fs::read(&path).expect("corpus file"));
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} seed files in {}", dir.display());
}

#[test]
fn pseudo_random_sweep() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let hand = hand_corpus();
    for i in 0..40_000 {
        let mut data = Vec::with_capacity(24);
        data.extend_from_slice(&next().to_le_bytes());
        if i % 2 == 0 {
            // A hand-corpus instruction with one byte mutated.
            let c = &hand[(next() % hand.len() as u64) as usize];
            let mut b = c.bytes.clone();
            let at = (next() % b.len() as u64) as usize;
            b[at] ^= 1 << (next() % 8);
            data.extend_from_slice(&b);
        } else {
            for _ in 0..2 {
                data.extend_from_slice(&next().to_le_bytes());
            }
        }
        x86_analyze(&data);
    }
}
