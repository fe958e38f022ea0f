//! The slot areas we inject, from the session's side: a thread is never resumed into an area
//! that is no longer ours, and detach unmaps each area no thread is inside.
//!
//! - **Lost areas.** A program may map over the area (`MAP_FIXED`) or unmap it, and no
//!   notification tells us. Before a hit sends a thread into its slot, the slot's bytes are
//!   compared with what the core wrote there ([`LinuxPlatform::slot_intact`], one read of
//!   `/proc/PID/mem`). When they differ the thread is put back at the probed instruction
//!   (its handlers ran: the hit counts once), the core removes every breakpoint of the space
//!   that leads into the area, original bytes restored ([`Core::on_xol_lost`]), and a
//!   warning names the probes' loss. The next slot-needing install maps a new area.
//! - **Detach.** After every probe is out and every return address restored, each space's
//!   area is unmapped with an injected `munmap`. A thread interrupted in a boosted slot is
//!   single-stepped out first; one still inside (or a thread that could not be stopped)
//!   keeps the area mapped, and the detach report says so.
//!
//! [`LinuxPlatform::slot_intact`]: super::platform::LinuxPlatform::slot_intact
//! [`Core::on_xol_lost`]: probe_core::ProbeCore::on_xol_lost

use probe_core::arch::x86_64::{X86Regs, X86_64};
use probe_core::{Arch, Registers, SpaceId, TaskId};

use core::ops::Range;

use super::session::{Run, Session};
use crate::sys::{self, Pid, WaitStatus};

/// Single steps a thread inside a slot area gets at detach to leave it (a boosted slot needs
/// two: its instruction and the jump back).
const STEPS_OUT: usize = 8;

impl Session {
    /// The slot a hit of thread `tid` was about to send it to is no longer ours: put the
    /// thread back at the probed instruction in `regs` (`before`: its registers at the trap)
    /// and stop sending any thread of `space` into the lost area.
    pub(crate) fn slot_area_lost(
        &mut self,
        tid: Pid,
        space: SpaceId,
        before: &X86Regs,
        regs: &mut X86Regs,
    ) {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return;
        };
        if !self.core.abort_single_step(&mut t.trap, regs) {
            // A boosted hit: the registers as trapped, at the instruction, counted out of
            // the slot.
            *regs = *before;
            let ip = before.ip() - <X86_64 as Arch>::BREAKPOINT.len() as u64;
            regs.set_ip(ip);
            self.core.seen_at(&mut t.trap, ip);
        }
        // Its return addresses may lead to the trampoline, which was in the area.
        if let Err(e) = self.core.restore_returns(&self.platform, space, &mut t.ts) {
            self.warn(format!("restoring return addresses of thread {tid}: {e}"));
        }
        self.drop_slot_area(space);
    }

    /// The slot area of `space` is no longer ours (its bytes or its maps line changed): no
    /// thread is sent there again. Does nothing if the area was dropped already.
    pub(crate) fn drop_slot_area(&mut self, space: SpaceId) {
        let Some(area) = self.platform.forget_xol(space) else {
            return;
        };
        let (removed, res) = self.core.on_xol_lost(&self.platform, space);
        self.stats.slot_areas_lost += 1;
        self.warn(format!(
            "process {space} replaced or unmapped the out-of-line slot area at {:#x}..{:#x} \
             (an mmap with MAP_FIXED over it?): the {removed} breakpoints there that need it \
             were removed, original bytes restored; those probes count no more hits in that \
             process",
            area.start, area.end
        ));
        if let Err(e) = res {
            let why = self.explain(e);
            self.warn(format!("removing breakpoints of process {space}: {why}"));
        }
    }

    /// Single-steps held thread `tid` out of `area` if its instruction pointer is inside (a
    /// boosted slot is its instruction and a jump back); returns whether it is still inside.
    /// A signal that arrives meanwhile is kept for after the detach, as during a single step.
    fn step_out_of(&mut self, tid: Pid, area: &Range<u64>) -> Result<bool, sys::SysError> {
        for _ in 0..STEPS_OUT {
            if !area.contains(&sys::get_regs(tid)?.rip) {
                return Ok(false);
            }
            sys::single_step(tid, 0)?;
            match sys::wait_through_stop(Some(tid))? {
                WaitStatus::Stopped(_, libc::SIGTRAP) => {}
                WaitStatus::Stopped(_, _) => {
                    let info = sys::sig_info_raw(tid)?;
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.deferred.push(info);
                    }
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(sys::SysError::NoSuchProcess {
                        op: "PTRACE_SINGLESTEP",
                        pid: tid,
                    });
                }
                _ => {}
            }
        }
        Ok(area.contains(&sys::get_regs(tid)?.rip))
    }

    /// Unmaps the slot area of every traced space, every thread held and every probe out:
    /// returns what was left mapped, and why, for the detach report.
    pub(crate) fn unmap_slot_areas(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        let mut spaces = self.platform.spaces();
        spaces.sort();
        for space in spaces {
            let Some(area) = self.platform.xol_range(space) else {
                continue;
            };
            let mut inside = Vec::new();
            let mut unknown = false;
            let mut tids: Vec<Pid> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.space == space && !t.exiting)
                .map(|(&p, t)| {
                    unknown |= !matches!(t.run, Run::Held(_));
                    p
                })
                .collect();
            tids.sort();
            for tid in tids {
                match self.step_out_of(tid, &area) {
                    Ok(true) => inside.push(tid),
                    Ok(false) | Err(sys::SysError::NoSuchProcess { .. }) => {}
                    Err(_) => unknown = true,
                }
            }
            let why = if let Some(tid) = inside.first() {
                format!("thread {tid} is inside it")
            } else if unknown {
                "not every thread of it could be stopped".to_owned()
            } else if let Some(tid) = self.held_task_of(space) {
                self.platform.set_current(Some(TaskId(tid.0 as u64)));
                match self.platform.unmap_xol(space, tid) {
                    Ok(()) => continue,
                    Err(e) => format!("munmap failed: {e}"),
                }
            } else {
                "no thread of it is held".to_owned()
            };
            left.push(format!(
                "the out-of-line slot area {:#x}..{:#x} stays mapped in process {space}: {why}",
                area.start, area.end
            ));
        }
        left
    }
}
