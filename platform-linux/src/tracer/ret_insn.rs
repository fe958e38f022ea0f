//! `--ret-by-insn`: return probes that never touch the stack.
//!
//! An ordinary return probe replaces the return address of each call with the trampoline
//! (as the kernel's uretprobes do). Go moves goroutine stacks and walks return addresses
//! itself (for stack copying, preemption, tracebacks and the garbage collector): a replaced
//! address makes the runtime die with `unknown pc` or `unexpected return pc`. This method
//! instead decodes the function from its symbol's start to its end ([`crate::insn::exits_of`])
//! and puts an ordinary breakpoint on each `ret`: a hit there is the function returning, and
//! is reported as a return is (same record, the return value from `rax`, the count, the
//! duration from an entry timestamp taken by a breakpoint on the function's entry).
//!
//! What it cannot see: a function left by a tail call (`jmp` to another function), by
//! `longjmp` or by unwinding has no return counted. The session warns when the decoded
//! function holds a direct jump out of it, or an indirect jump (which may be one).
//!
//! Calls are paired with returns per thread (C, C++, Rust: by stack pointer, so frames
//! abandoned by `longjmp` are dropped) or per goroutine in a Go program (by `r14`, which
//! holds the current goroutine in Go's register ABI at every entry and return, since a
//! goroutine may return on another thread than it entered on, on another stack). A jump
//! back to the function's first instruction (Go's `call runtime.morestack; jmp start` after
//! the stack grew, or a self tail call) enters it again without a new call: a breakpoint
//! there marks the next entry hit of that thread or goroutine as no call.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use probe_core::{ConsumerHandle, ConsumerOptions, FileId, ProbeKey};

use super::consumer::LinuxConsumer;
use super::session::Session;
use crate::insn::{Exits, ExitsError};
use crate::resolve::{ProbeKind, ResolvedProbe};

/// Open calls kept per thread (or goroutine) and probe: beyond this (calls left by tail
/// calls pile up), the oldest are dropped.
pub const OPEN_CALLS: usize = 4096;

/// Which of a function's instructions a consumer of this method sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnSite {
    /// The function's first instruction: a call starts (timestamp).
    Entry,
    /// A `ret`: the function returns.
    Ret,
    /// A jump back to the first instruction: the next entry hit is not a call.
    Restart,
}

/// Who a call belongs to: (probe index, thread id or goroutine).
type Owner = (usize, u64);

/// The calls in flight of every probe of this method, shared by its consumers.
#[derive(Debug, Default)]
pub struct InsnCalls {
    /// Per owner: (stack pointer at the entry, entry timestamp) of the calls that have not
    /// returned, innermost last.
    open: Mutex<HashMap<Owner, Vec<(u64, u64)>>>,
    /// Owners that jumped back to the function's start.
    restarting: Mutex<HashSet<Owner>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InsnCalls {
    /// Notes that `owner` jumped back to the function's first instruction.
    pub(crate) fn restart(&self, owner: Owner) {
        lock(&self.restarting).insert(owner);
    }

    /// Whether an entry hit of `owner` is a restart (no call); forgets the restart.
    pub(crate) fn take_restart(&self, owner: Owner) -> bool {
        lock(&self.restarting).remove(&owner)
    }

    /// An entry hit of `owner`: `false` if it is a restart (no call), else the call is
    /// remembered.
    pub(crate) fn enter(&self, owner: Owner, sp: u64, now: u64) -> bool {
        if self.take_restart(owner) {
            return false;
        }
        let mut open = lock(&self.open);
        let v = open.entry(owner).or_default();
        if v.len() >= OPEN_CALLS {
            v.remove(0);
        }
        v.push((sp, now));
        true
    }

    /// A `ret` hit of `owner` with stack pointer `sp` (as at the entry: pointing at the
    /// return address): the entry timestamp of the call returning, if it is known. With
    /// `by_sp`, calls entered deeper on the stack were abandoned (`longjmp`) and are dropped,
    /// and a call is only matched at its own stack pointer; without (Go moves stacks), the
    /// innermost open call returns.
    pub(crate) fn leave(&self, owner: Owner, sp: u64, by_sp: bool) -> Option<u64> {
        let mut open = lock(&self.open);
        let v = open.get_mut(&owner)?;
        if by_sp {
            while v.last().is_some_and(|&(s, _)| s < sp) {
                v.pop();
            }
            if v.last().is_some_and(|&(s, _)| s == sp) {
                v.pop().map(|(_, t)| t)
            } else {
                None
            }
        } else {
            v.pop().map(|(_, t)| t)
        }
    }
}

/// How the consumers of one probe point of this method behave.
#[derive(Clone, Debug)]
pub struct InsnRole {
    /// Where the consumer sits.
    pub site: InsnSite,
    /// The calls in flight.
    pub calls: Arc<InsnCalls>,
    /// Pair calls by goroutine (`r14`, a Go program) rather than by thread and stack.
    pub by_goroutine: bool,
    /// Remember each call for its return (not for an entry probe counting calls alone).
    pub track: bool,
}

/// What the warning about a function's exits says, if anything.
fn exit_warning(name: &str, exits: &Exits) -> Option<String> {
    let at = |v: &[u64]| {
        v.iter()
            .take(3)
            .map(|o| format!("+{o:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (exits.tail_jumps.is_empty(), exits.indirect_jumps.is_empty()) {
        (true, true) => None,
        (false, _) => Some(format!(
            "{name}: --ret-by-insn does not count the calls that leave it by a tail call: it \
             jumps out of the function at {}",
            at(&exits.tail_jumps)
        )),
        (true, false) => Some(format!(
            "{name}: --ret-by-insn does not count the calls that leave it by a tail call, and \
             its indirect jump at {} may be one (or a switch's jump table)",
            at(&exits.indirect_jumps)
        )),
    }
}

impl Session {
    /// Registers probe point `p` (a return probe, or an entry probe timed by `--latency`)
    /// by breakpoints on its function's entry, `ret` instructions and restarts; with
    /// `rets` false (an entry probe that counts calls alone), on its entry and restarts
    /// only. Returns the entry's handle and the others, and a warning about exits this
    /// method does not see; on failure nothing stays registered.
    pub(crate) fn register_by_insn(
        &mut self,
        p: &ResolvedProbe,
        file: FileId,
        consumer: LinuxConsumer,
        rets: bool,
    ) -> Result<(ConsumerHandle, Vec<ConsumerHandle>, Option<String>), String> {
        let image = self.resolver.image(&p.file).map_err(|e| e.to_string())?;
        let by_goroutine = image.is_go();
        let sym = image
            .symbol_at_offset(p.file_offset)
            .filter(|s| s.file_offset == p.file_offset)
            .cloned()
            .ok_or_else(|| {
                "--ret-by-insn needs the function's symbol (its start and size) to find its \
                 `ret` instructions"
                    .to_owned()
            })?;
        let exits = match crate::insn::function_exits(&p.file, &sym) {
            Err(e) => return Err(format!("reading {}: {e}", p.file.display())),
            Ok(Err(ExitsError::NoSize)) => {
                return Err(
                    "--ret-by-insn needs the function's size, and its symbol has none \
                            (where its `ret` instructions are is unknown)"
                        .to_owned(),
                )
            }
            Ok(Err(ExitsError::Undecodable { at })) => {
                return Err(format!(
                    "--ret-by-insn decodes the whole function, and its bytes at +{at:#x} do \
                     not decode as x86-64 code"
                ))
            }
            Ok(Err(ExitsError::NoReturn)) => {
                return Err(
                    "--ret-by-insn found no `ret` in the function: it never returns, \
                            or leaves only by tail calls"
                        .to_owned(),
                )
            }
            Ok(Ok(e)) => e,
        };
        let warning = if rets {
            exit_warning(&sym.name, &exits)
        } else {
            None
        };
        let calls = self.insn_calls.clone();
        let with = |site| {
            consumer.clone().with_insn(InsnRole {
                site,
                calls: calls.clone(),
                by_goroutine,
                track: rets,
            })
        };
        let mut sites = vec![(0, with(InsnSite::Entry))];
        if rets {
            sites.extend(exits.rets.iter().map(|&o| (o, with(InsnSite::Ret))));
        }
        sites.extend(exits.restarts.iter().map(|&o| (o, with(InsnSite::Restart))));
        let mut handles = Vec::new();
        for (off, c) in sites {
            let key = ProbeKey::new(file, p.file_offset + off);
            match self
                .core
                .register(&self.platform, key, c, ConsumerOptions::new())
            {
                Ok(h) => handles.push(h),
                Err((e, _)) => {
                    let why = self.explain(e);
                    for h in handles {
                        let _ = self.core.unregister(&self.platform, h);
                    }
                    return Err(format!("its instruction at +{off:#x}: {why}"));
                }
            }
        }
        let entry = handles.remove(0);
        Ok((entry, handles, warning))
    }

    /// Whether probe point `p` is timed or returned through this method.
    pub(crate) fn by_insn(&self, p: &ResolvedProbe) -> bool {
        self.ret_by_insn
            && (p.kind == ProbeKind::Return || (self.rets.latency && p.kind == ProbeKind::Entry))
    }

    /// Whether probe point `p` is an entry probe on a function's first instruction that
    /// counts calls through this method (entries = returns even where the function jumps
    /// back to its start: Go's stack growth), without timing them.
    pub(crate) fn entry_by_insn(&self, p: &ResolvedProbe) -> bool {
        self.ret_by_insn
            && !self.rets.latency
            && p.kind == ProbeKind::Entry
            && p.symbol_offset == 0
            && p.symbol.is_some()
    }
}
