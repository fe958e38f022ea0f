//! x86-64 register names as they appear in SDT argument specs (AT&T syntax, without `%`).

use core::fmt;

/// A 64-bit general-purpose register, in hardware encoding order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Gpr {
    /// `rax`.
    Rax,
    /// `rcx`.
    Rcx,
    /// `rdx`.
    Rdx,
    /// `rbx`.
    Rbx,
    /// `rsp`.
    Rsp,
    /// `rbp`.
    Rbp,
    /// `rsi`.
    Rsi,
    /// `rdi`.
    Rdi,
    /// `r8`.
    R8,
    /// `r9`.
    R9,
    /// `r10`.
    R10,
    /// `r11`.
    R11,
    /// `r12`.
    R12,
    /// `r13`.
    R13,
    /// `r14`.
    R14,
    /// `r15`.
    R15,
}

/// Which bits of a [`Gpr`] a register name selects.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum RegPart {
    /// Bits 0..8 (`al`, `sil`, `r8b`).
    Low8,
    /// Bits 8..16 (`ah`, `bh`, `ch`, `dh` only).
    High8,
    /// Bits 0..16 (`ax`, `r8w`).
    Low16,
    /// Bits 0..32 (`eax`, `r8d`).
    Low32,
    /// All 64 bits (`rax`, `r8`).
    Full,
}

impl RegPart {
    /// Width of the selected bits in bytes (1, 2, 4 or 8).
    pub const fn bytes(self) -> u8 {
        match self {
            RegPart::Low8 | RegPart::High8 => 1,
            RegPart::Low16 => 2,
            RegPart::Low32 => 4,
            RegPart::Full => 8,
        }
    }

    /// Position of the lowest selected bit (8 for [`RegPart::High8`], else 0).
    pub const fn shift(self) -> u32 {
        match self {
            RegPart::High8 => 8,
            _ => 0,
        }
    }
}

/// A general-purpose register operand: a [`Gpr`] and the part of it that a name selects, so
/// `%edi` is `rdi` bits 0..32 and `%ah` is `rax` bits 8..16.
///
/// Only combinations that x86-64 has are constructible ([`X86Reg::new`] refuses, say, a high
/// byte of `rsi`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct X86Reg {
    gpr: Gpr,
    part: RegPart,
}

/// `(name, register, part)` for every general-purpose register name.
const NAMES: [(&str, Gpr, RegPart); 68] = {
    use Gpr::*;
    use RegPart::*;
    [
        ("rax", Rax, Full),
        ("eax", Rax, Low32),
        ("ax", Rax, Low16),
        ("al", Rax, Low8),
        ("ah", Rax, High8),
        ("rcx", Rcx, Full),
        ("ecx", Rcx, Low32),
        ("cx", Rcx, Low16),
        ("cl", Rcx, Low8),
        ("ch", Rcx, High8),
        ("rdx", Rdx, Full),
        ("edx", Rdx, Low32),
        ("dx", Rdx, Low16),
        ("dl", Rdx, Low8),
        ("dh", Rdx, High8),
        ("rbx", Rbx, Full),
        ("ebx", Rbx, Low32),
        ("bx", Rbx, Low16),
        ("bl", Rbx, Low8),
        ("bh", Rbx, High8),
        ("rsp", Rsp, Full),
        ("esp", Rsp, Low32),
        ("sp", Rsp, Low16),
        ("spl", Rsp, Low8),
        ("rbp", Rbp, Full),
        ("ebp", Rbp, Low32),
        ("bp", Rbp, Low16),
        ("bpl", Rbp, Low8),
        ("rsi", Rsi, Full),
        ("esi", Rsi, Low32),
        ("si", Rsi, Low16),
        ("sil", Rsi, Low8),
        ("rdi", Rdi, Full),
        ("edi", Rdi, Low32),
        ("di", Rdi, Low16),
        ("dil", Rdi, Low8),
        ("r8", R8, Full),
        ("r8d", R8, Low32),
        ("r8w", R8, Low16),
        ("r8b", R8, Low8),
        ("r9", R9, Full),
        ("r9d", R9, Low32),
        ("r9w", R9, Low16),
        ("r9b", R9, Low8),
        ("r10", R10, Full),
        ("r10d", R10, Low32),
        ("r10w", R10, Low16),
        ("r10b", R10, Low8),
        ("r11", R11, Full),
        ("r11d", R11, Low32),
        ("r11w", R11, Low16),
        ("r11b", R11, Low8),
        ("r12", R12, Full),
        ("r12d", R12, Low32),
        ("r12w", R12, Low16),
        ("r12b", R12, Low8),
        ("r13", R13, Full),
        ("r13d", R13, Low32),
        ("r13w", R13, Low16),
        ("r13b", R13, Low8),
        ("r14", R14, Full),
        ("r14d", R14, Low32),
        ("r14w", R14, Low16),
        ("r14b", R14, Low8),
        ("r15", R15, Full),
        ("r15d", R15, Low32),
        ("r15w", R15, Low16),
        ("r15b", R15, Low8),
    ]
};

impl X86Reg {
    /// The register operand selecting `part` of `gpr`, or `None` when x86-64 has no such name
    /// (a high byte of anything but `rax`, `rcx`, `rdx`, `rbx`).
    pub const fn new(gpr: Gpr, part: RegPart) -> Option<X86Reg> {
        match (part, gpr) {
            (RegPart::High8, Gpr::Rax | Gpr::Rcx | Gpr::Rdx | Gpr::Rbx) | (RegPart::Low8, _) => {
                Some(X86Reg { gpr, part })
            }
            (RegPart::High8, _) => None,
            _ => Some(X86Reg { gpr, part }),
        }
    }

    /// The whole 64-bit register.
    pub const fn full(gpr: Gpr) -> X86Reg {
        X86Reg {
            gpr,
            part: RegPart::Full,
        }
    }

    /// Looks up a register by its AT&T name without the `%` (`"edi"`, `"r8b"`, `"ah"`).
    /// Names are case-sensitive and lower-case, as compilers emit them.
    pub fn from_name(name: &str) -> Option<X86Reg> {
        NAMES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, gpr, part)| X86Reg { gpr, part })
    }

    /// The AT&T name without the `%`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, g, p)| *g == self.gpr && *p == self.part)
            .map_or("?", |(n, _, _)| n)
    }

    /// The 64-bit register this name is part of.
    pub const fn gpr(self) -> Gpr {
        self.gpr
    }

    /// Which bits of [`X86Reg::gpr`] the name selects.
    pub const fn part(self) -> RegPart {
        self.part
    }

    /// Operand width in bytes (1, 2, 4 or 8).
    pub const fn bytes(self) -> u8 {
        self.part.bytes()
    }
}

impl fmt::Display for X86Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.name())
    }
}

/// A segment register used as an override prefix (`%fs:0x28`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum SegReg {
    /// `es`.
    Es,
    /// `cs`.
    Cs,
    /// `ss`.
    Ss,
    /// `ds`.
    Ds,
    /// `fs`: in 64-bit mode its base is `fs_base` (thread-local storage on Linux).
    Fs,
    /// `gs`: in 64-bit mode its base is `gs_base`.
    Gs,
}

impl SegReg {
    /// Looks up a segment register by its name without the `%`.
    pub fn from_name(name: &str) -> Option<SegReg> {
        Some(match name {
            "es" => SegReg::Es,
            "cs" => SegReg::Cs,
            "ss" => SegReg::Ss,
            "ds" => SegReg::Ds,
            "fs" => SegReg::Fs,
            "gs" => SegReg::Gs,
            _ => return None,
        })
    }

    /// The name without the `%`.
    pub const fn name(self) -> &'static str {
        match self {
            SegReg::Es => "es",
            SegReg::Cs => "cs",
            SegReg::Ss => "ss",
            SegReg::Ds => "ds",
            SegReg::Fs => "fs",
            SegReg::Gs => "gs",
        }
    }
}

impl fmt::Display for SegReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &(name, gpr, part) in NAMES.iter() {
            let r = X86Reg::from_name(name).unwrap();
            assert_eq!((r.gpr(), r.part()), (gpr, part));
            assert_eq!(r.name(), name);
            assert_eq!(X86Reg::new(gpr, part), Some(r));
        }
        assert_eq!(X86Reg::from_name("rip"), None);
        assert_eq!(X86Reg::from_name("RAX"), None);
        assert_eq!(X86Reg::from_name("sih"), None);
        assert_eq!(X86Reg::new(Gpr::Rsi, RegPart::High8), None);
    }

    #[test]
    fn widths() {
        assert_eq!(X86Reg::from_name("edi").unwrap().bytes(), 4);
        let ah = X86Reg::from_name("ah").unwrap();
        assert_eq!((ah.gpr(), ah.bytes(), ah.part().shift()), (Gpr::Rax, 1, 8));
        assert_eq!(X86Reg::from_name("r8w").unwrap().bytes(), 2);
        assert_eq!(X86Reg::full(Gpr::R15).to_string_buf().as_str(), "%r15");
    }

    impl X86Reg {
        fn to_string_buf(self) -> heapless::String<8> {
            use core::fmt::Write;
            let mut s = heapless::String::new();
            write!(s, "{self}").unwrap();
            s
        }
    }

    #[test]
    fn segments() {
        for s in [
            SegReg::Es,
            SegReg::Cs,
            SegReg::Ss,
            SegReg::Ds,
            SegReg::Fs,
            SegReg::Gs,
        ] {
            assert_eq!(SegReg::from_name(s.name()), Some(s));
        }
        assert_eq!(SegReg::from_name("xs"), None);
    }
}
