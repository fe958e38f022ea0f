//! The emulator: executes the commonest function-entry instructions on the register file
//! (and on the stack through the [`AddressSpace`]), so that they cost no slot and one trap.
//!
//! Hit path: no allocation, no panic. Memory is read and written before any register
//! changes, so an error leaves the registers untouched.

use super::plan::{MemRef, Op, Plan, Seg, NO_REG};
use super::regs::{RFlags, X86Regs};
use crate::addr::Addr;
use crate::memory::AddressSpace;
use crate::memory::{MemError, MemErrorKind};

/// Whether condition `cc` (the opcode's low nibble, 0 = o ... 15 = g) holds for `eflags`.
pub(crate) fn condition(cc: u8, eflags: u64) -> bool {
    let flags = RFlags::from_bits_retain(eflags);
    let f = |m: RFlags| flags.contains(m);
    let base = match cc >> 1 {
        0 => f(RFlags::OF),
        1 => f(RFlags::CF),
        2 => f(RFlags::ZF),
        3 => f(RFlags::CF) || f(RFlags::ZF),
        4 => f(RFlags::SF),
        5 => f(RFlags::PF),
        6 => f(RFlags::SF) != f(RFlags::OF),
        _ => f(RFlags::ZF) || (f(RFlags::SF) != f(RFlags::OF)),
    };
    base != (cc & 1 != 0)
}

/// The effective address of a 64-bit-addressed memory operand of the instruction at `insn`
/// whose length is `len`.
pub(crate) fn effective_address(m: &MemRef, insn: u64, len: usize, regs: &X86Regs) -> u64 {
    let mut a = match m.base {
        MemRef::RIP => insn.wrapping_add(len as u64),
        NO_REG => 0,
        r => regs.gpr(r),
    };
    if m.index != NO_REG {
        a = a.wrapping_add(regs.gpr(m.index).wrapping_mul(u64::from(m.scale)));
    }
    a = a.wrapping_add_signed(i64::from(m.disp));
    match m.seg {
        Seg::Flat => a,
        Seg::Fs => a.wrapping_add(regs.fs_base),
        Seg::Gs => a.wrapping_add(regs.gs_base),
    }
}

fn read_u64<M: AddressSpace + ?Sized>(mem: &M, at: u64) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    mem.read_exact(Addr(at), &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Push `v` below `regs.rsp` (memory only); returns the new rsp.
fn push<M: AddressSpace + ?Sized>(mem: &M, regs: &X86Regs, v: u64) -> Result<u64, MemError> {
    let sp = regs.rsp.wrapping_sub(8);
    mem.write(Addr(sp), &v.to_le_bytes())?;
    Ok(sp)
}

/// Execute an `Emulate` plan for the instruction at `insn`.
pub(crate) fn emulate<M: AddressSpace + ?Sized>(
    plan: &Plan,
    insn: Addr,
    regs: &mut X86Regs,
    mem: &M,
) -> Result<(), MemError> {
    let len = plan.len();
    let next = insn.raw().wrapping_add(len as u64);
    let rel = |r: i32| next.wrapping_add_signed(i64::from(r));
    match plan.op {
        Op::Nop => regs.rip = next,
        Op::Jmp { rel: r } => regs.rip = rel(r),
        Op::Jcc { cc, rel: r } => {
            regs.rip = if condition(cc, regs.eflags) {
                rel(r)
            } else {
                next
            }
        }
        Op::Call { rel: r } => {
            regs.rsp = push(mem, regs, next)?;
            regs.rip = rel(r);
        }
        Op::Push { reg } => {
            regs.rsp = push(mem, regs, regs.gpr(reg))?;
            regs.rip = next;
        }
        Op::PushImm { imm } => {
            regs.rsp = push(mem, regs, i64::from(imm) as u64)?;
            regs.rip = next;
        }
        Op::Pop { reg } => {
            let v = read_u64(mem, regs.rsp)?;
            regs.rsp = regs.rsp.wrapping_add(8);
            regs.set_gpr(reg, v);
            regs.rip = next;
        }
        Op::MovRR { dst, src } => {
            regs.set_gpr(dst, regs.gpr(src));
            regs.rip = next;
        }
        Op::LeaRip { dst, disp, wide } => {
            let a = rel(disp);
            regs.set_gpr(dst, if wide { a } else { a & 0xffff_ffff });
            regs.rip = next;
        }
        Op::Ret { pop } => {
            let v = read_u64(mem, regs.rsp)?;
            regs.rsp = regs.rsp.wrapping_add(8).wrapping_add(u64::from(pop));
            regs.rip = v;
        }
        Op::JmpReg { reg } => regs.rip = regs.gpr(reg),
        Op::CallReg { reg } => {
            let target = regs.gpr(reg);
            regs.rsp = push(mem, regs, next)?;
            regs.rip = target;
        }
        Op::JmpMem { mem: m } => {
            let target = read_u64(mem, effective_address(&m, insn.raw(), len, regs))?;
            regs.rip = target;
        }
        Op::CallMem { mem: m } => {
            let target = read_u64(mem, effective_address(&m, insn.raw(), len, regs))?;
            regs.rsp = push(mem, regs, next)?;
            regs.rip = target;
        }
        Op::Cli => {
            regs.eflags &= !RFlags::IF.bits();
            regs.rip = next;
        }
        Op::Sti => {
            regs.eflags |= RFlags::IF.bits();
            regs.rip = next;
        }
        Op::Boost { .. }
        | Op::StepLoop { .. }
        | Op::StepRipRel { .. }
        | Op::StepCall
        | Op::StepPrivileged => {
            return Err(MemError::new(insn, MemErrorKind::Denied));
        }
    }
    Ok(())
}
