//! Return probes on Linux, beyond what the core does: durations and `--latency`
//! histograms, `nmissed` per probe, and keeping stack unwinders working while return
//! addresses point at the trampoline.
//!
//! # Unwinding through hijacked frames
//!
//! A return probe replaces the return address of each tracked call with the trampoline,
//! which lives in the anonymous slot area and has no unwind information. A C++ `throw` (or
//! `pthread_cancel`, or a Rust panic) walks the stack with those return addresses: at the
//! trampoline the unwinder finds no FDE, `_Unwind_RaiseException` fails and the program
//! calls `std::terminate`. The kernel's uretprobes have the same problem.
//!
//! When return probes are registered, the session therefore puts internal breakpoints on
//! the unwinder's entry points, `_Unwind_RaiseException`, `_Unwind_Resume`,
//! `_Unwind_Resume_or_Rethrow` and `_Unwind_ForcedUnwind` (libgcc_s, LLVM's libunwind, or an
//! executable that links them statically), on their exits, and on `__cxa_begin_catch`
//! (libstdc++, libc++abi), the way it puts one on the dynamic linker's `_dl_debug_state`:
//!
//! - at an unwinder entry, every hijacked return address of the throwing thread that is
//!   above its stack pointer gets its real value back (the slot is written only if it still
//!   holds the trampoline); the core keeps the instances. The unwinder then sees a normal
//!   stack, in both of its phases.
//! - at an exit of an unwinder entry, the thread stops walking its stack: libgcc ends each
//!   entry with `jmp *%rcx` to the landing pad (`uw_install_context`), the stack pointer
//!   already the landing frame's, and returns with `ret` where it gives up. The exits are
//!   found by decoding the entry (its `ret`s and indirect jumps). There the frames strictly
//!   above the stack pointer survived, and those whose slot still holds its real return
//!   address are hijacked again, so their returns are reported, whatever language catches:
//!   a C++ `catch`, a Rust `catch_unwind` (its landing pad never calls `__cxa_begin_catch`),
//!   or a cleanup pad, whose `_Unwind_Resume` puts them back again. The frames that were
//!   unwound never return; the core drops their instances at the thread's next return-probe
//!   event, as for `longjmp`.
//! - `__cxa_begin_catch` (the start of every C++ `catch` block) does the same, for an
//!   unwinder whose exits cannot be found (LLVM's libunwind jumps to the landing pad from
//!   another function); then only C++ catches re-arm the surviving frames, and the session
//!   warns that frames surviving another catch (a Rust `catch_unwind`) lose their returns.
//!
//! `_Unwind_Backtrace` (glibc's `backtrace()`) is not hooked: a backtrace stops at the first
//! hijacked frame.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use probe_core::arch::x86_64::X86_64;
use probe_core::{
    Arch, ConsumerHandle, ConsumerOptions, FileId, Platform, ProbeKey, RetInstance, SpaceId,
    TaskId, TaskReturns, MAX_RETURNS_PER_HIT,
};

use super::consumer::{LinuxConsumer, Role};
use super::session::Session;
use crate::elf::ElfImage;
use crate::latency::{LatencyHist, LatencySnapshot, ReturnSummary};
use crate::resolve::ProbeKind;
use crate::sys::Pid;

/// Unwinder entry points: the thread's return addresses are put back before it walks.
pub const UNWIND_START: [&str; 4] = [
    "_Unwind_RaiseException",
    "_Unwind_Resume",
    "_Unwind_Resume_or_Rethrow",
    "_Unwind_ForcedUnwind",
];

/// The start of a C++ catch block: the surviving frames are hijacked again.
pub const UNWIND_CATCH: &str = "__cxa_begin_catch";

/// Default `maxactive` of a return probe: calls of one function tracked at once over all
/// threads. An instance is a count here (a call's memory is in its thread's [`CallStack`]),
/// so the default is generous: a deep recursion in each of many threads is tracked in full.
pub const DEFAULT_MAXACTIVE: u32 = 1 << 20;

/// Default `--max-ret-depth`: return-probed calls one thread has in flight at once (its
/// nesting, as a recursion's depth), each about 120 bytes, taken as the thread nests: a
/// 10 000-deep recursion is tracked in full, and a thread that never nests costs nothing.
pub const DEFAULT_MAX_DEPTH: usize = 65536;

/// A thread's tracked calls (return-probe instances), innermost last: grown as the thread
/// nests, up to `limit` (`--max-ret-depth`), never reserved up front, so thousands of
/// threads cost memory only in proportion to how deep each one goes. Grown between calls
/// into the core ([`make_room`](Self::make_room) before each breakpoint trap), never during
/// one: the core's push never allocates.
#[derive(Debug)]
pub(crate) struct CallStack {
    calls: Vec<RetInstance>,
    limit: usize,
}

impl CallStack {
    pub(crate) fn new(limit: usize) -> CallStack {
        CallStack {
            calls: Vec::new(),
            limit,
        }
    }

    /// Before a breakpoint trap: room for the calls one hit tracks, up to the limit
    /// (capacity doubles, as a `Vec`'s does).
    pub(crate) fn make_room(&mut self) {
        self.reserve(MAX_RETURNS_PER_HIT);
    }

    /// The tracked calls as unwinders need to see them.
    pub(crate) fn returns(&self) -> probe_core::ReturnChain<'_> {
        self.chain()
    }

    /// Calls tracked now.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Room for `n` more calls, up to the limit.
    pub(crate) fn reserve(&mut self, n: usize) {
        let len = self.calls.len();
        let want = (len + n).min(self.limit);
        let cap = self.calls.capacity();
        if want > cap {
            let grown = (cap * 2).max(want).max(16).min(self.limit);
            self.calls.reserve_exact(grown - len);
        }
    }
}

impl TaskReturns for CallStack {
    fn calls(&self) -> &[RetInstance] {
        &self.calls
    }

    fn push_call(&mut self, call: RetInstance) -> Result<(), RetInstance> {
        // Never grows here: the core calls this on its hit path.
        if self.calls.len() < self.calls.capacity().min(self.limit) {
            self.calls.push(call);
            Ok(())
        } else {
            Err(call)
        }
    }

    fn pop_call(&mut self) -> Option<RetInstance> {
        self.calls.pop()
    }

    fn room(&self) -> usize {
        self.calls.capacity().min(self.limit) - self.calls.len()
    }
}

/// Which unwinder hook was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnwindKind {
    /// An unwinder entry: put the return addresses back.
    Start,
    /// An exit of an unwinder entry (its landing-pad jump or its `ret`): hijack again.
    Leave,
    /// `__cxa_begin_catch`: hijack again.
    Catch,
}

/// Task `t` exited or left its space (exec): its tracked calls never return, and are counted
/// as abandoned, unless they are copies of its parent's (a vfork child, in its parent's
/// space until it execs or exits: the parent returns through those frames).
pub(crate) fn task_gone(core: &super::session::Core, t: &mut super::session::Task) {
    if t.space == SpaceId(t.tgid.0 as u64) {
        core.on_task_exit(&mut t.ts);
    } else {
        core.forget_returns(&mut t.ts);
    }
}

/// An unwinder hook hit, queued by the consumer and handled after the hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnwindEvent {
    pub(crate) task: TaskId,
    /// The stack pointer at the hooked instruction.
    pub(crate) sp: u64,
    pub(crate) kind: UnwindKind,
}

/// What the unwinder hooks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Unwinder entries seen (`_Unwind_RaiseException`...).
    pub starts: u64,
    /// Return addresses put back at those.
    pub restored: u64,
    /// Unwinder exits seen: jumps to a landing pad (a catch, a cleanup, a Rust
    /// `catch_unwind`) or returns.
    pub landings: u64,
    /// Catch blocks entered (`__cxa_begin_catch`).
    pub catches: u64,
    /// Return addresses hijacked again at the exits and catches.
    pub rehijacked: u64,
}

/// The calls of one return consumer whose return was not reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Untracked {
    /// Not tracked (`nmissed`).
    nmissed: u64,
    /// Of those, nested deeper than `--max-ret-depth`.
    nesting: u64,
    /// Tracked, but never returned (unwound, `longjmp`, the thread exited).
    abandoned: u64,
}

/// The session's return-probe state.
#[derive(Debug)]
pub(crate) struct RetState {
    /// `maxactive` of every return consumer.
    pub(crate) maxactive: u32,
    /// Most return-probed calls a thread has in flight (`--max-ret-depth`).
    pub(crate) max_depth: usize,
    /// `--latency`: entry probes are registered as return consumers too, and durations
    /// are kept per probe.
    pub(crate) latency: bool,
    /// Whether any return consumer was registered (then the unwinder hooks are wanted, and
    /// threads' chains of tracked calls grow).
    pub(crate) any_return: bool,
    /// Histograms per probe index.
    hists: HashMap<usize, Arc<LatencyHist>>,
    /// Entry probes registered as return consumers: their count adds the missed calls.
    entry_returns: HashSet<usize>,
    /// The missed and abandoned calls per probe index, read before the consumers were
    /// unregistered.
    missed: HashMap<usize, Untracked>,
    /// Files already searched for unwinder symbols.
    searched: HashSet<FileId>,
    /// The unwinder hooks registered.
    hooks: Vec<ConsumerHandle>,
    pub(crate) stats: UnwindStats,
}

impl RetState {
    pub(crate) fn new(maxactive: u32, max_depth: usize, latency: bool) -> RetState {
        RetState {
            maxactive: maxactive.max(1),
            max_depth: max_depth.max(1),
            latency,
            any_return: false,
            hists: HashMap::new(),
            entry_returns: HashSet::new(),
            missed: HashMap::new(),
            searched: HashSet::new(),
            hooks: Vec::new(),
            stats: UnwindStats::default(),
        }
    }
}

/// Where unwinder entry `sym` of `path` leaves (offsets from its start): its `ret`s, and its
/// indirect jumps, which are the jump to the landing pad (libgcc's `uw_install_context`
/// ends every entry with `jmp *%rcx`, the stack pointer already the landing pad's). Each is
/// a point where the thread stops walking its stack. (Its direct jumps out of the function
/// go to its `.cold` part, which aborts.) `Err` says why they are not known.
fn unwinder_exits(path: &Path, sym: &crate::elf::FunctionSymbol) -> Result<Vec<u64>, String> {
    let exits = crate::insn::function_branches(path, sym)
        .map_err(|e| format!("reading it: {e}"))?
        .map_err(|e| format!("decoding it: {e:?}"))?;
    if exits.indirect_jumps.is_empty() {
        return Err("it holds no jump to a landing pad".into());
    }
    let mut v = exits.rets;
    v.extend(exits.indirect_jumps);
    Ok(v)
}

/// Whether `path` may hold the unwinder or the C++ runtime's catch entry.
fn may_hold_unwinder(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ["libgcc_s", "libstdc++", "libc++abi", "libc++.", "libunwind"]
        .iter()
        .any(|p| name.starts_with(p))
}

impl Session {
    /// The consumer options and consumer for probe point `idx` of kind `kind`: return
    /// probes (and, with `--latency`, entry probes) are return consumers with an 8-byte
    /// entry timestamp per call.
    pub(crate) fn ret_consumer(
        &mut self,
        idx: usize,
        kind: ProbeKind,
        consumer: LinuxConsumer,
    ) -> (ConsumerOptions, LinuxConsumer) {
        let ret = kind == ProbeKind::Return;
        let timed_entry = self.rets.latency && kind == ProbeKind::Entry;
        if !ret && !timed_entry {
            return (ConsumerOptions::new(), consumer);
        }
        self.rets.any_return = true;
        let hist = self.rets.latency.then(|| {
            let h = Arc::new(LatencyHist::new());
            self.rets.hists.insert(idx, h.clone());
            h
        });
        if !ret {
            self.rets.entry_returns.insert(idx);
        }
        (
            ConsumerOptions::new().with_return(self.rets.maxactive, 8),
            consumer.with_latency(hist, !ret),
        )
    }

    /// The consumer of probe point `idx` of kind `kind` with `--ret-by-insn`: a return probe,
    /// or an entry probe timed by `--latency` (it counts the entries), with its histogram.
    pub(crate) fn insn_consumer(
        &mut self,
        idx: usize,
        kind: ProbeKind,
        consumer: LinuxConsumer,
    ) -> LinuxConsumer {
        let hist = self.rets.latency.then(|| {
            let h = Arc::new(LatencyHist::new());
            self.rets.hists.insert(idx, h.clone());
            h
        });
        consumer.with_latency(hist, kind != ProbeKind::Return)
    }

    /// Calls of probe point `i` that were not tracked because `maxactive` instances were in
    /// use (or the thread's chain of tracked calls was full): their returns are not
    /// reported. 0 for an entry probe that is not a return consumer.
    pub fn nmissed(&self, i: usize) -> u64 {
        self.untracked(i).nmissed
    }

    /// Of [`nmissed`](Self::nmissed), the calls nested deeper than a thread's chain of
    /// tracked calls holds (`--max-ret-depth`).
    pub fn nmissed_nesting(&self, i: usize) -> u64 {
        self.untracked(i).nesting
    }

    /// Calls of probe point `i` that were tracked but never returned: their frames were
    /// unwound by an exception or panic, or left by `longjmp`, or their thread exited or
    /// exec'd inside them. With the returns and `nmissed`, they add up to the calls.
    pub fn abandoned(&self, i: usize) -> u64 {
        self.untracked(i).abandoned
    }

    fn untracked(&self, i: usize) -> Untracked {
        if let Some(&m) = self.rets.missed.get(&i) {
            return m;
        }
        self.probes
            .get(i)
            .and_then(|p| p.handle)
            .map(|h| self.untracked_of(h))
            .unwrap_or_default()
    }

    fn untracked_of(&self, h: ConsumerHandle) -> Untracked {
        Untracked {
            nmissed: self.core.nmissed(h).unwrap_or(0),
            nesting: self.core.nmissed_nesting(h).unwrap_or(0),
            abandoned: self.core.abandoned(h).unwrap_or(0),
        }
    }

    /// Hits of an entry probe registered as a return consumer that no entry handler saw
    /// (the missed calls): added to its count.
    pub(crate) fn entry_missed(&self, i: usize) -> u64 {
        if self.rets.entry_returns.contains(&i) {
            self.nmissed(i)
        } else {
            0
        }
    }

    /// The latency histogram of probe point `i` (`--latency` only).
    pub fn latency(&self, i: usize) -> Option<LatencySnapshot> {
        self.rets.hists.get(&i).map(|h| h.snapshot())
    }

    /// The return-probe figures to report at the end, one per probe point that has any:
    /// a latency histogram (`--latency`) or missed calls.
    pub fn return_summary(&self) -> Vec<ReturnSummary> {
        let mut v: Vec<ReturnSummary> = self
            .probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.error.is_none())
            .map(|(i, p)| ReturnSummary {
                name: p.name.clone(),
                nmissed: self.nmissed(i),
                nesting: self.nmissed_nesting(i),
                abandoned: self.abandoned(i),
                latency: self.latency(i),
            })
            .filter(|r| {
                r.nmissed > 0 || r.abandoned > 0 || r.latency.as_ref().is_some_and(|l| l.count > 0)
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// What the unwinder hooks did.
    pub fn unwind_stats(&self) -> UnwindStats {
        self.rets.stats
    }

    /// Remembers every return consumer's `nmissed` (before the consumers go away).
    pub(crate) fn snapshot_missed(&mut self) {
        for (i, p) in self.probes.iter().enumerate() {
            if let Some(h) = p.handle.filter(|&h| self.core.nmissed(h).is_ok()) {
                let m = self.untracked_of(h);
                self.rets.missed.insert(i, m);
            }
        }
    }

    /// Unregisters the unwinder hooks (detach).
    pub(crate) fn remove_unwind_hooks(&mut self, errors: &mut Vec<String>) {
        for h in core::mem::take(&mut self.rets.hooks) {
            if let Err(e) = self.core.unregister(&self.platform, h) {
                errors.push(format!("removing an unwinder hook: {e}"));
            }
        }
    }

    /// Registers the unwinder hooks in every file mapped in any traced space that has them
    /// and was not searched yet; only once return probes exist.
    pub(crate) fn ensure_unwind_hooks_everywhere(&mut self) {
        for space in self.platform.spaces() {
            self.ensure_unwind_hooks(space);
        }
    }

    /// [`ensure_unwind_hooks_everywhere`](Self::ensure_unwind_hooks_everywhere) for one
    /// space (after its mappings changed).
    pub(crate) fn ensure_unwind_hooks(&mut self, space: SpaceId) {
        if !self.rets.any_return {
            return;
        }
        for (file, path) in self.exec_files_where(space, may_hold_unwinder) {
            if !self.rets.searched.insert(file) {
                continue;
            }
            let Ok(img) = ElfImage::open(&path) else {
                continue;
            };
            let mut points: Vec<(u64, Role)> = Vec::new();
            for name in UNWIND_START {
                if let Some(s) = img.lookup(name).first() {
                    points.push((s.file_offset, Role::UnwindStart));
                    match unwinder_exits(&path, s) {
                        Ok(exits) => points.extend(
                            exits
                                .into_iter()
                                .map(|o| (s.file_offset + o, Role::UnwindLeave)),
                        ),
                        Err(why) => self.warn(format!(
                            "returns of return-probed frames that survive an exception or \
                             panic caught other than by a C++ catch (a Rust catch_unwind) \
                             are not reported: the exits of {name} in {} were not found \
                             ({why})",
                            path.display()
                        )),
                    }
                }
            }
            if let Some(s) = img.lookup(UNWIND_CATCH).first() {
                points.push((s.file_offset, Role::UnwindCatch));
            }
            for (offset, role) in points {
                let hits = Arc::new(core::sync::atomic::AtomicU64::new(0));
                let consumer = LinuxConsumer::new(role, hits, self.shared.clone());
                let key = ProbeKey::new(file, offset);
                match self
                    .core
                    .register(&self.platform, key, consumer, ConsumerOptions::new())
                {
                    Ok(h) => self.rets.hooks.push(h),
                    Err((e, _)) => {
                        let why = self.explain(e);
                        self.warn(format!(
                            "a C++ exception thrown through a return-probed function may \
                             terminate the program: hooking the unwinder in {} failed: {why}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }

    /// Handles the unwinder hooks hit: puts back or hijacks again the return addresses of
    /// the thread's tracked frames above the stack pointer.
    ///
    /// A thread may unwind inside an unwinder (an exception thrown and caught in a
    /// personality routine or a forced unwind's stop function): the return addresses go back
    /// to the trampoline only when it has left the outermost unwinder call, found by the
    /// stack pointers of the entries it is inside ([`Task::unwinding`]).
    pub(crate) fn apply_unwinds(&mut self) {
        for ev in self.shared.take_unwinds() {
            let tid = Pid(ev.task.0 as i32);
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            // Entries at or below the stack pointer were left (by this exit, or by a
            // landing we did not see).
            t.unwinding.retain(|&sp| sp > ev.sp);
            let catch = match ev.kind {
                UnwindKind::Start => {
                    self.rets.stats.starts += 1;
                    t.unwinding.push(ev.sp);
                    false
                }
                UnwindKind::Leave => {
                    self.rets.stats.landings += 1;
                    true
                }
                UnwindKind::Catch => {
                    self.rets.stats.catches += 1;
                    true
                }
            };
            if catch && !t.unwinding.is_empty() {
                // An outer unwinder is still walking this stack.
                continue;
            }
            let t = &self.tasks[&tid];
            if t.ts.returns().is_empty() {
                continue;
            }
            let Some(tramp) = self.core.trampoline(t.space) else {
                continue;
            };
            let Some(mem) = self.platform.space(t.space) else {
                continue;
            };
            let mut done = 0u64;
            let mut failed = None;
            for (frame, _func, ret) in t.ts.returns().frames() {
                if frame <= ev.sp {
                    // Below the stack pointer: a frame already abandoned.
                    continue;
                }
                let r = if catch {
                    // The same check-and-write, the other way round.
                    X86_64::restore_return_address(frame, &mem, ret, tramp)
                } else {
                    X86_64::restore_return_address(frame, &mem, tramp, ret)
                };
                match r {
                    Ok(true) => done += 1,
                    Ok(false) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if catch {
                self.rets.stats.rehijacked += done;
            } else {
                self.rets.stats.restored += done;
            }
            if let Some(e) = failed {
                self.warn(format!(
                    "thread {tid}: rewriting a return address around an exception: {e}"
                ));
            }
        }
    }
}
