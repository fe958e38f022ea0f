//! The [`Machine`]: files, address spaces and tasks behind one lock, and its
//! [`Platform`] implementation.
//!
//! Every method takes `&self` and holds the machine's lock only for its own duration; no
//! callback ever runs with the lock held, so a callback (the core) may call back into the
//! machine.

use core::ops::ControlFlow;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use probe_core::{
    Addr, AddressSpace, Arch, FileId, Mapping, MemError, MemErrorKind, Platform, Range, SpaceId,
    TaskId,
};

use crate::arch::{ToyArch, ToyRegs};
use crate::fault::{FaultOp, FaultPlan, FaultRule};
use crate::file::{page_round_up, File, PAGE_SIZE};
use crate::interp::{self, StepEvent};
use crate::isa::SP;
use crate::space::{Access, MapError, MapInfo, Prot, Space, SpaceStats, Vma, XolArea};
use crate::task::{Task, TaskStatus};

/// Where [`Machine::spawn`] and [`Machine::exec`] map a program's file (read-execute).
pub const TEXT_BASE: u64 = 0x1_0000;
/// Start of the read-write anonymous data area [`Machine::spawn`] maps.
pub const DATA_BASE: u64 = 0x40_0000;
/// Size of that data area.
pub const DATA_SIZE: u64 = 0x1000;
/// Top of the stack [`Machine::spawn`] maps; the initial `sp`.
pub const STACK_TOP: u64 = 0x80_0000;
/// Size of that stack.
pub const STACK_SIZE: u64 = 0x1000;

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<FileId, File>,
    spaces: BTreeMap<SpaceId, Space>,
    tasks: BTreeMap<TaskId, Task>,
    next_file: u64,
    next_space: u64,
    next_task: u64,
    faults: FaultPlan,
    xol_base: Option<u64>,
}

impl State {
    fn new_space_id(&mut self) -> SpaceId {
        self.next_space += 1;
        SpaceId(self.next_space)
    }

    fn new_task_id(&mut self) -> TaskId {
        self.next_task += 1;
        TaskId(self.next_task)
    }

    fn space_mut(&mut self, id: SpaceId) -> Result<&mut Space, MapError> {
        self.spaces.get_mut(&id).ok_or(MapError::NoSuchSpace(id))
    }

    fn map_file(
        &mut self,
        space: SpaceId,
        addr: u64,
        len: u64,
        file: FileId,
        offset: u64,
        prot: Prot,
    ) -> Result<Mapping, MapError> {
        let f = self.files.get(&file).ok_or(MapError::NoSuchFile(file))?;
        let vma = Vma::file(addr, len, prot, file, offset, f);
        self.space_mut(space)?.insert(vma)?;
        Ok(Mapping {
            space,
            range: Range::new(Addr(addr), Addr(addr + len)),
            file,
            file_offset: offset,
            exec: prot.exec,
            write: prot.write,
        })
    }

    /// Text, data and stack of a fresh program; returns the initial registers.
    fn map_program(
        &mut self,
        space: SpaceId,
        file: FileId,
        entry: u64,
    ) -> Result<ToyRegs, MapError> {
        let size = self
            .files
            .get(&file)
            .ok_or(MapError::NoSuchFile(file))?
            .size();
        let text = page_round_up(size.max(1));
        self.map_file(space, TEXT_BASE, text, file, 0, Prot::RX)?;
        let s = self.space_mut(space)?;
        s.insert(Vma::anon(DATA_BASE, DATA_SIZE, Prot::RW))?;
        s.insert(Vma::anon(STACK_TOP - STACK_SIZE, STACK_SIZE, Prot::RW))?;
        let mut regs = ToyRegs {
            pc: TEXT_BASE + entry,
            ..ToyRegs::default()
        };
        regs.set(SP, STACK_TOP);
        Ok(regs)
    }

    fn fault(&mut self, op: FaultOp, space: Option<SpaceId>, addr: Addr) -> Result<(), MemError> {
        match self.faults.check(op, space) {
            Some(kind) => Err(MemError::new(addr, kind)),
            None => Ok(()),
        }
    }
}

/// The simulated machine. Share it between threads with an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Machine {
    state: Mutex<State>,
}

impl Machine {
    /// An empty machine.
    pub fn new() -> Machine {
        Machine::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- files -----

    /// Add a file with contents `bytes`.
    pub fn add_file(&self, bytes: &[u8]) -> FileId {
        let mut st = self.lock();
        st.next_file += 1;
        let id = FileId(st.next_file);
        st.files.insert(id, File::new(bytes));
        id
    }

    /// A file's contents (as on disk: never changed by patches).
    pub fn file_bytes(&self, file: FileId) -> Option<Vec<u8>> {
        self.lock().files.get(&file).map(File::bytes)
    }

    // ----- address spaces -----

    /// A new, empty address space.
    pub fn new_space(&self) -> SpaceId {
        let mut st = self.lock();
        let id = st.new_space_id();
        st.spaces.insert(id, Space::new(id));
        id
    }

    /// Every address space.
    pub fn spaces(&self) -> Vec<SpaceId> {
        self.lock().spaces.keys().copied().collect()
    }

    /// Map `len` bytes of `file` from `offset` at `addr` (private, copy-on-write). Address,
    /// length and offset must be page aligned ([`PAGE_SIZE`]); past the end of the file the
    /// mapping reads zeros.
    pub fn mmap_file(
        &self,
        space: SpaceId,
        addr: Addr,
        len: u64,
        file: FileId,
        offset: u64,
        prot: Prot,
    ) -> Result<Mapping, MapError> {
        self.lock().map_file(space, addr.0, len, file, offset, prot)
    }

    /// Map `len` bytes of zeroed anonymous memory at `addr`.
    pub fn mmap_anon(
        &self,
        space: SpaceId,
        addr: Addr,
        len: u64,
        prot: Prot,
    ) -> Result<Range, MapError> {
        let mut st = self.lock();
        st.space_mut(space)?.insert(Vma::anon(addr.0, len, prot))?;
        Ok(Range::new(addr, Addr(addr.0 + len)))
    }

    /// Unmap `[addr, addr + len)` (page granular, splitting mappings that stick out). Returns
    /// the file-backed mappings that lost pages, as they were before.
    pub fn munmap(&self, space: SpaceId, addr: Addr, len: u64) -> Result<Vec<MapInfo>, MapError> {
        let mut st = self.lock();
        Ok(st.space_mut(space)?.unmap(addr.0, len))
    }

    /// The mappings of `space`, by address.
    pub fn mappings(&self, space: SpaceId) -> Vec<MapInfo> {
        self.lock()
            .spaces
            .get(&space)
            .map(|s| s.maps().map(Vma::info).collect())
            .unwrap_or_default()
    }

    /// A copy of `space` for a forked child: every mapping, every patched page, the slot
    /// area at the same address. No tasks (see [`fork`](Machine::fork)).
    pub fn fork_space(&self, space: SpaceId) -> Option<SpaceId> {
        let mut st = self.lock();
        let id = st.new_space_id();
        let child = st.spaces.get(&space)?.fork(id);
        st.spaces.insert(id, child);
        Some(id)
    }

    /// Destroy `space`: its tasks are [`TaskStatus::Killed`].
    pub fn destroy_space(&self, space: SpaceId) -> bool {
        let mut st = self.lock();
        for t in st.tasks.values_mut() {
            if t.space == space && t.status.is_running() {
                t.status = TaskStatus::Killed;
            }
        }
        st.spaces.remove(&space).is_some()
    }

    /// Access counters of `space` (the core's accesses through its [`SpaceHandle`]).
    pub fn stats(&self, space: SpaceId) -> Option<SpaceStats> {
        self.lock().spaces.get(&space).map(|s| s.stats)
    }

    /// Whether the page at `addr` still is the file's own page (never patched or written in
    /// this space). `None` outside a file-backed mapping.
    pub fn page_shared_with_file(&self, space: SpaceId, addr: Addr) -> Option<bool> {
        let st = self.lock();
        st.spaces.get(&space)?.shares_file_page(addr.0, &st.files)
    }

    /// Read `len` bytes (not counted, no fault injection).
    pub fn peek(&self, space: SpaceId, addr: Addr, len: usize) -> Result<Vec<u8>, MemError> {
        let st = self.lock();
        let s = st
            .spaces
            .get(&space)
            .ok_or(MemError::new(addr, MemErrorKind::Gone))?;
        let mut buf = vec![0u8; len];
        s.read_exact(addr.0, &mut buf, Access::Read)?;
        Ok(buf)
    }

    /// Read a little-endian word (not counted, no fault injection).
    pub fn peek_u64(&self, space: SpaceId, addr: Addr) -> Result<u64, MemError> {
        let b = self.peek(space, addr, 8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(&b);
        Ok(u64::from_le_bytes(w))
    }

    /// Write bytes ignoring protections, like a debugger (not counted, no fault injection;
    /// breaks copy-on-write).
    pub fn poke(&self, space: SpaceId, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        let mut st = self.lock();
        let s = st
            .spaces
            .get_mut(&space)
            .ok_or(MemError::new(addr, MemErrorKind::Gone))?;
        s.write(addr.0, data, Access::Patch)
    }

    /// Place future slot areas at `base` (when free) instead of near the code, e.g. far away
    /// to exercise the absolute jump back. `None` restores the default placement.
    pub fn set_xol_base(&self, base: Option<Addr>) {
        self.lock().xol_base = base.map(|a| a.0);
    }

    // ----- tasks -----

    /// Start a program: a new space with `file` mapped read-execute at [`TEXT_BASE`], a
    /// zeroed data area at [`DATA_BASE`], a stack below [`STACK_TOP`], and one task with
    /// `pc = TEXT_BASE + entry` and `sp = STACK_TOP`.
    pub fn spawn(&self, file: FileId, entry: u64) -> Result<(SpaceId, TaskId), MapError> {
        let mut st = self.lock();
        let space = st.new_space_id();
        st.spaces.insert(space, Space::new(space));
        let regs = match st.map_program(space, file, entry) {
            Ok(r) => r,
            Err(e) => {
                st.spaces.remove(&space);
                return Err(e);
            }
        };
        let task = st.new_task_id();
        st.tasks.insert(task, Task::new(task, space, regs));
        Ok((space, task))
    }

    /// A new task in `space` with registers `regs` (a thread).
    pub fn new_task(&self, space: SpaceId, regs: ToyRegs) -> Option<TaskId> {
        let mut st = self.lock();
        if !st.spaces.contains_key(&space) {
            return None;
        }
        let id = st.new_task_id();
        st.tasks.insert(id, Task::new(id, space, regs));
        Some(id)
    }

    /// Fork: a copy of `task`'s space ([`fork_space`](Machine::fork_space)) with one task,
    /// a copy of `task` (registers and single-step flag; empty output).
    pub fn fork(&self, task: TaskId) -> Option<(SpaceId, TaskId)> {
        let mut st = self.lock();
        let parent = st.tasks.get(&task)?.clone();
        let space = st.new_space_id();
        let child_space = st.spaces.get(&parent.space)?.fork(space);
        st.spaces.insert(space, child_space);
        let id = st.new_task_id();
        let mut child = Task::new(id, space, parent.regs);
        child.single_step = parent.single_step;
        st.tasks.insert(id, child);
        Some((space, id))
    }

    /// Exec: replace every mapping of `task`'s space (and its slot area) with a fresh
    /// program layout of `file` (as [`spawn`](Machine::spawn)); the other tasks of the space
    /// are [`TaskStatus::Killed`]; `task` restarts at `entry`. The space keeps its id.
    pub fn exec(&self, task: TaskId, file: FileId, entry: u64) -> Result<(), MapError> {
        let mut st = self.lock();
        let space = st
            .tasks
            .get(&task)
            .map(|t| t.space)
            .ok_or(MapError::NoSuchTask(task))?;
        if !st.files.contains_key(&file) {
            return Err(MapError::NoSuchFile(file));
        }
        st.space_mut(space)?.clear();
        let regs = st.map_program(space, file, entry)?;
        for t in st.tasks.values_mut() {
            if t.space == space && t.id != task && t.status.is_running() {
                t.status = TaskStatus::Killed;
            }
        }
        if let Some(t) = st.tasks.get_mut(&task) {
            t.regs = regs;
            t.single_step = false;
        }
        Ok(())
    }

    /// End `task` with `code`.
    pub fn exit(&self, task: TaskId, code: u64) -> bool {
        match self.lock().tasks.get_mut(&task) {
            Some(t) => {
                t.status = TaskStatus::Exited(code);
                true
            }
            None => false,
        }
    }

    /// Every task, dead or alive.
    pub fn tasks(&self) -> Vec<TaskId> {
        self.lock().tasks.keys().copied().collect()
    }

    /// Every running task.
    pub fn running_tasks(&self) -> Vec<TaskId> {
        self.lock()
            .tasks
            .values()
            .filter(|t| t.status.is_running())
            .map(|t| t.id)
            .collect()
    }

    /// The space `task` runs in.
    pub fn task_space(&self, task: TaskId) -> Option<SpaceId> {
        self.lock().tasks.get(&task).map(|t| t.space)
    }

    /// `task`'s registers.
    pub fn regs(&self, task: TaskId) -> Option<ToyRegs> {
        self.lock().tasks.get(&task).map(|t| t.regs)
    }

    /// Set `task`'s registers; false if there is no such task.
    pub fn set_regs(&self, task: TaskId, regs: ToyRegs) -> bool {
        match self.lock().tasks.get_mut(&task) {
            Some(t) => {
                t.regs = regs;
                true
            }
            None => false,
        }
    }

    /// Arm (or disarm) the one-shot single-step flag: the next step that completes normally
    /// reports [`StepEvent::SingleStepDone`].
    pub fn set_single_step(&self, task: TaskId, on: bool) -> bool {
        match self.lock().tasks.get_mut(&task) {
            Some(t) => {
                t.single_step = on;
                true
            }
            None => false,
        }
    }

    /// Whether the single-step flag is armed.
    pub fn single_step(&self, task: TaskId) -> bool {
        self.lock().tasks.get(&task).is_some_and(|t| t.single_step)
    }

    /// What `task` printed with `out`.
    pub fn output(&self, task: TaskId) -> Vec<u64> {
        self.lock()
            .tasks
            .get(&task)
            .map(|t| t.output.clone())
            .unwrap_or_default()
    }

    /// Whether `task` runs, and how it ended.
    pub fn status(&self, task: TaskId) -> Option<TaskStatus> {
        self.lock().tasks.get(&task).map(|t| t.status)
    }

    /// Execute one instruction of `task`.
    pub fn step(&self, task: TaskId) -> StepEvent {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tasks.get_mut(&task) else {
            return StepEvent::NotRunnable;
        };
        let space = st.spaces.get_mut(&t.space);
        interp::step(t, space)
    }

    // ----- fault injection -----

    /// Arm a fault rule for the platform's and the space handles' operations.
    pub fn inject_fault(&self, rule: FaultRule) {
        self.lock().faults.add(rule);
    }

    /// Disarm every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many faults were injected so far.
    pub fn injected_faults(&self) -> u64 {
        self.lock().faults.injected()
    }

    /// Slot area placement: first free page range after the mapping holding `near`, past
    /// one guard page.
    fn place_xol(st: &State, space: &Space, near: u64, len: u64) -> Option<u64> {
        if let Some(base) = st.xol_base {
            return space.is_free(base, len).then_some(base);
        }
        let mut at = space
            .find(near)
            .map_or(near, |v| v.start + v.len)
            .checked_add(PAGE_SIZE)?;
        at = page_round_up(at);
        for _ in 0..4096 {
            if space.is_free(at, len) {
                return Some(at);
            }
            let end = at.checked_add(len)?;
            let blocker = space
                .maps()
                .filter(|v| v.start < end && v.start + v.len > at)
                .map(|v| v.start + v.len)
                .max()?;
            at = page_round_up(blocker.checked_add(PAGE_SIZE)?);
        }
        None
    }
}

/// One address space of a [`Machine`], as the core sees it.
#[derive(Clone, Copy, Debug)]
pub struct SpaceHandle<'a> {
    machine: &'a Machine,
    id: SpaceId,
}

impl<'a> SpaceHandle<'a> {
    /// The machine.
    pub fn machine(&self) -> &'a Machine {
        self.machine
    }

    fn with<R>(
        &self,
        addr: Addr,
        op: FaultOp,
        f: impl FnOnce(&mut Space) -> Result<R, MemError>,
    ) -> Result<R, MemError> {
        let mut st = self.machine.lock();
        if !st.spaces.contains_key(&self.id) {
            return Err(MemError::new(addr, MemErrorKind::Gone));
        }
        st.fault(op, Some(self.id), addr)?;
        let space = st
            .spaces
            .get_mut(&self.id)
            .ok_or(MemError::new(addr, MemErrorKind::Gone))?;
        f(space)
    }
}

impl AddressSpace for SpaceHandle<'_> {
    fn id(&self) -> SpaceId {
        self.id
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        self.with(addr, FaultOp::Read, |s| {
            let n = s.read(addr.0, buf, Access::Read)?;
            s.stats.reads += 1;
            Ok(n)
        })
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.with(addr, FaultOp::Write, |s| {
            s.write(addr.0, data, Access::Write)?;
            s.stats.writes += 1;
            Ok(())
        })
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.with(addr, FaultOp::Patch, |s| {
            s.write(addr.0, data, Access::Patch)?;
            if s.in_xol(addr.0) {
                s.stats.xol_patches += 1;
            } else {
                s.stats.text_patches += 1;
            }
            Ok(())
        })
    }
}

impl Platform for Machine {
    type Arch = ToyArch;
    type Space<'a> = SpaceHandle<'a>;

    fn space(&self, id: SpaceId) -> Option<SpaceHandle<'_>> {
        self.lock()
            .spaces
            .contains_key(&id)
            .then_some(SpaceHandle { machine: self, id })
    }

    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>) {
        let maps: Vec<Mapping> = self
            .lock()
            .spaces
            .values()
            .flat_map(|s| s.file_mappings())
            .filter(|m| m.file == file)
            .collect();
        for m in maps {
            if f(m).is_break() {
                break;
            }
        }
    }

    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>) {
        let tasks: Vec<TaskId> = self
            .lock()
            .tasks
            .values()
            .filter(|t| t.space == space && t.status.is_running())
            .map(|t| t.id)
            .collect();
        for t in tasks {
            if f(t).is_break() {
                break;
            }
        }
    }

    fn file_size(&self, file: FileId) -> Option<u64> {
        self.lock().files.get(&file).map(File::size)
    }

    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        let mut st = self.lock();
        st.fault(FaultOp::ReadFile, None, Addr(offset))?;
        st.files
            .get(&file)
            .ok_or(MemError::new(Addr(offset), MemErrorKind::Gone))?
            .read(offset, buf)
    }

    fn xol_area(&self, space: SpaceId, near: Addr, count: usize) -> Option<Addr> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.faults.check(FaultOp::XolArea, Some(space)).is_some() {
            return None;
        }
        let s = st.spaces.get(&space)?;
        if let Some(x) = s.xol {
            return (count <= x.count).then_some(Addr(x.base));
        }
        if count == 0 {
            return None;
        }
        let len = page_round_up(count.checked_mul(ToyArch::SLOT_SIZE)? as u64);
        let base = Machine::place_xol(st, s, near.0, len)?;
        let s = st.spaces.get_mut(&space)?;
        let mut vma = Vma::anon(base, len, Prot::RX);
        vma.xol = true;
        s.insert(vma).ok()?;
        s.xol = Some(XolArea { base, count });
        Some(Addr(base))
    }
}
