//! `probe-bench`: the cost of one ptrace stop round trip under each waiting and placement
//! strategy, a naive breakpoint hit (int3 + single-step in place), our per-hit cost through
//! the real tracer ([`Session`]) for an emulated, a boosted, a RIP-relative boosted and a
//! single-stepped first instruction, gdb's per-hit cost, and the time to put a probe on every
//! function of libc in a running process and take them out again, all from one run.
//!
//! ```text
//! cargo run --release -p platform-linux --bin probe-bench -- [ROUND_TRIPS] [ret]
//! ```
//!
//! With `ret`, only the return-probe figures: the cost of an entry + return probe pair per
//! call (`uretprobe:`: the entry breakpoint and the trampoline) against two bare ptrace stop
//! round trips, measured in the same run.
//!
//! Each figure is the median of three runs. Not part of `cargo test`. The tracee programs are the C programs of
//! `platform-linux/tests/programs`, built by `build.rs`.

use core::time::Duration;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use platform_linux::maps::{mappings_of_file, read_maps};
use platform_linux::mem::ProcMem;
use platform_linux::resolve::Resolver;
use platform_linux::sys::{self, Options, Pid, WaitStatus};
use platform_linux::tracer::{Outcome, Session, SessionOptions};
use platform_linux::wait::{Placement, WaitStrategy};

fn program(name: &str) -> PathBuf {
    PathBuf::from(env!("PROBE_TEST_PROGRAMS")).join(name)
}

/// Per-round-trip wall time and tracer CPU time.
struct Figure {
    wall: Duration,
    cpu: Duration,
}

fn spawn(prog: &str, args: &[&str], cpus: Option<&[usize]>) -> Pid {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    sys::spawn_traced(program(prog).as_os_str(), &args, Options::SPAWNED, cpus)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Round trips of `int3-loop`: the tracee traps, we wait and continue it.
fn bare_round_trip(n: u64, strategy: WaitStrategy, placement: Placement) -> Figure {
    let tracee_cpus = placement.pin_tracer().expect("pin tracer");
    let pid = spawn("int3-loop", &[&(n + 1).to_string()], tracee_cpus.as_deref());
    sys::cont(pid, 0).unwrap();
    // The first trap ends the program's start-up (dynamic linking), untimed.
    let mut traps = 0u64;
    let mut start = (Instant::now(), sys::thread_cpu_time());
    loop {
        match strategy.wait(Some(pid)).unwrap() {
            WaitStatus::Stopped(_, libc::SIGTRAP) => {
                traps += 1;
                if traps == 1 {
                    start = (Instant::now(), sys::thread_cpu_time());
                }
                sys::cont(pid, 0).unwrap();
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => break,
            _ => sys::cont(pid, 0).unwrap(),
        }
    }
    let wall = start.0.elapsed();
    let cpu = sys::thread_cpu_time() - start.1;
    Placement::Free.pin_tracer().ok();
    assert_eq!(traps, n + 1);
    Figure {
        wall: wall / n as u32,
        cpu: cpu / n as u32,
    }
}

/// A naive probe: `int3` on `probe_target`; each hit restores the byte, single-steps the
/// original instruction in place and re-arms (two stops per hit, as gdb does).
fn naive_breakpoint(n: u64, strategy: WaitStrategy, placement: Placement) -> Figure {
    let tracee_cpus = placement.pin_tracer().expect("pin tracer");
    let pid = spawn("hits", &[&n.to_string()], tracee_cpus.as_deref());
    let path = program("hits");
    let probe = Resolver::new(Some(pid))
        .resolve_text(&format!("{}:probe_target", path.display()))
        .unwrap()
        .remove(0);
    let maps = read_maps(pid).unwrap();
    let addr = mappings_of_file(&maps, &probe.file)
        .iter()
        .find_map(|m| m.addr_of_offset(probe.file_offset))
        .unwrap();
    let mem = ProcMem::open(pid).unwrap();
    let mut orig = [0u8; 1];
    mem.read(addr, &mut orig).unwrap();
    mem.write(addr, &[0xcc]).unwrap();
    sys::cont(pid, 0).unwrap();
    let mut hits = 0u64;
    let mut start = (Instant::now(), sys::thread_cpu_time());
    loop {
        match strategy.wait(Some(pid)).unwrap() {
            WaitStatus::Stopped(_, libc::SIGTRAP) => {
                hits += 1;
                if hits == 1 {
                    start = (Instant::now(), sys::thread_cpu_time());
                }
                let mut regs = sys::get_regs(pid).unwrap();
                mem.write(addr, &orig).unwrap();
                regs.rip = addr;
                sys::set_regs(pid, &regs).unwrap();
                sys::single_step(pid, 0).unwrap();
                strategy.wait(Some(pid)).unwrap();
                mem.write(addr, &[0xcc]).unwrap();
                sys::cont(pid, 0).unwrap();
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => break,
            WaitStatus::Stopped(_, sig) => sys::cont(pid, sig).unwrap(),
            _ => sys::cont(pid, 0).unwrap(),
        }
    }
    let wall = start.0.elapsed();
    let cpu = sys::thread_cpu_time() - start.1;
    Placement::Free.pin_tracer().ok();
    assert_eq!(hits, n);
    let n = (n - 1) as u32;
    Figure {
        wall: wall / n,
        cpu: cpu / n,
    }
}

/// gdb's per-hit cost: a silent breakpoint that continues, timed at N and 2N calls.
fn gdb_per_hit(n: u64) -> Option<Duration> {
    let script = std::env::temp_dir().join(format!("probe-bench-{}.gdb", std::process::id()));
    std::fs::write(
        &script,
        "set pagination off\nset confirm off\nset debuginfod enabled off\n\
         break probe_target\ncommands\nsilent\ncontinue\nend\nrun\n",
    )
    .ok()?;
    let time = |calls: u64| -> Option<Duration> {
        let t = Instant::now();
        let st = Command::new("gdb")
            .args(["-batch", "-nx", "-x"])
            .arg(&script)
            .arg("--args")
            .arg(program("hits"))
            .arg(calls.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        st.success().then(|| t.elapsed())
    };
    let one = time(n)?;
    let two = time(2 * n)?;
    let _ = std::fs::remove_file(&script);
    Some(two.saturating_sub(one) / n as u32)
}

/// Wall time of one traced run of `workload one KIND calls` with a probe on `kind_KIND`
/// (from the first resume to the exit).
fn traced_run(kind: &str, calls: u64, strategy: WaitStrategy) -> Duration {
    let w = program("workload");
    let args = ["one", kind, &calls.to_string()].map(|a| a.to_owned());
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let opts = SessionOptions {
        strategy,
        ..SessionOptions::default()
    };
    let mut s = Session::spawn(w.as_os_str(), &args, opts).expect("spawn workload");
    s.add_spec(&format!("{}:kind_{kind}", w.display()))
        .expect("probe kind function");
    let t = Instant::now();
    let o = s.run(&mut |_, _| {}).expect("run");
    let d = t.elapsed();
    assert_eq!(o, Outcome::Exited(0));
    assert_eq!(s.counts()[0].1, calls, "exact count");
    d
}

/// Our per-hit cost: the difference between runs of 2N and N hits, over N (start-up,
/// dynamic linking and exit cancel out). Median of three.
fn our_per_hit(kind: &str, n: u64, strategy: WaitStrategy) -> Duration {
    let mut v: Vec<Duration> = (0..3)
        .map(|_| {
            let one = traced_run(kind, n, strategy);
            let two = traced_run(kind, 2 * n, strategy);
            two.saturating_sub(one) / n as u32
        })
        .collect();
    v.sort();
    v[1]
}

/// Attach to a sleeping process, probe every function of libc, detach: (probes, attach +
/// register time, detach time).
fn libc_wide_attach() -> (usize, Duration, Duration, Duration) {
    let mut child = Command::new(program("workload"))
        .arg("spin")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start workload spin");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let t = Instant::now();
    let mut s = Session::attach(Pid(child.id() as i32), SessionOptions::default()).unwrap();
    let attach = t.elapsed();
    let r = s.add_spec("libc:*").expect("libc:*");
    let register = t.elapsed() - attach;
    let t2 = Instant::now();
    s.detach().expect("detach");
    let detach = t2.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (r.added, attach, register, detach)
}

/// Wall time of one traced run of `hits calls` with `specs` on `probe_target` (from the
/// first resume to the exit); checks that every probe counted `calls`.
fn traced_hits_run(specs: &[&str], calls: u64) -> Duration {
    let h = program("hits");
    let args = [calls.to_string()];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut s = Session::spawn(h.as_os_str(), &args, SessionOptions::default()).expect("hits");
    for spec in specs {
        s.add_spec(&spec.replace("H:", &format!("{}:", h.display())))
            .expect("probe probe_target");
    }
    let t = Instant::now();
    let o = s.run(&mut |_, _| {}).expect("run");
    let d = t.elapsed();
    assert_eq!(o, Outcome::Exited(0));
    for (name, c) in s.counts() {
        assert_eq!(c, calls, "exact count of {name}");
    }
    d
}

/// Per-call cost of `specs`: runs of 2N and N calls, the difference over N, median of three.
fn per_call(specs: &[&str], n: u64) -> Duration {
    let mut v: Vec<Duration> = (0..3)
        .map(|_| {
            let one = traced_hits_run(specs, n);
            let two = traced_hits_run(specs, 2 * n);
            two.saturating_sub(one) / n as u32
        })
        .collect();
    v.sort();
    v[1]
}

/// Issue 5: an entry + return probe pair per call (the entry breakpoint, which hijacks the
/// return address, and the trampoline: two stops) against two bare ptrace stop round trips.
fn return_pair(n: u64) {
    bare_round_trip(n / 10 + 1, WaitStrategy::DEFAULT, Placement::Free);
    let mut bare: Vec<Figure> = (0..3)
        .map(|_| bare_round_trip(n, WaitStrategy::DEFAULT, Placement::Free))
        .collect();
    bare.sort_by_key(|f| f.wall);
    let bare = bare.swap_remove(1).wall;
    let calls = (n / 2).max(1000);
    let entry = per_call(&["uprobe:H:probe_target"], calls);
    let pair = per_call(&["uretprobe:H:probe_target"], calls);
    let both = per_call(
        &["uprobe:H:probe_target", "uretprobe:H:probe_target"],
        calls,
    );
    let two = 2 * bare.as_nanos();
    println!(
        "{:<48} {:>12} {:>14}",
        "return probes (default strategy, unpinned)", "ns/call", "vs 2 bare trips"
    );
    println!(
        "{:<48} {:>12} {:>14.2}",
        "two bare ptrace stop round trips", two, 1.0
    );
    for (name, d) in [
        ("entry probe only (one stop)", entry),
        ("uretprobe: entry + return pair (two stops)", pair),
        ("uprobe + uretprobe on one function", both),
    ] {
        println!(
            "{name:<48} {:>12} {:>14.2}",
            d.as_nanos(),
            d.as_nanos() as f64 / two as f64
        );
    }
}

fn main() {
    // The traced `hits` program inherits this and keeps quiet.
    std::env::set_var("HITS_QUIET", "1");
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    if std::env::args().nth(2).as_deref() == Some("ret") {
        // Only the return-probe figures.
        return_pair(n);
        return;
    }
    let cpus = sys::cpus_allowed();
    let (c0, c1) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let spin = |us| WaitStrategy::Spin(Duration::from_micros(us));
    let spin_yield = |us| WaitStrategy::SpinYield(Duration::from_micros(us));
    let apart = Placement::SeparateCpus {
        tracer: c0,
        tracee: c1,
    };
    let same = Placement::SameCpu(c0);
    let rows: Vec<(&str, WaitStrategy, Placement)> = vec![
        ("(a) block, unpinned", WaitStrategy::Block, Placement::Free),
        ("(b) block, same CPU", WaitStrategy::Block, same),
        ("(c) block, two CPUs", WaitStrategy::Block, apart),
        (
            "(d) spin 20us then block, unpinned",
            spin(20),
            Placement::Free,
        ),
        (
            "(e) spin 100us then block, unpinned",
            spin(100),
            Placement::Free,
        ),
        ("(f) spin 100us then block, two CPUs", spin(100), apart),
        ("(g) spin 100us then block, same CPU", spin(100), same),
        ("(h) yield-spin 100us, same CPU", spin_yield(100), same),
        (
            "(i) yield-spin 100us, unpinned",
            spin_yield(100),
            Placement::Free,
        ),
        (
            "(j) yield-spin 20us, unpinned",
            spin_yield(20),
            Placement::Free,
        ),
        ("(k) yield-spin 100us, two CPUs", spin_yield(100), apart),
    ];
    println!("probe-bench: {n} round trips per row, CPUs {cpus:?}");
    println!(
        "{:<40} {:>12} {:>14} {:>8}",
        "bare ptrace stop round trip", "ns/trip", "tracer CPU ns", "vs (a)"
    );
    let mut base = None;
    for (name, strategy, placement) in &rows {
        // Warm up, then the median of three runs.
        bare_round_trip(n / 10 + 1, *strategy, *placement);
        let mut runs: Vec<Figure> = (0..3)
            .map(|_| bare_round_trip(n, *strategy, *placement))
            .collect();
        runs.sort_by_key(|f| f.wall);
        let f = runs.swap_remove(1);
        let wall = f.wall.as_nanos() as f64;
        let b = *base.get_or_insert(wall);
        println!(
            "{name:<40} {wall:>12.0} {:>14} {:>8.2}",
            f.cpu.as_nanos(),
            wall / b
        );
    }
    println!();
    println!(
        "{:<40} {:>12} {:>14}",
        "naive breakpoint hit (2 stops)", "ns/hit", "tracer CPU ns"
    );
    let hit_rows: Vec<(&str, WaitStrategy, Placement)> = vec![
        ("block, unpinned", WaitStrategy::Block, Placement::Free),
        ("spin 100us, unpinned", spin(100), Placement::Free),
        (
            "yield-spin 100us, unpinned",
            spin_yield(100),
            Placement::Free,
        ),
        (
            "default strategy, unpinned",
            WaitStrategy::DEFAULT,
            Placement::Free,
        ),
        ("block, same CPU", WaitStrategy::Block, same),
    ];
    let hits = (n / 2).max(2);
    for (name, strategy, placement) in &hit_rows {
        let mut runs: Vec<Figure> = (0..3)
            .map(|_| naive_breakpoint(hits, *strategy, *placement))
            .collect();
        runs.sort_by_key(|f| f.wall);
        let f = runs.swap_remove(1);
        println!(
            "{name:<40} {:>12} {:>14}",
            f.wall.as_nanos(),
            f.cpu.as_nanos()
        );
    }
    println!();
    // The baseline for the ratios: the bare round trip with the default strategy, unpinned.
    bare_round_trip(n / 10 + 1, WaitStrategy::DEFAULT, Placement::Free);
    let mut bare: Vec<Figure> = (0..3)
        .map(|_| bare_round_trip(n, WaitStrategy::DEFAULT, Placement::Free))
        .collect();
    bare.sort_by_key(|f| f.wall);
    let bare = bare.swap_remove(1).wall;
    println!(
        "{:<40} {:>12} {:>8}",
        "our hit through the tracer (Session)", "ns/hit", "vs bare"
    );
    println!(
        "{:<40} {:>12} {:>8.2}",
        "bare round trip (default, unpinned)",
        bare.as_nanos(),
        1.0
    );
    let hits = (n / 2).max(1000);
    let mut ours = Vec::new();
    for (name, kind, strategy) in [
        ("emulated (endbr64)", "emulated", WaitStrategy::DEFAULT),
        (
            "boosted (lea 1(%rdi),%rax)",
            "boosted",
            WaitStrategy::DEFAULT,
        ),
        (
            "boosted rip-relative (mov x(%rip),%rax)",
            "riprel",
            WaitStrategy::DEFAULT,
        ),
        (
            "single-stepped (pushq x(%rip))",
            "step",
            WaitStrategy::DEFAULT,
        ),
        ("emulated, block strategy", "emulated", WaitStrategy::Block),
        ("boosted, block strategy", "boosted", WaitStrategy::Block),
    ] {
        let d = our_per_hit(kind, hits, strategy);
        ours.push((kind, d));
        println!(
            "{name:<40} {:>12} {:>8.2}",
            d.as_nanos(),
            d.as_nanos() as f64 / bare.as_nanos() as f64
        );
    }
    println!();
    let gdb_n = (n / 4).max(500);
    match gdb_per_hit(gdb_n) {
        Some(d) => {
            println!(
                "{:<40} {:>12}   (silent breakpoint + continue, {gdb_n} vs {} hits)",
                "gdb per hit",
                d.as_nanos(),
                2 * gdb_n
            );
            for (kind, o) in ours.iter().take(3) {
                println!(
                    "{:<40} {:>12.1}x",
                    format!("gdb / our {kind} hit"),
                    d.as_nanos() as f64 / o.as_nanos().max(1) as f64
                );
            }
        }
        None => println!("gdb per hit: gdb not found or failed"),
    }
    println!();
    return_pair(n);
    println!();
    let (count, attach, register, detach) = libc_wide_attach();
    println!(
        "every libc function on a running process: {count} probes; attach {:.1} ms, \
         register and install {:.1} ms ({:.1} us/probe), restore and detach {:.1} ms, \
         total {:.1} ms",
        attach.as_secs_f64() * 1e3,
        register.as_secs_f64() * 1e3,
        register.as_secs_f64() * 1e6 / count.max(1) as f64,
        detach.as_secs_f64() * 1e3,
        (attach + register + detach).as_secs_f64() * 1e3
    );
}
