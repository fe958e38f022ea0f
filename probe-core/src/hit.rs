//! The hit path: a breakpoint trap, a single-step completion, a task leaving a slot.
//!
//! address -> site -> probe in one lock-free lookup, pinned in the epoch; every consumer whose
//! filter accepts the task runs; then the instruction is resumed by emulation, in its boosted
//! slot, or by a single step in its slot. A breakpoint with no site behind it is either gone
//! (unregistered while the task trapped: restart the instruction) or not ours (deliver it as
//! the platform's ordinary trap). No allocation, no lock, no panic.

use crate::addr::{Addr, CpuId, ProbeKey, SpaceId, TaskId};
use crate::arch::{Arch, PlanKind, Registers};
use crate::consumer::{Consumer, EntryAction, HandlerAction, HitContext, RegsOf};
use crate::engine::ProbeCore;
use crate::error::Error;
use crate::platform::{AddressSpace, Platform};
use crate::sync::Ordering;
use crate::table::NIL;
use crate::task::{RetInstance, ReturnChain, StepRecord, TaskState, XolRecord};

/// Most return consumers of one probe that one hit can track.
pub(crate) const PENDING_RETURNS: usize = 8;

/// What the platform must do after a breakpoint trap. In every case but
/// [`NotOurs`](Hit::NotOurs) the core has already updated the registers; the platform writes
/// them back and resumes the task.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Hit {
    /// The instruction was emulated; resume at the registers' IP.
    Emulated,
    /// The task was sent to its boosted slot (the relocated instruction and a jump back);
    /// resume normally.
    Boosted {
        /// The slot's address.
        slot: Addr,
    },
    /// The task was sent to its slot to execute one instruction: resume with single-step
    /// enabled and report the completion with [`ProbeCore::on_single_step`].
    SingleStep {
        /// The slot's address.
        slot: Addr,
    },
    /// The probe is gone (removed while the task trapped): resume at the registers' IP, which
    /// now points at the original instruction again.
    Restart,
    /// Not our breakpoint: deliver the trap as the platform normally would (e.g. SIGTRAP).
    /// Registers are untouched.
    NotOurs,
    /// A return through the trampoline: the return handlers ran and the registers' IP is the
    /// real return address; resume.
    Returned {
        /// The real return address.
        to: Addr,
    },
    /// The task hit the return trampoline but has no tracked call (it jumped there by
    /// itself): deliver the trap as the platform normally would. Registers are untouched.
    StrayTrampoline,
    /// The probed instruction could not be resumed (e.g. emulation faulted on the stack); the
    /// registers point at the probed instruction. Deliver a fault the platform's way.
    Failed(Error),
}

/// What the platform must do after a single-step trap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Step {
    /// Ours: the registers were fixed up; resume with single-step disabled.
    Done,
    /// Not a step the core asked for (e.g. a debugger's): handle it the platform's way.
    NotOurs,
    /// The fixup failed; the registers point at the probed instruction.
    Failed(Error),
}

impl<
        P: Platform,
        C: Consumer<P>,
        const PROBES: usize,
        const CONSUMERS: usize,
        const SITES: usize,
        const SPACES: usize,
        const XOL: usize,
        const CPUS: usize,
    > ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS>
{
    /// A breakpoint trap of `task` (running in `space`, handled on `cpu`) with registers
    /// `regs` as the trap left them.
    pub fn on_breakpoint<const D: usize>(
        &self,
        p: &P,
        cpu: CpuId,
        space: SpaceId,
        task: TaskId,
        ts: &mut TaskState<P::Arch, D>,
        regs: &mut RegsOf<P>,
    ) -> Hit {
        // A trapping task is not inside a slot (slots hold no breakpoints).
        if let Some(r) = ts.xol.take() {
            self.leave_slot(&r);
        }
        let bp = <P::Arch as Arch>::breakpoint_address(regs.ip());
        let guard = match self.epochs.pin(cpu) {
            Ok(g) => g,
            Err(e) => return Hit::Failed(e),
        };
        let Some(si) = self.sites.lookup(space.0, bp.0) else {
            if let Some(sx) = self.spaces.lookup(space.0, 0) {
                if self.spaces.at(sx).val.trampoline.load(Ordering::Acquire) == bp.0 {
                    return self.on_trampoline(p, cpu, space, task, ts, regs);
                }
            }
            drop(guard);
            return self.miss(p, space, bp, regs);
        };
        let site = &self.sites.at(si).val;
        let pi = site.probe.load(Ordering::Relaxed);
        let pe = self.probes.at(pi);
        let Some(plan) = pe.val.plan.get() else {
            drop(guard);
            return self.miss(p, space, bp, regs);
        };
        let (file, offset) = pe.key();
        let key = ProbeKey::new(crate::addr::FileId(file), offset);
        let Some(mem) = p.space(space) else {
            return Hit::Failed(Error::NoSuchSpace(space));
        };

        // Handlers see the registers as at the probed instruction.
        let trap_ip = regs.ip();
        regs.set_ip(bp.0);
        let mut remove = false;
        // Return instances taken by this hit; pushed on the task's chain after the handlers.
        let mut pending: heapless::Vec<RetInstance, PENDING_RETURNS> = heapless::Vec::new();
        let sx = site.space.load(Ordering::Relaxed);
        let tramp = Addr(self.spaces.at(sx).val.trampoline.load(Ordering::Acquire));
        let room = D.saturating_sub(ts.rets.len());
        let returns = ReturnChain { rets: &ts.rets };
        let mut ci = pe.val.consumers.load(Ordering::Acquire);
        let mut n = 0;
        while ci != NIL && n < CONSUMERS {
            let slot = &self.consumers[ci as usize];
            let generation = slot.generation();
            if slot.is_live() {
                let filtered = slot.has_filter.load(Ordering::Relaxed);
                let ret = slot.opts.get().ret;
                slot.value.with(|c| {
                    let Some(c) = c else { return };
                    if filtered && !c.filter(p, space, task) {
                        return;
                    }
                    let mut ctx = HitContext {
                        platform: p,
                        cpu,
                        task,
                        space,
                        key,
                        addr: bp,
                        regs: &mut *regs,
                        returns,
                    };
                    let Some(ret) = ret else {
                        if c.handler(&mut ctx) == HandlerAction::RemoveFromSpace {
                            remove = true;
                        }
                        return;
                    };
                    // A return consumer (seed 002): take an instance, run the entry handler.
                    if tramp.0 == 0 {
                        // No trampoline in this space (its slot area could not be made).
                        slot.nmissed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if !slot.take_instance(generation, ret.maxactive) {
                        return;
                    }
                    if pending.len() >= room || pending.is_full() {
                        // The task's chain is at its depth limit.
                        slot.nmissed.fetch_add(1, Ordering::Relaxed);
                        slot.put_instance(generation);
                        return;
                    }
                    let mut inst = RetInstance {
                        consumer: ci,
                        generation,
                        key,
                        func: bp,
                        ret: Addr(0),
                        frame: 0,
                        chained: false,
                        data_len: ret.data_size as u8,
                        data: [0; crate::consumer::RET_DATA_MAX],
                    };
                    if c.entry_handler(&mut ctx, &mut inst.data[..ret.data_size])
                        == EntryAction::Decline
                    {
                        slot.put_instance(generation);
                        return;
                    }
                    let _ = pending.push(inst);
                });
            }
            ci = slot.next.load(Ordering::Acquire);
            n += 1;
        }
        if !pending.is_empty() {
            self.hijack_return(ts, regs, &mem, tramp, &mut pending);
        }
        if remove {
            let sx = site.space.load(Ordering::Relaxed);
            self.spaces
                .at(sx)
                .val
                .refilter
                .store(true, Ordering::Relaxed);
            self.pending.store(true, Ordering::Release);
        }

        match <P::Arch as Arch>::plan_kind(&plan) {
            PlanKind::Emulate => {
                let before = regs.clone();
                match <P::Arch as Arch>::emulate(&plan, bp, regs, &mem) {
                    Ok(()) => Hit::Emulated,
                    Err(e) => {
                        *regs = before;
                        Hit::Failed(Error::Memory(e))
                    }
                }
            }
            kind => {
                let slot_index = site.slot.load(Ordering::Relaxed);
                let slot = Addr(site.slot_addr.load(Ordering::Relaxed));
                if slot_index == NIL {
                    regs.set_ip(trap_ip);
                    return Hit::Failed(Error::NoXolArea(space));
                }
                let sx = site.space.load(Ordering::Relaxed);
                let mut state = <P::Arch as Arch>::StepState::default();
                let before = regs.clone();
                if let Err(e) =
                    <P::Arch as Arch>::prepare_xol(&plan, bp, slot, regs, &mut state, &mem)
                {
                    *regs = before;
                    return Hit::Failed(Error::Memory(e));
                }
                // Count the task into the slot while still pinned: a writer reusing the slot
                // waits for the grace period, then sees this count.
                self.spaces.at(sx).val.enter(slot_index);
                ts.xol = Some(XolRecord {
                    space,
                    space_index: sx,
                    slot: slot_index,
                    addr: slot,
                });
                drop(guard);
                if kind == PlanKind::SingleStep {
                    ts.step = Some(StepRecord {
                        plan,
                        insn: bp,
                        slot,
                        state,
                    });
                    Hit::SingleStep { slot }
                } else {
                    Hit::Boosted { slot }
                }
            }
        }
    }

    /// No site at `bp`: gone (restart) or not ours.
    #[cold]
    pub(crate) fn miss(&self, p: &P, space: SpaceId, bp: Addr, regs: &mut RegsOf<P>) -> Hit {
        let brk = <P::Arch as Arch>::BREAKPOINT;
        let mut cur = [0u8; 16];
        let n = brk.len().min(cur.len());
        let still_breakpoint = match p.space(space) {
            Some(mem) => match mem.read_exact(bp, &mut cur[..n]) {
                Ok(()) => &cur[..n] == brk,
                Err(_) => true,
            },
            None => true,
        };
        if still_breakpoint {
            Hit::NotOurs
        } else {
            regs.set_ip(bp.0);
            Hit::Restart
        }
    }

    /// A single-step trap of `task`. Completes the step the core started (fixing up the
    /// registers), or says it is not ours.
    pub fn on_single_step<const D: usize>(
        &self,
        p: &P,
        space: SpaceId,
        ts: &mut TaskState<P::Arch, D>,
        regs: &mut RegsOf<P>,
    ) -> Step {
        let Some(rec) = ts.step.take() else {
            return Step::NotOurs;
        };
        let res = match p.space(space) {
            Some(mem) => <P::Arch as Arch>::finish_step(
                &rec.plan, rec.insn, rec.slot, regs, &rec.state, &mem,
            )
            .map_err(Error::Memory),
            None => Err(Error::NoSuchSpace(space)),
        };
        if let Some(r) = ts.xol.take() {
            self.leave_slot(&r);
        }
        match res {
            Ok(()) => Step::Done,
            Err(e) => {
                <P::Arch as Arch>::abort_step(&rec.plan, rec.insn, rec.slot, regs, &rec.state);
                Step::Failed(e)
            }
        }
    }

    /// The single step did not complete (a signal arrived first, or the platform must deliver
    /// something else): put the task back at the probed instruction so that it traps again
    /// later. Returns whether a step was pending.
    pub fn abort_single_step<const D: usize>(
        &self,
        ts: &mut TaskState<P::Arch, D>,
        regs: &mut RegsOf<P>,
    ) -> bool {
        let Some(rec) = ts.step.take() else {
            return false;
        };
        <P::Arch as Arch>::abort_step(&rec.plan, rec.insn, rec.slot, regs, &rec.state);
        if let Some(r) = ts.xol.take() {
            self.leave_slot(&r);
        }
        true
    }

    /// The platform saw `task` with its IP at `ip` (e.g. at a context switch or any stop): if
    /// it was counted into a slot and is now outside it, it is counted out (seed 001). Cheap;
    /// call it as often as convenient.
    pub fn task_quiescent<const D: usize>(&self, ts: &mut TaskState<P::Arch, D>, ip: u64) {
        if ts.step.is_some() {
            return;
        }
        if let Some(r) = ts.xol {
            let size = <P::Arch as Arch>::SLOT_SIZE as u64;
            if ip < r.addr.0 || ip >= r.addr.0.saturating_add(size) {
                ts.xol = None;
                self.leave_slot(&r);
            }
        }
    }

    pub(crate) fn leave_slot(&self, r: &XolRecord) {
        let e = self.spaces.at(r.space_index);
        // A stale record (the space was torn down and the entry reused) is ignored.
        if e.key().0 == r.space.0 {
            e.val.leave(r.slot);
        }
    }
}
