//! `.note.stapsdt` notes: zero-copy parsing, prelink adjustment, address-to-offset mapping.
//!
//! The section is a sequence of ELF notes, each laid out as
//!
//! ```text
//! u32 namesz = 8 | u32 descsz | u32 type = 3 (NT_STAPSDT)
//! "stapsdt\0"                                    (name, padded to 4)
//! addr pc | addr base | addr semaphore           (4 or 8 bytes each, by ELF class)
//! "provider\0" "name\0" "args\0"                 (descsz ends here; padded to 4)
//! ```
//!
//! as `<sys/sdt.h>` emits them. `base` is the link-time address of the `.stapsdt.base`
//! section; a prelinked or otherwise relocated file moved it, and [`SdtNote::adjusted_pc`]
//! applies the difference.

use core::iter::FusedIterator;

use super::args::SdtArgs;
use super::error::SdtError;

/// The note type of SDT notes.
pub const NT_STAPSDT: u32 = 3;

/// The note name of SDT notes, with its NUL.
pub const STAPSDT_NOTE_NAME: &[u8; 8] = b"stapsdt\0";

/// ELF class: the width of the three addresses in each descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    /// `ELFCLASS32`: 4-byte addresses.
    Elf32,
    /// `ELFCLASS64`: 8-byte addresses.
    Elf64,
}

impl Class {
    /// Address width in bytes.
    pub const fn addr_bytes(self) -> usize {
        match self {
            Class::Elf32 => 4,
            Class::Elf64 => 8,
        }
    }
}

/// ELF data encoding: the byte order of the note header and the addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Endian {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

/// One SDT marker, borrowing its strings from the section data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SdtNote<'a> {
    /// Provider (`python` in `python:function__entry`).
    pub provider: &'a str,
    /// Marker name (`function__entry`).
    pub name: &'a str,
    /// Link-time address of the marker's `nop`.
    pub pc: u64,
    /// Link-time address of `.stapsdt.base` recorded in the note (0 in notes without one).
    pub base: u64,
    /// Link-time address of the marker's semaphore (a `u16` counter), 0 when it has none.
    pub semaphore: u64,
    /// Argument specs, separated by spaces (parse with [`SdtNote::arguments`]).
    pub args: &'a str,
}

impl<'a> SdtNote<'a> {
    /// The marker's address after the prelink adjustment: when the file's actual
    /// `.stapsdt.base` section address differs from [`SdtNote::base`], `pc` moves by the
    /// difference. A note without a base (0) is never adjusted. `None` when the adjusted
    /// address does not fit 64 bits.
    pub fn adjusted_pc(&self, actual_stapsdt_base: u64) -> Option<u64> {
        adjust(self.pc, self.base, actual_stapsdt_base)
    }

    /// The semaphore address after the same adjustment as [`SdtNote::adjusted_pc`].
    /// `Some(0)` when the marker has no semaphore (0 stays 0); `None` only when the adjusted
    /// address does not fit 64 bits.
    pub fn adjusted_semaphore(&self, actual_stapsdt_base: u64) -> Option<u64> {
        if self.semaphore == 0 {
            return Some(0);
        }
        adjust(self.semaphore, self.base, actual_stapsdt_base)
    }

    /// The argument specs, parsed lazily.
    pub fn arguments(&self) -> SdtArgs<'a> {
        SdtArgs::new(self.args)
    }
}

fn adjust(addr: u64, recorded: u64, actual: u64) -> Option<u64> {
    if recorded == 0 || recorded == actual {
        Some(addr)
    } else if actual > recorded {
        addr.checked_add(actual - recorded)
    } else {
        addr.checked_sub(recorded - actual)
    }
}

/// An iterator over the notes of a `.note.stapsdt` section.
///
/// A note whose frame (header and sizes) is intact but whose contents are wrong (name, type,
/// descriptor) yields an error and iteration goes on with the next note; a frame that runs
/// past the end of the data yields [`SdtError::Truncated`] and ends the iteration. Empty data
/// yields nothing.
///
/// ```
/// use probe_core::sdt::{Class, Endian, SdtNotes};
/// let mut section = [0u8; 12 + 8 + 24 + 16];
/// section[0] = 8; // namesz
/// section[4] = 24 + 16; // descsz
/// section[8] = 3; // NT_STAPSDT
/// section[12..20].copy_from_slice(b"stapsdt\0");
/// section[20] = 0x10; // pc = 0x10, base = 0, semaphore = 0
/// section[44..60].copy_from_slice(b"p\0n\0-4@%edi\0\0\0\0\0");
/// let note = SdtNotes::new(&section, Class::Elf64, Endian::Little)
///     .next()
///     .unwrap()
///     .unwrap();
/// assert_eq!((note.provider, note.name, note.args, note.pc), ("p", "n", "-4@%edi", 0x10));
/// ```
#[derive(Clone, Debug)]
pub struct SdtNotes<'a> {
    data: &'a [u8],
    pos: usize,
    class: Class,
    endian: Endian,
    done: bool,
}

impl<'a> SdtNotes<'a> {
    /// Iterates over the notes in `data`, the contents of a `.note.stapsdt` section of an ELF
    /// file of the given class and byte order.
    pub const fn new(data: &'a [u8], class: Class, endian: Endian) -> SdtNotes<'a> {
        SdtNotes {
            data,
            pos: 0,
            class,
            endian,
            done: false,
        }
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self.endian {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        })
    }

    fn addr_at(&self, desc: &[u8], at: usize) -> Option<u64> {
        match self.class {
            Class::Elf32 => {
                let b: [u8; 4] = desc.get(at..at.checked_add(4)?)?.try_into().ok()?;
                Some(u64::from(match self.endian {
                    Endian::Little => u32::from_le_bytes(b),
                    Endian::Big => u32::from_be_bytes(b),
                }))
            }
            Class::Elf64 => {
                let b: [u8; 8] = desc.get(at..at.checked_add(8)?)?.try_into().ok()?;
                Some(match self.endian {
                    Endian::Little => u64::from_le_bytes(b),
                    Endian::Big => u64::from_be_bytes(b),
                })
            }
        }
    }

    /// Parses the descriptor `desc`, which starts at `desc_off` in the section.
    fn descriptor(&self, desc: &'a [u8], desc_off: usize) -> Result<SdtNote<'a>, SdtError> {
        let asz = self.class.addr_bytes();
        let needed = 3 * asz;
        let too_short = SdtError::DescTooShort {
            offset: desc_off,
            descsz: u32::try_from(desc.len()).unwrap_or(u32::MAX),
            needed,
        };
        let pc = self.addr_at(desc, 0).ok_or(too_short)?;
        let base = self.addr_at(desc, asz).ok_or(too_short)?;
        let semaphore = self.addr_at(desc, 2 * asz).ok_or(too_short)?;
        let mut rest = desc.get(needed..).ok_or(too_short)?;
        let mut at = desc_off.saturating_add(needed);
        let mut next_str = || -> Result<&'a str, SdtError> {
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(SdtError::MissingNul { offset: at })?;
            let (s, tail) = rest.split_at(nul);
            let s = core::str::from_utf8(s).map_err(|_| SdtError::BadUtf8 { offset: at })?;
            // `tail` starts with the NUL.
            rest = tail.get(1..).unwrap_or(&[]);
            at = at.saturating_add(nul).saturating_add(1);
            Ok(s)
        };
        let provider = next_str()?;
        let name = next_str()?;
        let args = next_str()?;
        Ok(SdtNote {
            provider,
            name,
            pc,
            base,
            semaphore,
            args,
        })
    }
}

const fn align4(n: usize) -> Option<usize> {
    match n.checked_add(3) {
        Some(v) => Some(v & !3),
        None => None,
    }
}

impl<'a> Iterator for SdtNotes<'a> {
    type Item = Result<SdtNote<'a>, SdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.data.len() {
            self.done = true;
            return None;
        }
        let offset = self.pos;
        let available = self.data.len() - offset;
        let truncated = |needed: usize| {
            Some(Err(SdtError::Truncated {
                offset,
                needed,
                available,
            }))
        };
        let (Some(namesz), Some(descsz), Some(note_type)) = (
            self.u32_at(offset),
            self.u32_at(offset.saturating_add(4)),
            self.u32_at(offset.saturating_add(8)),
        ) else {
            self.done = true;
            return truncated(12);
        };
        // Sizes relative to `offset`, saturating: a saturated value is larger than any slice.
        let name_len = usize::try_from(namesz).unwrap_or(usize::MAX);
        let desc_len = usize::try_from(descsz).unwrap_or(usize::MAX);
        let name_end = 12usize.saturating_add(name_len);
        let desc_start = align4(name_end).unwrap_or(usize::MAX);
        let desc_end = desc_start.saturating_add(desc_len);
        if desc_end > available {
            self.done = true;
            return truncated(desc_end);
        }
        // The padding after the last descriptor may be cut off by the end of the section.
        self.pos = offset + align4(desc_end).unwrap_or(usize::MAX).min(available);

        let (Some(name), Some(desc)) = (
            self.data.get(offset + 12..offset + name_end),
            self.data.get(offset + desc_start..offset + desc_end),
        ) else {
            // Unreachable after the length check; kept panic-free.
            self.done = true;
            return truncated(desc_end);
        };
        if name != STAPSDT_NOTE_NAME {
            return Some(Err(SdtError::BadNoteName { offset, namesz }));
        }
        if note_type != NT_STAPSDT {
            return Some(Err(SdtError::BadNoteType { offset, note_type }));
        }
        Some(self.descriptor(desc, offset + desc_start))
    }
}

impl FusedIterator for SdtNotes<'_> {}

/// A loadable segment (`PT_LOAD` program header) as [`vaddr_to_offset`] needs it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Segment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
}

impl From<(u64, u64, u64, u64)> for Segment {
    /// From `(vaddr, memsz, offset, filesz)`.
    fn from((vaddr, memsz, offset, filesz): (u64, u64, u64, u64)) -> Segment {
        Segment {
            vaddr,
            memsz,
            offset,
            filesz,
        }
    }
}

/// The file offset of virtual address `vaddr`: found in the first segment whose file-backed
/// part (`vaddr .. vaddr + filesz`, never more than `memsz`) contains it. `None` when no
/// segment does, including addresses in the zero-filled tail (`.bss`) of a segment.
///
/// This is what uprobes wants for a marker (`pc`) and for its semaphore (the reference
/// counter offset), both taken after [`SdtNote::adjusted_pc`]/[`SdtNote::adjusted_semaphore`].
pub fn vaddr_to_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments.iter().find_map(|s| {
        let delta = vaddr.checked_sub(s.vaddr)?;
        if delta < s.filesz.min(s.memsz) {
            s.offset.checked_add(delta)
        } else {
            None
        }
    })
}
