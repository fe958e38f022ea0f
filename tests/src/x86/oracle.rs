//! The real CPU as the oracle: run one instruction natively in a traced child, then through
//! the `X86_64` plan (emulated on a copy of the registers, boosted from a near and a far slot,
//! or single-stepped from the slot and fixed up), and compare registers, flags, x87/SSE state
//! and every page the instruction can touch, the stack and its red zone included.

use core::fmt::Write as _;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, Register,
};
use probe_core::arch::x86_64::{X86Regs, X86_64};
use probe_core::{Addr, Arch, PlanKind};

use super::procmem::ProcMem;
use super::ptrace::{Child, FpRegs, Stop, FAR_START, LOW_END, LOW_START};

/// Where the probed instruction is placed.
pub const INSN: u64 = 0x8010_0400;
/// A slot within ±2 GiB of the instruction and of (nearly) all its RIP-relative targets.
pub const NEAR_SLOT: u64 = 0x4010_0000;
/// A slot more than 2 GiB away from everything in the low window.
pub const FAR_SLOT: u64 = FAR_START + 0x40;
/// Initial stack pointer (as at a function entry: `rsp % 16 == 8`).
const STACK: u64 = 0x0400_0008;
/// Registers holding pointers point into `[PTR_LO, PTR_HI)`.
const PTR_LO: u64 = 0x0100_0000;
const PTR_HI: u64 = 0x0200_0000;
const PAGE: u64 = 4096;
const SLOT_SIZE: usize = <X86_64 as Arch>::SLOT_SIZE;
/// The arithmetic flags and DF: what is compared of eflags.
const FLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The initial contents of the page at `page`: canonical-looking 64-bit words, so that a
/// `ret` or an indirect jump through memory lands on a canonical address in both runs.
fn pattern(page: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(PAGE as usize);
    for a in (page..page + PAGE).step_by(8) {
        let w = splitmix(a) & 0x0000_3fff_ffff_fff8;
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// The pages an instruction can touch, and its memory operands as (address, size).
type Touched = (BTreeSet<u64>, Vec<(u64, u64)>);

/// What the oracle counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// Runs compared, by plan kind and slot ("emulate", "boost/near", "step/far", ...).
    pub checked: BTreeMap<String, usize>,
    /// Instructions (or variants) not compared, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Instructions the analysis refused, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Mismatches, described.
    pub mismatches: Vec<String>,
    /// The first few instructions skipped for each reason.
    pub skip_examples: BTreeMap<String, Vec<String>>,
    current: String,
}

impl Stats {
    fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
        let ex = self.skip_examples.entry(why.to_string()).or_default();
        if ex.len() < 4 {
            ex.push(self.current.clone());
        }
    }

    /// A printable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let total: usize = self.checked.values().sum();
        let _ = writeln!(s, "checked runs: {total}");
        for (k, v) in &self.checked {
            let _ = writeln!(s, "  {k:<14} {v}");
        }
        let _ = writeln!(s, "skipped:");
        for (k, v) in &self.skipped {
            let ex = self
                .skip_examples
                .get(k)
                .map(|e| e.join(", "))
                .unwrap_or_default();
            let _ = writeln!(s, "  {k:<40} {v:>6}  e.g. {ex}");
        }
        let _ = writeln!(s, "rejected by analysis:");
        for (k, v) in &self.rejected {
            let _ = writeln!(s, "  {k:<40} {v}");
        }
        let _ = writeln!(s, "mismatches: {}", self.mismatches.len());
        s
    }
}

/// One observed end state.
struct Outcome {
    regs: X86Regs,
    fp: FpRegs,
    pages: BTreeMap<u64, Vec<u8>>,
}

/// The oracle: one traced child for a whole batch of instructions.
#[derive(Debug)]
pub struct Oracle {
    child: Child,
    regs0: X86Regs,
    fp0: FpRegs,
    /// Counters and mismatches so far.
    pub stats: Stats,
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn nondeterministic(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Rdtsc
            | Mnemonic::Rdtscp
            | Mnemonic::Rdrand
            | Mnemonic::Rdseed
            | Mnemonic::Rdpid
            | Mnemonic::Rdpmc
            | Mnemonic::Popf
            | Mnemonic::Popfq
            | Mnemonic::Cpuid
    )
}

fn reg_diff(a: &X86Regs, b: &X86Regs) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, x: u64, y: u64| {
        if x != y {
            d.push(format!("{name}: cpu {x:#x} plan {y:#x}"));
        }
    };
    for n in 0..16u8 {
        const NAMES: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        cmp(NAMES[n as usize], a.gpr(n), b.gpr(n));
    }
    cmp("rip", a.rip, b.rip);
    cmp("eflags", a.eflags & FLAGS, b.eflags & FLAGS);
    cmp("fs_base", a.fs_base, b.fs_base);
    cmp("gs_base", a.gs_base, b.gs_base);
    cmp("cs", a.cs, b.cs);
    cmp("ss", a.ss, b.ss);
    cmp("ds", a.ds, b.ds);
    cmp("es", a.es, b.es);
    cmp("fs", a.fs, b.fs);
    cmp("gs", a.gs, b.gs);
    d
}

fn fp_diff(a: &FpRegs, b: &FpRegs) -> Vec<String> {
    let mut d = Vec::new();
    if (a.cwd, a.swd, a.ftw, a.mxcsr) != (b.cwd, b.swd, b.ftw, b.mxcsr) {
        d.push(format!(
            "x87/mxcsr control: cpu {:?} plan {:?}",
            (a.cwd, a.swd, a.ftw, a.mxcsr),
            (b.cwd, b.swd, b.ftw, b.mxcsr)
        ));
    }
    if a.st_space != b.st_space {
        d.push("st registers differ".into());
    }
    for i in 0..16 {
        if a.xmm_space[i * 4..i * 4 + 4] != b.xmm_space[i * 4..i * 4 + 4] {
            d.push(format!(
                "xmm{i}: cpu {:08x?} plan {:08x?}",
                &a.xmm_space[i * 4..i * 4 + 4],
                &b.xmm_space[i * 4..i * 4 + 4]
            ));
        }
    }
    d
}

impl Oracle {
    /// Start the child.
    pub fn new() -> io::Result<Oracle> {
        let child = Child::spawn()?;
        let regs0 = child.regs()?;
        let mut fp0 = child.fpregs()?;
        for (i, w) in fp0.xmm_space.iter_mut().enumerate() {
            *w = splitmix(i as u64 ^ 0x55) as u32;
        }
        fp0.mxcsr = 0x1f80;
        Ok(Oracle {
            child,
            regs0,
            fp0,
            stats: Stats::default(),
        })
    }

    fn mem(&self) -> ProcMem<'_> {
        ProcMem {
            pid: self.child.pid(),
            file: self.child.mem_file(),
        }
    }

    /// Initial registers for `variant` of the instruction `ins`.
    fn regs_for(&self, ins: &Instruction, bytes: &[u8], variant: usize) -> X86Regs {
        let mut seed = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        seed ^= variant as u64;
        let mut next = || {
            seed = splitmix(seed);
            seed
        };
        let mut r = self.regs0;
        for n in 0..16u8 {
            r.set_gpr(n, PTR_LO + (next() % (PTR_HI - PTR_LO)) / 16 * 16);
        }
        r.rsp = STACK;
        r.rip = INSN;
        // Variant bits 0..5 give CF PF AF ZF SF OF directly, so 64 variants see every mix.
        let v = variant as u64;
        let bits = [0x1u64, 0x4, 0x10, 0x40, 0x80, 0x800];
        let mut fl = 0x202;
        for (i, b) in bits.iter().enumerate() {
            if v >> i & 1 != 0 {
                fl |= b;
            }
        }
        r.eflags = fl;
        if ins.is_string_instruction() || ins.is_loop() || ins.is_loopcc() || ins.is_jcx_short() {
            r.rcx = if ins.is_string_instruction() {
                [0u64, 1, 2, 0x21][variant % 4]
            } else {
                [0u64, 1, 2, 0x21, 0x1_0000_0000][variant % 5]
            };
        }
        r
    }

    /// Check one instruction (at most 15 bytes) under `variants` register variants.
    pub fn check(&mut self, bytes: &[u8], variants: usize, label: &str) {
        self.check_variants(bytes, 0..variants, label);
    }

    /// Check one instruction under the register variants `variants` (variant bits 0..5 pick
    /// the arithmetic flags).
    pub fn check_variants(&mut self, bytes: &[u8], variants: core::ops::Range<usize>, label: &str) {
        let plan = match X86_64::analyze(bytes) {
            Ok(p) => p,
            Err(r) => {
                *self.stats.rejected.entry(format!("{r:?}")).or_default() += 1;
                return;
            }
        };
        let len = X86_64::insn_len(&plan);
        let code = &bytes[..len];
        self.stats.current = format!("{label} [{}]", hexs(code));
        let mut dec = Decoder::with_ip(64, code, INSN, DecoderOptions::NONE);
        let ins = dec.decode();
        if nondeterministic(ins.mnemonic()) {
            self.stats.skip("nondeterministic or flag-loading");
            return;
        }
        if ins.is_save_restore_instruction() {
            self.stats.skip("save/restore (xsave...)");
            return;
        }
        // The boosted alternative a ptrace platform prefers for stack emulations is checked
        // too, under the same variants.
        let alternative = X86_64::boost_instead(&plan);
        for p in core::iter::once(plan).chain(alternative) {
            for v in variants.clone() {
                if let Err(e) = self.check_variant(&p, &ins, code, v, label) {
                    self.stats
                        .mismatches
                        .push(format!("{label} [{}] io error: {e}", hexs(code)));
                }
            }
        }
    }

    /// The pages an instruction can touch with registers `r`, or why it cannot be compared.
    fn pages(&self, ins: &Instruction, r: &X86Regs) -> Result<Touched, &'static str> {
        let mut f = InstructionInfoFactory::new();
        let info = f.info(ins);
        let mut pages = BTreeSet::new();
        let mut addrs = Vec::new();
        let value = |reg: Register, _: usize, _: usize| -> Option<u64> {
            match reg {
                Register::RIP => Some(ins.next_ip()),
                Register::FS => Some(r.fs_base),
                Register::GS => Some(r.gs_base),
                Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
                _ if reg.is_gpr() => {
                    let full = reg.full_register();
                    let n = full as u32 - Register::RAX as u32;
                    let v = r.gpr(n as u8);
                    Some(match reg.size() {
                        8 => v,
                        4 => v & 0xffff_ffff,
                        2 => v & 0xffff,
                        _ => {
                            if matches!(
                                reg,
                                Register::AH | Register::CH | Register::DH | Register::BH
                            ) {
                                (v >> 8) & 0xff
                            } else {
                                v & 0xff
                            }
                        }
                    })
                }
                _ => None,
            }
        };
        for um in info.used_memory() {
            let Some(addr) = um.virtual_address(0, value) else {
                return Err("unresolvable memory operand (vsib)");
            };
            let mut size = um.memory_size().size() as u64;
            if ins.is_string_instruction() {
                size = ins.memory_size().size() as u64;
                if ins.has_rep_prefix() || ins.has_repne_prefix() {
                    size *= r.rcx.max(1);
                }
            }
            if size == 0 {
                return Err("memory operand of unknown size");
            }
            addrs.push((addr, size));
            let end = addr.checked_add(size).ok_or("memory operand wraps")?;
            let in_low = addr >= LOW_START && end <= LOW_END;
            let tls = um.segment() == Register::FS && {
                let mut b = [0u8; 1];
                self.child.read(addr, &mut b).is_ok() && self.child.read(end - 1, &mut b).is_ok()
            };
            if !in_low && !tls {
                return Err("memory operand outside the mapped window");
            }
            let mut p = addr & !(PAGE - 1);
            while p < end {
                pages.insert(p);
                p += PAGE;
            }
        }
        let mut p = (r.rsp - 0x200) & !(PAGE - 1);
        while p < r.rsp + 0x200 {
            pages.insert(p);
            p += PAGE;
        }
        pages.insert(INSN & !(PAGE - 1));
        for slot in [NEAR_SLOT, FAR_SLOT] {
            if pages.contains(&(slot & !(PAGE - 1))) {
                return Err("memory operand on the slot page");
            }
        }
        Ok((pages, addrs))
    }

    fn restore(&self, pages: &BTreeMap<u64, Vec<u8>>) -> io::Result<()> {
        for (p, c) in pages {
            self.child.write(*p, c)?;
        }
        Ok(())
    }

    fn snapshot(&self, regs: X86Regs, pages: &BTreeMap<u64, Vec<u8>>) -> io::Result<Outcome> {
        let mut out = BTreeMap::new();
        for p in pages.keys() {
            let mut b = vec![0u8; PAGE as usize];
            self.child.read(*p, &mut b)?;
            out.insert(*p, b);
        }
        Ok(Outcome {
            regs,
            fp: self.child.fpregs()?,
            pages: out,
        })
    }

    /// Run until the `int3` after the instruction; the registers as if it had not trapped.
    fn run_to_int3(&self, end: u64) -> io::Result<Result<X86Regs, String>> {
        match self.child.cont()? {
            Stop::Trap => {
                let mut r = self.child.regs()?;
                if r.rip == end + 1 {
                    r.rip = end;
                    Ok(Ok(r))
                } else {
                    Ok(Err(format!("trap at unexpected rip {:#x}", r.rip)))
                }
            }
            s => Ok(Err(format!("{s:?} at rip {:#x}", self.child.regs()?.rip))),
        }
    }

    fn check_variant(
        &mut self,
        plan: &<X86_64 as Arch>::Plan,
        ins: &Instruction,
        code: &[u8],
        v: usize,
        label: &str,
    ) -> io::Result<()> {
        let len = code.len() as u64;
        let end = INSN + len;
        let r0 = self.regs_for(ins, code, v);
        let (pages, addrs) = match self.pages(ins, &r0) {
            Ok(p) => p,
            Err(why) => {
                self.stats.skip(why);
                return Ok(());
            }
        };
        let mut init = BTreeMap::new();
        for p in &pages {
            let mut c = if *p >= LOW_START && *p < LOW_END {
                pattern(*p)
            } else {
                let mut b = vec![0u8; PAGE as usize];
                self.child.read(*p, &mut b)?;
                b
            };
            if *p == INSN & !(PAGE - 1) {
                let o = (INSN - p) as usize;
                c[o..o + code.len()].copy_from_slice(code);
                c[o + code.len()..o + code.len() + 16].fill(0xcc);
            }
            init.insert(*p, c);
        }
        if matches!(
            ins.flow_control(),
            FlowControl::IndirectBranch | FlowControl::IndirectCall | FlowControl::Return
        ) {
            // Branch targets read from memory: canonical addresses, even when misaligned.
            for &(a, _) in &addrs {
                let target = 0x0000_1234_5678_9ab0u64 + ((v as u64) << 4);
                for (i, b) in target.to_le_bytes().iter().enumerate() {
                    let at = a + i as u64;
                    if let Some(c) = init.get_mut(&(at & !(PAGE - 1))) {
                        c[(at % PAGE) as usize] = *b;
                    }
                }
            }
        }
        let straight = ins.flow_control() == FlowControl::Next;

        // (a) natively.
        self.restore(&init)?;
        self.child.set_regs(&r0)?;
        self.child.set_fpregs(&self.fp0)?;
        let native = if straight {
            match self.run_to_int3(end)? {
                Ok(r) => r,
                Err(why) => {
                    self.stats.skip(&format!(
                        "native run faults ({})",
                        why.split(' ').next().unwrap_or("")
                    ));
                    return Ok(());
                }
            }
        } else {
            match self.child.step()? {
                Stop::Trap => self.child.regs()?,
                s => {
                    self.stats.skip(&format!("native run faults ({s:?})"));
                    return Ok(());
                }
            }
        };
        let native = self.snapshot(native, &init)?;
        // Did the native run write somewhere the plan's run cannot, or is it unstable?
        let kind = X86_64::plan_kind(plan);
        let slots: &[(u64, &str)] = match kind {
            PlanKind::Emulate => &[(0, "emulate")],
            PlanKind::Boost => &[(NEAR_SLOT, "boost/near"), (FAR_SLOT, "boost/far")],
            PlanKind::SingleStep => &[(NEAR_SLOT, "step/near"), (FAR_SLOT, "step/far")],
        };
        for &(slot, what) in slots {
            self.restore(&init)?;
            let mem = self.mem();
            let mut ignore = None;
            let got = match kind {
                PlanKind::Emulate => {
                    let mut r = r0;
                    if let Err(e) = X86_64::emulate(plan, Addr(INSN), &mut r, &mem) {
                        Err(format!("emulate failed: {e}"))
                    } else {
                        self.child.set_fpregs(&self.fp0)?;
                        Ok(r)
                    }
                }
                _ => {
                    let mut buf = [0xccu8; SLOT_SIZE];
                    let n = match X86_64::encode_slot(plan, Addr(INSN), Addr(slot), &mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            self.stats.skip(&format!("{what}: slot refused ({e:?})"));
                            continue;
                        }
                    };
                    if kind == PlanKind::Boost && n > code.len() + 14 {
                        // The scratch-register sequence pushes below the red zone.
                        ignore = Some(r0.rsp - 136..r0.rsp - 128);
                    }
                    self.child.write(slot, &buf)?;
                    let mut r = r0;
                    let mut st = Default::default();
                    X86_64::prepare_xol(plan, Addr(INSN), Addr(slot), &mut r, &mut st, &mem)
                        .map_err(io::Error::other)?;
                    self.child.set_regs(&r)?;
                    self.child.set_fpregs(&self.fp0)?;
                    if kind == PlanKind::SingleStep {
                        match self.child.step()? {
                            Stop::Trap => {
                                let mut r = self.child.regs()?;
                                match X86_64::finish_step(
                                    plan,
                                    Addr(INSN),
                                    Addr(slot),
                                    &mut r,
                                    &st,
                                    &mem,
                                ) {
                                    Ok(()) => Ok(r),
                                    Err(e) => Err(format!("finish_step failed: {e}")),
                                }
                            }
                            s => Err(format!("step from slot: {s:?}")),
                        }
                    } else if straight {
                        self.run_to_int3(end)?
                    } else {
                        // A boosted branch: step until it leaves the slot.
                        let mut res = Err("did not leave the slot".to_string());
                        for _ in 0..32 {
                            match self.child.step()? {
                                Stop::Trap => {
                                    let r = self.child.regs()?;
                                    if r.rip.wrapping_sub(slot) >= SLOT_SIZE as u64 {
                                        res = Ok(r);
                                        break;
                                    }
                                }
                                s => {
                                    res = Err(format!("{s:?}"));
                                    break;
                                }
                            }
                        }
                        res
                    }
                }
            };
            let mut diffs = Vec::new();
            match got {
                Err(why) => diffs.push(why),
                Ok(r) => {
                    let ours = self.snapshot(r, &init)?;
                    diffs.extend(reg_diff(&native.regs, &ours.regs));
                    diffs.extend(fp_diff(&native.fp, &ours.fp));
                    for (p, a) in &native.pages {
                        let b = &ours.pages[p];
                        for i in 0..a.len() {
                            let at = p + i as u64;
                            // Outside the window (TLS), only the operand's bytes are ours:
                            // the kernel updates the rest (rseq's cpu id) at will.
                            let ours_only = (*p < LOW_START || *p >= LOW_END)
                                && !addrs.iter().any(|&(x, n)| at >= x && at < x + n);
                            if a[i] != b[i]
                                && !ours_only
                                && !ignore.as_ref().is_some_and(|g| g.contains(&at))
                            {
                                diffs.push(format!(
                                    "memory at {at:#x}: cpu {:02x} plan {:02x}",
                                    a[i], b[i]
                                ));
                                break;
                            }
                        }
                    }
                }
            }
            if diffs.is_empty() {
                *self.stats.checked.entry(what.to_string()).or_default() += 1;
            } else {
                self.stats.mismatches.push(format!(
                    "{label} [{}] {} ({what}, variant {v}): {}",
                    hexs(code),
                    plan.class_name(),
                    diffs.join("; ")
                ));
            }
        }
        Ok(())
    }
}
