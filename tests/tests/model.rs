//! The model-based test over deterministic pseudo-random operation sequences.

use probe_tests::model;

/// xorshift64*: deterministic, no dependency.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn random_operation_sequences_match_the_model() {
    let mut total = probe_tests::mock::RunStats::default();
    for seed in 0..400 {
        let s = model::run(&bytes(seed, 150));
        total.emulated += s.emulated;
        total.boosted += s.boosted;
        total.stepped += s.stepped;
    }
    println!("{total:?}");
    assert!(
        total.emulated > 0 && total.boosted > 0 && total.stepped > 0,
        "{total:?}"
    );
}

#[test]
fn every_operation_kind_in_a_fixed_sequence() {
    // spawn x2, register (unfiltered, even, odd), run, fork, run, mmap extra, exec, munmap,
    // unregister, run, exit.
    let ops: &[u8] = &[
        0, 0, 0, 0, 1, 0, 1, 0, 2, 1, 3, 0, 3, 1, 1, 5, 2, 3, 0, 0, 4, 0, 0, 3, 2, 0, 7, 1, 1, 5,
        0, 1, 8, 1, 0, 2, 0, 0, 3, 1, 0, 6, 0, 0, 3, 0, 0,
    ];
    let _ = model::run(ops);
}
