//! Instruction analysis: bytes to a [`Plan`], with the iced-x86 decoder.
//!
//! Runs at registration time only and may allocate (iced's encoder does, for the
//! scratch-register form of a RIP-relative instruction). The analysis is address-independent:
//! it decodes at address 0 and keeps displacements, never absolute addresses.

use iced_x86::{
    ConditionCode, Decoder, DecoderError, DecoderOptions, Encoder, FlowControl, Instruction,
    InstructionInfoFactory, Mnemonic, OpKind, Register,
};

use super::plan::{MemRef, Op, Plan, RipRel, Seg, NO_REG};
use super::regs::gpr;
use crate::arch::Reject;

/// Longest x86 instruction.
const MAX_LEN: usize = 15;

/// The legacy prefixes in front of an instruction that the analysis cares about.
#[derive(Clone, Copy, Debug, Default)]
struct Prefixes {
    /// `66`: operand-size override.
    opsize: bool,
    /// `67`: address-size override.
    addrsize: bool,
}

/// Scan the legacy prefixes (and a REX prefix) at the start of `bytes`.
fn prefixes(bytes: &[u8]) -> Prefixes {
    let mut p = Prefixes::default();
    for &b in bytes {
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f => {}
            _ => break,
        }
    }
    p
}

/// The encoding number (0 = rax ... 15 = r15) of a 64-bit general-purpose register.
fn gpr64(r: Register) -> Option<u8> {
    let n = (r as u32).checked_sub(Register::RAX as u32)?;
    if n < 16 {
        u8::try_from(n).ok()
    } else {
        None
    }
}

/// The 64-bit register with encoding number `n`.
fn reg64(n: u8) -> Register {
    const REGS: [Register; 16] = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    REGS.get(usize::from(n)).copied().unwrap_or(Register::None)
}

/// The condition nibble (as in `0f 80+cc`) of a conditional jump.
fn cc_nibble(c: ConditionCode) -> Option<u8> {
    Some(match c {
        ConditionCode::o => 0,
        ConditionCode::no => 1,
        ConditionCode::b => 2,
        ConditionCode::ae => 3,
        ConditionCode::e => 4,
        ConditionCode::ne => 5,
        ConditionCode::be => 6,
        ConditionCode::a => 7,
        ConditionCode::s => 8,
        ConditionCode::ns => 9,
        ConditionCode::p => 10,
        ConditionCode::np => 11,
        ConditionCode::l => 12,
        ConditionCode::ge => 13,
        ConditionCode::le => 14,
        ConditionCode::g => 15,
        _ => return None,
    })
}

/// The displacement of a relative branch decoded at address 0.
fn branch_rel(ins: &Instruction) -> i32 {
    ins.near_branch64().wrapping_sub(ins.len() as u64) as i64 as i32
}

/// A 64-bit-addressed memory operand for the emulator, if it is one the emulator handles.
fn mem_ref(ins: &Instruction, p: Prefixes) -> Option<MemRef> {
    if p.addrsize {
        return None;
    }
    let base = match ins.memory_base() {
        Register::None => NO_REG,
        Register::RIP => MemRef::RIP,
        r => gpr64(r)?,
    };
    let index = match ins.memory_index() {
        Register::None => NO_REG,
        r => gpr64(r)?,
    };
    let seg = match ins.segment_prefix() {
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => Seg::Flat,
    };
    let disp = if base == MemRef::RIP {
        branch_rel_disp(ins)
    } else {
        ins.memory_displacement64() as i64 as i32
    };
    let scale = u8::try_from(ins.memory_index_scale()).ok()?;
    Some(MemRef {
        base,
        index,
        scale,
        seg,
        disp,
    })
}

/// The RIP-relative displacement of an instruction decoded at address 0.
fn branch_rel_disp(ins: &Instruction) -> i32 {
    ins.memory_displacement64().wrapping_sub(ins.len() as u64) as i64 as i32
}

/// Registers an instruction uses (read or written, explicitly or implicitly), as a bit set of
/// 64-bit GPR numbers.
fn used_gprs(ins: &Instruction) -> u16 {
    let mut f = InstructionInfoFactory::new();
    let info = f.info(ins);
    let mut set = 0u16;
    for u in info.used_registers() {
        if let Some(n) = gpr64(u.register().full_register()) {
            set |= 1 << n;
        }
    }
    set
}

/// Rewrite a RIP-relative instruction to address `[scratch]` instead: the form used when the
/// slot is out of ±2 GiB reach of the operand. `None` when iced cannot encode it.
fn far_form(ins: &Instruction, scratch: u8) -> Option<([u8; MAX_LEN], u8)> {
    let mut f = *ins;
    f.set_memory_base(reg64(scratch));
    f.set_memory_index(Register::None);
    f.set_memory_displacement64(0);
    f.set_memory_displ_size(0);
    let mut enc = Encoder::new(64);
    let n = enc.encode(&f, 0).ok()?;
    let buf = enc.take_buffer();
    if n == 0 || n > MAX_LEN || buf.len() != n {
        return None;
    }
    // Check the rewrite: same instruction, addressing through the scratch register only.
    let mut dec = Decoder::try_with_ip(64, &buf, 0, DecoderOptions::NONE).ok()?;
    let back = dec.decode();
    if back.is_invalid()
        || back.code() != ins.code()
        || back.len() != n
        || back.memory_base() != reg64(scratch)
        || back.memory_index() != Register::None
        || back.memory_displacement64() != 0
    {
        return None;
    }
    let mut out = [0u8; MAX_LEN];
    out[..n].copy_from_slice(&buf);
    Some((out, n as u8))
}

/// Describe the RIP-relative operand of `ins` (decoded from `bytes`).
fn rip_rel(ins: &Instruction, dec: &Decoder<'_>, bytes: &[u8]) -> Result<RipRel, Reject> {
    let co = dec.get_constant_offsets(ins);
    let off = co.displacement_offset();
    if !co.has_displacement() || co.displacement_size() != 4 {
        return Err(Reject::Unsupported);
    }
    let raw = bytes.get(off..off + 4).ok_or(Reject::Unsupported)?;
    let disp = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if disp != branch_rel_disp(ins) {
        return Err(Reject::Unsupported);
    }
    let used = used_gprs(ins);
    // Prefer registers that need no REX prefix; never rsp (the stack), and rbp last.
    const ORDER: [u8; 14] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 15, 12, 5];
    let mut scratch = None;
    for &r in &ORDER {
        if r != gpr::RSP && used & (1 << r) == 0 {
            scratch = Some(r);
            break;
        }
    }
    let scratch = scratch.ok_or(Reject::Unsupported)?;
    let (far, far_len) = far_form(ins, scratch).unwrap_or(([0; MAX_LEN], 0));
    Ok(RipRel {
        disp_off: off as u8,
        disp,
        scratch,
        far_len,
        far,
    })
}

/// Analyse the instruction at the start of `code` (at most 15 bytes are looked at), for code
/// that runs in user mode (`privileged` false) or in ring 0.
pub(crate) fn analyze(code: &[u8], privileged: bool) -> Result<Plan, Reject> {
    let code = &code[..code.len().min(MAX_LEN)];
    if code.is_empty() {
        return Err(Reject::Truncated { have: 0 });
    }
    let mut dec =
        Decoder::try_with_ip(64, code, 0, DecoderOptions::NONE).map_err(|_| Reject::Invalid)?;
    let ins = dec.decode();
    if ins.is_invalid() {
        return Err(match dec.last_error() {
            DecoderError::NoMoreBytes => Reject::Truncated {
                have: code.len() as u8,
            },
            _ => Reject::Invalid,
        });
    }
    let len = ins.len();
    if len == 0 || len > code.len() {
        return Err(Reject::Invalid);
    }
    let mut bytes = [0u8; MAX_LEN];
    bytes[..len].copy_from_slice(&code[..len]);
    let op = match classify(&ins, &dec, &bytes[..len]) {
        Err(Reject::Privileged) if privileged => privileged_op(&ins)?,
        r => r?,
    };
    Ok(Plan {
        bytes,
        len: len as u8,
        op,
    })
}

/// Refusals that do not depend on the operands.
fn refuse(ins: &Instruction) -> Result<(), Reject> {
    use Mnemonic as M;
    match ins.mnemonic() {
        M::Int3 | M::Int1 | M::Int | M::Into | M::Ud0 | M::Ud1 | M::Ud2 => Err(Reject::Trap),
        M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
            Err(Reject::PortIo)
        }
        M::Syscall | M::Sysenter | M::Sysexit | M::Sysexitq | M::Sysret | M::Sysretq => {
            Err(Reject::SystemCall)
        }
        M::Mov | M::Pop
            if ins.op0_kind() == OpKind::Register && ins.op0_register() == Register::SS =>
        {
            Err(Reject::StackSegmentLoad)
        }
        M::Hlt | M::Cli | M::Sti | M::Vmcall | M::Vmmcall => Err(Reject::Privileged),
        _ if ins.is_privileged() => Err(Reject::Privileged),
        // Far transfers, interrupt returns and transactions: nothing that can run from a slot.
        M::Iret | M::Iretd | M::Iretq | M::Retf | M::Xbegin | M::Xabort | M::Xend | M::Lss => {
            Err(Reject::Unsupported)
        }
        _ => Ok(()),
    }
}

/// Ring 0: how a privileged instruction resumes. `cli`/`sti` are emulated (they only change
/// IF, which the single step would otherwise fight over); the others are single-stepped from
/// their slot, which a platform does with interrupts off: so `hlt` (which would wait for an
/// interrupt forever), hypervisor calls and RIP-relative operands stay refused.
fn privileged_op(ins: &Instruction) -> Result<Op, Reject> {
    use Mnemonic as M;
    match ins.mnemonic() {
        M::Cli => Ok(Op::Cli),
        M::Sti => Ok(Op::Sti),
        M::Hlt | M::Vmcall | M::Vmmcall => Err(Reject::Privileged),
        _ if ins.is_ip_rel_memory_operand() => Err(Reject::Unsupported),
        _ => Ok(Op::StepPrivileged),
    }
}

fn classify(ins: &Instruction, dec: &Decoder<'_>, bytes: &[u8]) -> Result<Op, Reject> {
    use iced_x86::Code as C;
    refuse(ins)?;
    let p = prefixes(bytes);
    let fc = ins.flow_control();
    let branchy = !matches!(fc, FlowControl::Next);
    if branchy && p.opsize {
        // 16-bit operand size on a near branch truncates rip on AMD and is ignored on Intel.
        return Err(Reject::Prefix);
    }
    let op0 = || gpr64(ins.op0_register());
    let op = match ins.code() {
        C::Nopw
        | C::Nopd
        | C::Nopq
        | C::Nop_rm16
        | C::Nop_rm32
        | C::Nop_rm64
        | C::Endbr32
        | C::Endbr64 => Op::Nop,
        C::Jmp_rel8_64 | C::Jmp_rel32_64 => Op::Jmp {
            rel: branch_rel(ins),
        },
        C::Call_rel32_64 => Op::Call {
            rel: branch_rel(ins),
        },
        _ if ins.is_jcc_short_or_near() => {
            let cc = cc_nibble(ins.condition_code()).ok_or(Reject::Unsupported)?;
            Op::Jcc {
                cc,
                rel: branch_rel(ins),
            }
        }
        C::Push_r64 => Op::Push {
            reg: op0().ok_or(Reject::Unsupported)?,
        },
        C::Pushq_imm8 | C::Pushq_imm32 => Op::PushImm {
            imm: ins.immediate(0) as i64 as i32,
        },
        C::Pop_r64 => Op::Pop {
            reg: op0().ok_or(Reject::Unsupported)?,
        },
        C::Mov_rm64_r64 | C::Mov_r64_rm64
            if ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register =>
        {
            match (op0(), gpr64(ins.op1_register())) {
                (Some(dst), Some(src)) => Op::MovRR { dst, src },
                _ => return Err(Reject::Unsupported),
            }
        }
        C::Lea_r64_m | C::Lea_r32_m if ins.memory_base() == Register::RIP => Op::LeaRip {
            dst: gpr64(ins.op0_register().full_register()).ok_or(Reject::Unsupported)?,
            disp: branch_rel_disp(ins),
            wide: ins.code() == C::Lea_r64_m,
        },
        C::Retnq => Op::Ret { pop: 0 },
        C::Retnq_imm16 => Op::Ret {
            pop: ins.immediate16(),
        },
        C::Jmp_rm64 | C::Call_rm64 => {
            let call = ins.code() == C::Call_rm64;
            if ins.op0_kind() == OpKind::Register {
                let reg = op0().ok_or(Reject::Unsupported)?;
                if call {
                    Op::CallReg { reg }
                } else {
                    Op::JmpReg { reg }
                }
            } else if ins.memory_base() == Register::EIP {
                return Err(Reject::Unsupported);
            } else if let Some(mem) = mem_ref(ins, p) {
                if call {
                    Op::CallMem { mem }
                } else {
                    Op::JmpMem { mem }
                }
            } else if call {
                Op::StepCall
            } else {
                Op::Boost { rip: None }
            }
        }
        _ if ins.is_loop() || ins.is_loopcc() || ins.is_jcx_short() => {
            // rel8 is always the last byte.
            Op::StepLoop {
                rel: branch_rel(ins) as i8,
            }
        }
        _ => match fc {
            FlowControl::Next => {
                if ins.memory_base() == Register::EIP {
                    return Err(Reject::Unsupported);
                }
                if ins.is_ip_rel_memory_operand() {
                    let rip = rip_rel(ins, dec, bytes)?;
                    if used_gprs(ins) & (1 << gpr::RSP) != 0 || ins.is_stack_instruction() {
                        Op::StepRipRel { rip }
                    } else {
                        Op::Boost { rip: Some(rip) }
                    }
                } else {
                    Op::Boost { rip: None }
                }
            }
            FlowControl::Interrupt | FlowControl::Exception => return Err(Reject::Trap),
            _ => return Err(Reject::Unsupported),
        },
    };
    Ok(op)
}
