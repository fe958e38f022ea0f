//! USDT markers end to end: `probe list` and `probe trace usdt:...` against a `<sys/sdt.h>`
//! program built by `build.rs` (`tests/programs/usdt_demo.c`, every marker guarded by its
//! semaphore, counting what it fired) and against `python3.11`'s own `python:*` markers
//! (which python only reaches while their semaphores are set); semaphores before, during
//! and after an attach; and the kernel's uprobes with `ref_ctr_offset` as the oracle.

mod common;
use common::{append, count, probe, program, text, tracefs};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use platform_linux::tracer::{Outcome, Session, SessionOptions, TraceError};
use platform_linux::usdt::UsdtFile;

fn demo() -> String {
    program("usdt-demo").display().to_string()
}

/// A number the demo printed after `label`.
fn printed(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("`{label}` not in:\n{stdout}"))
}

/// `probe trace SPECS... -- PROG ARGS...`, with `D:` in a spec replaced by the program.
fn trace(prog: &str, specs: &[&str], flags: &[&str], args: &[&str]) -> Output {
    let mut v: Vec<String> = vec!["trace".into()];
    v.extend(specs.iter().map(|s| s.replace("D:", &format!("{prog}:"))));
    v.extend(flags.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.push(prog.to_owned());
    v.extend(args.iter().map(|s| s.to_string()));
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    probe(&v)
}

#[test]
fn list_shows_markers_with_offsets_semaphores_and_args() {
    let o = probe(&["list", &demo(), "demo:*"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(out.contains("# USDT markers"), "{out}");
    let file = UsdtFile::open(Path::new(&demo())).unwrap();
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" demo:")).collect();
    assert_eq!(rows.len(), file.markers().len(), "{out}");
    for m in file.markers() {
        let row = format!(
            "{:#018x}  {:>18}  {:<32}  {}",
            m.file_offset,
            format!("{:#018x}", m.semaphore_offset.unwrap()),
            m.full_name(),
            m.args
        );
        assert!(rows.contains(&row.as_str()), "{row}\nnot in:\n{out}");
    }
    // Two sites of `pair`, one semaphore.
    let pair: Vec<_> = file.markers().iter().filter(|m| m.name == "pair").collect();
    assert_eq!(pair.len(), 2);
    assert_ne!(pair[0].file_offset, pair[1].file_offset);
    assert_eq!(pair[0].semaphore_offset, pair[1].semaphore_offset);
    // Each marker is a `nop` in the file.
    let data = std::fs::read(demo()).unwrap();
    for m in file.markers() {
        assert_eq!(data[m.file_offset as usize], 0x90, "{}", m.full_name());
    }
}

#[test]
fn marker_counts_are_exact_and_only_traced_markers_fire() {
    for prog in [demo(), program("usdt-demo-nopie").display().to_string()] {
        let untraced = Command::new(&prog).args(["run", "500"]).output().unwrap();
        let u = text(&untraced.stdout);
        for m in ["tick", "pair", "name", "kern_a", "kern_b"] {
            assert_eq!(printed(&u, &format!("fired {m}:")), 0, "{u}");
        }
        let o = trace(
            &prog,
            &["usdt:D:demo:tick", "usdt:D:demo:pair", "usdt:D:name"],
            &[],
            &["run", "500"],
        );
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("attached 4 probes"),
            "{}",
            text(&o.stderr)
        );
        let file = Path::new(&prog).file_name().unwrap().to_string_lossy();
        assert_eq!(printed(&out, "fired tick:"), 500);
        assert_eq!(printed(&out, "fired pair:"), 1000);
        assert_eq!(printed(&out, "fired name:"), 500);
        assert_eq!(printed(&out, "fired kern_a:"), 0);
        // Two installed sites of `pair`: its shared semaphore reads 2.
        assert_eq!(printed(&out, "pair semaphore max:"), 2);
        assert_eq!(count(&out, &format!("usdt:{file}:demo:tick")), 500);
        // Both sites under one name, summed.
        assert_eq!(count(&out, &format!("usdt:{file}:demo:pair")), 1000);
        assert_eq!(out.matches(":demo:pair]").count(), 1, "{out}");
        assert_eq!(count(&out, &format!("usdt:{file}:demo:name")), 500);
    }
}

#[test]
fn print_decodes_registers_memory_symbols_and_strings() {
    // name(names[i % 3], i): argument 0 is `8@(%rdx,%rax,8)`, a pointer loaded from the
    // array, read as a string with `--str 0`; tick's argument 0 (`-4@%edi`) stays a number.
    let o = trace(
        &demo(),
        &["usdt:D:demo:name", "usdt:D:demo:tick"],
        &["--print", "--str", "0"],
        &["run", "4"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let hits = |m: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains(&format!("usdt:usdt-demo:demo:{m} ")))
            .map(|l| l[l.find(" arg0=").unwrap() + 1..].to_owned())
            .collect()
    };
    let names = hits("name");
    assert_eq!(
        names,
        [
            "arg0=\"alpha\" arg1=0",
            "arg0=\"beta\" arg1=1",
            "arg0=\"gamma\" arg1=2",
            "arg0=\"alpha\" arg1=3"
        ],
        "{out}"
    );
    assert_eq!(hits("tick")[1], "arg0=1 arg1=101 arg2=3", "{out}");

    // tick(i, counter, i * 3): `counter` is read through `counter(%rip)` (PIE: the symbol's
    // address plus the load bias); it starts at 100 and grows by one per iteration.
    let o = trace(
        &demo(),
        &["usdt:D:demo:tick"],
        &["--print", "--json"],
        &["run", "3"],
    );
    let out = text(&o.stdout);
    let args: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"type\":\"hit\""))
        .map(|l| &l[l.find("\"args\":").unwrap()..])
        .collect();
    assert_eq!(
        args,
        [
            "\"args\":[0,100,0]}",
            "\"args\":[1,101,3]}",
            "\"args\":[2,102,6]}"
        ],
        "{out}"
    );
    let o = trace(&demo(), &["usdt:D:demo:tick"], &["--print"], &["run", "2"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("usdt:usdt-demo:demo:tick arg0=1 arg1=101 arg2=3"),
        "{out}"
    );
}

#[test]
fn specs_without_provider_with_globs_and_bad_names() {
    let o = trace(
        &demo(),
        &["usdt:D:pair", "usdt:D:*:kern_*"],
        &[],
        &["run", "50"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(count(&out, "usdt:usdt-demo:demo:pair"), 100);
    assert_eq!(count(&out, "usdt:usdt-demo:demo:kern_a"), 50);
    assert_eq!(count(&out, "usdt:usdt-demo:demo:kern_b"), 50);
    assert_eq!(printed(&out, "fired tick:"), 0);

    let o = trace(&demo(), &["usdt:D:demo:nope"], &[], &["run", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("no USDT marker `demo:nope`") && err.contains("demo:tick"),
        "{err}"
    );
    let o = trace("/bin/true", &["usdt:D:x:y"], &[], &[]);
    assert!(
        text(&o.stderr).contains("no `.note.stapsdt` markers"),
        "{}",
        text(&o.stderr)
    );
    let o = trace(
        &demo(),
        &["usdt:D:demo:tick"],
        &["--str", "0"],
        &["run", "1"],
    );
    assert!(
        text(&o.stderr).contains("add --print"),
        "{}",
        text(&o.stderr)
    );
}

/// Reads the `u16` at `addr` of process `pid`.
fn peek16(pid: u32, addr: u64) -> u16 {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8; 2];
    f.read_exact_at(&mut b, addr).unwrap();
    u16::from_le_bytes(b)
}

/// The address of file offset `off` of `file` in the writable mapping of process `pid`.
fn runtime_addr(pid: u32, file: &Path, off: u64) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let file = std::fs::canonicalize(file).unwrap();
    maps.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || Path::new(f[5]) != file || !f[1].contains('w') {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let map_off = u64::from_str_radix(f[2], 16).ok()?;
            (off >= map_off && off - map_off < end - start).then(|| start + off - map_off)
        })
        .unwrap_or_else(|| panic!("file offset {off:#x} not mapped writable in:\n{maps}"))
}

fn poke16(pid: u32, addr: u64, v: u16) {
    let f = OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    f.write_all_at(&v.to_le_bytes(), addr).unwrap();
}

/// Kills the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn attach_sets_semaphores_and_detach_restores_them() {
    let mut child = Command::new(demo())
        .arg("sleep")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Reaped(child);
    let mut sem = std::collections::HashMap::new();
    for _ in 0..3 {
        let l = lines.next().unwrap().unwrap();
        let (name, addr) = l.split_once(' ').unwrap();
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        sem.insert(name.to_owned(), addr);
    }
    let read = || -> [u16; 3] { ["tick", "pair", "name"].map(|n| peek16(pid, sem[n])) };
    // Another tool already holds `name`'s semaphore at 5: ours must add one and take it back.
    poke16(pid, sem["name"], 5);
    assert_eq!(read(), [0, 0, 5]);

    let mut tracer = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args([
            "trace",
            &format!("usdt:{}:demo:tick", demo()),
            &format!("usdt:{}:demo:pair", demo()),
            &format!("usdt:{}:demo:name", demo()),
            "--print",
            "-p",
            &pid.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hits = BufReader::new(tracer.stdout.take().unwrap());
    let mut err = BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "probe ended early");
    }
    assert!(line.contains("attached 4 probes"), "{line}");
    // One per installed probe: tick 1, pair 2 (two sites), name 5 + 1.
    assert_eq!(read(), [1, 2, 6]);
    // Wait for printed hits (no timing assumed), then detach.
    let mut ticks = 0;
    while ticks < 3 {
        let mut hit = String::new();
        assert_ne!(hits.read_line(&mut hit).unwrap(), 0, "probe ended early");
        ticks += u32::from(hit.contains(" usdt:usdt-demo:demo:tick"));
    }
    let st = Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut hits, &mut out).unwrap();
    tracer.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(rest.contains("detached from process"), "{rest}");
    assert_eq!(read(), [0, 0, 5], "semaphores not restored after detach");
    // It fired while attached, and keeps running unharmed.
    assert!(count(&out, "usdt:usdt-demo:demo:tick") >= 3, "{out}");
    // Both sites of `pair` per iteration (give or take the iterations cut by attach and
    // detach).
    let (tick, pair) = (
        count(&out, "usdt:usdt-demo:demo:tick"),
        count(&out, "usdt:usdt-demo:demo:pair"),
    );
    assert!(pair.abs_diff(2 * tick) <= 4, "{out}");
    std::thread::sleep(core::time::Duration::from_millis(20));
    assert!(Path::new(&format!("/proc/{pid}/mem")).exists());
    drop(child);
}

/// The state letter of process `pid`.
fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// SIGKILL of the tracer process itself (not `probe`, its guardian): the guardian puts back
/// the semaphores and breakpoints from the tracer's journal. The program waits in `pause()`
/// and hits no marker, so that no hit is in flight when the tracer dies (the kernel would
/// deliver that one's SIGTRAP: see the journal's docs); the tracer is killed once the program
/// is seen asleep.
#[test]
fn the_guardian_restores_semaphores_and_text_when_the_tracer_is_killed() {
    let mut child = Command::new(demo())
        .arg("idle")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child = Reaped(child);
    let mut sem = std::collections::HashMap::new();
    for _ in 0..3 {
        let l = lines.next().unwrap().unwrap();
        let (name, addr) = l.split_once(' ').unwrap();
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        sem.insert(name.to_owned(), addr);
    }
    let read = || -> [u16; 3] { ["tick", "pair", "name"].map(|n| peek16(pid, sem[n])) };
    poke16(pid, sem["name"], 5);
    let mut guardian = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args([
            "trace",
            &format!("usdt:{}:demo:*", demo()),
            "-p",
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(guardian.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        assert_ne!(err.read_line(&mut line).unwrap(), 0, "probe ended early");
    }
    assert_eq!(read(), [1, 2, 6]);
    let kill = |pid: u32, sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success())
    };
    // Asleep in pause(), not at a ptrace stop of ours.
    while state_of(pid) != 'S' {
        std::thread::yield_now();
    }
    let me = guardian.id();
    let tracer: u32 = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .expect("the tracer child");
    kill(tracer, "-KILL");
    let status = guardian.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(128 + 9), "{rest}");
    assert!(rest.contains("probe: restored "), "{rest}");
    assert_eq!(
        read(),
        [0, 0, 5],
        "semaphores not restored by the guardian: {rest}"
    );
    common::assert_text_matches_disk(pid);
    assert!(child.0.try_wait().unwrap().is_none(), "it died");
}

/// Python 3.11 reaches `function__entry` only on its tracing path (`DO_TRACING` on
/// `RESUME`, taken while a profile or trace function is set) and on `generator.throw()`;
/// `function__return` fires for every return. So the script sets a profile function around
/// its 100 calls. The kernel's uprobes count the same (102 entries for this script: the 100
/// calls and two generator throws during start-up).
const PY_SCRIPT: &str = "\
import gc, sys

def target_fn(n):
    return n + 1

sys.setprofile(lambda frame, event, arg: None)
for i in range(100):
    target_fn(i)
sys.setprofile(None)
for i in range(3):
    gc.collect()
";

#[test]
fn python_markers_fire_only_through_their_semaphores() {
    let python = Path::new("/usr/bin/python3.11");
    if !python.exists() {
        eprintln!("skipped: no {}", python.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("probe-usdt-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("markers.py");
    std::fs::write(&script, PY_SCRIPT).unwrap();
    let script_s = script.display().to_string();
    let py = |specs: &[&str], flags: &[&str]| -> Output {
        let mut v: Vec<&str> = vec!["trace"];
        v.extend(specs);
        v.extend(flags);
        v.extend(["--", "/usr/bin/python3.11", "-I", "-S", &script_s]);
        probe(&v)
    };
    let o = py(
        &[
            "usdt:python3:python:function__entry",
            "usdt:python3:python:function__return",
            "usdt:python3:python:gc__start",
            "usdt:python3:python:gc__done",
        ],
        &[],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let entry = count(&out, "usdt:python3.11:python:function__entry");
    let ret = count(&out, "usdt:python3.11:python:function__return");
    let gc_start = count(&out, "usdt:python3.11:python:gc__start");
    let gc_done = count(&out, "usdt:python3.11:python:gc__done");
    eprintln!(
        "python3.11: function__entry {entry}, function__return {ret}, gc__start {gc_start}, \
         gc__done {gc_done}"
    );
    assert!(entry >= 100 && ret >= 100, "{out}");
    assert!(gc_start >= 3 && gc_done >= 3, "{out}");

    // Arguments: filename, function name (strings), line number.
    let o = py(
        &[
            "usdt:python3:python:function__entry",
            "usdt:python3:python:function__return",
        ],
        &["--print", "--str", "0", "--str", "1"],
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let target = |marker: &str| -> Vec<&str> {
        out.lines()
            .filter(|l| l.contains(marker) && l.contains("arg1=\"target_fn\""))
            .collect()
    };
    assert_eq!(target("python:function__return ").len(), 100, "{out}");
    let calls = target("python:function__entry ");
    assert_eq!(calls.len(), 100, "{out}");
    let first = calls[0];
    assert!(first.contains(&format!("arg0={:?}", script_s)), "{first}");
    let line: i64 = first[first.find("arg2=").unwrap() + 5..]
        .trim()
        .parse()
        .unwrap();
    assert!((3..=4).contains(&line), "{first}");
    eprintln!("python3.11 function__entry hit: {first}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------ tracefs

/// Kernel uprobe events of one group, removed on drop.
struct KernelProbes {
    dir: PathBuf,
    group: String,
    events: Vec<String>,
}

impl KernelProbes {
    /// `p:GROUP/EVENT FILE:0xOFFSET(0xREF_CTR_OFFSET)`, enabled.
    fn add(&mut self, event: &str, file: &Path, offset: u64, ref_ctr: u64) -> Result<(), String> {
        let events = self.dir.join("uprobe_events");
        let line = format!(
            "p:{}/{event} {}:{offset:#x}({ref_ctr:#x})",
            self.group,
            file.display()
        );
        append(&events, &line).map_err(|e| format!("writing `{line}` to uprobe_events: {e}"))?;
        self.events.push(event.to_owned());
        std::fs::write(
            self.dir
                .join(format!("events/{}/{event}/enable", self.group)),
            "1",
        )
        .map_err(|e| format!("enabling {event}: {e}"))
    }

    /// Hits of `event` (on `file`) so far, from `uprobe_profile` (`PATH EVENT HITS`).
    fn hits(&self, file: &Path, event: &str) -> u64 {
        let text = std::fs::read_to_string(self.dir.join("uprobe_profile")).unwrap();
        let file = file.display().to_string();
        text.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 3 && f[0] == file && f[1] == event
            })
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no line for {event} in uprobe_profile:\n{text}"))
    }
}

impl Drop for KernelProbes {
    fn drop(&mut self) {
        for e in &self.events {
            let _ = std::fs::write(
                self.dir.join(format!("events/{}/{e}/enable", self.group)),
                "0",
            );
            let _ = append(
                &self.dir.join("uprobe_events"),
                &format!("-:{}/{e}", self.group),
            );
        }
    }
}

/// The kernel (uprobe_events with a reference counter) and `probe` on markers of one run.
///
/// A kernel uprobe and ours cannot share an address (the kernel's `int3` is already there
/// and `probe` refuses bytes it does not expect), so each takes its own marker location:
/// the kernel `kern_a` and the first site of `pair`, `probe` `kern_b` and the second site of
/// `pair`; all four fire once per iteration. The kernel's `ref_ctr` increment and ours add
/// up on `pair`'s shared semaphore: the program sees 2.
#[test]
fn kernel_ref_ctr_uprobes_and_probe_count_the_same_markers() {
    let dir = match tracefs() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // A private copy: the kernel's probes (and semaphores) apply to every process mapping
    // the file, and other tests run the demo at the same time.
    let tmp = std::env::temp_dir().join(format!("probe-usdt-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let prog = tmp.join("usdt-demo");
    std::fs::copy(demo(), &prog).unwrap();
    let file = UsdtFile::open(&prog).unwrap();
    let find = |name: &str, args_has: &str| {
        file.markers()
            .iter()
            .find(|m| m.name == name && m.args.contains(args_has))
            .unwrap_or_else(|| panic!("no {name} with {args_has}"))
    };
    let kern_a = find("kern_a", "");
    let kern_b = find("kern_b", "");
    let pair1 = find("pair", "$1");
    let pair2 = find("pair", "$2");

    let mut kp = KernelProbes {
        dir: dir.clone(),
        group: format!("probe_usdt_{}", std::process::id()),
        events: Vec::new(),
    };
    for (ev, m) in [("a", kern_a), ("p1", pair1)] {
        if let Err(why) = kp.add(ev, &prog, m.file_offset, m.semaphore_offset.unwrap()) {
            eprintln!("skipped: cannot set a kernel uprobe with a reference counter: {why}");
            let _ = std::fs::remove_dir_all(&tmp);
            return;
        }
    }

    let n: u64 = 3000;
    let n_text = n.to_string();
    let argv: Vec<&std::ffi::OsStr> = vec!["kern".as_ref(), n_text.as_ref()];
    let mut s = Session::spawn(prog.as_os_str(), &argv, SessionOptions::default()).unwrap();
    // Every site of `pair` includes the kernel's: refused, as documented.
    match s.add_spec(&format!("usdt:{}:demo:pair", prog.display())) {
        Err(TraceError::Register { reason, .. }) => {
            assert!(reason.contains("not what the probe expects"), "{reason}")
        }
        other => panic!("the kernel's site should be refused: {other:?}"),
    }
    let _ = s.abort();

    let mut s = Session::spawn(prog.as_os_str(), &argv, SessionOptions::default()).unwrap();
    let pid = s.pid().0 as u32;
    let pair_sem = runtime_addr(pid, &prog, pair1.semaphore_offset.unwrap());
    // The kernel counted its `pair` site when the program's data was mapped; ours adds one.
    assert_eq!(peek16(pid, pair_sem), 1);
    s.add_usdt_marker(&file, kern_b).unwrap();
    s.add_usdt_marker(&file, pair2).unwrap();
    assert_eq!(peek16(pid, pair_sem), 2);
    let (a0, p0) = (kp.hits(&prog, "a"), kp.hits(&prog, "p1"));
    // The program's output goes to our stdout; its counts are checked through the markers.
    assert_eq!(s.run(&mut |_, _| {}).unwrap(), Outcome::Exited(0));
    let ours_b = s.count_of("usdt:usdt-demo:demo:kern_b");
    let ours_p2 = s.count_of("usdt:usdt-demo:demo:pair");
    let (kernel_a, kernel_p1) = (kp.hits(&prog, "a") - a0, kp.hits(&prog, "p1") - p0);
    eprintln!(
        "kernel: kern_a {kernel_a}, pair site 1 {kernel_p1}; probe: kern_b {ours_b}, pair site \
         2 {ours_p2}"
    );
    assert_eq!(ours_b, n);
    assert_eq!(ours_p2, n);
    assert_eq!(kernel_a, n);
    assert_eq!(kernel_p1, n);

    // Detaching takes back our increment only.
    let sleep: Vec<&std::ffi::OsStr> = vec!["sleep".as_ref()];
    let mut s = Session::spawn(prog.as_os_str(), &sleep, SessionOptions::default()).unwrap();
    let pid = s.pid().0 as u32;
    let pair_sem = runtime_addr(pid, &prog, pair1.semaphore_offset.unwrap());
    s.add_usdt_marker(&file, pair2).unwrap();
    assert_eq!(peek16(pid, pair_sem), 2);
    assert_eq!(
        s.run_for(core::time::Duration::from_millis(50), &mut |_, _| {})
            .unwrap(),
        None
    );
    s.detach().unwrap();
    assert_eq!(peek16(pid, pair_sem), 1);
    assert!(s.count_of("usdt:usdt-demo:demo:pair") > 0);
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    drop(s);
    drop(kp);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The kernel's reference counter alone: `pair`'s shared semaphore reads 1 with the kernel on
/// one of its sites (both sites then fire: they check the same counter), and `probe` on
/// another marker leaves it alone.
#[test]
fn a_kernel_ref_ctr_alone_sets_the_shared_semaphore_once() {
    let dir = match tracefs() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let tmp = std::env::temp_dir().join(format!("probe-usdt-shared-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let prog = tmp.join("usdt-demo");
    std::fs::copy(demo(), &prog).unwrap();
    let file = UsdtFile::open(&prog).unwrap();
    let pair1 = file
        .markers()
        .iter()
        .find(|m| m.name == "pair" && m.args.contains("$1"))
        .unwrap();
    let mut kp = KernelProbes {
        dir,
        group: format!("probe_usdt_sh_{}", std::process::id()),
        events: Vec::new(),
    };
    if let Err(why) = kp.add(
        "p1",
        &prog,
        pair1.file_offset,
        pair1.semaphore_offset.unwrap(),
    ) {
        eprintln!("skipped: {why}");
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    // Untraced: only the kernel's increment; the kernel's site fires, ours does not exist.
    let o = Command::new(&prog).args(["run", "200"]).output().unwrap();
    let out = text(&o.stdout);
    assert_eq!(printed(&out, "pair semaphore max:"), 1, "{out}");
    assert_eq!(printed(&out, "fired pair:"), 400, "{out}");
    // With `probe` on `tick` (its own semaphore): `pair` still 1 (ours is not on it).
    let o = trace(
        &prog.display().to_string(),
        &["usdt:D:demo:tick"],
        &[],
        &["run", "200"],
    );
    let out = text(&o.stdout);
    assert_eq!(printed(&out, "pair semaphore max:"), 1, "{out}");
    assert_eq!(printed(&out, "fired tick:"), 200, "{out}");
    let _ = std::fs::remove_dir_all(&tmp);
}
