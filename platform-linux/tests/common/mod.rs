//! Helpers shared by the integration tests: the test programs, running `probe`, reading its
//! output, and tracefs for the kernel-oracle tests.
#![allow(dead_code, unreachable_pub)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod programs;
pub use programs::program;

/// Run the `probe` binary with `args` (no stdin).
pub fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run probe")
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the traced program printed: everything before the summary's first `@[`.
pub fn program_output(stdout: &str) -> &str {
    match stdout.find("\n@[") {
        Some(i) => &stdout[..i],
        None => stdout,
    }
}

/// The tracefs directory with `uprobe_events`, mounting tracefs if needed and possible.
pub fn tracefs() -> Result<PathBuf, String> {
    for d in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(d).join("uprobe_events").exists() {
            return Ok(PathBuf::from(d));
        }
    }
    let d = "/sys/kernel/tracing";
    let out = Command::new("mount")
        .args(["-t", "tracefs", "nodev", d])
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if Path::new(d).join("uprobe_events").exists() {
        return Ok(PathBuf::from(d));
    }
    Err(format!(
        "no tracefs with uprobe_events (mounting it at {d} failed: {}); needs root and a \
         kernel with CONFIG_UPROBE_EVENTS",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(format!("{line}\n").as_bytes())
}
