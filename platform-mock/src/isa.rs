//! The toy instruction set: opcodes, the typed representation [`Insn`], encoding and decoding.
//!
//! Every instruction starts with an opcode byte. Four-byte instructions carry a register byte
//! (`ra` in the low nibble, `rb` in the high nibble) and a little-endian 16-bit immediate;
//! eight-byte instructions (`li`, `ldpc`, `ja`) carry a register byte, two zero bytes and a
//! little-endian 32-bit immediate. Fields an instruction does not use must be zero, so every
//! instruction has exactly one encoding and stray bytes decode as [`DecodeError::Invalid`].
//!
//! | opcode | mnemonic            | len | semantics                                          |
//! |--------|---------------------|-----|----------------------------------------------------|
//! | `0x01` | `nop`               | 4   |                                                    |
//! | `0x02` | `halt`              | 4   | the task exits with code `r0`                      |
//! | `0x03` | `li ra, imm32`      | 8   | `ra = sext(imm32)`                                 |
//! | `0x04` | `mov ra, rb`        | 4   | `ra = rb`                                          |
//! | `0x10`-`0x15` | `add/sub/mul/and/or/xor ra, rb` | 4 | `ra = ra op rb`, sets flags          |
//! | `0x18`-`0x1d` | `addi/.../xori ra, imm16` | 4 | `ra = ra op sext(imm16)`, sets flags       |
//! | `0x20` | `cmp ra, rb`        | 4   | flags of `ra - rb` (`N` = signed `ra < rb`)        |
//! | `0x21` | `cmpi ra, imm16`    | 4   | flags of `ra - sext(imm16)`                        |
//! | `0x28` | `ld ra, [rb + imm16]` | 4 | `ra = mem64[rb + sext(imm16)]`                     |
//! | `0x29` | `st ra, [rb + imm16]` | 4 | `mem64[rb + sext(imm16)] = ra`                     |
//! | `0x2a` | `ldpc ra, imm32`    | 8   | `ra = mem64[pc + sext(imm32)]` (pc = this insn)    |
//! | `0x30` | `jmp rel16`         | 4   | `pc = pc + sext(rel16)` (pc = this insn)           |
//! | `0x31` | `jz rel16`          | 4   | jump if `Z`                                        |
//! | `0x32` | `jnz rel16`         | 4   | jump if not `Z`                                    |
//! | `0x33` | `jlt rel16`         | 4   | jump if `N`                                        |
//! | `0x34` | `call rel16`        | 4   | push `pc + 4`, jump                                |
//! | `0x35` | `ret`               | 4   | pop `pc`                                           |
//! | `0x36` | `jr ra`             | 4   | `pc = ra`                                          |
//! | `0x37` | `ja abs32`          | 8   | `pc = zext(abs32)`                                 |
//! | `0x38` | `push ra`           | 4   | `sp -= 8; mem64[sp] = ra` (old value of `ra`)      |
//! | `0x39` | `pop ra`            | 4   | `v = mem64[sp]; sp += 8; ra = v`                   |
//! | `0x40` | `out ra`            | 4   | append `ra` to the task's output                   |
//! | `0x41` | `sys`               | 4   | system call (the platform handles it)              |
//! | `0xcc` | `brk`               | 4   | breakpoint trap; reports `pc` = its own address    |
//!
//! Words in memory are 8 bytes, little-endian, unaligned accesses allowed. Relative branches
//! are relative to the branch's own address, not to the next instruction.

use core::fmt;

/// Longest instruction, in bytes.
pub const MAX_INSN_LEN: usize = 8;
/// Shortest instruction, in bytes.
pub const MIN_INSN_LEN: usize = 4;
/// The breakpoint instruction's encoding.
pub const BRK_BYTES: [u8; 4] = [op::BRK, 0, 0, 0];

/// Opcode bytes.
pub mod op {
    /// `nop`
    pub const NOP: u8 = 0x01;
    /// `halt`
    pub const HALT: u8 = 0x02;
    /// `li ra, imm32`
    pub const LI: u8 = 0x03;
    /// `mov ra, rb`
    pub const MOV: u8 = 0x04;
    /// First register-register ALU opcode (`add`); `AluOp as u8` is added to it.
    pub const ALU: u8 = 0x10;
    /// First register-immediate ALU opcode (`addi`); `AluOp as u8` is added to it.
    pub const ALUI: u8 = 0x18;
    /// `cmp ra, rb`
    pub const CMP: u8 = 0x20;
    /// `cmpi ra, imm16`
    pub const CMPI: u8 = 0x21;
    /// `ld ra, [rb + imm16]`
    pub const LD: u8 = 0x28;
    /// `st ra, [rb + imm16]`
    pub const ST: u8 = 0x29;
    /// `ldpc ra, imm32`
    pub const LDPC: u8 = 0x2a;
    /// `jmp rel16`
    pub const JMP: u8 = 0x30;
    /// `jz rel16`
    pub const JZ: u8 = 0x31;
    /// `jnz rel16`
    pub const JNZ: u8 = 0x32;
    /// `jlt rel16`
    pub const JLT: u8 = 0x33;
    /// `call rel16`
    pub const CALL: u8 = 0x34;
    /// `ret`
    pub const RET: u8 = 0x35;
    /// `jr ra`
    pub const JR: u8 = 0x36;
    /// `ja abs32`
    pub const JA: u8 = 0x37;
    /// `push ra`
    pub const PUSH: u8 = 0x38;
    /// `pop ra`
    pub const POP: u8 = 0x39;
    /// `out ra`
    pub const OUT: u8 = 0x40;
    /// `sys`
    pub const SYS: u8 = 0x41;
    /// `brk`
    pub const BRK: u8 = 0xcc;
}

/// A register, `r0` to `r15`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reg(u8);

impl Reg {
    /// Register `n`, if `n < 16`.
    pub const fn new(n: u8) -> Option<Reg> {
        if n < 16 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register number, usable as an index into [`ToyRegs::r`](crate::ToyRegs::r).
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    const fn nibble(n: u8) -> Reg {
        Reg(n & 0xf)
    }
}

impl fmt::Debug for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 15 {
            write!(f, "sp")
        } else {
            write!(f, "r{}", self.0)
        }
    }
}

macro_rules! regs {
    ($($name:ident = $n:expr),* $(,)?) => {
        $(
            #[doc = concat!("Register `r", stringify!($n), "`.")]
            pub const $name: Reg = Reg($n);
        )*
    };
}
regs!(
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
    R6 = 6,
    R7 = 7
);
regs!(
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15
);
/// The stack pointer, `r15`.
pub const SP: Reg = R15;

/// A two-operand ALU operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AluOp {
    /// Wrapping addition.
    Add = 0,
    /// Wrapping subtraction.
    Sub = 1,
    /// Wrapping multiplication.
    Mul = 2,
    /// Bitwise and.
    And = 3,
    /// Bitwise or.
    Or = 4,
    /// Bitwise exclusive or.
    Xor = 5,
}

impl AluOp {
    /// Every operation, in opcode order.
    pub const ALL: [AluOp; 6] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::And,
        AluOp::Or,
        AluOp::Xor,
    ];

    /// `a op b`.
    pub const fn apply(self, a: u64, b: u64) -> u64 {
        match self {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::And => a & b,
            AluOp::Or => a | b,
            AluOp::Xor => a ^ b,
        }
    }

    const fn from_index(i: u8) -> Option<AluOp> {
        match i {
            0 => Some(AluOp::Add),
            1 => Some(AluOp::Sub),
            2 => Some(AluOp::Mul),
            3 => Some(AluOp::And),
            4 => Some(AluOp::Or),
            5 => Some(AluOp::Xor),
            _ => None,
        }
    }
}

/// A branch condition on the flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cond {
    /// Zero flag set (`jz`).
    Z,
    /// Zero flag clear (`jnz`).
    Nz,
    /// Negative flag set (`jlt`).
    Lt,
}

impl Cond {
    /// Whether the condition holds for flags `zf`, `nf`.
    pub const fn holds(self, zf: bool, nf: bool) -> bool {
        match self {
            Cond::Z => zf,
            Cond::Nz => !zf,
            Cond::Lt => nf,
        }
    }
}

/// One decoded instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Insn {
    /// `nop`
    Nop,
    /// `halt`: exit with code `r0`.
    Halt,
    /// `li rd, imm32`
    Li {
        /// Destination.
        rd: Reg,
        /// Sign-extended immediate.
        imm: i32,
    },
    /// `mov rd, rs`
    Mov {
        /// Destination.
        rd: Reg,
        /// Source.
        rs: Reg,
    },
    /// `op rd, rs`
    Alu {
        /// Operation.
        op: AluOp,
        /// Destination and first operand.
        rd: Reg,
        /// Second operand.
        rs: Reg,
    },
    /// `opi rd, imm16`
    AluI {
        /// Operation.
        op: AluOp,
        /// Destination and first operand.
        rd: Reg,
        /// Sign-extended second operand.
        imm: i16,
    },
    /// `cmp ra, rb`
    Cmp {
        /// First operand.
        ra: Reg,
        /// Second operand.
        rb: Reg,
    },
    /// `cmpi ra, imm16`
    CmpI {
        /// First operand.
        ra: Reg,
        /// Sign-extended second operand.
        imm: i16,
    },
    /// `ld rd, [base + off]`
    Ld {
        /// Destination.
        rd: Reg,
        /// Base address register.
        base: Reg,
        /// Signed offset.
        off: i16,
    },
    /// `st rs, [base + off]`
    St {
        /// Value stored.
        rs: Reg,
        /// Base address register.
        base: Reg,
        /// Signed offset.
        off: i16,
    },
    /// `ldpc rd, off`: load the word at this instruction's address plus `off`.
    Ldpc {
        /// Destination.
        rd: Reg,
        /// Signed offset from this instruction.
        off: i32,
    },
    /// `jmp off`
    Jmp {
        /// Signed offset from this instruction.
        off: i16,
    },
    /// `jz`/`jnz`/`jlt off`
    Jcc {
        /// Condition.
        cond: Cond,
        /// Signed offset from this instruction.
        off: i16,
    },
    /// `call off`
    Call {
        /// Signed offset from this instruction.
        off: i16,
    },
    /// `ret`
    Ret,
    /// `jr rs`
    Jr {
        /// Target register.
        rs: Reg,
    },
    /// `ja target`
    Ja {
        /// Absolute target (zero-extended).
        target: u32,
    },
    /// `push rs`
    Push {
        /// Value pushed.
        rs: Reg,
    },
    /// `pop rd`
    Pop {
        /// Destination.
        rd: Reg,
    },
    /// `out rs`
    Out {
        /// Value printed.
        rs: Reg,
    },
    /// `sys`
    Sys,
    /// `brk`
    Brk,
}

/// Why bytes do not decode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecodeError {
    /// The instruction needs more bytes than were given.
    Truncated {
        /// How many bytes were given.
        have: u8,
    },
    /// Unknown opcode or a non-zero unused field.
    Invalid,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { have } => {
                write!(f, "instruction truncated after {have} bytes")
            }
            DecodeError::Invalid => write!(f, "invalid instruction"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// The length of the instruction starting with `opcode`, or `None` for an unknown opcode.
pub const fn insn_len(opcode: u8) -> Option<usize> {
    match opcode {
        op::LI | op::LDPC | op::JA => Some(8),
        op::NOP
        | op::HALT
        | op::MOV
        | op::CMP
        | op::CMPI
        | op::LD
        | op::ST
        | op::JMP
        | op::JZ
        | op::JNZ
        | op::JLT
        | op::CALL
        | op::RET
        | op::JR
        | op::PUSH
        | op::POP
        | op::OUT
        | op::SYS
        | op::BRK => Some(4),
        o if o >= op::ALU && o < op::ALU + 6 => Some(4),
        o if o >= op::ALUI && o < op::ALUI + 6 => Some(4),
        _ => None,
    }
}

/// An encoded instruction: up to [`MAX_INSN_LEN`] bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Encoded {
    bytes: [u8; MAX_INSN_LEN],
    len: u8,
}

impl Encoded {
    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl Insn {
    /// Decode the instruction at the start of `code` (extra bytes are ignored).
    pub fn decode(code: &[u8]) -> Result<Insn, DecodeError> {
        let have = code.len().min(u8::MAX as usize) as u8;
        let Some(&opcode) = code.first() else {
            return Err(DecodeError::Truncated { have: 0 });
        };
        let len = insn_len(opcode).ok_or(DecodeError::Invalid)?;
        if code.len() < len {
            return Err(DecodeError::Truncated { have });
        }
        let regs = code[1];
        let ra = Reg::nibble(regs);
        let rb = Reg::nibble(regs >> 4);
        if len == 8 {
            if code[2] != 0 || code[3] != 0 || regs > 0xf {
                return Err(DecodeError::Invalid);
            }
            let imm = u32::from_le_bytes([code[4], code[5], code[6], code[7]]);
            return Ok(match opcode {
                op::LI => Insn::Li {
                    rd: ra,
                    imm: imm as i32,
                },
                op::LDPC => Insn::Ldpc {
                    rd: ra,
                    off: imm as i32,
                },
                _ if regs != 0 => return Err(DecodeError::Invalid),
                _ => Insn::Ja { target: imm },
            });
        }
        let imm = i16::from_le_bytes([code[2], code[3]]);
        // What the instruction uses: (ra, rb, imm).
        let (insn, uses) = match opcode {
            op::NOP => (Insn::Nop, (false, false, false)),
            op::HALT => (Insn::Halt, (false, false, false)),
            op::MOV => (Insn::Mov { rd: ra, rs: rb }, (true, true, false)),
            op::CMP => (Insn::Cmp { ra, rb }, (true, true, false)),
            op::CMPI => (Insn::CmpI { ra, imm }, (true, false, true)),
            op::LD => (
                Insn::Ld {
                    rd: ra,
                    base: rb,
                    off: imm,
                },
                (true, true, true),
            ),
            op::ST => (
                Insn::St {
                    rs: ra,
                    base: rb,
                    off: imm,
                },
                (true, true, true),
            ),
            op::JMP => (Insn::Jmp { off: imm }, (false, false, true)),
            op::JZ => (
                Insn::Jcc {
                    cond: Cond::Z,
                    off: imm,
                },
                (false, false, true),
            ),
            op::JNZ => (
                Insn::Jcc {
                    cond: Cond::Nz,
                    off: imm,
                },
                (false, false, true),
            ),
            op::JLT => (
                Insn::Jcc {
                    cond: Cond::Lt,
                    off: imm,
                },
                (false, false, true),
            ),
            op::CALL => (Insn::Call { off: imm }, (false, false, true)),
            op::RET => (Insn::Ret, (false, false, false)),
            op::JR => (Insn::Jr { rs: ra }, (true, false, false)),
            op::PUSH => (Insn::Push { rs: ra }, (true, false, false)),
            op::POP => (Insn::Pop { rd: ra }, (true, false, false)),
            op::OUT => (Insn::Out { rs: ra }, (true, false, false)),
            op::SYS => (Insn::Sys, (false, false, false)),
            op::BRK => (Insn::Brk, (false, false, false)),
            o if (op::ALU..op::ALU + 6).contains(&o) => {
                let op = AluOp::from_index(o - op::ALU).ok_or(DecodeError::Invalid)?;
                (Insn::Alu { op, rd: ra, rs: rb }, (true, true, false))
            }
            o if (op::ALUI..op::ALUI + 6).contains(&o) => {
                let op = AluOp::from_index(o - op::ALUI).ok_or(DecodeError::Invalid)?;
                (Insn::AluI { op, rd: ra, imm }, (true, false, true))
            }
            _ => return Err(DecodeError::Invalid),
        };
        let (use_ra, use_rb, use_imm) = uses;
        if (!use_ra && ra.0 != 0) || (!use_rb && rb.0 != 0) || (!use_imm && imm != 0) {
            return Err(DecodeError::Invalid);
        }
        Ok(insn)
    }

    /// Length of the encoding in bytes.
    pub const fn len(&self) -> usize {
        match self {
            Insn::Li { .. } | Insn::Ldpc { .. } | Insn::Ja { .. } => 8,
            _ => 4,
        }
    }

    /// Always `false`: no instruction is empty (present for clippy's `len_without_is_empty`).
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The opcode byte.
    pub const fn opcode(&self) -> u8 {
        match self {
            Insn::Nop => op::NOP,
            Insn::Halt => op::HALT,
            Insn::Li { .. } => op::LI,
            Insn::Mov { .. } => op::MOV,
            Insn::Alu { op, .. } => op::ALU + *op as u8,
            Insn::AluI { op, .. } => op::ALUI + *op as u8,
            Insn::Cmp { .. } => op::CMP,
            Insn::CmpI { .. } => op::CMPI,
            Insn::Ld { .. } => op::LD,
            Insn::St { .. } => op::ST,
            Insn::Ldpc { .. } => op::LDPC,
            Insn::Jmp { .. } => op::JMP,
            Insn::Jcc { cond: Cond::Z, .. } => op::JZ,
            Insn::Jcc { cond: Cond::Nz, .. } => op::JNZ,
            Insn::Jcc { cond: Cond::Lt, .. } => op::JLT,
            Insn::Call { .. } => op::CALL,
            Insn::Ret => op::RET,
            Insn::Jr { .. } => op::JR,
            Insn::Ja { .. } => op::JA,
            Insn::Push { .. } => op::PUSH,
            Insn::Pop { .. } => op::POP,
            Insn::Out { .. } => op::OUT,
            Insn::Sys => op::SYS,
            Insn::Brk => op::BRK,
        }
    }

    /// Encode.
    pub fn encode(&self) -> Encoded {
        let mut bytes = [0u8; MAX_INSN_LEN];
        bytes[0] = self.opcode();
        let mut short = |ra: Reg, rb: Reg, imm: i16| {
            bytes[1] = ra.0 | (rb.0 << 4);
            bytes[2..4].copy_from_slice(&imm.to_le_bytes());
        };
        let z = Reg(0);
        match *self {
            Insn::Nop | Insn::Halt | Insn::Ret | Insn::Sys | Insn::Brk => {}
            Insn::Mov { rd, rs } | Insn::Alu { rd, rs, .. } => short(rd, rs, 0),
            Insn::Cmp { ra, rb } => short(ra, rb, 0),
            Insn::AluI { rd, imm, .. } => short(rd, z, imm),
            Insn::CmpI { ra, imm } => short(ra, z, imm),
            Insn::Ld { rd, base, off } => short(rd, base, off),
            Insn::St { rs, base, off } => short(rs, base, off),
            Insn::Jmp { off } | Insn::Jcc { off, .. } | Insn::Call { off } => short(z, z, off),
            Insn::Jr { rs } | Insn::Push { rs } | Insn::Out { rs } => short(rs, z, 0),
            Insn::Pop { rd } => short(rd, z, 0),
            Insn::Li { rd, imm } => {
                bytes[1] = rd.0;
                bytes[4..8].copy_from_slice(&imm.to_le_bytes());
            }
            Insn::Ldpc { rd, off } => {
                bytes[1] = rd.0;
                bytes[4..8].copy_from_slice(&off.to_le_bytes());
            }
            Insn::Ja { target } => bytes[4..8].copy_from_slice(&target.to_le_bytes()),
        }
        Encoded {
            bytes,
            len: self.len() as u8,
        }
    }
}

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Insn::Nop => write!(f, "nop"),
            Insn::Halt => write!(f, "halt"),
            Insn::Li { rd, imm } => write!(f, "li {rd:?}, {imm}"),
            Insn::Mov { rd, rs } => write!(f, "mov {rd:?}, {rs:?}"),
            Insn::Alu { op, rd, rs } => write!(f, "{op:?} {rd:?}, {rs:?}"),
            Insn::AluI { op, rd, imm } => write!(f, "{op:?}i {rd:?}, {imm}"),
            Insn::Cmp { ra, rb } => write!(f, "cmp {ra:?}, {rb:?}"),
            Insn::CmpI { ra, imm } => write!(f, "cmpi {ra:?}, {imm}"),
            Insn::Ld { rd, base, off } => write!(f, "ld {rd:?}, [{base:?} + {off}]"),
            Insn::St { rs, base, off } => write!(f, "st {rs:?}, [{base:?} + {off}]"),
            Insn::Ldpc { rd, off } => write!(f, "ldpc {rd:?}, {off}"),
            Insn::Jmp { off } => write!(f, "jmp {off}"),
            Insn::Jcc { cond, off } => {
                let m = match cond {
                    Cond::Z => "jz",
                    Cond::Nz => "jnz",
                    Cond::Lt => "jlt",
                };
                write!(f, "{m} {off}")
            }
            Insn::Call { off } => write!(f, "call {off}"),
            Insn::Ret => write!(f, "ret"),
            Insn::Jr { rs } => write!(f, "jr {rs:?}"),
            Insn::Ja { target } => write!(f, "ja {target:#x}"),
            Insn::Push { rs } => write!(f, "push {rs:?}"),
            Insn::Pop { rd } => write!(f, "pop {rd:?}"),
            Insn::Out { rs } => write!(f, "out {rs:?}"),
            Insn::Sys => write!(f, "sys"),
            Insn::Brk => write!(f, "brk"),
        }
    }
}

/// A small corpus with every instruction form, for tests.
pub fn sample_insns() -> [Insn; 31] {
    [
        Insn::Nop,
        Insn::Halt,
        Insn::Li { rd: R3, imm: -7 },
        Insn::Mov { rd: R1, rs: R2 },
        Insn::Alu {
            op: AluOp::Add,
            rd: R1,
            rs: R2,
        },
        Insn::Alu {
            op: AluOp::Sub,
            rd: R1,
            rs: R1,
        },
        Insn::Alu {
            op: AluOp::Mul,
            rd: R4,
            rs: R5,
        },
        Insn::Alu {
            op: AluOp::And,
            rd: R4,
            rs: R5,
        },
        Insn::Alu {
            op: AluOp::Or,
            rd: R4,
            rs: R5,
        },
        Insn::Alu {
            op: AluOp::Xor,
            rd: R4,
            rs: R4,
        },
        Insn::AluI {
            op: AluOp::Add,
            rd: R2,
            imm: -3,
        },
        Insn::AluI {
            op: AluOp::Mul,
            rd: SP,
            imm: 1,
        },
        Insn::Cmp { ra: R1, rb: R2 },
        Insn::CmpI { ra: R1, imm: 5 },
        Insn::Ld {
            rd: R6,
            base: R7,
            off: -8,
        },
        Insn::St {
            rs: R6,
            base: R7,
            off: 16,
        },
        Insn::Ldpc { rd: R8, off: 0x40 },
        Insn::Ldpc { rd: R14, off: -8 },
        Insn::Jmp { off: -12 },
        Insn::Jcc {
            cond: Cond::Z,
            off: 8,
        },
        Insn::Jcc {
            cond: Cond::Nz,
            off: 8,
        },
        Insn::Jcc {
            cond: Cond::Lt,
            off: -4,
        },
        Insn::Call { off: 0x20 },
        Insn::Ret,
        Insn::Jr { rs: R9 },
        Insn::Ja { target: 0x1234 },
        Insn::Push { rs: R10 },
        Insn::Pop { rd: R11 },
        Insn::Out { rs: R12 },
        Insn::Sys,
        Insn::Brk,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_form() {
        for insn in sample_insns() {
            let enc = insn.encode();
            assert_eq!(enc.as_bytes().len(), insn.len());
            assert_eq!(Insn::decode(enc.as_bytes()), Ok(insn), "{insn}");
            assert_eq!(insn_len(enc.as_bytes()[0]), Some(insn.len()));
            // One byte short is truncated.
            let short = &enc.as_bytes()[..insn.len() - 1];
            assert_eq!(
                Insn::decode(short),
                Err(DecodeError::Truncated {
                    have: short.len() as u8
                })
            );
        }
        assert_eq!(Insn::Brk.encode().as_bytes(), &BRK_BYTES);
    }

    #[test]
    fn rejects_non_canonical_encodings() {
        assert_eq!(Insn::decode(&[]), Err(DecodeError::Truncated { have: 0 }));
        assert_eq!(Insn::decode(&[0, 0, 0, 0]), Err(DecodeError::Invalid));
        assert_eq!(Insn::decode(&[0xff, 0, 0, 0]), Err(DecodeError::Invalid));
        assert_eq!(Insn::decode(&[0x16, 0, 0, 0]), Err(DecodeError::Invalid));
        // Unused fields must be zero.
        assert_eq!(Insn::decode(&[op::NOP, 1, 0, 0]), Err(DecodeError::Invalid));
        assert_eq!(Insn::decode(&[op::BRK, 0, 0, 1]), Err(DecodeError::Invalid));
        assert_eq!(
            Insn::decode(&[op::PUSH, 0x21, 0, 0]),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            Insn::decode(&[op::MOV, 0x21, 1, 0]),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            Insn::decode(&[op::LI, 0x10, 0, 0, 1, 2, 3, 4]),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            Insn::decode(&[op::LI, 1, 0, 9, 1, 2, 3, 4]),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            Insn::decode(&[op::JA, 1, 0, 0, 1, 2, 3, 4]),
            Err(DecodeError::Invalid)
        );
        // Every byte value either decodes or is invalid; none panics.
        for b in 0..=255u8 {
            for regs in [0u8, 0x01, 0x10, 0xff] {
                let _ = Insn::decode(&[b, regs, 0, 0, 0, 0, 0, 0]);
                let _ = Insn::decode(&[b, regs]);
            }
        }
    }
}
