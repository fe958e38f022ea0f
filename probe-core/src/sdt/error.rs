//! Why an SDT note or argument spec did not parse.

use core::fmt;

/// Why a `.note.stapsdt` note or an SDT argument spec did not parse.
///
/// Offsets of note errors count bytes from the start of the section contents handed to
/// [`SdtNotes::new`](super::SdtNotes::new); offsets of argument errors count bytes from the
/// start of the argument string handed to [`SdtArgs::new`](super::SdtArgs::new) or
/// [`SdtArg::parse`](super::SdtArg::parse).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SdtError {
    /// A note header, name or descriptor runs past the end of the section. Iteration stops:
    /// the following notes cannot be located.
    Truncated {
        /// Where the note starts.
        offset: usize,
        /// Bytes the note needs from `offset` (saturating).
        needed: usize,
        /// Bytes left from `offset`.
        available: usize,
    },
    /// The note's name is not `"stapsdt\0"`.
    BadNoteName {
        /// Where the note starts.
        offset: usize,
        /// Its `namesz`.
        namesz: u32,
    },
    /// The note's type is not `NT_STAPSDT` (3).
    BadNoteType {
        /// Where the note starts.
        offset: usize,
        /// Its type.
        note_type: u32,
    },
    /// The descriptor is too short to hold the three addresses (pc, base, semaphore).
    DescTooShort {
        /// Where the descriptor starts.
        offset: usize,
        /// Its `descsz`.
        descsz: u32,
        /// Bytes the three addresses need.
        needed: usize,
    },
    /// A string of the descriptor (provider, name, arguments) has no terminating NUL.
    MissingNul {
        /// Where the string starts.
        offset: usize,
    },
    /// A string of the descriptor is not UTF-8.
    BadUtf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// An argument spec, or its operand, is empty (`"8@"`, `""`).
    Empty {
        /// Where the operand was expected.
        offset: usize,
    },
    /// The size prefix is not one of `1`, `2`, `4`, `8`, optionally negated (signed) and
    /// followed by `f` (floating point).
    BadSize {
        /// Where the prefix starts.
        offset: usize,
    },
    /// `%name` is no register this parser knows (x86-64 general-purpose registers, `%rip` as
    /// a base, segment registers as prefixes).
    UnknownRegister {
        /// Where the `%` is.
        offset: usize,
    },
    /// A register that cannot address memory in that position: an 8- or 16-bit base or index,
    /// `%rsp` or `%rip` as an index, a base and index of different widths, a segment register
    /// as an operand, or a segment override on a `%rip`-relative operand.
    BadAddressRegister {
        /// Where the `%` is.
        offset: usize,
    },
    /// The scale of an indexed operand is not 1, 2, 4 or 8, or there is a scale but no index.
    BadScale {
        /// Where the scale starts.
        offset: usize,
    },
    /// A number is malformed or does not fit 64 bits.
    BadNumber {
        /// Where the number starts.
        offset: usize,
    },
    /// Something else was expected here.
    Syntax {
        /// Where.
        offset: usize,
        /// What was expected, for people (e.g. `"')'"`).
        expected: &'static str,
    },
    /// A complete operand is followed by more characters.
    TrailingGarbage {
        /// Where the extra characters start.
        offset: usize,
    },
}

impl SdtError {
    /// The byte offset the error refers to (see the type's documentation for its origin).
    pub const fn offset(&self) -> usize {
        match *self {
            SdtError::Truncated { offset, .. }
            | SdtError::BadNoteName { offset, .. }
            | SdtError::BadNoteType { offset, .. }
            | SdtError::DescTooShort { offset, .. }
            | SdtError::MissingNul { offset }
            | SdtError::BadUtf8 { offset }
            | SdtError::Empty { offset }
            | SdtError::BadSize { offset }
            | SdtError::UnknownRegister { offset }
            | SdtError::BadAddressRegister { offset }
            | SdtError::BadScale { offset }
            | SdtError::BadNumber { offset }
            | SdtError::Syntax { offset, .. }
            | SdtError::TrailingGarbage { offset } => offset,
        }
    }

    /// Moves the error's offset by `by` (an argument's errors are relative to the argument;
    /// the iterator reports them relative to the whole string).
    pub(crate) fn shifted(self, by: usize) -> SdtError {
        let mut e = self;
        match &mut e {
            SdtError::Truncated { offset, .. }
            | SdtError::BadNoteName { offset, .. }
            | SdtError::BadNoteType { offset, .. }
            | SdtError::DescTooShort { offset, .. }
            | SdtError::MissingNul { offset }
            | SdtError::BadUtf8 { offset }
            | SdtError::Empty { offset }
            | SdtError::BadSize { offset }
            | SdtError::UnknownRegister { offset }
            | SdtError::BadAddressRegister { offset }
            | SdtError::BadScale { offset }
            | SdtError::BadNumber { offset }
            | SdtError::Syntax { offset, .. }
            | SdtError::TrailingGarbage { offset } => *offset = offset.saturating_add(by),
        }
        e
    }
}

impl fmt::Display for SdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SdtError::Truncated {
                offset,
                needed,
                available,
            } => write!(
                f,
                "SDT note at offset {offset:#x} is truncated: it needs {needed} bytes, \
                 the section has {available} left"
            ),
            SdtError::BadNoteName { offset, namesz } => write!(
                f,
                "note at offset {offset:#x} is not named \"stapsdt\" (namesz {namesz})"
            ),
            SdtError::BadNoteType { offset, note_type } => write!(
                f,
                "note at offset {offset:#x} has type {note_type}, not NT_STAPSDT (3)"
            ),
            SdtError::DescTooShort {
                offset,
                descsz,
                needed,
            } => write!(
                f,
                "SDT descriptor at offset {offset:#x} has {descsz} bytes, \
                 its three addresses need {needed}"
            ),
            SdtError::MissingNul { offset } => {
                write!(f, "SDT string at offset {offset:#x} has no terminating NUL")
            }
            SdtError::BadUtf8 { offset } => {
                write!(f, "SDT string at offset {offset:#x} is not UTF-8")
            }
            SdtError::Empty { offset } => {
                write!(f, "empty SDT argument operand at offset {offset}")
            }
            SdtError::BadSize { offset } => write!(
                f,
                "bad SDT argument size at offset {offset}: expected [-]1, 2, 4 or 8, \
                 optionally followed by f, then @"
            ),
            SdtError::UnknownRegister { offset } => {
                write!(f, "unknown register at offset {offset}")
            }
            SdtError::BadAddressRegister { offset } => write!(
                f,
                "register at offset {offset} cannot be used there \
                 (only 32/64-bit base and index registers, no %rsp/%rip index)"
            ),
            SdtError::BadScale { offset } => write!(
                f,
                "bad scale at offset {offset}: expected 1, 2, 4 or 8 after an index register"
            ),
            SdtError::BadNumber { offset } => {
                write!(f, "malformed or out-of-range number at offset {offset}")
            }
            SdtError::Syntax { offset, expected } => {
                write!(f, "syntax error at offset {offset}: expected {expected}")
            }
            SdtError::TrailingGarbage { offset } => {
                write!(
                    f,
                    "unexpected characters after the operand at offset {offset}"
                )
            }
        }
    }
}

impl core::error::Error for SdtError {}
