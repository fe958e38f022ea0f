//! A minimal platform for the loom models: one file, one address space with a flat memory,
//! one slot area. Small on purpose: loom explores every interleaving of the core's atomics,
//! and the fewer objects there are, the more of them it can afford.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use platform_mock::asm::Asm;
use platform_mock::isa::Reg;
use platform_mock::{ToyArch, ToyRegs};
use probe_core::{
    Addr, AddressSpace, Consumer, FileId, HandlerAction, HitContext, Mapping, MemError,
    MemErrorKind, Platform, ProbeCore, Range, SpaceId, TaskId,
};

pub const FILE: FileId = FileId(7);
pub const SPACE: SpaceId = SpaceId(1);
pub const TEXT: u64 = 0x1000;
pub const XOL_BASE: u64 = 0x1800;
pub const MEM: usize = 0x2000;
/// A writable mapping of the whole file (where its SDT semaphore lives).
pub const DATA: u64 = 0x1400;
/// File offset of the SDT semaphore.
pub const SEM_OFF: u64 = 0x40;
/// Stack tops of the two tasks.
pub const STACK1: u64 = 0x1e00;
pub const STACK2: u64 = 0x1d00;

/// Offsets in the file: a `nop` (emulated), two ALU instructions (boosted), a `ret`
/// (single-stepped).
pub const NOP_AT: u64 = 0;
pub const ADD_AT: u64 = 4;
pub const SUB_AT: u64 = 8;
pub const RET_AT: u64 = 12;

pub fn program() -> Vec<u8> {
    let r1 = Reg::new(1).unwrap();
    let r2 = Reg::new(2).unwrap();
    let mut a = Asm::new();
    a.nop()
        .add(r1, r2)
        .sub(r1, r2)
        .ret()
        .halt()
        .nops_to(SEM_OFF as usize);
    a.word(0);
    a.finish().unwrap().bytes
}

#[derive(Debug)]
pub struct LoomPlatform {
    pub file: Vec<u8>,
    /// Memory, behind a loom mutex: a task that sees patched text also sees what the writer
    /// published before patching it (the ordering a real text write gives).
    pub mem: loom::sync::Mutex<Vec<u8>>,
    pub tasks: Vec<TaskId>,
}

impl LoomPlatform {
    pub fn new() -> LoomPlatform {
        let file = program();
        let mut mem = vec![0u8; MEM];
        mem[TEXT as usize..TEXT as usize + file.len()].copy_from_slice(&file);
        mem[DATA as usize..DATA as usize + file.len()].copy_from_slice(&file);
        LoomPlatform {
            file,
            mem: loom::sync::Mutex::new(mem),
            tasks: vec![TaskId(1), TaskId(2)],
        }
    }

    /// The SDT semaphore's value.
    pub fn semaphore(&self) -> u16 {
        let b = self.peek(DATA + SEM_OFF, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// Write the return address `ret` at `sp` (what a `call` did before the entry hit).
    pub fn push_return(&self, sp: u64, ret: u64) {
        self.mem.lock().unwrap()[sp as usize..sp as usize + 8].copy_from_slice(&ret.to_le_bytes());
    }

    pub fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
        let m = self.mem.lock().unwrap();
        m[addr as usize..addr as usize + len].to_vec()
    }

    /// The text as it is now equals the file.
    pub fn text_pristine(&self) -> bool {
        self.peek(TEXT, SEM_OFF as usize) == self.file[..SEM_OFF as usize]
    }
}

#[derive(Debug)]
pub struct Mem<'a>(&'a LoomPlatform);

impl Mem<'_> {
    fn check(&self, addr: Addr, len: usize) -> Result<usize, MemError> {
        let a = addr.0 as usize;
        if a >= MEM || a + len > MEM {
            return Err(MemError::new(addr, MemErrorKind::Unmapped));
        }
        Ok(a)
    }
}

impl AddressSpace for Mem<'_> {
    fn id(&self) -> SpaceId {
        SPACE
    }
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        let a = self.check(addr, buf.len())?;
        let m = self.0.mem.lock().unwrap();
        buf.copy_from_slice(&m[a..a + buf.len()]);
        Ok(buf.len())
    }
    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        let a = self.check(addr, data.len())?;
        self.0.mem.lock().unwrap()[a..a + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.write(addr, data)
    }
}

impl Platform for LoomPlatform {
    type Arch = ToyArch;
    type Space<'a> = Mem<'a>;

    fn space(&self, id: SpaceId) -> Option<Mem<'_>> {
        (id == SPACE).then_some(Mem(self))
    }
    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>) {
        if file == FILE {
            let len = self.file.len() as u64;
            let text = Mapping {
                space: SPACE,
                range: Range::new(Addr(TEXT), Addr(TEXT + len)),
                file: FILE,
                file_offset: 0,
                exec: true,
                write: false,
            };
            if f(text).is_break() {
                return;
            }
            let _ = f(Mapping {
                range: Range::new(Addr(DATA), Addr(DATA + len)),
                exec: false,
                write: true,
                ..text
            });
        }
    }
    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>) {
        if space == SPACE {
            for &t in &self.tasks {
                if f(t).is_break() {
                    return;
                }
            }
        }
    }
    fn file_size(&self, file: FileId) -> Option<u64> {
        (file == FILE).then_some(self.file.len() as u64)
    }
    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        if file != FILE || offset as usize >= self.file.len() {
            return Err(MemError::new(Addr(offset), MemErrorKind::Unmapped));
        }
        let n = buf.len().min(self.file.len() - offset as usize);
        buf[..n].copy_from_slice(&self.file[offset as usize..offset as usize + n]);
        Ok(n)
    }
    fn xol_area(&self, _space: SpaceId, _near: Addr, _count: usize) -> Option<Addr> {
        Some(Addr(XOL_BASE))
    }
}

/// A consumer that counts its hits and checks it never runs after its unregistration
/// returned.
#[derive(Debug, Clone)]
pub struct Counter {
    pub hits: Arc<AtomicUsize>,
    pub returns: Arc<AtomicUsize>,
    pub unregistered: Arc<AtomicBool>,
}

impl Counter {
    pub fn new() -> Counter {
        Counter {
            hits: Arc::new(AtomicUsize::new(0)),
            returns: Arc::new(AtomicUsize::new(0)),
            unregistered: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Consumer<LoomPlatform> for Counter {
    fn handler(&self, _ctx: &mut HitContext<'_, LoomPlatform>) -> HandlerAction {
        assert!(
            !self.unregistered.load(Ordering::SeqCst),
            "handler ran after unregister returned"
        );
        self.hits.fetch_add(1, Ordering::SeqCst);
        HandlerAction::Keep
    }

    fn entry_handler(
        &self,
        _ctx: &mut HitContext<'_, LoomPlatform>,
        _data: &mut [u8],
    ) -> probe_core::EntryAction {
        assert!(
            !self.unregistered.load(Ordering::SeqCst),
            "entry handler ran after unregister returned"
        );
        self.hits.fetch_add(1, Ordering::SeqCst);
        probe_core::EntryAction::Track
    }

    fn return_handler(
        &self,
        _ctx: &mut probe_core::ReturnContext<'_, LoomPlatform>,
        _data: &mut [u8],
    ) {
        assert!(
            !self.unregistered.load(Ordering::SeqCst),
            "return handler ran after unregister returned"
        );
        self.returns.fetch_add(1, Ordering::SeqCst);
    }
}

/// Run one call of the function at `TEXT + NOP_AT` on a task whose stack top is `sp`: the
/// entry trap, then (when the core hijacked the return address) the return through the
/// trampoline. Returns the address the task ends up at.
pub fn call_once<const P: usize, const X: usize>(
    core: &Core<P, X>,
    p: &LoomPlatform,
    cpu: u32,
    task: u64,
    sp: u64,
    ts: &mut probe_core::TaskState,
) -> u64 {
    use probe_core::{CpuId, Hit};
    let ret = 0x1234;
    let mut trap = probe_core::TrapState::<ToyArch>::new();
    p.push_return(sp, ret);
    let mut regs = ToyRegs {
        pc: TEXT + NOP_AT,
        ..ToyRegs::default()
    };
    regs.r[15] = sp;
    let hit = core.on_breakpoint(p, CpuId(cpu), SPACE, TaskId(task), &mut trap, ts, &mut regs);
    assert!(matches!(hit, Hit::Emulated | Hit::Restart), "{hit:?}");
    // The function body ran; now it returns: pop whatever is in the return slot.
    let slot = u64::from_le_bytes(p.peek(sp, 8).try_into().unwrap());
    regs.r[15] = sp + 8;
    regs.pc = slot;
    if slot == ret {
        return ret;
    }
    let hit = core.on_breakpoint(p, CpuId(cpu), SPACE, TaskId(task), &mut trap, ts, &mut regs);
    match hit {
        Hit::Returned { to } => {
            assert_eq!(to.0, ret);
            assert_eq!(regs.pc, ret);
            ret
        }
        other => panic!("at the trampoline: {other:?}"),
    }
}

/// The core under test: tiny tables so that entries are reused.
pub type Core<const PROBES: usize, const XOL: usize> =
    ProbeCore<LoomPlatform, Counter, PROBES, 4, 4, 2, XOL, 2>;

pub fn regs_at(addr: u64) -> ToyRegs {
    ToyRegs {
        pc: addr,
        ..ToyRegs::default()
    }
}

/// Run `f` under `loom::model`, count the interleavings it explored, print the count and the
/// bound, and fail if it explored only one (a model that explores one interleaving checks
/// nothing) or never reached one of the branches in `must_reach` (see [`reached`]).
pub fn model<F>(name: &'static str, must_reach: &'static [&'static str], f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let runs = std::sync::Arc::new(StdAtomicUsize::new(0));
    let r = runs.clone();
    // Builder::new reads LOOM_MAX_PREEMPTIONS and the other LOOM_* variables. Writers spin
    // in `synchronize` (yielding), and a model runs several of them: allow more branches than
    // loom's default 1 000 per execution.
    let mut b = loom::model::Builder::new();
    b.max_branches = 20_000;
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    let bound = std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "unbounded".into());
    println!("loom model {name}: {n} interleavings explored (LOOM_MAX_PREEMPTIONS={bound})");
    assert!(n > 1, "{name}: loom explored a single interleaving");
    let seen = REACHED.lock().unwrap();
    for b in must_reach {
        assert!(
            seen.get(name).is_some_and(|s| s.contains(b)),
            "{name}: branch `{b}` never reached in any interleaving"
        );
    }
}

static REACHED: std::sync::Mutex<BTreeMap<&'static str, BTreeSet<&'static str>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Record that model `name` reached branch `branch` in some interleaving.
pub fn reached(name: &'static str, branch: &'static str) {
    REACHED
        .lock()
        .unwrap()
        .entry(name)
        .or_default()
        .insert(branch);
}

/// A consumer that checks it only ever runs for the address it was registered at, and never
/// after its unregistration returned.
#[derive(Debug, Clone)]
pub struct AtAddr {
    pub addr: u64,
    pub hits: Arc<AtomicUsize>,
    pub unregistered: Arc<AtomicBool>,
    /// The handler asks to be removed from the space (and its filter declines from then on).
    pub remove: bool,
    pub declined: Arc<AtomicBool>,
}

impl AtAddr {
    pub fn new(offset: u64) -> AtAddr {
        AtAddr {
            addr: TEXT + offset,
            hits: Arc::new(AtomicUsize::new(0)),
            unregistered: Arc::new(AtomicBool::new(false)),
            remove: false,
            declined: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Consumer<LoomPlatform> for AtAddr {
    fn has_filter(&self) -> bool {
        self.remove
    }
    fn filter(&self, _p: &LoomPlatform, _space: SpaceId, _task: TaskId) -> bool {
        !self.declined.load(Ordering::SeqCst)
    }
    fn handler(&self, ctx: &mut HitContext<'_, LoomPlatform>) -> HandlerAction {
        assert_eq!(
            ctx.addr.0, self.addr,
            "a consumer ran for another probe's hit"
        );
        assert!(
            !self.unregistered.load(Ordering::SeqCst),
            "handler ran after unregister returned"
        );
        self.hits.fetch_add(1, Ordering::SeqCst);
        if self.remove {
            self.declined.store(true, Ordering::SeqCst);
            HandlerAction::RemoveFromSpace
        } else {
            HandlerAction::Keep
        }
    }
}

/// A core over [`AtAddr`] consumers.
pub type AtCore<const PROBES: usize, const SITES: usize, const XOL: usize> =
    ProbeCore<LoomPlatform, AtAddr, PROBES, 4, SITES, 2, XOL, 2>;

/// One hit at `TEXT + offset` on `cpu`, as a fresh context: returns the outcome, the IP the
/// registers ended at, and the context's trap state (a boosted or stepped context is still in
/// its slot).
pub fn hit_at<
    C: Consumer<LoomPlatform>,
    const A: usize,
    const B: usize,
    const D: usize,
    const E: usize,
>(
    core: &ProbeCore<LoomPlatform, C, A, 4, B, D, E, 2>,
    p: &LoomPlatform,
    cpu: u32,
    offset: u64,
) -> (probe_core::Hit, ToyRegs, probe_core::TrapState<ToyArch>) {
    let mut ts = probe_core::TaskState::<4>::new();
    let mut trap = probe_core::TrapState::<ToyArch>::new();
    let mut regs = regs_at(TEXT + offset);
    let hit = core.on_breakpoint(
        p,
        probe_core::CpuId(cpu),
        SPACE,
        TaskId(cpu as u64 + 1),
        &mut trap,
        &mut ts,
        &mut regs,
    );
    (hit, regs, trap)
}
