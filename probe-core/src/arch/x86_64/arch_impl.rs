//! The [`Arch`] implementation for x86-64.

use static_assertions::const_assert;

use super::plan::Plan;
use super::regs::X86Regs;
use super::step::StepState;
use super::{analyze, emulate, slot, step};
use crate::addr::Addr;
use crate::arch::{Arch, PlanKind, Reject};
use crate::memory::AddressSpace;
use crate::memory::MemError;

/// The x86-64 architecture (64-bit mode, System V ABI), built on iced-x86.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64;

const_assert!(core::mem::size_of::<Plan>() <= 64);

impl Arch for X86_64 {
    const BREAKPOINT: &'static [u8] = &[0xcc];
    const MAX_INSN_LEN: usize = 15;
    const SLOT_SIZE: usize = slot::SLOT_SIZE;

    type Regs = X86Regs;
    type Plan = Plan;
    type StepState = StepState;

    fn analyze(code: &[u8]) -> Result<Plan, Reject> {
        analyze::analyze(code, false)
    }

    fn analyze_privileged(code: &[u8]) -> Result<Plan, Reject> {
        analyze::analyze(code, true)
    }

    fn plan_kind(plan: &Plan) -> PlanKind {
        plan.kind()
    }

    fn boost_instead(plan: &Plan) -> Option<Plan> {
        plan.boost_instead()
    }

    fn insn_len(plan: &Plan) -> usize {
        plan.len()
    }

    fn breakpoint_address(trap_ip: u64) -> Addr {
        Addr(trap_ip.wrapping_sub(1))
    }

    fn encode_slot(plan: &Plan, insn: Addr, slot: Addr, out: &mut [u8]) -> Result<usize, Reject> {
        slot::encode_slot(plan, insn, slot, out)
    }

    fn emulate<M: AddressSpace + ?Sized>(
        plan: &Plan,
        insn: Addr,
        regs: &mut X86Regs,
        mem: &M,
    ) -> Result<(), MemError> {
        emulate::emulate(plan, insn, regs, mem)
    }

    fn prepare_xol<M: AddressSpace + ?Sized>(
        plan: &Plan,
        insn: Addr,
        slot: Addr,
        regs: &mut X86Regs,
        state: &mut StepState,
        _mem: &M,
    ) -> Result<(), MemError> {
        step::prepare_xol(plan, insn, slot, regs, state);
        Ok(())
    }

    fn finish_step<M: AddressSpace + ?Sized>(
        plan: &Plan,
        insn: Addr,
        slot: Addr,
        regs: &mut X86Regs,
        state: &StepState,
        mem: &M,
    ) -> Result<(), MemError> {
        step::finish_step(plan, insn, slot, regs, state, mem)
    }

    fn abort_step(_plan: &Plan, insn: Addr, _slot: Addr, regs: &mut X86Regs, state: &StepState) {
        step::abort_step(insn, regs, state);
    }

    fn return_address<M: AddressSpace + ?Sized>(regs: &X86Regs, mem: &M) -> Result<Addr, MemError> {
        let mut b = [0u8; 8];
        mem.read_exact(Addr(regs.rsp), &mut b)?;
        Ok(Addr(u64::from_le_bytes(b)))
    }

    fn set_return_address<M: AddressSpace + ?Sized>(
        regs: &mut X86Regs,
        mem: &M,
        ret: Addr,
    ) -> Result<(), MemError> {
        mem.write(Addr(regs.rsp), &ret.raw().to_le_bytes())
    }
}
