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
    /// The slot area, once mapped (shared with the [`LinuxSpace`]s handed out, which record
    /// the core's writes into it).
    xol: XolCell,
    /// Its `/proc/PID/statm`, read at every hit: a cheap sign that the mappings changed.
    statm: Option<File>,
    /// What [`vm_signature`] read before the maps were last read.
    vm_sig: Option<u64>,
    /// Why no slot area can be mapped in it (seccomp), once found: not asked again.
    xol_refused: Option<String>,
}

/// Pages mapped, less private writable ones (`size - data` of `statm`): an `mmap` or
/// `munmap` of a file, an executable or a `PROT_NONE` range changes it; `malloc`'s anonymous
/// read-write mappings, the common churn, do not.
fn vm_signature(statm: &File) -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = statm.read_at(&mut buf, 0).ok()?;
    statm_signature(&buf[..n])
}

/// `size - data` of the text of a `statm` (`size resident shared text lib data dt`), parsed
/// in place (this runs at every hit): `None` unless it has the six fields as numbers.
fn statm_signature(text: &[u8]) -> Option<u64> {
    let mut fields = text
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.iter().try_fold(0u64, |n, &d| {
                d.is_ascii_digit()
                    .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                    .flatten()
            })
        });
    let size = fields.next()??;
    let data = fields.nth(4)??;
    Some(size.wrapping_sub(data))
}

/// A space's slot area, if mapped.
type XolCell = Rc<RefCell<Option<XolMap>>>;

/// A slot area we mapped, and a copy of every byte the core wrote into it: a slot is still
/// ours while its bytes are (a program that maps over the area with `MAP_FIXED` replaces
/// them, and no maps notification tells us).
#[derive(Debug, Clone)]
struct XolMap {
    base: u64,
    len: u64,
    shadow: Rc<RefCell<Vec<u8>>>,
}

impl XolMap {
    fn new(base: u64, len: u64) -> XolMap {
        XolMap {
            base,
            len,
            shadow: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// The same area in a forked child: its own copy of the bytes.
    fn fork(&self) -> XolMap {
        XolMap {
            shadow: Rc::new(RefCell::new(self.shadow.borrow().clone())),
            ..*self
        }
    }

    /// Records a write of the core, if it falls in the area.
    fn record(&self, addr: u64, data: &[u8]) {
        let Some(off) = addr.checked_sub(self.base) else {
            return;
        };
        let mut shadow = self.shadow.borrow_mut();
        let off = off as usize;
        // Grown a whole slot at a time as slots are written (from the area's start up), not
        // the whole area: a process's copy costs what it uses. Unwritten bytes are zero, as
        // in the freshly mapped area.
        let end = off
            .saturating_add(data.len())
            .div_ceil(SLOT_SIZE)
            .saturating_mul(SLOT_SIZE)
            .min(self.len as usize);
        if end > shadow.len() {
            shadow.resize(end, 0);
        }
        if let Some(dst) = off
            .checked_add(data.len())
            .and_then(|end| shadow.get_mut(off..end))
        {
            dst.copy_from_slice(data);
        }
    }
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
    /// The slot area, once mapped: the core's writes into it are recorded, and an
    /// eight-byte write of an address inside it is a return address taken over (pointed at
    /// the trampoline).
    xol: XolCell,
    /// The last eight bytes read, with their address: the return address the core read just
    /// before it takes it over, so that journalling the original costs no second read.
    /// Cleared by every write.
    last_word: core::cell::Cell<Option<(u64, [u8; 8])>>,
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
        let got = self.mem.read_partial(addr.0, buf);
        if let (Ok(8), Ok(word)) = (&got, <[u8; 8]>::try_from(&*buf)) {
            self.last_word.set(Some((addr.0, word)));
        }
        match got {
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
            } else if let Ok(v) = <[u8; 8]>::try_from(data) {
                let ours = self.xol.borrow().as_ref().is_some_and(|x| {
                    (x.base..x.base.saturating_add(x.len)).contains(&u64::from_le_bytes(v))
                });
                if ours {
                    let old = match self.last_word.get() {
                        Some((a, w)) if a == addr.0 => Some(w),
                        _ => {
                            let mut w = [0u8; 8];
                            self.mem.read(addr.0, &mut w).is_ok().then_some(w)
                        }
                    };
                    if let Some(old) = old {
                        crate::journal::record_return(self.mem.pid(), addr.0, &old, data);
                    }
                }
            }
        }
        self.last_word.set(None);
        self.mem
            .write(addr.0, data)
            .map_err(|e| mem_error(addr, &e))
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.last_word.set(None);
        if crate::journal::active() {
            let mut old = vec![0u8; data.len()];
            if self.mem.read(addr.0, &mut old).is_ok() {
                crate::journal::record_code(self.mem.pid(), addr.0, &old, data);
            }
        }
        self.mem
            .write(addr.0, data)
            .map_err(|e| mem_error(addr, &e))?;
        if let Some(x) = &*self.xol.borrow() {
            x.record(addr.0, data);
        }
        Ok(())
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
                xol: XolCell::default(),
                statm: File::open(format!("/proc/{pid}/statm")).ok(),
                vm_sig: None,
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
                Rc::new(RefCell::new(p.xol.borrow().as_ref().map(XolMap::fork))),
                p.xol_refused.clone(),
            ),
            None => (Vec::new(), Vec::new(), XolCell::default(), None),
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
                statm: File::open(format!("/proc/{pid}/statm")).ok(),
                vm_sig: None,
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
        // The signature first: a change after it is seen at the next look.
        let sig = self.state.borrow().spaces.get(&space).and_then(|s| {
            let f = s.statm.as_ref()?;
            vm_signature(f)
        });
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
        sp.vm_sig = sig;
        sp.lines = lines;
        sp.files = files;
        Ok(diff)
    }

    /// Whether the mappings of `space` may have changed since they were last read (one read
    /// of its `statm`; see [`vm_signature`]). An `mprotect` alone is not seen.
    pub fn maps_may_have_changed(&self, space: SpaceId) -> bool {
        let st = self.state.borrow();
        let Some(sp) = st.spaces.get(&space) else {
            return false;
        };
        match sp.statm.as_ref().and_then(vm_signature) {
            Some(sig) => sp.vm_sig != Some(sig),
            None => false,
        }
    }

    /// Whether the maps of `space`, as last read, still show its slot area as ours: one
    /// private anonymous `r-x` mapping covering it.
    pub fn xol_in_maps(&self, space: SpaceId) -> bool {
        let st = self.state.borrow();
        let Some(sp) = st.spaces.get(&space) else {
            return true;
        };
        let xol = sp.xol.borrow();
        let Some(x) = xol.as_ref() else {
            return true;
        };
        sp.lines.iter().any(|l| {
            l.range.start <= x.base
                && x.base + x.len <= l.range.end
                && l.inode == 0
                && l.path.is_empty()
                && l.perms.read
                && l.perms.exec
                && !l.perms.write
                && !l.perms.shared
        })
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
        self.xol_range(space).map(|r| r.start)
    }

    /// The address range of the slot area of `space`, if mapped.
    pub fn xol_range(&self, space: SpaceId) -> Option<core::ops::Range<u64>> {
        let st = self.state.borrow();
        let x = st.spaces.get(&space)?.xol.borrow().clone()?;
        Some(x.base..x.base + x.len)
    }

    /// Whether the slot at `slot` of `space` still holds what the core wrote there: false
    /// once the program mapped something else over the area (or unmapped it).
    pub fn slot_intact(&self, space: SpaceId, slot: u64) -> bool {
        let (mem, want) = {
            let st = self.state.borrow();
            let Some(sp) = st.spaces.get(&space) else {
                return false;
            };
            let xol = sp.xol.borrow();
            let Some(x) = xol.as_ref() else {
                return false;
            };
            let Some(off) = slot.checked_sub(x.base).map(|o| o as usize) else {
                return false;
            };
            let shadow = x.shadow.borrow();
            let Some(want) = shadow.get(off..off + SLOT_SIZE) else {
                return false;
            };
            let mut w = [0u8; SLOT_SIZE];
            w.copy_from_slice(want);
            (sp.mem.clone(), w)
        };
        let mut have = [0u8; SLOT_SIZE];
        mem.read(slot, &mut have).is_ok() && have == want
    }

    /// Forgets the slot area of `space` (it is no longer ours, or was unmapped); returns its
    /// range. The next slot-needing install maps a new one.
    pub fn forget_xol(&self, space: SpaceId) -> Option<core::ops::Range<u64>> {
        let st = self.state.borrow();
        let x = st.spaces.get(&space)?.xol.borrow_mut().take()?;
        Some(x.base..x.base + x.len)
    }

    /// Unmaps the slot area of `space` through thread `tid` (held in a stop of ours) and
    /// forgets it.
    pub fn unmap_xol(&self, space: SpaceId, tid: Pid) -> Result<(), String> {
        let (mem, lines, range) = {
            let st = self.state.borrow();
            let sp = st.spaces.get(&space).ok_or("the space is not traced")?;
            let x = sp.xol.borrow().clone().ok_or("no slot area")?;
            (sp.mem.clone(), sp.lines.clone(), x.base..x.base + x.len)
        };
        let inj = Injector::new(&mem, &lines).map_err(|e| e.to_string())?;
        inj.munmap(tid, range.start, range.end - range.start)
            .map_err(|e| e.to_string())?;
        self.forget_xol(space);
        Ok(())
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

    fn map_xol(&self, space: SpaceId, near: Addr, count: usize) -> Result<XolMap, String> {
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
        let len = ((count * SLOT_SIZE) as u64).div_ceil(crate::remote::PAGE) * crate::remote::PAGE;
        let _ = pid;
        inj.map_near(
            Pid(tid.0 as i32),
            module,
            len,
            libc::PROT_READ | libc::PROT_EXEC,
        )
        .map(|base| XolMap::new(base, len))
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
/// while it maps the same file at the same offset, whatever its permissions: an `mprotect`
/// that split a mapping or dropped `PROT_EXEC` left our breakpoint bytes in memory, and the
/// core must not forget them (detach restores them; when exec comes back the mapping is
/// reported as added and the core finds its sites still there).
pub fn diff_mappings(old: &[Mapping], new: &[Mapping]) -> MapsDiff {
    let same_file_at = |m: &Mapping, a: u64| -> bool {
        new.iter().any(|n| {
            n.file == m.file
                && n.range.contains(Addr(a))
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
            xol: s.xol.clone(),
            last_word: core::cell::Cell::new(None),
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
            Ok(x) => {
                let base = x.base;
                let mut st = self.state.borrow_mut();
                if let Some(sp) = st.spaces.get_mut(&space) {
                    *sp.xol.borrow_mut() = Some(x);
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
    fn statm_signature_is_size_less_data() {
        assert_eq!(
            statm_signature(b"2648 1062 917 5 0 149 0\n"),
            Some(2648 - 149)
        );
        assert_eq!(statm_signature(b"  10  1 1 1 0 4 0"), Some(6));
        assert_eq!(statm_signature(b"2648 1062 917 5 0"), None);
        assert_eq!(statm_signature(b"2648 1062 917 5 0 1x9 0"), None);
        assert_eq!(statm_signature(b""), None);
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

    #[test]
    fn dropping_exec_is_not_an_unmap() {
        // mprotect(PROT_READ) over part of the text: the bytes (and our breakpoints) are
        // still there. Not removed; exec coming back is a new executable mapping.
        let old = [m(0x1000, 0x5000, 0, 1, true)];
        let ro = [
            m(0x1000, 0x2000, 0, 1, true),
            m(0x2000, 0x3000, 0x1000, 1, false),
            m(0x3000, 0x5000, 0x2000, 1, true),
        ];
        let d = diff_mappings(&old, &ro);
        assert!(d.removed.is_empty(), "{d:?}");
        let d = diff_mappings(&ro, &old);
        assert!(d.removed.is_empty(), "{d:?}");
        assert_eq!(d.added, vec![old[0]]);
    }
}
