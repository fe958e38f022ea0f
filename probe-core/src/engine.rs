//! The engine: [`ProbeCore`], its tables, registration, the rmap walk and the events that keep
//! every space's installed breakpoints exact. The hit path is in `hit.rs`.

use core::marker::PhantomData;
use core::ops::ControlFlow;

use crate::addr::{Addr, CpuId, FileId, ProbeKey, Range, SpaceId};
use crate::arch::{Arch, PlanKind};
use crate::blacklist::Blacklist;
use crate::consumer::{Consumer, ConsumerHandle, ConsumerOptions, ConsumerSlot, RET_DATA_MAX};
use crate::error::{Capacity, Error};
use crate::platform::{read_file_exact, AddressSpace, Mapping, Platform};
use crate::probe::{ProbePayload, FILE_ENTRY, MAX_ORIG};
use crate::reclaim::Epochs;
use crate::site::{List, SitePayload};
use crate::sync::{array_of, const_fn, AtomicBool, Mutex, Ordering};
use crate::table::{Table, NIL};
use crate::task::TaskState;
use crate::xol::SpacePayload;

/// Largest out-of-line slot the core supports.
pub(crate) const MAX_SLOT: usize = 256;

/// Writer-side state, under the writer lock.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) blacklist: Blacklist,
    consumer_cursor: usize,
}

/// The probe machinery for platform `P` and consumers of type `C`.
///
/// Capacities (all fixed; running out is [`Error::CapacityExhausted`]):
/// - `PROBES`: probe-table buckets; holds up to 7/8 of that many probes plus one entry per
///   probed file.
/// - `CONSUMERS`: registered consumers.
/// - `SITES`: site-table buckets; up to 7/8 of that many installed breakpoints over all
///   spaces.
/// - `SPACES`: space-table buckets; up to 7/8 of that many address spaces with breakpoints.
/// - `XOL`: out-of-line slots per space.
/// - `CPUS`: CPUs that may call the read-side paths concurrently (`CpuId` below this).
///
/// In normal builds [`new`](ProbeCore::new) is `const`, so a core can be a `static`.
pub struct ProbeCore<
    P: Platform,
    C,
    const PROBES: usize,
    const CONSUMERS: usize,
    const SITES: usize,
    const SPACES: usize,
    const XOL: usize,
    const CPUS: usize,
> {
    pub(crate) epochs: Epochs<CPUS>,
    pub(crate) probes: Table<ProbePayload<P::Arch>, PROBES>,
    pub(crate) sites: Table<SitePayload, SITES>,
    pub(crate) spaces: Table<SpacePayload<XOL>, SPACES>,
    pub(crate) consumers: [ConsumerSlot<C>; CONSUMERS],
    pub(crate) writer: Mutex<Writer>,
    /// Some space has a pending filter re-evaluation.
    pub(crate) pending: AtomicBool,
    _platform: PhantomData<fn(&P)>,
}

impl<
        P: Platform,
        C,
        const PROBES: usize,
        const CONSUMERS: usize,
        const SITES: usize,
        const SPACES: usize,
        const XOL: usize,
        const CPUS: usize,
    > core::fmt::Debug for ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProbeCore")
            .field("probes", &self.probes.len())
            .field("sites", &self.sites.len())
            .field("spaces", &self.spaces.len())
            .field("epoch", &self.epochs.now())
            .finish_non_exhaustive()
    }
}

type ArchOf<P> = <P as Platform>::Arch;

#[cfg(not(loom))]
impl<
        P: Platform,
        C: Consumer<P>,
        const PROBES: usize,
        const CONSUMERS: usize,
        const SITES: usize,
        const SPACES: usize,
        const XOL: usize,
        const CPUS: usize,
    > Default for ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS>
{
    fn default() -> Self {
        Self::new()
    }
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
    const_fn! {
        /// An empty core.
        pub fn new() -> Self {
            ProbeCore {
                epochs: Epochs::new(),
                probes: Table::new(),
                sites: Table::new(),
                spaces: Table::new(),
                consumers: array_of![ConsumerSlot::new(); CONSUMERS],
                writer: Mutex::new(Writer {
                    blacklist: Blacklist::new(),
                    consumer_cursor: 0,
                }),
                pending: AtomicBool::new(false),
                _platform: PhantomData,
            }
        }
    }

    // ---------------------------------------------------------------- blacklist

    /// Never probe `offsets` of `file`: registration there fails with
    /// [`Error::Blacklisted`].
    pub fn blacklist_file(
        &self,
        file: FileId,
        offsets: core::ops::Range<u64>,
    ) -> Result<(), Error> {
        self.writer
            .lock()
            .blacklist
            .add_file(file, offsets.start, offsets.end)
    }

    /// Never put a breakpoint in `range` of `space` (of every space for `None`):
    /// registration that would fails with [`Error::BlacklistedAddress`], and an mmap event
    /// that would reports it.
    pub fn blacklist_addr(&self, space: Option<SpaceId>, range: Range) -> Result<(), Error> {
        self.writer.lock().blacklist.add_addr(space, range)
    }

    // ---------------------------------------------------------------- register

    /// Register `consumer` on the instruction at `key`. On the first consumer of a key the
    /// probe is created: its original instruction is read from the file and analysed once.
    /// Then every mapping of the file in every space is visited (the rmap walk) and the
    /// breakpoint installed wherever some consumer wants that space.
    ///
    /// On error nothing changed and the consumer is handed back.
    pub fn register(
        &self,
        p: &P,
        key: ProbeKey,
        consumer: C,
        opts: ConsumerOptions,
    ) -> Result<ConsumerHandle, (Error, C)> {
        if opts
            .ret
            .is_some_and(|r| r.maxactive == 0 || r.data_size > RET_DATA_MAX)
        {
            return Err((Error::BadOptions, consumer));
        }
        let mut w = self.writer.lock();
        let (pi, created) = match self.find_or_create_probe(p, &w, key, opts) {
            Ok(x) => x,
            Err(e) => return Err((e, consumer)),
        };
        let probe = &self.probes.at(pi).val;
        if !created && probe.opts.get().semaphore != opts.semaphore {
            return Err((Error::OptionsConflict, consumer));
        }
        let Some(ci) = self.alloc_consumer(&mut w) else {
            if created {
                self.drop_probe(p, pi);
            }
            return Err((
                Error::CapacityExhausted {
                    what: Capacity::Consumers,
                },
                consumer,
            ));
        };
        let slot = &self.consumers[ci];
        slot.has_filter
            .store(consumer.has_filter(), Ordering::Relaxed);
        slot.value.replace(Some(consumer));
        slot.opts.set(opts);
        slot.probe.store(pi, Ordering::Relaxed);
        slot.next
            .store(probe.consumers.load(Ordering::Relaxed), Ordering::Relaxed);
        let generation = slot.activate();
        // Publish at the head of the chain: readers see the filled slot.
        probe.consumers.store(ci as u32, Ordering::Release);

        let mut res = self.install_everywhere(p, &w, pi);
        if res.is_ok() && opts.ret.is_some() {
            // Every space where the probe is installed needs a return trampoline.
            let mut s = probe.sites.load(Ordering::Relaxed);
            while s != NIL && res.is_ok() {
                let site = self.sites.at(s);
                let sx = site.val.space.load(Ordering::Relaxed);
                res = self
                    .ensure_trampoline(p, sx, Addr(site.key().1))
                    .map(|_| ());
                s = site.val.next(List::Probe);
            }
        }
        if let Err(e) = res {
            let c = self.unregister_locked(p, ci);
            // `unregister_locked` always finds the value it was given.
            return match c {
                Some(c) => Err((e, c)),
                // The slot was filled by this very call under the writer lock, which is still
                // held: it cannot be empty.
                None => unreachable!("consumer slot emptied under the writer lock"),
            };
        }
        Ok(ConsumerHandle {
            index: ci as u32,
            generation,
        })
    }

    /// Unregister a consumer and hand it back. When it was the probe's last, the original
    /// bytes go back in every space and the probe is freed after a grace period. When this
    /// returns, the consumer's handler is not running and never runs again (it waits for
    /// handlers running on other CPUs to finish; do not call it from a handler).
    pub fn unregister(&self, p: &P, handle: ConsumerHandle) -> Result<C, Error> {
        let _w = self.writer.lock();
        let ci = handle.index as usize;
        let slot = self.consumers.get(ci).ok_or(Error::UnknownConsumer)?;
        if !slot.is_live() || slot.generation() != handle.generation {
            return Err(Error::UnknownConsumer);
        }
        self.unregister_locked(p, ci).ok_or(Error::UnknownConsumer)
    }

    fn alloc_consumer(&self, w: &mut Writer) -> Option<usize> {
        for k in 0..CONSUMERS {
            let i = (w.consumer_cursor + k) % CONSUMERS;
            if self.consumers[i].is_free() {
                w.consumer_cursor = (i + 1) % CONSUMERS;
                return Some(i);
            }
        }
        None
    }

    fn find_or_create_probe(
        &self,
        p: &P,
        w: &Writer,
        key: ProbeKey,
        opts: ConsumerOptions,
    ) -> Result<(u32, bool), Error> {
        if key.offset == FILE_ENTRY {
            return Err(Error::OffsetOutsideFile {
                file: key.file,
                offset: key.offset,
                size: p.file_size(key.file).unwrap_or(0),
            });
        }
        if let Some(pi) = self.probes.lookup(key.file.0, key.offset) {
            return Ok((pi, false));
        }
        let size = p.file_size(key.file).ok_or(Error::NoSuchFile(key.file))?;
        if key.offset >= size {
            return Err(Error::OffsetOutsideFile {
                file: key.file,
                offset: key.offset,
                size,
            });
        }
        w.blacklist.check_file(key.file, key.offset, 1)?;
        const { assert!(<ArchOf<P> as Arch>::MAX_INSN_LEN <= MAX_ORIG) };
        let avail = (size - key.offset).min(ArchOf::<P>::MAX_INSN_LEN as u64) as usize;
        let mut orig = [0u8; MAX_ORIG];
        read_file_exact(p, key.file, key.offset, &mut orig[..avail])?;
        let mut plan = ArchOf::<P>::analyze(&orig[..avail])?;
        if p.prefer_boost() {
            plan = ArchOf::<P>::boost_instead(&plan).unwrap_or(plan);
        }
        let len = ArchOf::<P>::insn_len(&plan);
        w.blacklist.check_file(key.file, key.offset, len as u64)?;

        // The file entry first, so the new probe can be linked from it.
        let fe = match self.probes.lookup(key.file.0, FILE_ENTRY) {
            Some(fe) => fe,
            None => {
                let fe = self.epoch_retry(|| {
                    self.probes
                        .claim(key.file.0, FILE_ENTRY, &self.epochs, Capacity::Probes)
                })?;
                let e = &self.probes.at(fe).val;
                e.reset();
                e.plan.set(None);
                self.probes.publish(fe);
                fe
            }
        };
        let pi = match self.epoch_retry(|| {
            self.probes
                .claim(key.file.0, key.offset, &self.epochs, Capacity::Probes)
        }) {
            Ok(pi) => pi,
            Err(e) => {
                self.drop_file_entry_if_empty(fe);
                return Err(e);
            }
        };
        let e = &self.probes.at(pi).val;
        e.reset();
        e.plan.set(Some(plan));
        e.orig.set(orig);
        e.opts.set(opts);
        // Link at the head of the file's probe list.
        let fhead = &self.probes.at(fe).val.next_of_file;
        let old = fhead.load(Ordering::Relaxed);
        e.next_of_file.store(old, Ordering::Relaxed);
        e.prev_of_file.store(NIL, Ordering::Relaxed);
        if old != NIL {
            self.probes
                .at(old)
                .val
                .prev_of_file
                .store(pi, Ordering::Relaxed);
        }
        fhead.store(pi, Ordering::Relaxed);
        self.probes.publish(pi);
        Ok((pi, true))
    }

    /// Run `f`; if a table was full, advance the epoch (reclaiming tombstones whose grace
    /// period has passed) and try once more.
    fn epoch_retry<T>(&self, mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        match f() {
            Err(Error::CapacityExhausted { .. }) => {
                self.epochs.try_advance();
                self.epochs.try_advance();
                f()
            }
            r => r,
        }
    }

    /// Free probe `pi`, which has no consumers and no sites left.
    fn drop_probe(&self, _p: &P, pi: u32) {
        let e = self.probes.at(pi);
        let (file, _) = e.key();
        let next = e.val.next_of_file.load(Ordering::Relaxed);
        let prev = e.val.prev_of_file.load(Ordering::Relaxed);
        let fe = self.probes.lookup(file, FILE_ENTRY);
        if prev != NIL {
            self.probes
                .at(prev)
                .val
                .next_of_file
                .store(next, Ordering::Relaxed);
        } else if let Some(fe) = fe {
            self.probes
                .at(fe)
                .val
                .next_of_file
                .store(next, Ordering::Relaxed);
        }
        if next != NIL {
            self.probes
                .at(next)
                .val
                .prev_of_file
                .store(prev, Ordering::Relaxed);
        }
        self.probes.remove(pi, &self.epochs);
        if let Some(fe) = fe {
            self.drop_file_entry_if_empty(fe);
        }
    }

    fn drop_file_entry_if_empty(&self, fe: u32) {
        if self.probes.at(fe).val.next_of_file.load(Ordering::Relaxed) == NIL {
            self.probes.remove(fe, &self.epochs);
        }
    }

    /// Unlink consumer `ci`, reconcile its probe's sites, wait for a grace period, and take the
    /// value out. Writer lock held.
    fn unregister_locked(&self, p: &P, ci: usize) -> Option<C> {
        let slot = &self.consumers[ci];
        let pi = slot.probe.load(Ordering::Relaxed);
        let probe = &self.probes.at(pi).val;
        // Unlink from the chain (readers already past it keep a valid `next`).
        let next = slot.next.load(Ordering::Relaxed);
        let mut cur = probe.consumers.load(Ordering::Relaxed);
        if cur == ci as u32 {
            probe.consumers.store(next, Ordering::Release);
        } else {
            while cur != NIL {
                let c = &self.consumers[cur as usize];
                let n = c.next.load(Ordering::Relaxed);
                if n == ci as u32 {
                    c.next.store(next, Ordering::Release);
                    break;
                }
                cur = n;
            }
        }
        slot.kill();
        // Remove the breakpoint where nobody wants it any more.
        let last = probe.consumers.load(Ordering::Relaxed) == NIL;
        let mut s = probe.sites.load(Ordering::Relaxed);
        while s != NIL {
            let site = self.sites.at(s);
            let nxt = site.val.next(List::Probe);
            let (space, _) = site.key();
            if last || !self.wanted(p, pi, SpaceId(space)) {
                let _ = self.remove_site(p, s, true);
            }
            s = nxt;
        }
        if last {
            self.drop_probe(p, pi);
        }
        // After this, no reader is still inside this consumer's handler.
        self.epochs.synchronize();
        let v = slot.value.replace(None);
        slot.free();
        v
    }

    // ---------------------------------------------------------------- filters

    /// Whether some live consumer of probe `pi` wants space `space`: it has no filter, or its
    /// filter accepts some task of the space.
    pub(crate) fn wanted(&self, p: &P, pi: u32, space: SpaceId) -> bool {
        let probe = &self.probes.at(pi).val;
        let mut ci = probe.consumers.load(Ordering::Acquire);
        let mut n = 0;
        while ci != NIL && n < CONSUMERS {
            let slot = &self.consumers[ci as usize];
            if slot.is_live() {
                if !slot.has_filter.load(Ordering::Relaxed) {
                    return true;
                }
                let mut yes = false;
                slot.value.with(|c| {
                    if let Some(c) = c {
                        p.for_each_task(space, &mut |t| {
                            if c.filter(p, space, t) {
                                yes = true;
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        });
                    }
                });
                if yes {
                    return true;
                }
            }
            ci = slot.next.load(Ordering::Acquire);
            n += 1;
        }
        false
    }

    /// Re-evaluate the filters of every probe for `space` (call when the embedder's filter
    /// answers changed, e.g. a task was created or a filter's target set changed): install
    /// where now wanted, remove where no longer wanted. Returns the first error; the rest
    /// proceed.
    pub fn refilter(&self, p: &P, space: SpaceId) -> Result<(), Error> {
        let w = self.writer.lock();
        self.refilter_locked(p, &w, space)
    }

    fn refilter_locked(&self, p: &P, w: &Writer, space: SpaceId) -> Result<(), Error> {
        let mut first: Result<(), Error> = Ok(());
        if let Some(sx) = self.spaces.lookup(space.0, 0) {
            let sp = &self.spaces.at(sx).val;
            sp.refilter.store(false, Ordering::Relaxed);
            let mut s = sp.sites.load(Ordering::Relaxed);
            while s != NIL {
                let site = self.sites.at(s);
                let nxt = site.val.next(List::Space);
                let pi = site.val.probe.load(Ordering::Relaxed);
                if !self.wanted(p, pi, space) {
                    if let Err(e) = self.remove_site(p, s, true) {
                        first = first.and(Err(e));
                    }
                }
                s = nxt;
            }
        }
        // Install where now wanted: walk every probed file's mappings in this space.
        for fe in self.probes.live_indices() {
            let (file, off) = self.probes.at(fe).key();
            if off != FILE_ENTRY {
                continue;
            }
            p.for_each_mapping(FileId(file), &mut |m| {
                if m.space == space && m.exec {
                    if let Err(e) = self.install_file_in_mapping(p, w, fe, &m) {
                        first = first.and(Err(e));
                    }
                }
                ControlFlow::Continue(())
            });
        }
        first
    }

    // ---------------------------------------------------------------- install / remove

    /// The rmap walk for probe `pi`: install in every mapping of its file where wanted.
    fn install_everywhere(&self, p: &P, w: &Writer, pi: u32) -> Result<(), Error> {
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
    fn install_file_in_mapping(
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

    fn install_if_wanted(&self, p: &P, w: &Writer, pi: u32, m: &Mapping) -> Result<(), Error> {
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
    fn install(&self, p: &P, w: &Writer, pi: u32, m: &Mapping, addr: Addr) -> Result<(), Error> {
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
                    sp.retire(slot, &self.epochs);
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
        self.sites.publish(si);
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
        // The SDT semaphore goes up in step with the breakpoint (seed 004), where its
        // mapping already exists; otherwise when it appears (`on_mmap`).
        if let Err(e) = self.sem_install(p, si, pi, m.space) {
            let _ = self.restore_bytes(p, pi, m.space, addr);
            self.forget_site(si);
            return Err(e);
        }
        Ok(())
    }

    /// Whether some live consumer of probe `pi` is a return consumer.
    pub(crate) fn probe_has_ret(&self, pi: u32) -> bool {
        let mut ci = self.probes.at(pi).val.consumers.load(Ordering::Acquire);
        let mut n = 0;
        while ci != NIL && n < CONSUMERS {
            let slot = &self.consumers[ci as usize];
            if slot.is_live() && slot.opts.get().ret.is_some() {
                return true;
            }
            ci = slot.next.load(Ordering::Acquire);
            n += 1;
        }
        false
    }

    /// The slot area of space entry `sx`, created on first use near `near`.
    fn ensure_xol_base(&self, p: &P, sx: u32, near: Addr) -> Result<Addr, Error> {
        let sp = &self.spaces.at(sx).val;
        let base = sp.xol_base.load(Ordering::Relaxed);
        if base != 0 {
            return Ok(Addr(base));
        }
        let space = SpaceId(self.spaces.at(sx).key().0);
        let base = p
            .xol_area(space, near, XOL)
            .ok_or(Error::NoXolArea(space))?;
        sp.xol_base.store(base.0, Ordering::Relaxed);
        Ok(base)
    }

    /// Take a free slot of space entry `sx`, advancing the grace period once if none is.
    fn take_slot(&self, sx: u32) -> Result<u32, Error> {
        let sp = &self.spaces.at(sx).val;
        match sp.alloc(&self.epochs) {
            Some(s) => Ok(s),
            None => {
                self.epochs.try_advance();
                self.epochs.try_advance();
                sp.alloc(&self.epochs).ok_or(Error::CapacityExhausted {
                    what: Capacity::XolSlots,
                })
            }
        }
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
                sp.retire(slot, &self.epochs);
                Err(e)
            }
        }
    }

    // ---------------------------------------------------------------- SDT semaphores

    /// Add `delta` (+1 or -1) to the 16-bit little-endian counter at `addr`, saturating: the
    /// counter never goes below zero, whatever the program wrote there, and only its two bytes
    /// are ever written.
    fn sem_update(&self, p: &P, space: SpaceId, addr: Addr, up: bool) -> Result<(), Error> {
        let mem = p.space(space).ok_or(Error::NoSuchSpace(space))?;
        let mut b = [0u8; 2];
        mem.read_exact(addr, &mut b)?;
        let v = u16::from_le_bytes(b);
        let n = if up {
            v.saturating_add(1)
        } else {
            v.saturating_sub(1)
        };
        mem.write(addr, &n.to_le_bytes())?;
        Ok(())
    }

    /// Where the semaphore at file `offset` of `file` lives in `space`: a writable mapping of
    /// the file covering both of its bytes.
    fn sem_addr_in(&self, p: &P, file: FileId, space: SpaceId, offset: u64) -> Option<Addr> {
        let mut found = None;
        p.for_each_mapping(file, &mut |m| {
            if m.space == space && m.write {
                if let (Some(a), Some(_)) = (m.addr_of(offset), m.addr_of(offset + 1)) {
                    found = Some(a);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        found
    }

    /// Increment the semaphore of probe `pi` for its site `si` in `space`, if it has one, the
    /// site has not counted yet, and the counter's mapping exists.
    fn sem_install(&self, p: &P, si: u32, pi: u32, space: SpaceId) -> Result<(), Error> {
        let Some(off) = self.probes.at(pi).val.opts.get().semaphore else {
            return Ok(());
        };
        let site = &self.sites.at(si).val;
        if site.sem_addr.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
        let (file, _) = self.probes.at(pi).key();
        if let Some(a) = self.sem_addr_in(p, FileId(file), space, off) {
            self.sem_update(p, space, a, true)?;
            site.sem_addr.store(a.0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Decrement what site `si` incremented, if anything.
    fn sem_remove(&self, p: &P, si: u32, space: SpaceId) -> Result<(), Error> {
        let a = self.sites.at(si).val.sem_addr.swap(0, Ordering::Relaxed);
        if a == 0 {
            return Ok(());
        }
        self.sem_update(p, space, Addr(a), false)
    }

    fn alloc_slot(
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
            let slot_addr = sp.slot_addr(slot, size).ok_or(Error::NoXolArea(space))?;
            let mut buf = [0u8; MAX_SLOT];
            let n = ArchOf::<P>::encode_slot(plan, addr, slot_addr, &mut buf[..size])?;
            mem.patch_code(slot_addr, &buf[..n.min(size)])?;
            Ok(slot_addr)
        })();
        match res {
            Ok(a) => Ok((slot, a)),
            Err(e) => {
                sp.retire(slot, &self.epochs);
                Err(e)
            }
        }
    }

    /// The space table entry for `space`, created if needed.
    fn space_entry(&self, _p: &P, space: SpaceId) -> Result<u32, Error> {
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

    fn link(&self, si: u32, l: List, head: &crate::sync::AtomicU32) {
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

    fn unlink(&self, si: u32, l: List, head: &crate::sync::AtomicU32) {
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

    /// Remove site `si`; with `restore`, put the original bytes back first (when the
    /// breakpoint is still ours). The site is forgotten either way.
    fn remove_site(&self, p: &P, si: u32, restore: bool) -> Result<(), Error> {
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

    fn restore_bytes(&self, p: &P, pi: u32, space: SpaceId, addr: Addr) -> Result<(), Error> {
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
    fn forget_site(&self, si: u32) {
        let site = &self.sites.at(si).val;
        let pi = site.probe.load(Ordering::Relaxed);
        let sx = site.space.load(Ordering::Relaxed);
        self.unlink(si, List::Probe, &self.probes.at(pi).val.sites);
        let sp = &self.spaces.at(sx).val;
        self.unlink(si, List::Space, &sp.sites);
        let slot = site.slot.load(Ordering::Relaxed);
        if slot != NIL {
            sp.retire(slot, &self.epochs);
        }
        self.sites.remove(si, &self.epochs);
    }

    // ---------------------------------------------------------------- events

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
        let cx = self.space_entry(p, child)?;
        let pp = &self.spaces.at(px).val;
        let cp = &self.spaces.at(cx).val;
        cp.xol_base
            .store(pp.xol_base.load(Ordering::Relaxed), Ordering::Relaxed);
        let tramp = pp.trampoline.load(Ordering::Relaxed);
        if tramp != 0 {
            // The child's memory holds the trampoline at the same address, in the same slot.
            let base = pp.xol_base.load(Ordering::Relaxed);
            let size = ArchOf::<P>::SLOT_SIZE as u64;
            if let Some(i) = tramp.checked_sub(base).map(|d| d / size) {
                cp.mark_used(i as u32);
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
                        cp.mark_used(slot);
                    }
                    self.link(ci, List::Probe, &self.probes.at(pi).val.sites);
                    self.link(ci, List::Space, &cp.sites);
                    self.sites.publish(ci);
                }
                Err(e) => {
                    // The child keeps a breakpoint the core cannot track: take it out.
                    let _ = self.restore_bytes(p, pi, child, Addr(addr));
                    first = first.and(Err(e));
                }
            }
            s = nxt;
        }
        first.and(self.refilter_locked(p, &w, child))
    }

    /// `space` executed a new program: its old mappings are gone, so are its breakpoints and
    /// slots. `task` is the task that called exec; its out-of-line state is dropped. The
    /// platform then reports the new image's mappings with [`on_mmap`](Self::on_mmap).
    pub fn on_exec<const D: usize>(&self, p: &P, space: SpaceId, task: &mut TaskState<P::Arch, D>) {
        self.forget_task(task);
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

    /// A task exited: release what the core held for it (its slot, its return instances).
    pub fn on_task_exit<const D: usize>(&self, task: &mut TaskState<P::Arch, D>) {
        self.forget_task(task);
    }

    pub(crate) fn forget_task<const D: usize>(&self, task: &mut TaskState<P::Arch, D>) {
        task.step = None;
        if let Some(r) = task.xol.take() {
            self.leave_slot(&r);
        }
        while let Some(i) = task.rets.pop() {
            self.put_instance(i.consumer, i.generation);
        }
    }

    /// Give back a return instance of consumer `ci`, generation `g`.
    pub(crate) fn put_instance(&self, ci: u32, g: u32) {
        if let Some(slot) = self.consumers.get(ci as usize) {
            slot.put_instance(g);
        }
    }

    /// A task forked `child` from `parent` (a new process): the child's stack is a copy, so it
    /// inherits the parent's hijacked return addresses and the instances that undo them.
    pub fn on_task_fork<const D: usize>(
        &self,
        parent: &TaskState<P::Arch, D>,
        child: &mut TaskState<P::Arch, D>,
    ) {
        self.forget_task(child);
        for i in parent.rets.iter() {
            if child.rets.push(*i).is_ok() {
                if let Some(slot) = self.consumers.get(i.consumer as usize) {
                    slot.add_instance(i.generation);
                }
            }
        }
    }

    /// Detach from a task: put every hijacked return address on its stack back (where the
    /// slot still holds the trampoline) and drop its instances, so that the program returns
    /// normally without the core. Returns the first error; the rest proceed.
    pub fn restore_returns<const D: usize>(
        &self,
        p: &P,
        space: SpaceId,
        task: &mut TaskState<P::Arch, D>,
    ) -> Result<(), Error> {
        let mut first = Ok(());
        let tramp = self
            .spaces
            .lookup(space.0, 0)
            .map(|sx| self.spaces.at(sx).val.trampoline.load(Ordering::Relaxed))
            .unwrap_or(0);
        if tramp != 0 && !task.rets.is_empty() {
            match p.space(space) {
                Some(mem) => {
                    for i in task.rets.iter().filter(|i| !i.chained) {
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
        self.forget_task(task);
        first
    }

    /// The return trampoline's address in `space`, if it has one.
    pub fn trampoline(&self, space: SpaceId) -> Option<Addr> {
        let sx = self.spaces.lookup(space.0, 0)?;
        let t = self.spaces.at(sx).val.trampoline.load(Ordering::Acquire);
        (t != 0).then_some(Addr(t))
    }

    /// Calls of a return consumer that found no free instance (seed 002's `nmissed`).
    pub fn nmissed(&self, h: ConsumerHandle) -> Result<u64, Error> {
        let slot = self
            .consumers
            .get(h.index as usize)
            .filter(|s| s.is_live() && s.generation() == h.generation)
            .ok_or(Error::UnknownConsumer)?;
        Ok(slot.nmissed.load(Ordering::Relaxed))
    }

    /// Instances of a return consumer in use right now.
    pub fn instances_in_use(&self, h: ConsumerHandle) -> Result<u32, Error> {
        let slot = self
            .consumers
            .get(h.index as usize)
            .filter(|s| s.is_live() && s.generation() == h.generation)
            .ok_or(Error::UnknownConsumer)?;
        Ok(slot.instances())
    }

    /// Process what handlers deferred (removal requests) and advance the grace period. Call it
    /// outside the hit path, e.g. after handling each event.
    pub fn maintain(&self, p: &P) -> Result<(), Error> {
        self.epochs.try_advance();
        let pending = self.pending.swap(false, Ordering::AcqRel);
        let w = self.writer.lock();
        self.probes.maybe_sweep(&self.epochs);
        self.sites.maybe_sweep(&self.epochs);
        self.spaces.maybe_sweep(&self.epochs);
        if !pending {
            return Ok(());
        }
        let mut first = Ok(());
        for sx in self.spaces.live_indices() {
            let e = self.spaces.at(sx);
            if e.val.refilter.load(Ordering::Relaxed) {
                first = first.and(self.refilter_locked(p, &w, SpaceId(e.key().0)));
            }
        }
        first
    }

    /// A quiescent-state report: the calling context holds no reference into the core. The
    /// core advances the grace-period clock if every CPU has passed the current epoch, making
    /// retired probes, sites and slots reusable. Lock-free; callable from anywhere.
    pub fn quiescent(&self) {
        self.epochs.try_advance();
    }

    /// Whether `cpu` may call the read-side paths (it is below `CPUS`).
    pub fn check_cpu(&self, cpu: CpuId) -> Result<(), Error> {
        if (cpu.0 as usize) < CPUS {
            Ok(())
        } else {
            Err(Error::CapacityExhausted {
                what: Capacity::Cpus,
            })
        }
    }

    // ---------------------------------------------------------------- introspection

    /// Number of probes (distinct (file, offset) keys with consumers).
    pub fn probe_count(&self) -> usize {
        let _w = self.writer.lock();
        self.probes
            .live_indices()
            .filter(|&i| self.probes.at(i).key().1 != FILE_ENTRY)
            .count()
    }

    /// Number of installed breakpoints over all spaces.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// Whether a breakpoint of ours is installed at `addr` of `space`.
    pub fn is_installed(&self, space: SpaceId, addr: Addr) -> bool {
        self.sites.lookup(space.0, addr.0).is_some()
    }

    /// The installed breakpoints of `space`, as (address, probe key) pairs.
    pub fn for_each_site(&self, space: SpaceId, mut f: impl FnMut(Addr, ProbeKey)) {
        let _w = self.writer.lock();
        let Some(sx) = self.spaces.lookup(space.0, 0) else {
            return;
        };
        let mut s = self.spaces.at(sx).val.sites.load(Ordering::Relaxed);
        while s != NIL {
            let site = self.sites.at(s);
            let (file, off) = self.probes.at(site.val.probe.load(Ordering::Relaxed)).key();
            f(Addr(site.key().1), ProbeKey::new(FileId(file), off));
            s = site.val.next(List::Space);
        }
    }

    /// The plan of the probe at `key`, if registered.
    pub fn plan_of(&self, key: ProbeKey) -> Option<<ArchOf<P> as Arch>::Plan> {
        let _w = self.writer.lock();
        let pi = self.probes.lookup(key.file.0, key.offset)?;
        self.probes.at(pi).val.plan.get()
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
