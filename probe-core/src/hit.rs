//! The hit path: a breakpoint trap, a single-step completion, a task leaving a slot.
//!
//! address -> site -> probe in one lock-free lookup, pinned in the epoch; every consumer whose
//! filter accepts the task runs; then the instruction is resumed by emulation, in its boosted
//! slot, or by a single step in its slot. A breakpoint with no site behind it is either gone
//! (unregistered while the task trapped: restart the instruction) or not ours (deliver it as
//! the platform's ordinary trap). No allocation, no lock, no panic.

use crate::addr::{Addr, CpuId, ProbeKey, SpaceId, TaskId};
use crate::arch::{Arch, PlanKind, Registers};
use crate::consumer::{Chain, Consumer, EntryAction, HandlerAction, HitContext, RegsOf};
use crate::engine::ProbeCore;
use crate::error::Error;
use crate::platform::{AddressSpace, Platform};
use crate::sync::Ordering;
use crate::table::NIL;
use crate::task::{RetInstance, ReturnChain, TaskReturns};
use crate::trap::{StepRecord, TrapState, XolRecord};

/// Most return consumers of one probe that one hit can track.
pub(crate) const PENDING_RETURNS: usize = crate::task::MAX_RETURNS_PER_HIT;

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
        L: lock_api::RawMutex,
    > ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS, L>
{
    /// A breakpoint trap of `task` (running in `space`, handled on `cpu`) with registers
    /// `regs` as the trap left them. `trap` is the state of the execution context that took
    /// the trap (per CPU in a kernel, per thread under ptrace), `ts` the task's.
    #[allow(clippy::too_many_arguments)]
    pub fn on_breakpoint<const N: usize, T: TaskReturns + ?Sized>(
        &self,
        p: &P,
        cpu: CpuId,
        space: SpaceId,
        task: TaskId,
        trap: &mut TrapState<P::Arch, N>,
        ts: &mut T,
        regs: &mut RegsOf<P>,
    ) -> Hit {
        let bp = p.breakpoint_address(regs.ip());
        // A trap while this level's single step is in flight is a reentry (see `trap.rs`);
        // otherwise a recorded boosted slot was left (the context traps elsewhere).
        let reentry = trap.top().step.is_some();
        if !reentry {
            if let Some(r) = trap.top_mut().xol.take() {
                self.leave_slot(&r);
            }
        }
        let guard = match self.epochs.pin(cpu) {
            Ok(g) => g,
            Err(e) => return Self::failed(regs, bp, e),
        };
        let changes = self.site_changes.load(Ordering::Acquire);
        let Some(si) = self.sites.lookup(space.0, bp.0) else {
            if let Some(sx) = self.spaces.lookup(space.0, 0) {
                if self.spaces.at(sx).val.trampoline.load(Ordering::Acquire) == bp.0 {
                    return self.on_trampoline(p, cpu, space, task, ts, regs);
                }
            }
            drop(guard);
            return self.miss(p, space, bp, regs, changes);
        };
        let site = &self.sites.at(si).val;
        let pi = site.probe.load(Ordering::Relaxed);
        let pe = self.probes.at(pi);
        let Some(plan) = pe.val.plan.get() else {
            drop(guard);
            return self.miss(p, space, bp, regs, changes);
        };
        let Some(mem) = p.space(space) else {
            return Self::failed(regs, bp, Error::NoSuchSpace(space));
        };
        if reentry {
            if let Err(e) = trap.push_reentry() {
                pe.val.nmissed.fetch_add(1, Ordering::Relaxed);
                return Self::failed(regs, bp, e);
            }
            pe.val.nmissed.fetch_add(1, Ordering::Relaxed);
        }

        // Handlers see the registers as at the probed instruction.
        regs.set_ip(bp.0);
        let mut remove = false;
        // Return instances taken by this hit; pushed on the task's chain after the handlers.
        let mut pending: heapless::Vec<RetInstance, PENDING_RETURNS> = heapless::Vec::new();
        let sx = site.space.load(Ordering::Relaxed);
        let tramp = Addr(self.spaces.at(sx).val.trampoline.load(Ordering::Acquire));
        if !reentry {
            let (file, offset) = pe.key();
            let key = ProbeKey::new(crate::addr::FileId(file), offset);
            remove = self.run_handlers(
                p,
                HitArgs {
                    cpu,
                    space,
                    task,
                    key,
                    bp,
                    tramp,
                    room: ts.room(),
                },
                pe.val.consumers.load(Ordering::Acquire),
                ts.calls(),
                regs,
                &mut pending,
            );
        }
        // Only what the hit will undo on failure: the return address, if it was hijacked.
        let hijacked = if pending.is_empty() {
            None
        } else {
            self.hijack_return(ts, regs, &mem, tramp, &mut pending)
        };
        if remove {
            self.spaces
                .at(sx)
                .val
                .refilter
                .store(true, Ordering::Relaxed);
            self.pending.store(true, Ordering::Release);
        }

        let before = regs.clone();
        let res = match <P::Arch as Arch>::plan_kind(&plan) {
            PlanKind::Emulate => <P::Arch as Arch>::emulate(&plan, bp, regs, &mem)
                .map(|()| Hit::Emulated)
                .map_err(Error::Memory),
            kind => {
                let slot_index = site.slot.load(Ordering::Relaxed);
                let slot = Addr(site.slot_addr.load(Ordering::Relaxed));
                let mut state = <P::Arch as Arch>::StepState::default();
                if slot_index == NIL {
                    Err(Error::NoXolArea(space))
                } else {
                    <P::Arch as Arch>::prepare_xol(&plan, bp, slot, regs, &mut state, &mem)
                        .map_err(Error::Memory)
                        .map(|()| {
                            let sp = &self.spaces.at(sx).val;
                            // Count the context into the slot while still pinned: a writer
                            // reusing the slot waits for the grace period, then sees this.
                            sp.xol.enter(slot_index);
                            let frame = trap.top_mut();
                            frame.xol = Some(XolRecord {
                                space,
                                space_index: sx,
                                space_gen: sp.generation(),
                                slot: slot_index,
                                addr: slot,
                            });
                            if kind == PlanKind::SingleStep {
                                frame.step = Some(StepRecord {
                                    plan,
                                    insn: bp,
                                    slot,
                                    state,
                                });
                                Hit::SingleStep { slot }
                            } else {
                                Hit::Boosted { slot }
                            }
                        })
                }
            }
        };
        drop(guard);
        match res {
            Ok(h) => {
                // A reentered hit whose instruction is already done needs no frame.
                if reentry && trap.top().is_idle() {
                    trap.pop();
                }
                h
            }
            Err(e) => {
                *regs = before;
                if let Some(h) = hijacked {
                    self.unhijack_return(ts, &mem, h, tramp);
                }
                if reentry {
                    trap.pop();
                }
                Self::failed(regs, bp, e)
            }
        }
    }

    /// `Hit::Failed(e)`, with the registers at the probed instruction.
    #[cold]
    fn failed(regs: &mut RegsOf<P>, bp: Addr, e: Error) -> Hit {
        regs.set_ip(bp.0);
        Hit::Failed(e)
    }

    /// Run every live consumer of the chain starting at `head` whose filter accepts the task.
    /// Return consumers take an instance and run their entry handler; the instances they
    /// keep go to `pending`. Returns whether some handler asked to be removed from the space.
    #[allow(clippy::too_many_arguments)]
    fn run_handlers(
        &self,
        p: &P,
        a: HitArgs,
        head: u32,
        rets: &[RetInstance],
        regs: &mut RegsOf<P>,
        pending: &mut heapless::Vec<RetInstance, PENDING_RETURNS>,
    ) -> bool {
        let mut remove = false;
        let returns = ReturnChain { rets };
        for (ci, slot) in Chain::new(&self.consumers, head) {
            let generation = slot.generation();
            if slot.is_live() {
                let filtered = slot.has_filter.load(Ordering::Relaxed);
                let ret = slot.opts.get().ret;
                slot.value.with(|c| {
                    let Some(c) = c else { return };
                    if filtered && !c.filter(p, a.space, a.task) {
                        return;
                    }
                    let mut ctx = HitContext {
                        platform: p,
                        cpu: a.cpu,
                        task: a.task,
                        space: a.space,
                        key: a.key,
                        addr: a.bp,
                        regs: &mut *regs,
                        returns,
                    };
                    let Some(ret) = ret else {
                        if c.handler(&mut ctx) == HandlerAction::RemoveFromSpace {
                            remove = true;
                        }
                        return;
                    };
                    // A return consumer (kretprobes' entry side): take an instance, run the
                    // entry handler, which may decline.
                    if a.tramp.0 == 0 {
                        // No trampoline in this space (its slot area could not be made).
                        slot.rets.nmissed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if !slot.rets.take_instance(generation, ret.maxactive) {
                        return;
                    }
                    if pending.len() >= a.room || pending.is_full() {
                        // The task's chain is at its depth limit (or this probe has more
                        // return consumers than one hit tracks).
                        slot.rets.nmissed.fetch_add(1, Ordering::Relaxed);
                        if pending.len() >= a.room {
                            slot.rets.nested.fetch_add(1, Ordering::Relaxed);
                        }
                        slot.rets.put_instance(generation);
                        return;
                    }
                    let mut inst = RetInstance {
                        consumer: ci,
                        generation,
                        key: a.key,
                        func: a.bp,
                        ret: Addr(0),
                        frame: 0,
                        chained: false,
                        data_len: ret.data_size as u8,
                        data: [0; crate::task::RET_DATA_MAX],
                    };
                    if c.entry_handler(&mut ctx, &mut inst.data[..ret.data_size])
                        == EntryAction::Decline
                    {
                        slot.rets.put_instance(generation);
                        return;
                    }
                    let _ = pending.push(inst);
                });
            }
        }
        remove
    }

    /// No site at `bp`: gone (restart) or not ours. `changes` is the site-change count read
    /// before the lookup that missed: if a site was published or removed since (a probe
    /// reinstalled at this very address between the lookup and the text read, say), the
    /// breakpoint read may be ours, so the instruction is restarted to trap again.
    #[cold]
    pub(crate) fn miss(
        &self,
        p: &P,
        space: SpaceId,
        bp: Addr,
        regs: &mut RegsOf<P>,
        changes: u64,
    ) -> Hit {
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
        if still_breakpoint && self.site_changes.load(Ordering::Acquire) == changes {
            Hit::NotOurs
        } else {
            regs.set_ip(bp.0);
            Hit::Restart
        }
    }

    /// A single-step trap of the context whose state is `trap`. Completes the innermost step
    /// the core started (fixing up the registers), or says it is not ours. Reentry frames
    /// above that step whose instruction was boosted are done by now and are popped.
    pub fn on_single_step<const N: usize>(
        &self,
        p: &P,
        space: SpaceId,
        trap: &mut TrapState<P::Arch, N>,
        regs: &mut RegsOf<P>,
    ) -> Step {
        let Some(rec) = self.take_step(trap) else {
            return Step::NotOurs;
        };
        let res = match p.space(space) {
            Some(mem) => <P::Arch as Arch>::finish_step(
                &rec.plan, rec.insn, rec.slot, regs, &rec.state, &mem,
            )
            .map_err(Error::Memory),
            None => Err(Error::NoSuchSpace(space)),
        };
        match res {
            Ok(()) => Step::Done,
            Err(e) => {
                <P::Arch as Arch>::abort_step(&rec.plan, rec.insn, rec.slot, regs, &rec.state);
                Step::Failed(e)
            }
        }
    }

    /// The single step did not complete (a signal arrived first, or the platform must deliver
    /// something else): put the context back at the probed instruction so that it traps again
    /// later. Returns whether a step was pending.
    pub fn abort_single_step<const N: usize>(
        &self,
        trap: &mut TrapState<P::Arch, N>,
        regs: &mut RegsOf<P>,
    ) -> bool {
        let Some(rec) = self.take_step(trap) else {
            return false;
        };
        <P::Arch as Arch>::abort_step(&rec.plan, rec.insn, rec.slot, regs, &rec.state);
        true
    }

    /// Take the innermost pending step: pop finished reentry frames above it, count the
    /// context out of the step's slot, and pop the step's frame if it was a reentry. A step
    /// that is not the current level's (below a nested context's level) is not taken, and
    /// nothing changes then.
    fn take_step<const N: usize>(
        &self,
        trap: &mut TrapState<P::Arch, N>,
    ) -> Option<StepRecord<P::Arch>> {
        // Frames above the innermost step may only be finished reentries.
        let mut above = 0;
        for f in trap.above.iter().rev() {
            if f.step.is_some() {
                break;
            }
            if !f.reentry {
                return None;
            }
            above += 1;
        }
        if above == trap.above.len() && trap.base.step.is_none() {
            return None;
        }
        for _ in 0..above {
            if let Some(r) = trap.pop() {
                self.leave_slot(&r);
            }
        }
        let frame = trap.top_mut();
        let rec = frame.step.take()?;
        let reentry = frame.reentry;
        if let Some(r) = frame.xol.take() {
            self.leave_slot(&r);
        }
        if reentry {
            trap.pop();
        }
        Some(rec)
    }

    /// The platform saw the context of `trap` with its IP at `ip` at its current nesting
    /// level (e.g. at a context switch, or at any stop of a thread that is not inside a
    /// nested context it did not announce): if it was counted into a slot and is now outside
    /// it, it is counted out. Cheap; call it as often as convenient.
    pub fn seen_at<const N: usize>(&self, trap: &mut TrapState<P::Arch, N>, ip: u64) {
        let frame = trap.top_mut();
        if frame.step.is_some() {
            return;
        }
        if let Some(r) = frame.xol {
            let size = <P::Arch as Arch>::SLOT_SIZE as u64;
            if ip < r.addr.0 || ip >= r.addr.0.saturating_add(size) {
                frame.xol = None;
                self.leave_slot(&r);
            }
        }
    }

    /// The nested context announced with [`TrapState::nest`] has ended: its level is popped
    /// (counting it out of any slot it was left in; a step it left pending is abandoned) and
    /// the outer level's record is current again.
    pub fn unnest<const N: usize>(&self, trap: &mut TrapState<P::Arch, N>) {
        // Reentry frames of the nested level go with it.
        while trap.top().reentry {
            if let Some(r) = trap.pop() {
                self.leave_slot(&r);
            }
        }
        if trap.depth() > 0 {
            if let Some(r) = trap.pop() {
                self.leave_slot(&r);
            }
        }
    }

    /// Forget everything in flight for the context of `trap` (it exited, or its space
    /// executed a new program), counting it out of every slot.
    pub fn clear_trap<const N: usize>(&self, trap: &mut TrapState<P::Arch, N>) {
        while trap.depth() > 0 {
            if let Some(r) = trap.pop() {
                self.leave_slot(&r);
            }
        }
        if let Some(r) = trap.pop() {
            self.leave_slot(&r);
        }
    }

    /// Hits of the probe at `key` that ran no handler because they were reentries (see
    /// [`TrapState`]), as kprobes' `nmissed`. `None` if no such probe is registered.
    pub fn probe_nmissed(&self, key: ProbeKey) -> Option<u64> {
        let _w = self.writer.lock();
        let pi = self.probes.lookup(key.file.0, key.offset)?;
        Some(self.probes.at(pi).val.nmissed.load(Ordering::Relaxed))
    }

    pub(crate) fn leave_slot(&self, r: &XolRecord) {
        let e = self.spaces.at(r.space_index);
        // A stale record (the space was torn down and the entry reused) counts nothing out.
        if e.key().0 == r.space.0 && e.val.generation() == r.space_gen {
            e.val.xol.leave(r.slot);
        }
    }
}

/// What the handlers of one hit are told.
#[derive(Clone, Copy)]
struct HitArgs {
    cpu: CpuId,
    space: SpaceId,
    task: TaskId,
    key: ProbeKey,
    bp: Addr,
    tramp: Addr,
    /// Instances the task's chain still has room for.
    room: usize,
}
