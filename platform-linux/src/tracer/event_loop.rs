//! The event loop: what each ptrace stop means, and the core call and resumption it takes.
//!
//! - `SIGTRAP` with `si_code == SI_KERNEL`: an `int3`. The core's `on_breakpoint` decides;
//!   emulated and boosted hits write the registers back and `PTRACE_CONT` (one stop per
//!   hit); a single-step hit `PTRACE_SINGLESTEP`s and finishes in `on_single_step`; a trap
//!   that is not ours is delivered to the program unchanged.
//! - `SIGTRAP` with `TRAP_TRACE`/`TRAP_BRKPT` while a step is pending: the step finished.
//! - Any other signal-delivery-stop: passed through with the same signal. While a single
//!   step is pending, a fault raised by the stepped instruction itself aborts the step (the
//!   program sees the fault at the original instruction); any other signal is held back
//!   until the step is done and then delivered with its original `siginfo` — what the
//!   kernel's uprobes do (`uprobe_deny_signal`), so that no hit runs twice.
//! - clone, fork, vfork, exec, exit events keep the core's view of spaces and tasks exact;
//!   the dynamic linker's hook makes the loop read the maps again after the hit.

use std::time::Instant;

use probe_core::{CpuId, Hit, Registers, SpaceId, Step, TaskId};

use super::consumer::HitRecord;
use super::error::TraceError;
use super::regs::{to_core, write_changed};
use super::session::{Outcome, ProbeEntry, Run, Session, Task};
use crate::sys::{self, Event, Pid, SysError, WaitStatus};

/// `si_code` of a single-step trap.
const TRAP_TRACE: i32 = 2;
/// `si_code` of a hardware breakpoint or a step over a system call.
const TRAP_BRKPT: i32 = 1;
/// The trap flag in `eflags`: the program single-steps itself.
const EFLAGS_TF: u64 = 0x100;

const CLONE_VM: u64 = 0x100;
const CLONE_THREAD: u64 = 0x10000;

use crate::attach::is_stop_signal;

fn tid_of(t: Pid) -> TaskId {
    TaskId(t.0 as u64)
}

impl Session {
    /// The loop of [`Session::run`] and [`Session::run_for`].
    pub(crate) fn run_until(
        &mut self,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&ProbeEntry, &HitRecord),
    ) -> Result<Option<Outcome>, TraceError> {
        self.replace_threads();
        self.resume_held();
        loop {
            if let Some(o) = self.outcome {
                // The traced process is gone; its descendants are followed until they are
                // gone too (as `strace -f` does), unless told to stop following.
                if !self.tasks.is_empty() && !self.follow_descendants {
                    self.let_descendants_go()?;
                }
                if self.tasks.is_empty() {
                    for e in self.placer.restore_all() {
                        self.warn(e);
                    }
                    self.drain(sink);
                    return Ok(Some(o));
                }
            }
            if self.tasks.is_empty() {
                self.drain(sink);
                return Err(TraceError::NoTracee);
            }
            let status = match deadline {
                None => self.strategy.wait(None),
                Some(d) => loop {
                    match sys::try_wait(None) {
                        Ok(WaitStatus::StillAlive) => {}
                        other => break other,
                    }
                    if Instant::now() >= d {
                        self.drain(sink);
                        return Ok(None);
                    }
                    if let Some(sig) = sys::stop_requested() {
                        break Err(SysError::Interrupted(sig));
                    }
                    std::thread::sleep(core::time::Duration::from_micros(50));
                },
            };
            let status = match status {
                Ok(s) => s,
                Err(SysError::Interrupted(sig)) => {
                    if let Some(o) = self.outcome {
                        // Only descendants of the finished command were left.
                        self.let_descendants_go()?;
                        self.drain(sink);
                        return Ok(Some(o));
                    }
                    self.detach()?;
                    self.drain(sink);
                    return Ok(Some(Outcome::Detached(sig)));
                }
                Err(SysError::Failed { errno, .. }) if errno.0 == libc::ECHILD => {
                    // Nothing left to wait for.
                    self.tasks.clear();
                    self.drain(sink);
                    return Ok(Some(self.outcome.unwrap_or(Outcome::Detached(0))));
                }
                Err(e) => return Err(e.into()),
            };
            self.handle(status);
            self.drain(sink);
            if self
                .detach_request
                .load(core::sync::atomic::Ordering::Relaxed)
            {
                if let Some(o) = self.outcome {
                    self.let_descendants_go()?;
                    self.drain(sink);
                    return Ok(Some(o));
                }
                self.detach()?;
                self.drain(sink);
                return Ok(Some(Outcome::Detached(0)));
            }
        }
    }

    /// The traced command is gone and we stop early: its descendants still traced are
    /// detached (restored) and listed in [`Session::left_running`].
    fn let_descendants_go(&mut self) -> Result<(), TraceError> {
        let mut procs: Vec<Pid> = self.tasks.values().map(|t| t.tgid).collect();
        procs.sort();
        procs.dedup();
        self.left_running.extend(procs);
        self.detach()?;
        Ok(())
    }

    /// Resumes every held thread with its pending signal.
    fn resume_held(&mut self) {
        let mut held: Vec<(Pid, i32)> = self
            .tasks
            .iter()
            .filter_map(|(&p, t)| match t.run {
                Run::Held(s) => Some((p, s)),
                _ => None,
            })
            .collect();
        held.sort();
        for (p, s) in held {
            let stopped = self.tasks.get_mut(&p).is_some_and(|t| {
                core::mem::take(&mut t.group_stopped) && s == 0 && !self.detaching
            });
            if stopped {
                // Stopped (state T) before we came: it stays so, and keeps reporting. Still in
                // its group-stop, it listens; after a system call we injected it is in a
                // trap stop instead, and a SIGSTOP (which it cannot catch) takes it back to
                // a group-stop before it runs one instruction (the event loop listens then).
                if sys::listen(p).is_ok() {
                    if let Some(t) = self.tasks.get_mut(&p) {
                        t.run = Run::Listening;
                    }
                } else {
                    let tgid = self.tasks.get(&p).map_or(p, |t| t.tgid);
                    let _ = sys::tgkill(tgid, p, libc::SIGSTOP);
                    self.resume(p, 0);
                }
            } else {
                self.resume(p, s);
            }
        }
    }

    /// Brings every thread to a stop of ours (for detach), handling what happens meanwhile.
    pub(crate) fn stop_all(&mut self, errors: &mut Vec<String>) {
        self.detaching = true;
        let running: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.run, Run::Running | Run::Stepping | Run::Listening))
            .map(|(&p, _)| p)
            .collect();
        for tid in running {
            match sys::interrupt(tid) {
                Ok(()) | Err(SysError::NoSuchProcess { .. }) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        while self.tasks.values().any(|t| !matches!(t.run, Run::Held(_))) {
            match sys::wait_through_stop(None) {
                Ok(st) => self.handle(st),
                Err(SysError::Failed { errno, .. }) if errno.0 == libc::ECHILD => {
                    self.tasks.clear();
                    break;
                }
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
    }

    /// Handles one wait status.
    pub(crate) fn handle(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::Stopped(tid, sig) => {
                if !self.tasks.contains_key(&tid) {
                    self.orphans.insert(tid, status);
                    return;
                }
                if sig == libc::SIGTRAP {
                    self.on_sigtrap(tid);
                } else {
                    self.on_signal(tid, sig, None);
                }
            }
            WaitStatus::Event(tid, sig, ev) => {
                if !self.tasks.contains_key(&tid) {
                    self.orphans.insert(tid, status);
                    return;
                }
                self.on_event(tid, sig, ev);
                let _ = self.core.maintain(&self.platform);
            }
            WaitStatus::Exited(tid, code) => {
                self.on_gone(tid, Outcome::Exited(code));
                let _ = self.core.maintain(&self.platform);
            }
            WaitStatus::Signaled(tid, sig, _) => {
                self.on_gone(tid, Outcome::Signaled(sig));
                let _ = self.core.maintain(&self.platform);
            }
            _ => {}
        }
    }

    /// Resumes `tid` with `sig` (or holds it, while detaching).
    pub(crate) fn resume(&mut self, tid: Pid, sig: i32) {
        let detaching = self.detaching;
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if detaching {
            t.run = Run::Held(sig);
            self.platform.set_stopped(tid_of(tid), !t.exiting);
            return;
        }
        let mut sig = sig;
        if sig == 0 && !t.deferred.is_empty() {
            // A signal held back during a single step: deliver it now, exactly as it came.
            let first = t.deferred.remove(0);
            if sys::set_sig_info(tid, &first).is_ok() {
                sig = first.signo();
            }
            for extra in t.deferred.drain(..) {
                let _ = sys::tgkill(t.tgid, tid, extra.signo());
            }
        }
        t.run = Run::Running;
        self.platform.set_stopped(tid_of(tid), false);
        if let Err(e) = sys::cont(tid, sig) {
            if !matches!(e, SysError::NoSuchProcess { .. }) {
                self.warn(format!("resuming thread {tid}: {e}"));
            }
        }
    }

    fn set_regs(
        &mut self,
        tid: Pid,
        before: &probe_core::arch::x86_64::X86Regs,
        regs: &probe_core::arch::x86_64::X86Regs,
    ) -> bool {
        match write_changed(tid, before, regs) {
            Ok(()) => true,
            Err(SysError::NoSuchProcess { .. }) => false,
            Err(e) => {
                self.warn(format!("writing the registers of thread {tid}: {e}"));
                false
            }
        }
    }

    /// A thread stopped (not by its step's trap) while a single step is pending: put it back
    /// at the probed instruction.
    fn abort_step_at_stop(&mut self, tid: Pid) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if !t.trap.stepping() {
            return;
        }
        if let Ok(raw) = sys::get_regs(tid) {
            self.abort_step(tid, &raw);
        }
    }

    /// Abandons the pending single step of stopped thread `tid` (registers `raw`): it is put
    /// back at the probed instruction. Returns whether its registers could be written (false:
    /// it is gone).
    fn abort_step(&mut self, tid: Pid, raw: &sys::Regs) -> bool {
        let before = to_core(raw);
        let mut regs = before;
        let aborted = self
            .tasks
            .get_mut(&tid)
            .is_some_and(|t| self.core.abort_single_step(&mut t.trap, &mut regs));
        if aborted {
            self.stats.aborted_steps += 1;
        }
        self.set_regs(tid, &before, &regs)
    }

    /// Reports the task's IP to the core if it may be inside a slot.
    fn quiesce(&mut self, tid: Pid) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if t.trap.in_slot() {
            if let Ok(r) = sys::get_regs(tid) {
                self.core.seen_at(&mut t.trap, r.rip);
            }
        }
    }

    fn on_sigtrap(&mut self, tid: Pid) {
        if let Some(raw) = self.plainly_our_int3(tid) {
            self.on_int3(tid, Some(raw));
            return;
        }
        let info = match sys::sig_info(tid) {
            Ok(i) => i,
            Err(_) => return, // killed meanwhile: its exit is reported next
        };
        let stepping = self.tasks.get(&tid).is_some_and(|t| t.trap.stepping());
        let leaving = self.tasks.get(&tid).is_some_and(|t| t.leaving_slot);
        if leaving && info.code == TRAP_TRACE {
            self.step_out_of_slot(tid);
        } else if info.code == libc::SI_KERNEL && !stepping {
            self.on_int3(tid, None);
        } else if stepping && (info.code == TRAP_TRACE || info.code == TRAP_BRKPT) {
            self.on_step_done(tid);
        } else if info.code == TRAP_TRACE && self.swallow_slot_trap(tid) {
        } else {
            self.on_signal(tid, libc::SIGTRAP, Some(info.code));
        }
    }

    /// One single step of a thread leaving a boosted slot (see `Task::leaving_slot`) is done:
    /// step again while it is still inside, then deliver what was held back.
    fn step_out_of_slot(&mut self, tid: Pid) {
        self.quiesce(tid);
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if t.trap.in_slot() && !self.detaching {
            let _ = sys::single_step(tid, 0);
            return;
        }
        t.leaving_slot = false;
        self.resume(tid, 0);
    }

    /// Signal `sig` arrived for a thread that sits in a boosted slot: hold it back and step
    /// the thread out first. Returns whether it did. A stop signal runs no handler and is
    /// delivered as it is (and a stopped thread is not kept in our single steps), as is a
    /// signal that arrives while the thread is already stepping out (a fault of the slot's
    /// instruction).
    fn hold_until_out_of_slot(&mut self, tid: Pid, sig: i32) -> bool {
        let detaching = self.detaching;
        let Some(t) = self.tasks.get_mut(&tid) else {
            return false;
        };
        if detaching || !t.trap.in_slot() || t.tf_slot || is_stop_signal(sig) {
            return false;
        }
        if t.leaving_slot {
            t.leaving_slot = false;
            return false;
        }
        let Ok(info) = sys::sig_info_raw(tid) else {
            return false;
        };
        t.deferred.push(info);
        t.leaving_slot = true;
        t.run = Run::Stepping;
        self.stats.deferred += 1;
        self.stats.slot_exits += 1;
        let _ = sys::single_step(tid, 0);
        true
    }

    /// A program that single-steps itself runs a boosted slot: its trap flag traps after
    /// each slot instruction. Those are not its instructions: resume quietly until the trap
    /// lands outside the slot (after the jump back, or a boosted `ret`), which is the trap
    /// of its own instruction and is delivered as it is. Returns whether it swallowed one.
    fn swallow_slot_trap(&mut self, tid: Pid) -> bool {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return false;
        };
        if !t.tf_slot {
            return false;
        }
        let slot = t.trap.slot().map(|a| a.0);
        let rip = sys::get_regs(tid).map_or(0, |r| r.rip);
        match slot {
            Some(s) if (s..s + 64).contains(&rip) => {
                self.resume(tid, 0);
                true
            }
            _ => {
                t.tf_slot = false;
                false
            }
        }
    }

    /// Resumes `tid` with the single-step trap its own trap flag would have raised after the
    /// instruction we emulated or stepped for it (it is in a `SIGTRAP` stop).
    fn resume_with_step_trap(&mut self, tid: Pid, rip: u64) {
        match sys::sig_info_raw(tid) {
            Ok(mut info) => {
                info.set_trap_trace(rip);
                if sys::set_sig_info(tid, &info).is_ok() {
                    self.resume(tid, libc::SIGTRAP);
                    return;
                }
                self.resume(tid, 0);
            }
            Err(_) => self.resume(tid, 0),
        }
    }

    /// The hit path.
    /// The registers of `tid`, stopped by a SIGTRAP, if that SIGTRAP can only be the trap of
    /// one of our breakpoints, told without `PTRACE_GETSIGINFO` (one ptrace request less per
    /// hit): no single step of ours is in flight for the thread (nor a step out of a slot,
    /// nor its own trap flag in a slot, nor a signal held back), and its IP is just past a
    /// breakpoint of ours whose original instruction is longer than the `int3`: a place
    /// inside an instruction, where no code of the program stands (a slot, where a thread
    /// may also be stopped, is never at such a place: it is our area, not the program's
    /// text). Otherwise `None`, and the caller asks the kernel.
    fn plainly_our_int3(&mut self, tid: Pid) -> Option<sys::Regs> {
        let t = self.tasks.get(&tid)?;
        if t.trap.any_stepping() || t.leaving_slot || t.tf_slot || !t.deferred.is_empty() {
            return None;
        }
        let space = t.space;
        let raw = sys::get_regs(tid).ok()?;
        let site = probe_core::Addr(raw.rip.checked_sub(1)?);
        (self.core.insn_len_at(space, site)? > 1).then_some(raw)
    }

    fn on_int3(&mut self, tid: Pid, regs: Option<sys::Regs>) {
        let raw = match regs {
            Some(r) => r,
            None => match sys::get_regs(tid) {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let before = to_core(&raw);
        let mut regs = before;
        let user_tf = raw.eflags & EFLAGS_TF != 0;
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        let space = t.space;
        if self.rets.any_return {
            t.ts.make_room();
        }
        self.platform.set_current(Some(tid_of(tid)));
        let hit = self.core.on_breakpoint(
            &self.platform,
            CpuId(0),
            space,
            tid_of(tid),
            &mut t.trap,
            &mut t.ts,
            &mut regs,
        );
        self.stats.traps += 1;
        if self.shared.take_queued() {
            if self.shared.rescan_pending() {
                self.stats.dl_events += 1;
                for s in self.shared.take_rescans() {
                    self.rescan(s, tid);
                }
            }
            if self.shared.unwind_pending() {
                self.apply_unwinds();
            }
            if self.shared.ptrace_pending() {
                self.report_ptrace_calls();
            }
            if self.shared.stack_pending() {
                self.collect_stacks();
            }
        }
        if self.platform.maps_may_have_changed(space) {
            // A mapping made without the dynamic linker (a loader's mmap, an unmap): probe
            // new executable mappings of probed files now, forget removed ones.
            self.stats.map_changes += 1;
            self.rescan(space, tid);
        }
        if let Hit::Boosted { slot } | Hit::SingleStep { slot } = hit {
            // Never resume a thread into memory that is no longer ours.
            if !self.platform.slot_intact(space, slot.0) {
                self.slot_area_lost(tid, space, &before, &mut regs);
                if self.set_regs(tid, &before, &regs) {
                    self.resume(tid, 0);
                }
                return;
            }
        }
        match hit {
            Hit::Emulated | Hit::Boosted { .. } | Hit::Restart | Hit::Returned { .. } => {
                match hit {
                    Hit::Emulated => self.stats.emulated += 1,
                    Hit::Boosted { .. } => self.stats.boosted += 1,
                    Hit::Returned { .. } => self.stats.returns += 1,
                    _ => {}
                }
                if self.set_regs(tid, &before, &regs) {
                    let ran = matches!(hit, Hit::Emulated | Hit::Returned { .. });
                    if user_tf && ran && !self.detaching {
                        // The instruction "ran" (emulated, or the `ret` into the trampoline):
                        // its trap is owed.
                        self.resume_with_step_trap(tid, regs.ip());
                    } else {
                        if user_tf && matches!(hit, Hit::Boosted { .. }) {
                            if let Some(t) = self.tasks.get_mut(&tid) {
                                t.tf_slot = true;
                            }
                        }
                        self.resume(tid, 0);
                    }
                }
            }
            Hit::SingleStep { .. } => {
                self.stats.stepped += 1;
                if self.detaching {
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        self.core.abort_single_step(&mut t.trap, &mut regs);
                    }
                    if self.set_regs(tid, &before, &regs) {
                        self.resume(tid, 0);
                    }
                    return;
                }
                if self.set_regs(tid, &before, &regs) {
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.run = Run::Stepping;
                        t.tf_step = user_tf;
                    }
                    self.platform.set_stopped(tid_of(tid), false);
                    let _ = sys::single_step(tid, 0);
                }
            }
            Hit::NotOurs | Hit::StrayTrampoline => {
                self.stats.not_ours += 1;
                self.resume(tid, libc::SIGTRAP);
            }
            Hit::Failed(e) => {
                self.stats.failed += 1;
                let why = self.explain(e);
                self.warn(format!(
                    "a hit at {:#x} in thread {tid} could not be resumed ({why}); the thread \
                     gets SIGSEGV, as the instruction itself would have faulted",
                    regs.ip()
                ));
                if self.set_regs(tid, &before, &regs) {
                    self.resume(tid, libc::SIGSEGV);
                }
            }
        }
    }

    fn on_step_done(&mut self, tid: Pid) {
        let Ok(raw) = sys::get_regs(tid) else {
            return;
        };
        let before = to_core(&raw);
        let mut regs = before;
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        let space = t.space;
        match self
            .core
            .on_single_step(&self.platform, space, &mut t.trap, &mut regs)
        {
            Step::Done => {
                let owed = self
                    .tasks
                    .get_mut(&tid)
                    .is_some_and(|t| core::mem::take(&mut t.tf_step));
                if self.set_regs(tid, &before, &regs) {
                    if owed && !self.detaching {
                        self.resume_with_step_trap(tid, regs.ip());
                    } else {
                        self.resume(tid, 0);
                    }
                }
            }
            Step::NotOurs => self.resume(tid, libc::SIGTRAP),
            Step::Failed(e) => {
                self.stats.failed += 1;
                self.warn(format!(
                    "finishing a single step in thread {tid} failed ({e}); it gets SIGSEGV"
                ));
                if self.set_regs(tid, &before, &regs) {
                    self.resume(tid, libc::SIGSEGV);
                }
            }
        }
    }

    /// A signal-delivery-stop for `sig` (not one of our traps).
    fn on_signal(&mut self, tid: Pid, sig: i32, code: Option<i32>) {
        let stepping = self.tasks.get(&tid).is_some_and(|t| t.trap.stepping());
        if stepping {
            let code = match code {
                Some(c) => c,
                None => sys::sig_info(tid).map_or(0, |i| i.code),
            };
            let fault = matches!(
                sig,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
            ) && code > 0;
            let Ok(raw) = sys::get_regs(tid) else {
                return;
            };
            let at_slot = self
                .tasks
                .get(&tid)
                .and_then(|t| t.trap.slot())
                .is_some_and(|s| s.0 == raw.rip);
            if !fault && at_slot && !self.detaching {
                // Not caused by the stepped instruction, which has not run yet: hold the
                // signal back, finish the step, deliver it after.
                if let Ok(info) = sys::sig_info_raw(tid) {
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.deferred.push(info);
                    }
                    self.stats.deferred += 1;
                    let _ = sys::single_step(tid, 0);
                    return;
                }
            }
            if !self.abort_step(tid, &raw) {
                return;
            }
        } else {
            self.quiesce(tid);
            if self.hold_until_out_of_slot(tid, sig) {
                return;
            }
        }
        self.stats.signals += 1;
        self.resume(tid, sig);
    }

    fn on_event(&mut self, tid: Pid, sig: i32, ev: Event) {
        match ev {
            Event::Clone | Event::Fork | Event::VFork => self.on_new_child(tid, ev),
            Event::Exec => self.on_exec(tid),
            Event::Exit => {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.exiting = true;
                    super::returns::task_gone(&self.core, t);
                    self.core.clear_trap(&mut t.trap);
                }
                self.platform.set_stopped(tid_of(tid), false);
                self.resume(tid, 0);
            }
            Event::Stop => {
                let first = self.tasks.get(&tid).is_some_and(|t| t.run == Run::Unborn);
                if first && self.not_followed(tid, true) {
                    self.release(tid);
                } else if first {
                    self.resume(tid, 0);
                } else if is_stop_signal(sig) && !self.detaching {
                    // A group-stop: stay stopped, but keep reporting.
                    self.quiesce(tid);
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.run = Run::Listening;
                    }
                    let _ = sys::listen(tid);
                } else if self.detaching && sys::sigtrap_pending(tid).unwrap_or(false) {
                    // Interrupted just after a trap it has not reported yet: let it report
                    // the trap (it stops again before running anything of its own), so the
                    // hit or step is finished before the detach instead of killing it after.
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.run = Run::Running;
                    }
                    self.stats.late_traps += 1;
                    if sys::cont(tid, 0).is_err() {
                        self.resume(tid, 0);
                    }
                } else {
                    if self.detaching {
                        // Stopped before its single step ran: it runs the instruction from
                        // its own place again once the original bytes are back.
                        self.abort_step_at_stop(tid);
                    }
                    self.quiesce(tid);
                    self.resume(tid, 0);
                }
            }
            _ => self.resume(tid, 0),
        }
    }

    /// Whether the clone/fork/vfork the stopped `parent` is in shares its memory.
    fn shares_vm(&self, parent: Pid, ev: Event) -> (bool, bool) {
        let Ok(r) = sys::get_regs(parent) else {
            return (ev == Event::VFork, false);
        };
        let flags = match r.orig_rax as i64 {
            libc::SYS_clone => r.rdi,
            libc::SYS_clone3 => {
                let space = self.tasks.get(&parent).map(|t| t.space);
                space
                    .and_then(|s| probe_core::Platform::space(&self.platform, s))
                    .and_then(|m| {
                        let mut b = [0u8; 8];
                        probe_core::AddressSpace::read_exact(&m, probe_core::Addr(r.rdi), &mut b)
                            .ok()
                            .map(|()| u64::from_le_bytes(b))
                    })
                    .unwrap_or(0)
            }
            libc::SYS_vfork => CLONE_VM,
            _ => 0,
        };
        (flags & CLONE_VM != 0, flags & CLONE_THREAD != 0)
    }

    fn on_new_child(&mut self, parent: Pid, ev: Event) {
        let child = match sys::event_msg(parent) {
            Ok(c) => Pid(c as i32),
            Err(_) => return,
        };
        let (vm, thread) = self.shares_vm(parent, ev);
        let Some(p) = self.tasks.get(&parent) else {
            return;
        };
        let (ptgid, pspace) = (p.tgid, p.space);
        let (tgid, space) = if thread {
            (ptgid, pspace)
        } else if vm {
            (child, pspace)
        } else {
            (child, SpaceId(child.0 as u64))
        };
        let mut task = Task::new(tgid, space, Run::Unborn, self.rets.max_depth);
        self.platform.add_task(tid_of(child), space, false);
        if !vm {
            match self.platform.fork_space(pspace, space, child) {
                Ok(()) => {
                    if let Err(e) = self.core.on_fork(&self.platform, pspace, space) {
                        if !self.note_lost_in_fork(pspace, space, e) {
                            let why = self.explain(e);
                            self.warn(format!("following fork of process {child}: {why}"));
                        }
                    }
                    if let Some(p) = self.tasks.get(&parent) {
                        task.ts.reserve(p.ts.len());
                        self.core.on_task_fork(&p.ts, &mut task.ts);
                    }
                }
                Err(e) => self.warn(format!("following fork of process {child}: {e}")),
            }
        } else if !thread {
            // A vfork child runs on its parent's stack and returns through the same hijacked
            // return address (glibc's vfork keeps it in a register across the system call):
            // it needs the parent's instances too. They are dropped at its exec or exit.
            if let Some(p) = self.tasks.get(&parent) {
                task.ts.reserve(p.ts.len());
                self.core.on_task_fork(&p.ts, &mut task.ts);
            }
        }
        self.tasks.insert(child, task);
        self.placer.on_clone(parent, child);
        if !self.detaching {
            self.replace_threads();
        }
        if let Some(st) = self.orphans.remove(&child) {
            // Its first stop came before our event: handle it now.
            self.handle(st);
        }
        self.resume(parent, 0);
    }

    fn on_exec(&mut self, tid: Pid) {
        let former = sys::event_msg(tid).map_or(tid, |f| Pid(f as i32));
        if former != tid {
            // A non-leader thread exec'd: it takes the leader's id; the old leader is gone.
            if let Some(mut old) = self.tasks.remove(&tid) {
                super::returns::task_gone(&self.core, &mut old);
                self.core.clear_trap(&mut old.trap);
            }
            if let Some(t) = self.tasks.remove(&former) {
                self.tasks.insert(tid, t);
            }
            self.placer.on_rename(former, tid);
            self.platform.remove_task(tid_of(former));
        }
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let (tgid, old_space) = (t.tgid, t.space);
        // Every other thread of the process is gone.
        let others: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(&p, t)| p != tid && t.tgid == tgid && t.space == old_space)
            .map(|(&p, _)| p)
            .collect();
        for p in others {
            if let Some(mut o) = self.tasks.remove(&p) {
                super::returns::task_gone(&self.core, &mut o);
                self.core.clear_trap(&mut o.trap);
            }
            self.placer.forget(p);
            self.platform.remove_task(tid_of(p));
        }
        if !self.detaching {
            self.replace_threads();
        }
        if self.not_followed(tid, false) {
            // A vfork child of the traced process (`--no-follow`) runs a program of its own:
            // let it go before the program runs (its new memory holds nothing of ours).
            self.release(tid);
            return;
        }
        if !self.setid_warned {
            let exe = std::fs::read_link(format!("/proc/{tid}/exe"));
            if let Some(w) = exe.ok().and_then(|e| crate::setid::lost_privileges(&e)) {
                self.setid_warned = true;
                self.warn(w);
            }
        }
        // Out of the execve call, to a stop where registers may be used.
        if sys::leave_syscall(tid).is_err() {
            return;
        }
        let new_space = SpaceId(tid.0 as u64);
        if let Some(t) = self.tasks.get_mut(&tid) {
            if old_space == new_space {
                self.core.on_exec(&self.platform, old_space, &mut t.ts);
                self.core.clear_trap(&mut t.trap);
            } else {
                // A vfork child leaves its parent's space, which lives on.
                super::returns::task_gone(&self.core, t);
                self.core.clear_trap(&mut t.trap);
            }
            t.space = new_space;
            t.tgid = tid;
        }
        if old_space == new_space {
            self.platform.remove_space(old_space);
        }
        self.platform.add_task(tid_of(tid), new_space, true);
        match self.platform.add_space(new_space, tid) {
            Ok(()) => {
                if let Err(e) = self.setup_space(new_space, tid) {
                    self.warn(format!("after exec in process {tid}: {e}"));
                }
            }
            Err(e) => self.warn(format!("after exec in process {tid}: {e}")),
        }
        self.resume(tid, 0);
    }

    /// With `--no-follow`, whether `tid` is a process other than the traced one, to be let go:
    /// at its first stop (`first`) one with a space of its own (a fork child), at its exec
    /// any (a vfork child, which ran in its parent's space until then).
    fn not_followed(&self, tid: Pid, first: bool) -> bool {
        let Some(t) = self.tasks.get(&tid) else {
            return false;
        };
        let root = self.tasks.get(&self.root).map_or(self.root, |r| r.tgid);
        self.no_follow
            && !self.detaching
            && t.tgid != root
            && (!first || t.space == SpaceId(t.tgid.0 as u64))
    }

    /// Lets process `tid` (one thread, stopped) go untraced, with nothing of ours left in
    /// it: its inherited hijacked return addresses and breakpoints are put back in its own
    /// space (a fork child's copy; after an exec there is nothing left), its CPU mask too.
    fn release(&mut self, tid: Pid) {
        let Some(mut t) = self.tasks.remove(&tid) else {
            return;
        };
        let own =
            t.space == SpaceId(tid.0 as u64) && !self.tasks.values().any(|o| o.space == t.space);
        let mut errors = Vec::new();
        if own {
            if let Err(e) = self
                .core
                .restore_returns(&self.platform, t.space, &mut t.ts)
            {
                errors.push(format!("restoring return addresses: {e}"));
            }
            if let Err(e) = self.core.detach_space(&self.platform, t.space) {
                errors.push(format!("taking the breakpoints out: {e}"));
            }
            // The slot area it inherited goes too (it has not run: no thread is inside).
            if let Some(area) = self.platform.xol_range(t.space) {
                let inside = sys::get_regs(tid).map_or(true, |r| area.contains(&r.rip));
                self.platform.set_current(Some(tid_of(tid)));
                let r = if inside {
                    Err("the thread is inside it".to_owned())
                } else {
                    self.platform
                        .unmap_xol(t.space, tid)
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = r {
                    errors.push(format!(
                        "the out-of-line slot area {:#x}..{:#x} stays mapped: {e}",
                        area.start, area.end
                    ));
                }
            }
        } else {
            super::returns::task_gone(&self.core, &mut t);
        }
        self.core.clear_trap(&mut t.trap);
        if let Err(e) = self.placer.release(tid) {
            errors.push(e);
        }
        self.platform.remove_task(tid_of(tid));
        if own {
            self.platform.remove_space(t.space);
        }
        let sig = match t.run {
            Run::Held(s) => s,
            _ => 0,
        };
        if let Err(e) = sys::detach(tid, sig) {
            errors.push(format!("detaching: {e}"));
        }
        for held in t.deferred.drain(..) {
            let _ = sys::tgkill(t.tgid, tid, held.signo());
        }
        for e in errors {
            self.warn(format!("letting process {tid} go (--no-follow): {e}"));
        }
        self.released.push(tid);
        if !self.detaching {
            self.replace_threads();
        }
    }

    fn on_gone(&mut self, tid: Pid, how: Outcome) {
        self.orphans.remove(&tid);
        self.placer.forget(tid);
        if let Some(mut t) = self.tasks.remove(&tid) {
            super::returns::task_gone(&self.core, &mut t);
            self.core.clear_trap(&mut t.trap);
            self.platform.remove_task(tid_of(tid));
            if !self.detaching && self.outcome.is_none() && tid != self.root {
                self.replace_threads();
            }
            let space = t.space;
            if !self.tasks.values().any(|o| o.space == space) {
                self.core.on_space_exit(&self.platform, space);
                self.platform.remove_space(space);
            }
        }
        if tid == self.root {
            self.outcome = Some(how);
        }
    }
}
