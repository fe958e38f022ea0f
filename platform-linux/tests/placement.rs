//! CPU placement (issue 15): `probe trace` pins a single-threaded program and itself to one
//! CPU while it traces, leaves a multi-threaded one alone, and after detach every thread has
//! the mask it had — or the one it set itself meanwhile. `--no-cpu-placement` changes no
//! mask. No timing is assumed: each check waits for a printed hit, which comes after
//! placement.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::program;
use platform_linux::sys::{self, Pid};

fn mask(pid: u32) -> Vec<usize> {
    sys::affinity_of(Some(Pid(pid as i32))).expect("sched_getaffinity")
}

fn threads_of(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// A `workload MODE` process, untraced, past its "ready" line.
struct Program {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Program {
    fn start(args: &[&str]) -> Program {
        let mut child = Command::new(program("workload"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        Program { child, out }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `probe trace -p PID --print SPEC extra...`, past its first printed hit (so past placement).
struct Tracer {
    child: Child,
}

impl Tracer {
    fn attach(pid: u32, spec: &str, extra: &[&str]) -> Tracer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["trace", "-p", &pid.to_string(), "--print", spec])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut hit = String::new();
        out.read_line(&mut hit).unwrap();
        assert!(hit.contains(":work") || hit.contains("usleep"), "{hit}");
        // Keep draining the hits so that probe never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Tracer { child }
    }

    /// The tracing process: `probe`'s child (`probe` itself is the guardian that waits for
    /// it).
    fn pid(&self) -> u32 {
        let me = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("probe {me} has no tracer child"))
    }

    /// SIGINT (detach), then its exit status and standard error.
    fn detach(mut self) -> String {
        let st = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(err.contains("detached from process"), "{err}");
        err
    }
}

fn work_spec() -> String {
    format!("uprobe:{}:work", program("workload").display())
}

#[test]
fn a_single_threaded_process_shares_one_cpu_with_the_tracer_and_gets_its_mask_back() {
    let prog = Program::start(&["spin"]);
    let before = mask(prog.pid());
    let tracer = Tracer::attach(prog.pid(), &work_spec(), &[]);
    let during = mask(prog.pid());
    assert_eq!(during.len(), 1, "pinned to one CPU: {during:?}");
    assert!(before.contains(&during[0]), "{during:?} within {before:?}");
    assert_eq!(mask(tracer.pid()), during, "the tracer on the same CPU");
    tracer.detach();
    assert_eq!(mask(prog.pid()), before, "the mask it had, after detach");
}

#[test]
fn no_cpu_placement_changes_no_mask() {
    let prog = Program::start(&["spin"]);
    let before = mask(prog.pid());
    let tracer = Tracer::attach(prog.pid(), &work_spec(), &["--no-cpu-placement"]);
    assert_eq!(mask(prog.pid()), before);
    let tracer_before = sys::cpus_allowed();
    assert_eq!(
        mask(tracer.pid()),
        tracer_before,
        "the tracer is not pinned either"
    );
    tracer.detach();
    assert_eq!(mask(prog.pid()), before);
}

#[test]
fn a_mask_the_program_sets_itself_while_traced_is_kept_after_detach() {
    let mut prog = Program::start(&["affinity"]);
    let before = mask(prog.pid());
    let tracer = Tracer::attach(prog.pid(), &work_spec(), &[]);
    assert_eq!(mask(prog.pid()).len(), 1);
    let st = Command::new("kill")
        .args(["-USR1", &prog.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut line = String::new();
    prog.out.read_line(&mut line).unwrap();
    let cpu: usize = line
        .strip_prefix("set ")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(before.contains(&cpu));
    assert_eq!(mask(prog.pid()), [cpu]);
    tracer.detach();
    assert_eq!(
        mask(prog.pid()),
        [cpu],
        "its own choice survives the detach"
    );
}

#[test]
fn a_multi_threaded_process_is_not_pinned() {
    let mut child = Command::new(program("threads"))
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Its three threads exist once /proc lists them (they are created at once).
    let mut tids = threads_of(pid);
    while tids.len() < 4 {
        std::thread::yield_now();
        tids = threads_of(pid);
    }
    let before: Vec<Vec<usize>> = tids.iter().map(|&t| mask(t)).collect();
    let tracer = Tracer::attach(pid, "uprobe:libc:usleep", &[]);
    let during: Vec<Vec<usize>> = tids.iter().map(|&t| mask(t)).collect();
    assert_eq!(
        during, before,
        "no thread of a multi-threaded program is pinned"
    );
    assert_eq!(
        mask(tracer.pid()).len(),
        1,
        "the tracer alone is on one CPU"
    );
    tracer.detach();
    let after: Vec<Vec<usize>> = tids.iter().map(|&t| mask(t)).collect();
    assert_eq!(after, before);
    let _ = child.kill();
    let _ = child.wait();
}
