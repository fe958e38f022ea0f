//! `--stack`: the user stack of each hit, walked while the thread is stopped, counted per
//! distinct stack and printed at the end as bpftrace prints `@[ustack] = count()`, or written
//! in the folded format flame-graph tools read (`--folded FILE`).
//!
//! # Walking
//!
//! The stack is read with one `/proc/PID/mem` read of its top [`STACK_READ`] bytes (more,
//! chunk by chunk, only when a frame lies deeper, up to [`STACK_MAX`]), then walked at most
//! [`MAX_FRAMES`] frames deep:
//!
//! - where the code has call-frame information (`.eh_frame`, read with `gimli` through
//!   `.eh_frame_hdr`'s binary-search table), by its rule for the program counter: exact at
//!   every instruction, a function's first one included, and in code built without frame
//!   pointers;
//! - where it has none, by the frame-pointer chain (`[rbp]` is the caller's `rbp`,
//!   `[rbp + 8]` the return address), checked to stay inside the stack and to move
//!   outwards; on a function's first instruction (a probe on its entry) the return address
//!   is at `[rsp]`, since the frame is not set up yet.
//!
//! A return probe replaced return addresses with its trampoline: a return address equal to
//! the trampoline is replaced by the real one from the thread's chain of tracked calls (the
//! entry whose slot is the one read, else the next one, innermost first), so the stack is
//! the same as without the return probe.
//!
//! Each frame is kept as (file, file offset), so stacks of processes that map a file at
//! different addresses are one stack, and names are looked up once per distinct frame at the
//! end (demangled, see [`crate::elf`]). The unwind rules are cached per file and address.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};
use object::{Object, ObjectSection};

use crate::elf::ElfImage;
use crate::maps::Mapping;

/// Frames walked at most (bpftrace's `ustack` default is 127).
pub const MAX_FRAMES: usize = 127;
/// Bytes of stack read at once from the stack pointer.
pub const STACK_READ: usize = 16 * 1024;
/// The deepest a frame may be above the stack pointer.
pub const STACK_MAX: usize = 512 * 1024;

/// The registers a walk starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRegs {
    /// The program counter (the probed instruction).
    pub ip: u64,
    /// `rsp`.
    pub sp: u64,
    /// `rbp`.
    pub bp: u64,
}

/// One frame of a walked stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// Code of a file: its index in the collector's table and the file offset.
    File {
        /// Index into [`StackCounts`]'s files.
        file: u32,
        /// File offset of the program counter.
        offset: u64,
    },
    /// An address in no file mapping (JIT code, the vDSO).
    Addr(u64),
}

/// How to find the caller's frame from a program counter (a CFI row, simplified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    /// The CFA is `rbp + off` rather than `rsp + off`.
    cfa_bp: bool,
    cfa_off: i64,
    /// The return address is at `CFA + ra_off`; `None`: the outermost frame.
    ra_off: Option<i64>,
    /// The caller's `rbp` is at `CFA + off`; `None`: unchanged.
    bp_off: Option<i64>,
}

#[derive(Debug)]
struct EhInfo {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    hdr: Vec<u8>,
    hdr_addr: u64,
    text_addr: u64,
}

#[derive(Debug)]
struct FileInfo {
    path: PathBuf,
    image: Option<ElfImage>,
    eh: Option<EhInfo>,
    /// Unwind rules by link-time address (`None`: no CFI there).
    rules: HashMap<u64, Option<Rule>>,
}

impl FileInfo {
    fn open(path: &str) -> FileInfo {
        let path = PathBuf::from(path);
        let Ok(data) = std::fs::read(&path) else {
            return FileInfo {
                path,
                image: None,
                eh: None,
                rules: HashMap::new(),
            };
        };
        let image = ElfImage::parse(&path, &data).ok();
        let eh = object::File::parse(&*data).ok().and_then(|f| {
            let sec = |n: &str| {
                f.section_by_name(n)
                    .and_then(|s| Some((s.address(), s.data().ok()?.to_vec())))
            };
            let (eh_frame_addr, eh_frame) = sec(".eh_frame")?;
            let (hdr_addr, hdr) = sec(".eh_frame_hdr").unwrap_or((0, Vec::new()));
            let text_addr = f.section_by_name(".text").map_or(0, |s| s.address());
            Some(EhInfo {
                eh_frame,
                eh_frame_addr,
                hdr,
                hdr_addr,
                text_addr,
            })
        });
        FileInfo {
            path,
            image,
            eh,
            rules: HashMap::new(),
        }
    }

    /// The CFI rule at link-time address `vaddr`, cached.
    fn rule(&mut self, vaddr: u64, ctx: &mut UnwindContext<usize>) -> Option<Rule> {
        if let Some(r) = self.rules.get(&vaddr) {
            return *r;
        }
        let r = self.eh.as_ref().and_then(|eh| cfi_rule(eh, vaddr, ctx));
        self.rules.insert(vaddr, r);
        r
    }
}

fn cfi_rule(eh: &EhInfo, vaddr: u64, ctx: &mut UnwindContext<usize>) -> Option<Rule> {
    let frame = EhFrame::new(&eh.eh_frame, LittleEndian);
    let bases = BaseAddresses::default()
        .set_eh_frame(eh.eh_frame_addr)
        .set_eh_frame_hdr(eh.hdr_addr)
        .set_text(eh.text_addr);
    let fde = if eh.hdr.is_empty() {
        frame
            .fde_for_address(&bases, vaddr, EhFrame::cie_from_offset)
            .ok()?
    } else {
        let hdr = EhFrameHdr::new(&eh.hdr, LittleEndian)
            .parse(&bases, 8)
            .ok()?;
        hdr.table()?
            .fde_for_address(&frame, &bases, vaddr, EhFrame::cie_from_offset)
            .ok()?
    };
    let row = fde
        .unwind_info_for_address(&frame, &bases, ctx, vaddr)
        .ok()?;
    let (cfa_bp, cfa_off) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
            (false, *offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
            (true, *offset)
        }
        _ => return None,
    };
    let ra_off = match row.register(X86_64::RA) {
        RegisterRule::Offset(o) => Some(o),
        RegisterRule::Undefined => None,
        _ => return None,
    };
    let bp_off = match row.register(X86_64::RBP) {
        RegisterRule::Offset(o) => Some(o),
        RegisterRule::Undefined | RegisterRule::SameValue => None,
        _ => return None,
    };
    Some(Rule {
        cfa_bp,
        cfa_off,
        ra_off,
        bp_off,
    })
}

/// The stack read from the stack pointer up, grown chunk by chunk on demand.
struct StackBuf<'a> {
    base: u64,
    data: &'a mut Vec<u8>,
    /// No more can be read (the end of the stack mapping, or [`STACK_MAX`]).
    end: bool,
    read: &'a mut dyn FnMut(u64, &mut [u8]) -> usize,
    reads: u32,
}

impl StackBuf<'_> {
    fn word(&mut self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        while off + 8 > self.data.len() && !self.end && self.data.len() < STACK_MAX {
            let have = self.data.len();
            self.data.resize(have + STACK_READ, 0);
            let n = (self.read)(self.base + have as u64, &mut self.data[have..]);
            self.reads += 1;
            self.data.truncate(have + n);
            self.end = n < STACK_READ;
        }
        let b = self.data.get(off..off + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn holds(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < STACK_MAX as u64
    }
}

/// Stacks counted per distinct stack, with the unwind and symbol caches.
#[derive(Debug, Default)]
pub struct StackCounts {
    files: Vec<FileInfo>,
    by_path: HashMap<String, u32>,
    counts: HashMap<Vec<Frame>, u64>,
    ctx: Option<Box<UnwindContext<usize>>>,
    buf: Vec<u8>,
    /// Stack bytes read and `/proc/PID/mem` reads made, for the statistics.
    pub reads: u64,
}

impl StackCounts {
    /// No stacks yet.
    pub fn new() -> StackCounts {
        StackCounts::default()
    }

    fn file_index(&mut self, path: &str) -> u32 {
        if let Some(&i) = self.by_path.get(path) {
            return i;
        }
        let i = self.files.len() as u32;
        self.files.push(FileInfo::open(path));
        self.by_path.insert(path.to_owned(), i);
        i
    }

    fn locate(&mut self, maps: &[Mapping], pc: u64) -> Option<(u32, u64, u64)> {
        let i = maps.partition_point(|m| m.range.end <= pc);
        let m = maps
            .get(i)
            .filter(|m| m.range.contains(&pc) && m.is_file())?;
        let offset = pc - m.range.start + m.offset;
        let file = self.file_index(&m.path);
        let vaddr = self.files[file as usize]
            .image
            .as_ref()
            .and_then(|img| img.offset_to_vaddr(offset))?;
        Some((file, offset, vaddr))
    }

    /// Walks the stack of a stopped thread and counts it. `read` reads the process's memory
    /// (partially: it returns how many bytes it read), `maps` are its mappings sorted by
    /// address, `tramp` the return-probe trampoline and `chain` the thread's tracked calls
    /// as (slot of the return address, real return address), innermost first.
    pub fn record(
        &mut self,
        read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
        maps: &[Mapping],
        regs: StackRegs,
        tramp: Option<u64>,
        chain: &[(u64, u64)],
    ) -> usize {
        let frames = self.walk(read, maps, regs, tramp, chain);
        let n = frames.len();
        *self.counts.entry(frames).or_insert(0) += 1;
        n
    }

    fn walk(
        &mut self,
        read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
        maps: &[Mapping],
        regs: StackRegs,
        tramp: Option<u64>,
        chain: &[(u64, u64)],
    ) -> Vec<Frame> {
        let mut data = core::mem::take(&mut self.buf);
        data.clear();
        let mut ctx = self.ctx.take().unwrap_or_default();
        let mut stack = StackBuf {
            base: regs.sp,
            data: &mut data,
            end: false,
            read,
            reads: 0,
        };
        let mut frames = Vec::with_capacity(16);
        let (mut pc, mut sp, mut bp) = (regs.ip, regs.sp, regs.bp);
        let mut next_chain = 0;
        while frames.len() < MAX_FRAMES {
            let here = self.locate(maps, pc);
            frames.push(match here {
                Some((file, offset, _)) => Frame::File { file, offset },
                None => Frame::Addr(pc),
            });
            // A return address points after its call: look up the call's own rule.
            let inner = frames.len() == 1;
            let rule = match here {
                Some((file, _, vaddr)) => {
                    let at = if inner {
                        vaddr
                    } else {
                        vaddr.saturating_sub(1)
                    };
                    self.files[file as usize].rule(at, &mut ctx)
                }
                None => None,
            };
            let (cfa, ra_slot, new_bp) = match rule {
                Some(r) => {
                    let Some(ra_off) = r.ra_off else { break };
                    let reg = if r.cfa_bp { bp } else { sp };
                    let cfa = reg.wrapping_add_signed(r.cfa_off);
                    let new_bp = match r.bp_off {
                        Some(o) => match stack.word(cfa.wrapping_add_signed(o)) {
                            Some(v) => v,
                            None => break,
                        },
                        None => bp,
                    };
                    (cfa, cfa.wrapping_add_signed(ra_off), new_bp)
                }
                None if inner && self.at_symbol_start(here) => (sp + 8, sp, bp),
                None => {
                    // The frame-pointer chain, if it stays in the stack and moves outwards.
                    if bp < sp || bp % 8 != 0 || !stack.holds(bp) {
                        break;
                    }
                    let Some(caller_bp) = stack.word(bp) else {
                        break;
                    };
                    (bp + 16, bp + 8, caller_bp)
                }
            };
            let Some(mut ra) = stack.word(ra_slot) else {
                break;
            };
            if Some(ra) == tramp {
                let found = chain[next_chain.min(chain.len())..]
                    .iter()
                    .position(|&(slot, _)| slot == ra_slot)
                    .map(|k| next_chain + k)
                    .or_else(|| (next_chain < chain.len()).then_some(next_chain));
                let Some(k) = found else { break };
                ra = chain[k].1;
                next_chain = k + 1;
            }
            if ra == 0 || cfa <= sp {
                break;
            }
            pc = ra;
            sp = cfa;
            bp = new_bp;
        }
        self.reads += u64::from(stack.reads);
        self.buf = data;
        self.ctx = Some(ctx);
        frames
    }

    fn at_symbol_start(&self, here: Option<(u32, u64, u64)>) -> bool {
        let Some((file, offset, _)) = here else {
            return false;
        };
        self.files[file as usize]
            .image
            .as_ref()
            .and_then(|img| img.symbol_at_offset(offset))
            .is_some_and(|s| s.file_offset == offset)
    }

    /// Distinct stacks recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The stacks, symbolised, innermost frame first, with their counts: most frequent last
    /// (as bpftrace sorts a map), ties by frames.
    pub fn symbolised(&self) -> Vec<(Vec<SymFrame>, u64)> {
        let mut cache: HashMap<(Frame, bool), SymFrame> = HashMap::new();
        let mut out: Vec<(Vec<SymFrame>, u64)> = Vec::new();
        let mut merged: HashMap<Vec<SymFrame>, u64> = HashMap::new();
        for (frames, &n) in &self.counts {
            let syms: Vec<SymFrame> = frames
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    cache
                        .entry((*f, i > 0))
                        .or_insert_with(|| self.symbolise(*f, i > 0))
                        .clone()
                })
                .collect();
            *merged.entry(syms).or_insert(0) += n;
        }
        out.extend(merged);
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn symbolise(&self, f: Frame, ret: bool) -> SymFrame {
        match f {
            Frame::Addr(a) => SymFrame {
                function: None,
                offset: a,
                file: None,
            },
            Frame::File { file, offset } => {
                let info = &self.files[file as usize];
                let name = info
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                // A return address may be the first byte after a function ending in a call.
                let look = if ret {
                    offset.saturating_sub(1)
                } else {
                    offset
                };
                match info
                    .image
                    .as_ref()
                    .and_then(|img| img.symbol_at_offset(look))
                {
                    Some(s) => SymFrame {
                        function: Some(s.demangled.clone().unwrap_or_else(|| s.name.clone())),
                        offset: offset - s.file_offset,
                        file: name,
                    },
                    None => SymFrame {
                        function: None,
                        offset,
                        file: name,
                    },
                }
            }
        }
    }
}

/// A frame with its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymFrame {
    /// The function (demangled), if a symbol covers the address.
    pub function: Option<String>,
    /// Bytes into the function; without a function, the file offset (or the address).
    pub offset: u64,
    /// The file's name, if the code is in one.
    pub file: Option<String>,
}

impl SymFrame {
    /// `c+4` as bpftrace prints a `ustack` frame; `[libfoo.so]+0x1234` or `0x7f...` without a
    /// symbol.
    pub fn text(&self) -> String {
        match (&self.function, &self.file) {
            (Some(f), _) => format!("{f}+{}", self.offset),
            (None, Some(file)) => format!("[{file}]+{:#x}", self.offset),
            (None, None) => format!("{:#x}", self.offset),
        }
    }

    /// The frame's name in folded stacks: the function, else `[file]`, else the address.
    pub fn folded(&self) -> String {
        let s = match (&self.function, &self.file) {
            (Some(f), _) => f.clone(),
            (None, Some(file)) => format!("[{file}]"),
            (None, None) => format!("{:#x}", self.offset),
        };
        // `;` separates frames and the last space the count.
        s.replace(';', ":")
    }
}

/// Writes the stacks as bpftrace prints `@[ustack] = count()`: `@[`, one indented frame per
/// line (innermost first), then `]: COUNT`.
pub fn write_text(out: &mut dyn Write, stacks: &[(Vec<SymFrame>, u64)]) -> io::Result<()> {
    for (frames, n) in stacks {
        writeln!(out, "@[")?;
        for f in frames {
            writeln!(out, "    {}", f.text())?;
        }
        writeln!(out, "]: {n}")?;
    }
    Ok(())
}

/// Writes the stacks folded, one `outermost;...;innermost COUNT` line each (Brendan Gregg's
/// `stackcollapse` format, read by `flamegraph.pl` and `inferno`), stacks with the same
/// function names merged.
pub fn write_folded(out: &mut dyn Write, stacks: &[(Vec<SymFrame>, u64)]) -> io::Result<()> {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for (frames, n) in stacks {
        let line: Vec<String> = frames.iter().rev().map(SymFrame::folded).collect();
        *merged.entry(line.join(";")).or_insert(0) += n;
    }
    let mut lines: Vec<(String, u64)> = merged.into_iter().collect();
    lines.sort();
    for (l, n) in lines {
        writeln!(out, "{l} {n}")?;
    }
    Ok(())
}

/// The stacks as JSON lines: `{"type":"stack","frames":["c+4",...],"count":N}`.
pub fn write_json(out: &mut dyn Write, stacks: &[(Vec<SymFrame>, u64)]) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Stack {
        #[serde(rename = "type")]
        kind: &'static str,
        frames: Vec<String>,
        count: u64,
    }
    for (frames, n) in stacks {
        let line = crate::json::line(&Stack {
            kind: "stack",
            frames: frames.iter().map(SymFrame::text).collect(),
            count: *n,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, off: u64) -> SymFrame {
        SymFrame {
            function: Some(name.into()),
            offset: off,
            file: Some("prog".into()),
        }
    }

    #[test]
    fn text_and_folded_forms() {
        let unknown = SymFrame {
            function: None,
            offset: 0x2724a,
            file: Some("libc.so.6".into()),
        };
        let stacks = vec![
            (vec![f("c", 0), f("main", 55)], 1),
            (vec![f("c", 0), f("b", 5), unknown.clone()], 2),
            // The same functions at other offsets fold into one line.
            (vec![f("c", 0), f("b", 9), unknown], 3),
        ];
        let mut text = Vec::new();
        write_text(&mut text, &stacks[..1]).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "@[\n    c+0\n    main+55\n]: 1\n"
        );
        let mut folded = Vec::new();
        write_folded(&mut folded, &stacks).unwrap();
        assert_eq!(
            String::from_utf8(folded).unwrap(),
            "[libc.so.6];b;c 5\nmain;c 1\n"
        );
        let mut json = Vec::new();
        write_json(&mut json, &stacks[..1]).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"type\":\"stack\",\"frames\":[\"c+0\",\"main+55\"],\"count\":1}\n"
        );
        assert_eq!(f("a;b", 1).folded(), "a:b");
    }
}
