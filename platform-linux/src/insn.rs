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

/// How a function is left, from decoding all of it: the return-probe method of
/// `--ret-by-insn` puts a breakpoint on each `ret` instead of replacing return addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    /// The `ret` instructions (offsets from the function's start).
    pub rets: Vec<u64>,
    /// Unconditional direct jumps back to the function's first instruction (Go's
    /// `call runtime.morestack; jmp start` after growing the stack, a self tail call): they
    /// enter the function again without a new call.
    pub restarts: Vec<u64>,
    /// Direct jumps (conditional or not) to outside the function: tail calls, whose
    /// returns this method does not see.
    pub tail_jumps: Vec<u64>,
    /// Indirect jumps (`jmp *%rax`): a switch's jump table, or a tail call.
    pub indirect_jumps: Vec<u64>,
}

/// Why a function's exits cannot be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitsError {
    /// The symbol has no size: where the function ends is unknown.
    NoSize,
    /// The bytes at this offset (from the start) do not decode.
    Undecodable {
        /// The first byte that does not decode.
        at: u64,
    },
    /// The function holds no `ret`: it returns only by tail calls, or never.
    NoReturn,
}

/// Decodes all of `sym` (from its start to its size, a linear sweep) and lists its exits.
pub fn function_exits(
    path: &Path,
    sym: &FunctionSymbol,
) -> std::io::Result<Result<Exits, ExitsError>> {
    Ok(function_branches(path, sym)?.and_then(|e| {
        if e.rets.is_empty() {
            Err(ExitsError::NoReturn)
        } else {
            Ok(e)
        }
    }))
}

/// [`function_exits`], also for a function that holds no `ret` (one that leaves only by
/// jumps, as an unwinder's `_Unwind_Resume`).
pub fn function_branches(
    path: &Path,
    sym: &FunctionSymbol,
) -> std::io::Result<Result<Exits, ExitsError>> {
    if sym.size == 0 {
        return Ok(Err(ExitsError::NoSize));
    }
    let mut bytes = vec![0u8; sym.size as usize];
    let file = std::fs::File::open(path)?;
    let n = read_up_to(&file, &mut bytes, sym.file_offset)?;
    bytes.truncate(n);
    Ok(branches_of(&bytes, sym.size))
}

/// [`function_exits`] on the function's bytes (`size` of them expected).
pub fn exits_of(bytes: &[u8], size: u64) -> Result<Exits, ExitsError> {
    let exits = branches_of(bytes, size)?;
    if exits.rets.is_empty() {
        return Err(ExitsError::NoReturn);
    }
    Ok(exits)
}

/// [`function_branches`] on the function's bytes (`size` of them expected).
fn branches_of(bytes: &[u8], size: u64) -> Result<Exits, ExitsError> {
    use iced_x86::{Code, FlowControl, OpKind};
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut insn = iced_x86::Instruction::default();
    let mut exits = Exits::default();
    while decoder.can_decode() {
        let at = decoder.ip();
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Err(ExitsError::Undecodable { at });
        }
        match insn.flow_control() {
            FlowControl::Return if matches!(insn.code(), Code::Retnq | Code::Retnq_imm16) => {
                exits.rets.push(at);
            }
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
                if matches!(insn.op0_kind(), OpKind::NearBranch64) =>
            {
                let target = insn.near_branch64();
                let unconditional = insn.flow_control() == FlowControl::UnconditionalBranch;
                if target == 0 && unconditional {
                    exits.restarts.push(at);
                } else if target >= size {
                    exits.tail_jumps.push(at);
                }
            }
            FlowControl::IndirectBranch => exits.indirect_jumps.push(at),
            _ => {}
        }
    }
    if (bytes.len() as u64) < size {
        return Err(ExitsError::Undecodable {
            at: bytes.len() as u64,
        });
    }
    Ok(exits)
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
            demangled: None,
            demangled_base: None,
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

    /// A Go-shaped function: `cmp %rsp,0x10(%r14); jbe L; ... ret; L: call
    /// runtime.morestack; jmp start`, with a tail jump out and a `repz ret`.
    static GO_LIKE: [u8; 29] = [
        0x49, 0x3b, 0x66, 0x10, // 0: cmp 0x10(%r14),%rsp
        0x76, 0x0c, // 4: jbe 0x12
        0x48, 0x85, 0xc0, // 6: test %rax,%rax
        0x74, 0x01, // 9: je 0xc
        0xc3, // b: ret
        0x0f, 0x84, 0x40, 0x00, 0x00, 0x00, // c: je 0x52 (outside)
        0xf3, 0xc3, // 12: repz ret (what jbe targets here: fine for a sweep)
        0xe8, 0x00, 0x00, 0x00, 0x00, // 14: call next
        0xeb, 0xe5, // 19: jmp 0
        0xff, 0xe0, // 1b: jmp *%rax
    ];

    #[test]
    fn exits_of_a_function_are_its_rets_restarts_and_jumps_out() {
        let e = exits_of(&GO_LIKE, GO_LIKE.len() as u64).unwrap();
        assert_eq!(e.rets, vec![0xb, 0x12]);
        assert_eq!(e.restarts, vec![0x19]);
        assert_eq!(e.tail_jumps, vec![0xc]);
        assert_eq!(e.indirect_jumps, vec![0x1b]);
        assert_eq!(exits_of(&GO_LIKE[..0xb], 0xb), Err(ExitsError::NoReturn));
        assert_eq!(
            exits_of(&GO_LIKE[..3], GO_LIKE.len() as u64),
            Err(ExitsError::Undecodable { at: 0 })
        );
    }
}
