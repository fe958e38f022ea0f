//! The trap frame: what the kernel's exception entry leaves on the stack, lowest address
//! first. The CPU pushes `ss`, `rsp`, `rflags`, `cs`, `rip` (and, for some vectors, an error
//! code); the entry stub pushes a zero error code where the CPU does not, the vector, then the
//! fifteen general-purpose registers, `rax` first, and passes a pointer to the result.
//!
//! The core works on [`X86Regs`]; [`TrapFrame::regs`] and [`TrapFrame::set_regs`] convert.
//! Segment and base registers the kernel never changes read as their trap values and are
//! not written back.

use probe_core::arch::x86_64::regs::RFlags;
use probe_core::arch::x86_64::X86Regs;

/// The saved state of an interrupted context, as the entry stub lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // The field names are the registers' names.
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The interrupt vector (pushed by the stub).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Size of [`TrapFrame`] in bytes; the entry stubs depend on it.
pub const TRAP_FRAME_SIZE: usize = 22 * 8;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == TRAP_FRAME_SIZE);

/// Interrupt-enable flag.
pub const IF: u64 = RFlags::IF.bits();
/// Trap flag.
pub const TF: u64 = RFlags::TF.bits();

impl TrapFrame {
    /// The core's register view of the interrupted context.
    pub fn regs(&self) -> X86Regs {
        X86Regs {
            r15: self.r15,
            r14: self.r14,
            r13: self.r13,
            r12: self.r12,
            rbp: self.rbp,
            rbx: self.rbx,
            r11: self.r11,
            r10: self.r10,
            r9: self.r9,
            r8: self.r8,
            rax: self.rax,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            orig_rax: u64::MAX,
            rip: self.rip,
            cs: self.cs,
            eflags: self.rflags,
            rsp: self.rsp,
            ss: self.ss,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        }
    }

    /// Write the core's register view back. `cs` and `ss` are kept (the core never changes
    /// privilege); so are the vector and error code.
    pub fn set_regs(&mut self, r: &X86Regs) {
        self.r15 = r.r15;
        self.r14 = r.r14;
        self.r13 = r.r13;
        self.r12 = r.r12;
        self.r11 = r.r11;
        self.r10 = r.r10;
        self.r9 = r.r9;
        self.r8 = r.r8;
        self.rbp = r.rbp;
        self.rdi = r.rdi;
        self.rsi = r.rsi;
        self.rdx = r.rdx;
        self.rcx = r.rcx;
        self.rbx = r.rbx;
        self.rax = r.rax;
        self.rip = r.rip;
        self.rflags = r.eflags;
        self.rsp = r.rsp;
    }

    /// Whether the trap came from ring 0.
    pub fn from_kernel(&self) -> bool {
        self.cs & 3 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_general_register() {
        let mut f = TrapFrame::default();
        let words: &mut [u64; 22] =
            // SAFETY: TrapFrame is repr(C), 22 u64 fields, no padding (size asserted above).
            unsafe { &mut *(&mut f as *mut TrapFrame).cast::<[u64; 22]>() };
        for (i, w) in words.iter_mut().enumerate() {
            *w = 0x1000 + i as u64;
        }
        let r = f.regs();
        assert_eq!(r.r15, 0x1000);
        assert_eq!(r.rax, 0x1000 + 14);
        assert_eq!(r.rip, 0x1000 + 17);
        assert_eq!(r.rsp, 0x1000 + 20);
        let mut g = TrapFrame {
            cs: f.cs,
            ss: f.ss,
            vector: f.vector,
            error: f.error,
            ..TrapFrame::default()
        };
        g.set_regs(&r);
        assert_eq!(g, f);
    }

    #[test]
    fn kernel_mode_is_rpl_zero() {
        let f = TrapFrame {
            cs: 0x08,
            ..TrapFrame::default()
        };
        assert!(f.from_kernel());
        let u = TrapFrame {
            cs: 0x2b,
            ..TrapFrame::default()
        };
        assert!(!u.from_kernel());
    }
}
