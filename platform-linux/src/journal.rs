//! What the tracer patched, for the guardian to put back if the tracer dies without a
//! detach (SIGKILL of the tracer process itself, or a crash).
//!
//! `probe trace` is two processes (see `sys::fork_guardian`): the guardian, which the user
//! started, and the tracer. Before the tracer changes a code byte or an SDT semaphore it
//! writes a record (pid, address, the bytes there, the bytes it writes) to a pipe the
//! guardian reads; removals are recorded the same way. When the pipe closes, the guardian
//! folds the records: a code range whose last write is not its first original is restored
//! (where it still holds our bytes), a semaphore gets back the sum of our changes. After a
//! clean detach every record has been undone by a later one, so folding finds nothing.
//!
//! A return address a return probe takes over (pointed at the trampoline in our slot area)
//! is recorded too, before the write: the guardian puts the original back wherever the stack
//! slot still holds ours (a slot the call has returned through since holds something else,
//! or is dead stack where the write is harmless). The guardian folds records as they come,
//! so its memory stays in proportion to the distinct addresses, not to the hits.
//!
//! Not covered: a thread stopped at a hit (or at the trampoline) at the moment the tracer
//! dies: the kernel then delivers it the breakpoint's SIGTRAP, before anyone can step in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};

use crate::sys::Pid;

static JOURNAL: OnceLock<Mutex<File>> = OnceLock::new();

/// A record kind.
const CODE: u8 = 1;
const DATA: u8 = 2;
const RET: u8 = 3;

/// Makes every later code patch and semaphore write of this process go to `pipe` first.
pub fn start(pipe: File) {
    let _ = JOURNAL.set(Mutex::new(pipe));
}

/// Whether writes are journalled.
pub(crate) fn active() -> bool {
    JOURNAL.get().is_some()
}

fn record(kind: u8, pid: Pid, addr: u64, old: &[u8], new: &[u8]) {
    let Some(j) = JOURNAL.get() else {
        return;
    };
    let len = old.len().min(new.len()).min(255);
    let mut rec = Vec::with_capacity(14 + 2 * len);
    rec.push(kind);
    rec.extend_from_slice(&pid.0.to_le_bytes());
    rec.extend_from_slice(&addr.to_le_bytes());
    rec.push(len as u8);
    rec.extend_from_slice(&old[..len]);
    rec.extend_from_slice(&new[..len]);
    if let Ok(mut f) = j.lock() {
        let _ = f.write_all(&rec);
    }
}

/// Records a code patch about to be made (`old`: the bytes there now).
pub(crate) fn record_code(pid: Pid, addr: u64, old: &[u8], new: &[u8]) {
    record(CODE, pid, addr, old, new);
}

/// Records a data write about to be made (an SDT semaphore: two bytes).
pub(crate) fn record_data(pid: Pid, addr: u64, old: &[u8], new: &[u8]) {
    record(DATA, pid, addr, old, new);
}

/// Records a return address about to be taken over (`old`: the return address there now,
/// `new`: the trampoline's).
pub(crate) fn record_return(pid: Pid, addr: u64, old: &[u8], new: &[u8]) {
    record(RET, pid, addr, old, new);
}

/// The folded journal: what a dead tracer left changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// (pid, address) → (original bytes, the bytes we left).
    pub code: BTreeMap<(i32, u64), (Vec<u8>, Vec<u8>)>,
    /// (pid, address) → the sum of our changes to the 16-bit counter there.
    pub semaphores: BTreeMap<(i32, u64), i32>,
    /// (pid, stack address) → (the original return address, the trampoline's we wrote).
    pub returns: BTreeMap<(i32, u64), (u64, u64)>,
}

/// Reads records from `pipe` until it closes (the tracer exited, however), folding them as
/// they come.
pub fn read_until_closed(mut pipe: File) -> Leftovers {
    let mut out = Leftovers::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let used = fold_into(&mut out, &pending);
                pending.drain(..used);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Folds a journal's bytes (a torn last record is ignored: it was never acted on).
pub fn fold(bytes: &[u8]) -> Leftovers {
    let mut out = Leftovers::default();
    fold_into(&mut out, bytes);
    out
}

/// Folds the whole records at the start of `bytes` into `out`; returns how many bytes they
/// took (the rest is the start of a record still to come).
fn fold_into(out: &mut Leftovers, all: &[u8]) -> usize {
    let mut bytes = all;
    while bytes.len() >= 14 {
        let kind = bytes[0];
        let pid = i32::from_le_bytes(bytes[1..5].try_into().unwrap_or_default());
        let addr = u64::from_le_bytes(bytes[5..13].try_into().unwrap_or_default());
        let len = usize::from(bytes[13]);
        let Some(rest) = bytes.get(14..14 + 2 * len) else {
            break;
        };
        let (old, new) = rest.split_at(len);
        match kind {
            CODE => {
                let e = out
                    .code
                    .entry((pid, addr))
                    .or_insert_with(|| (old.to_vec(), old.to_vec()));
                e.1 = new.to_vec();
                if e.0 == e.1 {
                    out.code.remove(&(pid, addr));
                }
            }
            DATA if len == 2 => {
                let o = i32::from(u16::from_le_bytes([old[0], old[1]]));
                let n = i32::from(u16::from_le_bytes([new[0], new[1]]));
                let d = out.semaphores.entry((pid, addr)).or_insert(0);
                *d += n - o;
                if *d == 0 {
                    out.semaphores.remove(&(pid, addr));
                }
            }
            RET if len == 8 => {
                let o = u64::from_le_bytes(old.try_into().unwrap_or_default());
                let n = u64::from_le_bytes(new.try_into().unwrap_or_default());
                let e = out.returns.entry((pid, addr)).or_insert((o, n));
                // A slot that still held ours (a call chained onto a taken-over return
                // address) keeps its first original; any other value is a new call's.
                if o != e.1 {
                    e.0 = o;
                }
                e.1 = n;
            }
            _ => {}
        }
        bytes = &bytes[14 + 2 * len..];
    }
    all.len() - bytes.len()
}

/// Puts back what `left` lists through `/proc/PID/mem`: code still holding our bytes gets
/// its original ones, semaphores lose our increments. Returns (ranges restored, problems).
pub fn restore(left: &Leftovers) -> (usize, Vec<String>) {
    let mut done = 0;
    let mut errors = Vec::new();
    let open = |pid: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
    };
    for (&(pid, addr), (orig, ours)) in &left.code {
        let Ok(mem) = open(pid) else {
            continue; // gone: nothing to restore
        };
        let mut now = vec![0u8; ours.len()];
        match mem.read_exact_at(&mut now, addr) {
            Ok(()) if now == *ours => match mem.write_all_at(orig, addr) {
                Ok(()) => done += 1,
                Err(e) => errors.push(format!("process {pid} at {addr:#x}: {e}")),
            },
            Ok(()) => {} // changed since (unmapped and reused): not ours any more
            Err(e) => errors.push(format!("process {pid} at {addr:#x}: {e}")),
        }
    }
    for (&(pid, addr), &(orig, ours)) in &left.returns {
        let Ok(mem) = open(pid) else {
            continue;
        };
        let mut now = [0u8; 8];
        match mem.read_exact_at(&mut now, addr) {
            Ok(()) if u64::from_le_bytes(now) == ours => {
                match mem.write_all_at(&orig.to_le_bytes(), addr) {
                    Ok(()) => done += 1,
                    Err(e) => errors.push(format!("return address of process {pid}: {e}")),
                }
            }
            _ => {} // returned through since, or the stack is gone
        }
    }
    for (&(pid, addr), &delta) in &left.semaphores {
        let Ok(mem) = open(pid) else {
            continue;
        };
        let mut now = [0u8; 2];
        if let Err(e) = mem.read_exact_at(&mut now, addr) {
            errors.push(format!("semaphore of process {pid} at {addr:#x}: {e}"));
            continue;
        }
        let v = (i32::from(u16::from_le_bytes(now)) - delta) as u16;
        match mem.write_all_at(&v.to_le_bytes(), addr) {
            Ok(()) => done += 1,
            Err(e) => errors.push(format!("semaphore of process {pid} at {addr:#x}: {e}")),
        }
    }
    (done, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u8, pid: i32, addr: u64, old: &[u8], new: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&pid.to_le_bytes());
        v.extend_from_slice(&addr.to_le_bytes());
        v.push(old.len() as u8);
        v.extend_from_slice(old);
        v.extend_from_slice(new);
        v
    }

    #[test]
    fn an_undone_patch_folds_away_and_a_live_one_stays() {
        let mut j = rec(CODE, 7, 0x1000, &[0x55], &[0xcc]);
        j.extend(rec(CODE, 7, 0x2000, &[0xf3], &[0xcc]));
        j.extend(rec(CODE, 7, 0x1000, &[0xcc], &[0x55]));
        j.extend(rec(DATA, 7, 0x3000, &[0, 0], &[1, 0]));
        j.extend(rec(DATA, 7, 0x3002, &[4, 0], &[5, 0]));
        j.extend(rec(DATA, 7, 0x3002, &[5, 0], &[4, 0]));
        j.extend_from_slice(&[CODE, 1, 2]); // torn
        let f = fold(&j);
        assert_eq!(f.code.len(), 1);
        assert_eq!(f.code[&(7, 0x2000)], (vec![0xf3], vec![0xcc]));
        assert_eq!(f.semaphores.len(), 1);
        assert_eq!(f.semaphores[&(7, 0x3000)], 1);
    }

    #[test]
    fn a_taken_over_return_address_keeps_its_original_and_records_fold_across_reads() {
        let t = 0x7000_u64.to_le_bytes();
        let mut j = rec(RET, 7, 0x10, &0x401000_u64.to_le_bytes(), &t);
        // Returned through, then a new call took the same slot over.
        j.extend(rec(RET, 7, 0x10, &0x402000_u64.to_le_bytes(), &t));
        // A chained call: the slot already held the trampoline.
        j.extend(rec(RET, 7, 0x20, &0x403000_u64.to_le_bytes(), &t));
        j.extend(rec(RET, 7, 0x20, &t, &t));
        let f = fold(&j);
        assert_eq!(f.returns[&(7, 0x10)], (0x402000, 0x7000));
        assert_eq!(f.returns[&(7, 0x20)], (0x403000, 0x7000));
        // Fed in pieces that cut records anywhere, the fold is the same.
        for cut in 1..j.len() {
            let mut out = Leftovers::default();
            let mut pending = j[..cut].to_vec();
            let used = fold_into(&mut out, &pending);
            pending.drain(..used);
            pending.extend_from_slice(&j[cut..]);
            let used = fold_into(&mut out, &pending);
            assert_eq!(used, pending.len());
            assert_eq!(out, f, "cut at {cut}");
        }
    }
}
