//! The SDT parsers against real binaries: a C program with `<sys/sdt.h>` markers compiled at
//! test time (several ways), Debian's `python3.11`, and every system binary and library that
//! carries a `.note.stapsdt` section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, ReadRef};
use probe_core::sdt::{
    vaddr_to_offset, ArgLoc, Class, Endian, SdtArg, SdtNote, SdtNotes, Segment, X86Reg,
};

/// What one ELF file says about its markers.
struct Markers {
    /// The raw file.
    data: Vec<u8>,
    /// `.note.stapsdt` contents.
    notes: Vec<u8>,
    class: Class,
    endian: Endian,
    /// Address of `.stapsdt.base`, if the file has one.
    stapsdt_base: Option<u64>,
    /// `PT_LOAD` segments.
    segments: Vec<Segment>,
    /// `.probes` (the semaphores' section): address range.
    probes: Option<(u64, u64)>,
    /// Symbol addresses by name.
    symbols: BTreeMap<String, u64>,
}

fn load(path: &Path) -> Option<Markers> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let notes = file.section_by_name(".note.stapsdt")?.data().ok()?.to_vec();
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
    let stapsdt_base = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let segments = file
        .segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            Segment::from((s.address(), s.size(), offset, filesz))
        })
        .collect();
    let probes = file
        .section_by_name(".probes")
        .map(|s| (s.address(), s.address() + s.size()));
    let symbols = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect();
    Some(Markers {
        data,
        notes,
        class,
        endian,
        stapsdt_base,
        segments,
        probes,
        symbols,
    })
}

impl Markers {
    fn parse(&self) -> Vec<SdtNote<'_>> {
        SdtNotes::new(&self.notes, self.class, self.endian)
            .map(|n| n.expect("every note parses"))
            .collect()
    }

    /// The marker's file offset, after the prelink adjustment.
    fn pc_offset(&self, n: &SdtNote<'_>) -> u64 {
        let pc = n
            .adjusted_pc(self.stapsdt_base.unwrap_or(n.base))
            .expect("adjusted pc");
        vaddr_to_offset(&self.segments, pc).expect("pc in a PT_LOAD segment")
    }

    /// Panics unless the marker's adjusted address holds a `nop` in the file.
    fn assert_nop(&self, n: &SdtNote<'_>) {
        let off = self.pc_offset(n) as usize;
        assert_eq!(
            self.data[off], 0x90,
            "{}:{} at {:#x} (file {off:#x}) is not a nop",
            n.provider, n.name, n.pc
        );
    }
}

/// Every argument of a note, parsed.
fn args<'a>(n: &SdtNote<'a>) -> Vec<SdtArg<'a>> {
    n.arguments()
        .map(|a| a.unwrap_or_else(|e| panic!("{}:{} args {:?}: {e}", n.provider, n.name, n.args)))
        .collect()
}

fn sdt_header() -> Option<&'static str> {
    [
        "/usr/include/x86_64-linux-gnu/sys/sdt.h",
        "/usr/include/sys/sdt.h",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

const DEMO: &str = r#"
#ifdef WITH_SEMAPHORES
#define _SDT_HAS_SEMAPHORES 1
#endif
#include <sys/sdt.h>

#ifdef WITH_SEMAPHORES
/* As <sys/sdt.h> documents: one `provider_name_semaphore` per marker name, in `.probes`. */
unsigned short demo_tick_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short demo_calc_semaphore __attribute__((unused)) __attribute__((section(".probes")));
#endif

int counter = 5;
long arr[8];
double dv = 1.5;
char cc = 3;
short ss = -2;

__attribute__((noinline)) long calc(long a, int b, double d, long *p, int i) {
    /* Two markers with the same provider and name: two notes, one semaphore. */
    DTRACE_PROBE5(demo, calc, a, b, d, p[i], arr[i]);
    STAP_PROBE4(demo, calc, counter, cc, ss, 42);
    return a + b;
}

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        DTRACE_PROBE2(demo, tick, i, argv[i]);
    }
    STAP_PROBE1(demo, tick, argc);
    return (int)calc(argc, argc * 2, dv, arr, argc) == 0;
}
"#;

/// Compiles [`DEMO`] with `flags` into a fresh temporary directory; `None` (with the reason
/// printed) when there is no C compiler or no `<sys/sdt.h>`.
fn compile(tag: &str, flags: &[&str]) -> Option<PathBuf> {
    let Some(_) = sdt_header() else {
        println!("skipped: no <sys/sdt.h> (Debian: apt-get install systemtap-sdt-dev)");
        return None;
    };
    let dir = std::env::temp_dir().join(format!("probe-sdt-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("demo.c");
    std::fs::write(&src, DEMO).expect("write source");
    let exe = dir.join("demo");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = match Command::new(&cc)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: no C compiler ({cc}: {e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{cc} {flags:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

/// Removes the temporary directory [`compile`] made.
fn cleanup(exe: &Path) {
    if let Some(dir) = exe.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Notes grouped by `provider:name`, in file order.
fn by_name<'a>(notes: &[SdtNote<'a>]) -> BTreeMap<String, Vec<SdtNote<'a>>> {
    let mut m: BTreeMap<String, Vec<SdtNote<'a>>> = BTreeMap::new();
    for n in notes {
        m.entry(format!("{}:{}", n.provider, n.name))
            .or_default()
            .push(*n);
    }
    m
}

fn check_demo(tag: &str, flags: &[&str], semaphores: bool) {
    let Some(exe) = compile(tag, flags) else {
        return;
    };
    let m = load(&exe).expect("an ELF file with .note.stapsdt");
    cleanup(&exe);
    assert_eq!((m.class, m.endian), (Class::Elf64, Endian::Little));
    let notes = m.parse();
    let names = by_name(&notes);
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        ["demo:calc", "demo:tick"],
        "{tag}"
    );
    let (calc, tick) = (&names["demo:calc"], &names["demo:tick"]);
    assert_eq!((calc.len(), tick.len()), (2, 2), "{tag}");

    for n in &notes {
        assert_eq!(Some(n.base), m.stapsdt_base, "{tag}: recorded base");
        m.assert_nop(n);
        // Every symbol an operand names exists in the file.
        for a in args(n) {
            let sym = match a.loc {
                ArgLoc::RipRel { symbol, .. } | ArgLoc::Mem { symbol, .. } => symbol,
                _ => None,
            };
            if let Some(s) = sym {
                assert!(m.symbols.contains_key(s), "{tag}: {s} in {:?}", n.args);
            }
        }
    }
    // A marker moved by a prelinker: everything moves by the same amount.
    let moved = calc[0]
        .adjusted_pc(calc[0].base + 0x10000)
        .expect("adjusted");
    assert_eq!(moved, calc[0].pc + 0x10000);

    if semaphores {
        // Markers of one name share a semaphore; different names have different ones.
        assert_ne!(calc[0].semaphore, 0);
        assert_eq!(calc[0].semaphore, calc[1].semaphore, "{tag}");
        assert_eq!(tick[0].semaphore, tick[1].semaphore, "{tag}");
        assert_ne!(calc[0].semaphore, tick[0].semaphore, "{tag}");
        let (lo, hi) = m.probes.expect(".probes section");
        for n in [calc[0], tick[0]] {
            let sema = n
                .adjusted_semaphore(m.stapsdt_base.expect("base"))
                .expect("adjusted semaphore");
            assert!((lo..hi).contains(&sema), "{tag}: semaphore {sema:#x}");
            let off = vaddr_to_offset(&m.segments, sema).expect("semaphore in the file") as usize;
            assert_eq!(&m.data[off..off + 2], [0, 0], "semaphore starts at 0");
        }
        assert_eq!(
            m.symbols.get("demo_calc_semaphore"),
            Some(&calc[0].semaphore)
        );
        assert_eq!(
            m.symbols.get("demo_tick_semaphore"),
            Some(&tick[0].semaphore)
        );
    } else {
        assert!(notes.iter().all(|n| n.semaphore == 0), "{tag}");
        assert_eq!(calc[0].adjusted_semaphore(calc[0].base + 8), Some(0));
    }

    // Arguments: counts, and what every compiler must produce for these types.
    let calc1 = args(&calc[0]);
    let calc2 = args(&calc[1]);
    assert_eq!((calc1.len(), calc2.len()), (5, 4), "{tag}");
    assert_eq!((calc1[0].size, calc1[0].signed), (8, true), "{tag}: long a");
    assert_eq!((calc1[1].size, calc1[1].signed), (4, true), "{tag}: int b");
    assert_eq!(
        (calc1[2].size, calc1[2].float),
        (8, true),
        "{tag}: double d"
    );
    assert_eq!(
        (calc2[1].size, calc2[1].signed),
        (1, true),
        "{tag}: char cc"
    );
    assert_eq!(
        (calc2[2].size, calc2[2].signed),
        (2, true),
        "{tag}: short ss"
    );
    assert_eq!(calc2[3].loc, ArgLoc::Imm(42), "{tag}: constant");
    assert_eq!(args(&tick[0]).len(), 2);
    assert_eq!(args(&tick[1]).len(), 1);
    println!("{tag}:");
    for n in &notes {
        println!(
            "  {}:{} pc {:#x} sema {:#x} args {:?}",
            n.provider, n.name, n.pc, n.semaphore, n.args
        );
    }
}

#[test]
fn demo_pie_optimised() {
    check_demo("O2", &["-O2", "-DWITH_SEMAPHORES"], true);
}

#[test]
fn demo_unoptimised() {
    check_demo("O0", &["-O0", "-DWITH_SEMAPHORES"], true);
}

#[test]
fn demo_non_pic() {
    check_demo(
        "nopie",
        &["-O2", "-no-pie", "-fno-pic", "-DWITH_SEMAPHORES"],
        true,
    );
}

#[test]
fn demo_without_semaphores() {
    check_demo("nosema", &["-O2"], false);
}

#[test]
fn demo_known_operand_forms() {
    // At -O0 the first marker's arguments live in the frame: `N@-off(%rbp)`.
    let Some(exe) = compile(
        "O0-forms",
        &["-O0", "-fno-omit-frame-pointer", "-DWITH_SEMAPHORES"],
    ) else {
        return;
    };
    let m = load(&exe).expect("markers");
    cleanup(&exe);
    let notes = m.parse();
    let calc = &by_name(&notes)["demo:calc"];
    let a = args(&calc[0])[0];
    match a.loc {
        ArgLoc::Mem {
            base: Some(b),
            index: None,
            disp,
            ..
        } => {
            assert_eq!(b, X86Reg::from_name("rbp").unwrap());
            assert!(disp < 0, "{:?}", calc[0].args);
        }
        other => panic!("{other:?} in {:?}", calc[0].args),
    }
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/python3.11");
    if p.exists() {
        Some(p)
    } else {
        println!("skipped: no /usr/bin/python3.11");
        None
    }
}

#[test]
fn python311_markers() {
    let Some(path) = python() else {
        return;
    };
    let Some(m) = load(&path) else {
        println!("skipped: {} has no .note.stapsdt", path.display());
        return;
    };
    let notes = m.parse();
    let names = by_name(&notes);
    for n in &notes {
        assert_eq!(n.provider, "python");
        assert_ne!(n.semaphore, 0, "{}", n.name);
        m.assert_nop(n);
        let sema = n
            .adjusted_semaphore(m.stapsdt_base.unwrap_or(n.base))
            .unwrap();
        vaddr_to_offset(&m.segments, sema).expect("semaphore in the file");
        println!(
            "python:{} at {:#x} sema {:#x}: {}",
            n.name, n.pc, n.semaphore, n.args
        );
    }
    // The markers CPython documents (Doc/howto/instrumentation.rst), with their argument
    // counts and sizes: (filename, funcname, lineno) and friends.
    for (name, sizes) in [
        ("function__entry", &[8, 8, 4][..]),
        ("function__return", &[8, 8, 4]),
        ("line", &[8, 8, 4]),
        ("gc__start", &[4]),
        ("gc__done", &[8]),
        ("import__find__load__start", &[8]),
        ("import__find__load__done", &[8, 4]),
        ("audit", &[8, 8]),
    ] {
        let ns = names
            .get(&format!("python:{name}"))
            .unwrap_or_else(|| panic!("python:{name} missing"));
        for n in ns {
            let got: Vec<u8> = args(n).iter().map(|a| a.size).collect();
            assert_eq!(got, sizes, "python:{name} {:?}", n.args);
        }
    }
    // The integer arguments (line numbers, gc generation, found-flag) are signed ints.
    let entry = &names["python:function__entry"][0];
    let third = args(entry)[2];
    assert!(third.signed && third.size == 4);
}

/// Regular files directly inside `dir`.
fn files_in(dir: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_system_marker_parses() {
    let mut files = 0;
    let mut notes_seen = 0;
    let mut args_seen = 0;
    for path in files_in("/usr/bin")
        .into_iter()
        .chain(files_in("/usr/lib/x86_64-linux-gnu"))
    {
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        // Read lazily: most files have no SDT notes and are never read in full.
        let cache = ReadCache::new(f);
        let Ok(head) = cache.read_bytes_at(0, 4) else {
            continue;
        };
        if head != b"\x7fELF" {
            continue;
        }
        let Ok(file) = object::File::parse(&cache) else {
            continue;
        };
        if file.section_by_name(".note.stapsdt").is_none() {
            continue;
        }
        drop(file);
        let m = load(&path).expect("ELF with notes");
        files += 1;
        for n in m.parse() {
            notes_seen += 1;
            args_seen += args(&n).len();
            m.assert_nop(&n);
        }
    }
    println!("{files} files, {notes_seen} notes, {args_seen} arguments");
}
