//! Jump-patching entry probes in a stopped process whose in-process agent
//! (`libprobe_agent.so`) is loaded: the controller's side of probes that never trap.
//!
//! With every thread of the process held in a ptrace-stop, [`JumpPatcher::patch`] decides
//! whether the function's entry can take a 5-byte `jmp`
//! (`probe_core::arch::x86_64::jump::jump_patch`), maps a trampoline page within reach of
//! the function (a remote `mmap`), writes the trampoline there (registers and the vector
//! argument registers saved, `probe_agent_hit(regs, probe)` called, the displaced
//! instructions relocated, the jump back), and only then writes the `jmp` over the entry.
//! A thread stopped inside the bytes the jump displaces (past their first) would resume in
//! the middle of the `jmp`: the patch is refused with [`InProcError::ThreadInside`], and the
//! caller lets the thread run on and tries again.
//!
//! Every jump is journaled before it is written (see [`crate::journal`]): if the tracer dies,
//! the guardian puts the entry's bytes back.
//!
//! [`JumpPatcher::restore`] puts the original bytes back, also with every thread held.
//! Trampoline pages are never unmapped: a thread that was inside one (preempted in the
//! handler, or in the displaced instructions) when its probe went away finishes it and jumps
//! back to the function, into the original instructions after the displaced ones, which
//! are intact.

use core::ops::Range;
use std::path::{Path, PathBuf};

use probe_core::arch::x86_64::jump::{
    encode_trampoline, entry_patch_offset, jump_bytes, jump_patch, ExtendedState, HandlerCall,
    JumpPatch, JumpRefusal, VectorWidth, JUMP_LEN,
};
use probe_core::Addr;

use crate::elf::ElfImage;
use crate::maps::{self, Mapping};
use crate::mem::ProcMem;
use crate::remote::Injector;
use crate::sys::{self, Pid};

/// The agent's shared object, as it appears in a process's maps.
pub const AGENT_FILE: &str = "libprobe_agent.so";
/// The handler the trampolines call.
pub const HIT_SYMBOL: &str = "probe_agent_hit";
/// Bytes of trampoline pages mapped at once.
const TRAMPOLINE_AREA: u64 = 64 * 1024;
/// Room for one trampoline (the longest, with `zmm` registers, is under 400 bytes).
const TRAMPOLINE_MAX: usize = 512;

/// Why an entry was not jump-patched (an `int3` probe still can be).
#[derive(Debug, thiserror::Error)]
pub enum InProcError {
    /// The agent is not loaded in the process.
    #[error("the in-process agent ({AGENT_FILE}) is not loaded in process {pid}")]
    NoAgent {
        /// The process.
        pid: Pid,
    },
    /// The agent's file has no handler symbol.
    #[error("{path} has no {HIT_SYMBOL}: not probe's agent")]
    NotAnAgent {
        /// The file.
        path: PathBuf,
    },
    /// The entry cannot take a jump.
    #[error("the entry at {addr:#x} cannot be jump-patched: {why:?}")]
    Refused {
        /// The function.
        addr: u64,
        /// Why.
        why: JumpRefusal,
    },
    /// A held thread is inside the bytes the jump would displace.
    #[error(
        "thread {tid} is stopped at {ip:#x}, inside the bytes the jump at {addr:#x} displaces"
    )]
    ThreadInside {
        /// The thread.
        tid: Pid,
        /// Its instruction pointer.
        ip: u64,
        /// The function.
        addr: u64,
    },
    /// The entry is already patched.
    #[error("the entry at {addr:#x} is already jump-patched")]
    AlreadyPatched {
        /// The function.
        addr: u64,
    },
    /// No trampoline could be built or placed within reach.
    #[error("no trampoline for the entry at {addr:#x}: {why}")]
    Trampoline {
        /// The function.
        addr: u64,
        /// Why.
        why: String,
    },
    /// Reading or writing the process failed.
    #[error("process {pid}: {why}")]
    Process {
        /// The process.
        pid: Pid,
        /// What failed.
        why: String,
    },
}

/// One patched entry.
#[derive(Clone, Debug)]
struct Site {
    /// The function's address.
    func: u64,
    patch: JumpPatch,
    /// The bytes under the jump.
    original: [u8; JUMP_LEN],
    /// The jump written.
    jump: [u8; JUMP_LEN],
}

/// A trampoline area mapped in the process.
#[derive(Clone, Debug)]
struct Area {
    range: Range<u64>,
    used: u64,
}

/// The jump patches of one process.
#[derive(Debug)]
pub struct JumpPatcher {
    pid: Pid,
    mem: ProcMem,
    handler: u64,
    state: ExtendedState,
    areas: Vec<Area>,
    sites: Vec<Site>,
}

/// A function as a process maps it: its file, its offset there, and its bytes.
#[derive(Clone, Debug)]
pub struct MappedFunction {
    /// The file that holds it.
    pub path: PathBuf,
    /// Its first byte's offset in the file (a probe's key).
    pub file_offset: u64,
    /// Its bytes in the process (the symbol's size).
    pub body: Vec<u8>,
}

/// The function `name` of the file mapped at `addr` in process `pid`, with its bytes read
/// from the process.
pub fn mapped_function(pid: Pid, addr: u64, name: &str) -> Result<MappedFunction, InProcError> {
    let process = |why: String| InProcError::Process { pid, why };
    let lines = maps::read_maps(pid).map_err(|e| process(e.to_string()))?;
    let m = lines
        .iter()
        .find(|m| m.is_file() && m.range.contains(&addr))
        .ok_or_else(|| process(format!("no file is mapped at {addr:#x}")))?;
    let path = PathBuf::from(&m.path);
    let image = ElfImage::open(&path).map_err(|e| process(e.to_string()))?;
    let sym = image
        .lookup(name)
        .first()
        .copied()
        .ok_or_else(|| process(format!("{} has no {name}", path.display())))?;
    let mut body = vec![0u8; sym.size as usize];
    ProcMem::open(pid)
        .and_then(|mem| mem.read(addr, &mut body))
        .map_err(|e| process(e.to_string()))?;
    Ok(MappedFunction {
        path,
        file_offset: sym.file_offset,
        body,
    })
}

/// The vector state a trampoline keeps: the argument registers, as wide as this CPU passes
/// them (the traced process runs on the same CPUs).
pub fn argument_state() -> ExtendedState {
    let width = if std::arch::is_x86_feature_detected!("avx512f") {
        VectorWidth::Zmm
    } else if std::arch::is_x86_feature_detected!("avx") {
        VectorWidth::Ymm
    } else {
        VectorWidth::Xmm
    };
    ExtendedState::ArgumentVectors(width)
}

impl JumpPatcher {
    /// The patcher of process `pid`, whose agent must be mapped (found in its maps, the
    /// handler's address from the agent file's symbols).
    pub fn new(pid: Pid) -> Result<JumpPatcher, InProcError> {
        let process = |why: String| InProcError::Process { pid, why };
        let mem = ProcMem::open(pid).map_err(|e| process(e.to_string()))?;
        let lines = maps::read_maps(pid).map_err(|e| process(e.to_string()))?;
        let agent = lines
            .iter()
            .find(|m| m.is_file() && m.file_name() == AGENT_FILE)
            .ok_or(InProcError::NoAgent { pid })?;
        let path = PathBuf::from(&agent.path);
        let image = ElfImage::open(Path::new(&path)).map_err(|e| process(e.to_string()))?;
        let offset = image
            .lookup(HIT_SYMBOL)
            .first()
            .map(|s| s.file_offset)
            .ok_or_else(|| InProcError::NotAnAgent { path: path.clone() })?;
        // The executable mapping: the page holding the offset may also be mapped read-only,
        // as the tail of the segment before.
        let handler = maps::mappings_of_file(&lines, &path)
            .into_iter()
            .filter(|m| m.perms.exec)
            .find_map(|m| m.addr_of_offset(offset))
            .ok_or_else(|| InProcError::NotAnAgent { path: path.clone() })?;
        Ok(JumpPatcher {
            pid,
            mem,
            handler,
            state: argument_state(),
            areas: Vec::new(),
            sites: Vec::new(),
        })
    }

    /// The handler's address in the process.
    pub fn handler(&self) -> u64 {
        self.handler
    }

    /// Entries patched now.
    pub fn patched(&self) -> usize {
        self.sites.len()
    }

    /// Patches the entry of the function at `func` (its bytes `body`, as mapped) to count
    /// hits as probe `probe`. Every thread of the process must be held in a ptrace-stop
    /// (`held`), `tid` among them, not inside a system call (it runs the remote `mmap`
    /// when a trampoline page is needed).
    pub fn patch(
        &mut self,
        tid: Pid,
        held: &[Pid],
        func: u64,
        body: &[u8],
        probe: u32,
    ) -> Result<(), InProcError> {
        if self.sites.iter().any(|s| s.func == func) {
            return Err(InProcError::AlreadyPatched { addr: func });
        }
        let patch = jump_patch(body, entry_patch_offset(body))
            .map_err(|why| InProcError::Refused { addr: func, why })?;
        let at = func + patch.at as u64;
        let inside = at + 1..at + patch.displaced as u64;
        for &t in held {
            let regs = sys::get_regs(t).map_err(|e| self.failed(e.to_string()))?;
            if inside.contains(&regs.rip) {
                return Err(InProcError::ThreadInside {
                    tid: t,
                    ip: regs.rip,
                    addr: func,
                });
            }
        }
        let tramp = self.room(tid, func)?;
        let call = HandlerCall {
            handler: self.handler,
            ctx: u64::from(probe),
            state: self.state,
        };
        let mut code = [0u8; TRAMPOLINE_MAX];
        let n = encode_trampoline(body, &patch, Addr(func), Addr(tramp), &call, &mut code)
            .map_err(|e| InProcError::Trampoline {
                addr: func,
                why: format!("{e:?}"),
            })?;
        let jump =
            jump_bytes(&patch, Addr(func), Addr(tramp)).ok_or_else(|| InProcError::Trampoline {
                addr: func,
                why: "the trampoline is out of the jump's reach".into(),
            })?;
        let mut original = [0u8; JUMP_LEN];
        original.copy_from_slice(&body[patch.at..patch.at + JUMP_LEN]);
        // The trampoline first, the jump to it last: no thread runs meanwhile (all held),
        // and a failure between the two leaves only unused bytes in our own page.
        self.mem
            .write(tramp, &code[..n])
            .map_err(|e| self.failed(e.to_string()))?;
        // Journaled first, as every code patch is: if the tracer dies, the guardian puts
        // the original bytes back (the trampoline page is left, unused and harmless).
        crate::journal::record_code(self.pid, at, &original, &jump);
        self.mem
            .write(at, &jump)
            .map_err(|e| self.failed(e.to_string()))?;
        if let Some(a) = self.areas.last_mut() {
            a.used += (n as u64).div_ceil(64) * 64;
        }
        self.sites.push(Site {
            func,
            patch,
            original,
            jump,
        });
        Ok(())
    }

    /// Puts back the original bytes of every patched entry (every thread held); returns how
    /// many were restored. An entry whose jump is no longer there (the program rewrote or
    /// unmapped it) is left as it is.
    pub fn restore(&mut self) -> Result<usize, InProcError> {
        let mut restored = 0;
        for s in core::mem::take(&mut self.sites) {
            let at = s.func + s.patch.at as u64;
            let mut now = [0u8; JUMP_LEN];
            if self.mem.read(at, &mut now).is_err() || now != s.jump {
                continue;
            }
            crate::journal::record_code(self.pid, at, &s.jump, &s.original);
            self.mem
                .write(at, &s.original)
                .map_err(|e| self.failed(e.to_string()))?;
            restored += 1;
        }
        Ok(restored)
    }

    fn failed(&self, why: String) -> InProcError {
        InProcError::Process { pid: self.pid, why }
    }

    /// A place for one trampoline within reach of `func`: in the last area if it has room
    /// and is near enough, else in a new area mapped next to the function's module.
    fn room(&mut self, tid: Pid, func: u64) -> Result<u64, InProcError> {
        const REACH: u64 = 1 << 31;
        if let Some(a) = self.areas.last() {
            let at = a.range.start + a.used;
            let near = at.abs_diff(func) < REACH - TRAMPOLINE_AREA;
            if near && at + TRAMPOLINE_MAX as u64 <= a.range.end {
                return Ok(at);
            }
        }
        let lines = maps::read_maps(self.pid).map_err(|e| self.failed(e.to_string()))?;
        let module = module_of(&lines, func).unwrap_or(func..func + 1);
        let injector = Injector::new(&self.mem, &lines).map_err(|e| self.failed(e.to_string()))?;
        let base = injector
            .map_near(
                tid,
                module,
                TRAMPOLINE_AREA,
                libc::PROT_READ | libc::PROT_EXEC,
            )
            .map_err(|e| InProcError::Trampoline {
                addr: func,
                why: e.to_string(),
            })?;
        self.areas.push(Area {
            range: base..base + TRAMPOLINE_AREA,
            used: 0,
        });
        Ok(base)
    }
}

/// The span of the file mapped at `addr` (all its mappings).
fn module_of(lines: &[Mapping], addr: u64) -> Option<Range<u64>> {
    let m = lines.iter().find(|m| m.range.contains(&addr))?;
    if !m.is_file() {
        return Some(m.range.clone());
    }
    maps::module_span(&maps::mappings_of_file(lines, Path::new(&m.path)))
}
