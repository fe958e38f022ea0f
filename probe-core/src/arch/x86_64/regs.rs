//! The x86-64 register file as Linux's `struct user_regs_struct` lays it out, and helpers to
//! name general-purpose registers by their encoding number.

use static_assertions::const_assert_eq;

use crate::arch::Registers;

/// The x86-64 register file, field for field Linux's `struct user_regs_struct`
/// (`PTRACE_GETREGS` fills it directly).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // The field names are the registers' names.
pub struct X86Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

const_assert_eq!(core::mem::size_of::<X86Regs>(), 27 * 8);

bitflags::bitflags! {
    /// The RFLAGS bits the core reads or writes: the condition codes the emulator evaluates
    /// for `jcc`, IF for ring 0's `cli`/`sti`, TF and RF for single-stepping. Other bits of
    /// a register value are kept as they are ([`RFlags::from_bits_retain`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RFlags: u64 {
        /// Carry flag.
        const CF = 1 << 0;
        /// Parity flag.
        const PF = 1 << 2;
        /// Auxiliary-carry flag.
        const AF = 1 << 4;
        /// Zero flag.
        const ZF = 1 << 6;
        /// Sign flag.
        const SF = 1 << 7;
        /// Trap flag.
        const TF = 1 << 8;
        /// The interrupt-enable flag (ring 0 code may clear and set it).
        const IF = 1 << 9;
        /// Overflow flag.
        const OF = 1 << 11;
        /// Resume flag.
        const RF = 1 << 16;
    }
}

/// General-purpose register numbers, in encoding order.
pub(crate) mod gpr {
    pub(crate) const RSP: u8 = 4;
}

impl X86Regs {
    /// The 64-bit general-purpose register with encoding number `n` (0 = rax ... 15 = r15);
    /// 0 for a number above 15.
    pub fn gpr(&self, n: u8) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => 0,
        }
    }

    /// Set the 64-bit general-purpose register with encoding number `n`; ignored above 15.
    pub fn set_gpr(&mut self, n: u8, v: u64) {
        let r = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return,
        };
        *r = v;
    }
}

impl Registers for X86Regs {
    fn ip(&self) -> u64 {
        self.rip
    }
    fn set_ip(&mut self, ip: u64) {
        self.rip = ip;
    }
    fn sp(&self) -> u64 {
        self.rsp
    }
    fn set_sp(&mut self, sp: u64) {
        self.rsp = sp;
    }
    fn return_value(&self) -> u64 {
        self.rax
    }
    fn set_return_value(&mut self, v: u64) {
        self.rax = v;
    }
    /// System V AMD64 ABI: rdi, rsi, rdx, rcx, r8, r9; the rest are on the stack.
    fn arg(&self, n: usize) -> Option<u64> {
        match n {
            0 => Some(self.rdi),
            1 => Some(self.rsi),
            2 => Some(self.rdx),
            3 => Some(self.rcx),
            4 => Some(self.r8),
            5 => Some(self.r9),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_numbering_round_trips() {
        let mut r = X86Regs::default();
        for n in 0..16u8 {
            r.set_gpr(n, 0x100 + u64::from(n));
        }
        assert_eq!(r.rax, 0x100);
        assert_eq!(r.rsp, 0x104);
        assert_eq!(r.r15, 0x10f);
        for n in 0..16u8 {
            assert_eq!(r.gpr(n), 0x100 + u64::from(n));
        }
        assert_eq!(r.gpr(16), 0);
        r.set_gpr(16, 1);
        assert_eq!(r.arg(0), Some(r.rdi));
        assert_eq!(r.arg(5), Some(r.r9));
        assert_eq!(r.arg(6), None);
    }
}
