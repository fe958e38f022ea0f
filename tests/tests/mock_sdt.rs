//! SDT semaphores on the mock: the core increments a probe's counter in each space
//! where its breakpoint is installed and decrements it where removed, in step, never below
//! zero, never outside the counter, correct when probes share one counter and when several
//! consumers share one probe, and when the counter's data mapping appears after the text.

use platform_mock::asm::Asm;
use platform_mock::{Machine, Prot};
use probe_core::{Addr, ConsumerOptions, FileId, Mapping, ProbeKey, Range, SpaceId};
use probe_tests::mock::{report_mappings, Counter, Filter, MockCore};

const DATA_AT: u64 = 0x30_0000;
const SEM_A: u64 = 128;
const SEM_B: u64 = 136;

fn program() -> Vec<u8> {
    let mut a = Asm::new();
    a.label("m1")
        .nop()
        .label("m2")
        .nop()
        .label("m3")
        .nop()
        .halt();
    a.nops_to(SEM_A as usize);
    a.word(0).word(0).word(0);
    a.finish().unwrap().bytes
}

fn opts(sem: u64) -> ConsumerOptions {
    ConsumerOptions::new().with_semaphore(sem)
}

struct World {
    m: Machine,
    core: Box<MockCore>,
    file: FileId,
    len: u64,
}

impl World {
    fn new() -> World {
        let m = Machine::new();
        let bytes = program();
        let file = m.add_file(&bytes);
        World {
            m,
            core: Box::new(MockCore::new()),
            file,
            len: (bytes.len() as u64).next_multiple_of(platform_mock::PAGE_SIZE),
        }
    }

    /// A process with the program's text, and (optionally) its data mapping.
    fn spawn(&self, data: bool) -> SpaceId {
        let (space, _) = self.m.spawn(self.file, 0).unwrap();
        report_mappings(&self.m, &self.core, space, &[self.file]).unwrap();
        if data {
            self.map_data(space);
        }
        space
    }

    fn map_data(&self, space: SpaceId) -> Mapping {
        let mp = self
            .m
            .mmap_file(space, Addr(DATA_AT), self.len, self.file, 0, Prot::RW)
            .unwrap();
        self.core.on_mmap(&self.m, mp).unwrap();
        mp
    }

    fn sem(&self, space: SpaceId, off: u64) -> u16 {
        let b = self.m.peek(space, Addr(DATA_AT + off), 2).unwrap();
        u16::from_le_bytes([b[0], b[1]])
    }

    fn reg(&self, at: u64, sem: u64, c: Counter) -> probe_core::ConsumerHandle {
        self.core
            .register(&self.m, ProbeKey::new(self.file, at), c, opts(sem))
            .map_err(|(e, _)| e)
            .unwrap()
    }
}

#[test]
fn counters_follow_installations_shared_by_probes_and_consumers() {
    let w = World::new();
    let s = w.spawn(true);
    let p1 = w.reg(0, SEM_A, Counter::new());
    assert_eq!(w.sem(s, SEM_A), 1);
    let p2 = w.reg(4, SEM_A, Counter::new());
    assert_eq!(w.sem(s, SEM_A), 2, "two probes share one counter");
    let p1b = w.reg(0, SEM_A, Counter::new());
    assert_eq!(
        w.sem(s, SEM_A),
        2,
        "a second consumer of one probe does not count again"
    );
    let p3 = w.reg(8, SEM_B, Counter::new());
    assert_eq!((w.sem(s, SEM_A), w.sem(s, SEM_B)), (2, 1));
    // A consumer with another semaphore on an existing probe is refused.
    let e = w
        .core
        .register(&w.m, ProbeKey::new(w.file, 0), Counter::new(), opts(SEM_B))
        .map(|_| ())
        .unwrap_err()
        .0;
    assert_eq!(e, probe_core::Error::OptionsConflict);

    w.core.unregister(&w.m, p1).unwrap();
    assert_eq!(w.sem(s, SEM_A), 2, "p1 still has a consumer");
    w.core.unregister(&w.m, p1b).unwrap();
    assert_eq!(w.sem(s, SEM_A), 1);
    w.core.unregister(&w.m, p2).unwrap();
    w.core.unregister(&w.m, p3).unwrap();
    assert_eq!((w.sem(s, SEM_A), w.sem(s, SEM_B)), (0, 0));
}

#[test]
fn per_space_counters_filters_fork_and_detach() {
    let w = World::new();
    let a = w.spawn(true);
    let b = w.spawn(true);
    let (even, odd) = if a.0 % 2 == 0 { (a, b) } else { (b, a) };
    let h = w.reg(0, SEM_A, Counter::filtered(Filter::EvenSpaces));
    assert_eq!(
        (w.sem(even, SEM_A), w.sem(odd, SEM_A)),
        (1, 0),
        "only where installed"
    );
    let h2 = w.reg(0, SEM_A, Counter::new());
    assert_eq!((w.sem(even, SEM_A), w.sem(odd, SEM_A)), (1, 1));
    w.core.unregister(&w.m, h2).unwrap();
    assert_eq!(
        (w.sem(even, SEM_A), w.sem(odd, SEM_A)),
        (1, 0),
        "filter change removes"
    );

    // A forked child inherits the incremented counter with the breakpoint.
    let child = w.m.fork_space(even).unwrap();
    w.m.new_task(child, platform_mock::ToyRegs::default())
        .unwrap();
    w.core.on_fork(&w.m, even, child).unwrap();
    let wanted = u16::from(child.0 % 2 == 0);
    assert_eq!(
        w.sem(child, SEM_A),
        wanted,
        "kept only where the filter wants the child"
    );

    w.core.detach_space(&w.m, even).unwrap();
    assert_eq!(w.sem(even, SEM_A), 0, "detach decrements");
    w.core.unregister(&w.m, h).unwrap();
    assert_eq!(w.sem(child, SEM_A), 0);
}

#[test]
fn a_counter_mapped_after_the_text_is_updated_when_it_appears() {
    let w = World::new();
    let s = w.spawn(false);
    let h = w.reg(0, SEM_A, Counter::new());
    assert!(w.core.is_installed(s, Addr(platform_mock::TEXT_BASE)));
    w.map_data(s);
    assert_eq!(
        w.sem(s, SEM_A),
        1,
        "incremented when the data mapping appeared"
    );
    w.core.unregister(&w.m, h).unwrap();
    assert_eq!(w.sem(s, SEM_A), 0);
}

#[test]
fn whatever_the_program_writes_the_counter_never_goes_negative_or_spills() {
    let w = World::new();
    let s = w.spawn(true);
    let guard = [0xaa_u8; 2];
    w.m.poke(s, Addr(DATA_AT + SEM_A - 2), &guard).unwrap();
    w.m.poke(s, Addr(DATA_AT + SEM_A + 2), &guard).unwrap();
    let h = w.reg(0, SEM_A, Counter::new());
    assert_eq!(w.sem(s, SEM_A), 1);
    // The program zeroes it behind our back.
    w.m.poke(s, Addr(DATA_AT + SEM_A), &[0, 0]).unwrap();
    w.core.unregister(&w.m, h).unwrap();
    assert_eq!(w.sem(s, SEM_A), 0, "never below zero");
    // Or sets it to a large value.
    let h = w.reg(0, SEM_A, Counter::new());
    w.m.poke(s, Addr(DATA_AT + SEM_A), &0x7fffu16.to_le_bytes())
        .unwrap();
    w.core.unregister(&w.m, h).unwrap();
    assert_eq!(w.sem(s, SEM_A), 0x7ffe);
    assert_eq!(w.m.peek(s, Addr(DATA_AT + SEM_A - 2), 2).unwrap(), guard);
    assert_eq!(w.m.peek(s, Addr(DATA_AT + SEM_A + 2), 2).unwrap(), guard);
}

#[test]
fn unmapping_text_decrements_and_unmapping_data_forgets() {
    let w = World::new();
    let s = w.spawn(true);
    let h = w.reg(0, SEM_A, Counter::new());
    assert_eq!(w.sem(s, SEM_A), 1);
    let text = Range::new(
        Addr(platform_mock::TEXT_BASE),
        Addr(platform_mock::TEXT_BASE + w.len),
    );
    w.m.munmap(s, text.start, w.len).unwrap();
    w.core.on_munmap(&w.m, s, text);
    assert_eq!(
        w.sem(s, SEM_A),
        0,
        "the text went away: the counter follows"
    );
    w.core.unregister(&w.m, h).unwrap();

    // Counter unmapped while installed: nothing is written there afterwards.
    let s2 = w.spawn(true);
    let h = w.reg(0, SEM_A, Counter::new());
    assert_eq!(w.sem(s2, SEM_A), 1);
    w.m.munmap(s2, Addr(DATA_AT), w.len).unwrap();
    w.core
        .on_munmap(&w.m, s2, Range::new(Addr(DATA_AT), Addr(DATA_AT + w.len)));
    let patches = w.m.stats(s2).unwrap();
    w.core.unregister(&w.m, h).unwrap();
    assert_eq!(
        w.m.stats(s2).unwrap().writes,
        patches.writes,
        "no write to a gone counter"
    );
}
