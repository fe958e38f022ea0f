//! [`Session`]: one tracing session — a spawned or attached process tree, its probes, its
//! counts — and the calls a user of the library makes: [`Session::spawn`],
//! [`Session::attach`], [`Session::add_spec`], [`Session::run`], [`Session::detach`].
//!
//! The event loop itself (what each ptrace stop means) is in `event_loop.rs`.
//!
//! A session belongs to the thread that created it (ptrace requests must come from the
//! tracer thread; the type is not `Send`). Dropping a session with threads still traced
//! detaches from them, restoring every original byte.

use core::time::Duration;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use probe_core::arch::x86_64::X86_64;
use probe_core::{
    ConsumerHandle, ConsumerOptions, FileId, Mapping, ProbeCore, ProbeKey, SpaceId, TaskId,
    TrapState,
};

use super::consumer::{HitRecord, LinuxConsumer, Role, Shared};
use super::error::TraceError;
use super::platform::LinuxPlatform;
use super::skips::{Lost, SkipReason, Skipped};
use crate::attach;
use crate::elf::ElfImage;
use crate::placement::{CpuPlacement, Placer};
use crate::resolve::{self, ProbeKind, Resolver};
use crate::sys::{self, Options, Pid, RawSigInfo};
use crate::wait::WaitStrategy;

pub use super::capacity::{CONSUMERS, PROBES, SITES, SPACES, XOL, XOL_RESERVE};

/// The core as the Linux backend sizes it: one tracer thread, so one CPU.
pub type Core = ProbeCore<LinuxPlatform, LinuxConsumer, PROBES, CONSUMERS, SITES, SPACES, XOL, 1>;

/// Most calls of one return-probed function tracked at once, unless
/// [`SessionOptions::maxactive`] says otherwise.
pub const RET_MAXACTIVE: u32 = super::returns::DEFAULT_MAXACTIVE;

/// Builds a core in zeroed memory of its own ([`sys::ZeroedMap`]): pages the kernel commits
/// only when first written, so the core's capacity (hundreds of processes, thousands of slots
/// each) costs memory in proportion to what a session uses.
pub fn new_core() -> Result<sys::ZeroedMap<Core>, TraceError> {
    // SAFETY: all zero bits is a valid empty core (`ProbeCore`'s documentation; checked for
    // this platform and consumer in `tests/tests/core_in_bss.rs`).
    #[allow(unsafe_code)]
    let core = unsafe { sys::ZeroedMap::new() };
    core.map_err(|e| TraceError::CoreMemory {
        bytes: core::mem::size_of::<Core>(),
        errno: match e {
            sys::SysError::Failed { errno, .. } => errno,
            _ => crate::sys::Errno(libc::ENOMEM),
        },
    })
}

/// How a traced thread stands, from the tracer's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// Resumed (`PTRACE_CONT`).
    Running,
    /// Resumed with `PTRACE_SINGLESTEP` for a step the core asked for.
    Stepping,
    /// In a stop of ours, to be resumed with this signal (0: none).
    Held(i32),
    /// In a group-stop, `PTRACE_LISTEN`ing.
    Listening,
    /// Announced by its parent's clone/fork event; its first stop is not seen yet.
    Unborn,
}

/// One traced thread.
#[derive(Debug)]
pub(crate) struct Task {
    /// Its tracked calls (return-probe instances).
    pub(crate) ts: super::returns::CallStack,
    /// The stack pointers at the entries of the unwinder calls it is inside (innermost
    /// last): while it unwinds, its stack shows real return addresses.
    pub(crate) unwinding: Vec<u64>,
    /// Its trap in flight (a slot, a single step).
    pub(crate) trap: TrapState<X86_64>,
    /// Its thread group (process).
    pub(crate) tgid: Pid,
    /// The address space it runs in (a vfork child runs in its parent's).
    pub(crate) space: SpaceId,
    pub(crate) run: Run,
    /// Signals that arrived during a single step, delivered after it.
    pub(crate) deferred: Vec<RawSigInfo>,
    /// It reported `PTRACE_EVENT_EXIT`.
    pub(crate) exiting: bool,
    /// It was in a group-stop when we attached: the first resume listens instead.
    pub(crate) group_stopped: bool,
    /// It single-steps itself (its own trap flag) and runs a boosted slot: the traps inside
    /// the slot are ours to swallow, the first one outside is its own.
    pub(crate) tf_slot: bool,
    /// Single-stepped out of a boosted slot before a held-back signal is delivered: a signal
    /// handler must not run while the interrupted code still has to resume in a slot (its
    /// record would be dropped at the handler's next trap, and the slot could be reused under
    /// it), as uprobes' `uprobe_deny_signal` holds signals during a single step.
    pub(crate) leaving_slot: bool,
    /// It single-steps itself and we are single-stepping its instruction: the trap of that
    /// instruction is owed to it.
    pub(crate) tf_step: bool,
}

impl Task {
    /// `depth`: most return-probed calls it has in flight (`--max-ret-depth`).
    pub(crate) fn new(tgid: Pid, space: SpaceId, run: Run, depth: usize) -> Task {
        Task {
            ts: super::returns::CallStack::new(depth),
            unwinding: Vec::new(),
            trap: TrapState::new(),
            tgid,
            space,
            run,
            deferred: Vec::new(),
            exiting: false,
            group_stopped: false,
            tf_slot: false,
            leaving_slot: false,
            tf_step: false,
        }
    }
}

/// One probe point of the session.
#[derive(Debug, Clone)]
pub struct ProbeEntry {
    /// The name for output (`libc.so.6:malloc`, `uretprobe:libc.so.6:malloc`).
    pub name: String,
    /// The spec it came from.
    pub spec: String,
    /// Entry or return.
    pub kind: ProbeKind,
    /// The file.
    pub file: PathBuf,
    /// The file offset of the probed instruction.
    pub offset: u64,
    /// Whether it came from a glob (then it is listed only when hit).
    pub from_glob: bool,
    /// Why it could not be registered, if it could not.
    pub error: Option<String>,
    pub(crate) handle: Option<ConsumerHandle>,
    /// With `--ret-by-insn`: the consumers on the function's `ret` instructions and
    /// restarts (`handle` is the one on its entry).
    pub(crate) extra: Vec<ConsumerHandle>,
    /// The core's key of the probe.
    pub key: ProbeKey,
}

/// What [`Session::add_spec`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Probe points registered.
    pub added: usize,
    /// Points already registered by an earlier spec.
    pub duplicates: usize,
    /// Points the spec matched in the file: `added + duplicates + skipped.len()`.
    pub matched: usize,
    /// Points of a glob (or of a spec resolved again in a later image) that could not be
    /// probed, each with its reason.
    pub skipped: Vec<Skipped>,
    /// Things the user should know about the points (e.g. a probe on an ifunc resolver).
    pub notes: Vec<String>,
    /// What the points will not see (e.g. `--ret-by-insn` on a function with tail calls).
    pub warnings: Vec<String>,
}

impl AddReport {
    /// What `probe trace` says about the points of `spec` it skipped: one line per reason
    /// with its count; with `verbose`, every point (function, file offset, its reason).
    pub fn skip_lines(&self, spec: &str, verbose: bool) -> Vec<String> {
        if self.skipped.is_empty() {
            return Vec::new();
        }
        let n = self.skipped.len();
        let mut out = vec![format!(
            "`{spec}`: {n} of the {} points it matched {} skipped{}",
            self.matched,
            if n == 1 { "was" } else { "were" },
            if verbose {
                ":"
            } else {
                " (--verbose lists them):"
            }
        )];
        for (reason, points) in super::skips::group(&self.skipped) {
            out.push(format!("  {} skipped: {reason}", points.len()));
            if verbose {
                for p in points {
                    out.push(format!(
                        "    {} (file offset {:#x}): {}",
                        p.name,
                        p.file_offset,
                        p.reason.detail()
                    ));
                }
            }
        }
        out
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The traced process exited with this code.
    Exited(i32),
    /// The traced process was killed by this signal.
    Signaled(i32),
    /// The tracer detached after this stop signal (SIGINT, SIGTERM, SIGHUP) or on request
    /// (0); the process lives on.
    Detached(i32),
}

impl Outcome {
    /// The exit status a shell would report: the code, or 128 + the signal.
    pub fn exit_code(&self) -> i32 {
        match *self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
            Outcome::Detached(_) => 0,
        }
    }
}

/// What detaching found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// Threads detached.
    pub threads: usize,
    /// Problems met (each named; the rest proceeded).
    pub errors: Vec<String>,
    /// Slot areas left mapped in a process, and why (a thread was inside one).
    pub slot_areas_left: Vec<String>,
}

/// Counters of what the event loop saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Breakpoint traps handled by the core.
    pub traps: u64,
    /// Hits resumed by emulation.
    pub emulated: u64,
    /// Hits resumed in a boosted slot.
    pub boosted: u64,
    /// Hits resumed by a single step.
    pub stepped: u64,
    /// Returns through the trampoline.
    pub returns: u64,
    /// Traps that were not ours (delivered to the program).
    pub not_ours: u64,
    /// Signals passed through to the program.
    pub signals: u64,
    /// Signals held back during a single step and delivered after it.
    pub deferred: u64,
    /// Signals held back while a thread was stepped out of a boosted slot first.
    pub slot_exits: u64,
    /// Single steps abandoned (a fault in the slot, or detach).
    pub aborted_steps: u64,
    /// Traps a thread took just as the detach's interrupt reached it, reported after the
    /// interrupt's stop and finished before the detach.
    pub late_traps: u64,
    /// Dynamic-linker notifications (map changes).
    pub dl_events: u64,
    /// Hits the core could not resume (delivered as SIGSEGV).
    pub failed: u64,
    /// User stacks walked (`--stack`).
    pub stacks: u64,
    /// Slot areas found replaced or unmapped by the program (their probes removed).
    pub slot_areas_lost: u64,
    /// Maps re-read at a hit because the program mapped or unmapped memory itself.
    pub map_changes: u64,
}

/// Options of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Record every hit with this many arguments (`--print --args N`); `None`: count only.
    pub record_args: Option<usize>,
    /// How to wait for stops.
    pub strategy: WaitStrategy,
    /// Calls of one return-probed function tracked at once (`--maxactive`); more are
    /// counted as missed.
    pub maxactive: u32,
    /// Return-probed calls one thread has in flight at once, its nesting (`--max-ret-depth`);
    /// deeper calls are counted as missed.
    pub max_ret_depth: usize,
    /// Keep a latency histogram per probe (`--latency`); entry probes become return
    /// consumers.
    pub latency: bool,
    /// Arguments to show as strings (`--str N`): bit `i` for argument `i` (of a USDT marker
    /// where it is pointer-sized; of a function, its `i`-th integer argument register).
    pub string_args: u16,
    /// Whether the session chooses CPUs for the tracer and a single-threaded program.
    pub placement: CpuPlacement,
    /// Return probes (and `--latency`) by breakpoints on the function's `ret` instructions
    /// instead of replacing return addresses (`--ret-by-insn`; needed for Go programs).
    pub ret_by_insn: bool,
    /// Walk the user stack of each hit and count per distinct stack (`--stack`).
    pub stack: bool,
    /// Trace only the process itself, not the processes it starts (`--no-follow`): see
    /// [`Session::released`].
    pub no_follow: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            record_args: None,
            strategy: WaitStrategy::DEFAULT,
            maxactive: RET_MAXACTIVE,
            max_ret_depth: super::returns::DEFAULT_MAX_DEPTH,
            latency: false,
            string_args: 0,
            placement: CpuPlacement::Auto,
            ret_by_insn: false,
            stack: false,
            no_follow: false,
        }
    }
}

/// A tracing session; see the module docs.
#[derive(Debug)]
pub struct Session {
    pub(crate) platform: LinuxPlatform,
    pub(crate) core: sys::ZeroedMap<Core>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: HashMap<Pid, Task>,
    /// Stops of tasks whose parent's clone/fork event has not been seen yet.
    pub(crate) orphans: HashMap<Pid, sys::WaitStatus>,
    pub(crate) probes: Vec<ProbeEntry>,
    pub(crate) points: HashSet<(PathBuf, u64, bool)>,
    /// The dynamic linker hook per interpreter file.
    pub(crate) hooks: HashMap<FileId, Option<ConsumerHandle>>,
    pub(crate) resolver: Resolver,
    /// The process we spawned or attached to.
    pub(crate) root: Pid,
    pub(crate) spawned: bool,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) detaching: bool,
    /// Whether descendants of the command are followed after it has exited.
    pub(crate) follow_descendants: bool,
    /// Processes still running when the session let them go early (after the command).
    pub(crate) left_running: Vec<Pid>,
    /// `--no-follow`: processes the traced one starts are let go.
    pub(crate) no_follow: bool,
    /// The processes let go at their start or exec (`--no-follow`).
    pub(crate) released: Vec<Pid>,
    /// The spawned program runs without its set-user/group-ID privileges: why.
    pub(crate) setid_warning: Option<String>,
    /// A program that lost its set-ID privileges was warned about (once a session).
    pub(crate) setid_warned: bool,
    pub(crate) strategy: WaitStrategy,
    pub(crate) warnings: Vec<String>,
    pub(crate) stats: Stats,
    /// Return probes: latency, missed calls, unwinder hooks.
    pub(crate) rets: super::returns::RetState,
    /// USDT arguments shown as strings (bit `i`: argument `i`).
    pub(crate) string_args: u16,
    /// The CPU masks the session changed.
    pub(crate) placer: Placer,
    /// Set (by a hit sink, say) to detach at the next stop: see [`Session::detach_flag`].
    pub(crate) detach_request: Arc<core::sync::atomic::AtomicBool>,
    /// `--ret-by-insn`.
    pub(crate) ret_by_insn: bool,
    /// The calls in flight of the functions probed by `--ret-by-insn`.
    pub(crate) insn_calls: Arc<super::ret_insn::InsnCalls>,
    /// `--stack`: the stacks of the hits, counted.
    pub(crate) stacks: Option<crate::stack::StackCounts>,
    /// The hooks on libc's `ptrace`.
    pub(crate) ptrace_hooks: super::ptrace_hook::PtraceHooks,
    /// The specs added, for resolving them again in each new image.
    pub(crate) specs: Vec<super::specs::SpecState>,
    /// Every file a traced process has mapped executable (canonical paths).
    pub(crate) mapped: HashSet<PathBuf>,
    /// The probes registered on instructions that need an out-of-line slot (admitted up to
    /// [`capacity::SLOT_BUDGET`](super::capacity::SLOT_BUDGET)).
    pub(crate) slot_keys: HashSet<ProbeKey>,
    /// Attached probes that could not be installed in a process mapping their file later.
    pub(crate) lost: Vec<Lost>,
    /// The spawned command is a script (`#!`): its first image is an interpreter, and specs
    /// about "the program" mean the program it executes.
    pub(crate) command_is_script: bool,
}

impl Session {
    fn new(core: sys::ZeroedMap<Core>, root: Pid, spawned: bool, opts: SessionOptions) -> Session {
        Session {
            platform: LinuxPlatform::new(),
            core,
            shared: Arc::new(
                Shared::new(opts.record_args)
                    .with_stacks(opts.stack)
                    .with_strings(opts.string_args),
            ),
            stacks: opts.stack.then(crate::stack::StackCounts::new),
            tasks: HashMap::new(),
            orphans: HashMap::new(),
            probes: Vec::new(),
            points: HashSet::new(),
            hooks: HashMap::new(),
            ptrace_hooks: Default::default(),
            resolver: Resolver::new(Some(root)),
            root,
            spawned,
            outcome: None,
            detaching: false,
            follow_descendants: true,
            left_running: Vec::new(),
            no_follow: opts.no_follow,
            released: Vec::new(),
            setid_warning: None,
            setid_warned: false,
            strategy: opts.strategy,
            warnings: Vec::new(),
            stats: Stats::default(),
            rets: super::returns::RetState::new(opts.maxactive, opts.max_ret_depth, opts.latency),
            string_args: opts.string_args,
            placer: Placer::new(opts.placement),
            detach_request: Arc::new(core::sync::atomic::AtomicBool::new(false)),
            ret_by_insn: opts.ret_by_insn,
            insn_calls: Arc::default(),
            specs: Vec::new(),
            mapped: HashSet::new(),
            slot_keys: HashSet::new(),
            lost: Vec::new(),
            command_is_script: false,
        }
    }

    /// Starts `program args...` traced, stopped before its first instruction. Add probes,
    /// then [`run`](Self::run).
    pub fn spawn(
        program: &OsStr,
        args: &[&OsStr],
        opts: SessionOptions,
    ) -> Result<Session, TraceError> {
        // The core's memory first: a refusal leaves nothing started.
        let core = new_core()?;
        let pid = sys::spawn_traced(program, args, Options::SPAWNED, None)?;
        let mut s = Session::new(core, pid, true, opts);
        s.command_is_script = super::specs::is_script(program);
        let space = SpaceId(pid.0 as u64);
        s.tasks
            .insert(pid, Task::new(pid, space, Run::Held(0), s.rets.max_depth));
        s.platform.add_task(TaskId(pid.0 as u64), space, true);
        if let Err(e) = s.platform.add_space(space, pid) {
            let _ = sys::kill(pid, libc::SIGKILL);
            return Err(e.into());
        }
        s.setup_space(space, pid)?;
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            s.setid_warning = crate::setid::lost_privileges(&exe);
            s.setid_warned = s.setid_warning.is_some();
        }
        Ok(s)
    }

    /// Why the spawned program runs without the privileges of its set-user-ID or
    /// set-group-ID bit, if it does (see [`crate::setid`]). A program a traced process
    /// executes later is warned about in [`warnings`](Self::warnings) (once a session).
    pub fn setid_warning(&self) -> Option<&str> {
        self.setid_warning.as_deref()
    }

    /// Attaches to every thread of running process `pid` (`PTRACE_SEIZE`) and holds them
    /// stopped. Add probes, then [`run`](Self::run).
    pub fn attach(pid: Pid, opts: SessionOptions) -> Result<Session, TraceError> {
        if let Some(why) = attach::not_attachable(pid) {
            return Err(TraceError::NotAttachable { pid: pid.0, why });
        }
        let core = new_core()?;
        let threads = attach::attach_process(pid, Options::ATTACHED)?;
        let mut s = Session::new(core, pid, false, opts);
        let space = SpaceId(pid.0 as u64);
        for t in &threads {
            let run = Run::Held(t.pending_signal.unwrap_or(0));
            let mut task = Task::new(pid, space, run, s.rets.max_depth);
            task.group_stopped = t.group_stop.is_some();
            s.tasks.insert(t.tid, task);
            s.platform.add_task(TaskId(t.tid.0 as u64), space, true);
        }
        let setup = s
            .platform
            .add_space(space, pid)
            .map_err(TraceError::from)
            .and_then(|()| {
                let t = threads.first().map_or(pid, |t| t.tid);
                s.setup_space(space, t)
            });
        if let Err(e) = setup {
            let _ = attach::detach_all(&threads);
            return Err(e);
        }
        Ok(s)
    }

    /// The process traced (spawned or attached).
    pub fn pid(&self) -> Pid {
        self.root
    }

    /// Whether the session started the process (rather than attached to it).
    pub fn is_spawned(&self) -> bool {
        self.spawned
    }

    /// With `--no-follow`, the processes the traced one started that were let go: a fork
    /// child at its first stop, before it runs (the breakpoints and hijacked return
    /// addresses it inherited taken out of its copy of memory, its CPU mask put back), and a
    /// vfork child (it runs in its parent's memory, breakpoints and all, so it is followed
    /// until then, and its hits count) at its `exec`, before the new program runs. Threads
    /// of the traced process are traced as ever.
    pub fn released(&self) -> &[Pid] {
        &self.released
    }

    /// The probe points of the session, in the order added.
    pub fn probes(&self) -> &[ProbeEntry] {
        &self.probes
    }

    /// Hits of probe point `i` so far.
    pub fn count(&self, i: usize) -> u64 {
        self.shared.count(i) + self.entry_missed(i)
    }

    /// (name, hits) of every registered probe point.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.error.is_none())
            .map(|(i, p)| (p.name.clone(), self.count(i)))
            .collect()
    }

    /// The counts to report, sorted as bpftrace sorts a map (by count, then name): every
    /// probe named on its own, and the probes of a glob that were hit. Points sharing a
    /// name (the locations of one USDT marker) are summed into one line.
    pub fn summary(&self) -> Vec<(String, u64)> {
        let mut merged: Vec<(String, u64, bool)> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for (i, p) in self.probes.iter().enumerate() {
            if p.error.is_some() {
                continue;
            }
            let c = self.count(i);
            match at.get(p.name.as_str()) {
                Some(&k) => {
                    merged[k].1 += c;
                    merged[k].2 &= p.from_glob;
                }
                None => {
                    at.insert(&p.name, merged.len());
                    merged.push((p.name.clone(), c, p.from_glob));
                }
            }
        }
        let mut v: Vec<(String, u64)> = merged
            .into_iter()
            .filter(|(_, c, glob)| !glob || *c > 0)
            .map(|(n, c, _)| (n, c))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Hits of the probe points named `name`, summed.
    pub fn count_of(&self, name: &str) -> u64 {
        self.counts()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c)
            .sum()
    }

    /// What the event loop saw.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Problems met that did not stop the session (each a sentence).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The core (for inspection: installed breakpoints, probe count).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The platform (for inspection: spaces, mappings).
    pub fn platform(&self) -> &LinuxPlatform {
        &self.platform
    }

    /// A flag that makes [`run`](Self::run) detach (restoring everything) and return
    /// [`Outcome::Detached`]`(0)` once set, checked after every stop: for a hit sink that
    /// can no longer write (`probe ... | head`).
    pub fn detach_flag(&self) -> Arc<core::sync::atomic::AtomicBool> {
        self.detach_request.clone()
    }

    /// Processes (descendants of the command, which had exited) that were still running,
    /// and were detached, when the session stopped early.
    pub fn left_running(&self) -> &[Pid] {
        &self.left_running
    }

    /// The CPU the tracer and the (single) traced thread share, if the session placed them.
    pub fn shared_cpu(&self) -> Option<usize> {
        self.placer.shared_cpu()
    }

    /// Places tracer and traced threads again after the set of threads changed.
    pub(crate) fn replace_threads(&mut self) {
        let mut live: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.exiting)
            .map(|(&p, _)| p)
            .collect();
        live.sort();
        for e in self.placer.update(&live) {
            self.warn(e);
        }
    }

    /// The slot area of the traced process, if one was mapped.
    pub fn xol_base(&self) -> Option<u64> {
        self.platform.xol_base(SpaceId(self.root.0 as u64))
    }

    /// A thread of `space` held stopped, for injected system calls.
    pub(crate) fn held_task_of(&self, space: SpaceId) -> Option<Pid> {
        let mut v: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.space == space && matches!(t.run, Run::Held(_)) && !t.exiting)
            .map(|(&p, _)| p)
            .collect();
        v.sort_by_key(|p| (*p != self.root, *p));
        v.first().copied()
    }

    /// Registers the points one spec resolved to in one file. With `strict` (a spec the user
    /// gave, resolved at the start) a spec naming one function must work; otherwise (a glob,
    /// or a spec resolved again in a later image) what cannot be probed is reported in
    /// [`AddReport::skipped`] with its reason. `current` is a thread held stopped in the
    /// space the points are for (the slot area is mapped by a system call injected into it).
    pub(crate) fn register_points(
        &mut self,
        text: &str,
        points: Vec<resolve::ResolvedProbe>,
        glob: bool,
        strict: bool,
        current: Option<Pid>,
    ) -> Result<AddReport, TraceError> {
        let strict = strict && !glob;
        // In address order: of two symbols one of which starts inside the other's first
        // instruction (a label in the middle of it), the function that starts first is
        // probed and the other is the one refused as overlapping.
        let mut points = points;
        points.sort_by(|a, b| (&a.file, a.file_offset).cmp(&(&b.file, b.file_offset)));
        let mut report = AddReport {
            matched: points.len(),
            ..AddReport::default()
        };
        self.platform
            .set_current(current.map(|p| TaskId(p.0 as u64)));
        for p in points {
            let ret = p.kind == ProbeKind::Return;
            if !self.points.insert((p.file.clone(), p.file_offset, ret)) {
                report.duplicates += 1;
                continue;
            }
            let name = probe_name(&p);
            let early = if self.rets.latency && p.kind == ProbeKind::Entry && p.symbol_offset != 0 {
                // --latency makes the probe a return probe too: only an entry has a return
                // address to take over.
                Some((
                    format!(
                        "--latency times calls from a function's entry, and {name} is {:#x} \
                         bytes into it (the return address is only where the call put it at \
                         the entry)",
                        p.symbol_offset
                    ),
                    SkipReason::LatencyNotAtEntry,
                ))
            } else if !self
                .resolver
                .image(&p.file)
                .is_ok_and(|i| i.is_code_offset(p.file_offset))
            {
                // A function symbol in data: registered, it would never be installed.
                Some((
                    format!(
                        "{name} is not in executable code (file offset {:#x} is in no \
                         executable segment)",
                        p.file_offset
                    ),
                    SkipReason::NotCode,
                ))
            } else {
                None
            };
            if let Some((reason, why)) = early {
                if strict {
                    return Err(TraceError::Register {
                        probe: name,
                        reason,
                    });
                }
                report.skipped.push(Skipped {
                    name,
                    file_offset: p.file_offset,
                    reason: why,
                });
                continue;
            }
            if p.ifunc && !glob {
                report.notes.push(format!(
                    "{name} is an indirect function (ifunc): the probe is on its resolver, \
                     which runs when the symbol is bound, not on each call; probe the \
                     implementation instead (`probe list {} {}` shows the candidates)",
                    p.file.display(),
                    p.symbol
                        .as_deref()
                        .map_or("", |s| s.split('@').next().unwrap_or(s))
                ));
            }
            let file = self
                .platform
                .file_id(&p.file)
                .map_err(|e| TraceError::File {
                    path: p.file.display().to_string(),
                    reason: e.to_string(),
                })?;
            let key = ProbeKey::new(file, p.file_offset);
            let (idx, hits) = self.shared.add_counter();
            debug_assert_eq!(idx, self.probes.len());
            let consumer = LinuxConsumer::new(Role::Probe(idx), hits, self.shared.clone());
            let by_insn = self.by_insn(&p);
            let entry_by_insn = self.entry_by_insn(&p);
            let (opts, consumer) = if by_insn {
                (
                    ConsumerOptions::new(),
                    self.insn_consumer(idx, p.kind, consumer),
                )
            } else {
                self.ret_consumer(idx, p.kind, consumer)
            };
            let mut entry = ProbeEntry {
                name: name.clone(),
                spec: text.to_owned(),
                kind: p.kind,
                file: p.file.clone(),
                offset: p.file_offset,
                from_glob: glob,
                error: None,
                handle: None,
                extra: Vec::new(),
                key,
            };
            // An entry probe counting calls alone falls back to a plain one where the
            // function cannot be decoded: it needs no `ret`.
            let by_insn_done = if by_insn || entry_by_insn {
                let c = if by_insn {
                    consumer.clone()
                } else {
                    consumer.clone().with_latency(None, true)
                };
                match self.register_by_insn(&p, file, c, by_insn) {
                    Ok((h, extra, warning)) => {
                        entry.extra = extra;
                        report.warnings.extend(warning);
                        Some(Ok(h))
                    }
                    Err(e) if by_insn => Some(Err(e)),
                    Err(_) => None,
                }
            } else {
                None
            };
            let registered = match by_insn_done {
                Some(r) => r.map_err(|e| (e.clone(), SkipReason::Other(e))),
                None => self
                    .core
                    .register(&self.platform, key, consumer, opts)
                    .map_err(|(e, _)| {
                        (self.explain(e), self.skip_reason(e, &p.file, p.file_offset))
                    }),
            };
            let registered = registered.and_then(|h| self.admit_slots(h, &entry.extra));
            match registered {
                Ok(h) => {
                    entry.handle = Some(h);
                    report.added += 1;
                }
                Err((reason, why)) => {
                    entry.error = Some(reason.clone());
                    for h in core::mem::take(&mut entry.extra) {
                        let _ = self.core.unregister(&self.platform, h);
                    }
                    if strict {
                        self.probes.push(entry);
                        return Err(TraceError::Register {
                            probe: name,
                            reason,
                        });
                    }
                    report.skipped.push(Skipped {
                        name,
                        file_offset: p.file_offset,
                        reason: why,
                    });
                }
            }
            self.probes.push(entry);
        }
        self.ensure_unwind_hooks_everywhere();
        let _ = self.core.maintain(&self.platform);
        Ok(report)
    }

    /// The core's error in words, with the platform's detail where it has one.
    pub(crate) fn explain(&self, e: probe_core::Error) -> String {
        match e {
            probe_core::Error::NoXolArea(_) => match self.platform.xol_error() {
                Some(why) => format!("{e}: {why}"),
                None => e.to_string(),
            },
            probe_core::Error::CapacityExhausted {
                what: probe_core::Capacity::Spaces,
            } => format!(
                "{}; this one runs unprobed, its inherited breakpoints removed",
                super::capacity::capacity_text(probe_core::Capacity::Spaces)
            ),
            probe_core::Error::CapacityExhausted { what } => super::capacity::capacity_text(what),
            probe_core::Error::BytesChanged { .. } => format!(
                "{e} (another debugger, tracer or a kernel uprobe from uprobe_events may have \
                 a breakpoint there; remove it first)"
            ),
            _ => e.to_string(),
        }
    }

    /// Reads the maps of `space` (held stopped through thread `tid`), makes sure the
    /// dynamic linker's hook is registered, and reports the mappings to the core.
    pub(crate) fn setup_space(&mut self, space: SpaceId, tid: Pid) -> Result<(), TraceError> {
        self.platform.set_current(Some(TaskId(tid.0 as u64)));
        let diff = self.platform.refresh_maps(space)?;
        self.ensure_dl_hook(space);
        for r in diff.removed {
            self.core.on_munmap(&self.platform, space, r);
        }
        self.install_in_new_mappings(space, tid, &diff.added);
        self.ensure_unwind_hooks(space);
        self.ensure_ptrace_hook(space);
        Ok(())
    }

    /// Reads the maps of `space` again after the dynamic linker changed them, or the
    /// program mapped or unmapped memory itself (`slots.rs`).
    pub(crate) fn rescan(&mut self, space: SpaceId, tid: Pid) {
        self.platform.set_current(Some(TaskId(tid.0 as u64)));
        let diff = match self.platform.refresh_maps(space) {
            Ok(d) => d,
            Err(e) => {
                self.warn(format!("re-reading the mappings of process {space}: {e}"));
                return;
            }
        };
        if !self.platform.xol_in_maps(space) {
            self.drop_slot_area(space);
        }
        for r in diff.removed {
            self.core.on_munmap(&self.platform, space, r);
        }
        self.install_in_new_mappings(space, tid, &diff.added);
        self.ensure_unwind_hooks(space);
        self.ensure_ptrace_hook(space);
    }

    /// Installs the probes of newly mapped files in `space` (held stopped through `tid`),
    /// then resolves the specs again in each new file they name. An attached probe that
    /// cannot be installed is recorded as lost for that process ([`Session::lost`]).
    fn install_in_new_mappings(&mut self, space: SpaceId, tid: Pid, added: &[Mapping]) {
        for &m in added {
            if let Err(e) = self.core.on_mmap(&self.platform, m) {
                if !self.note_lost_in_mapping(&m, e) {
                    let why = self.explain(e);
                    self.warn(format!("installing probes in process {space}: {why}"));
                }
            }
        }
        self.on_new_images(space, tid, added);
    }

    /// The files `space` maps executable (each once, with its path) that `wanted` picks by
    /// path, or that are the process's executable (a static program holds its libraries'
    /// code itself): where the tracer's own hooks go.
    pub(crate) fn exec_files_where(
        &self,
        space: SpaceId,
        wanted: fn(&Path) -> bool,
    ) -> Vec<(FileId, PathBuf)> {
        let exe = self
            .platform
            .space_pid(space)
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok());
        let mut files: Vec<FileId> = self
            .platform
            .mappings(space)
            .iter()
            .filter(|m| m.exec)
            .map(|m| m.file)
            .collect();
        files.sort_by_key(|f| f.0);
        files.dedup();
        files
            .into_iter()
            .filter_map(|f| Some((f, self.platform.file_path(f)?)))
            .filter(|(_, path)| wanted(path) || exe.as_deref() == Some(path.as_path()))
            .collect()
    }

    pub(crate) fn warn(&mut self, w: String) {
        if self.warnings.len() < 100 && !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Registers the hook on the dynamic linker of `space` (its `_dl_debug_state`, which it
    /// calls around every change of the loaded objects), once per interpreter file.
    fn ensure_dl_hook(&mut self, space: SpaceId) {
        let Some(pid) = self.platform.space_pid(space) else {
            return;
        };
        let Some(base) = interpreter_base(pid) else {
            return; // statically linked: nothing is loaded later
        };
        let Some(m) = self
            .platform
            .mappings(space)
            .into_iter()
            .find(|m| m.range.start.0 == base)
        else {
            return;
        };
        if self.hooks.contains_key(&m.file) {
            return;
        }
        let path = self.platform.file_path(m.file).unwrap_or_default();
        let offset = match dl_debug_state_offset(&path) {
            Ok(o) => o,
            Err(why) => {
                self.hooks.insert(m.file, None);
                self.warn(format!(
                    "libraries loaded later will not be probed: {why} in {}",
                    path.display()
                ));
                return;
            }
        };
        let (_, hits) = (0, Arc::new(core::sync::atomic::AtomicU64::new(0)));
        let consumer = LinuxConsumer::new(Role::DlHook, hits, self.shared.clone());
        let key = ProbeKey::new(m.file, offset);
        match self
            .core
            .register(&self.platform, key, consumer, ConsumerOptions::new())
        {
            Ok(h) => {
                self.hooks.insert(m.file, Some(h));
            }
            Err((e, _)) => {
                self.hooks.insert(m.file, None);
                let why = self.explain(e);
                self.warn(format!(
                    "libraries loaded later will not be probed: the dynamic linker's hook \
                     failed: {why}"
                ));
            }
        }
    }

    /// Resumes every held thread and handles stops until the traced process exits or a stop
    /// signal arrives (then detaches). `sink` sees every hit record (with `--print`).
    pub fn run(
        &mut self,
        sink: &mut dyn FnMut(&ProbeEntry, &HitRecord),
    ) -> Result<Outcome, TraceError> {
        self.run_until(None, sink)
            .map(|o| o.unwrap_or(Outcome::Detached(0)))
    }

    /// Like [`run`](Self::run), but returns `Ok(None)` after `limit` with the process still
    /// traced (its threads running); [`detach`](Self::detach) or `run` again.
    pub fn run_for(
        &mut self,
        limit: Duration,
        sink: &mut dyn FnMut(&ProbeEntry, &HitRecord),
    ) -> Result<Option<Outcome>, TraceError> {
        self.run_until(Some(std::time::Instant::now() + limit), sink)
    }

    /// Forwards the queued hit records.
    pub(crate) fn drain(&mut self, sink: &mut dyn FnMut(&ProbeEntry, &HitRecord)) {
        if !self.shared.has_records() {
            return;
        }
        for r in self.shared.take_records() {
            if let Some(p) = self.probes.get(r.probe) {
                sink(p, &r);
            }
        }
    }

    /// Stops every thread, removes every probe (restoring the original bytes in every
    /// traced space), puts back hijacked return addresses, and detaches, handing each
    /// thread the signal it was about to receive. The processes live on.
    pub fn detach(&mut self) -> Result<DetachReport, TraceError> {
        let mut report = DetachReport::default();
        self.stop_all(&mut report.errors);
        self.snapshot_missed();
        self.remove_unwind_hooks(&mut report.errors);
        self.remove_ptrace_hooks(&mut report.errors);
        // Every thread is stopped: take every probe out.
        for i in 0..self.probes.len() {
            let extra = core::mem::take(&mut self.probes[i].extra);
            for h in self.probes[i].handle.take().into_iter().chain(extra) {
                if let Err(e) = self.core.unregister(&self.platform, h) {
                    report
                        .errors
                        .push(format!("removing {}: {e}", self.probes[i].name));
                }
            }
        }
        let hooks: Vec<ConsumerHandle> = self.hooks.values_mut().filter_map(Option::take).collect();
        for h in hooks {
            if let Err(e) = self.core.unregister(&self.platform, h) {
                report
                    .errors
                    .push(format!("removing the dynamic linker's hook: {e}"));
            }
        }
        let _ = self.core.maintain(&self.platform);
        report.errors.extend(self.placer.restore_all());
        let mut tids: Vec<Pid> = self.tasks.keys().copied().collect();
        tids.sort();
        for tid in &tids {
            let Some(t) = self.tasks.get_mut(tid) else {
                continue;
            };
            if let Err(e) = self
                .core
                .restore_returns(&self.platform, t.space, &mut t.ts)
            {
                report
                    .errors
                    .push(format!("restoring return addresses of thread {tid}: {e}"));
            }
        }
        // Nothing leads into the slot areas any more: unmap them (while threads are held).
        report.slot_areas_left = self.unmap_slot_areas();
        for tid in tids {
            let Some(mut t) = self.tasks.remove(&tid) else {
                continue;
            };
            let sig = match t.run {
                Run::Held(s) => s,
                _ => 0,
            };
            match sys::detach(tid, sig) {
                Ok(()) => report.threads += 1,
                Err(sys::SysError::NoSuchProcess { .. }) => {}
                Err(e) => report.errors.push(e.to_string()),
            }
            // Signals held back for a single step or a slot the thread had not left yet
            // still reach it.
            for held in t.deferred.drain(..) {
                let _ = sys::tgkill(t.tgid, tid, held.signo());
            }
            self.platform.remove_task(TaskId(tid.0 as u64));
        }
        for (tid, _) in self.orphans.drain() {
            let _ = sys::detach(tid, 0);
        }
        self.detaching = false;
        for e in report.errors.iter().chain(&report.slot_areas_left) {
            if self.warnings.len() < 100 {
                self.warnings.push(e.clone());
            }
        }
        Ok(report)
    }
}

impl Session {
    /// Ends the session without letting the program run on: a spawned process is killed
    /// (it has run nothing of its own yet if no `run` happened), an attached one is detached.
    pub fn abort(mut self) -> Result<(), TraceError> {
        if self.spawned {
            let _ = sys::kill(self.root, libc::SIGKILL);
            while self.outcome.is_none() && !self.tasks.is_empty() {
                match sys::wait_through_stop(None) {
                    Ok(st) => self.handle(st),
                    Err(_) => break,
                }
            }
        }
        if !self.tasks.is_empty() {
            self.detach()?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            // Never leave breakpoints behind, whatever happened.
            let _ = self.detach();
        }
        let _ = self.placer.restore_all();
    }
}

/// The load address of the dynamic linker of process `pid` (`AT_BASE` of its auxiliary
/// vector), or `None` for a statically linked program.
pub fn interpreter_base(pid: Pid) -> Option<u64> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    auxv.chunks_exact(16).find_map(|c| {
        let key = u64::from_ne_bytes(c[..8].try_into().ok()?);
        let val = u64::from_ne_bytes(c[8..].try_into().ok()?);
        (key == libc::AT_BASE && val != 0).then_some(val)
    })
}

/// The file offset of `_dl_debug_state` in the dynamic linker at `path`.
pub fn dl_debug_state_offset(path: &Path) -> Result<u64, String> {
    let img = ElfImage::open(path).map_err(|e| e.to_string())?;
    img.lookup("_dl_debug_state")
        .first()
        .map(|s| s.file_offset)
        .ok_or_else(|| "no `_dl_debug_state` symbol".to_owned())
}

/// The name a probe point is shown under: `libc.so.6:malloc` (a default symbol version is
/// left out; another is kept: `memcpy@GLIBC_2.2.5`), `uretprobe:` in front of return probes.
pub fn probe_name(p: &resolve::ResolvedProbe) -> String {
    let mut p = p.clone();
    if let Some(s) = &mut p.symbol {
        if let Some(i) = s.find("@@") {
            s.truncate(i);
        }
    }
    match p.kind {
        ProbeKind::Return => format!("uretprobe:{}", p.display_name()),
        _ => p.display_name(),
    }
}
