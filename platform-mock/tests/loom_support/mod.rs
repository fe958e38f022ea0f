//! A minimal platform for the loom models: one file, one address space with a flat memory,
//! one slot area. Small on purpose: loom explores every interleaving of the core's atomics,
//! and the fewer objects there are, the more of them it can afford.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::ops::ControlFlow;

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

/// Offsets in the file: a `nop` (emulated), two ALU instructions (boosted).
pub const NOP_AT: u64 = 0;
pub const ADD_AT: u64 = 4;
pub const SUB_AT: u64 = 8;

pub fn program() -> Vec<u8> {
    let r1 = Reg::new(1).unwrap();
    let r2 = Reg::new(2).unwrap();
    let mut a = Asm::new();
    a.nop().add(r1, r2).sub(r1, r2).halt();
    a.finish().unwrap().bytes
}

#[derive(Debug)]
pub struct LoomPlatform {
    pub file: Vec<u8>,
    pub mem: std::sync::Mutex<Vec<u8>>,
    pub tasks: Vec<TaskId>,
}

impl LoomPlatform {
    pub fn new() -> LoomPlatform {
        let file = program();
        let mut mem = vec![0u8; MEM];
        mem[TEXT as usize..TEXT as usize + file.len()].copy_from_slice(&file);
        LoomPlatform {
            file,
            mem: std::sync::Mutex::new(mem),
            tasks: vec![TaskId(1), TaskId(2)],
        }
    }

    pub fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
        let m = self.mem.lock().unwrap();
        m[addr as usize..addr as usize + len].to_vec()
    }

    /// The text as it is now equals the file.
    pub fn text_pristine(&self) -> bool {
        self.peek(TEXT, self.file.len()) == self.file
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
            let _ = f(Mapping {
                space: SPACE,
                range: Range::new(Addr(TEXT), Addr(TEXT + self.file.len() as u64)),
                file: FILE,
                file_offset: 0,
                exec: true,
                write: false,
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
    pub unregistered: Arc<AtomicBool>,
}

impl Counter {
    pub fn new() -> Counter {
        Counter {
            hits: Arc::new(AtomicUsize::new(0)),
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
