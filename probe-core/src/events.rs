//! The platform's events — mmap, munmap, fork, exec, space and task exit — keeping every space's
//! installed breakpoints, semaphores, slots and return instances exact.

use crate::addr::{Addr, Range, SpaceId};
use crate::arch::Arch;
use crate::consumer::Consumer;
use crate::engine::{ArchOf, ProbeCore};
use crate::error::{Capacity, Error};
use crate::platform::{Mapping, Platform};
use crate::probe::FILE_ENTRY;
use crate::site::List;
use crate::sync::Ordering;
use crate::table::NIL;
use crate::task::TaskReturns;

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
    /// A new mapping appeared. For an executable mapping of a probed file, every probe of the
    /// file that falls in it is installed where wanted. Returns the first error; the rest
    /// proceed.
    pub fn on_mmap(&self, p: &P, m: Mapping) -> Result<(), Error> {
        let w = self.writer.lock();
        let Some(fe) = self.probes.lookup(m.file.0, FILE_ENTRY) else {
            return Ok(());
        };
        let mut first = Ok(());
        if m.exec {
            first = self.install_file_in_mapping(p, &w, fe, &m);
        }
        if m.write {
            // A data mapping holding SDT semaphores of probes already installed here.
            let mut pi = self.probes.at(fe).val.next_of_file.load(Ordering::Relaxed);
            let mut n = 0;
            while pi != NIL && n < PROBES {
                let probe = &self.probes.at(pi).val;
                if probe.opts.get().semaphore.is_some() {
                    let mut s = probe.sites.load(Ordering::Relaxed);
                    while s != NIL {
                        let site = self.sites.at(s);
                        if site.key().0 == m.space.0 {
                            first = first.and(self.sem_install(p, s, pi, m.space));
                        }
                        s = site.val.next(List::Probe);
                    }
                }
                pi = probe.next_of_file.load(Ordering::Relaxed);
                n += 1;
            }
        }
        first
    }

    /// `range` of `space` was unmapped: its breakpoints are forgotten (the memory is gone).
    pub fn on_munmap(&self, _p: &P, space: SpaceId, range: Range) {
        let _w = self.writer.lock();
        let Some(sx) = self.spaces.lookup(space.0, 0) else {
            return;
        };
        let mut s = self.spaces.at(sx).val.sites.load(Ordering::Relaxed);
        while s != NIL {
            let site = self.sites.at(s);
            let nxt = site.val.next(List::Space);
            let sem = site.val.sem_addr.load(Ordering::Relaxed);
            if sem != 0 && range.contains(Addr(sem)) {
                // The counter is gone with its mapping: never write there again.
                site.val.sem_addr.store(0, Ordering::Relaxed);
            }
            if range.contains(Addr(site.key().1)) {
                // The text is gone; its semaphore (still mapped) goes down in step.
                let _ = self.sem_remove(_p, s, space);
                self.forget_site(s);
            }
            s = nxt;
        }
    }

    /// The slot area of `space` is no longer the platform's (the program mapped over it, or
    /// unmapped it): no task may be sent there again. Every breakpoint of the space that
    /// leads into the area (a slot-needing plan, or a return probe's trampoline) is removed
    /// with its original bytes restored, and the area is forgotten (a later slot-needing
    /// install asks the platform for a new one). Emulated entry probes stay. Returns how many
    /// breakpoints were removed and the first error (the rest proceed).
    pub fn on_xol_lost(&self, p: &P, space: SpaceId) -> (usize, Result<(), Error>) {
        let _w = self.writer.lock();
        let Some(sx) = self.spaces.lookup(space.0, 0) else {
            return (0, Ok(()));
        };
        let sp = &self.spaces.at(sx).val;
        let tramp = sp.trampoline.load(Ordering::Relaxed) != 0;
        let mut first = Ok(());
        let mut removed = 0;
        let mut s = sp.sites.load(Ordering::Relaxed);
        while s != NIL {
            let site = self.sites.at(s);
            let nxt = site.val.next(List::Space);
            let pi = site.val.probe.load(Ordering::Relaxed);
            if site.val.slot.load(Ordering::Relaxed) != NIL || (tramp && self.probe_has_ret(pi)) {
                first = first.and(self.remove_site(p, s, true));
                removed += 1;
            }
            s = nxt;
        }
        // Readers load the trampoline under a pin: from the next grace period on, none sees
        // the old one. The area's slots stay retired or used; the new area starts afresh.
        sp.trampoline.store(0, Ordering::Release);
        sp.xol.base.store(0, Ordering::Relaxed);
        (removed, first)
    }

    /// Space `child` was forked from `parent`: the child's memory is a copy of the parent's,
    /// breakpoints and slot area included (at the same addresses). The core records the
    /// inherited breakpoints, then re-evaluates the filters for the child (removing those no
    /// consumer wants there).
    pub fn on_fork(&self, p: &P, parent: SpaceId, child: SpaceId) -> Result<(), Error> {
        let w = self.writer.lock();
        let Some(px) = self.spaces.lookup(parent.0, 0) else {
            // Nothing installed in the parent; the child may still be wanted.
            return self.refilter_locked(p, &w, child);
        };
        let cx = match self.space_entry(p, child) {
            Ok(cx) => cx,
            Err(e) => {
                // The core cannot track the child: it must not keep breakpoints (or counts)
                // it inherited and nobody would handle.
                self.scrub_child(p, px, child);
                return Err(e);
            }
        };
        let pp = &self.spaces.at(px).val;
        let cp = &self.spaces.at(cx).val;
        cp.xol
            .base
            .store(pp.xol.base.load(Ordering::Relaxed), Ordering::Relaxed);
        let tramp = pp.trampoline.load(Ordering::Relaxed);
        if tramp != 0 {
            // The child's memory holds the trampoline at the same address, in the same slot.
            let base = pp.xol.base.load(Ordering::Relaxed);
            let size = ArchOf::<P>::SLOT_SIZE as u64;
            if let Some(i) = tramp.checked_sub(base).map(|d| d / size) {
                cp.xol.mark_used(i as u32);
            }
            cp.trampoline.store(tramp, Ordering::Relaxed);
        }
        let mut first = Ok(());
        let mut s = pp.sites.load(Ordering::Relaxed);
        while s != NIL {
            let site = self.sites.at(s);
            let nxt = site.val.next(List::Space);
            let addr = site.key().1;
            let pi = site.val.probe.load(Ordering::Relaxed);
            let slot = site.val.slot.load(Ordering::Relaxed);
            match self.epoch_retry(|| {
                self.sites
                    .claim(child.0, addr, &self.epochs, Capacity::Sites)
            }) {
                Ok(ci) => {
                    let c = &self.sites.at(ci).val;
                    c.probe.store(pi, Ordering::Relaxed);
                    c.space.store(cx, Ordering::Relaxed);
                    c.slot.store(slot, Ordering::Relaxed);
                    c.slot_addr.store(
                        site.val.slot_addr.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                    // The child's copy of the counter was incremented with the parent's.
                    c.sem_addr
                        .store(site.val.sem_addr.load(Ordering::Relaxed), Ordering::Relaxed);
                    if slot != NIL {
                        cp.xol.mark_used(slot);
                    }
                    self.link(ci, List::Probe, &self.probes.at(pi).val.sites);
                    self.link(ci, List::Space, &cp.sites);
                    self.publish_site(ci);
                }
                Err(e) => {
                    // The child keeps a breakpoint the core cannot track: take it out, and
                    // its semaphore count with it.
                    self.scrub_inherited(p, s, child);
                    first = first.and(Err(e));
                }
            }
            s = nxt;
        }
        first.and(self.refilter_locked(p, &w, child))
    }

    /// Undo in `child` what it inherited of the parent's site `s` (the breakpoint byte and
    /// the semaphore count), for a child the core cannot track.
    fn scrub_inherited(&self, p: &P, s: u32, child: SpaceId) {
        let site = self.sites.at(s);
        let pi = site.val.probe.load(Ordering::Relaxed);
        let _ = self.restore_bytes(p, pi, child, Addr(site.key().1));
        let sem = site.val.sem_addr.load(Ordering::Relaxed);
        if sem != 0 {
            let _ = self.sem_update(p, child, Addr(sem), false);
        }
    }

    /// Undo in `child` everything it inherited of the parent's space entry `px`.
    fn scrub_child(&self, p: &P, px: u32, child: SpaceId) {
        let mut s = self.spaces.at(px).val.sites.load(Ordering::Relaxed);
        while s != NIL {
            self.scrub_inherited(p, s, child);
            s = self.sites.at(s).val.next(List::Space);
        }
    }

    /// `space` executed a new program: its old mappings are gone, so are its breakpoints and
    /// slots. `task` is the task that called exec; its tracked calls are dropped (its trap
    /// state goes with [`clear_trap`](Self::clear_trap)). The platform then reports the new
    /// image's mappings with [`on_mmap`](Self::on_mmap).
    pub fn on_exec<T: TaskReturns + ?Sized>(&self, p: &P, space: SpaceId, task: &mut T) {
        self.forget_task(task, true);
        self.on_space_exit(p, space);
    }

    /// `space` is gone (its last task exited): forget its breakpoints and slots.
    pub fn on_space_exit(&self, _p: &P, space: SpaceId) {
        let _w = self.writer.lock();
        let Some(sx) = self.spaces.lookup(space.0, 0) else {
            return;
        };
        let sp = &self.spaces.at(sx).val;
        let mut s = sp.sites.load(Ordering::Relaxed);
        while s != NIL {
            let nxt = self.sites.at(s).val.next(List::Space);
            self.forget_site(s);
            s = nxt;
        }
        self.spaces.remove(sx, &self.epochs);
    }

    /// A task exited: release its return instances; its tracked calls never returned
    /// ([`abandoned`](Self::abandoned)). (A context that exits with it clears its trap state
    /// with [`clear_trap`](Self::clear_trap).)
    pub fn on_task_exit<T: TaskReturns + ?Sized>(&self, task: &mut T) {
        self.forget_task(task, true);
    }

    /// A task's tracked calls are copies of calls that return elsewhere (a vfork child's,
    /// whose parent returns through them): release its instances without counting them as
    /// abandoned.
    pub fn forget_returns<T: TaskReturns + ?Sized>(&self, task: &mut T) {
        self.forget_task(task, false);
    }

    /// Releases every instance of `task`, counting them as abandoned if `abandoned`.
    pub(crate) fn forget_task<T: TaskReturns + ?Sized>(&self, task: &mut T, abandoned: bool) {
        while let Some(i) = task.pop_call() {
            if abandoned {
                self.abandon_instance(i.consumer, i.generation);
            } else {
                self.put_instance(i.consumer, i.generation);
            }
        }
    }

    /// A task forked `child` from `parent` (a new process): the child's stack is a copy, so it
    /// inherits the parent's hijacked return addresses and the instances that undo them.
    /// A growing child store makes room for the parent's calls first; those that do not fit
    /// are not tracked in the child.
    pub fn on_task_fork<T: TaskReturns + ?Sized, U: TaskReturns + ?Sized>(
        &self,
        parent: &T,
        child: &mut U,
    ) {
        self.forget_task(child, false);
        for i in parent.calls() {
            if child.push_call(*i).is_ok() {
                if let Some(slot) = self.consumers.get(i.consumer as usize) {
                    slot.rets.add_instance(i.generation);
                }
            }
        }
    }
}
