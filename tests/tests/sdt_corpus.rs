//! Replays the `sdt_note` and `sdt_args` fuzz corpora (`fuzz/corpus/sdt_*/`) through the fuzz
//! drivers, plus a deterministic sweep of mutations of every corpus file.

use std::path::Path;

use probe_tests::sdt_fuzz::{sdt_args, sdt_note};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// A small xorshift generator: the sweep is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: flip a bit, set a byte to an interesting value, cut, duplicate a range,
/// or splice in bytes of another input.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], interesting: &[u8]) -> Vec<u8> {
    let mut d = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if d.is_empty() {
            d.push(interesting[rng.below(interesting.len())]);
            continue;
        }
        let at = rng.below(d.len());
        match rng.below(6) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = interesting[rng.below(interesting.len())],
            2 => d.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(8)).min(d.len());
                let chunk = d[at..end].to_vec();
                d.splice(at..at, chunk);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(16)).min(other.len());
                d.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                d.remove(at);
            }
        }
    }
    d
}

#[test]
fn sdt_note_corpus() {
    let inputs = corpus("sdt_note");
    assert!(inputs.len() >= 15, "only {} seed files", inputs.len());
    for d in &inputs {
        sdt_note(d);
        // The same section under every class and byte order.
        for sel in 0..4u8 {
            let mut v = d.clone();
            if let Some(b) = v.first_mut() {
                *b = sel;
            }
            sdt_note(&v);
        }
    }
    println!("sdt_note: {} inputs replayed", inputs.len());
}

#[test]
fn sdt_args_corpus() {
    let inputs = corpus("sdt_args");
    assert!(inputs.len() >= 15, "only {} seed files", inputs.len());
    for d in &inputs {
        sdt_args(d);
    }
    println!("sdt_args: {} inputs replayed", inputs.len());
}

#[test]
fn sdt_note_mutation_sweep() {
    let inputs = corpus("sdt_note");
    let mut rng = Rng(0x5eed_0000_0000_0004);
    let interesting = [0, 1, 3, 4, 7, 8, 0x7f, 0x80, 0xfc, 0xff, b'%', b'@', b'('];
    for _ in 0..100_000 {
        let base = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())];
        sdt_note(&mutate(&mut rng, base, other, &interesting));
    }
}

#[test]
fn sdt_args_mutation_sweep() {
    let inputs = corpus("sdt_args");
    let mut rng = Rng(0x5eed_0000_0000_0005);
    let interesting = *b"%$@()-+,:x0123489 \tfrsgpie\xff";
    for _ in 0..100_000 {
        let base = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())];
        sdt_args(&mutate(&mut rng, base, other, &interesting));
    }
}
