//! One JSON line from a serde value: the shared piece of every `--json` form (hits and the
//! summary in `output.rs`, latency histograms, return counts, stacks). A leaf module,
//! so that the modules that print JSON need not import one another.

/// One value as one line of JSON (no newline). The crate's JSON forms are plain data
/// (numbers, strings, options and lists of them), which always serialize.
pub(crate) fn line<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data always serializes to JSON")
}
