//! # platform-mock
//!
//! A simulated machine for `probe-core`: the platform the core's unit, scenario and `loom`
//! tests run on. Everything is deterministic and safe (no `unsafe` at all).
//!
//! Layers, bottom up:
//!
//! - [`isa`]: a toy instruction set (4- and 8-byte instructions, 16 registers, `r15` = `sp`,
//!   zero/negative flags) with a 4-byte breakpoint `brk` shorter than the longest
//!   instruction; [`asm`]: an assembler with labels, so tests write programs in Rust.
//! - [`arch`]: [`ToyArch`], the toy ISA as a [`probe_core::Arch`] (emulate, boost, single-step
//!   plans; a `brk` trap reports `pc` = the `brk`'s own address, unlike x86).
//! - [`file`](mod@file): immutable files stored as 64-byte pages ([`PAGE_SIZE`]), small on purpose so
//!   that instructions and reads cross pages.
//! - [`space`]: address spaces of private, copy-on-write file mappings and anonymous memory.
//!   `patch_code` lands even in read-execute text and gives the space its own copy of the
//!   page; `write` is denied outside writable mappings; reads stop at page boundaries.
//! - [`task`] and [`interp`]: tasks (registers, a space, an output vector, an exit status, a
//!   one-shot single-step flag) and an interpreter that executes one instruction per
//!   [`Machine::step`], reporting a [`StepEvent`] (breakpoint, single-step done, system call,
//!   exit, fault).
//! - [`machine`]: the [`Machine`] (files, spaces, tasks behind one lock; `spawn`, `fork`,
//!   `exec`, `mmap`/`munmap`, `exit`; access counters per space) and its
//!   [`probe_core::Platform`] implementation, with the rmap walk over every space and a
//!   slot area per space placed after the code.
//! - [`sched`]: a pluggable event loop ([`Machine::run`], [`Machine::run_all`]) and a
//!   deterministic [`Scheduler`] (round-robin or seeded).
//! - [`syscall`]: `fork`, `exec`, `mmap`, `munmap`, `exit` and threads for test programs
//!   ([`Machine::syscall`]), reporting each effect so a driver can tell the core.
//! - [`fault`]: fault injection: the n-th read, write, patch, file read or slot-area request
//!   fails ([`Machine::inject_fault`], or [`FaultySpace`] around any space).
//!
//! ```
//! use platform_mock::{asm::Asm, isa::*, Machine};
//!
//! let mut a = Asm::new();
//! a.label("main").li(R0, 0).li(R1, 10);
//! a.label("loop").add(R0, R1).subi(R1, 1).jnz("loop");
//! a.out(R0).halt();
//! let prog = a.finish().unwrap();
//!
//! let m = Machine::new();
//! let file = m.add_file(&prog.bytes);
//! let (_space, task) = m.spawn(file, prog.offset("main")).unwrap();
//! assert_eq!(m.run_to_exit(task, 1000), Some(55));
//! assert_eq!(m.output(task), [55]);
//! ```
//!
//! The same program under `probe-core`: a consumer on the loop's `add` counts every execution;
//! the machine's breakpoint traps go to the core, whose answer says how to resume; after
//! `unregister` the text is the file's again. (This is the whole contract an embedder
//! implements: `Platform` for the machine, a `Consumer`, and the event calls.)
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use platform_mock::{asm::Asm, isa::*, Machine, Resume, StepEvent, ToyArch, TEXT_BASE};
//! use probe_core::{
//!     Consumer, ConsumerOptions, CpuId, HandlerAction, Hit, HitContext, Platform, ProbeCore,
//!     ProbeKey, TaskState, TrapState,
//! };
//!
//! struct Count(AtomicU64);
//! impl Consumer<Machine> for Count {
//!     fn handler(&self, _: &mut HitContext<'_, Machine>) -> HandlerAction {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         HandlerAction::Keep
//!     }
//! }
//!
//! let mut a = Asm::new();
//! a.label("main").li(R0, 0).li(R1, 10);
//! a.label("loop").add(R0, R1).subi(R1, 1).jnz("loop");
//! a.out(R0).halt();
//! let prog = a.finish().unwrap();
//! let m = Machine::new();
//! let file = m.add_file(&prog.bytes);
//! let (space, task) = m.spawn(file, prog.offset("main")).unwrap();
//!
//! // Probes, consumers, sites, spaces, slots per space, CPUs.
//! let core: Box<ProbeCore<Machine, Count, 64, 8, 64, 4, 8, 1>> = Box::new(ProbeCore::new());
//! m.for_each_mapping(file, &mut |mp| {
//!     core.on_mmap(&m, mp).unwrap(); // the platform reports mappings as they appear
//!     core::ops::ControlFlow::Continue(())
//! });
//! let key = ProbeKey::new(file, prog.offset("loop"));
//! let h = core.register(&m, key, Count(AtomicU64::new(0)), ConsumerOptions::new())
//!     .map_err(|(e, _)| e)
//!     .unwrap();
//!
//! // The trap in flight (per execution context) and the task's tracked calls.
//! let (mut trap, mut ts) = (TrapState::<ToyArch>::new(), TaskState::<32>::new());
//! m.run(task, 10_000, |m, t, ev, regs| {
//!     match ev {
//!         StepEvent::Breakpoint { .. } => {
//!             match core.on_breakpoint(m, CpuId(0), space, t, &mut trap, &mut ts, regs) {
//!                 Hit::Emulated | Hit::Boosted { .. } => {}
//!                 Hit::SingleStep { .. } => { m.set_single_step(t, true); }
//!                 other => panic!("{other:?}"),
//!             }
//!         }
//!         StepEvent::SingleStepDone => { let _ = core.on_single_step(m, space, &mut trap, regs); }
//!         _ => {}
//!     }
//!     Resume::Continue
//! });
//! assert_eq!(m.output(task), [55], "the program's behaviour is unchanged");
//! let counted = core.unregister(&m, h).unwrap();
//! assert_eq!(counted.0.load(Ordering::Relaxed), 10, "one hit per execution of `add`");
//! assert_eq!(m.peek(space, probe_core::Addr(TEXT_BASE), prog.bytes.len()).unwrap(), prog.bytes);
//! ```
#![forbid(unsafe_code)]

pub mod arch;
pub mod asm;
pub mod fault;
pub mod file;
pub mod interp;
pub mod isa;
pub mod machine;
pub mod sched;
pub mod space;
pub mod syscall;
pub mod task;

#[cfg(test)]
mod tests;

pub use arch::{ToyArch, ToyPlan, ToyRegs, ToyStepState};
pub use asm::{Asm, AsmError, Program};
pub use fault::{FaultOp, FaultPlan, FaultRule, FaultySpace};
pub use file::PAGE_SIZE;
pub use interp::StepEvent;
pub use machine::{Machine, SpaceHandle, DATA_BASE, STACK_TOP, TEXT_BASE};
pub use sched::{Policy, Resume, RunOutcome, Scheduler, StopReason};
pub use space::{Backing, MapError, MapInfo, Prot, SpaceStats};
pub use syscall::SysEffect;
pub use task::TaskStatus;
