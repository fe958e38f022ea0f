//! The kernel's own uprobes as the oracle: the same function probed through tracefs
//! `uprobe_events` and through `probe`, in the same run of the program, must count the same.
//!
//! Both mechanisms put an `int3` on the first byte of the probed instruction, so they cannot
//! share one address: with the kernel's breakpoint in place, `probe` finds bytes it did not
//! expect and refuses (checked below). So the kernel probes the function's first instruction
//! (`endbr64`) and `probe` its second (`push %rbp`), which runs exactly once per call.
//!
//! Needs root and tracefs with uprobe events; elsewhere the test says it was skipped and why.

mod common;
use common::{append, tracefs};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use platform_linux::elf::ElfImage;
use platform_linux::tracer::{Outcome, Session, SessionOptions, TraceError};

fn workload() -> PathBuf {
    common::program("workload")
}

/// A kernel uprobe event, removed on drop.
struct KernelProbe {
    dir: PathBuf,
    group: String,
}

impl KernelProbe {
    fn new(dir: &Path, group: &str, file: &Path, offset: u64) -> Result<KernelProbe, String> {
        let events = dir.join("uprobe_events");
        append(
            &events,
            &format!("p:{group}/x {}:{offset:#x}", file.display()),
        )
        .map_err(|e| format!("writing {}: {e}", events.display()))?;
        let kp = KernelProbe {
            dir: dir.to_path_buf(),
            group: group.to_owned(),
        };
        std::fs::write(dir.join(format!("events/{group}/x/enable")), "1")
            .map_err(|e| format!("enabling the event: {e}"))?;
        Ok(kp)
    }

    /// Hits so far, from `uprobe_profile` (`PATH EVENT HITS MISSES`).
    fn hits(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join("uprobe_profile")).unwrap();
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some("x") && l.contains("workload"))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no line for the event in uprobe_profile:\n{text}"))
    }
}

impl Drop for KernelProbe {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.dir.join(format!("events/{}/x/enable", self.group)),
            "0",
        );
        let _ = append(
            &self.dir.join("uprobe_events"),
            &format!("-:{}/x", self.group),
        );
    }
}

fn spawn(args: &[&str]) -> Session {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Session::spawn(workload().as_os_str(), &args, SessionOptions::default()).unwrap()
}

#[test]
fn kernel_uprobe_and_probe_count_the_same_calls_in_one_run() {
    let dir = match tracefs() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let path = workload();
    let img = ElfImage::open(&path).unwrap();
    let entry = img.lookup("kind_emulated")[0].file_offset;
    let group = format!("probe_test_{}", std::process::id());
    let kp = match KernelProbe::new(&dir, &group, &path, entry) {
        Ok(k) => k,
        Err(why) => {
            eprintln!("skipped: cannot set a kernel uprobe: {why}");
            return;
        }
    };

    // The same address: the kernel's int3 is already there, and probe says so.
    let mut s = spawn(&["kinds", "10"]);
    match s.add_spec(&format!("{}:{entry:#x}", path.display())) {
        Err(TraceError::Register { reason, .. }) => {
            assert!(reason.contains("not what the probe expects"), "{reason}")
        }
        other => panic!("probing the kernel's address should be refused: {other:?}"),
    }
    let _ = s.abort();
    let base = kp.hits();

    // The next instruction (`endbr64` is 4 bytes), in the same run.
    let calls = 2500;
    let mut s = spawn(&["kinds", &calls.to_string()]);
    s.add_spec(&format!("{}:{:#x}", path.display(), entry + 4))
        .unwrap();
    assert_eq!(s.run(&mut |_, _| {}).unwrap(), Outcome::Exited(0));
    let ours = s.counts()[0].1;
    let kernel = kp.hits() - base;
    eprintln!("kernel uprobe: {kernel} hits; probe: {ours} hits");
    assert_eq!(ours, calls);
    assert_eq!(kernel, ours);
}
