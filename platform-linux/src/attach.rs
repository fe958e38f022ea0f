//! Attaching to a running process: every thread, with `PTRACE_SEIZE`, each brought to a
//! stop where its registers and memory can be used.

use std::collections::BTreeMap;

use crate::sys::{self, Event, Options, Pid, SysError, WaitStatus};

/// A thread we hold stopped after attaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedThread {
    /// The thread.
    pub tid: Pid,
    /// A signal the thread was about to receive when it stopped: pass it to
    /// [`sys::cont`] when resuming, or it is lost.
    pub pending_signal: Option<i32>,
    /// The thread was in a group-stop (the process was stopped, state `T`, by this signal):
    /// it must stay stopped while traced (`PTRACE_LISTEN`, not `PTRACE_CONT`), and it stops
    /// again when we detach.
    pub group_stop: Option<i32>,
}

/// Whether `sig` stops a process by default (a group-stop reports it).
pub fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Brings a seized, running thread to a stop: `PTRACE_INTERRUPT`, then waits, stepping
/// out of event stops that happen first (an exec or clone in progress). `Ok(None)` means
/// the thread exited meanwhile. New tasks reported by clone/fork events are added to
/// `born` (they are auto-attached and report their own first stop).
pub fn stop_thread(tid: Pid, born: &mut Vec<Pid>) -> Result<Option<StoppedThread>, SysError> {
    sys::interrupt(tid)?;
    loop {
        match sys::wait_through_stop(Some(tid))? {
            WaitStatus::Event(_, sig, Event::Stop) => {
                return Ok(Some(StoppedThread {
                    tid,
                    pending_signal: None,
                    group_stop: is_stop_signal(sig).then_some(sig),
                }))
            }
            WaitStatus::Stopped(_, sig) => {
                return Ok(Some(StoppedThread {
                    tid,
                    pending_signal: Some(sig),
                    group_stop: None,
                }))
            }
            WaitStatus::Event(_, _, ev) => {
                if matches!(ev, Event::Clone | Event::Fork | Event::VFork) {
                    born.push(Pid(sys::event_msg(tid)? as i32));
                }
                // The interrupt was absorbed by this event stop: ask again.
                sys::interrupt(tid)?;
                sys::cont(tid, 0)?;
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return Ok(None),
            _ => sys::cont(tid, 0)?,
        }
    }
}

/// Waits for the first stop of a task auto-attached through a clone/fork event.
pub fn wait_new_task(tid: Pid) -> Result<Option<StoppedThread>, SysError> {
    let mut born = Vec::new();
    match sys::wait_through_stop(Some(tid))? {
        WaitStatus::Event(_, sig, Event::Stop) => Ok(Some(StoppedThread {
            tid,
            pending_signal: None,
            group_stop: is_stop_signal(sig).then_some(sig),
        })),
        WaitStatus::Stopped(_, sig) => Ok(Some(StoppedThread {
            tid,
            pending_signal: Some(sig),
            group_stop: None,
        })),
        WaitStatus::Exited(..) | WaitStatus::Signaled(..) => Ok(None),
        _ => stop_thread(tid, &mut born),
    }
}

/// Seizes every thread of process `pid` and stops each one; threads created while we
/// attach are caught too (rescanning `/proc/PID/task` until it holds nothing new).
/// Returns the stopped threads, the main thread first if it is alive.
pub fn attach_process(pid: Pid, options: Options) -> Result<Vec<StoppedThread>, SysError> {
    let mut held: BTreeMap<Pid, StoppedThread> = BTreeMap::new();
    let mut auto: Vec<Pid> = Vec::new();
    loop {
        let tids = sys::threads(pid)?;
        let fresh: Vec<Pid> = tids
            .into_iter()
            .filter(|t| !held.contains_key(t) && !auto.contains(t))
            .collect();
        if fresh.is_empty() && auto.iter().all(|t| held.contains_key(t)) {
            break;
        }
        for tid in fresh {
            match sys::seize(tid, options) {
                Ok(()) => {}
                // Gone between listing and seizing.
                Err(SysError::NoSuchProcess { .. }) => continue,
                Err(e) => {
                    if held.is_empty() {
                        return Err(e);
                    }
                    // Already ours (auto-attached by a clone we have not seen yet)?
                    auto.push(tid);
                    continue;
                }
            }
            if let Some(t) = stop_thread(tid, &mut auto)? {
                held.insert(tid, t);
            }
        }
        let pending: Vec<Pid> = auto
            .iter()
            .copied()
            .filter(|t| !held.contains_key(t))
            .collect();
        for tid in pending {
            match wait_new_task(tid)? {
                Some(t) => {
                    held.insert(tid, t);
                }
                None => auto.retain(|&a| a != tid),
            }
        }
    }
    let mut out: Vec<StoppedThread> = held.into_values().collect();
    out.sort_by_key(|t| (t.tid != pid, t.tid));
    Ok(out)
}

/// Detaches from stopped threads, handing each its pending signal.
pub fn detach_all(threads: &[StoppedThread]) -> Result<(), SysError> {
    let mut first_err = None;
    for t in threads {
        if let Err(e) = sys::detach(t.tid, t.pending_signal.unwrap_or(0)) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs `f` with every thread of process `pid` held in a ptrace-stop (seized as for `-p`),
/// then lets each go with its pending signal: how a code change that is more than one byte
/// (a jump patch) is made while no thread runs.
pub fn with_threads_held<T>(pid: Pid, f: impl FnOnce(&[Pid]) -> T) -> Result<T, SysError> {
    let threads = attach_process(pid, Options::ATTACHED)?;
    let tids: Vec<Pid> = threads.iter().map(|t| t.tid).collect();
    let out = f(&tids);
    detach_all(&threads)?;
    Ok(out)
}

/// Why process `pid` cannot be attached to, if one of the causes that have their own message
/// holds (others surface as the ptrace error): it does not exist, it is a zombie, a kernel
/// thread, or this `probe` (the tracer, or the guardian process that forked it).
pub fn not_attachable(pid: Pid) -> Option<NotAttachable> {
    let me = std::process::id() as i32;
    if pid.0 == me {
        return Some(NotAttachable::Ourselves);
    }
    let Some(fields) = sys::stat_fields(pid) else {
        return Some(NotAttachable::NoSuchProcess);
    };
    let state = fields.first()?;
    // Field 9 of the whole line (`flags`) is the 7th after the name.
    let flags: u64 = fields.get(6)?.parse().ok()?;
    const PF_KTHREAD: u64 = 0x0020_0000;
    if state == "Z" || state == "X" {
        return Some(NotAttachable::Zombie);
    }
    if flags & PF_KTHREAD != 0 {
        return Some(NotAttachable::KernelThread);
    }
    // The guardian: our parent, running this same executable.
    let parent = std::os::unix::process::parent_id() as i32;
    if pid.0 == parent {
        let exe = |p: i32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
        let parent_exe = exe(parent);
        if parent_exe.is_some() && parent_exe == exe(me) {
            return Some(NotAttachable::Ourselves);
        }
    }
    None
}

/// Why a process cannot be attached to (`probe trace -p PID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAttachable {
    /// No process has that id.
    #[error("no such process")]
    NoSuchProcess,
    /// It exited and its parent has not reaped it yet.
    #[error("it is a zombie (it has exited; its parent has not collected its status yet), so nothing of it runs any more")]
    Zombie,
    /// A kernel thread: no user-space program to probe.
    #[error("it is a kernel thread, which runs no user-space code; probe traces programs")]
    KernelThread,
    /// `probe` itself (the tracer or the guardian that started it).
    #[error("it is this probe itself")]
    Ourselves,
}
