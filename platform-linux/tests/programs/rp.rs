//! A Rust program whose functions are found by their demangled names (issue 13, item 9):
//! `rp N` calls `rp::deep` and `rp::parse::parse_word` N times each and prints the sum.

mod parse {
    #[inline(never)]
    pub fn parse_word(s: &str) -> u64 {
        s.len() as u64 + core::hint::black_box(1)
    }
}

#[inline(never)]
fn deep(x: u64) -> u64 {
    core::hint::black_box(x) * 2 + 1
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut sum = 0;
    for i in 0..n {
        sum += deep(i) + parse::parse_word("seven");
    }
    println!("sum {sum}");
}
