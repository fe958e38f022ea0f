//! Probe specs, parsed and resolved to (file, file offset) pairs.
//!
//! Accepted forms (bpftrace and perf-probe conventions):
//!
//! | spec | meaning |
//! | --- | --- |
//! | `uprobe:PATH:SYMBOL` (`u:`) | entry of a function |
//! | `uretprobe:PATH:SYMBOL` (`ur:`), `PATH:SYMBOL%return` | return of a function |
//! | `uprobe:PATH:SYMBOL+OFF` | `OFF` bytes into a function (decimal or `0x` hex) |
//! | `uprobe:PATH:0xOFFSET` | a file offset (not a virtual address) |
//! | `uprobe:PATH:str*` | every function matching a glob (`*`, `?`, `[abc]`) |
//! | `usdt:PATH:PROVIDER:NAME`, `usdt:PATH:NAME` | every location of a USDT marker (globs too) |
//! | `lib:func` | shorthand for `uprobe:lib:func` |
//! | `uprobe:SYMBOL` | a function of the traced program's own executable |
//! | `rp::deep`, `'*::parse*'`, `libstdc++:'operator new*'` | demangled C++ and Rust names (and globs over them); a name with `::` and no file is the program's own |
//!
//! A `::` is part of a name, never the colon between file and function.
//!
//! `PATH` is a path (anything with a `/`) or a short name: `libc`, `libc.so.6`, `c`,
//! `python3`. Short names are looked up in the traced process's `/proc/PID/maps` first,
//! then in the dynamic linker's cache (`ldconfig -p`), the standard library directories,
//! and `PATH` for executables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::elf::{ElfError, ElfImage, FunctionSymbol};
use crate::maps::read_maps;
use crate::sys::Pid;

/// Entry, return or USDT probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A probe at an instruction (the entry of a function by default).
    Entry,
    /// A return probe: fires when the function returns.
    Return,
    /// A statically defined tracepoint (`.note.stapsdt`).
    Usdt,
}

/// Where in a module a probe goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A function, possibly versioned (`malloc@@GLIBC_2.2.5`), plus a byte offset into it.
    Symbol {
        /// The name as written.
        name: String,
        /// Bytes past the function's first instruction.
        offset: u64,
    },
    /// Every function whose name matches the glob.
    Glob(String),
    /// A raw file offset.
    FileOffset(u64),
    /// A USDT probe.
    Usdt {
        /// The provider, if given.
        provider: Option<String>,
        /// The probe name.
        name: String,
    },
}

/// A parsed, unresolved probe spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    /// The text it was parsed from.
    pub text: String,
    /// Entry, return or USDT.
    pub kind: ProbeKind,
    /// The module as written (`libc`, `/usr/bin/python3`); `None` means the traced
    /// program's main executable.
    pub module: Option<String>,
    /// Where in the module.
    pub location: Location,
}

/// One probe point a spec resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedProbe {
    /// Entry, return or USDT.
    pub kind: ProbeKind,
    /// The file, canonical (symlinks resolved).
    pub file: PathBuf,
    /// The function's versioned name, if the probe is in a known function.
    pub symbol: Option<String>,
    /// Offset from the function's start.
    pub symbol_offset: u64,
    /// The probe's key: the offset in the file.
    pub file_offset: u64,
    /// The function is a GNU indirect function: the probe is on its resolver.
    pub ifunc: bool,
}

impl ResolvedProbe {
    /// A name for output: `libc.so.6:malloc`, `libc.so.6:malloc+4`, `ls:0x1234`.
    pub fn display_name(&self) -> String {
        let file = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        match (&self.symbol, self.symbol_offset) {
            (Some(s), 0) => format!("{file}:{s}"),
            (Some(s), o) => format!("{file}:{s}+{o:#x}"),
            (None, _) => format!("{file}:{:#x}", self.file_offset),
        }
    }
}

/// Why a spec could not be parsed or resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The spec is not in any accepted form.
    #[error(
        "bad probe spec `{spec}`: {reason} (expected e.g. `uprobe:/path/to/file:function`, \
         `uretprobe:libc:malloc`, `libc:str*`, `uprobe:PATH:0xOFFSET`)"
    )]
    Syntax {
        /// The spec.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A spec without a module, but no program to take the executable from.
    #[error(
        "`{spec}` names no file: give one (`uprobe:/path/to/prog:{symbol}`), or trace a \
         program with `-p PID` or `-- CMD` so its executable is meant"
    )]
    NeedsProgram {
        /// The spec.
        spec: String,
        /// The symbol it named.
        symbol: String,
    },
    /// No file matched the module name.
    #[error(
        "no executable or library `{name}` found (searched: {}); give a full path",
        searched.join(", ")
    )]
    ModuleNotFound {
        /// The name as written.
        name: String,
        /// Where we looked.
        searched: Vec<String>,
    },
    /// The file is not a usable ELF file.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The function does not exist.
    #[error(
        "no function `{symbol}` in {}{}",
        file.display(),
        if suggestions.is_empty() {
            String::from(" (`probe list FILE` shows what can be probed)")
        } else {
            format!("; did you mean {}?", suggestions.join(", "))
        }
    )]
    NoSuchSymbol {
        /// The file.
        file: PathBuf,
        /// The name asked for.
        symbol: String,
        /// Up to five close names.
        suggestions: Vec<String>,
    },
    /// A glob matched nothing.
    #[error("no function matches `{pattern}` in {} (`probe list {}` shows them)", file.display(), file.display())]
    NoMatch {
        /// The file.
        file: PathBuf,
        /// The glob.
        pattern: String,
    },
    /// The address is not in the file's executable code.
    #[error(
        "offset {offset:#x} in {} is not in executable code (offsets are file offsets, as \
         `probe list` prints them)",
        file.display()
    )]
    NotCode {
        /// The file.
        file: PathBuf,
        /// The file offset.
        offset: u64,
    },
    /// `SYMBOL+OFF` runs past the end of the function.
    #[error("{symbol}+{offset:#x} is past the end of {symbol} ({size} bytes)")]
    OffsetPastEnd {
        /// The function.
        symbol: String,
        /// The offset asked for.
        offset: u64,
        /// The function's size.
        size: u64,
    },
    /// The offset falls inside an instruction: a breakpoint there would corrupt it.
    #[error(
        "{symbol}+{offset:#x} is inside the instruction at {symbol}+{start:#x} (the next one \
         starts at {symbol}+{next:#x}): a probe must be on an instruction's first byte"
    )]
    InsideInstruction {
        /// The function.
        symbol: String,
        /// The offset asked for, from the function's start.
        offset: u64,
        /// Where the enclosing instruction starts.
        start: u64,
        /// Where the next instruction starts.
        next: u64,
    },
    /// The function's bytes up to the offset are not x86-64 instructions.
    #[error(
        "cannot tell whether {symbol}+{offset:#x} starts an instruction: the bytes at \
         {symbol}+{at:#x} do not decode as x86-64 code"
    )]
    Undecodable {
        /// The function.
        symbol: String,
        /// The offset asked for.
        offset: u64,
        /// The first byte that does not decode.
        at: u64,
    },
    /// The file could not be read again to decode the function.
    #[error("reading {} to decode the probed function: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A return probe not on a function's first instruction.
    #[error(
        "a return probe must be on a function's entry, not at {symbol}+{offset:#x}: it \
         replaces the return address the function was called with, which only exists at the \
         entry (use `uprobe:` for an instruction inside it)"
    )]
    ReturnNotAtEntry {
        /// The function.
        symbol: String,
        /// The offset asked for.
        offset: u64,
    },
    /// A return probe (or `--latency`) on a Go program without `--ret-by-insn`.
    #[error(
        "refusing `{spec}`: {} is a Go program, and a return probe{} replaces the return \
         address of each call, which Go's runtime reads when it moves a goroutine's stack or \
         walks it (the program would die with `unknown pc` or `unexpected return pc`); add \
         --ret-by-insn to catch the returns by breakpoints on the function's `ret` \
         instructions instead, which leaves the stack alone",
        file.display(),
        if *latency { " (as --latency uses)" } else { "" }
    )]
    GoReturnProbe {
        /// The spec.
        spec: String,
        /// The Go program.
        file: PathBuf,
        /// It was `--latency` that asked for a return probe.
        latency: bool,
    },
    /// No USDT marker matches.
    #[error(
        "no USDT marker `{marker}` in {}{}",
        file.display(),
        if markers.is_empty() {
            String::from(" (it has no `.note.stapsdt` markers)")
        } else {
            format!("; it has {}", markers.join(", "))
        }
    )]
    NoSuchMarker {
        /// The file.
        file: PathBuf,
        /// The marker asked for (`provider:name` or `name`, possibly globs).
        marker: String,
        /// The markers the file has (`provider:name`, each once).
        markers: Vec<String>,
    },
}

fn syntax(spec: &str, reason: impl Into<String>) -> ResolveError {
    ResolveError::Syntax {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// True if `s` uses glob syntax (`*`, `?` or `[`).
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn parse_location(spec: &str, loc: &str) -> Result<Location, ResolveError> {
    if loc.is_empty() {
        return Err(syntax(spec, "the function is empty"));
    }
    if loc.starts_with("0x") || loc.starts_with("0X") {
        return parse_number(loc)
            .map(Location::FileOffset)
            .ok_or_else(|| syntax(spec, format!("`{loc}` is not a hex offset")));
    }
    if is_glob(loc) {
        match glob::Pattern::new(loc) {
            Ok(_) => return Ok(Location::Glob(loc.to_owned())),
            // A demangled C++ name holds brackets of its own: `operator delete[](void*)`.
            Err(_) if loc.contains("operator") || loc.contains("::") => {
                return Ok(Location::Symbol {
                    name: loc.to_owned(),
                    offset: 0,
                })
            }
            Err(e) => return Err(syntax(spec, format!("bad glob `{loc}`: {e}"))),
        }
    }
    if let Some((name, off)) = loc
        .rsplit_once('+')
        // `operator+`, `operator+=(...)`: a C++ operator's name holds a `+` of its own.
        .filter(|(_, off)| parse_number(off).is_some() || !loc.contains("operator"))
    {
        let offset = parse_number(off)
            .ok_or_else(|| syntax(spec, format!("`{off}` after `+` is not a number")))?;
        if name.is_empty() {
            return Err(syntax(spec, "nothing before `+`"));
        }
        return Ok(Location::Symbol {
            name: name.to_owned(),
            offset,
        });
    }
    Ok(Location::Symbol {
        name: loc.to_owned(),
        offset: 0,
    })
}

/// Parses one spec.
pub fn parse_spec(text: &str) -> Result<ProbeSpec, ResolveError> {
    let spec = text.trim();
    let (mut kind, rest, explicit) = match spec.split_once(':') {
        Some(("uprobe" | "u", rest)) => (ProbeKind::Entry, rest, true),
        Some(("uretprobe" | "ur", rest)) => (ProbeKind::Return, rest, true),
        Some(("usdt" | "U", rest)) => (ProbeKind::Usdt, rest, true),
        Some(_) => (ProbeKind::Entry, spec, false),
        None => return Err(syntax(spec, "no `:` between file and function")),
    };
    let mk = |kind, module: Option<&str>, location| ProbeSpec {
        text: spec.to_owned(),
        kind,
        module: module.map(str::to_owned),
        location,
    };
    if kind == ProbeKind::Usdt {
        let parts: Vec<&str> = rest.split(':').collect();
        let (module, provider, name) = match parts.as_slice() {
            [m, p, n] => (Some(*m), Some(*p), *n),
            [m, n] => (Some(*m), None, *n),
            [n] => (None, None, *n),
            _ => return Err(syntax(spec, "usdt takes `usdt:PATH:PROVIDER:NAME`")),
        };
        if name.is_empty() {
            return Err(syntax(spec, "the usdt probe name is empty"));
        }
        let location = Location::Usdt {
            provider: provider.map(str::to_owned),
            name: name.to_owned(),
        };
        return Ok(mk(kind, module.filter(|m| !m.is_empty()), location));
    }
    let (module, mut loc) = match split_file(rest) {
        Some((m, l)) => (Some(m), l),
        None if explicit || rest.contains("::") => (None, rest),
        None => return Err(syntax(spec, "no `:` between file and function")),
    };
    if let Some(l) = loc.strip_suffix("%return") {
        kind = ProbeKind::Return;
        loc = l;
    }
    if module == Some("") {
        return Err(syntax(spec, "the file is empty"));
    }
    Ok(mk(kind, module, parse_location(spec, loc)?))
}

/// Splits `FILE:FUNCTION` at the first `:` that is not half of a `::` (which belongs to a
/// C++ or Rust name).
fn split_file(rest: &str) -> Option<(&str, &str)> {
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b':' {
            if b.get(i + 1) == Some(&b':') {
                i += 2;
                continue;
            }
            return Some((&rest[..i], &rest[i + 1..]));
        }
        i += 1;
    }
    None
}

/// True if the file name `file` is what the short name `name` means: `libc` and
/// `libc.so` and `c` all mean `libc.so.6`; `python3` means `python3` or `python3.11`.
pub fn short_name_matches(file: &str, name: &str) -> bool {
    if file == name {
        return true;
    }
    let so_of = |n: &str| {
        file.strip_prefix(n)
            .is_some_and(|rest| rest.starts_with(".so"))
    };
    if so_of(name) || so_of(&format!("lib{name}")) {
        return true;
    }
    // An executable with a version suffix: python3 -> python3.11.
    file.strip_prefix(name).is_some_and(|rest| {
        rest.starts_with(['.', '-'])
            && rest[1..].chars().all(|c| c.is_ascii_digit() || c == '.')
            && rest.len() > 1
    })
}

/// The standard library directories searched after `ld.so.cache`.
pub const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// The x86-64 libraries in the dynamic linker's cache, as (soname, path), from
/// `ldconfig -p` (read once).
pub fn ld_cache() -> &'static [(String, PathBuf)] {
    static CACHE: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let out = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
            .iter()
            .find_map(|p| std::process::Command::new(p).arg("-p").output().ok())
            .filter(|o| o.status.success());
        out.map(|o| parse_ldconfig(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default()
    })
}

/// Parses `ldconfig -p` output, keeping 64-bit x86 entries.
pub fn parse_ldconfig(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|l| {
            let (left, path) = l.split_once(" => ")?;
            let left = left.trim();
            let (name, tags) = left.split_once(' ')?;
            tags.contains("x86-64")
                .then(|| (name.to_owned(), PathBuf::from(path.trim())))
        })
        .collect()
}

/// True if `p` is a regular file starting with the ELF magic.
pub fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && p.is_file()
        && magic == *b"\x7fELF"
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Finds the file a module name means; see the module docs for the search order.
pub fn find_module(name: &str, pid: Option<Pid>) -> Result<PathBuf, ResolveError> {
    let mut searched = Vec::new();
    if name.contains('/') {
        let p = Path::new(name);
        if p.exists() {
            return Ok(canonical(p));
        }
        searched.push(name.to_owned());
        return Err(ResolveError::ModuleNotFound {
            name: name.to_owned(),
            searched,
        });
    }
    if let Some(pid) = pid {
        searched.push(format!("/proc/{pid}/maps"));
        if let Ok(maps) = read_maps(pid) {
            if let Some(m) = maps
                .iter()
                .find(|m| m.is_file() && short_name_matches(m.file_name(), name))
            {
                return Ok(canonical(Path::new(&m.path)));
            }
        }
    }
    searched.push("ldconfig -p".to_owned());
    if let Some((_, p)) = ld_cache()
        .iter()
        .filter(|(so, _)| short_name_matches(so, name))
        .min_by_key(|(so, _)| (so != name, so.len()))
    {
        return Ok(canonical(p));
    }
    for dir in LIB_DIRS {
        searched.push((*dir).to_owned());
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut hits: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| short_name_matches(&e.file_name().to_string_lossy(), name))
            .filter(|e| is_elf(&e.path()))
            .map(|e| e.path())
            .collect();
        hits.sort_by_key(|p| p.as_os_str().len());
        if let Some(p) = hits.first() {
            return Ok(canonical(p));
        }
    }
    searched.push("PATH".to_owned());
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    // Only ELF files: skip wrapper scripts (pyenv shims, launchers) to the real binary.
    if let Some(p) = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_elf(p))
    {
        return Ok(canonical(&p));
    }
    Err(ResolveError::ModuleNotFound {
        name: name.to_owned(),
        searched,
    })
}

/// Up to five function names close to `query` (edit distance, or containing it).
pub fn suggestions(image: &ElfImage, query: &str) -> Vec<String> {
    let (base, _, _) = crate::elf::split_version(query);
    let limit = (base.len() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = image
        .symbols()
        .iter()
        .flat_map(|s| {
            core::iter::once(s.name.as_str())
                .chain(s.demangled_base.as_deref())
                .chain(s.demangled.as_deref())
        })
        .filter_map(|n| {
            let d = strsim::levenshtein(base, n);
            let near = d <= limit || (base.len() >= 4 && n.contains(base));
            near.then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.dedup_by_key(|(_, n)| *n);
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_owned())
        .collect()
}

/// Resolves specs against files, caching each parsed ELF file.
#[derive(Debug, Default)]
pub struct Resolver {
    pid: Option<Pid>,
    images: HashMap<PathBuf, ElfImage>,
}

impl Resolver {
    /// A resolver for process `pid` (its maps are searched first, and its executable is
    /// the module of specs that name none), or for no process.
    pub fn new(pid: Option<Pid>) -> Self {
        Resolver {
            pid,
            images: HashMap::new(),
        }
    }

    /// The parsed ELF file at `path` (canonical), read on first use.
    pub fn image(&mut self, path: &Path) -> Result<&ElfImage, ResolveError> {
        if !self.images.contains_key(path) {
            let img = ElfImage::open(path)?;
            self.images.insert(path.to_path_buf(), img);
        }
        Ok(&self.images[path])
    }

    /// The file `spec` is about.
    pub fn module_path(&self, spec: &ProbeSpec) -> Result<PathBuf, ResolveError> {
        match (&spec.module, self.pid) {
            (Some(m), pid) => find_module(m, pid),
            (None, Some(pid)) => std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| canonical(&p))
                .map_err(|_| ResolveError::ModuleNotFound {
                    name: format!("/proc/{pid}/exe"),
                    searched: vec![format!("/proc/{pid}/exe")],
                }),
            (None, None) => Err(ResolveError::NeedsProgram {
                spec: spec.text.clone(),
                symbol: match &spec.location {
                    Location::Symbol { name, .. } => name.clone(),
                    Location::Glob(g) => g.clone(),
                    Location::FileOffset(o) => format!("{o:#x}"),
                    Location::Usdt { name, .. } => name.clone(),
                },
            }),
        }
    }

    /// Resolves one spec into its probe points (a glob may give thousands).
    pub fn resolve(&mut self, spec: &ProbeSpec) -> Result<Vec<ResolvedProbe>, ResolveError> {
        let path = self.module_path(spec)?;
        if spec.kind == ProbeKind::Usdt {
            return crate::usdt::resolve_usdt(&path, &spec.location);
        }
        let image = self.image(&path)?;
        resolve_in(image, spec.kind, &spec.location)
    }

    /// Parses and resolves a spec given as text.
    pub fn resolve_text(&mut self, text: &str) -> Result<Vec<ResolvedProbe>, ResolveError> {
        let spec = parse_spec(text)?;
        self.resolve(&spec)
    }
}

fn probe_at(image: &ElfImage, kind: ProbeKind, s: &FunctionSymbol, off: u64) -> ResolvedProbe {
    ResolvedProbe {
        kind,
        file: image.path().to_path_buf(),
        symbol: Some(s.display_name()),
        symbol_offset: off,
        file_offset: s.file_offset + off,
        ifunc: s.ifunc,
    }
}

/// Refuses a site inside an instruction, and a return probe anywhere but the entry.
fn check_site(
    image: &ElfImage,
    kind: ProbeKind,
    s: &FunctionSymbol,
    offset: u64,
) -> Result<(), ResolveError> {
    if offset == 0 {
        return Ok(());
    }
    if kind == ProbeKind::Return {
        return Err(ResolveError::ReturnNotAtEntry {
            symbol: s.name.clone(),
            offset,
        });
    }
    let symbol = s.name.clone();
    match crate::insn::check_boundary(image.path(), s, offset) {
        Ok(crate::insn::Boundary::Starts) => Ok(()),
        Ok(crate::insn::Boundary::Inside { start, next }) => Err(ResolveError::InsideInstruction {
            symbol,
            offset,
            start,
            next,
        }),
        Ok(crate::insn::Boundary::Undecodable { at }) => {
            Err(ResolveError::Undecodable { symbol, offset, at })
        }
        Err(e) => Err(ResolveError::Unreadable {
            path: image.path().to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Refuses a probe point of kind `kind` in `image` that would replace return addresses
/// (a return probe, or any function probe with `--latency`) when `image` is a Go program;
/// `--ret-by-insn` is the way there (see `tracer::ret_insn`).
pub fn refuse_go_return(
    image: &ElfImage,
    spec: &str,
    kind: ProbeKind,
    latency: bool,
) -> Result<(), ResolveError> {
    let returns = kind == ProbeKind::Return || (latency && kind == ProbeKind::Entry);
    if returns && image.is_go() {
        return Err(ResolveError::GoReturnProbe {
            spec: spec.to_owned(),
            file: image.path().to_path_buf(),
            latency: latency && kind == ProbeKind::Entry,
        });
    }
    Ok(())
}

/// Resolves a location inside one ELF file.
pub fn resolve_in(
    image: &ElfImage,
    kind: ProbeKind,
    location: &Location,
) -> Result<Vec<ResolvedProbe>, ResolveError> {
    let file = image.path().to_path_buf();
    match location {
        Location::Symbol { name, offset } => {
            let found = image.lookup(name);
            let Some(s) = found.first() else {
                return Err(ResolveError::NoSuchSymbol {
                    file,
                    symbol: name.clone(),
                    suggestions: suggestions(image, name),
                });
            };
            if *offset > 0 && s.size > 0 && *offset >= s.size {
                return Err(ResolveError::OffsetPastEnd {
                    symbol: name.clone(),
                    offset: *offset,
                    size: s.size,
                });
            }
            check_site(image, kind, s, *offset)?;
            Ok(vec![probe_at(image, kind, s, *offset)])
        }
        Location::Glob(pattern) => {
            // A name that reads as a glob but is a function's exact (demangled) name:
            // `std::to_string[abi:cxx11](int)`, `operator new[](unsigned long)`.
            if let Some(s) = image.lookup(pattern).first() {
                check_site(image, kind, s, 0)?;
                return Ok(vec![probe_at(image, kind, s, 0)]);
            }
            let pat = glob::Pattern::new(pattern).map_err(|e| syntax(pattern, e.to_string()))?;
            // One probe per address: aliases (`malloc`, `__libc_malloc`) share an offset.
            // Prefer the global, default-versioned, least-underscored, shortest name.
            let mut best: HashMap<u64, &FunctionSymbol> = HashMap::new();
            for s in image.symbols() {
                if !s.glob_matches(&pat) {
                    continue;
                }
                best.entry(s.file_offset)
                    .and_modify(|cur| {
                        if s.alias_rank() < cur.alias_rank() {
                            *cur = s;
                        }
                    })
                    .or_insert(s);
            }
            if best.is_empty() {
                return Err(ResolveError::NoMatch {
                    file,
                    pattern: pattern.clone(),
                });
            }
            let mut out: Vec<ResolvedProbe> =
                best.values().map(|s| probe_at(image, kind, s, 0)).collect();
            out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            Ok(out)
        }
        Location::FileOffset(off) => {
            if !image.is_code_offset(*off) {
                return Err(ResolveError::NotCode { file, offset: *off });
            }
            let sym = image.symbol_at_offset(*off);
            // Without a containing symbol there is nothing to decode from: as the kernel's
            // uprobes, trust the offset.
            if let Some(s) = sym {
                check_site(image, kind, s, off - s.file_offset)?;
            }
            Ok(vec![ResolvedProbe {
                kind,
                file,
                symbol: sym.map(FunctionSymbol::display_name),
                symbol_offset: sym.map_or(0, |s| off - s.file_offset),
                file_offset: *off,
                ifunc: sym.is_some_and(|s| s.ifunc),
            }])
        }
        Location::Usdt { .. } => crate::usdt::resolve_usdt(&file, location),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_colons_belong_to_names() {
        let s = parse_spec("rp::deep").unwrap();
        assert_eq!(s.module, None);
        assert_eq!(
            s.location,
            Location::Symbol {
                name: "rp::deep".into(),
                offset: 0
            }
        );
        let s = parse_spec("libstdc++:operator new*").unwrap();
        assert_eq!(s.module.as_deref(), Some("libstdc++"));
        assert_eq!(s.location, Location::Glob("operator new*".into()));
        let s = parse_spec("*::parse*").unwrap();
        assert_eq!(
            (s.module, s.location),
            (None, Location::Glob("*::parse*".into()))
        );
        let s = parse_spec("ur:./prog:ns::f+0").unwrap();
        assert_eq!(s.module.as_deref(), Some("./prog"));
        assert_eq!(s.kind, ProbeKind::Return);
        let s = parse_spec("./prog:operator+=(int)").unwrap();
        assert_eq!(
            s.location,
            Location::Symbol {
                name: "operator+=(int)".into(),
                offset: 0
            }
        );
        assert!(parse_spec("libc:malloc+x").is_err());
    }

    #[test]
    fn parses_every_form() {
        let s = parse_spec("uprobe:/bin/ls:main").unwrap();
        assert_eq!(s.kind, ProbeKind::Entry);
        assert_eq!(s.module.as_deref(), Some("/bin/ls"));
        assert_eq!(
            s.location,
            Location::Symbol {
                name: "main".into(),
                offset: 0
            }
        );
        let s = parse_spec("ur:libc:malloc").unwrap();
        assert_eq!(s.kind, ProbeKind::Return);
        let s = parse_spec("libc:malloc%return").unwrap();
        assert_eq!(s.kind, ProbeKind::Return);
        assert_eq!(s.module.as_deref(), Some("libc"));
        let s = parse_spec("libc:malloc+0x10").unwrap();
        assert_eq!(
            s.location,
            Location::Symbol {
                name: "malloc".into(),
                offset: 16
            }
        );
        let s = parse_spec("uprobe:/x:0x1a2b").unwrap();
        assert_eq!(s.location, Location::FileOffset(0x1a2b));
        let s = parse_spec("uprobe:libc:str*").unwrap();
        assert_eq!(s.location, Location::Glob("str*".into()));
        let s = parse_spec("libc:malloc@@GLIBC_2.2.5").unwrap();
        assert!(
            matches!(s.location, Location::Symbol { ref name, .. } if name == "malloc@@GLIBC_2.2.5")
        );
        let s = parse_spec("usdt:/usr/bin/python3:python:function__entry").unwrap();
        assert_eq!(
            s.location,
            Location::Usdt {
                provider: Some("python".into()),
                name: "function__entry".into()
            }
        );
        let s = parse_spec("uprobe:main").unwrap();
        assert_eq!(s.module, None);
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "malloc",
            "uprobe:libc:",
            "libc:0xzz",
            "libc:f+x",
            ":f",
            "libc:[a",
        ] {
            let e = parse_spec(bad).unwrap_err();
            assert!(matches!(e, ResolveError::Syntax { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn short_names() {
        assert!(short_name_matches("libc.so.6", "libc"));
        assert!(short_name_matches("libc.so.6", "libc.so.6"));
        assert!(short_name_matches("libc.so.6", "libc.so"));
        assert!(short_name_matches("libc.so.6", "c"));
        assert!(short_name_matches("python3.11", "python3"));
        assert!(short_name_matches("python3", "python3"));
        assert!(!short_name_matches("libcrypt.so.1", "libc"));
        assert!(!short_name_matches("libcap.so.2", "c"));
        assert!(!short_name_matches("python3-config", "python3"));
    }

    #[test]
    fn parses_ldconfig_output() {
        let text = "3 libs found in cache `/etc/ld.so.cache'\n\
            \tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\n\
            \tlibc.so.6 (libc6) => /lib32/libc.so.6\n\
            \tlibm.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libm.so.6\n";
        let v = parse_ldconfig(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "libc.so.6");
        assert_eq!(v[1].1, PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"));
    }

    #[test]
    fn libc_malloc_resolves_by_every_name() {
        let mut r = Resolver::new(None);
        let a = r.resolve_text("uprobe:libc:malloc").unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].file.ends_with("libc.so.6"));
        assert_eq!(a[0].symbol.as_deref(), Some("malloc@@GLIBC_2.2.5"));
        for other in [
            "libc.so.6:malloc",
            "c:malloc",
            "/lib/x86_64-linux-gnu/libc.so.6:malloc",
            "libc:malloc@@GLIBC_2.2.5",
        ] {
            let b = r.resolve_text(other).unwrap();
            assert_eq!(b[0].file_offset, a[0].file_offset, "{other}");
            assert_eq!(b[0].file, a[0].file, "{other}");
        }
        let plus = r.resolve_text("libc:malloc+4").unwrap();
        assert_eq!(plus[0].file_offset, a[0].file_offset + 4);
        let raw = r
            .resolve_text(&format!("libc:{:#x}", a[0].file_offset + 4))
            .unwrap();
        assert_eq!(raw[0].symbol.as_deref(), Some("malloc@@GLIBC_2.2.5"));
        assert_eq!(raw[0].symbol_offset, 4);
        assert_eq!(raw[0].display_name(), "libc.so.6:malloc@@GLIBC_2.2.5+0x4");
    }

    #[test]
    fn globs_select_many_functions_once_each() {
        let mut r = Resolver::new(None);
        let all = r.resolve_text("uprobe:libc:str*").unwrap();
        assert!(all.len() > 40, "{}", all.len());
        let mut offs: Vec<u64> = all.iter().map(|p| p.file_offset).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), all.len());
        assert!(all
            .iter()
            .any(|p| p.symbol.as_deref().is_some_and(|s| s.starts_with("strlen"))));
        let one = r.resolve_text("libc:mallo?").unwrap();
        assert_eq!(one.len(), 1);
        let e = r.resolve_text("libc:zz_no_such_*").unwrap_err();
        assert!(matches!(e, ResolveError::NoMatch { .. }), "{e}");
    }

    #[test]
    fn the_dynamic_linkers_debug_hook_resolves() {
        // The dlopen notification breakpoint (r_brk) of issue 4.4.
        let mut r = Resolver::new(None);
        let p = r.resolve_text("ld-linux-x86-64:_dl_debug_state").unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].file.to_string_lossy().contains("ld-linux-x86-64"));
    }

    #[test]
    fn missing_symbols_suggest_close_names() {
        let mut r = Resolver::new(None);
        let e = r.resolve_text("libc:mallocc").unwrap_err();
        let ResolveError::NoSuchSymbol { suggestions, .. } = &e else {
            panic!("{e}");
        };
        assert!(suggestions.len() <= 5 && !suggestions.is_empty());
        assert_eq!(suggestions[0], "malloc");
        assert!(e.to_string().contains("did you mean malloc"), "{e}");
    }

    #[test]
    fn stripped_and_interpreter_binaries_resolve() {
        let mut r = Resolver::new(None);
        let ls = r.resolve_text("/bin/ls:_obstack_begin").unwrap();
        assert_eq!(ls.len(), 1);
        assert!(ls[0].file.ends_with("ls"));
        let py = r.resolve_text("python3:PyObject_GetAttr").unwrap();
        assert!(py[0].file.to_string_lossy().contains("python3"));
        let py2 = r
            .resolve_text("/usr/bin/python3.11:Py_Initialize*")
            .unwrap();
        assert!(!py2.is_empty());
        let e = r.resolve_text("no_such_library_xyz:f").unwrap_err();
        assert!(matches!(e, ResolveError::ModuleNotFound { .. }), "{e}");
        let e = r.resolve_text("uprobe:main").unwrap_err();
        assert!(matches!(e, ResolveError::NeedsProgram { .. }), "{e}");
    }
}
