//! [`LinuxConsumer`]: what the tracer attaches to each probe, and the state its handlers
//! share with the event loop ([`Shared`]).
//!
//! Handlers run synchronously in the tracer thread (inside `on_breakpoint`), so they only
//! bump a counter, queue a record for `--print`, or note that a space's mappings must be
//! read again (the dynamic linker's hook); the event loop acts on those after the hit.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use probe_core::{
    Consumer, EntryAction, HandlerAction, HitContext, Registers, ReturnContext, SpaceId,
};

use super::platform::LinuxPlatform;

/// What a consumer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A user's probe: index into the tracer's probe table.
    Probe(usize),
    /// The dynamic linker's `_dl_debug_state`: the space's mappings changed.
    DlHook,
}

/// One hit (or return) as `--print` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitRecord {
    /// Nanoseconds since the session started.
    pub time_ns: u64,
    /// The process (thread group).
    pub pid: u64,
    /// The thread.
    pub tid: u64,
    /// Index into the session's probe table.
    pub probe: usize,
    /// The first integer arguments (SysV registers), as many as asked for.
    pub args: Vec<u64>,
    /// For a return probe: the return value.
    pub retval: Option<u64>,
}

/// State shared by the consumers and the event loop.
#[derive(Debug)]
pub struct Shared {
    counts: Mutex<Vec<Arc<AtomicU64>>>,
    /// How many arguments a record holds; `None` when hits are not recorded.
    record_args: Option<usize>,
    records: Mutex<Vec<HitRecord>>,
    rescan: Mutex<Vec<SpaceId>>,
    start: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Shared state; `record_args` is `Some(n)` to record each hit with `n` arguments.
    pub fn new(record_args: Option<usize>) -> Shared {
        Shared {
            counts: Mutex::new(Vec::new()),
            record_args,
            records: Mutex::new(Vec::new()),
            rescan: Mutex::new(Vec::new()),
            start: Instant::now(),
        }
    }

    /// A counter for a new probe; returns its index.
    pub fn add_counter(&self) -> (usize, Arc<AtomicU64>) {
        let mut c = lock(&self.counts);
        let a = Arc::new(AtomicU64::new(0));
        c.push(a.clone());
        (c.len() - 1, a)
    }

    /// Hits of probe `i`.
    pub fn count(&self, i: usize) -> u64 {
        lock(&self.counts)
            .get(i)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Takes the queued hit records.
    pub fn take_records(&self) -> Vec<HitRecord> {
        core::mem::take(&mut *lock(&self.records))
    }

    /// Whether hit records are queued.
    pub fn has_records(&self) -> bool {
        self.record_args.is_some() && !lock(&self.records).is_empty()
    }

    /// Takes the spaces whose mappings must be read again.
    pub fn take_rescans(&self) -> Vec<SpaceId> {
        let mut v = core::mem::take(&mut *lock(&self.rescan));
        v.sort();
        v.dedup();
        v
    }

    /// Whether a rescan is pending.
    pub fn rescan_pending(&self) -> bool {
        !lock(&self.rescan).is_empty()
    }

    /// When the session started.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn record(
        &self,
        probe: usize,
        space: SpaceId,
        task: u64,
        args: impl FnOnce(usize) -> Vec<u64>,
        retval: Option<u64>,
    ) {
        let Some(n) = self.record_args else {
            return;
        };
        let rec = HitRecord {
            time_ns: self.start.elapsed().as_nanos() as u64,
            pid: space.0,
            tid: task,
            probe,
            args: args(n),
            retval,
        };
        lock(&self.records).push(rec);
    }
}

/// The consumer the tracer registers on every probe.
#[derive(Debug, Clone)]
pub struct LinuxConsumer {
    role: Role,
    hits: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl LinuxConsumer {
    /// A consumer counting into `hits`.
    pub fn new(role: Role, hits: Arc<AtomicU64>, shared: Arc<Shared>) -> LinuxConsumer {
        LinuxConsumer { role, hits, shared }
    }

    /// What it is for.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl Consumer<LinuxPlatform> for LinuxConsumer {
    fn handler(&self, ctx: &mut HitContext<'_, LinuxPlatform>) -> HandlerAction {
        self.hits.fetch_add(1, Ordering::Relaxed);
        match self.role {
            Role::DlHook => lock(&self.shared.rescan).push(ctx.space),
            Role::Probe(i) => {
                let regs = &*ctx.regs;
                self.shared.record(
                    i,
                    ctx.space,
                    ctx.task.0,
                    |n| (0..n).map(|k| regs.arg(k).unwrap_or(0)).collect(),
                    None,
                );
            }
        }
        HandlerAction::Keep
    }

    fn entry_handler(
        &self,
        _ctx: &mut HitContext<'_, LinuxPlatform>,
        _data: &mut [u8],
    ) -> EntryAction {
        EntryAction::Track
    }

    fn return_handler(&self, ctx: &mut ReturnContext<'_, LinuxPlatform>, _data: &mut [u8]) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        if let Role::Probe(i) = self.role {
            let ret = ctx.regs.return_value();
            self.shared
                .record(i, ctx.space, ctx.task.0, |_| Vec::new(), Some(ret));
        }
    }
}
