//! Reading an SDT argument's value from x86-64 registers and memory at a marker hit.

use core::fmt;

use super::args::{ArgLoc, SdtArg};
use super::reg::{Gpr, RegPart, SegReg, X86Reg};
use crate::arch::x86_64::X86Regs;

/// Why [`SdtArg::value`] could not produce a value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ArgValueError<E> {
    /// Reading the operand's memory failed.
    Read {
        /// Effective address of the operand.
        addr: u64,
        /// Bytes requested.
        len: u8,
        /// What the reader said.
        error: E,
    },
    /// The symbol resolver knew no address for the operand's symbol.
    UnresolvedSymbol,
}

impl<E: fmt::Display> fmt::Display for ArgValueError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgValueError::Read { addr, len, error } => write!(
                f,
                "reading the {len}-byte SDT argument at {addr:#x} failed: {error}"
            ),
            ArgValueError::UnresolvedSymbol => {
                f.write_str("the SDT argument's symbol has no known address")
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ArgValueError<E> {}

impl Gpr {
    /// This register's value in `regs`.
    pub const fn read(self, regs: &X86Regs) -> u64 {
        match self {
            Gpr::Rax => regs.rax,
            Gpr::Rcx => regs.rcx,
            Gpr::Rdx => regs.rdx,
            Gpr::Rbx => regs.rbx,
            Gpr::Rsp => regs.rsp,
            Gpr::Rbp => regs.rbp,
            Gpr::Rsi => regs.rsi,
            Gpr::Rdi => regs.rdi,
            Gpr::R8 => regs.r8,
            Gpr::R9 => regs.r9,
            Gpr::R10 => regs.r10,
            Gpr::R11 => regs.r11,
            Gpr::R12 => regs.r12,
            Gpr::R13 => regs.r13,
            Gpr::R14 => regs.r14,
            Gpr::R15 => regs.r15,
        }
    }
}

impl X86Reg {
    /// The selected bits of the register in `regs`, zero-extended (`%ah` yields bits 8..16
    /// shifted down).
    pub const fn read(self, regs: &X86Regs) -> u64 {
        let v = self.gpr().read(regs) >> self.part().shift();
        match self.part() {
            RegPart::Full => v,
            p => v & low_mask(p.bytes()),
        }
    }
}

impl SegReg {
    /// The segment base in 64-bit mode: `fs_base`/`gs_base` for `%fs`/`%gs`, 0 for the others.
    pub const fn base(self, regs: &X86Regs) -> u64 {
        match self {
            SegReg::Fs => regs.fs_base,
            SegReg::Gs => regs.gs_base,
            _ => 0,
        }
    }
}

/// The low `bytes * 8` bits set (`bytes` in 1..=8).
const fn low_mask(bytes: u8) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes as u32 * 8)) - 1
    }
}

/// `v` truncated to `bytes` and sign- or zero-extended back to 64 bits.
const fn extend(v: u64, bytes: u8, signed: bool) -> u64 {
    if bytes >= 8 || bytes == 0 {
        return v;
    }
    let shift = 64 - bytes as u32 * 8;
    if signed {
        (((v << shift) as i64) >> shift) as u64
    } else {
        v & low_mask(bytes)
    }
}

impl SdtArg<'_> {
    /// The argument's value at a hit, truncated to [`SdtArg::width`] bytes and sign-extended
    /// ([`SdtArg::signed`]) or zero-extended to 64 bits. Floating-point arguments come back
    /// as their raw bits, extended by the same rule.
    ///
    /// - `regs`: the registers at the marker. `%rip` matters only for a `%rip`-relative
    ///   operand without a symbol, and is then taken as it is in `regs`.
    /// - `read_mem(addr, buf)`: fills `buf` from the traced address space; memory is read
    ///   little-endian, exactly [`SdtArg::width`] bytes.
    /// - `resolve_symbol(name)`: the run-time address of a symbol named by the operand (in
    ///   the object that holds the note, with its load bias applied).
    ///
    /// A register operand narrower than the width is extended from its own width (`-8@%eax`
    /// sign-extends `eax`). A memory address is computed with wrapping arithmetic, as the
    /// CPU does, in 32 bits when the base or index is a 32-bit register.
    pub fn value<E>(
        &self,
        regs: &X86Regs,
        mut read_mem: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
        mut resolve_symbol: impl FnMut(&str) -> Option<u64>,
    ) -> Result<u64, ArgValueError<E>> {
        let width = self.width().min(8);
        let addr = match self.loc {
            ArgLoc::Reg(r) => {
                let bytes = width.min(r.bytes());
                return Ok(extend(r.read(regs), bytes, self.signed));
            }
            ArgLoc::Imm(v) => return Ok(extend(v as u64, width, self.signed)),
            ArgLoc::RipRel { symbol, disp } => {
                let origin = match symbol {
                    Some(s) => resolve_symbol(s).ok_or(ArgValueError::UnresolvedSymbol)?,
                    None => regs.rip,
                };
                origin.wrapping_add(disp as u64)
            }
            ArgLoc::Mem {
                segment,
                symbol,
                base,
                index,
                scale,
                disp,
            } => {
                let mut a = disp as u64;
                if let Some(s) = symbol {
                    a = a.wrapping_add(resolve_symbol(s).ok_or(ArgValueError::UnresolvedSymbol)?);
                }
                let mut narrow = false;
                if let Some(b) = base {
                    a = a.wrapping_add(b.read(regs));
                    narrow |= b.part() == RegPart::Low32;
                }
                if let Some(i) = index {
                    a = a.wrapping_add(i.read(regs).wrapping_mul(u64::from(scale)));
                    narrow |= i.part() == RegPart::Low32;
                }
                if narrow {
                    a &= low_mask(4);
                }
                if let Some(s) = segment {
                    a = a.wrapping_add(s.base(regs));
                }
                a
            }
        };
        let mut buf = [0u8; 8];
        let len = usize::from(width);
        let dst = buf.get_mut(..len).unwrap_or_default();
        read_mem(addr, dst).map_err(|error| ArgValueError::Read {
            addr,
            len: width,
            error,
        })?;
        Ok(extend(u64::from_le_bytes(buf), width, self.signed))
    }
}
