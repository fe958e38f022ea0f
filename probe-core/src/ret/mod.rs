//! Return probes (kretprobes, `kernel/kprobes.c`): the trampoline, hijacking the return
//! address at entry, consuming a task's instances at the trampoline, dropping frames abandoned
//! by `longjmp`; the instance accounting behind `maxactive` and `nmissed` is in `instances.rs`.

mod instances;
pub(crate) use instances::Instances;

use crate::addr::{Addr, CpuId, SpaceId, TaskId};
use crate::arch::{Arch, Registers};
use crate::consumer::{Chain, Consumer, ConsumerHandle, RegsOf, ReturnContext};
use crate::engine::{ArchOf, ProbeCore};
use crate::error::Error;
use crate::hit::{Hit, PENDING_RETURNS};
use crate::platform::{AddressSpace, Platform};
use crate::sync::Ordering;
use crate::task::{RetInstance, TaskReturns};

/// A return address the hit path replaced, and the instances it pushed for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hijack {
    /// The stack pointer at entry (where the return address is).
    frame: u64,
    /// The return address found there.
    real: Addr,
    /// Instances pushed on the task's chain.
    pushed: usize,
    /// Whether the return address was written (not already the trampoline).
    wrote: bool,
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
    /// Whether some live consumer of probe `pi` is a return consumer.
    pub(crate) fn probe_has_ret(&self, pi: u32) -> bool {
        let head = self.probes.at(pi).val.consumers.load(Ordering::Acquire);
        Chain::new(&self.consumers, head).any(|(_, s)| s.is_live() && s.opts.get().ret.is_some())
    }

    /// The return trampoline of space entry `sx`: one slot holding the breakpoint, created on
    /// first use and kept for the life of the space.
    pub(crate) fn ensure_trampoline(&self, p: &P, sx: u32, near: Addr) -> Result<Addr, Error> {
        let sp = &self.spaces.at(sx).val;
        let t = sp.trampoline.load(Ordering::Relaxed);
        if t != 0 {
            return Ok(Addr(t));
        }
        let space = SpaceId(self.spaces.at(sx).key().0);
        let mem = p.space(space).ok_or(Error::NoSuchSpace(space))?;
        self.ensure_xol_base(p, sx, near)?;
        let slot = self.take_slot(sx)?;
        let res = sp
            .xol
            .slot_addr(slot, ArchOf::<P>::SLOT_SIZE)
            .ok_or(Error::NoXolArea(space))
            .and_then(|a| {
                mem.patch_code(a, ArchOf::<P>::BREAKPOINT)?;
                Ok(a)
            });
        match res {
            Ok(a) => {
                sp.trampoline.store(a.0, Ordering::Release);
                Ok(a)
            }
            Err(e) => {
                sp.xol.retire(slot, &self.epochs);
                Err(e)
            }
        }
    }

    /// Give back a return instance of consumer `ci`, generation `g`.
    pub(crate) fn put_instance(&self, ci: u32, g: u32) {
        if let Some(slot) = self.consumers.get(ci as usize) {
            slot.rets.put_instance(g);
        }
    }

    /// Give back the instance of a call that will never return (counted: [`abandoned`]).
    ///
    /// [`abandoned`]: Self::abandoned
    pub(crate) fn abandon_instance(&self, ci: u32, g: u32) {
        if let Some(slot) = self.consumers.get(ci as usize) {
            slot.rets.abandon_instance(g);
        }
    }

    /// Detach from a task: put every hijacked return address on its stack back (where the
    /// slot still holds the trampoline) and drop its instances, so that the program returns
    /// normally without the core. Returns the first error; the rest proceed.
    pub fn restore_returns<T: TaskReturns + ?Sized>(
        &self,
        p: &P,
        space: SpaceId,
        task: &mut T,
    ) -> Result<(), Error> {
        let mut first = Ok(());
        let tramp = self
            .spaces
            .lookup(space.0, 0)
            .map(|sx| self.spaces.at(sx).val.trampoline.load(Ordering::Relaxed))
            .unwrap_or(0);
        if tramp != 0 && !task.calls().is_empty() {
            match p.space(space) {
                Some(mem) => {
                    for i in task.calls().iter().filter(|i| !i.chained) {
                        if let Err(e) =
                            ArchOf::<P>::restore_return_address(i.frame, &mem, Addr(tramp), i.ret)
                        {
                            first = first.and(Err(Error::Memory(e)));
                        }
                    }
                }
                None => first = Err(Error::NoSuchSpace(space)),
            }
        }
        self.forget_task(task, false);
        first
    }

    /// The return trampoline's address in `space`, if it has one.
    pub fn trampoline(&self, space: SpaceId) -> Option<Addr> {
        let sx = self.spaces.lookup(space.0, 0)?;
        let t = self.spaces.at(sx).val.trampoline.load(Ordering::Acquire);
        (t != 0).then_some(Addr(t))
    }

    /// The instance accounting of live return consumer `h`.
    fn instances_of(&self, h: ConsumerHandle) -> Result<&Instances, Error> {
        self.consumers
            .get(h.index as usize)
            .filter(|s| s.is_live() && s.generation() == h.generation)
            .map(|s| &s.rets)
            .ok_or(Error::UnknownConsumer)
    }

    /// Calls of a return consumer that found no free instance (kretprobes' `nmissed`).
    pub fn nmissed(&self, h: ConsumerHandle) -> Result<u64, Error> {
        Ok(self.instances_of(h)?.nmissed.load(Ordering::Relaxed))
    }

    /// Of [`nmissed`](Self::nmissed), the calls that found the task's chain of tracked calls
    /// full: nested deeper than its [`TaskReturns`] holds (the kernel's
    /// `MAX_URETPROBE_DEPTH`, `kernel/events/uprobes.c`).
    pub fn nmissed_nesting(&self, h: ConsumerHandle) -> Result<u64, Error> {
        Ok(self.instances_of(h)?.nested.load(Ordering::Relaxed))
    }

    /// Calls a return consumer tracked that never returned: their frames were abandoned
    /// (`longjmp`, an exception or panic unwinding them) or their task exited or exec'd
    /// inside them. Counted when the core notices: at the task's next entry or return
    /// through a probe, or its exit.
    pub fn abandoned(&self, h: ConsumerHandle) -> Result<u64, Error> {
        Ok(self.instances_of(h)?.abandoned.load(Ordering::Relaxed))
    }

    /// Instances of a return consumer in use right now.
    pub fn instances_in_use(&self, h: ConsumerHandle) -> Result<u32, Error> {
        Ok(self.instances_of(h)?.instances())
    }

    /// Replace the return address with the trampoline and push this hit's instances on the
    /// task's chain. The first keeps the return address it found (the trampoline itself when
    /// an outer instance already hijacked this frame: a tail call); the others are chained.
    /// Returns what was done, for [`unhijack_return`](Self::unhijack_return).
    pub(crate) fn hijack_return<T: TaskReturns + ?Sized, M: AddressSpace>(
        &self,
        ts: &mut T,
        regs: &mut RegsOf<P>,
        mem: &M,
        tramp: Addr,
        pending: &mut heapless::Vec<RetInstance, PENDING_RETURNS>,
    ) -> Option<Hijack> {
        let give_back = |pending: &mut heapless::Vec<RetInstance, PENDING_RETURNS>| {
            for i in pending.drain(..) {
                self.put_instance(i.consumer, i.generation);
            }
        };
        let Ok(cur) = <P::Arch as Arch>::return_address(regs, mem) else {
            give_back(pending);
            return None;
        };
        let chained = cur == tramp;
        // Frames abandoned by longjmp or unwinding go first.
        self.drop_abandoned(ts, regs.sp(), chained);
        if !chained && <P::Arch as Arch>::set_return_address(regs, mem, tramp).is_err() {
            give_back(pending);
            return None;
        }
        let mut pushed = 0;
        for (k, mut inst) in pending.drain(..).enumerate() {
            inst.frame = regs.sp();
            inst.ret = if k == 0 { cur } else { tramp };
            inst.chained = k > 0 || chained;
            match ts.push_call(inst) {
                Ok(()) => pushed += 1,
                Err(inst) => self.put_instance(inst.consumer, inst.generation),
            }
        }
        Some(Hijack {
            frame: regs.sp(),
            real: cur,
            pushed,
            wrote: !chained,
        })
    }

    /// Undo [`hijack_return`](Self::hijack_return) (the hit failed after it): the real
    /// return address goes back and this hit's instances are given back.
    pub(crate) fn unhijack_return<T: TaskReturns + ?Sized, M: AddressSpace>(
        &self,
        ts: &mut T,
        mem: &M,
        h: Hijack,
        tramp: Addr,
    ) {
        for _ in 0..h.pushed {
            if let Some(i) = ts.pop_call() {
                self.put_instance(i.consumer, i.generation);
            }
        }
        if h.wrote {
            let _ = ArchOf::<P>::restore_return_address(h.frame, mem, tramp, h.real);
        }
    }

    /// Drop the task's instances whose frames are gone: at a function entry with stack
    /// pointer `sp`, every tracked frame at or below `sp` was abandoned (longjmp, unwinding)
    /// — except, when the return address is already the trampoline (`chained`: a tail call or
    /// a second return probe on this frame), the frame at exactly `sp`. Returns whether any
    /// was dropped.
    pub(crate) fn drop_abandoned<T: TaskReturns + ?Sized>(
        &self,
        ts: &mut T,
        sp: u64,
        chained: bool,
    ) -> bool {
        let mut dropped = false;
        while let Some(top) = ts.calls().last() {
            let dead = if chained {
                top.frame < sp
            } else {
                top.frame <= sp
            };
            if !dead {
                break;
            }
            let i = ts.pop_call();
            if let Some(i) = i {
                self.abandon_instance(i.consumer, i.generation);
            }
            dropped = true;
        }
        dropped
    }

    /// A hit on the return trampoline (kretprobes' `trampoline_handler`: instances are found by task, consumed until one whose saved address is not the trampoline): drop instances of abandoned deeper frames,
    /// then consume the task's instances in order, running their return handlers, until one
    /// whose saved return address is not the trampoline; resume there.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_trampoline<T: TaskReturns + ?Sized>(
        &self,
        p: &P,
        cpu: CpuId,
        space: SpaceId,
        task: TaskId,
        ts: &mut T,
        regs: &mut RegsOf<P>,
    ) -> Hit {
        let frame = <P::Arch as Arch>::returned_frame(regs.sp());
        // Deeper frames than the returning one were abandoned.
        while ts.calls().last().is_some_and(|top| top.frame < frame) {
            if let Some(i) = ts.pop_call() {
                self.abandon_instance(i.consumer, i.generation);
            }
        }
        // The real return address: the first unchained instance from the top.
        let Some(real) = ts.calls().iter().rev().find(|i| !i.chained).map(|i| i.ret) else {
            return Hit::StrayTrampoline;
        };
        regs.set_ip(real.0);
        while let Some(mut inst) = ts.pop_call() {
            let slot = &self.consumers[inst.consumer as usize % CONSUMERS];
            if slot.is_live() && slot.generation() == inst.generation {
                slot.value.with(|c| {
                    if let Some(c) = c {
                        let mut ctx = ReturnContext {
                            platform: p,
                            cpu,
                            task,
                            space,
                            key: inst.key,
                            func: inst.func,
                            ret: real,
                            regs: &mut *regs,
                        };
                        let n = (inst.data_len as usize).min(inst.data.len());
                        c.return_handler(&mut ctx, &mut inst.data[..n]);
                    }
                });
            }
            slot.rets.put_instance(inst.generation);
            if !inst.chained {
                break;
            }
        }
        regs.set_ip(real.0);
        Hit::Returned { to: real }
    }
}
