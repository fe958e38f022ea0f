//! Function-entry instructions of real binaries (symbol tables read with `object`).

use std::collections::BTreeSet;

use iced_x86::{Decoder, DecoderOptions, FlowControl};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// One instruction taken from a binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its index in the function (0 = the entry instruction).
    pub nth: usize,
    /// Its virtual address in the binary.
    pub addr: u64,
}

/// The first `per_function` instructions of every function (text symbols with a size) of the
/// ELF file at `path`, deduplicated by address. Decoding stops early at an unconditional
/// transfer (ret, jmp) or an invalid instruction.
pub fn function_sites(path: &str, per_function: usize) -> std::io::Result<Vec<Site>> {
    let data = std::fs::read(path)?;
    let file = object::File::parse(&*data).map_err(std::io::Error::other)?;
    let starts = function_spans(&file);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (addr, size) in starts {
        let Some(bytes) = bytes_at(&file, addr, size.min(128)) else {
            continue;
        };
        let mut dec = Decoder::with_ip(64, &bytes, addr, DecoderOptions::NONE);
        for nth in 0..per_function {
            if !dec.can_decode() {
                break;
            }
            let pos = dec.position();
            let ins = dec.decode();
            let end = dec.position();
            if ins.is_invalid() {
                // Keep it: analysis must reject it properly; then stop.
                if nth == 0 {
                    out.push(Site {
                        bytes: bytes[pos..bytes.len().min(pos + 15)].to_vec(),
                        nth,
                        addr: ins.ip(),
                    });
                }
                break;
            }
            if seen.insert(ins.ip()) {
                out.push(Site {
                    bytes: bytes[pos..end].to_vec(),
                    nth,
                    addr: ins.ip(),
                });
            }
            if matches!(
                ins.flow_control(),
                FlowControl::Return
                    | FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
                    | FlowControl::Interrupt
                    | FlowControl::Exception
            ) {
                break;
            }
        }
    }
    Ok(out)
}

/// Every function (text symbol with a size) of the ELF file at `path`, whole: its address
/// and its bytes, deduplicated by address.
pub fn functions(path: &str) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    let data = std::fs::read(path)?;
    let file = object::File::parse(&*data).map_err(std::io::Error::other)?;
    let starts = function_spans(&file);
    let mut seen = BTreeSet::new();
    Ok(starts
        .into_iter()
        .filter(|(addr, _)| seen.insert(*addr))
        .filter_map(|(addr, size)| Some((addr, bytes_at(&file, addr, size)?)))
        .collect())
}

/// (address, size) of every text symbol with a size, from both symbol tables, in order.
fn function_spans(file: &object::File<'_>) -> BTreeSet<(u64, u64)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|sym| sym.kind() == SymbolKind::Text && sym.size() > 0 && sym.address() != 0)
        .map(|sym| (sym.address(), sym.size()))
        .collect()
}

fn bytes_at(file: &object::File<'_>, addr: u64, len: u64) -> Option<Vec<u8>> {
    for sec in file.sections() {
        let (start, size) = (sec.address(), sec.size());
        if addr >= start && addr < start + size {
            let data = sec.data().ok()?;
            let off = usize::try_from(addr - start).ok()?;
            let end = data.len().min(off + usize::try_from(len).ok()?);
            return data.get(off..end).map(<[u8]>::to_vec);
        }
    }
    None
}
