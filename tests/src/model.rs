//! The model-based test: random sequences of register / unregister / spawn / fork / exec /
//! exit / mmap / munmap / run operations on the mock machine, checked after every step against
//! a plain reference model:
//!
//! - a breakpoint is installed at a probed instruction in a space iff some consumer of that
//!   probe wants the space (its filter accepts the space's tasks);
//! - the text of every mapping is the file's bytes except where a breakpoint is installed;
//! - running a task executes the program exactly as without probes (same output, same exit
//!   code), and every consumer's handler fires exactly as often as its instruction executes in
//!   tasks its filter accepts.
//!
//! The same driver is the `model` cargo-fuzz target; its corpus replays under `cargo test`.

use std::collections::HashMap;

use platform_mock::asm::Asm;
use platform_mock::isa::Reg;
use platform_mock::{Machine, Prot, ToyArch};
use probe_core::{
    Addr, Arch, ConsumerHandle, ConsumerOptions, FileId, Platform, ProbeKey, Range, SpaceId, TaskId,
};

use crate::mock::{report_mappings, Counter, Filter, MockCore, RunStats, Runner};

/// A program and what it does when it runs unprobed.
#[derive(Debug)]
struct Prog {
    file: FileId,
    bytes: Vec<u8>,
    entry: u64,
    /// Instruction offsets.
    insns: Vec<u64>,
    /// How often each offset executes in one run.
    execs: HashMap<u64, u64>,
    output: Vec<u64>,
    exit: u64,
}

fn r(n: u8) -> Reg {
    Reg::new(n).expect("register")
}

fn program(variant: u8) -> Vec<u8> {
    let mut a = Asm::new();
    let n = 3 + variant as i32;
    a.label("main").li(r(0), 0).li(r(1), n);
    a.label("loop").call("f").subi(r(1), 1).jnz("loop");
    a.out(r(0)).halt();
    a.label("f")
        .push(r(2))
        .li(r(2), 3 + variant as i32)
        .add(r(0), r(2));
    a.mov(r(3), r(0))
        .ldpc(r(4), "data")
        .add(r(0), r(4))
        .cmpi(r(0), 1000);
    a.jlt("small").subi(r(0), 7);
    a.label("small").pop(r(2)).ret();
    a.label("data").word(5 + variant as u64);
    a.finish().expect("assembles").bytes
}

impl Prog {
    fn new(m: &Machine, variant: u8) -> Prog {
        let bytes = program(variant);
        let file = m.add_file(&bytes);
        let data = bytes.len() as u64 - 8;
        let mut insns = Vec::new();
        let mut off = 0u64;
        while off < data {
            let plan = ToyArch::analyze(&bytes[off as usize..]).expect("valid program");
            insns.push(off);
            off += ToyArch::insn_len(&plan) as u64;
        }
        // The reference run: no probes, count executions per offset.
        let (space, task) = m.spawn(file, 0).expect("spawn");
        let base = text_base(m, space, file);
        let mut execs = HashMap::new();
        for _ in 0..100_000 {
            let Some(regs) = m.regs(task) else { break };
            if !m.status(task).is_some_and(|s| s.is_running()) {
                break;
            }
            *execs.entry(regs.pc - base).or_insert(0) += 1;
            m.step(task);
        }
        let output = m.output(task);
        let exit = match m.status(task) {
            Some(platform_mock::TaskStatus::Exited(c)) => c,
            other => panic!("reference run did not exit: {other:?}"),
        };
        m.destroy_space(space);
        Prog {
            file,
            bytes,
            entry: 0,
            insns,
            execs,
            output,
            exit,
        }
    }
}

fn text_base(m: &Machine, space: SpaceId, file: FileId) -> u64 {
    let mut base = None;
    m.for_each_mapping(file, &mut |mp| {
        if mp.space == space && mp.file_offset == 0 && base.is_none() {
            base = Some(mp.range.start.0);
        }
        core::ops::ControlFlow::Continue(())
    });
    base.expect("program mapped")
}

#[derive(Debug)]
struct ModelSpace {
    id: SpaceId,
    /// Index into `progs` of the program the space runs.
    prog: usize,
    /// An extra executable mapping of some program's file: (prog, base).
    extra: Option<(usize, u64)>,
}

#[derive(Debug)]
struct ModelConsumer {
    handle: ConsumerHandle,
    prog: usize,
    offset: u64,
    counter: Counter,
    expected: u64,
}

const EXTRA_BASE: u64 = 0x20_0000;

/// Interpret `data` as operations and check the core against the model after each one.
pub fn run(data: &[u8]) -> RunStats {
    let m = Machine::new();
    let core: Box<MockCore> = Box::new(MockCore::new());
    let progs = [Prog::new(&m, 0), Prog::new(&m, 1)];
    let files: Vec<FileId> = progs.iter().map(|p| p.file).collect();
    let mut spaces: Vec<ModelSpace> = Vec::new();
    let mut consumers: Vec<ModelConsumer> = Vec::new();
    let mut runner = Runner::new();

    let mut it = data.iter().copied();
    let mut ops = 0;
    while let Some(op) = it.next() {
        ops += 1;
        if ops > 48 {
            break;
        }
        let a = it.next().unwrap_or(0) as usize;
        let b = it.next().unwrap_or(0) as usize;
        if std::env::var_os("PROBE_MODEL_TRACE").is_some() {
            eprintln!(
                "op {} a={a} b={b} spaces={:?}",
                op % 9,
                spaces
                    .iter()
                    .map(|s| (s.id.0, s.prog, s.extra))
                    .collect::<Vec<_>>()
            );
        }
        match op % 9 {
            0 if spaces.len() < 6 => {
                let prog = a % progs.len();
                let (space, _anchor) = m.spawn(progs[prog].file, progs[prog].entry).expect("spawn");
                report_mappings(&m, &core, space, &files).expect("mmap event");
                spaces.push(ModelSpace {
                    id: space,
                    prog,
                    extra: None,
                });
            }
            1 if consumers.len() < 12 => {
                let prog = a % progs.len();
                let p = &progs[prog];
                let offset = p.insns[b % p.insns.len()];
                let filter = match (a / 2) % 3 {
                    0 => Filter::None,
                    1 => Filter::EvenSpaces,
                    _ => Filter::OddSpaces,
                };
                let counter = Counter::filtered(filter);
                let handle = core
                    .register(
                        &m,
                        ProbeKey::new(p.file, offset),
                        counter.clone(),
                        ConsumerOptions::new(),
                    )
                    .map_err(|(e, _)| e)
                    .expect("register");
                consumers.push(ModelConsumer {
                    handle,
                    prog,
                    offset,
                    counter,
                    expected: 0,
                });
            }
            2 if !consumers.is_empty() => {
                let c = consumers.remove(a % consumers.len());
                assert_eq!(c.counter.count(), c.expected, "hits before unregister");
                core.unregister(&m, c.handle).expect("unregister");
                assert_eq!(
                    core.unregister(&m, c.handle).err(),
                    Some(probe_core::Error::UnknownConsumer),
                    "double unregister is a typed error"
                );
            }
            3 if !spaces.is_empty() => {
                let s = &spaces[a % spaces.len()];
                let p = &progs[s.prog];
                let regs = m.regs(first_task(&m, s.id)).expect("anchor");
                let mut fresh = platform_mock::ToyRegs {
                    pc: text_base(&m, s.id, p.file) + p.entry,
                    ..regs
                };
                fresh.r = regs.r;
                let t = m.new_task(s.id, fresh).expect("task");
                let code = runner.run(&m, &core, t, 100_000);
                assert_eq!(code, Some(p.exit), "exit code unchanged by probes");
                assert_eq!(m.output(t), p.output, "output unchanged by probes");
                for c in consumers.iter_mut() {
                    if c.prog == s.prog && c.counter.filter.accepts(s.id) {
                        c.expected += p.execs.get(&c.offset).copied().unwrap_or(0);
                    }
                }
            }
            4 if !spaces.is_empty() && spaces.len() < 6 => {
                let s = &spaces[a % spaces.len()];
                let (parent, prog, extra) = (s.id, s.prog, s.extra);
                let child = m.fork_space(parent).expect("fork");
                let regs = m.regs(first_task(&m, parent)).expect("anchor");
                m.new_task(child, regs).expect("child anchor");
                core.on_fork(&m, parent, child).expect("fork event");
                spaces.push(ModelSpace {
                    id: child,
                    prog,
                    extra,
                });
            }
            5 if !spaces.is_empty() => {
                let i = a % spaces.len();
                let prog = b % progs.len();
                let id = spaces[i].id;
                let anchor = first_task(&m, id);
                let (trap, ts) = runner.tasks.entry(anchor).or_default();
                m.exec(anchor, progs[prog].file, progs[prog].entry)
                    .expect("exec");
                core.on_exec(&m, id, ts);
                core.clear_trap(trap);
                report_mappings(&m, &core, id, &files).expect("mmap event");
                spaces[i].prog = prog;
                spaces[i].extra = None;
            }
            6 if !spaces.is_empty() => {
                let s = spaces.remove(a % spaces.len());
                m.destroy_space(s.id);
                core.on_space_exit(&m, s.id);
            }
            7 if !spaces.is_empty() => {
                let i = a % spaces.len();
                if spaces[i].extra.is_none() {
                    let prog = b % progs.len();
                    let len =
                        (progs[prog].bytes.len() as u64).next_multiple_of(platform_mock::PAGE_SIZE);
                    let mp = m
                        .mmap_file(
                            spaces[i].id,
                            Addr(EXTRA_BASE),
                            len,
                            progs[prog].file,
                            0,
                            Prot::RX,
                        )
                        .expect("mmap");
                    core.on_mmap(&m, mp).expect("mmap event");
                    spaces[i].extra = Some((prog, EXTRA_BASE));
                }
            }
            8 if !spaces.is_empty() => {
                let i = a % spaces.len();
                if let Some((prog, base)) = spaces[i].extra.take() {
                    let len =
                        (progs[prog].bytes.len() as u64).next_multiple_of(platform_mock::PAGE_SIZE);
                    m.munmap(spaces[i].id, Addr(base), len).expect("munmap");
                    core.on_munmap(&m, spaces[i].id, Range::new(Addr(base), Addr(base + len)));
                }
            }
            _ => {}
        }
        check(&m, &core, &progs, &spaces, &consumers);
    }
    // Unregister everything: every space is pristine again.
    for c in consumers.drain(..) {
        assert_eq!(c.counter.count(), c.expected, "hits");
        core.unregister(&m, c.handle).expect("unregister");
    }
    check(&m, &core, &progs, &spaces, &[]);
    assert_eq!(core.site_count(), 0);
    assert_eq!(core.probe_count(), 0);
    runner.stats
}

fn first_task(m: &Machine, space: SpaceId) -> TaskId {
    let mut t = None;
    m.for_each_task(space, &mut |id| {
        t = Some(id);
        core::ops::ControlFlow::Break(())
    });
    t.expect("the space has its anchor task")
}

fn check(
    m: &Machine,
    core: &MockCore,
    progs: &[Prog],
    spaces: &[ModelSpace],
    consumers: &[ModelConsumer],
) {
    let brk = ToyArch::BREAKPOINT;
    for s in spaces {
        let mut maps = vec![(s.prog, text_base(m, s.id, progs[s.prog].file))];
        if let Some(x) = s.extra {
            maps.push(x);
        }
        for (prog, base) in maps {
            let p = &progs[prog];
            for &off in &p.insns {
                let want = consumers
                    .iter()
                    .any(|c| c.prog == prog && c.offset == off && c.counter.filter.accepts(s.id));
                let addr = Addr(base + off);
                assert_eq!(
                    core.is_installed(s.id, addr),
                    want,
                    "space {} prog {prog} offset {off:#x}: installed",
                    s.id
                );
                let now = m.peek(s.id, addr, brk.len()).expect("readable text");
                if want {
                    assert_eq!(now, brk, "breakpoint bytes at {addr}");
                } else {
                    assert_eq!(
                        now,
                        &p.bytes[off as usize..off as usize + brk.len()],
                        "original bytes at {addr}"
                    );
                }
            }
        }
    }
}
