//! System calls injected into a stopped tracee thread, and the slot page placed with them.
//!
//! To run `syscall` in the tracee we need a `syscall` instruction (`0f 05`) in its
//! executable memory. We look for those two bytes in the `[vdso]` first (every x86-64
//! process has one, and the kernel's vDSO falls back to `syscall`), then in other
//! executable mappings: the CPU decodes from wherever `rip` points, so any `0f 05` pair
//! works, even inside another instruction. Nothing is written to the tracee's code, so
//! other threads of the process may keep running meanwhile. [`inject_at_ip`] is the
//! fallback that writes `0f 05` over the current instruction; it needs every thread of
//! the process stopped.
//!
//! An injection saves the registers, points `rip` at the instruction with the call number
//! and arguments in `rax, rdi, rsi, rdx, r10, r8, r9` and `orig_rax = -1` (so the kernel's
//! syscall-restart logic leaves our registers alone), single-steps, reads `rax`, and puts
//! the saved registers back exactly. A thread stopped inside an interrupted system call
//! keeps `orig_rax` and the `-ERESTART*` code, so it restarts the call when it resumes, as
//! it would have without us. Signals that arrive during the step are re-sent with `tgkill`.
//!
//! The slot page lives within ±2 GiB of the module it serves ([`find_slot_near`]), so
//! RIP-relative operands of displaced instructions still reach their targets. It is a
//! private anonymous mapping: a forked child inherits it at the same address with the
//! same contents; exec starts a new address space without it.

use core::ops::Range;

use crate::maps::Mapping;
use crate::mem::{MemError, ProcMem};
use crate::sys::{self, Event, Pid, Regs, SysError, WaitStatus};

/// The bytes of `syscall`.
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

/// A page.
pub const PAGE: u64 = 4096;

/// The farthest a RIP-relative `disp32` reaches, less a margin for instruction length.
pub const REACH: u64 = (1 << 31) - PAGE;

/// The lowest address `mmap` may use by default (`vm.mmap_min_addr`).
pub const MIN_ADDR: u64 = 0x10000;

/// Modules ending below this are non-PIE images placed by their link address
/// ([`find_slot_near`] keeps the slot area away from them).
pub const LOW_IMAGE: u64 = 1 << 32;

/// One past the highest user address on x86-64 with 4-level paging.
pub const USER_TOP: u64 = 0x7fff_ffff_f000;

/// Why an injection failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A ptrace or wait call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Reading or writing the tracee's memory failed.
    #[error(transparent)]
    Mem(#[from] MemError),
    /// No `syscall` instruction in any executable mapping.
    #[error("no `syscall` instruction found in process {pid}'s executable memory")]
    NoSyscallInsn {
        /// The process.
        pid: Pid,
    },
    /// The tracee exited or was killed during the injection.
    #[error("thread {tid} died while running an injected system call")]
    TraceeDied {
        /// The thread.
        tid: Pid,
    },
    /// The injected system call itself failed.
    #[error("injected system call {nr} in thread {tid} failed: {errno}")]
    Syscall {
        /// The thread.
        tid: Pid,
        /// The call number.
        nr: i64,
        /// The error it returned.
        errno: sys::Errno,
    },
    /// No free range of the size asked for within reach of the module.
    #[error(
        "no free {len:#x}-byte range within ±2 GiB of {module_start:#x}..{module_end:#x} \
         in process {pid}"
    )]
    NoRoom {
        /// The process.
        pid: Pid,
        /// Start of the module.
        module_start: u64,
        /// End of the module.
        module_end: u64,
        /// The length asked for.
        len: u64,
    },
    /// The kernel ignored `MAP_FIXED_NOREPLACE` (older than 4.17) and mapped elsewhere.
    #[error("mmap at {wanted:#x} landed at {got:#x} (kernel older than 4.17?)")]
    Misplaced {
        /// Where we asked.
        wanted: u64,
        /// Where it went.
        got: u64,
    },
}

/// Finds a `syscall` instruction in the executable memory of the process behind `mem`:
/// the `[vdso]` first, then file mappings.
pub fn find_syscall_insn(mem: &ProcMem, maps: &[Mapping]) -> Option<u64> {
    let exec = maps.iter().filter(|m| m.perms.exec && m.perms.read);
    let (vdso, rest): (Vec<&Mapping>, Vec<&Mapping>) = exec.partition(|m| m.path == "[vdso]");
    let mut buf = vec![0u8; 64 * 1024];
    for m in vdso.into_iter().chain(rest) {
        let mut addr = m.range.start;
        while addr < m.range.end {
            let len = (m.range.end - addr).min(buf.len() as u64) as usize;
            let Ok(n) = mem.read_partial(addr, &mut buf[..len]) else {
                break;
            };
            if let Some(i) = buf[..n].windows(2).position(|w| w == SYSCALL_INSN) {
                return Some(addr + i as u64);
            }
            if n < 2 {
                break;
            }
            // Overlap by one byte so a pair split across chunks is still found.
            addr += n as u64 - 1;
        }
    }
    None
}

/// Runs system calls in stopped threads of one process.
#[derive(Debug)]
pub struct Injector {
    pid: Pid,
    insn: u64,
}

impl Injector {
    /// Finds a `syscall` instruction in the process behind `mem`.
    pub fn new(mem: &ProcMem, maps: &[Mapping]) -> Result<Self, RemoteError> {
        let insn =
            find_syscall_insn(mem, maps).ok_or(RemoteError::NoSyscallInsn { pid: mem.pid() })?;
        Ok(Injector {
            pid: mem.pid(),
            insn,
        })
    }

    /// The address of the `syscall` instruction used.
    pub fn insn_addr(&self) -> u64 {
        self.insn
    }

    /// Runs system call `nr` with up to six `args` in thread `tid`, which must be in a
    /// ptrace-stop of ours, not one inside a system call ([`sys::leave_syscall`] first
    /// after clone/fork/exec/exit events); returns the raw result (`-errno` on failure).
    /// The thread is left in a `SIGTRAP` signal-delivery-stop with its registers as they
    /// were. If it was in a signal-delivery-stop for signal S, S is not delivered by this
    /// call: resume the thread with S (from the final stop, the signal is injected).
    pub fn syscall(&self, tid: Pid, nr: i64, args: &[u64]) -> Result<i64, RemoteError> {
        run_syscall(self.pid, tid, self.insn, nr, args)
    }

    /// `mmap` in the tracee; returns the mapped address.
    pub fn mmap(
        &self,
        tid: Pid,
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
    ) -> Result<u64, RemoteError> {
        let nr = libc::SYS_mmap;
        let args = [addr, len, prot as u64, flags as u64, u64::MAX, 0];
        let r = self.syscall(tid, nr, &args)?;
        check_result(tid, nr, r).map(|v| v as u64)
    }

    /// `munmap` in the tracee.
    pub fn munmap(&self, tid: Pid, addr: u64, len: u64) -> Result<(), RemoteError> {
        let nr = libc::SYS_munmap;
        let r = self.syscall(tid, nr, &[addr, len])?;
        check_result(tid, nr, r).map(drop)
    }

    /// Maps `len` bytes of private anonymous memory with `prot` within ±2 GiB of
    /// `module` (see [`find_slot_near`]), without replacing anything; retries if another
    /// thread took the range meanwhile.
    pub fn map_near(
        &self,
        tid: Pid,
        module: Range<u64>,
        len: u64,
        prot: i32,
    ) -> Result<u64, RemoteError> {
        let len = len.div_ceil(PAGE) * PAGE;
        for _ in 0..4 {
            let maps = crate::maps::read_maps(self.pid)
                .map_err(|_| RemoteError::TraceeDied { tid: self.pid })?;
            let Some(at) = find_slot_near(&maps, module.clone(), len) else {
                break;
            };
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
            match self.mmap(tid, at, len, prot, flags) {
                Ok(got) if got == at => return Ok(got),
                Ok(got) => {
                    self.munmap(tid, got, len)?;
                    return Err(RemoteError::Misplaced { wanted: at, got });
                }
                Err(RemoteError::Syscall { errno, .. }) if errno.0 == libc::EEXIST => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::NoRoom {
            pid: self.pid,
            module_start: module.start,
            module_end: module.end,
            len,
        })
    }
}

fn check_result(tid: Pid, nr: i64, r: i64) -> Result<i64, RemoteError> {
    if (-4095..0).contains(&r) {
        Err(RemoteError::Syscall {
            tid,
            nr,
            errno: sys::Errno(-r as i32),
        })
    } else {
        Ok(r)
    }
}

fn run_syscall(pid: Pid, tid: Pid, insn: u64, nr: i64, args: &[u64]) -> Result<i64, RemoteError> {
    let saved = sys::get_regs(tid)?;
    let mut regs = saved;
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    regs.rax = nr as u64;
    regs.rdi = arg(0);
    regs.rsi = arg(1);
    regs.rdx = arg(2);
    regs.r10 = arg(3);
    regs.r8 = arg(4);
    regs.r9 = arg(5);
    regs.orig_rax = u64::MAX;
    regs.rip = insn;
    sys::set_regs(tid, &regs)?;
    let stepped = step_over_syscall(tid, insn);
    let deferred = match stepped {
        Ok(d) => d,
        Err(e) => {
            let _ = sys::set_regs(tid, &saved);
            return Err(e);
        }
    };
    let after = sys::get_regs(tid);
    sys::set_regs(tid, &saved)?;
    for sig in deferred {
        let _ = sys::tgkill(pid, tid, sig);
    }
    Ok(after?.rax as i64)
}

/// Single-steps `tid` until it has executed the instruction at `insn`; returns the
/// signals that arrived meanwhile (suppressed, to be re-sent). A stop signal to the tracer
/// does not cut the wait short: the thread is mid-step, with borrowed registers, until its
/// trap is reaped and they are put back.
fn step_over_syscall(tid: Pid, insn: u64) -> Result<Vec<i32>, RemoteError> {
    let mut deferred = Vec::new();
    for _ in 0..64 {
        sys::single_step(tid, 0)?;
        match sys::wait_through_stop(Some(tid))? {
            WaitStatus::Stopped(_, libc::SIGTRAP) => {
                let rip = sys::get_regs(tid)?.rip;
                if rip != insn {
                    return Ok(deferred);
                }
            }
            WaitStatus::Stopped(_, sig) => {
                // A signal came before the instruction ran (or right after it): keep it.
                let rip = sys::get_regs(tid)?.rip;
                deferred.push(sig);
                if rip != insn {
                    return Ok(deferred);
                }
            }
            WaitStatus::Event(_, _, Event::Exit)
            | WaitStatus::Exited(..)
            | WaitStatus::Signaled(..) => return Err(RemoteError::TraceeDied { tid }),
            _ => {}
        }
    }
    Err(RemoteError::TraceeDied { tid })
}

/// Like [`Injector::syscall`], but writes `syscall` over the instruction at the thread's
/// `rip` (restored afterwards). Every thread of the process must be stopped.
pub fn inject_at_ip(mem: &ProcMem, tid: Pid, nr: i64, args: &[u64]) -> Result<i64, RemoteError> {
    let rip = sys::get_regs(tid)?.rip;
    let mut orig = [0u8; 2];
    mem.read(rip, &mut orig)?;
    mem.write(rip, &SYSCALL_INSN)?;
    let r = run_syscall(mem.pid(), tid, rip, nr, args);
    mem.write(rip, &orig)?;
    r
}

/// Where to place `len` bytes (a multiple of the page size) so that every byte is within
/// ±2 GiB of every byte of `module`, in a gap of `maps` (sorted or not).
///
/// Preference: the top of the nearest gap below the module (its mapping's neighbours stay
/// untouched, and an executable's `brk` heap, which grows up from its end, is not in the
/// way); otherwise the nearest place above it, never right after `[heap]` or the module
/// itself (where `brk` grows) and never right below `[stack]`.
///
/// A module in the low 4 GiB (a non-PIE executable at 0x400000) is different: programs
/// like that map their own regions at fixed low addresses (`MAP_FIXED` below and around the
/// image; emulators and loaders do) and their heap grows from the image's end, so the area
/// goes as far above the module as reach allows, where neither happens.
pub fn find_slot_near(maps: &[Mapping], module: Range<u64>, len: u64) -> Option<u64> {
    let low_image = module.end <= LOW_IMAGE;
    let lo = module
        .end
        .saturating_sub(REACH)
        .max(MIN_ADDR)
        .div_ceil(PAGE)
        * PAGE;
    let hi = (module.start.saturating_add(REACH)).min(USER_TOP) / PAGE * PAGE;
    let mut sorted: Vec<&Mapping> = maps.iter().filter(|m| m.range.start < USER_TOP).collect();
    sorted.sort_by_key(|m| m.range.start);
    // Gaps as (start, end, previous mapping, next mapping).
    let mut gaps = Vec::new();
    let mut prev: Option<&Mapping> = None;
    let mut cursor = MIN_ADDR;
    for m in &sorted {
        if m.range.start > cursor {
            gaps.push((cursor, m.range.start, prev, Some(*m)));
        }
        cursor = cursor.max(m.range.end);
        prev = Some(m);
    }
    if cursor < USER_TOP {
        gaps.push((cursor, USER_TOP, prev, None));
    }
    let mut below: Option<u64> = None;
    let mut above: Option<u64> = None;
    for (gs, ge, p, n) in gaps {
        let (s, e) = (gs.max(lo), ge.min(hi));
        if e < s || e - s < len {
            continue;
        }
        if e <= module.start {
            if n.is_some_and(|n| n.path == "[stack]") {
                continue;
            }
            let at = e - len;
            below = Some(below.map_or(at, |b: u64| b.max(at)));
        } else if s >= module.end {
            let after_brk = p.is_some_and(|p| p.path == "[heap]" || p.range.end == module.end);
            if low_image {
                // The farthest place within reach: the top of the highest gap that fits.
                let at = e - len;
                above = Some(above.map_or(at, |a: u64| a.max(at)));
                continue;
            }
            let at = if after_brk {
                // Leave the heap its room: take the far end of the gap.
                if e - s < len + (64 << 20) {
                    continue;
                }
                e - len
            } else {
                s
            };
            above = Some(above.map_or(at, |a: u64| a.min(at)));
        }
    }
    if low_image {
        above.or(below)
    } else {
        below.or(above)
    }
}

/// Saves a thread's registers; restores them exactly on [`RegsGuard::restore`].
#[derive(Debug)]
pub struct RegsGuard {
    tid: Pid,
    regs: Regs,
}

impl RegsGuard {
    /// Saves the registers of stopped thread `tid`.
    pub fn save(tid: Pid) -> Result<Self, SysError> {
        Ok(RegsGuard {
            tid,
            regs: sys::get_regs(tid)?,
        })
    }

    /// The saved registers.
    pub fn regs(&self) -> &Regs {
        &self.regs
    }

    /// Puts the saved registers back.
    pub fn restore(self) -> Result<(), SysError> {
        sys::set_regs(self.tid, &self.regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::parse_maps;

    static MAPS: &str = "\
555555554000-555555556000 r--p 00000000 fd:01 1310803 /usr/bin/cat
555555556000-55555555a000 r-xp 00002000 fd:01 1310803 /usr/bin/cat
55555555e000-55555557f000 rw-p 00000000 00:00 0 [heap]
7ffff7d8a000-7ffff7db0000 r--p 00000000 fd:01 1316601 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7db0000-7ffff7f05000 r-xp 00026000 fd:01 1316601 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn slot_goes_just_below_the_module() {
        let maps = parse_maps(MAPS).unwrap();
        let exe = 0x5555_5555_4000..0x5555_5555_a000;
        let at = find_slot_near(&maps, exe.clone(), PAGE).unwrap();
        assert_eq!(at, 0x5555_5555_3000);
        let lib = 0x7fff_f7d8_a000..0x7fff_f7f0_5000;
        let at = find_slot_near(&maps, lib.clone(), 2 * PAGE).unwrap();
        assert_eq!(at, 0x7fff_f7d8_8000);
    }

    #[test]
    fn a_non_pie_image_gets_its_slot_area_far_above_it() {
        // A static non-PIE program: text at 0x400000, its heap after it. Not just below the
        // image (0x3ff000, where such programs map their own memory), nor next to the heap.
        let text = "\
400000-401000 r--p 00000000 fd:01 7 /static
401000-480000 r-xp 00001000 fd:01 7 /static
480000-4a0000 rw-p 00080000 fd:01 7 /static
4a0000-4c4000 rw-p 00000000 00:00 0 [heap]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]
";
        let maps = parse_maps(text).unwrap();
        let m = 0x40_0000..0x4a_0000;
        let at = find_slot_near(&maps, m.clone(), 4 * PAGE).unwrap();
        assert_eq!(at, (m.start + REACH) / PAGE * PAGE - 4 * PAGE);
        assert!(
            at + 4 * PAGE - m.start <= REACH && at >= 0x4000_0000,
            "{at:#x}"
        );
    }

    #[test]
    fn slot_is_within_reach_or_absent() {
        // A module at the bottom of memory: nothing below, so above it, not after brk.
        let text = "\
10000-20000 r-xp 00000000 fd:01 7 /a
20000-30000 rw-p 00000000 00:00 0 [heap]
30000-7fff0000 rw-p 00000000 00:00 0
";
        let maps = parse_maps(text).unwrap();
        let m = 0x10000..0x20000;
        let at = find_slot_near(&maps, m.clone(), PAGE).unwrap();
        assert!(at >= 0x7fff_0000 && at + PAGE - m.start <= REACH, "{at:#x}");
        // As far from it as reach allows: a low image's own fixed mappings and heap are
        // near it.
        assert_eq!(at, (m.start + REACH) / PAGE * PAGE - PAGE);
        // Everything within reach is taken.
        let full = "10000-200000000 r-xp 00000000 fd:01 7 /a\n";
        let maps = parse_maps(full).unwrap();
        assert_eq!(find_slot_near(&maps, 0x100_0000..0x200_0000, PAGE), None);
    }
}
