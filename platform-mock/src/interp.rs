//! The interpreter: executes one instruction of a task from its space's memory.
//!
//! Fetches, loads and stores go through the same page-by-page path as every other access,
//! so instructions and words crossing a page boundary work (or fault) like anything else.
//! Exceptions are precise: an instruction that faults changes no register and no memory.

use probe_core::{Addr, MemError, MemErrorKind};

use crate::arch::ToyRegs;
use crate::isa::{insn_len, Insn, MIN_INSN_LEN, SP};
use crate::space::{Access, Space};
use crate::task::{Task, TaskStatus};

/// What one step of a task did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StepEvent {
    /// An ordinary instruction ran.
    Normal,
    /// A `brk` trapped; `pc` still points at it (`addr`). Nothing else changed.
    Breakpoint {
        /// The `brk`'s address (the task's `pc`).
        addr: Addr,
    },
    /// The task's single-step flag was set and one instruction completed normally. The flag
    /// is one-shot: it is cleared by every step, whatever the step reported.
    SingleStepDone,
    /// A `sys` ran: `pc` points after it; the platform's caller handles the call (the
    /// toy convention: number in `r0`, arguments in `r1`.., result in `r0`).
    Syscall,
    /// `halt` ran: the task exited with code `r0`.
    Exited(u64),
    /// A memory access failed; the task is dead ([`TaskStatus::Faulted`]) with its registers
    /// as before the instruction.
    Fault {
        /// The faulting address.
        addr: Addr,
        /// Why.
        kind: MemErrorKind,
    },
    /// The bytes at `pc` do not decode; the task is dead ([`TaskStatus::Illegal`]).
    Illegal {
        /// The instruction's address.
        addr: Addr,
    },
    /// The task does not exist or no longer runs.
    NotRunnable,
}

fn load(space: &Space, addr: u64) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    space.read_exact(addr, &mut b, Access::Read)?;
    Ok(u64::from_le_bytes(b))
}

fn store(space: &mut Space, addr: u64, v: u64) -> Result<(), MemError> {
    space.write(addr, &v.to_le_bytes(), Access::Write)
}

/// Fetch and decode the instruction at `pc`.
fn fetch(space: &Space, pc: u64) -> Result<Insn, StepEvent> {
    let fault = |e: MemError| StepEvent::Fault {
        addr: e.addr,
        kind: e.kind,
    };
    let mut buf = [0u8; 8];
    space
        .read_exact(pc, &mut buf[..MIN_INSN_LEN], Access::Fetch)
        .map_err(fault)?;
    let illegal = StepEvent::Illegal { addr: Addr(pc) };
    let len = insn_len(buf[0]).ok_or(illegal)?;
    if len > MIN_INSN_LEN {
        let rest = pc
            .checked_add(MIN_INSN_LEN as u64)
            .ok_or(StepEvent::Fault {
                addr: Addr(pc),
                kind: MemErrorKind::Unmapped,
            })?;
        space
            .read_exact(rest, &mut buf[MIN_INSN_LEN..len], Access::Fetch)
            .map_err(fault)?;
    }
    Insn::decode(&buf[..len]).map_err(|_| illegal)
}

/// Execute `insn` at `pc` on a copy of the registers; commit only on success.
fn execute(task: &mut Task, space: &mut Space) -> StepEvent {
    let pc = task.regs.pc;
    let insn = match fetch(space, pc) {
        Ok(i) => i,
        Err(ev) => return ev,
    };
    let next = pc.wrapping_add(insn.len() as u64);
    let rel = |off: i64| pc.wrapping_add_signed(off);
    let mut r: ToyRegs = task.regs;
    let mut printed = None;
    let result: Result<(), MemError> = (|| {
        match insn {
            Insn::Brk => return Ok(()),
            Insn::Halt => return Ok(()),
            Insn::Nop | Insn::Sys => r.pc = next,
            Insn::Li { rd, imm } => {
                r.set(rd, imm as i64 as u64);
                r.pc = next;
            }
            Insn::Mov { rd, rs } => {
                r.set(rd, r.get(rs));
                r.pc = next;
            }
            Insn::Alu { op, rd, rs } => {
                let v = op.apply(r.get(rd), r.get(rs));
                r.set(rd, v);
                r.set_flags(v);
                r.pc = next;
            }
            Insn::AluI { op, rd, imm } => {
                let v = op.apply(r.get(rd), imm as i64 as u64);
                r.set(rd, v);
                r.set_flags(v);
                r.pc = next;
            }
            Insn::Cmp { ra, rb } => {
                r.set_cmp_flags(r.get(ra), r.get(rb));
                r.pc = next;
            }
            Insn::CmpI { ra, imm } => {
                r.set_cmp_flags(r.get(ra), imm as i64 as u64);
                r.pc = next;
            }
            Insn::Ld { rd, base, off } => {
                let v = load(space, r.get(base).wrapping_add_signed(off.into()))?;
                r.set(rd, v);
                r.pc = next;
            }
            Insn::St { rs, base, off } => {
                store(
                    space,
                    r.get(base).wrapping_add_signed(off.into()),
                    r.get(rs),
                )?;
                r.pc = next;
            }
            Insn::Ldpc { rd, off } => {
                let v = load(space, rel(off.into()))?;
                r.set(rd, v);
                r.pc = next;
            }
            Insn::Jmp { off } => r.pc = rel(off.into()),
            Insn::Jcc { cond, off } => {
                r.pc = if cond.holds(r.zf, r.nf) {
                    rel(off.into())
                } else {
                    next
                }
            }
            Insn::Call { off } => {
                let sp = r.get(SP).wrapping_sub(8);
                store(space, sp, next)?;
                r.set(SP, sp);
                r.pc = rel(off.into());
            }
            Insn::Ret => {
                let sp = r.get(SP);
                let to = load(space, sp)?;
                r.set(SP, sp.wrapping_add(8));
                r.pc = to;
            }
            Insn::Jr { rs } => r.pc = r.get(rs),
            Insn::Ja { target } => r.pc = target.into(),
            Insn::Push { rs } => {
                let v = r.get(rs);
                let sp = r.get(SP).wrapping_sub(8);
                store(space, sp, v)?;
                r.set(SP, sp);
                r.pc = next;
            }
            Insn::Pop { rd } => {
                let sp = r.get(SP);
                let v = load(space, sp)?;
                r.set(SP, sp.wrapping_add(8));
                r.set(rd, v);
                r.pc = next;
            }
            Insn::Out { rs } => {
                printed = Some(r.get(rs));
                r.pc = next;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        return StepEvent::Fault {
            addr: e.addr,
            kind: e.kind,
        };
    }
    match insn {
        Insn::Brk => StepEvent::Breakpoint { addr: Addr(pc) },
        Insn::Halt => StepEvent::Exited(task.regs.r[0]),
        _ => {
            task.regs = r;
            if let Some(v) = printed {
                task.output.push(v);
            }
            if insn == Insn::Sys {
                StepEvent::Syscall
            } else {
                StepEvent::Normal
            }
        }
    }
}

/// One step of `task` in `space` (`None`: the space is gone).
pub(crate) fn step(task: &mut Task, space: Option<&mut Space>) -> StepEvent {
    if !task.status.is_running() {
        return StepEvent::NotRunnable;
    }
    let single_step = core::mem::take(&mut task.single_step);
    let ev = match space {
        Some(space) => execute(task, space),
        None => StepEvent::Fault {
            addr: Addr(task.regs.pc),
            kind: MemErrorKind::Gone,
        },
    };
    match ev {
        StepEvent::Normal if single_step => StepEvent::SingleStepDone,
        StepEvent::Exited(code) => {
            task.status = TaskStatus::Exited(code);
            ev
        }
        StepEvent::Fault { addr, kind } => {
            task.status = TaskStatus::Faulted { addr, kind };
            ev
        }
        StepEvent::Illegal { addr } => {
            task.status = TaskStatus::Illegal { addr };
            ev
        }
        _ => ev,
    }
}
