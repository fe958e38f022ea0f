//! [`LinuxPlatform`]: the core's [`Platform`] over ptrace and `/proc`.
//!
//! - Files are identified by (device, inode) and get a [`FileId`] on first sight; the path is
//!   kept so the original bytes can be read from disk ([`Platform::read_file`]).
//! - An address space is a process (`SpaceId(tgid)`): its `/proc/PID/mem` ([`ProcMem`]), a
//!   cache of its `/proc/PID/maps` (the rmap walk reads the cache; the tracer refreshes it at
//!   attach, exec and every dynamic-linker notification), and its slot area.
//! - A task is a thread (`TaskId(tid)`), with the space it runs in (a `vfork` child runs in its
//!   parent's space until it execs) and whether it sits in a ptrace stop of ours.
//!
//! The slot area is mapped by a system call injected into a stopped thread of the space
//! ([`Injector::map_near`]); the tracer names the thread it holds stopped with
//! [`LinuxPlatform::set_current`] before every call into the core that may install a probe.
//!
//! All state sits behind one `RefCell`: the tracer is a single thread, and no borrow is held
//! while a callback of the core runs (the walks collect first, then call).

use core::cell::RefCell;
use core::ops::ControlFlow;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use probe_core::arch::x86_64::X86_64;
use probe_core::{
    Addr, AddressSpace, Arch, FileId, Mapping, MemError, MemErrorKind, Platform, Range, SpaceId,
    TaskId,
};

use crate::maps::{self, Mapping as MapLine};
use crate::mem::ProcMem;
use crate::remote::Injector;
use crate::sys::Pid;

/// A file the tracer knows.
#[derive(Debug)]
struct FileInfo {
    path: PathBuf,
    size: u64,
    file: File,
}

/// The files the tracer knows, by (device, inode).
#[derive(Debug, Default)]
struct FileTable {
    by_key: HashMap<(u64, u64), FileId>,
    files: Vec<FileInfo>,
}

impl FileTable {
    fn get(&self, id: FileId) -> Option<&FileInfo> {
        self.files.get((id.0 as usize).checked_sub(1)?)
    }

    /// The id of the file at `path`, opening it on first sight.
    fn intern_path(&mut self, path: &Path) -> std::io::Result<FileId> {
        let meta = std::fs::metadata(path)?;
        let key = (meta.dev(), meta.ino());
        if let Some(&id) = self.by_key.get(&key) {
            return Ok(id);
        }
        let file = File::open(path)?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.files.push(FileInfo {
            path,
            size: meta.len(),
            file,
        });
        let id = FileId(self.files.len() as u64);
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// The id of the file a maps line shows (by its device and inode; on an overlay file
    /// system, where those differ from what `stat` says, by its path).
    fn intern_map(&mut self, m: &MapLine) -> Option<FileId> {
        let key = (libc::makedev(m.dev.0, m.dev.1), m.inode);
        if let Some(&id) = self.by_key.get(&key) {
            return Some(id);
        }
        if m.deleted {
            return None;
        }
        let id = self.intern_path(Path::new(&m.path)).ok()?;
        self.by_key.insert(key, id);
        Some(id)
    }
}

/// One traced address space.
#[derive(Debug)]
struct SpaceState {
    /// The process whose `/proc` files describe it.
    pid: Pid,
    mem: Rc<ProcMem>,
    /// Every line of its maps, as last read.
    lines: Vec<MapLine>,
    /// Its file mappings, as the core sees them.
    files: Vec<Mapping>,
    /// The slot area, once mapped.
    xol: Option<u64>,
    /// Why no slot area can be mapped in it (seccomp), once found: not asked again.
    xol_refused: Option<String>,
}

/// One traced thread, as the platform needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TaskInfo {
    space: SpaceId,
    /// In a ptrace stop of ours where a system call may be injected.
    stopped: bool,
}

#[derive(Debug, Default)]
struct State {
    files: FileTable,
    spaces: HashMap<SpaceId, SpaceState>,
    tasks: HashMap<TaskId, TaskInfo>,
    current: Option<TaskId>,
    /// Why the last slot area could not be mapped, for messages.
    xol_error: Option<String>,
}

/// What changed in a space's file mappings since the last look.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapsDiff {
    /// Ranges no longer mapped as before.
    pub removed: Vec<Range>,
    /// New or changed file mappings.
    pub added: Vec<Mapping>,
}

/// Memory of one traced address space: reads and writes through `/proc/PID/mem` (which
/// breaks copy-on-write in read-only text the way `PTRACE_POKETEXT` does).
#[derive(Debug, Clone)]
pub struct LinuxSpace {
    id: SpaceId,
    mem: Rc<ProcMem>,
    /// The slot area (start, end), once mapped: an eight-byte write of an address inside it
    /// is a return address taken over (pointed at the trampoline).
    xol: Option<(u64, u64)>,
}

fn mem_error(addr: Addr, e: &crate::mem::MemError) -> MemError {
    use crate::mem::MemError as E;
    let kind = match e {
        E::Open { .. } => MemErrorKind::Gone,
        E::Access { errno, .. } if errno.0 == libc::ESRCH => MemErrorKind::Gone,
        E::Access { errno, .. } if errno.0 == libc::EPERM || errno.0 == libc::EACCES => {
            MemErrorKind::Denied
        }
        E::Access { .. } => MemErrorKind::Unmapped,
        E::Short { .. } => MemErrorKind::Io,
    };
    MemError::new(addr, kind)
}

impl AddressSpace for LinuxSpace {
    fn id(&self) -> SpaceId {
        self.id
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        match self.mem.read_partial(addr.0, buf) {
            Ok(0) if !buf.is_empty() => Err(MemError::new(addr, MemErrorKind::Unmapped)),
            Ok(n) => Ok(n),
            Err(e) => Err(mem_error(addr, &e)),
        }
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        // Two-byte writes are SDT semaphores (return addresses and emulated pushes are
        // eight bytes, slots longer), and an eight-byte write of an address in our slot
        // area takes a return address over: both journalled for the guardian.
        if crate::journal::active() {
            if data.len() == 2 {
                let mut old = [0u8; 2];
                if self.mem.read(addr.0, &mut old).is_ok() {
                    crate::journal::record_data(self.mem.pid(), addr.0, &old, data);
                }
            } else if let (Ok(v), Some((lo, hi))) = (<[u8; 8]>::try_from(data), self.xol) {
                if (lo..hi).contains(&u64::from_le_bytes(v)) {
                    let mut old = [0u8; 8];
                    if self.mem.read(addr.0, &mut old).is_ok() {
                        crate::journal::record_return(self.mem.pid(), addr.0, &old, data);
                    }
                }
            }
        }
        self.mem
            .write(addr.0, data)
            .map_err(|e| mem_error(addr, &e))
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        if crate::journal::active() {
            let mut old = vec![0u8; data.len()];
            if self.mem.read(addr.0, &mut old).is_ok() {
                crate::journal::record_code(self.mem.pid(), addr.0, &old, data);
            }
        }
        self.mem
            .write(addr.0, data)
            .map_err(|e| mem_error(addr, &e))
    }
}

/// The core's platform over ptrace; see the module docs.
#[derive(Debug, Default)]
pub struct LinuxPlatform {
    state: RefCell<State>,
}

/// Bytes of one out-of-line slot.
pub const SLOT_SIZE: usize = <X86_64 as Arch>::SLOT_SIZE;

fn core_mapping(space: SpaceId, line: &MapLine, file: FileId) -> Mapping {
    Mapping {
        space,
        range: Range::new(Addr(line.range.start), Addr(line.range.end)),
        file,
        file_offset: line.offset,
        exec: line.perms.exec,
        write: line.perms.write,
    }
}

impl LinuxPlatform {
    /// A platform with no spaces, tasks or files.
    pub fn new() -> LinuxPlatform {
        LinuxPlatform::default()
    }

    /// The [`FileId`] of the file at `path`, opened on first sight.
    pub fn file_id(&self, path: &Path) -> std::io::Result<FileId> {
        self.state.borrow_mut().files.intern_path(path)
    }

    /// The path of a known file.
    pub fn file_path(&self, file: FileId) -> Option<PathBuf> {
        self.state.borrow().files.get(file).map(|f| f.path.clone())
    }

    /// Starts tracking space `space` of process `pid` (opens its memory); its maps are read
    /// by [`refresh_maps`](Self::refresh_maps).
    pub fn add_space(&self, space: SpaceId, pid: Pid) -> Result<(), crate::mem::MemError> {
        let mem = Rc::new(ProcMem::open(pid)?);
        self.state.borrow_mut().spaces.insert(
            space,
            SpaceState {
                pid,
                mem,
                lines: Vec::new(),
                files: Vec::new(),
                xol: None,
                xol_refused: None,
            },
        );
        Ok(())
    }

    /// `child` was forked from `parent`: a copy of its mappings and slot area, at the same
    /// addresses, in process `pid`.
    pub fn fork_space(
        &self,
        parent: SpaceId,
        child: SpaceId,
        pid: Pid,
    ) -> Result<(), crate::mem::MemError> {
        let mem = Rc::new(ProcMem::open(pid)?);
        let mut st = self.state.borrow_mut();
        let (lines, files, xol, xol_refused) = match st.spaces.get(&parent) {
            Some(p) => (
                p.lines.clone(),
                p.files.clone(),
                p.xol,
                p.xol_refused.clone(),
            ),
            None => (Vec::new(), Vec::new(), None, None),
        };
        let files = files
            .into_iter()
            .map(|m| Mapping { space: child, ..m })
            .collect();
        st.spaces.insert(
            child,
            SpaceState {
                pid,
                mem,
                lines,
                files,
                xol,
                xol_refused,
            },
        );
        Ok(())
    }

    /// Forgets a space.
    pub fn remove_space(&self, space: SpaceId) {
        self.state.borrow_mut().spaces.remove(&space);
    }

    /// Whether the platform tracks `space`.
    pub fn has_space(&self, space: SpaceId) -> bool {
        self.state.borrow().spaces.contains_key(&space)
    }

    /// The process of a space.
    pub fn space_pid(&self, space: SpaceId) -> Option<Pid> {
        self.state.borrow().spaces.get(&space).map(|s| s.pid)
    }

    /// The spaces tracked.
    pub fn spaces(&self) -> Vec<SpaceId> {
        self.state.borrow().spaces.keys().copied().collect()
    }

    /// Reads the maps of `space` again; returns what changed in its file mappings.
    pub fn refresh_maps(&self, space: SpaceId) -> Result<MapsDiff, maps::MapsError> {
        let pid = match self.space_pid(space) {
            Some(p) => p,
            None => return Ok(MapsDiff::default()),
        };
        let lines = maps::read_maps(pid)?;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut files = Vec::new();
        for l in lines.iter().filter(|l| l.is_file()) {
            if let Some(id) = st.files.intern_map(l) {
                files.push(core_mapping(space, l, id));
            }
        }
        let Some(sp) = st.spaces.get_mut(&space) else {
            return Ok(MapsDiff::default());
        };
        let diff = diff_mappings(&sp.files, &files);
        sp.lines = lines;
        sp.files = files;
        Ok(diff)
    }

    /// The file mappings of `space` as last read.
    pub fn mappings(&self, space: SpaceId) -> Vec<Mapping> {
        self.state
            .borrow()
            .spaces
            .get(&space)
            .map(|s| s.files.clone())
            .unwrap_or_default()
    }

    /// Calls `f` with the maps lines of `space` as last read (sorted by address), without
    /// copying them.
    pub fn with_map_lines<R>(&self, space: SpaceId, f: impl FnOnce(&[MapLine]) -> R) -> R {
        let st = self.state.borrow();
        f(st.spaces.get(&space).map_or(&[][..], |s| &s.lines[..]))
    }

    /// The maps lines of `space` as last read.
    pub fn map_lines(&self, space: SpaceId) -> Vec<MapLine> {
        self.state
            .borrow()
            .spaces
            .get(&space)
            .map(|s| s.lines.clone())
            .unwrap_or_default()
    }

    /// The slot area of `space`, if mapped.
    pub fn xol_base(&self, space: SpaceId) -> Option<u64> {
        self.state.borrow().spaces.get(&space).and_then(|s| s.xol)
    }

    /// Why the last slot area could not be mapped, if one could not.
    pub fn xol_error(&self) -> Option<String> {
        self.state.borrow().xol_error.clone()
    }

    /// Tracks task `task` in `space`.
    pub fn add_task(&self, task: TaskId, space: SpaceId, stopped: bool) {
        self.state
            .borrow_mut()
            .tasks
            .insert(task, TaskInfo { space, stopped });
    }

    /// Moves task `task` to `space` (a vfork child after its exec).
    pub fn move_task(&self, task: TaskId, space: SpaceId) {
        if let Some(t) = self.state.borrow_mut().tasks.get_mut(&task) {
            t.space = space;
        }
    }

    /// Forgets task `task`.
    pub fn remove_task(&self, task: TaskId) {
        let mut st = self.state.borrow_mut();
        st.tasks.remove(&task);
        if st.current == Some(task) {
            st.current = None;
        }
    }

    /// Whether task `task` sits in a ptrace stop of ours (usable for injection).
    pub fn set_stopped(&self, task: TaskId, stopped: bool) {
        if let Some(t) = self.state.borrow_mut().tasks.get_mut(&task) {
            t.stopped = stopped;
        }
    }

    /// The task the core may use for injected system calls during the next call into it.
    pub fn set_current(&self, task: Option<TaskId>) {
        self.state.borrow_mut().current = task;
    }

    /// The space of a task.
    pub fn task_space(&self, task: TaskId) -> Option<SpaceId> {
        self.state.borrow().tasks.get(&task).map(|t| t.space)
    }

    /// The tasks of a space.
    pub fn tasks_of(&self, space: SpaceId) -> Vec<TaskId> {
        let mut v: Vec<TaskId> = self
            .state
            .borrow()
            .tasks
            .iter()
            .filter(|(_, t)| t.space == space)
            .map(|(&id, _)| id)
            .collect();
        v.sort();
        v
    }

    /// A thread of `space` stopped by us: the current one if it is of that space.
    fn stopped_task(st: &State, space: SpaceId) -> Option<TaskId> {
        if let Some(c) = st.current {
            if st.tasks.get(&c).is_some_and(|t| t.space == space) {
                return Some(c);
            }
        }
        let mut v: Vec<TaskId> = st
            .tasks
            .iter()
            .filter(|(_, t)| t.space == space && t.stopped)
            .map(|(&id, _)| id)
            .collect();
        v.sort();
        v.first().copied()
    }

    fn map_xol(&self, space: SpaceId, near: Addr, count: usize) -> Result<u64, String> {
        {
            let mut st = self.state.borrow_mut();
            let sp = st.spaces.get_mut(&space).ok_or("the space is not traced")?;
            if let Some(why) = &sp.xol_refused {
                return Err(why.clone());
            }
            if let Some(mode) = crate::sys::seccomp_mode(sp.pid).filter(|&m| m != 0) {
                // Under a filter (or strict mode) an injected `mmap` may be answered by killing
                // the process, and the filter cannot be read without CAP_SYS_ADMIN: never
                // inject one. Probes that need no slot (emulated) still work.
                let how = if mode == 1 { "strict mode" } else { "a filter" };
                let why = format!(
                    "it runs under seccomp ({how}), which may kill it for the `mmap` probe \
                     would inject to map the area; only probes on instructions probe \
                     emulates (no slot) can be placed there"
                );
                sp.xol_refused = Some(why.clone());
                return Err(why);
            }
        }
        let (tid, pid, mem, lines, module) = {
            let st = self.state.borrow();
            let sp = st.spaces.get(&space).ok_or("the space is not traced")?;
            let tid = Self::stopped_task(&st, space).ok_or("no thread of it is stopped")?;
            // The module: every mapping of the file holding `near`.
            let file = sp
                .files
                .iter()
                .find(|m| m.range.contains(near))
                .map(|m| m.file);
            let (lo, hi) = sp
                .files
                .iter()
                .filter(|m| Some(m.file) == file)
                .fold((near.0, near.0 + 1), |(lo, hi), m| {
                    (lo.min(m.range.start.0), hi.max(m.range.end.0))
                });
            (tid, sp.pid, sp.mem.clone(), sp.lines.clone(), lo..hi)
        };
        let inj = Injector::new(&mem, &lines).map_err(|e| e.to_string())?;
        let len = (count * SLOT_SIZE) as u64;
        let _ = pid;
        inj.map_near(
            Pid(tid.0 as i32),
            module,
            len,
            libc::PROT_READ | libc::PROT_EXEC,
        )
        .map_err(|e| match e {
            crate::remote::RemoteError::Syscall { errno, .. }
                if errno.0 == libc::EACCES || errno.0 == libc::EPERM =>
            {
                format!(
                    "{e}: the kernel refuses this process executable anonymous memory \
                     (an SELinux `execmem` denial, or a similar policy); only probes on \
                     instructions probe emulates (no slot) can be placed there"
                )
            }
            e => e.to_string(),
        })
    }
}

/// The changes from `old` to `new` file mappings of one space. A range stays unreported
/// while it maps the same file at the same offset (an `mprotect` that split a mapping must
/// not make the core forget breakpoints that are still in memory).
pub fn diff_mappings(old: &[Mapping], new: &[Mapping]) -> MapsDiff {
    let same_file_at = |m: &Mapping, a: u64| -> bool {
        new.iter().any(|n| {
            n.file == m.file
                && n.range.contains(Addr(a))
                && n.exec == m.exec
                && n.range.start.0.wrapping_sub(n.file_offset)
                    == m.range.start.0.wrapping_sub(m.file_offset)
        })
    };
    let mut removed = Vec::new();
    for m in old {
        if new.contains(m) {
            continue;
        }
        // Walk the old range page by page, collecting the sub-ranges no longer the same.
        let mut a = m.range.start.0;
        let mut start: Option<u64> = None;
        while a < m.range.end.0 {
            let keep = same_file_at(m, a);
            match (keep, start) {
                (false, None) => start = Some(a),
                (true, Some(s)) => {
                    removed.push(Range::new(Addr(s), Addr(a)));
                    start = None;
                }
                _ => {}
            }
            a += 4096;
        }
        if let Some(s) = start {
            removed.push(Range::new(Addr(s), m.range.end));
        }
    }
    let added = new.iter().filter(|n| !old.contains(n)).copied().collect();
    MapsDiff { removed, added }
}

impl Platform for LinuxPlatform {
    type Arch = X86_64;
    type Space<'a> = LinuxSpace;

    fn space(&self, id: SpaceId) -> Option<LinuxSpace> {
        let st = self.state.borrow();
        st.spaces.get(&id).map(|s| LinuxSpace {
            id,
            mem: s.mem.clone(),
            xol: s
                .xol
                .map(|b| (b, b + (super::session::XOL * SLOT_SIZE) as u64)),
        })
    }

    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>) {
        let all: Vec<Mapping> = {
            let st = self.state.borrow();
            let mut v: Vec<Mapping> = st
                .spaces
                .values()
                .flat_map(|s| s.files.iter().filter(|m| m.file == file).copied())
                .collect();
            v.sort_by_key(|m| (m.space, m.range.start));
            v
        };
        for m in all {
            if f(m).is_break() {
                break;
            }
        }
    }

    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>) {
        for t in self.tasks_of(space) {
            if f(t).is_break() {
                break;
            }
        }
    }

    fn file_size(&self, file: FileId) -> Option<u64> {
        self.state.borrow().files.get(file).map(|f| f.size)
    }

    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        let st = self.state.borrow();
        let f = st
            .files
            .get(file)
            .ok_or(MemError::new(Addr(offset), MemErrorKind::Gone))?;
        match f.file.read_at(buf, offset) {
            Ok(0) if !buf.is_empty() => Err(MemError::new(Addr(offset), MemErrorKind::Unmapped)),
            Ok(n) => Ok(n),
            Err(_) => Err(MemError::new(Addr(offset), MemErrorKind::Io)),
        }
    }

    /// Every memory access of the core's emulator is a `/proc/PID/mem` system call here,
    /// while a boosted slot costs one register write: boost stack instructions.
    fn prefer_boost(&self) -> bool {
        true
    }

    fn xol_area(&self, space: SpaceId, near: Addr, count: usize) -> Option<Addr> {
        if let Some(x) = self.xol_base(space) {
            return Some(Addr(x));
        }
        match self.map_xol(space, near, count) {
            Ok(base) => {
                let mut st = self.state.borrow_mut();
                if let Some(sp) = st.spaces.get_mut(&space) {
                    sp.xol = Some(base);
                }
                Some(Addr(base))
            }
            Err(e) => {
                self.state.borrow_mut().xol_error = Some(format!(
                    "cannot map the out-of-line slot area in process {space}: {e}"
                ));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64, off: u64, file: u64, exec: bool) -> Mapping {
        Mapping {
            space: SpaceId(1),
            range: Range::new(Addr(start), Addr(end)),
            file: FileId(file),
            file_offset: off,
            exec,
            write: false,
        }
    }

    #[test]
    fn diff_reports_new_and_gone_mappings() {
        let old = [m(0x1000, 0x3000, 0, 1, true)];
        let new = [m(0x1000, 0x3000, 0, 1, true), m(0x8000, 0x9000, 0, 2, true)];
        let d = diff_mappings(&old, &new);
        assert!(d.removed.is_empty());
        assert_eq!(d.added, vec![new[1]]);
        let d = diff_mappings(&new, &old);
        assert_eq!(d.removed, vec![Range::new(Addr(0x8000), Addr(0x9000))]);
        assert!(d.added.is_empty());
    }

    #[test]
    fn a_split_mapping_keeps_its_breakpoints() {
        // mprotect split the text in two: same file, same offsets. Nothing was removed.
        let old = [m(0x1000, 0x5000, 0, 1, true)];
        let new = [
            m(0x1000, 0x2000, 0, 1, true),
            m(0x2000, 0x5000, 0x1000, 1, true),
        ];
        let d = diff_mappings(&old, &new);
        assert!(d.removed.is_empty(), "{d:?}");
        assert_eq!(d.added.len(), 2);
        // Part of it replaced by another file: only that part is reported.
        let new = [m(0x1000, 0x2000, 0, 1, true), m(0x2000, 0x5000, 0, 2, true)];
        let d = diff_mappings(&old, &new);
        assert_eq!(d.removed, vec![Range::new(Addr(0x2000), Addr(0x5000))]);
    }
}
