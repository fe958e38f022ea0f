//! `probe-bench`: the cost of one ptrace stop round trip under each waiting and placement
//! strategy, a naive breakpoint hit (int3 + single-step in place), our per-hit cost through
//! the real tracer ([`Session`]) for an emulated, a boosted, a RIP-relative boosted and a
//! single-stepped first instruction, gdb's per-hit cost, and the time to put a probe on every
//! function of libc in a running process and take them out again, all from one run.
//!
//! ```text
//! cargo bench -p platform-linux --bench probe-bench -- [ROUND_TRIPS] [ret|placement]
//! ```
//!
//! With `ret`, only the return-probe figures: the cost of an entry + return probe pair per
//! call (`uretprobe:`: the entry breakpoint and the trampoline) against two bare ptrace stop
//! round trips, measured in the same run.
//!
//! The bare round trips and our hits are measured for 1, 2 and 4 tracee threads under every
//! wait strategy and placement, and the default (what `probe trace` does, run as the
//! `probe` command itself) against the best bare round trip of the same run. "Unpinned"
//! means the mask the benchmark process started with, read once before any row pinned
//! anything.
//!
//! Each figure is the fastest of five runs (the machine may be shared: other work only adds
//! time). A cargo bench target (no harness), so not part of `cargo test` and nothing a
//! `cargo build` or `cargo install` needs; the tracee programs are the C programs of
//! `platform-linux/tests/programs`, compiled on first use like the tests' (a C compiler and
//! `<sys/sdt.h>` needed).

use core::time::Duration;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use platform_linux::maps::{mappings_of_file, read_maps};
use platform_linux::mem::ProcMem;
use platform_linux::placement::CpuPlacement;
use platform_linux::resolve::Resolver;
use platform_linux::sys::{self, Options, Pid, WaitStatus};
use platform_linux::tracer::{Outcome, Session, SessionOptions};
use platform_linux::wait::{Placement, WaitStrategy};

#[path = "../tests/common/programs.rs"]
mod programs;
use programs::program;

/// The CPU mask the benchmark started with: what "unpinned" gives back.
static ORIGINAL_MASK: OnceLock<Vec<usize>> = OnceLock::new();

fn original_mask() -> &'static [usize] {
    ORIGINAL_MASK.get_or_init(sys::cpus_allowed)
}

fn unpin() {
    Placement::Free
        .pin_tracer(original_mask())
        .expect("restore the tracer's mask");
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

/// Round trips of `int3-loop N T`: each of `threads` threads traps `n` times; we wait for
/// any of them and continue it. Per round trip, timed from the first trap (which ends the
/// program's start-up) to the exit.
fn bare_round_trip(n: u64, threads: u64, strategy: WaitStrategy, placement: Placement) -> Figure {
    round_trip(n, threads, strategy, placement, false)
}

/// [`bare_round_trip`], or with `requests` also the three ptrace requests every hit of ours
/// makes between the stop and the resume (`PTRACE_GETSIGINFO`, `PTRACE_GETREGS`, a
/// `PTRACE_POKEUSER` of the IP): the floor of a hit through ptrace.
fn round_trip(
    n: u64,
    threads: u64,
    strategy: WaitStrategy,
    placement: Placement,
    requests: bool,
) -> Figure {
    let tracee_cpus = placement.pin_tracer(original_mask()).expect("pin tracer");
    let pid = spawn(
        "int3-loop",
        &[&n.to_string(), &threads.to_string()],
        tracee_cpus.as_deref(),
    );
    sys::cont(pid, 0).unwrap();
    let mut traps = 0u64;
    let mut start = (Instant::now(), sys::thread_cpu_time());
    loop {
        match strategy.wait(None).unwrap() {
            WaitStatus::Stopped(tid, libc::SIGTRAP) => {
                traps += 1;
                if traps == 1 {
                    start = (Instant::now(), sys::thread_cpu_time());
                }
                if requests {
                    let info = sys::sig_info(tid).unwrap();
                    assert_eq!(info.code, libc::SI_KERNEL);
                    let regs = sys::get_regs(tid).unwrap();
                    sys::poke_reg(tid, 16, regs.rip).unwrap();
                }
                sys::cont(tid, 0).unwrap();
            }
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, ..) if p == pid => break,
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {}
            WaitStatus::Stopped(tid, sig) => sys::cont(tid, sig).unwrap(),
            WaitStatus::Event(tid, ..) => sys::cont(tid, 0).unwrap(),
            _ => {}
        }
    }
    let wall = start.0.elapsed();
    let cpu = sys::thread_cpu_time() - start.1;
    unpin();
    assert_eq!(traps, n * threads);
    let trips = (n * threads - 1) as u32;
    Figure {
        wall: wall / trips,
        cpu: cpu / trips,
    }
}

/// Runs per figure: the machine is shared, and other work only ever adds time, so a figure
/// is the fastest of these runs (the least disturbed).
const RUNS: usize = 5;

/// The fastest of [`RUNS`] runs of [`bare_round_trip`], after a short warm-up.
fn bare_best(n: u64, threads: u64, strategy: WaitStrategy, placement: Placement) -> Figure {
    bare_round_trip(n / 10 + 2, threads, strategy, placement);
    let mut runs: Vec<Figure> = (0..RUNS)
        .map(|_| bare_round_trip(n, threads, strategy, placement))
        .collect();
    runs.sort_by_key(|f| f.wall);
    runs.swap_remove(0)
}

/// A naive probe: `int3` on `probe_target`; each hit restores the byte, single-steps the
/// original instruction in place and re-arms (two stops per hit, as gdb does).
fn naive_breakpoint(n: u64, strategy: WaitStrategy, placement: Placement) -> Figure {
    let tracee_cpus = placement.pin_tracer(original_mask()).expect("pin tracer");
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
    unpin();
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
/// dynamic linking and exit cancel out). Fastest runs.
fn our_per_hit(kind: &str, n: u64, strategy: WaitStrategy) -> Duration {
    best_per_hit(n, |calls| traced_run(kind, calls, strategy))
}

/// `run(calls)` at N and 2N calls, [`RUNS`] times each: (fastest 2N run - fastest N run) / N.
fn best_per_hit(n: u64, mut run: impl FnMut(u64) -> Duration) -> Duration {
    let mut one = Duration::MAX;
    let mut two = Duration::MAX;
    for _ in 0..RUNS {
        one = one.min(run(n));
        two = two.min(run(2 * n));
    }
    two.saturating_sub(one) / n as u32
}

/// Wall time of one traced run of `workload threads T calls` (T threads calling `work`
/// `calls` times each; T = 1 is the main thread alone) through a [`Session`] with
/// `placement`.
fn traced_threads_run(
    threads: u64,
    calls: u64,
    placement: CpuPlacement,
    strategy: WaitStrategy,
) -> Duration {
    let w = program("workload");
    let args = ["threads".to_owned(), threads.to_string(), calls.to_string()];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let opts = SessionOptions {
        placement,
        strategy,
        ..SessionOptions::default()
    };
    let mut s = Session::spawn(w.as_os_str(), &args, opts).expect("spawn workload");
    s.add_spec(&format!("{}:work", w.display()))
        .expect("probe work");
    let t = Instant::now();
    let o = s.run(&mut |_, _| {}).expect("run");
    let d = t.elapsed();
    assert_eq!(o, Outcome::Exited(0));
    assert_eq!(s.counts()[0].1, calls * threads, "exact count");
    d
}

/// The `probe` binary cargo built for this benchmark.
fn probe_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_probe"))
}

/// Wall time of `probe trace uprobe:workload:work [extra] -- workload threads T calls`,
/// the whole command as a user runs it.
fn probe_command_run(threads: u64, calls: u64, extra: &[&str]) -> Duration {
    let w = program("workload");
    let t = Instant::now();
    let out = Command::new(probe_binary())
        .arg("trace")
        .arg(format!("uprobe:{}:work", w.display()))
        .args(extra)
        .arg("--")
        .arg(&w)
        .args(["threads", &threads.to_string(), &calls.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .expect("run probe");
    let d = t.elapsed();
    assert!(out.status.success(), "probe trace failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(": {}", calls * threads);
    assert!(
        text.lines()
            .any(|l| l.starts_with("@[") && l.ends_with(&want)),
        "exact count {want} in {text}"
    );
    d
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

/// Per-call cost of `specs`: runs of 2N and N calls, the difference over N (fastest runs).
fn per_call(specs: &[&str], n: u64) -> Duration {
    best_per_hit(n, |c| traced_hits_run(specs, c))
}

/// Issue 5: an entry + return probe pair per call (the entry breakpoint, which hijacks the
/// return address, and the trampoline: two stops) against two bare ptrace stop round trips
/// (`bare`, measured with the placement the default session gets: one CPU).
fn return_pair(n: u64, bare: Duration) {
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
        "return probes (default strategy and placement)", "ns/call", "vs 2 bare trips"
    );
    println!(
        "{:<48} {:>12} {:>14.2}",
        "two bare round trips (default strategy, same CPU)", two, 1.0
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

/// `probe-bench N placement`: only the single-threaded figures the default placement is
/// chosen by, three times over.
fn placement_only(n: u64, same: Placement) {
    for round in 0..3 {
        let bb = bare_best(n, 1, WaitStrategy::Block, same).wall;
        let by = bare_best(n, 1, WaitStrategy::DEFAULT, same).wall;
        let bf = bare_best(n, 1, WaitStrategy::DEFAULT, Placement::Free).wall;
        let floor = round_trip(n, 1, WaitStrategy::DEFAULT, same, true).wall;
        let hits = (n / 2).max(200);
        let sa = best_per_hit(hits, |c| {
            traced_threads_run(1, c, CpuPlacement::Auto, WaitStrategy::DEFAULT)
        });
        let sb = best_per_hit(hits, |c| {
            traced_threads_run(1, c, CpuPlacement::Auto, WaitStrategy::Block)
        });
        let so = best_per_hit(hits, |c| {
            traced_threads_run(1, c, CpuPlacement::Off, WaitStrategy::DEFAULT)
        });
        let st = best_per_hit(hits, |c| {
            traced_threads_run(1, c, CpuPlacement::TracerOnly, WaitStrategy::DEFAULT)
        });
        let mut multi = String::new();
        for t in [2, 4] {
            for (name, p) in [
                ("auto", CpuPlacement::Auto),
                ("off", CpuPlacement::Off),
                ("tracer-only", CpuPlacement::TracerOnly),
            ] {
                let d = best_per_hit(hits / t, |c| {
                    traced_threads_run(t, c, p, WaitStrategy::DEFAULT)
                }) / t as u32;
                multi += &format!(" T={t} {name} {}", d.as_nanos());
            }
        }
        let cmd = best_per_hit(hits, |c| probe_command_run(1, c, &[]));
        let best = bb.min(by).min(bf);
        println!(
            "round {round}: bare same-CPU block {} yield {} | unpinned yield {} | floor {} || \
             session auto yield {} ({:.2}) auto block {} ({:.2}) off yield {} ({:.2}) \
             tracer-only {} ({:.2}) | command {} ({:.2}) |{multi}",
            bb.as_nanos(),
            by.as_nanos(),
            bf.as_nanos(),
            floor.as_nanos(),
            sa.as_nanos(),
            ratio(sa, best),
            sb.as_nanos(),
            ratio(sb, best),
            so.as_nanos(),
            ratio(so, best),
            st.as_nanos(),
            ratio(st, best),
            cmd.as_nanos(),
            ratio(cmd, best)
        );
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_nanos() as f64 / b.as_nanos().max(1) as f64
}

fn main() {
    // Before anything pins this thread.
    let cpus = original_mask().to_vec();
    // The traced `hits` and `workload` programs inherit these and keep quiet.
    std::env::set_var("HITS_QUIET", "1");
    std::env::set_var("WORKLOAD_QUIET", "1");
    // `cargo bench` adds `--bench`: the words that are not options are ours.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: u64 = words.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = words.get(1).map(String::as_str);
    let (c0, c1) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let same = Placement::SameCpu(c0);
    if mode == Some("ret") {
        // Only the return-probe figures.
        return_pair(n, bare_best(n, 1, WaitStrategy::DEFAULT, same).wall);
        return;
    }
    if mode == Some("placement") {
        placement_only(n, same);
        return;
    }
    let spin = |us| WaitStrategy::Spin(Duration::from_micros(us));
    let spin_yield = |us| WaitStrategy::SpinYield(Duration::from_micros(us));
    let apart = Placement::SeparateCpus {
        tracer: c0,
        tracee: c1,
    };
    let strategies: [(&str, WaitStrategy); 4] = [
        ("block", WaitStrategy::Block),
        ("spin 20us", spin(20)),
        ("spin 100us", spin(100)),
        ("yield-spin 100us (default)", spin_yield(100)),
    ];
    assert_eq!(strategies[3].1, WaitStrategy::DEFAULT);
    let placements: [(&str, Placement); 4] = [
        ("unpinned", Placement::Free),
        ("same CPU", same),
        ("two CPUs", apart),
        ("tracer pinned, tracee free", Placement::TracerOnly(c0)),
    ];
    const THREADS: [u64; 3] = [1, 2, 4];
    println!("probe-bench: {n} round trips or hits per figure (over all threads), CPUs {cpus:?}");
    println!(
        "bare ptrace stop round trip: ns per trip (tracer CPU ns per trip), int3-loop with T threads"
    );
    println!(
        "{:<54} {:>18} {:>18} {:>18}",
        "strategy, placement", "T=1", "T=2", "T=4"
    );
    let mut best_bare = [Duration::MAX; 3];
    let mut default_bare = [Duration::ZERO; 3];
    for (sname, strategy) in &strategies {
        for (pname, placement) in &placements {
            let mut cells = Vec::new();
            for (i, &t) in THREADS.iter().enumerate() {
                let f = bare_best((n / t).max(100), t, *strategy, *placement);
                best_bare[i] = best_bare[i].min(f.wall);
                if *strategy == WaitStrategy::DEFAULT && *pname == "unpinned" {
                    default_bare[i] = f.wall;
                }
                cells.push(format!("{} ({})", f.wall.as_nanos(), f.cpu.as_nanos()));
            }
            println!(
                "{:<54} {:>18} {:>18} {:>18}",
                format!("{sname}, {pname}"),
                cells[0],
                cells[1],
                cells[2]
            );
        }
    }
    println!(
        "{:<54} {:>18} {:>18} {:>18}",
        "best of the rows above",
        best_bare[0].as_nanos(),
        best_bare[1].as_nanos(),
        best_bare[2].as_nanos()
    );
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
        ("block, same CPU", WaitStrategy::Block, same),
        ("yield-spin 100us, same CPU", spin_yield(100), same),
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
    let bare = best_bare[0];
    println!(
        "{:<48} {:>12} {:>10}",
        "our hit through the tracer (Session, defaults)", "ns/hit", "vs best"
    );
    println!(
        "{:<48} {:>12} {:>10.2}",
        "best bare round trip (T=1)",
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
        println!("{name:<48} {:>12} {:>10.2}", d.as_nanos(), ratio(d, bare));
    }
    println!();
    println!(
        "our hit on `work` of `workload threads T N`: ns per hit (vs the best bare round trip \
         with T threads)"
    );
    println!("{:<48} {:>16} {:>16} {:>16}", "", "T=1", "T=2", "T=4");
    let mut default_cmd = Duration::ZERO;
    type Runner<'a> = Box<dyn Fn(u64, u64) -> Duration + 'a>;
    let runners: Vec<(&str, Runner)> = vec![
        (
            "`probe trace` command, default",
            Box::new(|t, c| probe_command_run(t, c, &[])),
        ),
        (
            "`probe trace --no-cpu-placement`",
            Box::new(|t, c| probe_command_run(t, c, &["--no-cpu-placement"])),
        ),
        (
            "Session, CpuPlacement::Auto (default)",
            Box::new(|t, c| traced_threads_run(t, c, CpuPlacement::Auto, WaitStrategy::DEFAULT)),
        ),
        (
            "Session, CpuPlacement::Off",
            Box::new(|t, c| traced_threads_run(t, c, CpuPlacement::Off, WaitStrategy::DEFAULT)),
        ),
    ];
    for (ri, (name, run)) in runners.iter().enumerate() {
        let mut cells = Vec::new();
        for (i, &t) in THREADS.iter().enumerate() {
            let per_thread = (hits / t).max(200);
            let d = best_per_hit(per_thread, |c| run(t, c)) / t as u32;
            if ri == 0 && t == 1 {
                default_cmd = d;
            }
            cells.push(format!("{} ({:.2})", d.as_nanos(), ratio(d, best_bare[i])));
        }
        println!(
            "{name:<48} {:>16} {:>16} {:>16}",
            cells[0], cells[1], cells[2]
        );
    }
    println!(
        "bare round trip, default strategy, unpinned (T=1, 2, 4): {} {} {}",
        default_bare[0].as_nanos(),
        default_bare[1].as_nanos(),
        default_bare[2].as_nanos()
    );
    println!(
        "default `probe trace` run, single-threaded: {} ns per hit = {:.2}x the best bare \
         round trip of this run ({} ns)",
        default_cmd.as_nanos(),
        ratio(default_cmd, bare),
        bare.as_nanos()
    );
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
    return_pair(n, bare_best(n, 1, WaitStrategy::DEFAULT, same).wall);
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
