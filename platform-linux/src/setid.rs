//! Set-user-ID and set-group-ID programs under a tracer. The kernel does not give a traced
//! exec the privileges of the file's set-user-ID or set-group-ID bit unless the tracer could
//! trace the program with them (`LSM_UNSAFE_PTRACE` in `fs/exec.c`, `cap_bprm_creds_from_file`
//! in `security/commoncap.c`: a tracer with `CAP_SYS_PTRACE` keeps them), so `sudo`, `ping`
//! or `passwd` started under `probe` (or `strace`, or `gdb`) run with the user's own ids and
//! may fail. [`lost_privileges`] says when that happens, so the user is told once.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bit of `CAP_SYS_PTRACE` in a capability mask.
const CAP_SYS_PTRACE: u32 = 19;

/// Why `exe`, started by this process under ptrace, runs without the privileges its
/// set-user-ID or set-group-ID bit would give it; `None` when it has no such bit, the bit
/// would change nothing (the file's owner or group is already ours), or we have
/// `CAP_SYS_PTRACE`.
pub fn lost_privileges(exe: &Path) -> Option<String> {
    let meta = std::fs::metadata(exe).ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    lost(
        exe,
        meta.mode(),
        meta.uid(),
        meta.gid(),
        &Ids::parse(&status)?,
    )
}

/// Our effective ids and capabilities, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ids {
    euid: u32,
    egid: u32,
    cap_eff: u64,
}

impl Ids {
    fn parse(status: &str) -> Option<Ids> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::split_whitespace)
        };
        // `Uid:` and `Gid:` list the real, effective, saved and filesystem ids.
        let euid = field("Uid:")?.nth(1)?.parse().ok()?;
        let egid = field("Gid:")?.nth(1)?.parse().ok()?;
        let cap_eff = u64::from_str_radix(field("CapEff:")?.next()?, 16).ok()?;
        Some(Ids {
            euid,
            egid,
            cap_eff,
        })
    }
}

fn lost(exe: &Path, mode: u32, uid: u32, gid: u32, ids: &Ids) -> Option<String> {
    if ids.cap_eff & (1 << CAP_SYS_PTRACE) != 0 {
        return None;
    }
    let mut what = Vec::new();
    if mode & libc::S_ISUID != 0 && uid != ids.euid {
        what.push(format!("set-user-ID (to uid {uid})"));
    }
    if mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0 && gid != ids.egid {
        what.push(format!("set-group-ID (to gid {gid})"));
    }
    if what.is_empty() {
        return None;
    }
    Some(format!(
        "{} is {}: traced, it runs without those privileges (with uid {} and gid {}, as under \
         any tracer without CAP_SYS_PTRACE: strace, gdb) and may fail or behave differently",
        exe.display(),
        what.join(" and "),
        ids.euid,
        ids.egid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tprobe\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n\
                          CapEff:\t0000000000000000\n";

    #[test]
    fn parses_the_effective_ids_and_capabilities() {
        let ids = Ids::parse(STATUS).unwrap();
        assert_eq!(
            ids,
            Ids {
                euid: 1000,
                egid: 100,
                cap_eff: 0
            }
        );
    }

    #[test]
    fn only_a_bit_that_would_change_the_ids_is_reported() {
        let ids = Ids::parse(STATUS).unwrap();
        let p = Path::new("/usr/bin/sudo");
        let w = lost(p, 0o104755, 0, 0, &ids).unwrap();
        assert!(w.contains("set-user-ID (to uid 0)"), "{w}");
        assert!(w.contains("with uid 1000 and gid 100"), "{w}");
        // Our own file, and a plain one: nothing changes.
        assert_eq!(lost(p, 0o104755, 1000, 0, &ids), None);
        assert_eq!(lost(p, 0o100755, 0, 0, &ids), None);
        // Set-group-ID without group execute is mandatory locking, not a privilege.
        assert_eq!(lost(p, 0o102745, 1000, 0, &ids), None);
        assert!(lost(p, 0o102755, 1000, 0, &ids)
            .unwrap()
            .contains("to gid 0"));
        // A tracer with CAP_SYS_PTRACE keeps the privileges.
        let cap = Ids {
            cap_eff: 1 << CAP_SYS_PTRACE,
            ..ids
        };
        assert_eq!(lost(p, 0o104755, 0, 0, &cap), None);
    }
}
