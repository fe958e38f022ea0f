//! Replays every cargo-fuzz corpus under `fuzz/corpus/<target>/` through the same driver the
//! fuzz target calls, so CI checks the corpus without a fuzzer.

use std::path::Path;

fn replay(target: &str, driver: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_file() {
            let data = std::fs::read(&path).expect("corpus file");
            driver(&data);
            n += 1;
        }
    }
    assert!(n > 0, "corpus {target} is empty");
    n
}

#[test]
fn model_corpus() {
    let n = replay("model", |d| {
        let _ = probe_tests::model::run(d);
    });
    println!("model: {n} inputs replayed");
}
