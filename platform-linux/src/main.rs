//! The `probe` command line.
fn main() {}
