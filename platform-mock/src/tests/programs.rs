//! Little programs on the interpreter.

use probe_core::{Addr, MemErrorKind};

use crate::asm::{Asm, Program};
use crate::isa::*;
use crate::{Machine, Resume, Scheduler, StepEvent, StopReason, TaskStatus, DATA_BASE, TEXT_BASE};

fn run(prog: &Program) -> (Machine, probe_core::TaskId, Option<u64>) {
    let m = Machine::new();
    let f = m.add_file(&prog.bytes);
    let (_, t) = m.spawn(f, prog.offset("main")).unwrap();
    let code = m.run_to_exit(t, 100_000);
    (m, t, code)
}

pub(crate) fn fib_program() -> Program {
    let mut a = Asm::new();
    a.label("main").li(R1, 15).call("fib").out(R0).halt();
    // fib(r1) -> r0
    a.label("fib").cmpi(R1, 2).jlt("base");
    a.push(R1).subi(R1, 1).call("fib").pop(R1);
    a.push(R0).subi(R1, 2).call("fib").pop(R2);
    a.add(R0, R2).ret();
    a.label("base").mov(R0, R1).ret();
    a.finish().unwrap()
}

#[test]
fn recursive_fib() {
    let (m, t, code) = run(&fib_program());
    assert_eq!(code, Some(610));
    assert_eq!(m.output(t), [610]);
    assert_eq!(m.status(t), Some(TaskStatus::Exited(610)));
}

#[test]
fn function_called_from_a_loop() {
    let mut a = Asm::new();
    a.label("main").li(R5, 1);
    a.label("loop").mov(R1, R5).call("square").out(R0);
    a.addi(R5, 1).cmpi(R5, 6).jnz("loop");
    a.li(R0, 0).halt();
    a.label("square").mov(R0, R1).mul(R0, R1).ret();
    let (m, t, code) = run(&a.finish().unwrap());
    assert_eq!(code, Some(0));
    assert_eq!(m.output(t), [1, 4, 9, 16, 25]);
}

#[test]
fn memory_load_store_and_pc_relative_loads() {
    let mut a = Asm::new();
    a.label("main").li(R7, DATA_BASE as i32).li(R1, 0);
    // data[i] = i * i for i in 0..8, unaligned on purpose (base + 3).
    a.label("fill")
        .mov(R2, R1)
        .mul(R2, R1)
        .mov(R3, R1)
        .muli(R3, 8)
        .add(R3, R7);
    a.st(R2, R3, 3).addi(R1, 1).cmpi(R1, 8).jnz("fill");
    // sum them back
    a.li(R0, 0).li(R1, 0);
    a.label("sum")
        .mov(R3, R1)
        .muli(R3, 8)
        .add(R3, R7)
        .ld(R2, R3, 3)
        .add(R0, R2);
    a.addi(R1, 1).cmpi(R1, 8).jlt("sum");
    a.ldpc(R4, "k").add(R0, R4).out(R0).halt();
    a.label("k").word(1000);
    let (m, t, code) = run(&a.finish().unwrap());
    assert_eq!(code, Some(140 + 1000));
    assert_eq!(m.output(t), [1140]);
}

#[test]
fn indirect_and_absolute_jumps() {
    let mut a = Asm::new();
    a.label("main").li(R9, 0).ldpc(R9, "target").jr(R9);
    a.label("bad").li(R0, 1).halt();
    a.label("good").li(R0, 2).ja((TEXT_BASE + 0x80) as u32);
    a.label("target").word(0); // patched below
    a.nops_to(0x80).out(R0).halt();
    let mut p = a.finish().unwrap();
    let good = TEXT_BASE + p.offset("good");
    let at = p.offset("target") as usize;
    p.bytes[at..at + 8].copy_from_slice(&good.to_le_bytes());
    let (m, t, code) = run(&p);
    assert_eq!(code, Some(2));
    assert_eq!(m.output(t), [2]);
}

#[test]
fn instructions_cross_page_boundaries() {
    let mut a = Asm::new();
    // An 8-byte `li` at 60..68 and an 8-byte `ldpc` at 124..132 straddle pages.
    a.label("main")
        .nops_to(60)
        .li(R0, 1234)
        .nops_to(124)
        .ldpc(R1, "w");
    a.add(R0, R1).halt();
    a.nops_to(190).label("w").word(0x1_0000); // a word straddling 192
    let p = a.finish().unwrap();
    let (_, _, code) = run(&p);
    assert_eq!(code, Some(1234 + 0x1_0000));
}

#[test]
fn faults_kill_the_task_and_change_nothing() {
    // Store into text: denied.
    let mut a = Asm::new();
    a.label("main")
        .li(R1, TEXT_BASE as i32)
        .li(R2, 7)
        .st(R2, R1, 0)
        .halt();
    let (m, t, code) = run(&a.finish().unwrap());
    assert_eq!(code, None);
    assert_eq!(
        m.status(t),
        Some(TaskStatus::Faulted {
            addr: Addr(TEXT_BASE),
            kind: MemErrorKind::Denied
        })
    );
    assert_eq!(m.regs(t).unwrap().pc, TEXT_BASE + 16);
    assert_eq!(m.step(t), StepEvent::NotRunnable);

    // Fetch from the data area: not executable.
    let mut a = Asm::new();
    a.label("main").ja(DATA_BASE as u32);
    let (m, t, _) = run(&a.finish().unwrap());
    assert!(matches!(
        m.status(t),
        Some(TaskStatus::Faulted {
            kind: MemErrorKind::Denied,
            ..
        })
    ));

    // Running off the end of the text into zero bytes: illegal (opcode 0).
    let mut a = Asm::new();
    a.label("main").nop();
    let (m, t, _) = run(&a.finish().unwrap());
    assert_eq!(
        m.status(t),
        Some(TaskStatus::Illegal {
            addr: Addr(TEXT_BASE + 4)
        })
    );

    // `ret` with an empty stack reads above the stack top: unmapped.
    let mut a = Asm::new();
    a.label("main").ret();
    let (m, t, _) = run(&a.finish().unwrap());
    assert!(matches!(
        m.status(t),
        Some(TaskStatus::Faulted {
            kind: MemErrorKind::Unmapped,
            ..
        })
    ));
}

#[test]
fn breakpoints_single_steps_and_syscalls() {
    let mut a = Asm::new();
    a.label("main")
        .li(R0, 5)
        .label("b")
        .brk()
        .label("after")
        .addi(R0, 1);
    a.sys().out(R0).halt();
    let p = a.finish().unwrap();
    let m = Machine::new();
    let f = m.add_file(&p.bytes);
    let (_, t) = m.spawn(f, 0).unwrap();
    assert_eq!(m.step(t), StepEvent::Normal);
    let b = TEXT_BASE + p.offset("b");
    assert_eq!(m.step(t), StepEvent::Breakpoint { addr: Addr(b) });
    assert_eq!(m.regs(t).unwrap().pc, b, "brk reports its own address");
    assert_eq!(m.step(t), StepEvent::Breakpoint { addr: Addr(b) });
    let mut r = m.regs(t).unwrap();
    r.pc = TEXT_BASE + p.offset("after");
    m.set_regs(t, r);
    m.set_single_step(t, true);
    assert_eq!(m.step(t), StepEvent::SingleStepDone);
    assert!(!m.single_step(t), "single-step is one-shot");
    // The syscall: r0 = 6 is the call number; the handler returns 42 in r0.
    let out = m.run(t, 100, |_, _, ev, regs| {
        if ev == StepEvent::Syscall {
            assert_eq!(regs.r[0], 6);
            regs.r[0] = 42;
        }
        Resume::Continue
    });
    assert_eq!(out.reason, StopReason::AllDone);
    assert_eq!(m.output(t), [42]);
    assert_eq!(m.status(t), Some(TaskStatus::Exited(42)));
}

#[test]
fn run_stops_on_request_and_on_budget() {
    let mut a = Asm::new();
    a.label("main").label("spin").brk().jmp("spin");
    let p = a.finish().unwrap();
    let m = Machine::new();
    let f = m.add_file(&p.bytes);
    let (_, t) = m.spawn(f, 0).unwrap();
    let mut hits = 0;
    let out = m.run(t, 1000, |_, _, ev, regs| {
        assert!(matches!(ev, StepEvent::Breakpoint { .. }));
        hits += 1;
        regs.pc += 4; // skip the brk
        if hits == 3 {
            Resume::Stop
        } else {
            Resume::Continue
        }
    });
    assert_eq!(out.reason, StopReason::Stopped);
    assert_eq!(out.steps, 5);
    let out = m.run(t, 10, |_, _, _, regs| {
        regs.pc += 4;
        Resume::Continue
    });
    assert_eq!(out.reason, StopReason::MaxSteps);
    assert_eq!(out.steps, 10);
}

#[test]
fn many_tasks_interleave_deterministically() {
    let mut a = Asm::new();
    a.label("main").li(R1, 0);
    a.label("loop")
        .out(R1)
        .addi(R1, 1)
        .cmpi(R1, 5)
        .jnz("loop")
        .halt();
    let p = a.finish().unwrap();
    let trace = |seed: u64| {
        let m = Machine::new();
        let f = m.add_file(&p.bytes);
        let tasks: Vec<_> = (0..3).map(|_| m.spawn(f, 0).unwrap().1).collect();
        let mut order = Vec::new();
        let out = m.run_all(&mut Scheduler::seeded(seed), 10_000, |_, t, ev, _| {
            order.push((t, ev));
            Resume::Continue
        });
        assert_eq!(out.reason, StopReason::AllDone);
        for t in &tasks {
            assert_eq!(m.output(*t), [0, 1, 2, 3, 4]);
        }
        let last_steps = out.steps;
        (order, last_steps)
    };
    assert_eq!(trace(3), trace(3));
    let (order, steps) = trace(3);
    assert_eq!(order.len(), 3);
    assert_eq!(steps, 3 * (1 + 5 * 4 + 1));
}

#[test]
fn threads_share_a_space_and_real_threads_can_step() {
    use std::sync::Arc;
    let mut a = Asm::new();
    a.label("main").li(R7, DATA_BASE as i32).li(R1, 0);
    a.label("loop").addi(R1, 1).cmpi(R1, 50).jnz("loop");
    a.st(R1, R7, 0).mov(R0, R1).halt();
    let p = a.finish().unwrap();
    let m = Arc::new(Machine::new());
    let f = m.add_file(&p.bytes);
    let (s, t1) = m.spawn(f, 0).unwrap();
    let r = m.regs(t1).unwrap();
    let mut r2 = r;
    r2.r[15] -= 0x400;
    let t2 = m.new_task(s, r2).unwrap();
    let handles: Vec<_> = [t1, t2]
        .into_iter()
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.run_to_exit(t, 10_000))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Some(50));
    }
    assert_eq!(m.peek_u64(s, Addr(DATA_BASE)), Ok(50));
}
