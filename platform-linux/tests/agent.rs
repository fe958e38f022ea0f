//! The in-process agent (`probe-agent`) loaded into a real program with `LD_PRELOAD`: it
//! takes the controller's counter region from the environment, hides it from the program,
//! and counts every hit exactly, per thread, across threads and a fork.

mod common;

use std::path::PathBuf;
use std::process::Command;

use platform_linux::agent::AgentRegion;

/// The agent's shared object, built by cargo beside the test binaries.
fn agent_so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libprobe_agent.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libprobe_agent.so not found beside {}", exe.display());
}

#[test]
fn the_agent_counts_every_hit_of_every_thread_and_of_a_forked_child() {
    let prog = common::programs::program("agent-user");
    let region = AgentRegion::new(8, 16).unwrap();
    let (threads, calls) = (4u64, 20_000u64);
    let mut cmd = Command::new(&prog);
    cmd.env("LD_PRELOAD", agent_so());
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
    cmd.env("LD_PRELOAD", agent_so());
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
        .env("LD_PRELOAD", agent_so())
        .args(["1000", "2", "100"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "agent=loaded variable=gone fd=closed"
    );
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
