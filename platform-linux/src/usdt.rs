//! USDT (SDT) markers of an ELF file, resolved to what the tracer needs: the file offset of
//! each marker, the file offset of its semaphore, its argument specs, and the symbols those
//! specs name; and the decoding of the arguments at a hit.
//!
//! A `<sys/sdt.h>` marker is a `nop` plus a `.note.stapsdt` note recording its link-time
//! address, the link-time address of `.stapsdt.base`, the address of its semaphore (a `u16`
//! in the writable `.probes` section, 0 when it has none) and its arguments as assembler
//! operands (`-4@%edi 8@counter(%rip)`). [`UsdtFile`] parses the notes with
//! `probe_core::sdt`, applies the prelink adjustment (the actual address of `.stapsdt.base`
//! minus the recorded one) and turns both addresses into file offsets through the `PT_LOAD`
//! segments: probes are keyed by file offset, and the core increments a semaphore given by
//! its file offset (`ConsumerOptions::with_semaphore`), as the kernel's `ref_ctr_offset`.
//!
//! At a hit, [`UsdtDecoder`] evaluates each argument with [`SdtArg::value`] from the
//! registers and the tracee's memory; `%rip`-relative symbols are resolved from the file's
//! symbol tables plus the module's load bias (the marker's run-time address minus its
//! link-time one), and arguments asked for as strings are read as NUL-terminated strings of
//! at most [`MAX_STRING`] bytes.

use core::fmt;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use probe_core::arch::x86_64::X86Regs;
use probe_core::sdt::{vaddr_to_offset, ArgLoc, Class, Endian, SdtArg, SdtArgs, SdtNotes, Segment};
use probe_core::{Addr, AddressSpace};

use crate::elf::ElfError;
use crate::resolve::{is_glob, Location, ProbeKind, ResolveError, ResolvedProbe};

/// Longest string read for a string argument, in bytes (without the NUL).
pub const MAX_STRING: usize = 256;

/// Most arguments a marker can have (`<sys/sdt.h>` stops at 12).
pub const MAX_ARGS: usize = 12;

/// One marker location of a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsdtMarker {
    /// Provider (`python`).
    pub provider: String,
    /// Name (`function__entry`).
    pub name: String,
    /// Link-time address of the marker's `nop`, after the `.stapsdt.base` adjustment.
    pub pc: u64,
    /// File offset of the `nop`: the probe's key.
    pub file_offset: u64,
    /// Link-time address of the semaphore after the adjustment; 0 when it has none.
    pub semaphore: u64,
    /// File offset of the semaphore, when it has one that the file holds (a semaphore in a
    /// zero-filled `.bss` tail has no file offset and cannot be set).
    pub semaphore_offset: Option<u64>,
    /// The argument specs as the note has them (`8@%rbp 8@%r12 -4@%eax`).
    pub args: String,
}

impl UsdtMarker {
    /// `provider:name`.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }

    /// True when the marker has a semaphore that cannot be set: its address lies outside
    /// the file-backed part of every segment.
    pub fn semaphore_unusable(&self) -> bool {
        self.semaphore != 0 && self.semaphore_offset.is_none()
    }

    /// The parsed argument specs (a malformed spec is an error item).
    pub fn arguments(&self) -> SdtArgs<'_> {
        SdtArgs::new(&self.args)
    }
}

/// The markers of one ELF file.
#[derive(Clone, Debug, Default)]
pub struct UsdtFile {
    path: PathBuf,
    markers: Vec<UsdtMarker>,
    symbols: HashMap<String, u64>,
    problems: Vec<String>,
}

impl UsdtFile {
    /// Reads the markers of the file at `path`.
    pub fn open(path: &Path) -> Result<UsdtFile, ElfError> {
        let data = std::fs::read(path).map_err(|e| ElfError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        UsdtFile::parse(path, &data)
    }

    /// Parses the markers of an ELF image held in memory (`path` is used in messages and
    /// kept as [`UsdtFile::path`]). A file without `.note.stapsdt` has no markers.
    pub fn parse(path: &Path, data: &[u8]) -> Result<UsdtFile, ElfError> {
        let file = object::File::parse(data).map_err(|e| ElfError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut out = UsdtFile {
            path: path.to_owned(),
            ..UsdtFile::default()
        };
        let Some(section) = file.section_by_name(".note.stapsdt") else {
            return Ok(out);
        };
        let notes = section.data().map_err(|e| ElfError::Parse {
            path: path.to_owned(),
            reason: format!(".note.stapsdt: {e}"),
        })?;
        let class = if file.is_64() {
            Class::Elf64
        } else {
            Class::Elf32
        };
        let endian = if file.is_little_endian() {
            Endian::Little
        } else {
            Endian::Big
        };
        let base = file.section_by_name(".stapsdt.base").map(|s| s.address());
        let segments: Vec<Segment> = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment::from((s.address(), s.size(), offset, filesz))
            })
            .collect();
        for note in SdtNotes::new(notes, class, endian) {
            let n = match note {
                Ok(n) => n,
                Err(e) => {
                    out.problems.push(format!("a malformed SDT note: {e}"));
                    continue;
                }
            };
            // Without `.stapsdt.base` nothing can be adjusted: take the note as it is.
            let actual = base.unwrap_or(n.base);
            let (Some(pc), Some(semaphore)) = (n.adjusted_pc(actual), n.adjusted_semaphore(actual))
            else {
                out.problems.push(format!(
                    "{}:{}: the adjusted address overflows",
                    n.provider, n.name
                ));
                continue;
            };
            let Some(file_offset) = vaddr_to_offset(&segments, pc) else {
                out.problems.push(format!(
                    "{}:{} at {pc:#x} is in no loadable segment",
                    n.provider, n.name
                ));
                continue;
            };
            let semaphore_offset = match semaphore {
                0 => None,
                s => vaddr_to_offset(&segments, s),
            };
            out.markers.push(UsdtMarker {
                provider: n.provider.to_owned(),
                name: n.name.to_owned(),
                pc,
                file_offset,
                semaphore,
                semaphore_offset,
                args: n.args.to_owned(),
            });
        }
        // The symbols the argument specs name (`counter` in `-4@counter(%rip)`), only those.
        let wanted: HashSet<&str> = out
            .markers
            .iter()
            .flat_map(|m| m.arguments().filter_map(Result::ok))
            .filter_map(|a| arg_symbol(&a))
            .collect();
        if !wanted.is_empty() {
            let mut symbols = HashMap::new();
            for s in file.symbols().chain(file.dynamic_symbols()) {
                if let Ok(name) = s.name() {
                    if wanted.contains(name) && s.is_definition() {
                        symbols.entry(name.to_owned()).or_insert(s.address());
                    }
                }
            }
            out.symbols = symbols;
        }
        Ok(out)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every marker location, in note order.
    pub fn markers(&self) -> &[UsdtMarker] {
        &self.markers
    }

    /// Notes that could not be used, each a sentence.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Link-time address of a symbol named by an argument spec.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The marker locations `provider` (any when `None`) and `name` select; both may be
    /// globs (`python:function__*`, `*:gc__*`). An error names the markers the file has.
    pub fn select(
        &self,
        provider: Option<&str>,
        name: &str,
    ) -> Result<Vec<&UsdtMarker>, ResolveError> {
        let pattern = |p: &str| -> Result<Matcher, ResolveError> {
            if is_glob(p) {
                glob::Pattern::new(p)
                    .map(Matcher::Glob)
                    .map_err(|e| ResolveError::Syntax {
                        spec: p.to_owned(),
                        reason: format!("bad glob: {e}"),
                    })
            } else {
                Ok(Matcher::Exact(p.to_owned()))
            }
        };
        let prov = provider.map(pattern).transpose()?;
        let nm = pattern(name)?;
        let found: Vec<&UsdtMarker> = self
            .markers
            .iter()
            .filter(|m| prov.as_ref().is_none_or(|p| p.matches(&m.provider)) && nm.matches(&m.name))
            .collect();
        if found.is_empty() {
            let mut names: Vec<String> = self.markers.iter().map(UsdtMarker::full_name).collect();
            names.sort();
            names.dedup();
            return Err(ResolveError::NoSuchMarker {
                file: self.path.clone(),
                marker: match provider {
                    Some(p) => format!("{p}:{name}"),
                    None => name.to_owned(),
                },
                markers: names,
            });
        }
        Ok(found)
    }

    /// The decoder of `marker`'s arguments; `strings` has bit `i` set to read argument `i`
    /// as a string.
    pub fn decoder(&self, marker: &UsdtMarker, strings: u16) -> UsdtDecoder {
        let symbols = marker
            .arguments()
            .filter_map(Result::ok)
            .filter_map(|a| arg_symbol(&a))
            .filter_map(|s| Some((s.to_owned(), self.symbol(s)?)))
            .collect();
        UsdtDecoder {
            pc: marker.pc,
            args: marker.args.clone(),
            symbols,
            strings,
        }
    }
}

/// The name a marker's probe is shown under: `usdt:python3.11:python:function__entry`.
/// Every location of one marker has the same name, so their counts add up.
pub fn probe_name(file: &Path, marker: &UsdtMarker) -> String {
    let f = file.file_name().map_or_else(
        || file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    format!("usdt:{f}:{}:{}", marker.provider, marker.name)
}

/// Resolves a [`Location::Usdt`] in the file at `path` into one probe point per marker
/// location (`symbol` is `provider:name`). Other locations resolve to nothing.
pub fn resolve_usdt(path: &Path, location: &Location) -> Result<Vec<ResolvedProbe>, ResolveError> {
    let Location::Usdt { provider, name } = location else {
        return Ok(Vec::new());
    };
    let file = UsdtFile::open(path)?;
    Ok(file
        .select(provider.as_deref(), name)?
        .into_iter()
        .map(|m| ResolvedProbe {
            kind: ProbeKind::Usdt,
            file: path.to_path_buf(),
            symbol: Some(m.full_name()),
            symbol_offset: 0,
            file_offset: m.file_offset,
            ifunc: false,
        })
        .collect())
}

/// The symbol an argument's operand names, if any.
fn arg_symbol<'a>(a: &SdtArg<'a>) -> Option<&'a str> {
    match a.loc {
        ArgLoc::RipRel { symbol, .. } | ArgLoc::Mem { symbol, .. } => symbol,
        _ => None,
    }
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Glob(glob::Pattern),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(e) => e == s,
            Matcher::Glob(g) => g.matches(s),
        }
    }
}

/// One decoded argument of a hit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsdtValue {
    /// An integer, extended to 64 bits as its spec says.
    Int {
        /// The value's bits.
        value: u64,
        /// Signed (shown in decimal, negative values with a `-`).
        signed: bool,
        /// Width in bytes (unsigned 8-byte values, usually pointers, are shown in hex).
        width: u8,
    },
    /// A floating-point value (`8f@...`): its raw bits.
    Float {
        /// The bits (the low 32 for a 4-byte value).
        bits: u64,
        /// Width in bytes (4 or 8).
        width: u8,
    },
    /// An argument read as a NUL-terminated string (`--str N`).
    Str {
        /// The pointer.
        addr: u64,
        /// The bytes before the NUL (at most [`MAX_STRING`]), lossily as UTF-8.
        text: String,
        /// No NUL within [`MAX_STRING`] bytes, or the memory ended first.
        truncated: bool,
    },
    /// The value could not be read (a bad spec, unreadable memory, unknown symbol).
    Error(String),
}

impl UsdtValue {
    /// The value as a JSON value: a number (negative for signed ones), a string, or `null`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }
}

/// As a JSON value: a number (negative for signed ones), a string, or `null` (an unreadable
/// argument, a NaN or an infinity). A float is written as Rust's `Display` writes it (`1`,
/// `-0.5`, no exponent), which is a JSON number whenever it is finite.
impl serde::Serialize for UsdtValue {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match *self {
            UsdtValue::Int {
                value,
                signed: true,
                ..
            } => ser.serialize_i64(value as i64),
            UsdtValue::Int { value, .. } => ser.serialize_u64(value),
            UsdtValue::Float { bits, width } => {
                let f = float(bits, width);
                match serde_json::value::RawValue::from_string(f.to_string()) {
                    Ok(raw) if f.is_finite() => raw.serialize(ser),
                    _ => ser.serialize_none(),
                }
            }
            UsdtValue::Str { ref text, .. } => ser.serialize_str(text),
            UsdtValue::Error(_) => ser.serialize_none(),
        }
    }
}

fn float(bits: u64, width: u8) -> f64 {
    if width == 4 {
        f64::from(f32::from_bits(bits as u32))
    } else {
        f64::from_bits(bits)
    }
}

/// As `--print` shows it: `42`, `-1`, `0x7ffd1234`, `1.5`, `"text"`, `"text..."`,
/// `<error: why>`.
impl fmt::Display for UsdtValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UsdtValue::Int {
                value,
                signed: true,
                ..
            } => write!(f, "{}", value as i64),
            UsdtValue::Int {
                value, width: 8, ..
            } => write!(f, "{value:#x}"),
            UsdtValue::Int { value, .. } => write!(f, "{value}"),
            UsdtValue::Float { bits, width } => write!(f, "{}", float(bits, width)),
            UsdtValue::Str {
                ref text,
                truncated,
                ..
            } => {
                write!(f, "{:?}", text)?;
                if truncated {
                    f.write_str("...")?;
                }
                Ok(())
            }
            UsdtValue::Error(ref why) => write!(f, "<{why}>"),
        }
    }
}

/// What a USDT consumer keeps to decode its marker's arguments at a hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtDecoder {
    /// Link-time address of the marker (after the prelink adjustment).
    pc: u64,
    /// The argument specs.
    args: String,
    /// Link-time addresses of the symbols the specs name.
    symbols: HashMap<String, u64>,
    /// Bit `i`: argument `i` is a string.
    strings: u16,
}

impl UsdtDecoder {
    /// The argument specs.
    pub fn args(&self) -> &str {
        &self.args
    }

    /// Decodes every argument of a hit: `regs` at the marker, `runtime_pc` the marker's
    /// address in the traced process (its difference from the link-time address is the load
    /// bias applied to symbols), `mem` the traced address space. An argument asked for as a
    /// string is read as one when it is pointer-sized (8 bytes, unsigned), and shown as a
    /// number otherwise.
    pub fn decode<S: AddressSpace>(
        &self,
        regs: &X86Regs,
        runtime_pc: u64,
        mem: Option<&S>,
    ) -> Vec<UsdtValue> {
        let bias = runtime_pc.wrapping_sub(self.pc);
        SdtArgs::new(&self.args)
            .take(MAX_ARGS)
            .enumerate()
            .map(|(i, arg)| {
                let arg = match arg {
                    Ok(a) => a,
                    Err(e) => return UsdtValue::Error(format!("bad spec: {e}")),
                };
                let Some(mem) = mem else {
                    return UsdtValue::Error("no memory".to_owned());
                };
                let value = arg.value(
                    regs,
                    |addr, buf| mem.read_exact(Addr(addr), buf),
                    |sym| Some(self.symbols.get(sym)?.wrapping_add(bias)),
                );
                let value = match value {
                    Ok(v) => v,
                    Err(e) => return UsdtValue::Error(e.to_string()),
                };
                if self.strings & (1 << i) != 0 && is_pointer(&arg) {
                    read_string(mem, value)
                } else if arg.float {
                    UsdtValue::Float {
                        bits: value,
                        width: arg.width(),
                    }
                } else {
                    UsdtValue::Int {
                        value,
                        signed: arg.signed,
                        width: arg.width(),
                    }
                }
            })
            .collect()
    }
}

/// Whether an argument can hold a pointer: 8 bytes, unsigned, not floating point (what
/// `<sys/sdt.h>` records for a `char *`). Only those are read as strings: `--str 0` on a
/// spec matching several markers leaves their integer arguments 0 alone.
fn is_pointer(arg: &SdtArg<'_>) -> bool {
    arg.width() == 8 && !arg.signed && !arg.float
}

/// Reads a NUL-terminated string of at most [`MAX_STRING`] bytes at `addr`.
pub fn read_string<S: AddressSpace>(mem: &S, addr: u64) -> UsdtValue {
    if addr == 0 {
        return UsdtValue::Error("NULL".to_owned());
    }
    let mut buf = [0u8; MAX_STRING + 1];
    let mut len = 0;
    let mut ended = false;
    while len < buf.len() {
        let Some(at) = addr.checked_add(len as u64) else {
            break;
        };
        // Up to the end of the page: a string near the end of a mapping stays readable.
        let room = (4096 - (at % 4096) as usize).min(buf.len() - len);
        match mem.read(Addr(at), &mut buf[len..len + room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(z) = buf[len..len + n].iter().position(|&b| b == 0) {
                    len += z;
                    ended = true;
                    break;
                }
                len += n;
            }
        }
    }
    if len == 0 && !ended {
        return UsdtValue::Error(format!("unreadable string at {addr:#x}"));
    }
    let text_len = len.min(MAX_STRING);
    UsdtValue::Str {
        addr,
        text: String::from_utf8_lossy(&buf[..text_len]).into_owned(),
        truncated: !ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_core::{MemError, MemErrorKind, SpaceId};

    /// A flat memory image at `base`.
    struct Flat {
        base: u64,
        bytes: Vec<u8>,
    }

    impl AddressSpace for Flat {
        fn id(&self) -> SpaceId {
            SpaceId(1)
        }
        fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
            let off = addr
                .0
                .checked_sub(self.base)
                .filter(|&o| (o as usize) < self.bytes.len())
                .ok_or(MemError::new(addr, MemErrorKind::Unmapped))? as usize;
            let n = buf.len().min(self.bytes.len() - off);
            buf[..n].copy_from_slice(&self.bytes[off..off + n]);
            Ok(n)
        }
        fn write(&self, addr: Addr, _: &[u8]) -> Result<(), MemError> {
            Err(MemError::new(addr, MemErrorKind::Denied))
        }
        fn patch_code(&self, addr: Addr, _: &[u8]) -> Result<(), MemError> {
            Err(MemError::new(addr, MemErrorKind::Denied))
        }
    }

    #[test]
    fn decodes_registers_memory_symbols_and_strings() {
        let mut bytes = vec![0u8; 64];
        bytes[..6].copy_from_slice(b"hello\0");
        bytes[16..20].copy_from_slice(&(-7i32).to_le_bytes());
        bytes[32..40].copy_from_slice(&0x1000u64.to_le_bytes());
        let mem = Flat {
            base: 0x1000,
            bytes,
        };
        let d = UsdtDecoder {
            pc: 0x500,
            args: "-4@%edi 8@%rsi -4@counter(%rip) 8@8(%rsp) 8f@%rax".to_owned(),
            symbols: [("counter".to_owned(), 0x10)].into_iter().collect(),
            // Argument 0 is a signed int: never read as a string.
            strings: 1 << 3 | 1,
        };
        let regs = X86Regs {
            rdi: 0xffff_fffe,
            rsi: 0xdead_beef,
            rsp: 0x1000 + 24,
            rax: 1.5f64.to_bits(),
            ..X86Regs::default()
        };
        // Loaded 0x1000 higher than linked: counter at 0x1010.
        let v = d.decode(&regs, 0x1500, Some(&mem));
        assert_eq!(
            v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["-2", "0xdeadbeef", "-7", "\"hello\"", "1.5"]
        );
        assert_eq!(v[2].json(), "-7");
        assert_eq!(v[3].json(), "\"hello\"");
        // Bias 0: `counter` at 0x10 is unmapped.
        let v = d.decode(&regs, 0x500, Some(&mem));
        assert!(matches!(v[2], UsdtValue::Error(_)), "{:?}", v[2]);
        assert_eq!(v[2].json(), "null");
    }

    #[test]
    fn strings_are_bounded_and_may_end_with_the_memory() {
        let mem = Flat {
            base: 0x2000,
            bytes: vec![b'x'; 1000],
        };
        match read_string(&mem, 0x2000) {
            UsdtValue::Str {
                text, truncated, ..
            } => {
                assert_eq!(text.len(), MAX_STRING);
                assert!(truncated);
            }
            v => panic!("{v:?}"),
        }
        match read_string(&mem, 0x2000 + 990) {
            UsdtValue::Str {
                text, truncated, ..
            } => assert_eq!((text.len(), truncated), (10, true)),
            v => panic!("{v:?}"),
        }
        assert!(matches!(read_string(&mem, 0), UsdtValue::Error(_)));
        assert!(matches!(read_string(&mem, 0x9000), UsdtValue::Error(_)));
    }

    #[test]
    fn python_markers_resolve_to_nops_with_semaphores_in_probes() {
        let path = Path::new("/usr/bin/python3.11");
        if !path.exists() {
            eprintln!("skipped: no {}", path.display());
            return;
        }
        let f = UsdtFile::open(path).unwrap();
        let data = std::fs::read(path).unwrap();
        let entry = f.select(Some("python"), "function__entry").unwrap();
        assert_eq!(entry.len(), 1);
        for m in f.markers() {
            assert_eq!(data[m.file_offset as usize], 0x90, "{}", m.full_name());
            assert!(m.semaphore_offset.is_some(), "{}", m.full_name());
        }
        assert!(f.select(None, "function__*").unwrap().len() >= 2);
        assert!(f.select(Some("py*"), "gc__*").unwrap().len() >= 2);
        let e = f.select(Some("python"), "nope").unwrap_err();
        assert!(e.to_string().contains("python:function__entry"), "{e}");
        // Through the resolver, by short name, as `uprobe:` specs are.
        let mut r = crate::resolve::Resolver::new(None);
        let p = r
            .resolve_text("usdt:python3:python:function__entry")
            .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].file_offset, entry[0].file_offset);
        assert_eq!(p[0].symbol.as_deref(), Some("python:function__entry"));
        assert_eq!(r.resolve_text("usdt:python3:gc__*").unwrap().len(), 2);
    }
}
