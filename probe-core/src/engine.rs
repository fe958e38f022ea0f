//! The engine: [`ProbeCore`], its tables, registration, the rmap walk and the events that keep
//! every space's installed breakpoints exact. The hit path is in `hit.rs`.

use core::marker::PhantomData;

use crate::addr::{Addr, CpuId, FileId, ProbeKey, Range, SpaceId};
use crate::arch::Arch;
use crate::blacklist::Blacklist;
use crate::consumer::{Consumer, ConsumerHandle, ConsumerOptions, ConsumerSlot};
use crate::error::{Capacity, Error};
use crate::platform::{read_file_exact, Platform};
use crate::probe::{ProbePayload, FILE_ENTRY, MAX_ORIG};
use crate::reclaim::Epochs;
use crate::site::{List, SitePayload};
use crate::space::SpacePayload;
use crate::sync::{
    array_of, const_fn, AtomicBool, AtomicU64, CachePadded, Mutex, Ordering, SpinLock,
};
use crate::table::{Table, NIL};
use crate::task::RET_DATA_MAX;

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
/// In normal builds [`new`](ProbeCore::new) is `const`, so a core can be a `static`. An empty
/// core is all zero bits, whatever the platform, consumer and sizes (every blank field is an
/// integer, an atomic, an unlocked spin lock, or an optional value as a `false` flag beside
/// uninitialised bytes): a static core lands in `.bss`, and a core in freshly zeroed memory
/// (an embedder's zeroed pages, an anonymous `mmap`) is a valid empty core, committed only
/// where it is written. Loom builds are the exception (loom's atomics are not plain memory).
///
/// # The writer lock, `L`
///
/// Every call that changes the tables, and the few that walk writer-only lists, is serialised
/// by one lock of the embedder's raw lock type `L`: any [`lock_api::RawMutex`] (its `const
/// INIT` keeps [`new`](ProbeCore::new) `const`, and an `INIT` that is all zero bits keeps a
/// static core in `.bss`). The default, [`SpinLock`], spins. While it holds `L` the core calls
/// the platform's writer-side callbacks: every [`Platform`] method (`space`,
/// `for_each_mapping`, `for_each_task`, `file_size`, `read_file`, `xol_area`, `prefer_boost`,
/// `privileged`), consumers' [`filter`](crate::Consumer::filter), and, through `space`, [`AddressSpace`](crate::AddressSpace)'s `read`, `write`
/// (SDT semaphores) and `patch_code` (every breakpoint, slot
/// and trampoline written or removed); it also waits for grace periods
/// ([`unregister`](ProbeCore::unregister) waits for handlers running on other CPUs). So `L`
/// must allow what those callbacks do: a kernel whose `patch_code` takes its text mutex and
/// may sleep (Linux's `text_poke` under `text_mutex`) picks its sleeping mutex, as Linux's
/// kprobes take `kprobe_mutex` before `text_mutex`; a platform whose callbacks never sleep
/// may keep the spin lock. The hit, single-step and return paths never take `L`.
///
/// # Which context may call what
///
/// - **Process context only** (they take `L`, may wait for a grace period, and allocate when
///   the architecture's analysis does): [`register`](ProbeCore::register),
///   [`unregister`](ProbeCore::unregister), `blacklist_file`, `blacklist_addr`, `maintain`,
///   `refilter`, the platform's events (`on_mmap`, `on_munmap`, `on_fork`, `on_exec`,
///   `on_space_exit`, `on_xol_lost`, `detach_space`), and `probe_count`, `for_each_site`,
///   `plan_of`, `probe_nmissed`. Never from a consumer's handler, an interrupt or an NMI:
///   the lock may be held by the code they interrupted.
/// - **Any context, interrupts and NMIs included** (lock-free, bounded, no allocation, no
///   panic): the trap paths (`on_breakpoint`, `on_single_step`, `abort_single_step`,
///   `seen_at`, `unnest`, `clear_trap`), [`advance_epoch`](ProbeCore::advance_epoch),
///   `check_cpu`, `site_count`, `is_installed`, `insn_len_at`, `trampoline`, `nmissed`,
///   `instances_in_use`. A context that can interrupt a trap in flight (an NMI over a `#BP`
///   handler) passes a [`TrapState`](crate::TrapState) of its own. On these paths the core
///   calls only `Platform::space`, `Platform::breakpoint_address` and the `AddressSpace`'s
///   `read` and `write` (emulation, return-address hijacking), which must then be callable
///   there too.
/// - The task-state calls (`on_task_exit`, `on_task_fork`, `restore_returns`) take no lock;
///   they run where the platform owns the task's state.
pub struct ProbeCore<
    P: Platform,
    C,
    const PROBES: usize,
    const CONSUMERS: usize,
    const SITES: usize,
    const SPACES: usize,
    const XOL: usize,
    const CPUS: usize,
    L: lock_api::RawMutex = SpinLock,
> {
    pub(crate) epochs: Epochs<CPUS>,
    pub(crate) probes: Table<ProbePayload<P::Arch>, PROBES>,
    pub(crate) sites: Table<SitePayload, SITES>,
    pub(crate) spaces: Table<SpacePayload<XOL>, SPACES>,
    pub(crate) consumers: [ConsumerSlot<C>; CONSUMERS],
    pub(crate) writer: Mutex<L, Writer>,
    /// Some space has a pending filter re-evaluation.
    pub(crate) pending: AtomicBool,
    /// Bumped on every site publication and removal (writer only; readers read it on the
    /// miss path), on a line of its own.
    pub(crate) site_changes: CachePadded<AtomicU64>,
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
        L: lock_api::RawMutex,
    > core::fmt::Debug for ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS, L>
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

pub(crate) type ArchOf<P> = <P as Platform>::Arch;

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
        L: lock_api::RawMutex,
    > Default for ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS, L>
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
        L: lock_api::RawMutex,
    > ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS, L>
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
                site_changes: CachePadded::new(AtomicU64::new(0)),
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

    pub(crate) fn alloc_consumer(&self, w: &mut Writer) -> Option<usize> {
        for k in 0..CONSUMERS {
            let i = (w.consumer_cursor + k) % CONSUMERS;
            if self.consumers[i].is_free() {
                w.consumer_cursor = (i + 1) % CONSUMERS;
                return Some(i);
            }
        }
        None
    }

    pub(crate) fn find_or_create_probe(
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
        let mut plan = if p.privileged() {
            ArchOf::<P>::analyze_privileged(&orig[..avail])?
        } else {
            ArchOf::<P>::analyze(&orig[..avail])?
        };
        if p.prefer_boost() {
            plan = ArchOf::<P>::boost_instead(&plan).unwrap_or(plan);
        }
        let len = ArchOf::<P>::insn_len(&plan);
        w.blacklist.check_file(key.file, key.offset, len as u64)?;
        self.check_overlap(key, len)?;

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

    /// Refuse a new probe at `key` (instruction of `len` bytes) that lies inside an existing
    /// probe's instruction or covers one: removing either would leave half an instruction
    /// patched. At most `2 * MAX_INSN_LEN` lookups.
    fn check_overlap(&self, key: ProbeKey, len: usize) -> Result<(), Error> {
        let overlaps = |existing: u64| Error::Overlaps {
            file: key.file,
            offset: key.offset,
            existing,
        };
        for d in 1..ArchOf::<P>::MAX_INSN_LEN as u64 {
            let Some(before) = key.offset.checked_sub(d) else {
                break;
            };
            if let Some(pi) = self.probes.lookup(key.file.0, before) {
                let plan = self.probes.at(pi).val.plan.get();
                if plan.is_some_and(|pl| ArchOf::<P>::insn_len(&pl) as u64 > d) {
                    return Err(overlaps(before));
                }
            }
        }
        for d in 1..len as u64 {
            let Some(after) = key.offset.checked_add(d) else {
                break;
            };
            if after != FILE_ENTRY && self.probes.lookup(key.file.0, after).is_some() {
                return Err(overlaps(after));
            }
        }
        Ok(())
    }

    /// Run `f`; if a table was full, advance the epoch (reclaiming tombstones whose grace
    /// period has passed) and try once more.
    pub(crate) fn epoch_retry<T>(
        &self,
        mut f: impl FnMut() -> Result<T, Error>,
    ) -> Result<T, Error> {
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
    pub(crate) fn drop_probe(&self, _p: &P, pi: u32) {
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

    pub(crate) fn drop_file_entry_if_empty(&self, fe: u32) {
        if self.probes.at(fe).val.next_of_file.load(Ordering::Relaxed) == NIL {
            self.probes.remove(fe, &self.epochs);
        }
    }

    /// Unlink consumer `ci`, reconcile its probe's sites, wait for a grace period, and take the
    /// value out. Writer lock held.
    pub(crate) fn unregister_locked(&self, p: &P, ci: usize) -> Option<C> {
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

    /// Try to advance the grace-period clock: it moves on when every CPU inside a read-side
    /// section is pinned at the current epoch, making retired probes, sites and slots
    /// reusable two advances after they were retired. Lock-free; callable from any context
    /// (a timer tick on every CPU, an idle loop), as often as wanted. Returns the epoch.
    pub fn advance_epoch(&self) -> u64 {
        self.epochs.try_advance()
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

    /// The length of the original instruction under our breakpoint at `addr` of `space`, if
    /// one is installed there. A platform that learns the trap's cause at a price (Linux:
    /// one more ptrace request) may skip asking when this is longer than the breakpoint:
    /// the context can then stand just past the breakpoint only by having executed it.
    pub fn insn_len_at(&self, space: SpaceId, addr: Addr) -> Option<usize> {
        let si = self.sites.lookup(space.0, addr.0)?;
        let pi = self.sites.at(si).val.probe.load(Ordering::Relaxed);
        let plan = self.probes.at(pi).val.plan.get()?;
        Some(<ArchOf<P> as Arch>::insn_len(&plan))
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

    /// The key of the probe consumer `handle` is registered on, if it is registered.
    pub fn key_of(&self, handle: ConsumerHandle) -> Option<ProbeKey> {
        let _w = self.writer.lock();
        let slot = self.consumers.get(handle.index as usize)?;
        if !slot.is_live() || slot.generation() != handle.generation {
            return None;
        }
        let (file, off) = self.probes.at(slot.probe.load(Ordering::Relaxed)).key();
        Some(ProbeKey::new(FileId(file), off))
    }

    /// The plan of the probe at `key`, if registered.
    pub fn plan_of(&self, key: ProbeKey) -> Option<<ArchOf<P> as Arch>::Plan> {
        let _w = self.writer.lock();
        let pi = self.probes.lookup(key.file.0, key.offset)?;
        self.probes.at(pi).val.plan.get()
    }
}
