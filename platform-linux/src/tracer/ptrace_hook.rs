//! The traced program's own `ptrace` calls.
//!
//! A process has one tracer. While `probe` traces a program and follows its children, the
//! program's own `ptrace(PTRACE_TRACEME)` (a debugger's freshly forked inferior) and its
//! `PTRACE_ATTACH`/`PTRACE_SEIZE` of a process `probe` traces (strace, gdb `attach`) fail
//! with `EPERM`, and the program says only "Operation not permitted". To say why, the
//! tracer puts a breakpoint of its own on libc's `ptrace` wrapper in every traced process,
//! as it does on the dynamic linker's `_dl_debug_state`; at the end a warning names the
//! process, the request and the target, and points at `--no-follow`. A program that makes
//! the system call without libc (LeakSanitizer's `internal_ptrace`, Go) is not seen.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use probe_core::{ConsumerHandle, ConsumerOptions, FileId, ProbeKey, SpaceId};

use super::consumer::{LinuxConsumer, Role};
use super::session::Session;
use crate::sys::Pid;

/// A call of libc's `ptrace` seen by the hook: its process and first two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtraceCall {
    pub(crate) space: SpaceId,
    pub(crate) request: u64,
    pub(crate) target: u64,
}

/// The hooks and what they saw.
#[derive(Debug, Default)]
pub(crate) struct PtraceHooks {
    /// Files already searched for the `ptrace` symbol.
    searched: HashSet<FileId>,
    hooks: Vec<ConsumerHandle>,
    /// Calls already reported: (process, request, target).
    reported: HashSet<(u64, u64, u64)>,
}

const PTRACE_TRACEME: u64 = 0;
const PTRACE_ATTACH: u64 = 16;
const PTRACE_SEIZE: u64 = 0x4206;

/// Whether `path` is a file that defines the C library's `ptrace`.
fn is_libc(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().starts_with("libc.so"))
        .unwrap_or(false)
}

/// The comm of process `pid`, if it can be read.
fn comm(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

impl Session {
    /// Registers the hook on `ptrace` in the C library of `space` (or in the program
    /// itself when it is linked statically), once per file.
    pub(crate) fn ensure_ptrace_hook(&mut self, space: SpaceId) {
        for (file, path) in self.exec_files_where(space, is_libc) {
            if !self.ptrace_hooks.searched.insert(file) {
                continue;
            }
            // The resolver's copy: libc is most often parsed for the specs already.
            let Some(offset) = self
                .resolver
                .image(&path)
                .ok()
                .and_then(|img| img.lookup("ptrace").first().map(|s| s.file_offset))
            else {
                continue;
            };
            let hits = Arc::new(core::sync::atomic::AtomicU64::new(0));
            let consumer = LinuxConsumer::new(Role::PtraceCall, hits, self.shared.clone());
            let key = ProbeKey::new(file, offset);
            // A hook that cannot be registered only means a failure goes unexplained: the
            // program runs as it would without it.
            if let Ok(h) = self
                .core
                .register(&self.platform, key, consumer, ConsumerOptions::new())
            {
                self.ptrace_hooks.hooks.push(h);
            }
        }
    }

    /// Turns the `ptrace` calls the hooks saw into warnings: the ones that fail because
    /// `probe` traces the caller or its target.
    pub(crate) fn report_ptrace_calls(&mut self) {
        for call in self.shared.take_ptrace_calls() {
            let pid = call.space.0;
            let traced_target = i32::try_from(call.target)
                .ok()
                .is_some_and(|t| self.tasks.contains_key(&Pid(t)));
            let what = match call.request {
                PTRACE_TRACEME => "ptrace(PTRACE_TRACEME)".to_owned(),
                PTRACE_ATTACH if traced_target => {
                    format!("ptrace(PTRACE_ATTACH, {})", call.target)
                }
                PTRACE_SEIZE if traced_target => format!("ptrace(PTRACE_SEIZE, {})", call.target),
                _ => continue,
            };
            let key = (pid, call.request, call.target);
            if !self.ptrace_hooks.reported.insert(key) {
                continue;
            }
            let whom = if call.request == PTRACE_TRACEME {
                pid
            } else {
                call.target
            };
            // `--no-follow` helps unless the process in question is the command itself.
            let hint = if whom == u64::from(self.root.0.unsigned_abs()) {
                ""
            } else {
                "; `--no-follow` traces only the command and leaves its children to it"
            };
            self.warn(format!(
                "process {pid} ({}) called {what}, which fails with EPERM (\"Operation not \
                 permitted\"): probe is tracing process {whom}, and a process has one \
                 tracer{hint}",
                comm(pid)
            ));
        }
    }

    /// Unregisters the hooks (detach).
    pub(crate) fn remove_ptrace_hooks(&mut self, errors: &mut Vec<String>) {
        for h in core::mem::take(&mut self.ptrace_hooks.hooks) {
            if let Err(e) = self.core.unregister(&self.platform, h) {
                errors.push(format!("removing the hook on ptrace: {e}"));
            }
        }
    }
}
