//! What an entry probe on `labs` costs a running program, from one run and one process
//! (`agent-bench`, timing its own loop of calls through a pointer): bare, jump-patched in
//! process (the agent's counting handler, `inproc::JumpPatcher`), a kernel uprobe through
//! tracefs (as root, where tracefs has uprobe events), and `probe`'s ptrace hit.
//!
//! `cargo bench -p platform-linux --bench inproc-bench [CALLS]`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use platform_linux::agent::AgentRegion;
use platform_linux::inproc::JumpPatcher;
use platform_linux::sys::Pid;
use platform_linux::tracer::{Session, SessionOptions};

#[path = "../tests/common/programs.rs"]
mod programs;

struct Prog {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    addr: u64,
}

impl Prog {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Best ns per call over `rounds` rounds of `n` calls.
    fn run(&mut self, n: u64, rounds: u64) -> f64 {
        writeln!(self.stdin, "{n} {rounds}").unwrap();
        self.read_figure()
    }

    fn read_figure(&mut self) -> f64 {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("agent-bench said {line:?}"))
    }
}

/// Holds every thread of `pid`, runs `f`, lets them go.
fn held<T>(pid: i32, f: impl FnOnce(&[Pid]) -> T) -> T {
    platform_linux::attach::with_threads_held(Pid(pid), f).unwrap()
}

/// A kernel uprobe on `file:offset`, enabled, for the time of `f`; `None` (and why) where
/// tracefs has no uprobe events or we are not root. Also returns the kernel's hit count.
fn with_kernel_uprobe<T>(
    file: &Path,
    offset: u64,
    f: impl FnOnce() -> T,
) -> Result<(T, u64), String> {
    let dir = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("uprobe_events").exists())
        .ok_or("no tracefs with uprobe_events (mount it, as root)")?;
    let events = dir.join("uprobe_events");
    let append = |line: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&events)
            .and_then(|mut e| e.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| format!("{}: {e}", events.display()))
    };
    append(&format!(
        "p:probe_inproc_bench/labs {}:{offset:#x}",
        file.display()
    ))?;
    let enable = dir.join("events/probe_inproc_bench/labs/enable");
    std::fs::write(&enable, "1").map_err(|e| format!("{}: {e}", enable.display()))?;
    let out = f();
    let profile = std::fs::read_to_string(dir.join("uprobe_profile")).unwrap_or_default();
    let hits = profile
        .lines()
        .find(|l| l.contains("probe_inproc_bench/labs") || l.contains(" labs "))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    let _ = std::fs::write(&enable, "0");
    let _ = append("-:probe_inproc_bench/labs");
    Ok((out, hits))
}

fn main() {
    let calls: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    measure("labs", "labs", calls);
    measure("own", "own", calls);
}

/// The rows for one function: `which` is the program's argument, `name` the symbol.
fn measure(which: &str, name: &str, calls: u64) {
    let region = AgentRegion::new(1, 64).unwrap();
    let mut cmd = Command::new(programs::program("agent-bench"));
    cmd.arg(which)
        .env("LD_PRELOAD", programs::agent_so())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    region.pass_to(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = u64::from_str_radix(line.trim().strip_prefix("ready 0x").unwrap(), 16).unwrap();
    let mut p = Prog {
        child,
        stdin,
        out,
        addr,
    };
    let pid = p.pid();
    let platform_linux::inproc::MappedFunction {
        path: file,
        file_offset: offset,
        body,
    } = platform_linux::inproc::mapped_function(Pid(pid), p.addr, name).unwrap();
    // Every mechanism probes the instruction the jump goes on (after an `endbr64`).
    let at = probe_core::arch::x86_64::jump::entry_patch_offset(&body) as u64;
    let first = format!(
        "{:?}",
        iced_x86::Decoder::with_ip(64, &body[at as usize..], 0, 0)
            .decode()
            .mnemonic()
    );

    let bare = p.run(calls, 5);

    let mut patcher = held(pid, |tids| {
        let mut jp = JumpPatcher::new(Pid(pid)).unwrap();
        jp.patch(tids[0], tids, p.addr, &body, 0).unwrap();
        jp
    });
    let inproc = p.run(calls, 5);
    held(pid, |_| patcher.restore().unwrap());
    assert_eq!(region.total(0), 5 * calls, "every in-process hit counted");

    let kcalls = calls / 20;
    let kernel = with_kernel_uprobe(&file, offset + at, || p.run(kcalls, 3));

    // The ptrace hit last: the session runs the program to its end.
    let pcalls = (calls / 1000).max(1000);
    let mut s = Session::attach(Pid(pid), SessionOptions::default()).unwrap();
    s.add_spec(&format!("uprobe:{}:{name}+{at}", file.display()))
        .expect("probe the function");
    writeln!(p.stdin, "{pcalls} 3\n0 0").unwrap();
    s.run(&mut |_, _| {}).expect("run");
    let ptrace = p.read_figure();
    let counted: u64 = s.counts().into_iter().map(|(_, c)| c).sum();
    assert_eq!(counted, 3 * pcalls, "every ptrace hit counted");
    let _ = p.child.wait();

    let frida = Command::new("python3")
        .args(["-c", "import frida"])
        .output()
        .is_ok_and(|o| o.status.success());

    println!(
        "{name} through a pointer, probed at +{at} (`{first}`), best round, ns per call (one run, one process):"
    );
    println!("  bare call                                   {bare:10.2}");
    println!(
        "  in process: jump-patched, agent counts      {inproc:10.2}  (+{:.2} ns on the bare call)",
        inproc - bare
    );
    match &kernel {
        Ok((k, hits)) => println!(
            "  kernel uprobe (tracefs, {hits} hits)          {k:10.2}  (+{:.2} ns; the in-process hit is {:.1}x cheaper)",
            k - bare,
            (k - bare) / (inproc - bare)
        ),
        Err(why) => println!("  kernel uprobe: not measured ({why})"),
    }
    println!(
        "  probe's ptrace hit                          {ptrace:10.2}  (+{:.2} ns; the in-process hit is {:.0}x cheaper)",
        ptrace - bare,
        (ptrace - bare) / (inproc - bare)
    );
    if which != "labs" {
        return;
    }
    if frida {
        println!("  Frida is importable, but this benchmark has no Frida row yet");
    } else {
        println!("  Frida: not importable here (python3 -c 'import frida'), no row");
    }
}
