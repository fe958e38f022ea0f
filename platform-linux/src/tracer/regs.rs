//! Conversions between the kernel's `user_regs_struct` ([`sys::Regs`]) and the core's
//! [`X86Regs`] (the same fields in the same order), field by field and without `unsafe`.

use probe_core::arch::x86_64::X86Regs;

use crate::sys;

macro_rules! convert {
    ($from:expr, $to:ident { $($f:ident),* $(,)? }) => {
        $to { $($f: $from.$f),* }
    };
}

/// The core's view of a stopped thread's registers.
pub fn to_core(r: &sys::Regs) -> X86Regs {
    convert!(
        r,
        X86Regs {
            r15,
            r14,
            r13,
            r12,
            rbp,
            rbx,
            r11,
            r10,
            r9,
            r8,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            orig_rax,
            rip,
            cs,
            eflags,
            rsp,
            ss,
            fs_base,
            gs_base,
            ds,
            es,
            fs,
            gs,
        }
    )
}

/// The kernel's view of the core's registers, for `PTRACE_SETREGS`.
pub fn to_sys(r: &X86Regs) -> sys::Regs {
    use libc::user_regs_struct as Regs;
    convert!(
        r,
        Regs {
            r15,
            r14,
            r13,
            r12,
            rbp,
            rbx,
            r11,
            r10,
            r9,
            r8,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            orig_rax,
            rip,
            cs,
            eflags,
            rsp,
            ss,
            fs_base,
            gs_base,
            ds,
            es,
            fs,
            gs,
        }
    )
}

/// The registers as an array of 27 words, in `user_regs_struct` order.
pub fn words(r: &X86Regs) -> [u64; 27] {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// Writes `after` into stopped thread `tid`, which holds `before`: the changed registers one
/// by one when there are at most two (`PTRACE_POKEUSER` costs a third of `PTRACE_SETREGS`),
/// else all at once.
pub fn write_changed(
    tid: sys::Pid,
    before: &X86Regs,
    after: &X86Regs,
) -> Result<(), sys::SysError> {
    let (b, a) = (words(before), words(after));
    let mut changed = [0usize; 2];
    let mut n = 0;
    for i in (0..27).filter(|&i| b[i] != a[i]) {
        if n == changed.len() {
            return sys::set_regs(tid, &to_sys(after));
        }
        changed[n] = i;
        n += 1;
    }
    for &i in &changed[..n] {
        sys::poke_reg(tid, i, a[i])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let mut r = sys::zeroed_regs();
        r.r15 = 1;
        r.rdi = 2;
        r.orig_rax = 3;
        r.rip = 4;
        r.gs = 5;
        r.fs_base = 6;
        let c = to_core(&r);
        assert_eq!(
            (c.r15, c.rdi, c.orig_rax, c.rip, c.gs, c.fs_base),
            (1, 2, 3, 4, 5, 6)
        );
        assert_eq!(words(&c)[16], 4);
        assert_eq!(words(&c)[26], 5);
        let back = to_sys(&c);
        assert_eq!(format!("{back:?}"), format!("{r:?}"));
    }
}
