//! Installing and removing breakpoints: the rmap walk, verifying the text, writing the slot,
//! publishing the site before the breakpoint (so a trapping task always finds it), and taking
//! it all back out.

use core::ops::ControlFlow;

use crate::addr::{Addr, FileId, SpaceId};
use crate::arch::{Arch, PlanKind};
use crate::consumer::Consumer;
use crate::engine::{ArchOf, ProbeCore, Writer, MAX_SLOT};
use crate::error::{Capacity, Error};
use crate::platform::{AddressSpace, Mapping, Platform};
use crate::probe::MAX_ORIG;
use crate::site::List;
use crate::sync::Ordering;
use crate::table::{Link, NIL};

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
    /// The rmap walk for probe `pi`: install in every mapping of its file where wanted.
    pub(crate) fn install_everywhere(&self, p: &P, w: &Writer, pi: u32) -> Result<(), Error> {
        let (file, _) = self.probes.at(pi).key();
        let mut res = Ok(());
        p.for_each_mapping(FileId(file), &mut |m| {
            if !m.exec {
                return ControlFlow::Continue(());
            }
            match self.install_if_wanted(p, w, pi, &m) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    res = Err(e);
                    ControlFlow::Break(())
                }
            }
        });
        res
    }

    /// Install every probe of file entry `fe` that falls in mapping `m`, where wanted.
    pub(crate) fn install_file_in_mapping(
        &self,
        p: &P,
        w: &Writer,
        fe: u32,
        m: &Mapping,
    ) -> Result<(), Error> {
        let mut first = Ok(());
        let mut pi = self.probes.at(fe).val.next_of_file.load(Ordering::Relaxed);
        let mut n = 0;
        while pi != NIL && n < PROBES {
            if let Err(e) = self.install_if_wanted(p, w, pi, m) {
                first = first.and(Err(e));
            }
            pi = self.probes.at(pi).val.next_of_file.load(Ordering::Relaxed);
            n += 1;
        }
        first
    }

    pub(crate) fn install_if_wanted(
        &self,
        p: &P,
        w: &Writer,
        pi: u32,
        m: &Mapping,
    ) -> Result<(), Error> {
        let (_, off) = self.probes.at(pi).key();
        let Some(addr) = m.addr_of(off) else {
            return Ok(());
        };
        if self.sites.lookup(m.space.0, addr.0).is_some() || !self.wanted(p, pi, m.space) {
            return Ok(());
        }
        self.install(p, w, pi, m, addr)
    }

    /// Install probe `pi` at `addr` of mapping `m`: verify the text, write the slot, publish
    /// the site, then write the breakpoint (in that order: a task that traps finds the site).
    pub(crate) fn install(
        &self,
        p: &P,
        w: &Writer,
        pi: u32,
        m: &Mapping,
        addr: Addr,
    ) -> Result<(), Error> {
        let probe = &self.probes.at(pi).val;
        let Some(plan) = probe.plan.get() else {
            return Ok(());
        };
        let len = ArchOf::<P>::insn_len(&plan);
        // The whole instruction must lie in this mapping.
        if addr
            .checked_add(len as u64 - 1)
            .is_none_or(|last| !m.range.contains(last))
        {
            return Ok(());
        }
        w.blacklist.check_addr(m.space, addr, len as u64)?;
        let orig = probe.orig.get();
        let mem = p.space(m.space).ok_or(Error::NoSuchSpace(m.space))?;
        let mut cur = [0u8; MAX_ORIG];
        mem.read_exact(addr, &mut cur[..len])?;
        if cur[..len] != orig[..len] {
            return Err(Error::BytesChanged {
                space: m.space,
                addr,
            });
        }
        let sx = self.space_entry(p, m.space)?;
        let sp = &self.spaces.at(sx).val;
        let (slot, slot_addr) = if ArchOf::<P>::plan_kind(&plan) == PlanKind::Emulate {
            (NIL, Addr(0))
        } else {
            self.alloc_slot(p, &mem, sx, &plan, addr)?
        };
        let si = match self.epoch_retry(|| {
            self.sites
                .claim(m.space.0, addr.0, &self.epochs, Capacity::Sites)
        }) {
            Ok(si) => si,
            Err(e) => {
                if slot != NIL {
                    sp.xol.retire(slot, &self.epochs);
                }
                return Err(e);
            }
        };
        let site = &self.sites.at(si).val;
        site.probe.store(pi, Ordering::Relaxed);
        site.space.store(sx, Ordering::Relaxed);
        site.slot.store(slot, Ordering::Relaxed);
        site.slot_addr.store(slot_addr.0, Ordering::Relaxed);
        self.link(si, List::Probe, &probe.sites);
        self.link(si, List::Space, &sp.sites);
        self.publish_site(si);
        if self.probe_has_ret(pi) {
            if let Err(e) = self.ensure_trampoline(p, sx, addr) {
                self.forget_site(si);
                return Err(e);
            }
        }
        if let Err(e) = mem.patch_code(addr, ArchOf::<P>::BREAKPOINT) {
            self.forget_site(si);
            return Err(e.into());
        }
        // The SDT semaphore goes up in step with the breakpoint, where its
        // mapping already exists; otherwise when it appears (`on_mmap`).
        if let Err(e) = self.sem_install(p, si, pi, m.space) {
            let _ = self.restore_bytes(p, pi, m.space, addr);
            self.forget_site(si);
            return Err(e);
        }
        Ok(())
    }

    pub(crate) fn alloc_slot(
        &self,
        p: &P,
        mem: &P::Space<'_>,
        sx: u32,
        plan: &<ArchOf<P> as Arch>::Plan,
        addr: Addr,
    ) -> Result<(u32, Addr), Error> {
        const { assert!(<ArchOf<P> as Arch>::SLOT_SIZE <= MAX_SLOT) };
        let sp = &self.spaces.at(sx).val;
        let space = SpaceId(self.spaces.at(sx).key().0);
        self.ensure_xol_base(p, sx, addr)?;
        let slot = self.take_slot(sx)?;
        let size = ArchOf::<P>::SLOT_SIZE;
        let res = (|| {
            let slot_addr = sp
                .xol
                .slot_addr(slot, size)
                .ok_or(Error::NoXolArea(space))?;
            let mut buf = [0u8; MAX_SLOT];
            let n = ArchOf::<P>::encode_slot(plan, addr, slot_addr, &mut buf[..size])?;
            mem.patch_code(slot_addr, &buf[..n.min(size)])?;
            Ok(slot_addr)
        })();
        match res {
            Ok(a) => Ok((slot, a)),
            Err(e) => {
                sp.xol.retire(slot, &self.epochs);
                Err(e)
            }
        }
    }

    /// The slot area of space entry `sx`, created on first use near `near`.
    pub(crate) fn ensure_xol_base(&self, p: &P, sx: u32, near: Addr) -> Result<Addr, Error> {
        let sp = &self.spaces.at(sx).val;
        let base = sp.xol.base.load(Ordering::Relaxed);
        if base != 0 {
            return Ok(Addr(base));
        }
        let space = SpaceId(self.spaces.at(sx).key().0);
        let base = p
            .xol_area(space, near, XOL)
            .ok_or(Error::NoXolArea(space))?;
        sp.xol.base.store(base.0, Ordering::Relaxed);
        Ok(base)
    }

    /// Take a free slot of space entry `sx`, advancing the grace period once if none is.
    pub(crate) fn take_slot(&self, sx: u32) -> Result<u32, Error> {
        let sp = &self.spaces.at(sx).val;
        match sp.xol.alloc(&self.epochs) {
            Some(s) => Ok(s),
            None => {
                self.epochs.try_advance();
                self.epochs.try_advance();
                sp.xol.alloc(&self.epochs).ok_or(Error::CapacityExhausted {
                    what: Capacity::XolSlots,
                })
            }
        }
    }

    /// The space table entry for `space`, created if needed.
    pub(crate) fn space_entry(&self, _p: &P, space: SpaceId) -> Result<u32, Error> {
        if let Some(sx) = self.spaces.lookup(space.0, 0) {
            return Ok(sx);
        }
        let sx = self.epoch_retry(|| {
            self.spaces
                .claim(space.0, 0, &self.epochs, Capacity::Spaces)
        })?;
        self.spaces.at(sx).val.reset();
        self.spaces.publish(sx);
        Ok(sx)
    }

    pub(crate) fn link(&self, si: u32, l: List, head: &Link) {
        let old = head.load(Ordering::Relaxed);
        let (prev, next) = self.sites.at(si).val.links(l);
        prev.store(NIL, Ordering::Relaxed);
        next.store(old, Ordering::Relaxed);
        if old != NIL {
            self.sites
                .at(old)
                .val
                .links(l)
                .0
                .store(si, Ordering::Relaxed);
        }
        head.store(si, Ordering::Relaxed);
    }

    pub(crate) fn unlink(&self, si: u32, l: List, head: &Link) {
        let (prev, next) = self.sites.at(si).val.links(l);
        let (p, n) = (prev.load(Ordering::Relaxed), next.load(Ordering::Relaxed));
        if p != NIL {
            self.sites.at(p).val.links(l).1.store(n, Ordering::Relaxed);
        } else {
            head.store(n, Ordering::Relaxed);
        }
        if n != NIL {
            self.sites.at(n).val.links(l).0.store(p, Ordering::Relaxed);
        }
    }

    /// Publish site `si` (its payload filled) and count the change, before its breakpoint is
    /// written: a trap that missed every site can tell whether the sites changed since.
    pub(crate) fn publish_site(&self, si: u32) {
        self.sites.publish(si);
        self.site_changes.fetch_add(1, Ordering::Release);
    }

    /// Remove site `si`; with `restore`, put the original bytes back first (when the
    /// breakpoint is still ours). The site is forgotten either way.
    pub(crate) fn remove_site(&self, p: &P, si: u32, restore: bool) -> Result<(), Error> {
        let site = self.sites.at(si);
        let (space, addr) = site.key();
        let (space, addr) = (SpaceId(space), Addr(addr));
        let mut res = Ok(());
        if restore {
            res = self.restore_bytes(p, site.val.probe.load(Ordering::Relaxed), space, addr);
            res = res.and(self.sem_remove(p, si, space));
        }
        self.forget_site(si);
        res
    }

    pub(crate) fn restore_bytes(
        &self,
        p: &P,
        pi: u32,
        space: SpaceId,
        addr: Addr,
    ) -> Result<(), Error> {
        let bp = ArchOf::<P>::BREAKPOINT;
        let orig = self.probes.at(pi).val.orig.get();
        let mem = p.space(space).ok_or(Error::NoSuchSpace(space))?;
        let mut cur = [0u8; MAX_ORIG];
        mem.read_exact(addr, &mut cur[..bp.len()])?;
        if &cur[..bp.len()] != bp {
            return Err(Error::BytesChanged { space, addr });
        }
        mem.patch_code(addr, &orig[..bp.len()])?;
        Ok(())
    }

    /// Unlink and unpublish site `si`, retiring its slot. No memory is touched.
    pub(crate) fn forget_site(&self, si: u32) {
        let site = &self.sites.at(si).val;
        let pi = site.probe.load(Ordering::Relaxed);
        let sx = site.space.load(Ordering::Relaxed);
        self.unlink(si, List::Probe, &self.probes.at(pi).val.sites);
        let sp = &self.spaces.at(sx).val;
        self.unlink(si, List::Space, &sp.sites);
        let slot = site.slot.load(Ordering::Relaxed);
        // Unpublish the site before stamping its slot: a reader that can still reach the
        // slot through the site is pinned before the slot's stamp.
        self.sites.remove(si, &self.epochs);
        self.site_changes.fetch_add(1, Ordering::Release);
        if slot != NIL {
            sp.xol.retire(slot, &self.epochs);
        }
    }

    /// Restore the original bytes of every breakpoint in `space` and forget them (detach from
    /// one address space, leaving the consumers registered for the others).
    pub fn detach_space(&self, p: &P, space: SpaceId) -> Result<(), Error> {
        let _w = self.writer.lock();
        let Some(sx) = self.spaces.lookup(space.0, 0) else {
            return Ok(());
        };
        let mut first = Ok(());
        let mut s = self.spaces.at(sx).val.sites.load(Ordering::Relaxed);
        while s != NIL {
            let nxt = self.sites.at(s).val.next(List::Space);
            first = first.and(self.remove_site(p, s, true));
            s = nxt;
        }
        self.spaces.remove(sx, &self.epochs);
        first
    }
}
