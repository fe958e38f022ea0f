//! Whether a probe address starts an instruction: a breakpoint byte written inside an
//! instruction corrupts it (`uprobe:libc:malloc+1` would make the program crash), so an
//! offset into a function is checked by decoding the function from its first byte (iced-x86,
//! a linear sweep as `objdump -d` does).

use std::os::unix::fs::FileExt;
use std::path::Path;

use iced_x86::{Decoder, DecoderOptions};

use crate::elf::FunctionSymbol;

/// Why an offset into a function is not a probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// The offset starts an instruction.
    Starts,
    /// The offset falls inside the instruction at `start` (offsets from the function's
    /// start), whose next instruction begins at `next`.
    Inside {
        /// Where the enclosing instruction starts.
        start: u64,
        /// Where the following instruction starts.
        next: u64,
    },
    /// The bytes before the offset do not decode (data in the text, or not x86-64 code).
    Undecodable {
        /// The offset of the first byte that does not decode.
        at: u64,
    },
}

/// Decodes `sym` of the file at `path` from its start up to `offset` (from the start).
pub fn check_boundary(path: &Path, sym: &FunctionSymbol, offset: u64) -> std::io::Result<Boundary> {
    if offset == 0 {
        return Ok(Boundary::Starts);
    }
    // The function's bytes up to the offset plus one longest instruction.
    let len = offset + 15;
    let mut bytes = vec![0u8; len as usize];
    let file = std::fs::File::open(path)?;
    let n = read_up_to(&file, &mut bytes, sym.file_offset)?;
    bytes.truncate(n);
    let mut decoder = Decoder::with_ip(64, &bytes, 0, DecoderOptions::NONE);
    let mut insn = iced_x86::Instruction::default();
    while decoder.can_decode() {
        let start = decoder.ip();
        if start == offset {
            return Ok(Boundary::Starts);
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Ok(Boundary::Undecodable { at: start });
        }
        let next = decoder.ip();
        if start < offset && offset < next {
            return Ok(Boundary::Inside { start, next });
        }
    }
    Ok(Boundary::Undecodable {
        at: decoder.ip().min(offset),
    })
}

fn read_up_to(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `endbr64; push %rbp; mov %rsp,%rbp; ret` in a file, as a function at offset 3.
    static CODE: [u8; 13] = [
        0x90, 0x90, 0x90, 0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3, 0x00,
    ];

    fn sym() -> FunctionSymbol {
        FunctionSymbol {
            name: "f".into(),
            version: None,
            default_version: false,
            vaddr: 0x1003,
            size: 9,
            file_offset: 3,
            global: true,
            ifunc: false,
            source: crate::elf::SymbolSource::Symtab,
        }
    }

    #[test]
    fn boundaries_and_insides() {
        let path = std::env::temp_dir().join(format!("probe-insn-{}", std::process::id()));
        std::fs::write(&path, CODE).unwrap();
        let check = |off| check_boundary(&path, &sym(), off).unwrap();
        for off in [0, 4, 5, 8] {
            assert_eq!(check(off), Boundary::Starts, "{off}");
        }
        assert_eq!(check(1), Boundary::Inside { start: 0, next: 4 });
        assert_eq!(check(3), Boundary::Inside { start: 0, next: 4 });
        assert_eq!(check(6), Boundary::Inside { start: 5, next: 8 });
        let _ = std::fs::remove_file(&path);
    }
}
