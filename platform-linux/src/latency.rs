//! Function latency: a log2 histogram of call durations per probe (`probe trace --latency`),
//! printed the way bpftrace prints `hist()` and BCC's `funclatency` does.
//!
//! Durations are in **nanoseconds** of `CLOCK_MONOTONIC` (`std::time::Instant`): from the
//! tracer's handling of the entry breakpoint to its handling of the return trampoline, so a
//! duration includes the cost of the two ptrace stops (a few microseconds), as every
//! ptrace- or uprobe-based latency tool's does. Bucket `k` holds durations in
//! `[2^k, 2^(k+1))` ns; labels use the binary suffixes bpftrace uses (`1K` = 1024 ns,
//! `1M` = 2^20 ns, `1G` = 2^30 ns). A zero duration has a bucket of its own, `[0]`.
//!
//! ```text
//! @latency_ns[uretprobe:ret_prog:leaf]: count 8000, avg 9211 ns, min 3841 ns, max 412331 ns
//! [2K, 4K)               3 |                                                    |
//! [4K, 8K)            6021 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
//! [8K, 16K)           1807 |@@@@@@@@@@@@@@@                                     |
//! ```

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};

/// Buckets: `[0]`, then `[2^k, 2^(k+1))` for k in 0..64.
pub const BUCKETS: usize = 65;

/// Width of the widest bar, as bpftrace draws it.
const BAR: usize = 52;

/// A log2 histogram of durations, updated by the return handlers (lock-free).
#[derive(Debug)]
pub struct LatencyHist {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of a duration of `ns` nanoseconds: 0 for 0, else `1 + floor(log2(ns))`.
pub fn bucket_of(ns: u64) -> usize {
    if ns == 0 {
        0
    } else {
        64 - ns.leading_zeros() as usize
    }
}

/// The lower bound (inclusive) and upper bound (exclusive) of bucket `i`, in ns; the upper
/// bound of the last bucket saturates.
pub fn bucket_bounds(i: usize) -> (u64, u64) {
    match i {
        0 => (0, 1),
        64 => (1 << 63, u64::MAX),
        i => (1u64 << (i - 1), 1u64 << i),
    }
}

/// `512`, `1K`, `2M`: a power of two with bpftrace's binary suffixes.
fn label(v: u64) -> String {
    const SUFFIX: [(u32, &str); 6] = [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ];
    for (shift, s) in SUFFIX {
        if v >= 1 << shift && v % (1 << shift) == 0 {
            return format!("{}{s}", v >> shift);
        }
    }
    v.to_string()
}

impl LatencyHist {
    /// An empty histogram.
    pub fn new() -> LatencyHist {
        LatencyHist {
            buckets: core::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    /// Counts one call of `ns` nanoseconds.
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        self.min.fetch_min(ns, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    /// A copy of the current figures.
    pub fn snapshot(&self) -> LatencySnapshot {
        let count = self.count.load(Ordering::Relaxed);
        LatencySnapshot {
            buckets: core::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count,
            sum: self.sum.load(Ordering::Relaxed),
            min: if count == 0 {
                0
            } else {
                self.min.load(Ordering::Relaxed)
            },
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// The figures of a [`LatencyHist`] at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Calls per bucket (see [`bucket_bounds`]).
    pub buckets: [u64; BUCKETS],
    /// Calls measured.
    pub count: u64,
    /// Sum of their durations, ns.
    pub sum: u64,
    /// Shortest, ns (0 when nothing was measured).
    pub min: u64,
    /// Longest, ns.
    pub max: u64,
}

impl LatencySnapshot {
    /// Mean duration in ns (0 when nothing was measured).
    pub fn avg(&self) -> u64 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }

    /// The non-empty range of buckets (first to last non-empty), if any.
    fn range(&self) -> Option<(usize, usize)> {
        let first = self.buckets.iter().position(|&c| c > 0)?;
        let last = self.buckets.iter().rposition(|&c| c > 0)?;
        Some((first, last))
    }

    /// The histogram as text: a header line `@latency_ns[NAME]: count.., avg.., min.., max..`
    /// and one `[lo, hi)  count |@@@@|` line per bucket from the first to the last
    /// non-empty one.
    pub fn text(&self, name: &str) -> String {
        let mut s = format!(
            "@latency_ns[{name}]: count {}, avg {} ns, min {} ns, max {} ns\n",
            self.count,
            self.avg(),
            self.min,
            self.max
        );
        let Some((first, last)) = self.range() else {
            return s;
        };
        let top = self.buckets[first..=last]
            .iter()
            .copied()
            .max()
            .unwrap_or(1);
        for i in first..=last {
            let c = self.buckets[i];
            let l = match i {
                0 => "[0]".to_owned(),
                64 => format!("[{}, ...)", label(bucket_bounds(i).0)),
                _ => {
                    let (lo, hi) = bucket_bounds(i);
                    format!("[{}, {})", label(lo), label(hi))
                }
            };
            let bar = ((c as u128 * BAR as u128).div_ceil(top as u128)) as usize;
            let _ = writeln!(
                s,
                "{l:<16} {c:>8} |{}{}|",
                "@".repeat(bar),
                " ".repeat(BAR - bar)
            );
        }
        s
    }

    /// The histogram as one JSON object: `{"type":"latency","probe":..,"unit":"ns",
    /// "count":..,"sum_ns":..,"min_ns":..,"max_ns":..,"buckets":[{"lo":..,"hi":..,
    /// "count":..},...]}` with the non-empty buckets (`hi` is exclusive).
    pub fn json(&self, name: &str) -> String {
        #[derive(serde::Serialize)]
        struct Bucket {
            lo: u64,
            hi: u64,
            count: u64,
        }
        #[derive(serde::Serialize)]
        struct Latency<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            probe: &'a str,
            unit: &'static str,
            count: u64,
            sum_ns: u64,
            min_ns: u64,
            max_ns: u64,
            buckets: Vec<Bucket>,
        }
        crate::json::line(&Latency {
            kind: "latency",
            probe: name,
            unit: "ns",
            count: self.count,
            sum_ns: self.sum,
            min_ns: self.min,
            max_ns: self.max,
            buckets: (0..BUCKETS)
                .filter(|&i| self.buckets[i] > 0)
                .map(|i| {
                    let (lo, hi) = bucket_bounds(i);
                    Bucket {
                        lo,
                        hi,
                        count: self.buckets[i],
                    }
                })
                .collect(),
        })
    }
}

/// What `probe trace` reports about one probe's returns at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnSummary {
    /// The probe's name.
    pub name: String,
    /// Calls not tracked (`maxactive` instances in use, or the thread's chain full).
    pub nmissed: u64,
    /// Of those, the calls nested deeper than a thread's chain holds (`--max-ret-depth`).
    pub nesting: u64,
    /// Calls tracked that never returned (unwound, left by `longjmp`, the thread exited).
    pub abandoned: u64,
    /// The durations (`--latency`).
    pub latency: Option<LatencySnapshot>,
}

/// Writes the histograms (`@latency_ns[...]`, each followed by an empty line), the
/// nonzero missed counts (`@nmissed[NAME]: N`, then `@nmissed_nesting[NAME]: M` for those
/// of them nested too deep) and the calls that never returned (`@abandoned[NAME]: K`) as
/// text, or as JSON lines (`{"type":"latency",...}`,
/// `{"type":"nmissed","probe":..,"nmissed":N,"nesting":M}`,
/// `{"type":"abandoned","probe":..,"abandoned":K}`).
pub fn write_returns(
    out: &mut dyn std::io::Write,
    rets: &[ReturnSummary],
    json: bool,
) -> std::io::Result<()> {
    for r in rets {
        if let Some(l) = &r.latency {
            if json {
                writeln!(out, "{}", l.json(&r.name))?;
            } else {
                writeln!(out)?;
                write!(out, "{}", l.text(&r.name))?;
            }
        }
    }
    let missed: Vec<&ReturnSummary> = rets.iter().filter(|r| r.nmissed > 0).collect();
    let abandoned: Vec<&ReturnSummary> = rets.iter().filter(|r| r.abandoned > 0).collect();
    if !json && (!missed.is_empty() || !abandoned.is_empty()) {
        writeln!(out)?;
    }
    for r in missed {
        if json {
            #[derive(serde::Serialize)]
            struct Missed<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                probe: &'a str,
                nmissed: u64,
                nesting: u64,
            }
            let line = crate::json::line(&Missed {
                kind: "nmissed",
                probe: &r.name,
                nmissed: r.nmissed,
                nesting: r.nesting,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "@nmissed[{}]: {}", r.name, r.nmissed)?;
            if r.nesting > 0 {
                writeln!(out, "@nmissed_nesting[{}]: {}", r.name, r.nesting)?;
            }
        }
    }
    for r in abandoned {
        if json {
            #[derive(serde::Serialize)]
            struct Abandoned<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                probe: &'a str,
                abandoned: u64,
            }
            let line = crate::json::line(&Abandoned {
                kind: "abandoned",
                probe: &r.name,
                abandoned: r.abandoned,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "@abandoned[{}]: {}", r.name, r.abandoned)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(1023), 10);
        assert_eq!(bucket_of(1024), 11);
        assert_eq!(bucket_of(u64::MAX), 64);
        assert_eq!(bucket_bounds(1), (1, 2));
        assert_eq!(bucket_bounds(11), (1024, 2048));
        for ns in [1u64, 5, 1000, 4096, 1 << 40] {
            let (lo, hi) = bucket_bounds(bucket_of(ns));
            assert!(lo <= ns && ns < hi, "{ns}");
        }
    }

    #[test]
    fn text_and_json_forms() {
        let h = LatencyHist::new();
        for ns in [1500, 1600, 3000, 5000] {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.avg(), 2775);
        assert_eq!((s.min, s.max), (1500, 5000));
        let t = s.text("f");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "@latency_ns[f]: count 4, avg 2775 ns, min 1500 ns, max 5000 ns"
        );
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("[1K, 2K)                2 |@@@@"));
        assert!(lines[1].ends_with(&format!("{}|", "@".repeat(52))));
        assert!(lines[2].starts_with("[2K, 4K)                1 |@@@@@@@@@@@@@@@@@@@@@@@@@@ "));
        assert!(lines[3].starts_with("[4K, 8K)                1 |"));
        assert_eq!(
            s.json("f"),
            "{\"type\":\"latency\",\"probe\":\"f\",\"unit\":\"ns\",\"count\":4,\"sum_ns\":11100,\
             \"min_ns\":1500,\"max_ns\":5000,\"buckets\":[{\"lo\":1024,\"hi\":2048,\"count\":2},\
             {\"lo\":2048,\"hi\":4096,\"count\":1},{\"lo\":4096,\"hi\":8192,\"count\":1}]}"
        );
        assert_eq!(label(512), "512");
        assert_eq!(label(1 << 20), "1M");
        assert_eq!(LatencyHist::new().snapshot().text("g").lines().count(), 1);
    }
}
