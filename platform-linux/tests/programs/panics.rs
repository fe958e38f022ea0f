//! Rust panics through return-probed frames (issue 13, item 5): `panics N` runs N rounds of
//! `descend(6)`, which recurses to `descend(0)`; `descend(3)` calls the rest under
//! `catch_unwind`, and `descend(0)` panics. Frames 0 to 2 are unwound (each drops a guard on
//! the way: cleanup landing pads); frames 3 to 6 survive and return. Prints the sum of the
//! results and the guards dropped.

use std::panic;
use std::sync::atomic::{AtomicU64, Ordering};

static DROPS: AtomicU64 = AtomicU64::new(0);
const CATCH_AT: u64 = 3;

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    let _guard = Guard;
    if depth == 0 {
        panic!("the bottom");
    }
    let below = if depth == CATCH_AT {
        panic::catch_unwind(|| descend(core::hint::black_box(depth - 1))).unwrap_or(100)
    } else {
        descend(depth - 1)
    };
    core::hint::black_box(below) + 1
}

fn main() {
    panic::set_hook(Box::new(|_| {}));
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut sum = 0;
    for _ in 0..n {
        sum += descend(core::hint::black_box(6));
    }
    println!("sum {sum} drops {}", DROPS.load(Ordering::Relaxed));
}
