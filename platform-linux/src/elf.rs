//! The function symbols of an ELF executable or shared library, keyed by file offset.
//!
//! Probes are keyed by (file, offset), so every symbol is turned from its link-time virtual
//! address into a file offset through the `PT_LOAD` program headers
//! (`offset = vaddr - p_vaddr + p_offset`). That works the same for PIE and non-PIE
//! executables and for shared libraries, and it survives ASLR.
//!
//! Symbols come from `.symtab` and `.dynsym` together (a stripped binary keeps only the
//! latter), deduplicated; `.dynsym` symbols carry their GNU version (`malloc@@GLIBC_2.2.5`),
//! and a name matches with or without its version.
//!
//! Mangled C++ (Itanium, `_Z...`) and Rust (v0 `_R...` and legacy `_ZN...17h<hash>E`) names
//! also get a demangled name (`cpp_demangle`, `rustc-demangle`; Rust's `::h<hash>` suffix is
//! left out). A name, spec or glob matches either form; output shows the demangled one.

use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Sym, SymbolTable, VersionTable};
use object::{Endianness, Object, ObjectSection};

/// Why an ELF file could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file is not a 64-bit ELF file, or it is malformed.
    #[error("{path} is not a usable 64-bit ELF file: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What `object` reported.
        reason: String,
    },
}

/// What kind of ELF object a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElfKind {
    /// `ET_EXEC`: a position-dependent executable, loaded at its link addresses.
    Executable,
    /// `ET_DYN` with an interpreter: a position-independent executable.
    PieExecutable,
    /// `ET_DYN` without an interpreter: a shared library.
    SharedLibrary,
    /// Anything else (relocatable objects, core files).
    Other,
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoadSegment {
    /// Link-time virtual address.
    pub vaddr: u64,
    /// Size in memory.
    pub mem_size: u64,
    /// Offset in the file.
    pub offset: u64,
    /// Size in the file.
    pub file_size: u64,
    /// The segment is executable.
    pub exec: bool,
}

/// Which symbol tables a symbol was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymbolSource {
    /// Only `.symtab`.
    Symtab,
    /// Only `.dynsym`.
    Dynsym,
    /// Both tables.
    Both,
}

/// A function that can be probed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionSymbol {
    /// The name without version (`malloc`).
    pub name: String,
    /// The GNU symbol version (`GLIBC_2.2.5`), if any.
    pub version: Option<String>,
    /// The version is the default one (`@@`) rather than a compatibility one (`@`).
    pub default_version: bool,
    /// Link-time virtual address.
    pub vaddr: u64,
    /// Size in bytes (0 if the symbol table does not say).
    pub size: u64,
    /// Offset of the first byte in the file: the key of a probe.
    pub file_offset: u64,
    /// Global or weak (visible outside the file), rather than local.
    pub global: bool,
    /// A GNU indirect function: this address is the *resolver*, which runs once at load,
    /// not the implementation that callers reach.
    pub ifunc: bool,
    /// Where the symbol was found.
    pub source: SymbolSource,
    /// The demangled name (`rp::deep`, `ns::Parser::parse(char const*)`), for a mangled one.
    pub demangled: Option<String>,
    /// A demangled C++ name without its parameters (`ns::Parser::parse`), to match by.
    pub demangled_base: Option<String>,
}

impl FunctionSymbol {
    /// The name with its version: `malloc@@GLIBC_2.2.5`, `memcpy@GLIBC_2.2.5`, or `main`.
    pub fn versioned_name(&self) -> String {
        match &self.version {
            Some(v) if self.default_version => format!("{}@@{v}", self.name),
            Some(v) => format!("{}@{v}", self.name),
            None => self.name.clone(),
        }
    }

    /// The name people read: the demangled one if the symbol is mangled, else the versioned
    /// name.
    pub fn display_name(&self) -> String {
        match &self.demangled {
            Some(d) => d.clone(),
            None => self.versioned_name(),
        }
    }

    /// True if glob `pat` matches any form of the name: mangled, versioned, demangled, or
    /// demangled without parameters.
    pub fn glob_matches(&self, pat: &glob::Pattern) -> bool {
        pat.matches(&self.name)
            || pat.matches(&self.versioned_name())
            || self.demangled.as_deref().is_some_and(|d| pat.matches(d))
            || self
                .demangled_base
                .as_deref()
                .is_some_and(|d| pat.matches(d))
    }

    /// Sort key among aliases at one address, best first: global, default-versioned,
    /// fewest leading underscores, shortest (`malloc` before `__libc_malloc`).
    pub fn alias_rank(&self) -> (bool, bool, usize, usize, &str) {
        (
            !self.global,
            self.version.is_some() && !self.default_version,
            self.name.len() - self.name.trim_start_matches('_').len(),
            self.name.len(),
            &self.name,
        )
    }

    /// True if `query` names this symbol: `malloc`, `malloc@@GLIBC_2.2.5` or
    /// `malloc@GLIBC_2.2.5` (a single `@` accepts the default version too).
    /// A demangled name (with or without a C++ function's parameters) matches too.
    pub fn matches(&self, query: &str) -> bool {
        if self.demangled.as_deref() == Some(query) || self.demangled_base.as_deref() == Some(query)
        {
            return true;
        }
        let (base, version, default) = split_version(query);
        if base != self.name {
            return false;
        }
        match version {
            None => true,
            Some(v) => self.version.as_deref() == Some(v) && (!default || self.default_version),
        }
    }
}

/// The demangled name of `name` and, for C++, the same without parameters; `None` for a
/// name that is not mangled (or does not demangle).
pub fn demangle(name: &str) -> Option<(String, Option<String>)> {
    let rust_legacy = name.starts_with("_ZN") && is_rust_hash_suffix(name);
    if name.starts_with("_R") || rust_legacy {
        // `{:#}` leaves out the `::h<hash>` suffix (rustc-demangle's alternate form).
        return rustc_demangle::try_demangle(name)
            .ok()
            .map(|d| (format!("{d:#}"), None));
    }
    if !name.starts_with("_Z") {
        return None;
    }
    let sym = cpp_demangle::Symbol::new(name.as_bytes()).ok()?;
    let full = sym
        .demangle(&cpp_demangle::DemangleOptions::default())
        .ok()?;
    let base = sym
        .demangle(
            &cpp_demangle::DemangleOptions::new()
                .no_params()
                .no_return_type(),
        )
        .ok()
        .filter(|b| *b != full);
    Some((full, base))
}

/// True if a legacy-mangled `name` ends with Rust's hash element (`17h` + 16 hex digits + `E`).
fn is_rust_hash_suffix(name: &str) -> bool {
    let Some(body) = name.strip_suffix('E') else {
        return false;
    };
    let n = body.len();
    n >= 19
        && body.is_char_boundary(n - 19)
        && body[n - 19..].starts_with("17h")
        && body[n - 16..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `name@@VER` / `name@VER` into (name, version, is-default).
pub fn split_version(s: &str) -> (&str, Option<&str>, bool) {
    match s.find('@') {
        None => (s, None, false),
        Some(i) => {
            let rest = &s[i + 1..];
            match rest.strip_prefix('@') {
                Some(v) => (&s[..i], Some(v), true),
                None => (&s[..i], Some(rest), false),
            }
        }
    }
}

/// A loaded ELF file: its kind, load segments and function symbols.
#[derive(Clone, Debug)]
pub struct ElfImage {
    path: PathBuf,
    kind: ElfKind,
    loads: Vec<LoadSegment>,
    symbols: Vec<FunctionSymbol>,
    has_symtab: bool,
    soname: Option<String>,
    go: bool,
}

impl ElfImage {
    /// Reads and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let data = std::fs::read(path).map_err(|e| ElfError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &data)
    }

    /// Parses an ELF image held in memory (`path` is only used in messages).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, ElfError> {
        let perr = |e: object::Error| ElfError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let file = ElfFile64::<Endianness>::parse(data).map_err(perr)?;
        let endian = file.endian();
        let header = file.elf_header();
        let phdrs = file.elf_program_headers();
        let has_interp = phdrs.iter().any(|p| p.p_type(endian) == elf::PT_INTERP);
        let kind = match header.e_type(endian) {
            elf::ET_EXEC => ElfKind::Executable,
            elf::ET_DYN if has_interp => ElfKind::PieExecutable,
            elf::ET_DYN => ElfKind::SharedLibrary,
            _ => ElfKind::Other,
        };
        let loads: Vec<LoadSegment> = phdrs
            .iter()
            .filter(|p| p.p_type(endian) == elf::PT_LOAD)
            .map(|p| LoadSegment {
                vaddr: p.p_vaddr(endian),
                mem_size: p.p_memsz(endian),
                offset: p.p_offset(endian),
                file_size: p.p_filesz(endian),
                exec: p.p_flags(endian).0 & elf::PF_X.0 != 0,
            })
            .collect();
        let sections = file.elf_section_table();
        let versions = sections.versions(endian, data).map_err(perr)?;
        let mut image = ElfImage {
            path: path.to_owned(),
            kind,
            loads,
            symbols: Vec::new(),
            has_symtab: !file.elf_symbol_table().is_empty(),
            soname: soname(&file, data),
            go: false,
        };
        let mut all = Vec::new();
        image.collect(
            file.elf_symbol_table(),
            None,
            SymbolSource::Symtab,
            &mut all,
        );
        image.collect(
            file.elf_dynamic_symbol_table(),
            versions.as_ref(),
            SymbolSource::Dynsym,
            &mut all,
        );
        image.symbols = dedupe(all);
        // Go's linker writes `.go.buildinfo` (Go 1.13 on); a stripped section table still
        // leaves the runtime's symbols in most builds (`debug/buildinfo` looks for both).
        image.go = file
            .sections()
            .any(|s| s.name().is_ok_and(|n| n == ".go.buildinfo"))
            || image.symbols.iter().any(|s| s.name.starts_with("runtime."));
        Ok(image)
    }

    fn collect<'d>(
        &self,
        table: &SymbolTable<'d, elf::FileHeader64<Endianness>, &'d [u8]>,
        versions: Option<&VersionTable<'d, elf::FileHeader64<Endianness>>>,
        source: SymbolSource,
        out: &mut Vec<FunctionSymbol>,
    ) {
        let endian = Endianness::Little;
        for (index, sym) in table.enumerate() {
            let ty = sym.st_type();
            let ifunc = ty == elf::STT_GNU_IFUNC;
            if (ty != elf::STT_FUNC && !ifunc) || sym.st_shndx(endian) == elf::SHN_UNDEF {
                continue;
            }
            let vaddr = sym.st_value(endian);
            let Some(file_offset) = self.vaddr_to_offset(vaddr) else {
                continue;
            };
            let Ok(raw) = table.symbol_name(endian, sym) else {
                continue;
            };
            let Ok(full) = core::str::from_utf8(raw) else {
                continue;
            };
            if full.is_empty() {
                continue;
            }
            let (base, mut version, mut default) = split_version(full);
            let mut version = version.take().map(str::to_owned);
            if let Some(vt) = versions {
                let vi = vt.version_index(endian, index);
                if let Ok(Some(v)) = vt.version(vi.index()) {
                    if let Ok(name) = core::str::from_utf8(v.name()) {
                        version = Some(name.to_owned());
                        default = !vi.is_hidden();
                    }
                }
            }
            let (demangled, demangled_base) = match demangle(base) {
                Some((d, b)) => (Some(d), b),
                None => (None, None),
            };
            out.push(FunctionSymbol {
                demangled,
                demangled_base,
                name: base.to_owned(),
                version,
                default_version: default,
                vaddr,
                size: sym.st_size(endian),
                file_offset,
                global: sym.st_bind() != elf::STB_LOCAL,
                ifunc,
                source,
            });
        }
    }

    /// Whether the file is a Go program: Go moves goroutine stacks and walks return
    /// addresses itself, so a return probe must not replace one there.
    pub fn is_go(&self) -> bool {
        self.go
    }

    /// The file this image was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Executable, PIE or shared library.
    pub fn kind(&self) -> ElfKind {
        self.kind
    }

    /// True for PIE executables and shared libraries (loaded at a random base).
    pub fn is_position_independent(&self) -> bool {
        matches!(self.kind, ElfKind::PieExecutable | ElfKind::SharedLibrary)
    }

    /// `DT_SONAME`, for shared libraries that have one.
    pub fn soname(&self) -> Option<&str> {
        self.soname.as_deref()
    }

    /// True if the file still has a `.symtab` (is not stripped).
    pub fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// The `PT_LOAD` segments.
    pub fn loads(&self) -> &[LoadSegment] {
        &self.loads
    }

    /// All function symbols, sorted by file offset then name, without duplicates.
    pub fn symbols(&self) -> &[FunctionSymbol] {
        &self.symbols
    }

    /// The symbols `query` names (`malloc`, `malloc@@GLIBC_2.2.5`), best first: default
    /// versions and global symbols before compatibility versions and local ones.
    pub fn lookup(&self, query: &str) -> Vec<&FunctionSymbol> {
        let mut found: Vec<&FunctionSymbol> =
            self.symbols.iter().filter(|s| s.matches(query)).collect();
        found.sort_by_key(|s| (s.version.is_some() && !s.default_version, !s.global));
        found
    }

    /// The symbol whose range `[vaddr, vaddr + size)` holds file offset `off`.
    pub fn symbol_at_offset(&self, off: u64) -> Option<&FunctionSymbol> {
        self.symbols
            .iter()
            .filter(|s| s.file_offset <= off && off < s.file_offset + s.size.max(1))
            .min_by(|a, b| {
                (off - a.file_offset, a.alias_rank()).cmp(&(off - b.file_offset, b.alias_rank()))
            })
    }

    /// File offset of link-time address `vaddr`, through the `PT_LOAD` headers.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.file_size)
            .map(|l| vaddr - l.vaddr + l.offset)
    }

    /// Link-time address of file offset `off`, through the `PT_LOAD` headers.
    pub fn offset_to_vaddr(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| off >= l.offset && off - l.offset < l.file_size)
            .map(|l| off - l.offset + l.vaddr)
    }

    /// True if file offset `off` lies in an executable segment.
    pub fn is_code_offset(&self, off: u64) -> bool {
        self.loads
            .iter()
            .any(|l| l.exec && off >= l.offset && off - l.offset < l.file_size)
    }
}

fn soname<'d>(file: &ElfFile64<'d, Endianness>, data: &'d [u8]) -> Option<String> {
    let endian = file.endian();
    let sections = file.elf_section_table();
    let (dynamic, link) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    for d in dynamic {
        if d.d_tag.get(endian) == elf::DT_SONAME {
            let off = d.d_val.get(endian) as u32;
            let name = strings.get(off).ok()?;
            return Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    None
}

fn dedupe(mut all: Vec<FunctionSymbol>) -> Vec<FunctionSymbol> {
    // Same address and name: keep one entry, preferring `.dynsym`'s (it has the version).
    all.sort_by(|a, b| {
        (a.file_offset, &a.name, a.source == SymbolSource::Symtab).cmp(&(
            b.file_offset,
            &b.name,
            b.source == SymbolSource::Symtab,
        ))
    });
    let mut out: Vec<FunctionSymbol> = Vec::with_capacity(all.len());
    for s in all {
        if let Some(last) = out.last_mut() {
            if last.file_offset == s.file_offset
                && last.name == s.name
                && (last.version.is_none() || s.version.is_none() || last.version == s.version)
            {
                if last.source != s.source {
                    last.source = SymbolSource::Both;
                }
                if last.version.is_none() {
                    last.version = s.version;
                    last.default_version = s.default_version;
                }
                last.size = last.size.max(s.size);
                last.global |= s.global;
                continue;
            }
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    #[test]
    fn mangled_names_demangle() {
        // Rust legacy: the hash is left out.
        let (d, b) = demangle("_ZN2rp4deep17h0123456789abcdefE").unwrap();
        assert_eq!((d.as_str(), b), ("rp::deep", None));
        // Rust v0.
        let (d, _) = demangle("_RNvCs1234_2rp4deep").unwrap();
        assert_eq!(d, "rp::deep");
        // C++: with and without parameters.
        let (d, b) = demangle("_ZN2ns6Parser5parseEPKc").unwrap();
        assert_eq!(d, "ns::Parser::parse(char const*)");
        assert_eq!(b.as_deref(), Some("ns::Parser::parse"));
        let (d, _) = demangle("_Znwm").unwrap();
        assert_eq!(d, "operator new(unsigned long)");
        assert_eq!(demangle("malloc"), None);
        assert_eq!(demangle("_Zgarbage"), None);
    }

    #[test]
    fn versions_split() {
        assert_eq!(split_version("malloc"), ("malloc", None, false));
        assert_eq!(
            split_version("malloc@@GLIBC_2.2.5"),
            ("malloc", Some("GLIBC_2.2.5"), true)
        );
        assert_eq!(
            split_version("memcpy@GLIBC_2.2.5"),
            ("memcpy", Some("GLIBC_2.2.5"), false)
        );
    }

    #[test]
    fn libc_malloc_has_a_versioned_dynsym_entry() {
        let img = ElfImage::open(Path::new(LIBC)).unwrap();
        // glibc's libc.so.6 has PT_INTERP (it can be run), other libraries do not.
        assert!(matches!(
            img.kind(),
            ElfKind::PieExecutable | ElfKind::SharedLibrary
        ));
        assert!(img.is_position_independent());
        assert_eq!(img.soname(), Some("libc.so.6"));
        let m = img.lookup("malloc");
        assert!(!m.is_empty());
        let m = m[0];
        assert_eq!(m.version.as_deref(), Some("GLIBC_2.2.5"));
        assert!(m.default_version);
        assert!(m.global && m.size > 0);
        assert_eq!(
            img.lookup("malloc@@GLIBC_2.2.5")[0].file_offset,
            m.file_offset
        );
        assert_eq!(
            img.lookup("malloc@GLIBC_2.2.5")[0].file_offset,
            m.file_offset
        );
        assert!(img.lookup("malloc@@GLIBC_9.9").is_empty());
        assert!(img.is_code_offset(m.file_offset));
        assert_eq!(img.vaddr_to_offset(m.vaddr), Some(m.file_offset));
        assert_eq!(img.offset_to_vaddr(m.file_offset), Some(m.vaddr));
        assert_eq!(
            img.symbol_at_offset(m.file_offset + 1).unwrap().name,
            "malloc"
        );
    }

    #[test]
    fn compat_versions_are_separate_symbols() {
        let img = ElfImage::open(Path::new(LIBC)).unwrap();
        // memcpy@GLIBC_2.2.5 (compat) and memcpy@@GLIBC_2.14 (default) on x86-64 glibc.
        let all = img.lookup("memcpy");
        assert!(!all.is_empty());
        assert!(all[0].default_version);
    }

    #[test]
    fn ls_is_stripped_but_has_dynsym() {
        let img = ElfImage::open(Path::new("/bin/ls")).unwrap();
        assert!(!img.has_symtab());
        assert!(img
            .symbols()
            .iter()
            .all(|s| s.source == SymbolSource::Dynsym));
    }
}
