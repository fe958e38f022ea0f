//! [`LinuxConsumer`]: what the tracer attaches to each probe, and the state its handlers
//! share with the event loop ([`Shared`]).
//!
//! Handlers run synchronously in the tracer thread (inside `on_breakpoint`), so they only
//! bump a counter, queue a record for `--print`, or note that a space's mappings must be
//! read again (the dynamic linker's hook); the event loop acts on those after the hit.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use probe_core::{
    Consumer, EntryAction, HandlerAction, HitContext, Platform, Registers, ReturnContext, SpaceId,
};

use super::platform::LinuxPlatform;
use super::ret_insn::{InsnRole, InsnSite};
use crate::latency::LatencyHist;
use crate::usdt::{UsdtDecoder, UsdtValue};

/// What a consumer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A user's probe: index into the tracer's probe table.
    Probe(usize),
    /// The dynamic linker's `_dl_debug_state`: the space's mappings changed.
    DlHook,
    /// An unwinder's entry (`_Unwind_RaiseException`, `_Unwind_Resume`...): the thread is
    /// about to walk its stack, so its hijacked return addresses are put back first.
    UnwindStart,
    /// An exit of an unwinder entry: its jump to a landing pad (a `catch`, a Rust
    /// `catch_unwind`, a cleanup) or its `ret`; the frames above the stack pointer survived
    /// and their return addresses are hijacked again.
    UnwindLeave,
    /// `__cxa_begin_catch`: an exception was caught (as [`UnwindLeave`](Role::UnwindLeave),
    /// for an unwinder whose exits were not found).
    UnwindCatch,
    /// libc's `ptrace`: the program's own tracing, which fails while we trace it.
    PtraceCall,
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
    /// For a return probe: nanoseconds from the entry to the return.
    pub duration_ns: Option<u64>,
    /// For a USDT probe: its decoded arguments (then `args` is empty).
    pub usdt: Vec<UsdtValue>,
}

/// State shared by the consumers and the event loop.
#[derive(Debug)]
pub struct Shared {
    counts: Mutex<Vec<Arc<AtomicU64>>>,
    /// How many arguments a record holds; `None` when hits are not recorded.
    record_args: Option<usize>,
    records: Mutex<Vec<HitRecord>>,
    rescan: Mutex<Vec<SpaceId>>,
    /// Unwinder hooks hit: handled by the event loop after the hit.
    unwind: Mutex<Vec<super::returns::UnwindEvent>>,
    /// Calls of libc's `ptrace` seen by its hook.
    ptrace: Mutex<Vec<super::ptrace_hook::PtraceCall>>,
    /// `--stack`: the hits whose stack the event loop walks after the hit.
    stacks: Option<Mutex<Vec<StackRequest>>>,
    /// Set after anything is queued in `rescan`, `unwind`, `ptrace` or `stacks`: the hit
    /// path looks at one flag instead of locking four queues.
    queued: AtomicBool,
    start: Instant,
    /// Arguments of recorded hits shown as strings (bit `i`: argument `i`).
    string_args: u16,
}

/// A hit whose user stack is to be walked (`--stack`), with the registers at the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackRequest {
    pub(crate) task: probe_core::TaskId,
    pub(crate) regs: crate::stack::StackRegs,
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
            unwind: Mutex::new(Vec::new()),
            ptrace: Mutex::new(Vec::new()),
            stacks: None,
            queued: AtomicBool::new(false),
            string_args: 0,
            start: Instant::now(),
        }
    }

    /// The same, showing argument `i` of recorded hits as a C string where bit `i` of
    /// `strings` is set (`--str`): read from the traced memory at the hit.
    pub fn with_strings(mut self, strings: u16) -> Shared {
        self.string_args = strings;
        self
    }

    /// The same, asking the event loop to walk the user stack of each hit (`--stack`).
    pub fn with_stacks(mut self, stacks: bool) -> Shared {
        self.stacks = stacks.then(|| Mutex::new(Vec::new()));
        self
    }

    /// Queues the stack of a hit, if `--stack` asked for stacks.
    fn want_stack(&self, ctx: &HitContext<'_, LinuxPlatform>) {
        if let Some(q) = &self.stacks {
            lock(q).push(StackRequest {
                task: ctx.task,
                regs: crate::stack::StackRegs {
                    ip: ctx.addr.0,
                    sp: ctx.regs.sp(),
                    bp: ctx.regs.rbp,
                },
            });
            self.mark_queued();
        }
    }

    /// Takes the hits whose stacks are to be walked.
    pub(crate) fn take_stacks(&self) -> Vec<StackRequest> {
        self.stacks
            .as_ref()
            .map(|q| core::mem::take(&mut *lock(q)))
            .unwrap_or_default()
    }

    /// Notes that a queue of work for the event loop got an entry (after the push).
    fn mark_queued(&self) {
        self.queued.store(true, Ordering::Release);
    }

    /// Whether anything was queued for the event loop since the last call (one atomic swap;
    /// then the `*_pending` checks tell what). An entry pushed after the swap sets the flag
    /// again, so none is missed.
    pub(crate) fn take_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) && self.queued.swap(false, Ordering::AcqRel)
    }

    /// Whether a stack is to be walked.
    pub(crate) fn stack_pending(&self) -> bool {
        self.stacks.as_ref().is_some_and(|q| !lock(q).is_empty())
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
            duration_ns: None,
            usdt: Vec::new(),
        };
        lock(&self.records).push(rec);
    }

    /// Records a hit of USDT probe `probe` with its decoded arguments.
    fn record_usdt(
        &self,
        probe: usize,
        space: SpaceId,
        task: u64,
        values: impl FnOnce() -> Vec<UsdtValue>,
    ) {
        if self.record_args.is_none() {
            return;
        }
        let rec = HitRecord {
            time_ns: self.start.elapsed().as_nanos() as u64,
            pid: space.0,
            tid: task,
            probe,
            args: Vec::new(),
            retval: None,
            duration_ns: None,
            usdt: values(),
        };
        lock(&self.records).push(rec);
    }

    /// Nanoseconds since the session started (the clock of return-probe timestamps).
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records a return of probe `probe` with its value and duration.
    fn record_return(&self, probe: usize, space: SpaceId, task: u64, ret: u64, dur: u64) {
        if self.record_args.is_none() {
            return;
        }
        let rec = HitRecord {
            time_ns: self.now_ns(),
            pid: space.0,
            tid: task,
            probe,
            args: Vec::new(),
            retval: Some(ret),
            duration_ns: Some(dur),
            usdt: Vec::new(),
        };
        lock(&self.records).push(rec);
    }

    /// Takes the unwinder-hook hits queued by the handlers.
    pub(crate) fn take_unwinds(&self) -> Vec<super::returns::UnwindEvent> {
        core::mem::take(&mut *lock(&self.unwind))
    }

    /// Takes the `ptrace` calls queued by the hook.
    pub(crate) fn take_ptrace_calls(&self) -> Vec<super::ptrace_hook::PtraceCall> {
        core::mem::take(&mut *lock(&self.ptrace))
    }

    /// Whether the `ptrace` hook was hit.
    pub(crate) fn ptrace_pending(&self) -> bool {
        !lock(&self.ptrace).is_empty()
    }

    /// Whether an unwinder hook was hit.
    pub(crate) fn unwind_pending(&self) -> bool {
        !lock(&self.unwind).is_empty()
    }
}

/// The consumer the tracer registers on every probe.
#[derive(Debug, Clone)]
pub struct LinuxConsumer {
    role: Role,
    hits: Arc<AtomicU64>,
    shared: Arc<Shared>,
    /// For a USDT probe: how to decode its marker's arguments.
    usdt: Option<Arc<UsdtDecoder>>,
    /// Return consumers: where durations go (`--latency`).
    latency: Option<Arc<LatencyHist>>,
    /// Return consumers of an entry probe (`uprobe:` with `--latency`): count and record
    /// the entry, not the return.
    counts_entries: bool,
    /// `--ret-by-insn`: a breakpoint on the function's entry, a `ret` or a restart.
    insn: Option<InsnRole>,
}

impl LinuxConsumer {
    /// A consumer counting into `hits`.
    pub fn new(role: Role, hits: Arc<AtomicU64>, shared: Arc<Shared>) -> LinuxConsumer {
        LinuxConsumer {
            role,
            hits,
            shared,
            usdt: None,
            latency: None,
            counts_entries: false,
            insn: None,
        }
    }

    /// For a return consumer: durations go to `hist` (if any); `counts_entries` makes it
    /// count and record the entries (an entry probe registered as a return consumer for
    /// `--latency`) instead of the returns.
    pub fn with_latency(
        mut self,
        hist: Option<Arc<LatencyHist>>,
        counts_entries: bool,
    ) -> LinuxConsumer {
        self.latency = hist;
        self.counts_entries = counts_entries;
        self
    }

    /// The same consumer on a USDT marker: hits record the marker's decoded arguments.
    pub fn with_usdt(mut self, decoder: Arc<UsdtDecoder>) -> LinuxConsumer {
        self.usdt = Some(decoder);
        self
    }

    /// The same consumer on an instruction of a function probed by `--ret-by-insn`.
    pub fn with_insn(mut self, insn: InsnRole) -> LinuxConsumer {
        self.insn = Some(insn);
        self
    }

    /// A hit of a `--ret-by-insn` breakpoint: an entry starts a call (counted and recorded
    /// only for an entry probe timed by `--latency`), a `ret` ends one and is reported as a
    /// return probe's return is.
    fn insn_hit(&self, insn: &InsnRole, i: usize, ctx: &mut HitContext<'_, LinuxPlatform>) {
        let regs = &*ctx.regs;
        let owner = (
            i,
            if insn.by_goroutine {
                regs.r14
            } else {
                ctx.task.0
            },
        );
        match insn.site {
            InsnSite::Restart => insn.calls.restart(owner),
            InsnSite::Entry => {
                let called = if insn.track {
                    insn.calls.enter(owner, regs.sp(), self.shared.now_ns())
                } else {
                    !insn.calls.take_restart(owner)
                };
                if called && self.counts_entries {
                    self.shared.want_stack(ctx);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    self.shared.record(
                        i,
                        ctx.space,
                        ctx.task.0,
                        |n| (0..n).map(|k| regs.arg(k).unwrap_or(0)).collect(),
                        None,
                    );
                }
            }
            InsnSite::Ret => {
                let dur = insn
                    .calls
                    .leave(owner, regs.sp(), !insn.by_goroutine)
                    .map(|t| self.shared.now_ns().saturating_sub(t));
                if let (Some(h), Some(d)) = (&self.latency, dur) {
                    h.record(d);
                }
                if self.counts_entries {
                    return;
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                let ret = regs.return_value();
                match dur {
                    Some(d) => self.shared.record_return(i, ctx.space, ctx.task.0, ret, d),
                    None => self
                        .shared
                        .record(i, ctx.space, ctx.task.0, |_| Vec::new(), Some(ret)),
                }
            }
        }
    }

    /// What it is for.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl Consumer<LinuxPlatform> for LinuxConsumer {
    fn handler(&self, ctx: &mut HitContext<'_, LinuxPlatform>) -> HandlerAction {
        if let (Some(insn), Role::Probe(i)) = (&self.insn, self.role) {
            self.insn_hit(insn, i, ctx);
            return HandlerAction::Keep;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        match self.role {
            Role::DlHook => {
                lock(&self.shared.rescan).push(ctx.space);
                self.shared.mark_queued();
            }
            Role::PtraceCall => {
                lock(&self.shared.ptrace).push(super::ptrace_hook::PtraceCall {
                    space: ctx.space,
                    request: ctx.regs.arg(0).unwrap_or(u64::MAX),
                    target: ctx.regs.arg(1).unwrap_or(u64::MAX),
                });
                self.shared.mark_queued();
            }
            Role::UnwindStart | Role::UnwindLeave | Role::UnwindCatch => {
                use super::returns::UnwindKind;
                lock(&self.shared.unwind).push(super::returns::UnwindEvent {
                    task: ctx.task,
                    sp: ctx.regs.sp(),
                    kind: match self.role {
                        Role::UnwindStart => UnwindKind::Start,
                        Role::UnwindLeave => UnwindKind::Leave,
                        _ => UnwindKind::Catch,
                    },
                });
                self.shared.mark_queued();
            }
            Role::Probe(i) if self.usdt.is_some() => {
                self.shared.want_stack(ctx);
                let regs = &*ctx.regs;
                let mem = ctx.platform.space(ctx.space);
                self.shared.record_usdt(i, ctx.space, ctx.task.0, || {
                    self.usdt
                        .as_ref()
                        .map(|d| d.decode(regs, ctx.addr.0, mem.as_ref()))
                        .unwrap_or_default()
                });
            }
            Role::Probe(i) => {
                self.shared.want_stack(ctx);
                let regs = &*ctx.regs;
                if self.shared.string_args != 0 {
                    let n = self.shared.record_args.unwrap_or(0);
                    let strings = self.shared.string_args;
                    let mem = ctx.platform.space(ctx.space);
                    self.shared.record_usdt(i, ctx.space, ctx.task.0, || {
                        (0..n.max(usize::from(16 - strings.leading_zeros() as u8)))
                            .map(|k| {
                                let v = regs.arg(k).unwrap_or(0);
                                match &mem {
                                    Some(m) if strings & (1 << k) != 0 => {
                                        crate::usdt::read_string(m, v)
                                    }
                                    _ => UsdtValue::Int {
                                        value: v,
                                        signed: false,
                                        width: 8,
                                    },
                                }
                            })
                            .collect()
                    });
                } else {
                    self.shared.record(
                        i,
                        ctx.space,
                        ctx.task.0,
                        |n| (0..n).map(|k| regs.arg(k).unwrap_or(0)).collect(),
                        None,
                    );
                }
            }
        }
        HandlerAction::Keep
    }

    fn entry_handler(
        &self,
        ctx: &mut HitContext<'_, LinuxPlatform>,
        data: &mut [u8],
    ) -> EntryAction {
        if self.counts_entries {
            let _ = self.handler(ctx);
        }
        // The entry timestamp, for the duration at the return (kretprobes' per-instance data).
        if let Some(d) = data.get_mut(..8) {
            d.copy_from_slice(&self.shared.now_ns().to_ne_bytes());
        }
        EntryAction::Track
    }

    fn return_handler(&self, ctx: &mut ReturnContext<'_, LinuxPlatform>, data: &mut [u8]) {
        let dur = data
            .get(..8)
            .and_then(|d| d.try_into().ok())
            .map(|d| self.shared.now_ns().saturating_sub(u64::from_ne_bytes(d)));
        if let (Some(h), Some(d)) = (&self.latency, dur) {
            h.record(d);
        }
        if self.counts_entries {
            return;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        if let Role::Probe(i) = self.role {
            let ret = ctx.regs.return_value();
            match dur {
                Some(d) => self.shared.record_return(i, ctx.space, ctx.task.0, ret, d),
                None => self
                    .shared
                    .record(i, ctx.space, ctx.task.0, |_| Vec::new(), Some(ret)),
            }
        }
    }
}
