//! The out-of-line slot encoder.
//!
//! - Boost: the instruction (RIP-relative displacement re-aimed from the slot) and a jump back
//!   to the instruction after the probed one. Out of ±2 GiB reach, the operand is addressed
//!   through a scratch register instead, stepping over the red zone first:
//!   `lea rsp,[rsp-128]; push s; mov s, target; insn [s]; pop s; lea rsp,[rsp+128]; jmp back`
//!   (none of these touch the flags).
//! - Single-step: the instruction alone (relocated, or in its `[scratch]` form, whose register
//!   `prepare_xol` loads), or a `loop`/`jrcxz` aimed at a known spot.
//!
//! The jump back is `jmp rel32` when in reach, else `jmp qword [rip+0]; dq target`.

use static_assertions::const_assert;

use super::plan::{Op, Plan, RipRel, LOOP_PROBE_REL};
use crate::addr::Addr;
use crate::arch::Reject;

/// Bytes of one slot.
pub(crate) const SLOT_SIZE: usize = 64;

/// `lea rsp, [rsp-128]`: step over the red zone.
const LEA_RSP_DOWN: [u8; 5] = [0x48, 0x8d, 0x64, 0x24, 0x80];
/// `lea rsp, [rsp+128]`.
const LEA_RSP_UP: [u8; 8] = [0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00];
/// `int3`, the filler after a single-stepped instruction.
const INT3: u8 = 0xcc;
/// Longest jump back: `jmp qword [rip+0]` and the 8-byte target.
const FAR_JMP_LEN: usize = 14;
/// Longest boost: the scratch-register sequence around a 15-byte instruction.
const WORST_BOOST: usize = LEA_RSP_DOWN.len() + 2 + 10 + 15 + 2 + LEA_RSP_UP.len() + FAR_JMP_LEN;
const_assert!(WORST_BOOST <= SLOT_SIZE);
// Longest single-step slot: a `loop` and its two landing bytes.
const_assert!(15 + 2 <= SLOT_SIZE);

/// A bounded writer over the slot buffer: never writes past it, remembers how much was needed.
struct Writer<'a> {
    out: &'a mut [u8],
    n: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        let end = self.n.saturating_add(b.len());
        if let Some(dst) = self.out.get_mut(self.n..end) {
            dst.copy_from_slice(b);
        }
        self.n = end;
    }

    fn done(self) -> Result<usize, Reject> {
        if self.n > self.out.len() {
            Err(Reject::SlotTooSmall {
                need: u16::try_from(self.n).unwrap_or(u16::MAX),
            })
        } else {
            Ok(self.n)
        }
    }
}

/// The displacement of a `rel32` from `from` (the end of the instruction) to `to`, if in reach.
fn rel32(from: u64, to: u64) -> Option<i32> {
    i32::try_from(to.wrapping_sub(from) as i64).ok()
}

/// Append a jump from the writer's position (in the slot at `slot`) to `target`.
fn jump_back(w: &mut Writer<'_>, slot: Addr, target: u64) {
    let here = slot.raw().wrapping_add(w.n as u64);
    match rel32(here.wrapping_add(5), target) {
        Some(r) => {
            w.put(&[0xe9]);
            w.put(&r.to_le_bytes());
        }
        None => {
            w.put(&[0xff, 0x25, 0, 0, 0, 0]);
            w.put(&target.to_le_bytes());
        }
    }
}

/// The instruction's bytes with the RIP-relative displacement re-aimed from `slot`, if the
/// operand is within reach of it.
pub(crate) fn relocated(plan: &Plan, r: &RipRel, insn: Addr, slot: Addr) -> Option<[u8; 15]> {
    let len = plan.len();
    let target = r.target(insn.raw(), len);
    let disp = rel32(slot.raw().wrapping_add(len as u64), target)?;
    let mut b = plan.bytes;
    let off = usize::from(r.disp_off);
    b.get_mut(off..off + 4)?
        .copy_from_slice(&disp.to_le_bytes());
    Some(b)
}

fn out_of_range(r: &RipRel, insn: Addr, slot: Addr, len: usize) -> Reject {
    Reject::RipRelativeOutOfRange {
        distance: r.target(insn.raw(), len).wrapping_sub(slot.raw()) as i64,
    }
}

fn push_reg(n: u8) -> ([u8; 2], usize) {
    if n < 8 {
        ([0x50 + n, 0], 1)
    } else {
        ([0x41, 0x50 + (n & 7)], 2)
    }
}

fn pop_reg(n: u8) -> ([u8; 2], usize) {
    if n < 8 {
        ([0x58 + n, 0], 1)
    } else {
        ([0x41, 0x58 + (n & 7)], 2)
    }
}

/// `mov r64, imm64`.
fn mov_imm64(n: u8, v: u64) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[0] = 0x48 | ((n >> 3) & 1);
    b[1] = 0xb8 + (n & 7);
    b[2..].copy_from_slice(&v.to_le_bytes());
    b
}

/// Encode the slot for `plan` (instruction at `insn`, slot at `slot`) into `out`.
pub(crate) fn encode_slot(
    plan: &Plan,
    insn: Addr,
    slot: Addr,
    out: &mut [u8],
) -> Result<usize, Reject> {
    let len = plan.len();
    let next = insn.raw().wrapping_add(len as u64);
    let mut w = Writer { out, n: 0 };
    match plan.op {
        Op::Boost { rip: None } => {
            w.put(plan.bytes());
            jump_back(&mut w, slot, next);
        }
        Op::Boost { rip: Some(r) } => {
            if let Some(b) = relocated(plan, &r, insn, slot) {
                w.put(&b[..len]);
            } else if r.far_len != 0 {
                let (push, pn) = push_reg(r.scratch);
                let (pop, qn) = pop_reg(r.scratch);
                w.put(&LEA_RSP_DOWN);
                w.put(&push[..pn]);
                w.put(&mov_imm64(r.scratch, r.target(insn.raw(), len)));
                w.put(r.far_bytes());
                w.put(&pop[..qn]);
                w.put(&LEA_RSP_UP);
            } else {
                return Err(out_of_range(&r, insn, slot, len));
            }
            jump_back(&mut w, slot, next);
        }
        Op::StepLoop { .. } => {
            let mut b = plan.bytes;
            if let Some(last) = b.get_mut(len.wrapping_sub(1)) {
                *last = LOOP_PROBE_REL;
            }
            w.put(&b[..len]);
            w.put(&[INT3; LOOP_PROBE_REL as usize]);
        }
        Op::StepRipRel { rip: r } => {
            if let Some(b) = relocated(plan, &r, insn, slot) {
                w.put(&b[..len]);
            } else if r.far_len != 0 {
                w.put(r.far_bytes());
            } else {
                return Err(out_of_range(&r, insn, slot, len));
            }
            w.put(&[INT3]);
        }
        Op::StepCall | Op::StepPrivileged => {
            w.put(plan.bytes());
            w.put(&[INT3]);
        }
        // Emulated: no slot.
        _ => {}
    }
    w.done()
}

/// Encode into `out`, for a trampoline at `tramp`, the instructions a jump patch displaces:
/// the `displaced` bytes at offset `at` of the function `func` (loaded at `func_addr`), each
/// relocated to where it lands (RIP-relative operands re-aimed, which must stay in reach:
/// the trampoline goes within +/-2 GiB of the function, as slots do), then a jump back to
/// the first instruction after them. The caller checked them with `jump::jump_patch`.
pub(crate) fn encode_displaced(
    func: &[u8],
    at: usize,
    displaced: usize,
    func_addr: Addr,
    tramp: Addr,
    out: &mut [u8],
) -> Result<usize, Reject> {
    let mut w = Writer { out, n: 0 };
    let mut off = at;
    let end = at.checked_add(displaced).ok_or(Reject::Invalid)?;
    while off < end {
        let code = func.get(off..).ok_or(Reject::Truncated { have: 0 })?;
        let plan = super::analyze::analyze(code, false)?;
        let len = plan.len();
        let insn = Addr(func_addr.raw().wrapping_add(off as u64));
        let here = Addr(tramp.raw().wrapping_add(w.n as u64));
        match plan.op {
            Op::Nop | Op::Push { .. } | Op::PushImm { .. } | Op::Pop { .. } | Op::MovRR { .. } => {
                w.put(plan.bytes())
            }
            Op::Boost { rip: None } => w.put(plan.bytes()),
            Op::Boost { rip: Some(r) } => match relocated(&plan, &r, insn, here) {
                Some(b) => w.put(&b[..len]),
                None => return Err(out_of_range(&r, insn, here, len)),
            },
            Op::LeaRip { disp, .. } => {
                // `lea r, [rip+disp32]`: the displacement is the last four bytes.
                let target = insn
                    .raw()
                    .wrapping_add(len as u64)
                    .wrapping_add_signed(i64::from(disp));
                let new = rel32(here.raw().wrapping_add(len as u64), target).ok_or(
                    Reject::RipRelativeOutOfRange {
                        distance: target.wrapping_sub(here.raw()) as i64,
                    },
                )?;
                let mut b = plan.bytes;
                b.get_mut(len - 4..len)
                    .ok_or(Reject::Invalid)?
                    .copy_from_slice(&new.to_le_bytes());
                w.put(&b[..len]);
            }
            _ => return Err(Reject::Unsupported),
        }
        off += len;
    }
    if off != end {
        // The displaced length does not end on an instruction boundary.
        return Err(Reject::Invalid);
    }
    jump_back(&mut w, tramp, func_addr.raw().wrapping_add(end as u64));
    w.done()
}
