//! The in-process agent (`probe-agent`) loaded into a real program with `LD_PRELOAD`: it
//! takes the controller's counter region from the environment, hides it from the program,
//! and counts every hit exactly, per thread, across threads and a fork.

mod common;

use std::process::Command;

use platform_linux::agent::AgentRegion;

#[test]
fn the_agent_counts_every_hit_of_every_thread_and_of_a_forked_child() {
    let prog = common::programs::program("agent-user");
    let region = AgentRegion::new(8, 16).unwrap();
    let (threads, calls) = (4u64, 20_000u64);
    let mut cmd = Command::new(&prog);
    cmd.env("LD_PRELOAD", common::programs::agent_so());
    region.pass_to(&mut cmd);
    // The descriptor number the child gets is the region's; the program checks it is closed.
    let out = cmd
        .arg(region_fd(&cmd))
        .arg(threads.to_string())
        .arg(calls.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "agent=loaded variable=gone fd=closed");
    // Worker t counts probe t, (t + 1) * calls times; probe 0 also gets the main thread's
    // calls before and after the fork and the child's.
    for t in 0..threads {
        let extra = if t == 0 { 3 * calls } else { 0 };
        assert_eq!(region.total(t as u32), (t + 1) * calls + extra, "probe {t}");
    }
    assert_eq!(region.total(threads as u32), 0);
    // Four workers, the main thread and the child's thread: each its own block.
    assert_eq!(region.threads_seen(), threads as u32 + 2);
}

#[test]
fn threads_past_the_region_share_a_block_and_lose_nothing() {
    let prog = common::programs::program("agent-user");
    let region = AgentRegion::new(8, 2).unwrap();
    let mut cmd = Command::new(&prog);
    cmd.env("LD_PRELOAD", common::programs::agent_so());
    region.pass_to(&mut cmd);
    let out = cmd
        .arg(region_fd(&cmd))
        .args(["6", "5000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    for t in 0..6u64 {
        let extra = if t == 0 { 3 * 5000 } else { 0 };
        assert_eq!(region.total(t as u32), (t + 1) * 5000 + extra, "probe {t}");
    }
}

#[test]
fn without_a_region_the_agent_counts_nothing_and_the_program_runs() {
    let prog = common::programs::program("agent-user");
    let out = Command::new(&prog)
        .env("LD_PRELOAD", common::programs::agent_so())
        .args(["1000", "2", "100"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "agent=loaded variable=gone fd=closed"
    );
}

#[test]
fn a_signal_handler_hitting_a_probe_on_the_interrupted_thread_loses_no_count() {
    let prog = common::programs::program("agent-signals");
    let region = AgentRegion::new(1, 4).unwrap();
    let calls = 20_000_000u64;
    let mut cmd = Command::new(&prog);
    cmd.env("LD_PRELOAD", common::programs::agent_so());
    region.pass_to(&mut cmd);
    let out = cmd
        .args([calls.to_string(), "20000".into()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = stdout
        .trim()
        .strip_prefix("sent ")
        .unwrap()
        .parse()
        .unwrap();
    // However many signals landed before the worker finished, each handler's hit counts.
    assert!(sent > 0, "{stdout}");
    assert_eq!(region.total(0), calls + sent);
}

/// The descriptor `pass_to` named in the command's environment.
fn region_fd(cmd: &Command) -> String {
    cmd.get_envs()
        .find(|(k, _)| *k == platform_linux::agent::FD_VARIABLE)
        .and_then(|(_, v)| v)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Holds every thread of `pid`, runs `f` with them, lets them go.
fn held<T>(pid: i32, f: impl FnOnce(&[platform_linux::sys::Pid]) -> T) -> T {
    platform_linux::attach::with_threads_held(platform_linux::sys::Pid(pid), f).unwrap()
}

/// `agent-phases` started with the agent and `region`, at its "ready" line: `labs`'s
/// address, mapped bytes and first 16 bytes as they were.
struct Phases {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
    pid: i32,
    addr: u64,
    body: Vec<u8>,
    before: Vec<u8>,
    mem: platform_linux::mem::ProcMem,
}

impl Phases {
    fn start(region: &AgentRegion, threads: u64, calls: u64) -> Phases {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = Command::new(common::programs::program("agent-phases"));
        cmd.env("LD_PRELOAD", common::programs::agent_so())
            .args([threads.to_string(), calls.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        region.pass_to(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let stdin = child.stdin.take().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = u64::from_str_radix(line.trim().strip_prefix("ready 0x").unwrap(), 16).unwrap();
        let body =
            platform_linux::inproc::mapped_function(platform_linux::sys::Pid(pid), addr, "labs")
                .unwrap()
                .body;
        let mem = platform_linux::mem::ProcMem::open(platform_linux::sys::Pid(pid)).unwrap();
        let mut p = Phases {
            child,
            stdin,
            out,
            pid,
            addr,
            body,
            before: Vec::new(),
            mem,
        };
        p.before = p.entry();
        p
    }

    /// The first 16 bytes of `labs` now.
    fn entry(&self) -> Vec<u8> {
        let mut now = vec![0u8; 16];
        self.mem.read(self.addr, &mut now).unwrap();
        now
    }

    /// Lets the program on to its next point; returns what it printed there.
    fn next(&mut self) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin).unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        if line.is_empty() {
            panic!("the program died: {:?}", self.child.wait());
        }
        line.trim().to_owned()
    }
}

#[test]
fn a_running_program_jump_patched_by_the_controller_counts_in_process_exactly() {
    use platform_linux::inproc::{InProcError, JumpPatcher};
    use platform_linux::sys::{self, Pid};
    let region = AgentRegion::new(4, 16).unwrap();
    let (threads, calls) = (4u64, 30_000u64);
    let mut ph = Phases::start(&region, threads, calls);
    let (pid, addr) = (ph.pid, ph.addr);
    let body = ph.body.clone();
    let mut patcher = held(pid, |tids| {
        let mut p = JumpPatcher::new(Pid(pid)).unwrap();
        // A thread held inside the bytes the jump displaces would resume mid-jump: refused
        // (the thread's IP moved there for the check, then put back).
        let jp = probe_core::arch::x86_64::jump::jump_patch(
            &body,
            probe_core::arch::x86_64::jump::entry_patch_offset(&body),
        )
        .unwrap();
        let saved = sys::get_regs(tids[1]).unwrap();
        let mut inside = saved;
        inside.rip = addr + jp.at as u64 + 1;
        sys::set_regs(tids[1], &inside).unwrap();
        let refused = p.patch(tids[0], tids, addr, &body, 2);
        sys::set_regs(tids[1], &saved).unwrap();
        assert!(
            matches!(refused, Err(InProcError::ThreadInside { tid, .. }) if tid == tids[1]),
            "{refused:?}"
        );
        p.patch(tids[0], tids, addr, &body, 2).unwrap();
        assert!(matches!(
            p.patch(tids[0], tids, addr, &body, 2),
            Err(InProcError::AlreadyPatched { .. })
        ));
        p
    });
    assert_ne!(ph.entry(), ph.before, "the entry carries the jump");
    assert_eq!(ph.next(), "counted");
    assert_eq!(
        region.total(2),
        threads * calls,
        "every patched call counted once"
    );
    assert_eq!(region.threads_seen(), threads as u32);

    let restored = held(pid, |_| patcher.restore().unwrap());
    assert_eq!(restored, 1);
    assert_eq!(ph.entry(), ph.before, "the entry's bytes are back");
    assert_eq!(
        ph.next(),
        "done 0",
        "labs gave the right results throughout"
    );
    assert!(ph.child.wait().unwrap().success());
    assert_eq!(
        region.total(2),
        threads * calls,
        "nothing counted after the restore"
    );
}

#[test]
fn a_dead_controllers_jump_patch_is_undone_from_the_journal() {
    use platform_linux::inproc::JumpPatcher;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    // The journal the guardian reads: a pipe; this test binary's patches go there.
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and ours.
    let (mut rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    platform_linux::journal::start(wr);
    let region = AgentRegion::new(4, 16).unwrap();
    let mut ph = Phases::start(&region, 2, 1000);
    let (pid, addr) = (ph.pid, ph.addr);
    let body = ph.body.clone();
    let mut patcher = held(pid, |tids| {
        let mut p = JumpPatcher::new(platform_linux::sys::Pid(pid)).unwrap();
        p.patch(tids[0], tids, addr, &body, 1).unwrap();
        p
    });
    // The controller "dies" here: what the guardian does with the journal so far.
    let mut journal = vec![0u8; 1 << 16];
    let n = rd.read(&mut journal).unwrap();
    let mut left = platform_linux::journal::fold(&journal[..n]);
    // Only this test's process: the other tests of this binary patch theirs meanwhile, and
    // their patches reach the same journal.
    left.code.retain(|(p, _), _| *p == pid);
    left.semaphores.clear();
    left.returns.clear();
    assert_eq!(
        left.code.len(),
        1,
        "one jump left in process {pid}: {:?}",
        left.code
    );
    let (restored, errors) = platform_linux::journal::restore(&left);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(restored >= 1);
    assert_eq!(ph.entry(), ph.before, "the guardian put the entry back");
    assert_eq!(ph.next(), "counted");
    assert_eq!(region.total(1), 0, "no jump left to count through");
    // A restore after the guardian's finds its jump gone and leaves the bytes alone.
    assert_eq!(held(pid, |_| patcher.restore().unwrap()), 0);
    assert_eq!(ph.next(), "done 0");
    assert!(ph.child.wait().unwrap().success());
}

#[test]
fn records_reach_the_controller_in_order_while_it_drains_and_the_rest_are_counted_lost() {
    use platform_linux::agent::AgentRecords;
    use std::collections::HashMap;
    let prog = common::programs::program("agent-records");
    let records = AgentRecords::new(16).unwrap();
    let (threads, calls) = (3u64, 2_000_000u64);
    let mut cmd = Command::new(&prog);
    cmd.env("LD_PRELOAD", common::programs::agent_so())
        .args([threads.to_string(), calls.to_string(), "2000".into()])
        .stdout(std::process::Stdio::piped());
    records.pass_to(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    // Per ring (by tid): the next sequence number; per (tid, probe): the last word 0 seen.
    let mut next_seq: HashMap<u32, u64> = HashMap::new();
    let mut last: HashMap<(u32, u32), u64> = HashMap::new();
    let mut got: HashMap<u32, u64> = HashMap::new();
    let mut take = |seq: u64, r: probe_agent::ring::Record| {
        let want = next_seq.entry(r.tid).or_insert(0);
        assert_eq!(
            seq, *want,
            "ring of thread {} skipped or repeated a record",
            r.tid
        );
        *want += 1;
        assert!(
            r.probe < threads as u32 || r.probe == 100,
            "a torn record: {r:?}"
        );
        if r.probe != 100 {
            assert_eq!(r.words[1], u64::from(r.probe), "a torn record: {r:?}");
        }
        if let Some(prev) = last.insert((r.tid, r.probe), r.words[0]) {
            assert!(
                r.words[0] > prev,
                "records of one thread out of order: {r:?}"
            );
        }
        *got.entry(r.probe).or_insert(0) += 1;
    };
    // Drain while the program runs, then once more after it exits.
    let status = loop {
        records.drain(&mut take);
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::yield_now();
    };
    records.drain(&mut take);
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let sent: u64 = out.trim().strip_prefix("sent ").unwrap().parse().unwrap();
    let received: u64 = got.values().sum();
    assert_eq!(
        received + records.lost(),
        threads * calls + sent,
        "every record received or counted lost ({got:?}, lost {})",
        records.lost()
    );
    eprintln!(
        "records: {received} received, {} lost, {sent} from signal handlers",
        records.lost()
    );
    assert!(received > 0);
}
