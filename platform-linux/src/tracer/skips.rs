//! Probe points a spec matched but that are not probed, and why: each with its true reason,
//! grouped for the per-spec summary (`probe: 8 of 78125 ... skipped: ...`) and listed one by
//! one with `--verbose` (function, file offset, reason).
//!
//! A point is skipped at registration (the core refuses its instruction, a table is full,
//! the symbol is not in executable code), or later, when a process maps its file or forks
//! and the probe cannot be installed there ([`Lost`]: counted as missing in that process,
//! never silently).

use std::collections::BTreeMap;
use std::path::Path;

use probe_core::{Capacity, Reject};

use super::capacity::capacity_text;

/// Why one point is not probed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The core refuses the instruction at the point; `insn` names it (`int3`, `ud2`).
    Instruction {
        /// The core's reason.
        reject: Reject,
        /// The instruction, as decoded (mnemonic), if it decodes.
        insn: Option<String>,
    },
    /// Its instruction overlaps the instruction of another probe of the same file (two
    /// symbols of which one starts inside the other's first instruction).
    Overlaps {
        /// The other probe, by name where known.
        other: String,
    },
    /// A table of the tracer is full.
    Capacity(Capacity),
    /// The symbol is not in an executable segment of its file (a function symbol in data):
    /// no mapping of it can run.
    NotCode,
    /// `--latency` on a point that is not a function's entry.
    LatencyNotAtEntry,
    /// Anything else the core or the tracer refused, in words.
    Other(String),
}

impl SkipReason {
    /// The reason shared by every point of one group, for the summary line.
    pub fn group(&self) -> String {
        match self {
            SkipReason::Instruction { reject, .. } => match reject {
                Reject::Trap => "their first instruction traps by itself (int3, int n, ud2: a \
                                 stub that only crashes); a breakpoint there could not tell \
                                 its trap from ours"
                    .into(),
                Reject::Privileged => {
                    "their first instruction is privileged (hlt, cli, ...), which user code \
                     cannot run from a slot"
                        .into()
                }
                Reject::PortIo => "their first instruction is port I/O (in, out)".into(),
                Reject::SystemCall => {
                    "their first instruction is a system call, whose return address the \
                     kernel would take from the slot"
                        .into()
                }
                Reject::StackSegmentLoad => {
                    "their first instruction loads the stack segment (mov ss, pop ss)".into()
                }
                Reject::Prefix => {
                    "their first instruction has a prefix that cannot run out of line".into()
                }
                Reject::RipRelativeOutOfRange { .. } => {
                    "their first instruction reads memory too far from any slot area".into()
                }
                Reject::SlotTooSmall { .. } => {
                    "their first instruction does not fit in an out-of-line slot once \
                     relocated"
                        .into()
                }
                Reject::Truncated { .. } => {
                    "their first instruction runs past the end of the file".into()
                }
                Reject::Invalid => "their first bytes are not a valid x86-64 instruction".into(),
                _ => "their first instruction is not supported out of line".into(),
            },
            SkipReason::Overlaps { .. } => {
                "they start inside the first instruction of another probed function (a label \
                 or alias in the middle of it), so a breakpoint there would split that \
                 instruction"
                    .into()
            }
            SkipReason::Capacity(c) => capacity_text(*c),
            SkipReason::NotCode => "their symbols are not in executable code (a function \
                                    symbol in a data segment), so no process runs them"
                .into(),
            SkipReason::LatencyNotAtEntry => "--latency times calls from a function's entry, \
                                              and they are not at one"
                .into(),
            SkipReason::Other(s) => s.clone(),
        }
    }

    /// The reason for one point, for `--verbose`.
    pub fn detail(&self) -> String {
        match self {
            SkipReason::Instruction { reject, insn } => match (reject, insn) {
                (Reject::Trap, Some(i)) => format!("its first instruction, `{i}`, traps by itself"),
                (_, Some(i)) => format!("its first instruction, `{i}`: {reject}"),
                (_, None) => reject.to_string(),
            },
            SkipReason::Overlaps { other } => {
                format!("starts inside the first instruction of {other}")
            }
            SkipReason::Capacity(c) => capacity_text(*c),
            SkipReason::NotCode => "not in an executable segment".into(),
            SkipReason::LatencyNotAtEntry => "not a function's entry (--latency)".into(),
            SkipReason::Other(s) => s.clone(),
        }
    }
}

/// One point not probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The point's name (`node:Builtins_Abort`, `libc.so.6:malloc+0x4`).
    pub name: String,
    /// Its file offset.
    pub file_offset: u64,
    /// Why.
    pub reason: SkipReason,
}

/// The skipped points grouped by reason, largest group first: (reason, count, the points).
pub fn group(skipped: &[Skipped]) -> Vec<(String, Vec<&Skipped>)> {
    let mut by: BTreeMap<String, Vec<&Skipped>> = BTreeMap::new();
    for s in skipped {
        by.entry(s.reason.group()).or_default().push(s);
    }
    let mut v: Vec<(String, Vec<&Skipped>)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The instruction at `offset` of the file at `path`, by mnemonic (`int3`, `ud2`, `hlt`).
pub fn insn_at(path: &Path, offset: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 15];
    let n = std::fs::File::open(path)
        .ok()?
        .read_at(&mut bytes, offset)
        .ok()?;
    let mut d = iced_x86::Decoder::new(64, &bytes[..n], iced_x86::DecoderOptions::NONE);
    let insn = d.decode();
    (!insn.is_invalid()).then(|| format!("{:?}", insn.mnemonic()).to_lowercase())
}

/// Probes attached (registered) that could not be installed in a process that mapped their
/// file, or forked, later: they count nothing in that process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The process.
    pub pid: i32,
    /// What happened (`mapped /usr/lib/.../libc.so.6`, `forked from 1234`).
    pub when: String,
    /// Why (the core's error, in words).
    pub reason: String,
    /// The probes, by name.
    pub probes: Vec<String>,
}
