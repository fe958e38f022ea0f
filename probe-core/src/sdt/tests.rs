//! Unit tests of the SDT parsers over static and hand-built fixtures.

use core::fmt::Write;

use heapless::{String, Vec};

use super::*;

/// The first two notes of Debian's `/usr/bin/python3.11` `.note.stapsdt` (`python:audit`,
/// `python:gc__done`), byte for byte.
static PYTHON_NOTES: [u8; 140] = [
    0x08, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
    0x73, 0x74, 0x61, 0x70, 0x73, 0x64, 0x74, 0x00, 0x2a, 0x51, 0x42, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0xa0, 0xc5, 0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x76, 0x42, 0xa8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x79, 0x74, 0x68, //
    0x6f, 0x6e, 0x00, 0x61, 0x75, 0x64, 0x69, 0x74, 0x00, 0x38, 0x40, 0x25, //
    0x72, 0x62, 0x78, 0x20, 0x38, 0x40, 0x25, 0x72, 0x31, 0x35, 0x00, 0x00, //
    0x08, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
    0x73, 0x74, 0x61, 0x70, 0x73, 0x64, 0x74, 0x00, 0x3b, 0x87, 0x42, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0xa0, 0xc5, 0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x70, 0x42, 0xa8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x79, 0x74, 0x68, //
    0x6f, 0x6e, 0x00, 0x67, 0x63, 0x5f, 0x5f, 0x64, 0x6f, 0x6e, 0x65, 0x00, //
    0x2d, 0x38, 0x40, 0x25, 0x72, 0x31, 0x32, 0x00,
];

type Blob = Vec<u8, 1024>;

fn put_u32(b: &mut Blob, v: u32, e: Endian) {
    let bytes = match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    };
    b.extend_from_slice(&bytes).unwrap();
}

fn pad4(b: &mut Blob) {
    while b.len() % 4 != 0 {
        b.push(0).unwrap();
    }
}

/// Appends one raw note (any name, type and descriptor), padded the ELF way.
fn raw_note(b: &mut Blob, e: Endian, name: &[u8], ty: u32, desc: &[u8]) {
    put_u32(b, name.len() as u32, e);
    put_u32(b, desc.len() as u32, e);
    put_u32(b, ty, e);
    b.extend_from_slice(name).unwrap();
    pad4(b);
    b.extend_from_slice(desc).unwrap();
    pad4(b);
}

/// The descriptor `<sys/sdt.h>` would emit.
fn desc(
    c: Class,
    e: Endian,
    addrs: [u64; 3],
    provider: &str,
    name: &str,
    args: &str,
) -> Vec<u8, 512> {
    let mut d = Vec::new();
    for a in addrs {
        match (c, e) {
            (Class::Elf64, Endian::Little) => d.extend_from_slice(&a.to_le_bytes()),
            (Class::Elf64, Endian::Big) => d.extend_from_slice(&a.to_be_bytes()),
            (Class::Elf32, Endian::Little) => d.extend_from_slice(&(a as u32).to_le_bytes()),
            (Class::Elf32, Endian::Big) => d.extend_from_slice(&(a as u32).to_be_bytes()),
        }
        .unwrap();
    }
    for s in [provider, name, args] {
        d.extend_from_slice(s.as_bytes()).unwrap();
        d.push(0).unwrap();
    }
    d
}

fn note(
    b: &mut Blob,
    c: Class,
    e: Endian,
    addrs: [u64; 3],
    provider: &str,
    name: &str,
    args: &str,
) {
    let d = desc(c, e, addrs, provider, name, args);
    raw_note(b, e, STAPSDT_NOTE_NAME, NT_STAPSDT, &d);
}

fn one(data: &[u8], c: Class, e: Endian) -> Result<SdtNote<'_>, SdtError> {
    SdtNotes::new(data, c, e).next().expect("a note")
}

#[test]
fn python_fixture() {
    let notes: Vec<_, 4> = SdtNotes::new(&PYTHON_NOTES, Class::Elf64, Endian::Little)
        .map(|n| n.unwrap())
        .collect();
    assert_eq!(notes.len(), 2);
    let audit = notes[0];
    assert_eq!((audit.provider, audit.name), ("python", "audit"));
    assert_eq!(
        (audit.pc, audit.base, audit.semaphore),
        (0x42512a, 0x8cc5a0, 0xa84276)
    );
    assert_eq!(audit.args, "8@%rbx 8@%r15");
    let args: Vec<_, 4> = audit.arguments().map(|a| a.unwrap()).collect();
    assert_eq!(args.len(), 2);
    assert_eq!(args[1].loc, ArgLoc::Reg(X86Reg::full(Gpr::R15)));
    let gc = notes[1];
    assert_eq!((gc.name, gc.args, gc.pc), ("gc__done", "-8@%r12", 0x42873b));
    assert_eq!(gc.adjusted_pc(0x8cc5a0), Some(0x42873b));
}

#[test]
fn all_classes_and_byte_orders() {
    for c in [Class::Elf32, Class::Elf64] {
        for e in [Endian::Little, Endian::Big] {
            let mut b = Blob::new();
            note(&mut b, c, e, [0x1000, 0x2000, 0x3000], "prov", "first", "");
            note(
                &mut b,
                c,
                e,
                [0x1010, 0x2000, 0],
                "prov",
                "second",
                "-4@%edi 8@-8(%rbp)",
            );
            let mut it = SdtNotes::new(&b, c, e);
            let n1 = it.next().unwrap().unwrap();
            assert_eq!(
                (n1.provider, n1.name, n1.pc, n1.base, n1.semaphore, n1.args),
                ("prov", "first", 0x1000, 0x2000, 0x3000, "")
            );
            assert_eq!(n1.arguments().count(), 0);
            let n2 = it.next().unwrap().unwrap();
            assert_eq!((n2.name, n2.pc, n2.semaphore), ("second", 0x1010, 0));
            assert_eq!(n2.arguments().count(), 2);
            assert!(it.next().is_none());
            assert!(it.next().is_none());
        }
    }
}

#[test]
fn elf32_addresses_are_4_bytes() {
    let mut b = Blob::new();
    note(
        &mut b,
        Class::Elf32,
        Endian::Little,
        [0x8048_1234, 0x8049_0000, 0x804a_0010],
        "p",
        "n",
        "4@%eax",
    );
    // header 12 + name 8 + 3 * 4 + "p\0n\04@%eax\0" (11) padded to 4.
    assert_eq!(b.len(), 12 + 8 + 12 + 12);
    let n = one(&b, Class::Elf32, Endian::Little).unwrap();
    assert_eq!(
        (n.pc, n.base, n.semaphore),
        (0x8048_1234, 0x8049_0000, 0x804a_0010)
    );
    // Read as 64-bit, the 23-byte descriptor is too short for three 8-byte addresses.
    assert!(one(&b, Class::Elf64, Endian::Little).is_err());
}

#[test]
fn empty_section() {
    assert!(SdtNotes::new(&[], Class::Elf64, Endian::Little)
        .next()
        .is_none());
}

#[test]
fn truncated_header_ends_iteration() {
    let mut b = Blob::new();
    note(
        &mut b,
        Class::Elf64,
        Endian::Little,
        [1, 2, 3],
        "p",
        "n",
        "",
    );
    let full = b.len();
    b.extend_from_slice(&[8, 0, 0, 0, 0x30]).unwrap();
    let mut it = SdtNotes::new(&b, Class::Elf64, Endian::Little);
    assert!(it.next().unwrap().is_ok());
    assert_eq!(
        it.next(),
        Some(Err(SdtError::Truncated {
            offset: full,
            needed: 12,
            available: 5
        }))
    );
    assert_eq!(it.next(), None);
}

#[test]
fn truncated_desc_and_huge_sizes() {
    let mut b = Blob::new();
    note(
        &mut b,
        Class::Elf64,
        Endian::Little,
        [1, 2, 3],
        "p",
        "n",
        "8@%rax",
    );
    let len = b.len();
    // Cut the descriptor.
    let cut = &b[..len - 8];
    match one(cut, Class::Elf64, Endian::Little) {
        Err(SdtError::Truncated {
            offset: 0,
            needed,
            available,
        }) => assert!(needed > available && available == len - 8),
        other => panic!("{other:?}"),
    }
    // namesz and descsz at their maxima must not overflow anything.
    for (namesz, descsz) in [
        (u32::MAX, 0),
        (8, u32::MAX),
        (u32::MAX, u32::MAX),
        (0xffff_fffd, 4),
    ] {
        let mut h = b.clone();
        h[0..4].copy_from_slice(&namesz.to_le_bytes());
        h[4..8].copy_from_slice(&descsz.to_le_bytes());
        let mut it = SdtNotes::new(&h, Class::Elf64, Endian::Little);
        assert!(matches!(
            it.next(),
            Some(Err(SdtError::Truncated { offset: 0, .. }))
        ));
        assert_eq!(it.next(), None);
    }
}

#[test]
fn last_note_padding_may_be_missing() {
    let mut b = Blob::new();
    note(
        &mut b,
        Class::Elf64,
        Endian::Little,
        [1, 2, 3],
        "p",
        "n",
        "x",
    ); // desc 24 + 6
    assert_eq!(b.len(), 52);
    let n = one(&b[..50], Class::Elf64, Endian::Little).unwrap();
    assert_eq!(n.args, "x");
    let mut it = SdtNotes::new(&b[..50], Class::Elf64, Endian::Little);
    it.next();
    assert!(it.next().is_none());
}

#[test]
fn bad_name_and_type_skip_to_next_note() {
    let mut b = Blob::new();
    let d = desc(Class::Elf64, Endian::Little, [1, 2, 3], "p", "n", "");
    raw_note(&mut b, Endian::Little, b"GNU\0", NT_STAPSDT, &d);
    let second = b.len();
    raw_note(&mut b, Endian::Little, b"stapsdX\0", NT_STAPSDT, &d);
    let third = b.len();
    raw_note(&mut b, Endian::Little, STAPSDT_NOTE_NAME, 1, &d);
    let fourth = b.len();
    raw_note(&mut b, Endian::Little, b"", NT_STAPSDT, &d);
    note(
        &mut b,
        Class::Elf64,
        Endian::Little,
        [9, 2, 3],
        "p",
        "ok",
        "",
    );
    let mut it = SdtNotes::new(&b, Class::Elf64, Endian::Little);
    assert_eq!(
        it.next(),
        Some(Err(SdtError::BadNoteName {
            offset: 0,
            namesz: 4
        }))
    );
    assert_eq!(
        it.next(),
        Some(Err(SdtError::BadNoteName {
            offset: second,
            namesz: 8
        }))
    );
    assert_eq!(
        it.next(),
        Some(Err(SdtError::BadNoteType {
            offset: third,
            note_type: 1
        }))
    );
    assert_eq!(
        it.next(),
        Some(Err(SdtError::BadNoteName {
            offset: fourth,
            namesz: 0
        }))
    );
    assert_eq!(it.next().unwrap().unwrap().name, "ok");
    assert_eq!(it.next(), None);
}

#[test]
fn desc_too_short() {
    let mut b = Blob::new();
    raw_note(
        &mut b,
        Endian::Little,
        STAPSDT_NOTE_NAME,
        NT_STAPSDT,
        &[0x41; 20],
    );
    assert_eq!(
        one(&b, Class::Elf64, Endian::Little),
        Err(SdtError::DescTooShort {
            offset: 20,
            descsz: 20,
            needed: 24
        })
    );
    // 20 bytes are enough for 32-bit addresses but hold no NUL-terminated strings.
    assert_eq!(
        one(&b, Class::Elf32, Endian::Little),
        Err(SdtError::MissingNul { offset: 32 })
    );
}

#[test]
fn missing_nul_and_bad_utf8() {
    // Provider, name, then an args string without its NUL.
    let mut d = desc(Class::Elf64, Endian::Little, [1, 2, 3], "p", "n", "8@%rax");
    d.pop();
    let mut b = Blob::new();
    raw_note(&mut b, Endian::Little, STAPSDT_NOTE_NAME, NT_STAPSDT, &d);
    assert_eq!(
        one(&b, Class::Elf64, Endian::Little),
        Err(SdtError::MissingNul {
            offset: 20 + 24 + 4
        })
    );
    // No strings at all.
    let mut b = Blob::new();
    raw_note(
        &mut b,
        Endian::Little,
        STAPSDT_NOTE_NAME,
        NT_STAPSDT,
        &[0x41; 24],
    );
    assert_eq!(
        one(&b, Class::Elf64, Endian::Little),
        Err(SdtError::MissingNul { offset: 44 })
    );
    // A name that is not UTF-8.
    let mut d = desc(Class::Elf64, Endian::Little, [1, 2, 3], "p", "n", "");
    d[26] = 0xff;
    let mut b = Blob::new();
    raw_note(&mut b, Endian::Little, STAPSDT_NOTE_NAME, NT_STAPSDT, &d);
    assert_eq!(
        one(&b, Class::Elf64, Endian::Little),
        Err(SdtError::BadUtf8 { offset: 46 })
    );
}

#[test]
fn trailing_desc_bytes_are_ignored() {
    let mut d = desc(Class::Elf64, Endian::Little, [1, 2, 3], "p", "n", "8@%rax");
    d.extend_from_slice(b"junk").unwrap();
    let mut b = Blob::new();
    raw_note(&mut b, Endian::Little, STAPSDT_NOTE_NAME, NT_STAPSDT, &d);
    assert_eq!(
        one(&b, Class::Elf64, Endian::Little).unwrap().args,
        "8@%rax"
    );
}

#[test]
fn prelink_adjustment() {
    let n = SdtNote {
        provider: "p",
        name: "n",
        pc: 0x1000,
        base: 0x2000,
        semaphore: 0x3000,
        args: "",
    };
    assert_eq!(n.adjusted_pc(0x2000), Some(0x1000));
    assert_eq!(n.adjusted_pc(0x2100), Some(0x1100));
    assert_eq!(n.adjusted_pc(0x1f00), Some(0x0f00));
    assert_eq!(n.adjusted_semaphore(0x2100), Some(0x3100));
    assert_eq!(n.adjusted_semaphore(0x1f00), Some(0x2f00));
    assert_eq!(n.adjusted_pc(0), None);
    assert_eq!(n.adjusted_pc(u64::MAX), Some(u64::MAX - 0x1000));
    let no_sema = SdtNote { semaphore: 0, ..n };
    assert_eq!(no_sema.adjusted_semaphore(0x2100), Some(0));
    let no_base = SdtNote { base: 0, ..n };
    assert_eq!(no_base.adjusted_pc(0x9999), Some(0x1000));
    let high = SdtNote {
        pc: u64::MAX - 1,
        ..n
    };
    assert_eq!(high.adjusted_pc(0x2001), Some(u64::MAX));
    assert_eq!(high.adjusted_pc(0x2002), None);
}

#[test]
fn vaddr_to_file_offset() {
    let segs = [
        Segment::from((0, 0x800, 0, 0x800)),
        Segment::from((0x1000, 0x500, 0x1000, 0x500)),
        Segment {
            vaddr: 0x3de8,
            memsz: 0x300,
            offset: 0x2de8,
            filesz: 0x250,
        },
    ];
    assert_eq!(vaddr_to_offset(&segs, 0x10), Some(0x10));
    assert_eq!(vaddr_to_offset(&segs, 0x1234), Some(0x1234));
    assert_eq!(vaddr_to_offset(&segs, 0x4024), Some(0x3024));
    assert_eq!(vaddr_to_offset(&segs, 0x3de8 + 0x250), None); // .bss
    assert_eq!(vaddr_to_offset(&segs, 0x900), None);
    assert_eq!(vaddr_to_offset(&segs, u64::MAX), None);
    assert_eq!(vaddr_to_offset(&[], 0), None);
    let weird = [Segment::from((0x1000, u64::MAX, u64::MAX, u64::MAX))];
    assert_eq!(vaddr_to_offset(&weird, 0x1000), Some(u64::MAX));
    assert_eq!(vaddr_to_offset(&weird, 0x1001), None);
}

// ---- argument specs ----

fn reg(name: &str) -> X86Reg {
    X86Reg::from_name(name).unwrap()
}

fn arg(spec: &str) -> SdtArg<'_> {
    SdtArg::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e:?}"))
}

fn render(a: &SdtArg<'_>) -> String<128> {
    let mut s = String::new();
    write!(s, "{a}").unwrap();
    s
}

fn mem<'a>(base: Option<&str>, index: Option<&str>, scale: u8, disp: i64) -> ArgLoc<'a> {
    ArgLoc::Mem {
        segment: None,
        symbol: None,
        base: base.map(reg),
        index: index.map(reg),
        scale,
        disp,
    }
}

#[test]
fn arg_forms() {
    let cases: &[(&str, u8, bool, ArgLoc<'static>)] = &[
        ("-4@%edi", 4, true, ArgLoc::Reg(reg("edi"))),
        ("8@%rax", 8, false, ArgLoc::Reg(reg("rax"))),
        ("1@%ah", 1, false, ArgLoc::Reg(reg("ah"))),
        ("-1@%sil", 1, true, ArgLoc::Reg(reg("sil"))),
        ("1@%dil", 1, false, ArgLoc::Reg(reg("dil"))),
        ("2@%r8w", 2, false, ArgLoc::Reg(reg("r8w"))),
        ("4@%r8d", 4, false, ArgLoc::Reg(reg("r8d"))),
        ("1@%r15b", 1, false, ArgLoc::Reg(reg("r15b"))),
        ("8@%rsp", 8, false, ArgLoc::Reg(reg("rsp"))),
        ("-4@$5", 4, true, ArgLoc::Imm(5)),
        ("-4@$-5", 4, true, ArgLoc::Imm(-5)),
        ("8@$0x10", 8, false, ArgLoc::Imm(16)),
        ("8@$0xffffffffffffffff", 8, false, ArgLoc::Imm(-1)),
        ("8@$010", 8, false, ArgLoc::Imm(8)),
        ("8@$0", 8, false, ArgLoc::Imm(0)),
        ("8@-8(%rbp)", 8, false, mem(Some("rbp"), None, 1, -8)),
        ("-4@-4(%rbp)", 4, true, mem(Some("rbp"), None, 1, -4)),
        ("-4@112(%rsp)", 4, true, mem(Some("rsp"), None, 1, 112)),
        ("8@0x10(%rax)", 8, false, mem(Some("rax"), None, 1, 16)),
        ("8@-0x10(%rax)", 8, false, mem(Some("rax"), None, 1, -16)),
        ("8@(%rax)", 8, false, mem(Some("rax"), None, 1, 0)),
        (
            "4@8(%rax,%rdx,4)",
            4,
            false,
            mem(Some("rax"), Some("rdx"), 4, 8),
        ),
        (
            "-8@(%rdx,%rcx,8)",
            8,
            true,
            mem(Some("rdx"), Some("rcx"), 8, 0),
        ),
        (
            "8@(%rax,%rdx)",
            8,
            false,
            mem(Some("rax"), Some("rdx"), 1, 0),
        ),
        ("8@(,%rcx,8)", 8, false, mem(None, Some("rcx"), 8, 0)),
        ("8@(,%r9)", 8, false, mem(None, Some("r9"), 1, 0)),
        (
            "4@(%eax,%ebx,2)",
            4,
            false,
            mem(Some("eax"), Some("ebx"), 2, 0),
        ),
        ("4@-4(%r13d)", 4, false, mem(Some("r13d"), None, 1, -4)),
        ("8@0x601040", 8, false, mem(None, None, 1, 0x601040)),
        ("8@-8", 8, false, mem(None, None, 1, -8)),
        (
            "8@sym(%rip)",
            8,
            false,
            ArgLoc::RipRel {
                symbol: Some("sym"),
                disp: 0,
            },
        ),
        (
            "8@sym+16(%rip)",
            8,
            false,
            ArgLoc::RipRel {
                symbol: Some("sym"),
                disp: 16,
            },
        ),
        (
            "-4@counter-0x8(%rip)",
            4,
            true,
            ArgLoc::RipRel {
                symbol: Some("counter"),
                disp: -8,
            },
        ),
        (
            "8@.LC0(%rip)",
            8,
            false,
            ArgLoc::RipRel {
                symbol: Some(".LC0"),
                disp: 0,
            },
        ),
        (
            "8@_ZN3foo3barE.lto_priv.0(%rip)",
            8,
            false,
            ArgLoc::RipRel {
                symbol: Some("_ZN3foo3barE.lto_priv.0"),
                disp: 0,
            },
        ),
        (
            "4@8(%rip)",
            4,
            false,
            ArgLoc::RipRel {
                symbol: None,
                disp: 8,
            },
        ),
        (
            "4@(%rip)",
            4,
            false,
            ArgLoc::RipRel {
                symbol: None,
                disp: 0,
            },
        ),
        (
            "-8@arr(,%rcx,8)",
            8,
            true,
            ArgLoc::Mem {
                segment: None,
                symbol: Some("arr"),
                base: None,
                index: Some(reg("rcx")),
                scale: 8,
                disp: 0,
            },
        ),
        (
            "4@arr+4",
            4,
            false,
            ArgLoc::Mem {
                segment: None,
                symbol: Some("arr"),
                base: None,
                index: None,
                scale: 1,
                disp: 4,
            },
        ),
        (
            "8@%fs:0x28",
            8,
            false,
            ArgLoc::Mem {
                segment: Some(SegReg::Fs),
                symbol: None,
                base: None,
                index: None,
                scale: 1,
                disp: 0x28,
            },
        ),
        (
            "8@%gs:-8(%rax,%rbx,2)",
            8,
            false,
            ArgLoc::Mem {
                segment: Some(SegReg::Gs),
                symbol: None,
                base: Some(reg("rax")),
                index: Some(reg("rbx")),
                scale: 2,
                disp: -8,
            },
        ),
    ];
    for &(spec, size, signed, loc) in cases {
        let a = arg(spec);
        assert_eq!(
            (a.size, a.signed, a.float, a.loc),
            (size, signed, false, loc),
            "{spec}"
        );
        assert_eq!(a.width(), size);
        // Rendering re-parses to the same value.
        let r = render(&a);
        assert_eq!(SdtArg::parse(&r), Ok(a), "{spec} -> {r}");
    }
}

#[test]
fn canonical_rendering() {
    for (spec, canon) in [
        ("-4@%edi", "-4@%edi"),
        ("8@0x10(%rax)", "8@16(%rax)"),
        ("4@8(%rax,%rdx)", "4@8(%rax,%rdx,1)"),
        ("8@sym+0(%rip)", "8@sym(%rip)"),
        ("8@sym-0x10(%rip)", "8@sym-16(%rip)"),
        ("8@%fs:0x28", "8@%fs:40"),
        ("8f@%rax", "8f@%rax"),
        ("-8f@-8(%rbp)", "-8f@-8(%rbp)"),
        ("%eax", "%eax"),
        ("8@0(%rax)", "8@(%rax)"),
        ("8@$-0x8000000000000000", "8@$-9223372036854775808"),
    ] {
        assert_eq!(render(&arg(spec)).as_str(), canon);
    }
}

#[test]
fn float_and_sizeless() {
    let a = arg("8f@%rax");
    assert!(a.float && !a.signed && a.size == 8);
    let a = arg("%eax");
    assert_eq!((a.size, a.width(), a.signed), (0, 4, false));
    assert_eq!(arg("%al").width(), 1);
    assert_eq!(arg("-8(%rbp)").width(), 8);
    assert_eq!(arg("$3").width(), 8);
    assert_eq!(arg("-8(%rbp)").loc, mem(Some("rbp"), None, 1, -8));
}

#[test]
fn whitespace_separated() {
    let specs = "  8@%rbp\t8@%r12   -4@%eax \n";
    let args: Vec<_, 4> = SdtArgs::new(specs).map(|a| a.unwrap()).collect();
    assert_eq!(args.len(), 3);
    assert_eq!(args[2].loc, ArgLoc::Reg(reg("eax")));
    assert_eq!(SdtArgs::new("").count(), 0);
    assert_eq!(SdtArgs::new("   ").count(), 0);
}

#[test]
fn iterator_continues_after_error_with_absolute_offsets() {
    let mut it = SdtArgs::new("8@%rax 3@%rbx 4@%xyz 8@(%rax");
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.next(), Some(Err(SdtError::BadSize { offset: 7 })));
    assert_eq!(
        it.next(),
        Some(Err(SdtError::UnknownRegister { offset: 16 }))
    );
    assert_eq!(
        it.next(),
        Some(Err(SdtError::Syntax {
            offset: 28,
            expected: "')'"
        }))
    );
    assert_eq!(it.next(), None);
}

#[test]
fn arg_errors() {
    use SdtError::*;
    let cases: &[(&str, SdtError)] = &[
        ("", Empty { offset: 0 }),
        ("8@", Empty { offset: 2 }),
        ("3@%rax", BadSize { offset: 0 }),
        ("16@%rax", BadSize { offset: 0 }),
        ("@%rax", BadSize { offset: 0 }),
        ("-@%rax", BadSize { offset: 0 }),
        ("f@%rax", BadSize { offset: 0 }),
        ("4x@%rax", BadSize { offset: 0 }),
        ("+4@%rax", BadSize { offset: 0 }),
        ("4@%xyz", UnknownRegister { offset: 2 }),
        ("4@%", UnknownRegister { offset: 2 }),
        ("4@%xmm0", UnknownRegister { offset: 2 }),
        ("4@%EAX", UnknownRegister { offset: 2 }),
        ("4@8(%foo)", UnknownRegister { offset: 4 }),
        ("4@(%rax,%rbx,3)", BadScale { offset: 13 }),
        ("4@(%rax,%rbx,16)", BadScale { offset: 13 }),
        ("4@(%rax,%rbx,0x10)", BadScale { offset: 13 }),
        ("4@(%rax,%rbx,)", BadScale { offset: 13 }),
        ("4@(%rax,4)", BadScale { offset: 8 }),
        ("4@%rax)", TrailingGarbage { offset: 6 }),
        ("4@%rax,", TrailingGarbage { offset: 6 }),
        ("4@8(%rax)x", TrailingGarbage { offset: 9 }),
        ("4@$5 ", TrailingGarbage { offset: 4 }),
        (
            "4@(%rax",
            Syntax {
                offset: 7,
                expected: "')'",
            },
        ),
        (
            "4@()",
            Syntax {
                offset: 3,
                expected: "a base or index register",
            },
        ),
        (
            "4@(%rax,,4)",
            Syntax {
                offset: 8,
                expected: "an index register",
            },
        ),
        (
            "4@*%rax",
            Syntax {
                offset: 2,
                expected: "a register, $immediate, displacement or '('",
            },
        ),
        (
            "4@8(%rip,%rax)",
            Syntax {
                offset: 8,
                expected: "')' after %rip",
            },
        ),
        ("4@(%ax)", BadAddressRegister { offset: 3 }),
        ("4@(%al)", BadAddressRegister { offset: 3 }),
        ("4@(%rax,%rsp)", BadAddressRegister { offset: 8 }),
        ("4@(%rax,%rip)", BadAddressRegister { offset: 8 }),
        ("4@(%rax,%ebx)", BadAddressRegister { offset: 8 }),
        ("4@(%rax,%bx)", BadAddressRegister { offset: 8 }),
        ("4@%rip", BadAddressRegister { offset: 2 }),
        ("4@%fs", BadAddressRegister { offset: 2 }),
        ("4@(%fs)", BadAddressRegister { offset: 3 }),
        ("4@%fs:8(%rip)", BadAddressRegister { offset: 2 }),
        ("4@%fs:", Empty { offset: 6 }),
        ("4@$", BadNumber { offset: 3 }),
        ("4@$x", BadNumber { offset: 3 }),
        ("4@$-", BadNumber { offset: 4 }),
        ("4@$0x", BadNumber { offset: 3 }),
        ("4@$0xg", BadNumber { offset: 3 }),
        ("4@$08", BadNumber { offset: 3 }),
        ("4@$12a", BadNumber { offset: 3 }),
        ("4@$18446744073709551616", BadNumber { offset: 3 }),
        ("4@0x(%rax)", BadNumber { offset: 2 }),
        ("4@sym+(%rip)", BadNumber { offset: 6 }),
        ("4@sym+-1(%rip)", BadNumber { offset: 6 }),
        ("4@8@%rax", TrailingGarbage { offset: 3 }),
        (
            "4@é",
            Syntax {
                offset: 2,
                expected: "a register, $immediate, displacement or '('",
            },
        ),
        ("4@%raxé", TrailingGarbage { offset: 6 }),
    ];
    for &(spec, want) in cases {
        assert_eq!(SdtArg::parse(spec), Err(want), "{spec}");
        // Every error has a readable message.
        let mut s: String<256> = String::new();
        write!(s, "{want}").unwrap();
        assert!(!s.is_empty());
    }
}

#[test]
fn note_error_messages() {
    let errs = [
        SdtError::Truncated {
            offset: 4,
            needed: 12,
            available: 3,
        },
        SdtError::BadNoteName {
            offset: 0,
            namesz: 4,
        },
        SdtError::BadNoteType {
            offset: 0,
            note_type: 1,
        },
        SdtError::DescTooShort {
            offset: 20,
            descsz: 4,
            needed: 24,
        },
        SdtError::MissingNul { offset: 44 },
        SdtError::BadUtf8 { offset: 44 },
    ];
    for e in errs {
        let mut s: String<256> = String::new();
        write!(s, "{e}").unwrap();
        assert!(s.contains("offset"), "{s}");
        assert!(e.offset() <= 44);
    }
}

#[cfg(feature = "x86_64")]
mod value {
    use super::*;
    use crate::arch::x86_64::X86Regs;

    fn regs() -> X86Regs {
        X86Regs {
            rax: 0x1122_3344_5566_7788,
            rbx: 0x10,
            rcx: 2,
            rdx: 3,
            rdi: 0xffff_ffff_ffff_fffe,
            rsi: 0x80,
            rbp: 0x7000,
            rsp: 0x6000,
            r8: 0x1_0000_0010,
            r12: 0x1234,
            rip: 0x4000,
            fs_base: 0x9000,
            ..X86Regs::default()
        }
    }

    /// Memory where every byte equals the low byte of its address.
    fn mem_read(addr: u64, buf: &mut [u8]) -> Result<(), ()> {
        if (0xdead_0000..0xdeae_0000).contains(&addr) {
            return Err(());
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = addr.wrapping_add(i as u64) as u8;
        }
        Ok(())
    }

    fn val(spec: &str) -> Result<u64, ArgValueError<()>> {
        arg(spec).value(&regs(), mem_read, |s| match s {
            "sym" => Some(0x5000),
            _ => None,
        })
    }

    #[test]
    fn registers() {
        assert_eq!(val("8@%rax"), Ok(0x1122_3344_5566_7788));
        assert_eq!(val("4@%eax"), Ok(0x5566_7788));
        assert_eq!(val("2@%ax"), Ok(0x7788));
        assert_eq!(val("1@%al"), Ok(0x88));
        assert_eq!(val("-1@%al"), Ok(0xffff_ffff_ffff_ff88));
        assert_eq!(val("1@%ah"), Ok(0x77));
        assert_eq!(val("-4@%edi"), Ok(u64::MAX - 1));
        assert_eq!(val("4@%edi"), Ok(0xffff_fffe));
        assert_eq!(val("-8@%eax"), Ok(0x5566_7788));
        assert_eq!(val("-8@%edi"), Ok(u64::MAX - 1));
        assert_eq!(val("%edi"), Ok(0xffff_fffe));
        assert_eq!(val("-1@%sil"), Ok(0xffff_ffff_ffff_ff80));
        assert_eq!(val("4@%r8d"), Ok(0x10));
        assert_eq!(val("8f@%rax"), Ok(0x1122_3344_5566_7788));
    }

    #[test]
    fn immediates() {
        assert_eq!(val("-4@$5"), Ok(5));
        assert_eq!(val("-4@$-5"), Ok((-5i64) as u64));
        assert_eq!(val("4@$-1"), Ok(0xffff_ffff));
        assert_eq!(val("1@$0x1ff"), Ok(0xff));
        assert_eq!(val("$-1"), Ok(u64::MAX));
    }

    #[test]
    fn memory() {
        // rbp - 8 = 0x6ff8: bytes f8 f9 fa fb fc fd fe ff.
        assert_eq!(val("8@-8(%rbp)"), Ok(0xfffe_fdfc_fbfa_f9f8));
        assert_eq!(val("-4@-8(%rbp)"), Ok(0xffff_ffff_fbfa_f9f8));
        assert_eq!(val("2@-8(%rbp)"), Ok(0xf9f8));
        // rbx + rcx * 4 + 8 = 0x20.
        assert_eq!(val("1@8(%rbx,%rcx,4)"), Ok(0x20));
        assert_eq!(val("1@(,%rdx,8)"), Ok(0x18));
        // 32-bit addressing wraps at 4 GiB: r8d = 0x10.
        assert_eq!(val("1@(%r8d)"), Ok(0x10));
        assert_eq!(val("1@(%r8)"), Ok(0x10));
        assert_eq!(val("1@%fs:0x28"), Ok(0x28));
        assert_eq!(val("1@0x123"), Ok(0x23));
        assert_eq!(val("1@sym+3(%rip)"), Ok(0x03));
        assert_eq!(val("1@5(%rip)"), Ok(0x05));
        assert_eq!(val("1@sym(,%rcx,2)"), Ok(0x04));
        assert_eq!(
            val("4@0xdead0000"),
            Err(ArgValueError::Read {
                addr: 0xdead_0000,
                len: 4,
                error: ()
            })
        );
        assert_eq!(val("8@other(%rip)"), Err(ArgValueError::UnresolvedSymbol));
        assert_eq!(val("8@other"), Err(ArgValueError::UnresolvedSymbol));
    }

    #[test]
    fn reads_exactly_width_bytes() {
        let mut seen = 0;
        let a = arg("2@(%rsp)");
        let v = a.value(
            &regs(),
            |addr, buf: &mut [u8]| {
                seen = buf.len();
                assert_eq!(addr, 0x6000);
                buf.fill(0xab);
                Ok::<(), ()>(())
            },
            |_| None,
        );
        assert_eq!((v, seen), (Ok(0xabab), 2));
    }
}
