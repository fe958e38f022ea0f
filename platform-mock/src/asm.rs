//! A tiny assembler for the toy ISA, so tests write programs in Rust.
//!
//! ```
//! use platform_mock::asm::Asm;
//! use platform_mock::isa::{R0, R1};
//!
//! let mut a = Asm::new();
//! a.label("main").li(R0, 0).li(R1, 10);
//! a.label("loop").add(R0, R1).subi(R1, 1).jnz("loop");
//! a.out(R0).halt();
//! let prog = a.finish().unwrap();
//! assert_eq!(prog.offset("loop"), 16);
//! ```

use core::fmt;
use std::collections::BTreeMap;

use crate::isa::{AluOp, Cond, Insn, Reg};

/// Why a program did not assemble.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AsmError {
    /// A branch or `ldpc` names a label that was never defined.
    UndefinedLabel(String),
    /// A label was defined twice.
    DuplicateLabel(String),
    /// A branch target is out of its immediate's range.
    OutOfRange {
        /// The label.
        label: String,
        /// Offset of the referring instruction.
        at: usize,
    },
    /// [`Asm::pad_to`] asked to move backwards.
    PadBackwards {
        /// Where the program already is.
        at: usize,
        /// Where padding was asked to reach.
        to: usize,
    },
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::UndefinedLabel(l) => write!(f, "undefined label `{l}`"),
            AsmError::DuplicateLabel(l) => write!(f, "label `{l}` defined twice"),
            AsmError::OutOfRange { label, at } => {
                write!(
                    f,
                    "label `{label}` out of range of the instruction at {at:#x}"
                )
            }
            AsmError::PadBackwards { at, to } => {
                write!(f, "cannot pad from {at:#x} back to {to:#x}")
            }
        }
    }
}

impl core::error::Error for AsmError {}

/// An assembled program: bytes and a symbol table (label -> byte offset).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Program {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Label name -> byte offset.
    pub symbols: BTreeMap<String, u64>,
}

impl Program {
    /// The offset of `label`, if defined.
    pub fn symbol(&self, label: &str) -> Option<u64> {
        self.symbols.get(label).copied()
    }

    /// The offset of `label`.
    ///
    /// # Panics
    ///
    /// If the label is not defined (a test-writing convenience).
    pub fn offset(&self, label: &str) -> u64 {
        match self.symbol(label) {
            Some(o) => o,
            None => panic!("no label `{label}` in the program"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum FixKind {
    Branch,
    Ldpc,
}

#[derive(Clone, Debug)]
struct Fixup {
    at: usize,
    label: String,
    kind: FixKind,
}

/// The assembler: emit instructions and labels, then [`finish`](Asm::finish).
///
/// Builder methods return `&mut Self` for chaining; errors (duplicate labels, padding
/// backwards) are remembered and reported by `finish`.
#[derive(Clone, Debug, Default)]
pub struct Asm {
    bytes: Vec<u8>,
    symbols: BTreeMap<String, u64>,
    fixups: Vec<Fixup>,
    error: Option<AsmError>,
}

macro_rules! alu_methods {
    ($($rr:ident, $ri:ident => $op:expr;)*) => {
        $(
            #[doc = concat!("`", stringify!($rr), " rd, rs`")]
            pub fn $rr(&mut self, rd: Reg, rs: Reg) -> &mut Self {
                self.insn(Insn::Alu { op: $op, rd, rs })
            }
            #[doc = concat!("`", stringify!($ri), " rd, imm16`")]
            pub fn $ri(&mut self, rd: Reg, imm: i16) -> &mut Self {
                self.insn(Insn::AluI { op: $op, rd, imm })
            }
        )*
    };
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// The current offset.
    pub fn here(&self) -> usize {
        self.bytes.len()
    }

    fn fail(&mut self, e: AsmError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Define `name` at the current offset.
    pub fn label(&mut self, name: &str) -> &mut Self {
        let here = self.here() as u64;
        if self.symbols.insert(name.to_string(), here).is_some() {
            self.fail(AsmError::DuplicateLabel(name.to_string()));
        }
        self
    }

    /// Emit one instruction.
    pub fn insn(&mut self, insn: Insn) -> &mut Self {
        self.bytes.extend_from_slice(insn.encode().as_bytes());
        self
    }

    /// Emit raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// Emit an 8-byte little-endian data word.
    pub fn word(&mut self, w: u64) -> &mut Self {
        self.bytes(&w.to_le_bytes())
    }

    /// Fill with `fill` up to offset `to`.
    pub fn pad_to(&mut self, to: usize, fill: u8) -> &mut Self {
        if to < self.here() {
            let at = self.here();
            self.fail(AsmError::PadBackwards { at, to });
        } else {
            self.bytes.resize(to, fill);
        }
        self
    }

    /// Fill with `nop`s up to offset `to` (then with zero bytes if `to - here` is not a
    /// multiple of 4).
    pub fn nops_to(&mut self, to: usize) -> &mut Self {
        while self.here() + 4 <= to {
            self.nop();
        }
        self.pad_to(to, 0)
    }

    fn branch(&mut self, insn: Insn, label: &str, kind: FixKind) -> &mut Self {
        self.fixups.push(Fixup {
            at: self.here(),
            label: label.to_string(),
            kind,
        });
        self.insn(insn)
    }

    /// `nop`
    pub fn nop(&mut self) -> &mut Self {
        self.insn(Insn::Nop)
    }
    /// `halt` (exit with `r0`)
    pub fn halt(&mut self) -> &mut Self {
        self.insn(Insn::Halt)
    }
    /// `li rd, imm32`
    pub fn li(&mut self, rd: Reg, imm: i32) -> &mut Self {
        self.insn(Insn::Li { rd, imm })
    }
    /// `mov rd, rs`
    pub fn mov(&mut self, rd: Reg, rs: Reg) -> &mut Self {
        self.insn(Insn::Mov { rd, rs })
    }
    alu_methods! {
        add, addi => AluOp::Add;
        sub, subi => AluOp::Sub;
        mul, muli => AluOp::Mul;
        and, andi => AluOp::And;
        or, ori => AluOp::Or;
        xor, xori => AluOp::Xor;
    }
    /// `cmp ra, rb`
    pub fn cmp(&mut self, ra: Reg, rb: Reg) -> &mut Self {
        self.insn(Insn::Cmp { ra, rb })
    }
    /// `cmpi ra, imm16`
    pub fn cmpi(&mut self, ra: Reg, imm: i16) -> &mut Self {
        self.insn(Insn::CmpI { ra, imm })
    }
    /// `ld rd, [base + off]`
    pub fn ld(&mut self, rd: Reg, base: Reg, off: i16) -> &mut Self {
        self.insn(Insn::Ld { rd, base, off })
    }
    /// `st rs, [base + off]`
    pub fn st(&mut self, rs: Reg, base: Reg, off: i16) -> &mut Self {
        self.insn(Insn::St { rs, base, off })
    }
    /// `ldpc rd, label`: load the word at `label`.
    pub fn ldpc(&mut self, rd: Reg, label: &str) -> &mut Self {
        self.branch(Insn::Ldpc { rd, off: 0 }, label, FixKind::Ldpc)
    }
    /// `jmp label`
    pub fn jmp(&mut self, label: &str) -> &mut Self {
        self.branch(Insn::Jmp { off: 0 }, label, FixKind::Branch)
    }
    /// `jz label`
    pub fn jz(&mut self, label: &str) -> &mut Self {
        self.branch(
            Insn::Jcc {
                cond: Cond::Z,
                off: 0,
            },
            label,
            FixKind::Branch,
        )
    }
    /// `jnz label`
    pub fn jnz(&mut self, label: &str) -> &mut Self {
        self.branch(
            Insn::Jcc {
                cond: Cond::Nz,
                off: 0,
            },
            label,
            FixKind::Branch,
        )
    }
    /// `jlt label`
    pub fn jlt(&mut self, label: &str) -> &mut Self {
        self.branch(
            Insn::Jcc {
                cond: Cond::Lt,
                off: 0,
            },
            label,
            FixKind::Branch,
        )
    }
    /// `call label`
    pub fn call(&mut self, label: &str) -> &mut Self {
        self.branch(Insn::Call { off: 0 }, label, FixKind::Branch)
    }
    /// `ret`
    pub fn ret(&mut self) -> &mut Self {
        self.insn(Insn::Ret)
    }
    /// `jr rs`
    pub fn jr(&mut self, rs: Reg) -> &mut Self {
        self.insn(Insn::Jr { rs })
    }
    /// `ja target` (absolute)
    pub fn ja(&mut self, target: u32) -> &mut Self {
        self.insn(Insn::Ja { target })
    }
    /// `push rs`
    pub fn push(&mut self, rs: Reg) -> &mut Self {
        self.insn(Insn::Push { rs })
    }
    /// `pop rd`
    pub fn pop(&mut self, rd: Reg) -> &mut Self {
        self.insn(Insn::Pop { rd })
    }
    /// `out rs`
    pub fn out(&mut self, rs: Reg) -> &mut Self {
        self.insn(Insn::Out { rs })
    }
    /// `sys`
    pub fn sys(&mut self) -> &mut Self {
        self.insn(Insn::Sys)
    }
    /// `brk`
    pub fn brk(&mut self) -> &mut Self {
        self.insn(Insn::Brk)
    }

    /// Resolve labels and return the program.
    pub fn finish(&self) -> Result<Program, AsmError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut bytes = self.bytes.clone();
        for fix in &self.fixups {
            let target = *self
                .symbols
                .get(&fix.label)
                .ok_or_else(|| AsmError::UndefinedLabel(fix.label.clone()))?;
            let delta = target as i64 - fix.at as i64;
            let out_of_range = || AsmError::OutOfRange {
                label: fix.label.clone(),
                at: fix.at,
            };
            match fix.kind {
                FixKind::Branch => {
                    let off = i16::try_from(delta).map_err(|_| out_of_range())?;
                    bytes[fix.at + 2..fix.at + 4].copy_from_slice(&off.to_le_bytes());
                }
                FixKind::Ldpc => {
                    let off = i32::try_from(delta).map_err(|_| out_of_range())?;
                    bytes[fix.at + 4..fix.at + 8].copy_from_slice(&off.to_le_bytes());
                }
            }
        }
        Ok(Program {
            bytes,
            symbols: self.symbols.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{R0, R1, R2};

    #[test]
    fn labels_resolve_forwards_and_backwards() {
        let mut a = Asm::new();
        a.label("top").nop().jmp("end").jnz("top").ldpc(R1, "data");
        a.label("end").halt();
        a.label("data").word(0x1122_3344_5566_7788);
        let p = a.finish().unwrap();
        assert_eq!(p.offset("top"), 0);
        assert_eq!(p.offset("end"), 20);
        assert_eq!(p.offset("data"), 24);
        assert_eq!(Insn::decode(&p.bytes[4..]), Ok(Insn::Jmp { off: 16 }));
        assert_eq!(
            Insn::decode(&p.bytes[8..]),
            Ok(Insn::Jcc {
                cond: Cond::Nz,
                off: -8
            })
        );
        assert_eq!(
            Insn::decode(&p.bytes[12..]),
            Ok(Insn::Ldpc { rd: R1, off: 12 })
        );
        assert_eq!(p.bytes.len(), 32);
    }

    #[test]
    fn errors() {
        let mut a = Asm::new();
        a.jmp("nowhere");
        assert_eq!(
            a.finish(),
            Err(AsmError::UndefinedLabel("nowhere".to_string()))
        );
        let mut a = Asm::new();
        a.label("x").label("x");
        assert_eq!(a.finish(), Err(AsmError::DuplicateLabel("x".to_string())));
        let mut a = Asm::new();
        a.jmp("far").pad_to(0x9000, 0).label("far");
        assert!(matches!(
            a.finish(),
            Err(AsmError::OutOfRange { at: 0, .. })
        ));
        let mut a = Asm::new();
        a.li(R0, 1).pad_to(4, 0);
        assert_eq!(a.finish(), Err(AsmError::PadBackwards { at: 8, to: 4 }));
        let mut a = Asm::new();
        a.mov(R2, R1).nops_to(14);
        let p = a.finish().unwrap();
        assert_eq!(p.bytes.len(), 14);
        assert_eq!(Insn::decode(&p.bytes[8..]), Ok(Insn::Nop));
    }
}
