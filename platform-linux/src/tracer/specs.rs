//! The specs of a [`Session`]: resolved when added, and again for each new image a traced
//! process maps (the program after an `exec`, a library the dynamic linker loads) whose file
//! the spec names.
//!
//! A short name (`python3`, `libc`) or a spec about "the program" (`uprobe:main`) means
//! different files in different processes: through a wrapper (pyenv's `python3` shim is a
//! shell script that ends in `exec .../versions/3.11.9/bin/python3.11`) the file found before
//! the command starts is not the one that runs. So every executable mapping of a file seen
//! for the first time in a traced process is matched against every spec: a short name by
//! [`resolve::short_name_matches`] on the file's name, a program spec by the process's
//! executable, a path by the file itself. A spec resolves in each file once.
//!
//! A short name found nowhere at the start is not an error: it waits for a traced process
//! to map a file of that name (a note says so). At the end, [`Session::unmatched`] names each
//! spec whose files no traced process mapped.

use std::path::{Path, PathBuf};

use probe_core::{Arch, ConsumerHandle, Mapping, PlanKind, ProbeKey, SpaceId};

use super::capacity::SLOT_BUDGET;
use super::error::TraceError;
use super::session::{AddReport, Session};
use super::skips::{insn_at, Lost, SkipReason};
use crate::resolve::{self, Location, ProbeKind, ProbeSpec, ResolveError};
use crate::sys::Pid;

/// One spec of the session.
#[derive(Debug, Clone)]
pub(crate) struct SpecState {
    /// The spec.
    pub(crate) spec: ProbeSpec,
    /// The files it was resolved in (canonical paths).
    pub(crate) files: Vec<PathBuf>,
    /// Why it resolved in no file when it was added (a short name found nowhere yet).
    pub(crate) waiting: Option<String>,
    /// What resolving it in later images did.
    pub(crate) late: Vec<LateResolution>,
}

/// A spec resolved again in a file a traced process mapped.
#[derive(Debug, Clone)]
pub struct LateResolution {
    /// The spec.
    pub spec: String,
    /// The file.
    pub file: PathBuf,
    /// The process that mapped it.
    pub pid: i32,
    /// What registering its points did; `Err` when the spec does not resolve in the file,
    /// in words.
    pub report: Result<AddReport, String>,
    /// The error only says the file lacks what the spec names (a function, a marker): shown
    /// with `--verbose` alone. Any other (a Go program refusing return probes, a file that
    /// cannot be read) is always shown.
    pub absent: bool,
}

/// Whether the command `program` (a path, or a name looked up in `PATH` as `execvp` does)
/// is a script (`#!`): then its first image is the interpreter.
pub(crate) fn is_script(program: &std::ffi::OsStr) -> bool {
    use std::io::Read;
    let path = Path::new(program);
    let file = if path.components().count() > 1 {
        Some(path.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    let mut magic = [0u8; 2];
    file.and_then(|f| std::fs::File::open(f).ok())
        .is_some_and(|mut f| f.read_exact(&mut magic).is_ok() && magic == *b"#!")
}

impl Session {
    /// Parses, resolves and registers one probe spec. A spec that names one function must
    /// work; a glob registers what it can and reports the rest, each with its reason.
    ///
    /// Call it while the threads are held: after [`spawn`](Self::spawn) or
    /// [`attach`](Self::attach), before [`run`](Self::run) (the slot area is mapped by a
    /// system call injected into a held thread). Probes on a library not loaded yet are
    /// installed when the dynamic linker maps it; the spec is resolved again in each file a
    /// traced process maps later that it names (see the module docs).
    pub fn add_spec(&mut self, text: &str) -> Result<AddReport, TraceError> {
        let spec = resolve::parse_spec(text)?;
        let mut state = SpecState {
            spec: spec.clone(),
            files: Vec::new(),
            waiting: None,
            late: Vec::new(),
        };
        let path = match self.resolver.module_path(&spec) {
            Ok(p) => p,
            Err(e @ ResolveError::ModuleNotFound { .. })
                if spec.module.as_deref().is_some_and(|m| !m.contains('/')) =>
            {
                let report = AddReport {
                    notes: vec![format!(
                        "{e}; `{text}` is placed when a traced process maps a file of that \
                         name"
                    )],
                    ..AddReport::default()
                };
                state.waiting = Some(format!(
                    "no file `{}` was found at the start, nor mapped by a traced process",
                    spec.module.as_deref().unwrap_or_default()
                ));
                self.specs.push(state);
                return Ok(report);
            }
            Err(e) => return Err(e.into()),
        };
        let current = self.held_task_of(SpaceId(self.root.0 as u64));
        match self.add_spec_in(&spec, &path, true, current) {
            Ok(report) => {
                state.files.push(path);
                self.specs.push(state);
                Ok(report)
            }
            // The program is a script: its own executable is the interpreter's for now; the
            // program it executes may have the function.
            Err(TraceError::Resolve(
                e @ (ResolveError::NoSuchSymbol { .. } | ResolveError::NoMatch { .. }),
            )) if spec.module.is_none() && self.command_is_script => {
                let report = AddReport {
                    notes: vec![format!(
                        "{e}; the command is a script, so `{text}` is placed in the program it \
                         executes"
                    )],
                    ..AddReport::default()
                };
                state.files.push(path);
                state.waiting = Some(e.to_string());
                self.specs.push(state);
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }

    /// Resolves `spec` in the file at `path` and registers its points; `strict` as for
    /// [`register_points`](Self::register_points).
    fn add_spec_in(
        &mut self,
        spec: &ProbeSpec,
        path: &Path,
        strict: bool,
        current: Option<Pid>,
    ) -> Result<AddReport, TraceError> {
        if spec.kind == ProbeKind::Usdt {
            return self.add_usdt_in(spec, path, strict, current);
        }
        let image = self.resolver.image(path)?;
        let points = resolve::resolve_in(image, spec.kind, &spec.location)?;
        if !self.ret_by_insn {
            // Before anything is changed: a return address replaced in a Go program crashes it.
            for p in &points {
                let image = self.resolver.image(&p.file)?;
                resolve::refuse_go_return(image, &spec.text, p.kind, self.rets.latency)?;
            }
        }
        let glob = matches!(spec.location, Location::Glob(_));
        self.register_points(&spec.text, points, glob, strict, current)
    }

    /// Why the core refused the point at `offset` of `file`, as a reason to group by.
    pub(crate) fn skip_reason(&self, e: probe_core::Error, file: &Path, offset: u64) -> SkipReason {
        match e {
            probe_core::Error::Rejected(reject) => SkipReason::Instruction {
                reject,
                insn: insn_at(file, offset),
            },
            probe_core::Error::Overlaps { existing, .. } => {
                let other = self
                    .probes
                    .iter()
                    .find(|q| q.file == file && q.offset == existing && q.handle.is_some())
                    .map_or_else(
                        || format!("the probe at file offset {existing:#x}"),
                        |q| format!("{} (file offset {existing:#x})", q.name),
                    );
                SkipReason::Overlaps { other }
            }
            probe_core::Error::CapacityExhausted { what } => SkipReason::Capacity(what),
            e => SkipReason::Other(self.explain(e)),
        }
    }

    /// Admits a just registered probe (its consumer `h` and `extra` ones) if the slots it
    /// needs fit every process's budget ([`SLOT_BUDGET`]): a library mapped later must find
    /// a slot for each of its probes. Otherwise unregisters `h` and says why.
    pub(crate) fn admit_slots(
        &mut self,
        h: ConsumerHandle,
        extra: &[ConsumerHandle],
    ) -> Result<ConsumerHandle, (String, SkipReason)> {
        let mut new: Vec<ProbeKey> = Vec::new();
        for &c in core::iter::once(&h).chain(extra) {
            let Some(key) = self.core.key_of(c) else {
                continue;
            };
            let slot = self.core.plan_of(key).is_some_and(|pl| {
                probe_core::arch::x86_64::X86_64::plan_kind(&pl) != PlanKind::Emulate
            });
            if slot && !self.slot_keys.contains(&key) && !new.contains(&key) {
                new.push(key);
            }
        }
        if self.slot_keys.len() + new.len() > SLOT_BUDGET {
            let _ = self.core.unregister(&self.platform, h);
            let why = SkipReason::Capacity(probe_core::Capacity::XolSlots);
            return Err((why.detail(), why));
        }
        self.slot_keys.extend(new);
        Ok(h)
    }

    /// New executable mappings of `space` (process `pid`, held stopped through `tid`): the
    /// files are remembered as mapped, and every spec is resolved again in each file it names
    /// that it was not resolved in yet.
    pub(crate) fn on_new_images(&mut self, space: SpaceId, tid: Pid, added: &[Mapping]) {
        let Some(pid) = self.platform.space_pid(space) else {
            return;
        };
        let mut fresh: Vec<PathBuf> = Vec::new();
        for m in added.iter().filter(|m| m.exec) {
            let Some(path) = self.platform.file_path(m.file) else {
                continue;
            };
            self.mapped.insert(path.clone());
            if !fresh.contains(&path) {
                fresh.push(path);
            }
        }
        if fresh.is_empty() || self.specs.is_empty() {
            return;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| std::fs::canonicalize(p).ok());
        for path in fresh {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for i in 0..self.specs.len() {
                let st = &self.specs[i];
                if st.files.contains(&path) || !names(&st.spec, &name, &path, exe.as_deref()) {
                    continue;
                }
                let spec = st.spec.clone();
                self.specs[i].files.push(path.clone());
                let report = self.add_spec_in(&spec, &path, false, Some(tid));
                let absent = matches!(
                    report,
                    Err(TraceError::Resolve(
                        ResolveError::NoSuchSymbol { .. }
                            | ResolveError::NoMatch { .. }
                            | ResolveError::NoSuchMarker { .. }
                    ))
                );
                let report = report.map_err(|e| e.to_string());
                if report.as_ref().is_ok_and(|r| r.added > 0) {
                    self.specs[i].waiting = None;
                }
                self.specs[i].late.push(LateResolution {
                    spec: spec.text.clone(),
                    file: path.clone(),
                    pid: pid.0,
                    report,
                    absent,
                });
            }
        }
    }

    /// After `on_mmap` of `m` failed with `e`: the attached probes of its file that are not
    /// installed there are lost for that process, and said so. False if none is.
    pub(crate) fn note_lost_in_mapping(&mut self, m: &Mapping, e: probe_core::Error) -> bool {
        let probes: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.handle.is_some() && p.key.file == m.file)
            .filter(|p| {
                m.addr_of(p.offset)
                    .is_some_and(|a| !self.core.is_installed(m.space, a))
            })
            .map(|p| p.name.clone())
            .collect();
        if probes.is_empty() {
            return false;
        }
        let file = self.platform.file_path(m.file).unwrap_or_default();
        self.lost.push(Lost {
            pid: m.space.0 as i32,
            when: format!("it mapped {}", file.display()),
            reason: self.explain(e),
            probes,
        });
        true
    }

    /// After `on_fork` of `child` from `parent` failed with `e`: the probes installed in the
    /// parent and not in the child are lost for the child, and said so.
    /// False if none is.
    pub(crate) fn note_lost_in_fork(
        &mut self,
        parent: SpaceId,
        child: SpaceId,
        e: probe_core::Error,
    ) -> bool {
        let mut keys: Vec<ProbeKey> = Vec::new();
        self.core.for_each_site(parent, |addr, key| {
            if !self.core.is_installed(child, addr) {
                keys.push(key);
            }
        });
        let probes: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.handle.is_some() && keys.contains(&p.key))
            .map(|p| p.name.clone())
            .collect();
        if probes.is_empty() {
            return false;
        }
        self.lost.push(Lost {
            pid: child.0 as i32,
            when: format!("it was forked from process {parent}"),
            reason: self.explain(e),
            probes,
        });
        true
    }

    /// Attached probes that could not be installed in some process (it mapped their file or
    /// forked when a table was full): they counted nothing there.
    pub fn lost(&self) -> &[Lost] {
        &self.lost
    }

    /// What resolving the specs again in later images did, in order.
    pub fn late_resolutions(&self) -> Vec<&LateResolution> {
        self.specs.iter().flat_map(|s| &s.late).collect()
    }

    /// What `probe trace` says at the end about the specs: each resolved again in a later
    /// image (with what it skipped there), the attached probes lost in some process, and the
    /// specs that matched nothing. With `verbose`, every skipped point and lost probe.
    pub fn end_lines(&self, verbose: bool) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.late_resolutions() {
            let at = format!("{} (mapped by process {})", l.file.display(), l.pid);
            match &l.report {
                Ok(r) if r.added > 0 || !r.skipped.is_empty() => {
                    out.push(format!(
                        "`{}` resolved in {at}: {} probe{} attached",
                        l.spec,
                        r.added,
                        if r.added == 1 { "" } else { "s" }
                    ));
                    out.extend(r.skip_lines(&l.spec, verbose));
                }
                Ok(_) => {}
                Err(e) if verbose || !l.absent => {
                    out.push(format!("`{}`: not placed in {at}: {e}", l.spec))
                }
                Err(_) => {}
            }
        }
        for l in &self.lost {
            let n = l.probes.len();
            let shown: Vec<&str> = l
                .probes
                .iter()
                .take(if verbose { usize::MAX } else { 5 })
                .map(String::as_str)
                .collect();
            out.push(format!(
                "{n} attached probe{} could not be installed in process {} when {}: {}; \
                 {} nothing there: {}{}",
                if n == 1 { "" } else { "s" },
                l.pid,
                l.when,
                l.reason,
                if n == 1 { "it counted" } else { "they counted" },
                shown.join(", "),
                if shown.len() < n {
                    ", ... (--verbose lists them)"
                } else {
                    ""
                }
            ));
        }
        out.extend(
            self.unmatched()
                .into_iter()
                .map(|w| format!("warning: {w}")),
        );
        out
    }

    /// One sentence per spec that matched nothing in any traced process: its files (or the
    /// file its short name means) were never mapped by one, or it never resolved at all.
    pub fn unmatched(&self) -> Vec<String> {
        let mut out = Vec::new();
        for st in &self.specs {
            let text = &st.spec.text;
            let attached: Vec<&Path> = self
                .probes
                .iter()
                .filter(|p| &p.spec == text && p.handle.is_some())
                .map(|p| p.file.as_path())
                .collect();
            if attached.iter().any(|f| self.mapped.contains(*f)) {
                continue;
            }
            let why = if let Some(w) = &st.waiting {
                w.clone()
            } else if attached.is_empty() {
                continue; // nothing attached: the skip summary said why
            } else {
                let mut files: Vec<String> =
                    attached.iter().map(|f| f.display().to_string()).collect();
                files.sort();
                files.dedup();
                format!(
                    "it resolved to {}, which no traced process mapped",
                    files.join(", ")
                )
            };
            out.push(format!(
                "`{text}` matched nothing in any traced process: {why}{}",
                self.found_elsewhere(st)
            ));
        }
        out
    }
}

impl Session {
    /// For a spec naming one function that matched nothing: the files traced processes
    /// mapped that have the function, as a hint (`; `PyObject_Malloc` is in ..., which a
    /// traced process mapped: try `libpython3.11:PyObject_Malloc``).
    fn found_elsewhere(&self, st: &SpecState) -> String {
        let Location::Symbol { name, offset } = &st.spec.location else {
            return String::new();
        };
        let mut paths: Vec<&PathBuf> = self
            .mapped
            .iter()
            .filter(|p| !st.files.contains(p))
            .collect();
        paths.sort();
        let found: Vec<String> = paths
            .into_iter()
            .filter(|p| crate::elf::ElfImage::open(p).is_ok_and(|img| !img.lookup(name).is_empty()))
            .take(3)
            .map(|p| {
                let file = p
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                let short = file.split(".so").next().unwrap_or(&file).to_owned();
                let off = if *offset > 0 {
                    format!("+{offset:#x}")
                } else {
                    String::new()
                };
                format!("{} (`{short}:{name}{off}`)", p.display())
            })
            .collect();
        if found.is_empty() {
            return String::new();
        }
        format!(
            "; `{name}` is in {}, which a traced process mapped",
            found.join(", ")
        )
    }
}

/// Whether `spec` names the file at `path` (called `name`), mapped by a process whose
/// executable is `exe`.
fn names(spec: &ProbeSpec, name: &str, path: &Path, exe: Option<&Path>) -> bool {
    match spec.module.as_deref() {
        Some(m) if m.contains('/') => std::fs::canonicalize(m).is_ok_and(|c| c == path),
        Some(m) => resolve::short_name_matches(name, m),
        None => exe == Some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_files_by_short_name_path_or_program() {
        let spec = resolve::parse_spec("python3:PyObject_Malloc").unwrap();
        let p = Path::new("/opt/py/bin/python3.11");
        assert!(names(&spec, "python3.11", p, None));
        assert!(!names(&spec, "bash", Path::new("/usr/bin/bash"), None));
        let spec = resolve::parse_spec("uprobe:main").unwrap();
        assert!(names(&spec, "python3.11", p, Some(p)));
        assert!(!names(
            &spec,
            "libc.so.6",
            Path::new("/lib/libc.so.6"),
            Some(p)
        ));
        let spec = resolve::parse_spec("/bin/sh:main").unwrap();
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        assert!(names(&spec, "dash", &sh, None));
        assert!(!names(&spec, "python3.11", p, None));
    }

    #[test]
    fn scripts_are_told_from_programs() {
        let dir = std::env::temp_dir().join(format!("probe-specs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("wrapper");
        std::fs::write(&script, "#!/bin/sh\nexec true\n").unwrap();
        assert!(is_script(script.as_os_str()));
        assert!(!is_script(std::ffi::OsStr::new("/bin/true")));
        assert!(!is_script(std::ffi::OsStr::new("true")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
