//! Fuzz drivers for the SDT parsers (`probe_core::sdt`), wired into `fuzz/` and replayed over
//! the seed corpora by `tests/tests/sdt_corpus.rs`.

use probe_core::arch::x86_64::X86Regs;
use probe_core::sdt::{Class, Endian, SdtArg, SdtArgs, SdtError, SdtNotes};

/// Panics unless `inner` lies within `outer` (same memory, not just equal bytes).
fn assert_subslice(outer: &[u8], inner: &[u8], what: &str) {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    assert!(
        i >= o && i + inner.len() <= o + outer.len(),
        "{what} is not borrowed from the input"
    );
}

/// Drive the note parser: `data[0]` picks the class (bit 0: 64-bit) and byte order (bit 1:
/// big-endian), the rest is a `.note.stapsdt` section. Panics (the fuzzer's failure signal)
/// when parsing panics, a returned string is not a subslice of the input, an error offset is
/// out of range, or iteration does not end.
pub fn sdt_note(data: &[u8]) {
    let Some((&sel, section)) = data.split_first() else {
        return;
    };
    let class = if sel & 1 != 0 {
        Class::Elf64
    } else {
        Class::Elf32
    };
    let endian = if sel & 2 != 0 {
        Endian::Big
    } else {
        Endian::Little
    };
    let mut count = 0usize;
    let mut fused = false;
    let mut it = SdtNotes::new(section, class, endian);
    for note in it.by_ref() {
        count += 1;
        // Every note takes at least its 12-byte header.
        assert!(count <= section.len() / 12 + 1, "iteration does not end");
        assert!(!fused, "a note after a truncation");
        match note {
            Ok(n) => {
                assert_subslice(section, n.provider.as_bytes(), "provider");
                assert_subslice(section, n.name.as_bytes(), "name");
                assert_subslice(section, n.args.as_bytes(), "args");
                for actual in [n.base, 0, u64::MAX, n.base.wrapping_add(0x1000), n.pc] {
                    let _ = n.adjusted_pc(actual);
                    let s = n.adjusted_semaphore(actual);
                    if n.semaphore == 0 {
                        assert_eq!(s, Some(0));
                    }
                }
                assert_eq!(n.adjusted_pc(n.base), Some(n.pc));
                check_args(n.args);
            }
            Err(e) => {
                assert!(e.offset() <= section.len(), "{e:?} out of range");
                let _ = e.to_string();
                if matches!(e, SdtError::Truncated { .. }) {
                    fused = true;
                }
            }
        }
    }
    assert!(it.next().is_none(), "not fused");
}

/// Drive the argument parser: `data` as a string (lossily when it is not UTF-8). Panics when
/// parsing panics, an error offset is out of range, or a parsed spec rendered with `Display`
/// does not parse back to the same value.
pub fn sdt_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_args(&text);
    // The whole input as one spec, too (no whitespace splitting).
    check_one(&text);
}

fn check_args(args: &str) {
    for (n, a) in SdtArgs::new(args).enumerate() {
        assert!(n <= args.len(), "iteration does not end");
        match a {
            Ok(a) => check_parsed(args, &a),
            Err(e) => {
                assert!(e.offset() <= args.len(), "{e:?} out of range in {args:?}");
                let _ = e.to_string();
            }
        }
    }
}

fn check_one(spec: &str) {
    match SdtArg::parse(spec) {
        Ok(a) => check_parsed(spec, &a),
        Err(e) => assert!(e.offset() <= spec.len(), "{e:?} out of range in {spec:?}"),
    }
}

fn check_parsed(src: &str, a: &SdtArg<'_>) {
    assert!(matches!(a.size, 0 | 1 | 2 | 4 | 8), "size {}", a.size);
    assert!(matches!(a.width(), 1 | 2 | 4 | 8));
    let rendered = a.to_string();
    assert_eq!(
        SdtArg::parse(&rendered).as_ref(),
        Ok(a),
        "{src:?} rendered as {rendered:?} does not parse back"
    );
    // Rendering is canonical: a second round gives the same text.
    assert_eq!(
        SdtArg::parse(&rendered).map(|b| b.to_string()).as_deref(),
        Ok(rendered.as_str())
    );
    // Evaluation never panics, whatever the registers and memory say.
    let regs = X86Regs {
        rax: u64::MAX,
        rbx: 1 << 63,
        rcx: 0x8000_0000,
        rsp: 0x7fff_ffff_f000,
        rbp: 0x7fff_ffff_f100,
        rip: u64::MAX - 3,
        fs_base: u64::MAX,
        ..X86Regs::default()
    };
    let mut reads = 0;
    let v = a.value(
        &regs,
        |addr, buf: &mut [u8]| {
            reads += 1;
            assert_eq!(buf.len(), usize::from(a.width()));
            if addr % 7 == 0 {
                return Err("unmapped");
            }
            buf.fill(0x80);
            Ok(())
        },
        |s| (s.len() % 2 == 0).then_some(u64::MAX - s.len() as u64),
    );
    assert!(reads <= 1);
    if let Ok(v) = v {
        let w = u32::from(a.width()) * 8;
        if w < 64 && !a.signed {
            assert_eq!(v >> w, 0, "{src:?}: unsigned value not zero-extended");
        }
    }
}
