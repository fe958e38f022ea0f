//! SDT argument specs (`-4@%edi`, `8@-8(%rbp)`, `4@8(%rax,%rdx,4)`, ...) into typed locations.
//!
//! A spec is `[-]SIZE[f]@OPERAND`: `SIZE` is the width in bytes (1, 2, 4 or 8), `-` marks a
//! signed value, `f` a floating-point one (newer `<sys/sdt.h>`), and `OPERAND` is an AT&T
//! operand as the compiler chose it for an `asm` input. Very old notes omit the `SIZE@`
//! prefix; such an argument has [`SdtArg::size`] 0 (see [`SdtArg::width`]).
//!
//! Operands (x86-64):
//!
//! | form | example | location |
//! |---|---|---|
//! | register | `%edi`, `%ah`, `%r8b` | [`ArgLoc::Reg`] |
//! | immediate | `$5`, `$-1`, `$0x10` | [`ArgLoc::Imm`] |
//! | memory | `-8(%rbp)`, `0x10(%rax)`, `(%rax,%rdx,4)`, `arr(,%rcx,8)`, `0x601040`, `%fs:0x28` | [`ArgLoc::Mem`] |
//! | RIP-relative | `sym(%rip)`, `sym+16(%rip)`, `8(%rip)` | [`ArgLoc::RipRel`] |
//!
//! Segment overrides are kept in [`ArgLoc::Mem::segment`]; numbers are decimal, `0x` hex or
//! `0`-prefixed octal as in `gas`; a displacement is a number, a symbol, or a symbol `+`/`-` a
//! number. Specs are separated by ASCII whitespace.

use core::fmt;
use core::iter::FusedIterator;

use super::error::SdtError;
use super::reg::{Gpr, RegPart, SegReg, X86Reg};

/// Where an argument's value lives when the marker is hit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ArgLoc<'a> {
    /// In (part of) a register.
    Reg(X86Reg),
    /// A constant.
    Imm(i64),
    /// In memory at `segment base + symbol + disp + base + index * scale`.
    Mem {
        /// Segment override (`%fs:`), if any. In 64-bit mode only `%fs` and `%gs` have a base.
        segment: Option<SegReg>,
        /// Symbol whose link-time address the displacement starts from (`arr` in
        /// `arr(,%rcx,8)`, non-PIC code), if any.
        symbol: Option<&'a str>,
        /// Base register (64- or 32-bit), if any.
        base: Option<X86Reg>,
        /// Index register (64- or 32-bit, never `%rsp`), if any.
        index: Option<X86Reg>,
        /// Scale of the index: 1, 2, 4 or 8 (1 when there is no index).
        scale: u8,
        /// Displacement.
        disp: i64,
    },
    /// In memory relative to `%rip`: at `symbol + disp` when there is a symbol (the usual
    /// `counter(%rip)` form, whatever the instruction's address), else at `%rip + disp`.
    RipRel {
        /// The symbol, if any.
        symbol: Option<&'a str>,
        /// Displacement.
        disp: i64,
    },
}

/// One parsed argument spec.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SdtArg<'a> {
    /// Width in bytes: 1, 2, 4 or 8; 0 when the spec has no `SIZE@` prefix (very old notes).
    pub size: u8,
    /// The value is signed (`-4@...`): `SdtArg::value` (feature `x86_64`) sign-extends it.
    pub signed: bool,
    /// The value is floating point (`8f@...`); its bits are passed as they are.
    pub float: bool,
    /// Where the value lives.
    pub loc: ArgLoc<'a>,
}

impl<'a> SdtArg<'a> {
    /// Parses one spec (no surrounding whitespace). Error offsets count from the start of
    /// `spec`.
    pub fn parse(spec: &'a str) -> Result<SdtArg<'a>, SdtError> {
        let (size, signed, float, operand_at) = match spec.find('@') {
            None => (0, false, false, 0),
            Some(at) => {
                let (size, signed, float) =
                    parse_size(&spec[..at]).ok_or(SdtError::BadSize { offset: 0 })?;
                (size, signed, float, at + 1)
            }
        };
        let mut p = Parser {
            s: spec.as_bytes(),
            src: spec,
            pos: operand_at,
        };
        let loc = p.operand()?;
        if p.pos < p.s.len() {
            return Err(SdtError::TrailingGarbage { offset: p.pos });
        }
        Ok(SdtArg {
            size,
            signed,
            float,
            loc,
        })
    }

    /// The width the value is read and extended with: [`SdtArg::size`] when present, else the
    /// register's width for a register operand and 8 (the size of `long`, what SystemTap
    /// assumes) for anything else.
    pub fn width(&self) -> u8 {
        match (self.size, self.loc) {
            (0, ArgLoc::Reg(r)) => r.bytes(),
            (0, _) => 8,
            (n, _) => n,
        }
    }
}

/// `[-]N[f]` with N in {1, 2, 4, 8}.
fn parse_size(s: &str) -> Option<(u8, bool, bool)> {
    let (signed, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (float, s) = match s.strip_suffix('f') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let size = match s {
        "1" => 1,
        "2" => 2,
        "4" => 4,
        "8" => 8,
        _ => return None,
    };
    Some((size, signed, float))
}

/// A cursor over one spec. `pos` only ever stops at ASCII characters or the end, so slicing
/// `src` at it is on a char boundary.
struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

fn is_sym_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'.'
}

fn is_sym_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// What stands between `%` and the next non-name character.
enum RegName {
    Gpr(X86Reg),
    Rip,
    Seg(SegReg),
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), SdtError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(SdtError::Syntax {
                offset: self.pos,
                expected,
            })
        }
    }

    /// The ASCII run at `pos` whose bytes satisfy `f`.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII bytes were taken, so both ends are char boundaries.
        self.src.get(start..self.pos).unwrap_or("")
    }

    /// `%name` at `pos` (which holds the `%`).
    fn reg_name(&mut self) -> Result<RegName, SdtError> {
        let at = self.pos;
        self.pos += 1;
        let name = self.take_while(|b| b.is_ascii_alphanumeric());
        if name == "rip" {
            return Ok(RegName::Rip);
        }
        if let Some(r) = X86Reg::from_name(name) {
            return Ok(RegName::Gpr(r));
        }
        if let Some(s) = SegReg::from_name(name) {
            return Ok(RegName::Seg(s));
        }
        Err(SdtError::UnknownRegister { offset: at })
    }

    /// An unsigned number (decimal, `0x` hex, `0` octal) at `pos`.
    fn number(&mut self) -> Result<u64, SdtError> {
        let at = self.pos;
        let bad = SdtError::BadNumber { offset: at };
        let digits = self.take_while(|b| b.is_ascii_alphanumeric());
        let (radix, body) = if let Some(hex) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            (16, hex)
        } else if digits.len() > 1 && digits.starts_with('0') {
            (8, &digits[1..])
        } else {
            (10, digits)
        };
        if body.is_empty() || !body.bytes().all(|b| (b as char).is_digit(radix)) {
            return Err(bad);
        }
        u64::from_str_radix(body, radix).map_err(|_| bad)
    }

    /// An optionally negated number; values wrap into 64 bits as `gas` computes them.
    fn signed_number(&mut self) -> Result<i64, SdtError> {
        let neg = self.eat(b'-');
        if !neg {
            self.eat(b'+');
        }
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(SdtError::BadNumber { offset: self.pos });
        }
        let n = self.number()?;
        Ok(if neg { n.wrapping_neg() } else { n } as i64)
    }

    fn operand(&mut self) -> Result<ArgLoc<'a>, SdtError> {
        match self.peek() {
            None => Err(SdtError::Empty { offset: self.pos }),
            Some(b'$') => {
                self.pos += 1;
                Ok(ArgLoc::Imm(self.signed_number()?))
            }
            Some(b'%') => {
                let at = self.pos;
                match self.reg_name()? {
                    RegName::Gpr(r) => Ok(ArgLoc::Reg(r)),
                    RegName::Seg(seg) => {
                        if self.eat(b':') {
                            self.memory(Some((seg, at)))
                        } else {
                            Err(SdtError::BadAddressRegister { offset: at })
                        }
                    }
                    RegName::Rip => Err(SdtError::BadAddressRegister { offset: at }),
                }
            }
            Some(_) => self.memory(None),
        }
    }

    /// `[disp](base[,index[,scale]])` or a bare displacement, after any segment prefix.
    fn memory(&mut self, segment: Option<(SegReg, usize)>) -> Result<ArgLoc<'a>, SdtError> {
        let start = self.pos;
        let mut symbol = None;
        let mut disp = 0i64;
        match self.peek() {
            Some(b) if is_sym_start(b) => {
                symbol = Some(self.take_while(is_sym_char));
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    disp = self.signed_number()?;
                }
            }
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' => {
                disp = self.signed_number()?;
            }
            Some(b'(') => {}
            None => return Err(SdtError::Empty { offset: self.pos }),
            Some(_) => {
                return Err(SdtError::Syntax {
                    offset: self.pos,
                    expected: "a register, $immediate, displacement or '('",
                })
            }
        }
        let has_disp = self.pos > start;
        let segment_reg = segment.map(|(s, _)| s);
        if !self.eat(b'(') {
            if !has_disp {
                return Err(SdtError::Empty { offset: self.pos });
            }
            return Ok(ArgLoc::Mem {
                segment: segment_reg,
                symbol,
                base: None,
                index: None,
                scale: 1,
                disp,
            });
        }

        // Base.
        let mut base = None;
        if self.peek() == Some(b'%') {
            let base_at = self.pos;
            match self.reg_name()? {
                RegName::Rip => {
                    self.expect(b')', "')' after %rip")?;
                    if let Some((_, seg_at)) = segment {
                        return Err(SdtError::BadAddressRegister { offset: seg_at });
                    }
                    return Ok(ArgLoc::RipRel { symbol, disp });
                }
                RegName::Gpr(r) => {
                    address_reg(r, base_at)?;
                    base = Some(r);
                }
                RegName::Seg(_) => return Err(SdtError::BadAddressRegister { offset: base_at }),
            }
        }

        // Index and scale.
        let mut index = None;
        let mut scale = 1u8;
        if self.eat(b',') {
            if self.peek() != Some(b'%') {
                return Err(if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    SdtError::BadScale { offset: self.pos }
                } else {
                    SdtError::Syntax {
                        offset: self.pos,
                        expected: "an index register",
                    }
                });
            }
            let index_at = self.pos;
            let r = match self.reg_name()? {
                RegName::Gpr(r) if r.gpr() != Gpr::Rsp => r,
                _ => return Err(SdtError::BadAddressRegister { offset: index_at }),
            };
            address_reg(r, index_at)?;
            if base.is_some_and(|b| b.part() != r.part()) {
                return Err(SdtError::BadAddressRegister { offset: index_at });
            }
            index = Some(r);
            if self.eat(b',') {
                let scale_at = self.pos;
                if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(SdtError::BadScale { offset: scale_at });
                }
                scale = match self.number() {
                    Ok(1) => 1,
                    Ok(2) => 2,
                    Ok(4) => 4,
                    Ok(8) => 8,
                    _ => return Err(SdtError::BadScale { offset: scale_at }),
                };
            }
        } else if base.is_none() {
            return Err(SdtError::Syntax {
                offset: self.pos,
                expected: "a base or index register",
            });
        }
        self.expect(b')', "')'")?;
        Ok(ArgLoc::Mem {
            segment: segment_reg,
            symbol,
            base,
            index,
            scale,
            disp,
        })
    }
}

/// Only 64- and 32-bit registers address memory.
fn address_reg(r: X86Reg, at: usize) -> Result<(), SdtError> {
    match r.part() {
        RegPart::Full | RegPart::Low32 => Ok(()),
        _ => Err(SdtError::BadAddressRegister { offset: at }),
    }
}

/// Renders a spec that [`SdtArg::parse`] reads back as the same value (decimal numbers, no
/// redundant parts).
impl fmt::Display for SdtArg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.size != 0 {
            if self.signed {
                f.write_str("-")?;
            }
            write!(f, "{}", self.size)?;
            if self.float {
                f.write_str("f")?;
            }
            f.write_str("@")?;
        }
        fmt::Display::fmt(&self.loc, f)
    }
}

fn write_disp(f: &mut fmt::Formatter<'_>, symbol: Option<&str>, disp: i64) -> fmt::Result {
    match symbol {
        Some(s) => {
            f.write_str(s)?;
            if disp > 0 {
                write!(f, "+{disp}")?;
            } else if disp < 0 {
                write!(f, "-{}", disp.unsigned_abs())?;
            }
            Ok(())
        }
        None => write!(f, "{disp}"),
    }
}

/// Renders the operand in AT&T syntax.
impl fmt::Display for ArgLoc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgLoc::Reg(r) => write!(f, "{r}"),
            ArgLoc::Imm(v) => write!(f, "${v}"),
            ArgLoc::RipRel { symbol, disp } => {
                if symbol.is_some() || disp != 0 {
                    write_disp(f, symbol, disp)?;
                }
                f.write_str("(%rip)")
            }
            ArgLoc::Mem {
                segment,
                symbol,
                base,
                index,
                scale,
                disp,
            } => {
                if let Some(s) = segment {
                    write!(f, "{s}:")?;
                }
                let regs = base.is_some() || index.is_some();
                if symbol.is_some() || disp != 0 || !regs {
                    write_disp(f, symbol, disp)?;
                }
                if regs {
                    f.write_str("(")?;
                    if let Some(b) = base {
                        write!(f, "{b}")?;
                    }
                    if let Some(i) = index {
                        write!(f, ",{i},{scale}")?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

/// An iterator over the whitespace-separated specs of a note's argument string. A malformed
/// spec yields its error (offsets from the start of the whole string) and iteration goes on
/// with the next one.
///
/// ```
/// use probe_core::sdt::{ArgLoc, SdtArgs, X86Reg};
/// let mut args = SdtArgs::new("-4@%edi 8@-8(%rbp)");
/// let a = args.next().unwrap().unwrap();
/// assert_eq!((a.size, a.signed), (4, true));
/// assert_eq!(a.loc, ArgLoc::Reg(X86Reg::from_name("edi").unwrap()));
/// assert!(matches!(args.next(), Some(Ok(_))));
/// assert!(args.next().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct SdtArgs<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> SdtArgs<'a> {
    /// Iterates over the specs in `args`.
    pub const fn new(args: &'a str) -> SdtArgs<'a> {
        SdtArgs { src: args, pos: 0 }
    }
}

impl<'a> Iterator for SdtArgs<'a> {
    type Item = Result<SdtArg<'a>, SdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.src.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        if start >= bytes.len() {
            return None;
        }
        while bytes
            .get(self.pos)
            .is_some_and(|b| !b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
        // Whitespace is ASCII, so `start` and `pos` are char boundaries.
        let spec = self.src.get(start..self.pos)?;
        Some(SdtArg::parse(spec).map_err(|e| e.shifted(start)))
    }
}

impl FusedIterator for SdtArgs<'_> {}
