//! [`ToyArch`]: the toy ISA as a [`probe_core::Arch`].
//!
//! | class                                              | plan         |
//! |----------------------------------------------------|--------------|
//! | `nop`, `li`, `jmp`, `jz`/`jnz`/`jlt`, `call`, `push`, `ja` | Emulate |
//! | `halt`, `mov`, ALU, `cmp`, `ld`, `st`, `pop`, `out` | Boost: copy + jump back |
//! | `ldpc`, `ret`, `jr`                                | SingleStep   |
//! | `brk` / `sys` / unknown / short                    | Reject `Trap` / `SystemCall` / `Invalid` / `Truncated` |
//!
//! A boosted slot holds the instruction followed by `jmp rel16` back to the instruction after
//! the probed one, or `ja abs32` when the slot is farther than a `rel16` reaches; beyond both,
//! the slot is refused with [`Reject::RipRelativeOutOfRange`].
//!
//! `ldpc rd, off` is single-stepped through a scratch register, as x86-64 rewrites a
//! RIP-relative operand: the slot holds `ld rd, [scratch + 0]`; `prepare_xol` saves the scratch
//! register (`r14`, or `r13` when `rd` is `r14`) in the [`ToyStepState`] and points it at the
//! original target; `finish_step` restores it and moves `pc` back after the original
//! instruction. `ret` and `jr` run unchanged in the slot; their result `pc` is absolute.
//!
//! Trap convention (unlike x86): a `brk` trap reports `pc` = the `brk`'s own address.

use probe_core::{Addr, AddressSpace, Arch, MemError, MemErrorKind, PlanKind, Registers, Reject};

use crate::isa::{DecodeError, Insn, Reg, BRK_BYTES, MAX_INSN_LEN, R13, R14, SP};

/// The toy architecture.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ToyArch;

/// The toy register file.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ToyRegs {
    /// `r0`..`r15`; `r15` is the stack pointer, `r0` the return value, `r1`..`r6` the
    /// arguments.
    pub r: [u64; 16],
    /// Program counter.
    pub pc: u64,
    /// Zero flag.
    pub zf: bool,
    /// Negative (signed less-than) flag.
    pub nf: bool,
}

impl ToyRegs {
    /// Register `reg`.
    pub fn get(&self, reg: Reg) -> u64 {
        self.r[reg.index()]
    }

    /// Set register `reg`.
    pub fn set(&mut self, reg: Reg, v: u64) {
        self.r[reg.index()] = v;
    }

    /// Set the flags from an ALU result.
    pub fn set_flags(&mut self, result: u64) {
        self.zf = result == 0;
        self.nf = (result as i64) < 0;
    }

    /// Set the flags as `cmp a, b` does.
    pub fn set_cmp_flags(&mut self, a: u64, b: u64) {
        self.zf = a == b;
        self.nf = (a as i64) < (b as i64);
    }
}

impl Registers for ToyRegs {
    fn ip(&self) -> u64 {
        self.pc
    }
    fn set_ip(&mut self, ip: u64) {
        self.pc = ip;
    }
    fn sp(&self) -> u64 {
        self.r[SP.index()]
    }
    fn set_sp(&mut self, sp: u64) {
        self.r[SP.index()] = sp;
    }
    fn return_value(&self) -> u64 {
        self.r[0]
    }
    fn set_return_value(&mut self, v: u64) {
        self.r[0] = v;
    }
    fn arg(&self, n: usize) -> Option<u64> {
        if n < 6 {
            Some(self.r[n + 1])
        } else {
            None
        }
    }
}

/// The analysis of one toy instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ToyPlan {
    insn: Insn,
    kind: PlanKind,
}

impl ToyPlan {
    /// The decoded instruction.
    pub fn insn(&self) -> Insn {
        self.insn
    }

    /// How it resumes.
    pub fn kind(&self) -> PlanKind {
        self.kind
    }
}

/// State carried from `prepare_xol` to `finish_step`: the scratch register's saved value for
/// a single-stepped `ldpc`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ToyStepState {
    /// The scratch register's value before the step.
    pub saved_scratch: u64,
}

/// The scratch register for a single-stepped `ldpc rd`: never `rd`, never `sp`.
pub fn ldpc_scratch(rd: Reg) -> Reg {
    if rd == R14 {
        R13
    } else {
        R14
    }
}

fn classify(insn: &Insn) -> Result<PlanKind, Reject> {
    Ok(match insn {
        Insn::Nop
        | Insn::Li { .. }
        | Insn::Jmp { .. }
        | Insn::Jcc { .. }
        | Insn::Call { .. }
        | Insn::Push { .. }
        | Insn::Ja { .. } => PlanKind::Emulate,
        Insn::Halt
        | Insn::Mov { .. }
        | Insn::Alu { .. }
        | Insn::AluI { .. }
        | Insn::Cmp { .. }
        | Insn::CmpI { .. }
        | Insn::Ld { .. }
        | Insn::St { .. }
        | Insn::Pop { .. }
        | Insn::Out { .. } => PlanKind::Boost,
        Insn::Ldpc { .. } | Insn::Ret | Insn::Jr { .. } => PlanKind::SingleStep,
        Insn::Brk => return Err(Reject::Trap),
        Insn::Sys => return Err(Reject::SystemCall),
    })
}

fn put(out: &mut [u8], at: usize, insn: Insn) -> Result<usize, Reject> {
    let enc = insn.encode();
    let b = enc.as_bytes();
    let end = at + b.len();
    if end > out.len() {
        return Err(Reject::SlotTooSmall { need: end as u16 });
    }
    out[at..end].copy_from_slice(b);
    Ok(end)
}

/// The jump from `from` to `to`: `jmp rel16` if it reaches, else `ja abs32`, else a reject.
pub fn jump_back(from: u64, to: u64) -> Result<Insn, Reject> {
    let delta = (to as i128) - (from as i128);
    if let Ok(off) = i16::try_from(delta) {
        return Ok(Insn::Jmp { off });
    }
    if let Ok(target) = u32::try_from(to) {
        return Ok(Insn::Ja { target });
    }
    Err(Reject::RipRelativeOutOfRange {
        distance: delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
    })
}

fn read_u64<M: AddressSpace + ?Sized>(mem: &M, addr: u64) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    mem.read_exact(Addr(addr), &mut b)?;
    Ok(u64::from_le_bytes(b))
}

impl Arch for ToyArch {
    const BREAKPOINT: &'static [u8] = &BRK_BYTES;
    const MAX_INSN_LEN: usize = MAX_INSN_LEN;
    const SLOT_SIZE: usize = 32;

    type Regs = ToyRegs;
    type Plan = ToyPlan;
    type StepState = ToyStepState;

    fn analyze(code: &[u8]) -> Result<ToyPlan, Reject> {
        let insn = Insn::decode(code).map_err(|e| match e {
            DecodeError::Truncated { have } => Reject::Truncated { have },
            DecodeError::Invalid => Reject::Invalid,
        })?;
        let kind = classify(&insn)?;
        Ok(ToyPlan { insn, kind })
    }

    fn plan_kind(plan: &ToyPlan) -> PlanKind {
        plan.kind
    }

    fn insn_len(plan: &ToyPlan) -> usize {
        plan.insn.len()
    }

    fn breakpoint_address(trap_ip: u64) -> Addr {
        Addr(trap_ip)
    }

    fn encode_slot(
        plan: &ToyPlan,
        insn: Addr,
        slot: Addr,
        out: &mut [u8],
    ) -> Result<usize, Reject> {
        let len = plan.insn.len() as u64;
        match plan.kind {
            PlanKind::Emulate => Ok(0),
            PlanKind::Boost => {
                let n = put(out, 0, plan.insn)?;
                let back = jump_back(slot.0.wrapping_add(len), insn.0.wrapping_add(len))?;
                put(out, n, back)
            }
            PlanKind::SingleStep => match plan.insn {
                Insn::Ldpc { rd, .. } => put(
                    out,
                    0,
                    Insn::Ld {
                        rd,
                        base: ldpc_scratch(rd),
                        off: 0,
                    },
                ),
                other => put(out, 0, other),
            },
        }
    }

    fn emulate<M: AddressSpace + ?Sized>(
        plan: &ToyPlan,
        insn: Addr,
        regs: &mut ToyRegs,
        mem: &M,
    ) -> Result<(), MemError> {
        let at = insn.0;
        let next = at.wrapping_add(plan.insn.len() as u64);
        match plan.insn {
            Insn::Nop => regs.pc = next,
            Insn::Li { rd, imm } => {
                regs.set(rd, imm as i64 as u64);
                regs.pc = next;
            }
            Insn::Jmp { off } => regs.pc = at.wrapping_add_signed(off.into()),
            Insn::Jcc { cond, off } => {
                regs.pc = if cond.holds(regs.zf, regs.nf) {
                    at.wrapping_add_signed(off.into())
                } else {
                    next
                };
            }
            Insn::Ja { target } => regs.pc = target.into(),
            Insn::Call { off } => {
                let sp = regs.sp().wrapping_sub(8);
                mem.write(Addr(sp), &next.to_le_bytes())?;
                regs.set_sp(sp);
                regs.pc = at.wrapping_add_signed(off.into());
            }
            Insn::Push { rs } => {
                let v = regs.get(rs);
                let sp = regs.sp().wrapping_sub(8);
                mem.write(Addr(sp), &v.to_le_bytes())?;
                regs.set_sp(sp);
                regs.pc = next;
            }
            // Not an Emulate plan: the core broke its contract. Change nothing.
            _ => return Err(MemError::new(insn, MemErrorKind::Denied)),
        }
        Ok(())
    }

    fn prepare_xol<M: AddressSpace + ?Sized>(
        plan: &ToyPlan,
        insn: Addr,
        slot: Addr,
        regs: &mut ToyRegs,
        state: &mut ToyStepState,
        _mem: &M,
    ) -> Result<(), MemError> {
        if let (PlanKind::SingleStep, Insn::Ldpc { rd, off }) = (plan.kind, plan.insn) {
            let scratch = ldpc_scratch(rd);
            state.saved_scratch = regs.get(scratch);
            regs.set(scratch, insn.0.wrapping_add_signed(off.into()));
        }
        regs.pc = slot.0;
        Ok(())
    }

    fn finish_step<M: AddressSpace + ?Sized>(
        plan: &ToyPlan,
        insn: Addr,
        slot: Addr,
        regs: &mut ToyRegs,
        state: &ToyStepState,
        _mem: &M,
    ) -> Result<(), MemError> {
        let len = plan.insn.len() as u64;
        match plan.insn {
            Insn::Ldpc { rd, .. } => {
                regs.set(ldpc_scratch(rd), state.saved_scratch);
                // The slot's `ld` is 4 bytes long.
                if regs.pc == slot.0.wrapping_add(4) {
                    regs.pc = insn.0.wrapping_add(len);
                }
            }
            _ => {
                if regs.pc == slot.0.wrapping_add(len) {
                    regs.pc = insn.0.wrapping_add(len);
                }
            }
        }
        Ok(())
    }

    fn abort_step(
        plan: &ToyPlan,
        insn: Addr,
        _slot: Addr,
        regs: &mut ToyRegs,
        state: &ToyStepState,
    ) {
        if let (PlanKind::SingleStep, Insn::Ldpc { rd, .. }) = (plan.kind, plan.insn) {
            regs.set(ldpc_scratch(rd), state.saved_scratch);
        }
        regs.pc = insn.0;
    }

    fn return_address<M: AddressSpace + ?Sized>(regs: &ToyRegs, mem: &M) -> Result<Addr, MemError> {
        read_u64(mem, regs.sp()).map(Addr)
    }

    fn set_return_address<M: AddressSpace + ?Sized>(
        regs: &mut ToyRegs,
        mem: &M,
        ret: Addr,
    ) -> Result<(), MemError> {
        mem.write(Addr(regs.sp()), &ret.0.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{op, sample_insns, AluOp, R1, R2};

    fn analyze(i: Insn) -> Result<ToyPlan, Reject> {
        ToyArch::analyze(i.encode().as_bytes())
    }

    #[test]
    fn breakpoint_is_shorter_than_the_longest_insn() {
        assert_eq!(ToyArch::BREAKPOINT, &[op::BRK, 0, 0, 0]);
        const { assert!(<ToyArch as Arch>::BREAKPOINT.len() < <ToyArch as Arch>::MAX_INSN_LEN) };
        assert_eq!(ToyArch::breakpoint_address(0x1234), Addr(0x1234));
    }

    #[test]
    fn every_class_gets_its_plan() {
        use PlanKind::*;
        for insn in sample_insns() {
            let want = match insn {
                Insn::Nop
                | Insn::Li { .. }
                | Insn::Jmp { .. }
                | Insn::Jcc { .. }
                | Insn::Call { .. }
                | Insn::Push { .. }
                | Insn::Ja { .. } => Ok(Emulate),
                Insn::Ldpc { .. } | Insn::Ret | Insn::Jr { .. } => Ok(SingleStep),
                Insn::Brk => Err(Reject::Trap),
                Insn::Sys => Err(Reject::SystemCall),
                _ => Ok(Boost),
            };
            let got = analyze(insn).map(|p| ToyArch::plan_kind(&p));
            assert_eq!(got, want, "{insn}");
            if let Ok(p) = analyze(insn) {
                assert_eq!(ToyArch::insn_len(&p), insn.len());
                assert_eq!(p.insn(), insn);
            }
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(ToyArch::analyze(&[]), Err(Reject::Truncated { have: 0 }));
        assert_eq!(
            ToyArch::analyze(&[op::LI, 1, 0, 0, 5]),
            Err(Reject::Truncated { have: 5 })
        );
        assert_eq!(
            ToyArch::analyze(&[op::NOP, 0]),
            Err(Reject::Truncated { have: 2 })
        );
        assert_eq!(ToyArch::analyze(&[0, 0, 0, 0]), Err(Reject::Invalid));
        assert_eq!(ToyArch::analyze(&[0xee, 0, 0, 0]), Err(Reject::Invalid));
        assert_eq!(ToyArch::analyze(&[op::NOP, 0, 1, 0]), Err(Reject::Invalid));
        assert_eq!(ToyArch::analyze(&BRK_BYTES), Err(Reject::Trap));
        assert_eq!(
            ToyArch::analyze(&[op::SYS, 0, 0, 0]),
            Err(Reject::SystemCall)
        );
        // Trailing bytes beyond the instruction are fine.
        assert!(ToyArch::analyze(&[op::NOP, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_ok());
    }

    #[test]
    fn boost_slot_jumps_back_near_far_and_refuses_beyond() {
        let plan = analyze(Insn::Alu {
            op: AluOp::Add,
            rd: R1,
            rs: R2,
        })
        .unwrap();
        let mut out = [0u8; 32];
        // Near: jmp rel16 from slot+4 to insn+4.
        let n = ToyArch::encode_slot(&plan, Addr(0x1000), Addr(0x2000), &mut out).unwrap();
        assert_eq!(n, 8);
        assert_eq!(Insn::decode(&out[4..]), Ok(Insn::Jmp { off: -0x1000 }));
        // Far: ja.
        let n = ToyArch::encode_slot(&plan, Addr(0x1000), Addr(0x10_0000), &mut out).unwrap();
        assert_eq!(n, 12);
        assert_eq!(Insn::decode(&out[4..]), Ok(Insn::Ja { target: 0x1004 }));
        // Beyond 4 GiB and out of rel16 reach.
        let r = ToyArch::encode_slot(&plan, Addr(0x1_0000_0000), Addr(0x1000), &mut out);
        assert!(matches!(r, Err(Reject::RipRelativeOutOfRange { .. })));
        // A short `out` buffer is refused, never overrun.
        let mut small = [0u8; 6];
        assert_eq!(
            ToyArch::encode_slot(&plan, Addr(0x1000), Addr(0x2000), &mut small),
            Err(Reject::SlotTooSmall { need: 8 })
        );
    }

    #[test]
    fn ldpc_slot_uses_a_scratch_register() {
        let plan = analyze(Insn::Ldpc { rd: R14, off: 16 }).unwrap();
        let mut out = [0u8; 32];
        let n = ToyArch::encode_slot(&plan, Addr(0x1000), Addr(0x9000), &mut out).unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            Insn::decode(&out),
            Ok(Insn::Ld {
                rd: R14,
                base: R13,
                off: 0
            })
        );
    }
}
