//! Out-of-line execution: pointing the task at the slot, and the fix-up after a single step.
//!
//! Hit path: no allocation, no panic.

use super::plan::{Op, Plan, RipRel, LOOP_PROBE_REL};
use super::regs::X86Regs;
use super::slot::{relocated, SLOT_SIZE};
use crate::addr::Addr;
use crate::memory::AddressSpace;
use crate::memory::MemError;

/// What `prepare_xol` changed besides rip, for `finish_step` and `abort_step` to undo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepState {
    /// A scratch register was loaded with the RIP-relative operand's address.
    scratch_live: bool,
    /// Its number.
    scratch: u8,
    /// Its value before.
    saved: u64,
}

/// Whether the RIP-relative operand is reached through the scratch register (out of reach).
fn uses_scratch(plan: &Plan, r: &RipRel, insn: Addr, slot: Addr) -> bool {
    relocated(plan, r, insn, slot).is_none()
}

/// Length of the instruction as it sits in the slot.
fn slot_len(plan: &Plan, insn: Addr, slot: Addr) -> usize {
    match plan.op {
        Op::StepRipRel { rip } if uses_scratch(plan, &rip, insn, slot) => usize::from(rip.far_len),
        _ => plan.len(),
    }
}

fn restore(regs: &mut X86Regs, state: &StepState) {
    if state.scratch_live {
        regs.set_gpr(state.scratch, state.saved);
    }
}

pub(crate) fn prepare_xol(
    plan: &Plan,
    insn: Addr,
    slot: Addr,
    regs: &mut X86Regs,
    state: &mut StepState,
) {
    *state = StepState::default();
    if let Op::StepRipRel { rip } = plan.op {
        if uses_scratch(plan, &rip, insn, slot) {
            *state = StepState {
                scratch_live: true,
                scratch: rip.scratch,
                saved: regs.gpr(rip.scratch),
            };
            regs.set_gpr(rip.scratch, rip.target(insn.raw(), plan.len()));
        }
    }
    regs.rip = slot.raw();
}

pub(crate) fn finish_step<M: AddressSpace + ?Sized>(
    plan: &Plan,
    insn: Addr,
    slot: Addr,
    regs: &mut X86Regs,
    state: &StepState,
    mem: &M,
) -> Result<(), MemError> {
    let len = plan.len() as u64;
    let next = insn.raw().wrapping_add(len);
    let s = slot.raw();
    let in_slot = |ip: u64| ip.wrapping_sub(s) < SLOT_SIZE as u64;
    let mut r = *regs;
    restore(&mut r, state);
    match plan.op {
        Op::StepLoop { rel } => {
            if r.rip == s.wrapping_add(len) {
                r.rip = next;
            } else if r.rip == s.wrapping_add(len + u64::from(LOOP_PROBE_REL)) {
                r.rip = next.wrapping_add_signed(i64::from(rel));
            }
        }
        Op::StepCall => {
            // The call pushed the slot's fall-through; make it the real one.
            let mut b = [0u8; 8];
            mem.read_exact(Addr(r.rsp), &mut b)?;
            if u64::from_le_bytes(b) == s.wrapping_add(len) {
                mem.write(Addr(r.rsp), &next.to_le_bytes())?;
            }
        }
        _ => {
            // Fall-through from the slot maps to the fall-through after the instruction; an
            // absolute target (outside the slot) stays.
            if in_slot(r.rip) {
                let end = s.wrapping_add(slot_len(plan, insn, slot) as u64);
                r.rip = next.wrapping_add(r.rip.wrapping_sub(end));
            }
        }
    }
    *regs = r;
    Ok(())
}

pub(crate) fn abort_step(insn: Addr, regs: &mut X86Regs, state: &StepState) {
    restore(regs, state);
    regs.rip = insn.raw();
}
