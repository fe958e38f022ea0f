//! A small system-call layer for test programs: `li r0, NR; sys`.
//!
//! The interpreter only reports [`StepEvent::Syscall`](crate::StepEvent::Syscall); a driver
//! that wants programs to fork, exec, map or unmap calls [`Machine::syscall`] and learns what
//! happened from the returned [`SysEffect`], so it can tell the core (fork, exec, mmap,
//! munmap, exit events).
//!
//! | `r0`            | arguments                                        | result in `r0`        |
//! |-----------------|--------------------------------------------------|-----------------------|
//! | [`nr::EXIT`]    | `r1` = code                                      | (the task ends)       |
//! | [`nr::FORK`]    |                                                  | child task id / 0 in the child |
//! | [`nr::EXEC`]    | `r1` = file id, `r2` = entry offset              | (restarts) / `u64::MAX` |
//! | [`nr::MMAP`]    | `r1` = addr, `r2` = len, `r3` = file id (0: anonymous), `r4` = offset, `r5` = prot ([`PROT_WRITE`] \| [`PROT_EXEC`]) | addr / `u64::MAX` |
//! | [`nr::MUNMAP`]  | `r1` = addr, `r2` = len                          | 0 / `u64::MAX`        |
//! | [`nr::THREAD`]  | `r1` = pc, `r2` = sp                             | new task id / `u64::MAX` |
//! | [`nr::GETPID`]  |                                                  | the space id          |

use probe_core::{Addr, FileId, Mapping, Range, SpaceId, TaskId};

use crate::arch::ToyRegs;
use crate::isa::SP;
use crate::machine::Machine;
use crate::space::{MapInfo, Prot};

/// System-call numbers.
pub mod nr {
    /// Exit with `r1`.
    pub const EXIT: u64 = 0;
    /// Fork the task's space and the task.
    pub const FORK: u64 = 1;
    /// Replace the program.
    pub const EXEC: u64 = 2;
    /// Map a file or anonymous memory.
    pub const MMAP: u64 = 3;
    /// Unmap.
    pub const MUNMAP: u64 = 4;
    /// Start a thread in the same space.
    pub const THREAD: u64 = 5;
    /// The space id.
    pub const GETPID: u64 = 6;
}

/// `prot` bit for [`nr::MMAP`]: writable.
pub const PROT_WRITE: u64 = 1;
/// `prot` bit for [`nr::MMAP`]: executable.
pub const PROT_EXEC: u64 = 2;

/// The failure value in `r0`.
pub const SYS_ERROR: u64 = u64::MAX;

/// What a system call did, for the driver to report to the core.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SysEffect {
    /// The task exited.
    Exited {
        /// Its code.
        code: u64,
    },
    /// A child space and task were created.
    Forked {
        /// The parent's space.
        parent: SpaceId,
        /// The child's space.
        space: SpaceId,
        /// The child task.
        task: TaskId,
    },
    /// The task's space now runs another program.
    Exec {
        /// The space.
        space: SpaceId,
        /// The new program.
        file: FileId,
    },
    /// A file was mapped.
    MappedFile(Mapping),
    /// Anonymous memory was mapped.
    MappedAnon(Range),
    /// Memory was unmapped; the file mappings that lost pages (as they were).
    Unmapped {
        /// The space.
        space: SpaceId,
        /// What was unmapped.
        range: Range,
        /// File mappings that lost pages.
        lost: Vec<MapInfo>,
    },
    /// A thread was started.
    Thread(TaskId),
    /// Nothing the core cares about happened (`getpid`, or a failed call: `r0` is
    /// [`SYS_ERROR`]).
    Nothing,
    /// Unknown number; `r0` is [`SYS_ERROR`].
    Unknown(u64),
}

impl Machine {
    /// Carry out the system call `task` just made (after
    /// [`StepEvent::Syscall`](crate::StepEvent::Syscall)), writing the result into its `r0`.
    pub fn syscall(&self, task: TaskId) -> SysEffect {
        let Some(regs) = self.regs(task) else {
            return SysEffect::Nothing;
        };
        let Some(space) = self.task_space(task) else {
            return SysEffect::Nothing;
        };
        let r = regs.r;
        let set_r0 = |v: u64| {
            if let Some(mut now) = self.regs(task) {
                now.r[0] = v;
                self.set_regs(task, now);
            }
        };
        match r[0] {
            nr::EXIT => {
                self.exit(task, r[1]);
                SysEffect::Exited { code: r[1] }
            }
            nr::FORK => match self.fork(task) {
                Some((child_space, child)) => {
                    set_r0(child.0);
                    if let Some(mut c) = self.regs(child) {
                        c.r[0] = 0;
                        self.set_regs(child, c);
                    }
                    SysEffect::Forked {
                        parent: space,
                        space: child_space,
                        task: child,
                    }
                }
                None => {
                    set_r0(SYS_ERROR);
                    SysEffect::Nothing
                }
            },
            nr::EXEC => match self.exec(task, FileId(r[1]), r[2]) {
                Ok(()) => SysEffect::Exec {
                    space,
                    file: FileId(r[1]),
                },
                Err(_) => {
                    set_r0(SYS_ERROR);
                    SysEffect::Nothing
                }
            },
            nr::MMAP => {
                let prot = Prot {
                    write: r[5] & PROT_WRITE != 0,
                    exec: r[5] & PROT_EXEC != 0,
                };
                let (addr, len) = (Addr(r[1]), r[2]);
                let done = if r[3] == 0 {
                    self.mmap_anon(space, addr, len, prot)
                        .map(SysEffect::MappedAnon)
                } else {
                    self.mmap_file(space, addr, len, FileId(r[3]), r[4], prot)
                        .map(SysEffect::MappedFile)
                };
                match done {
                    Ok(eff) => {
                        set_r0(addr.0);
                        eff
                    }
                    Err(_) => {
                        set_r0(SYS_ERROR);
                        SysEffect::Nothing
                    }
                }
            }
            nr::MUNMAP => match self.munmap(space, Addr(r[1]), r[2]) {
                Ok(lost) => {
                    set_r0(0);
                    SysEffect::Unmapped {
                        space,
                        range: Range::new(Addr(r[1]), Addr(r[1].saturating_add(r[2]))),
                        lost,
                    }
                }
                Err(_) => {
                    set_r0(SYS_ERROR);
                    SysEffect::Nothing
                }
            },
            nr::THREAD => {
                let mut t = ToyRegs {
                    pc: r[1],
                    ..ToyRegs::default()
                };
                t.set(SP, r[2]);
                match self.new_task(space, t) {
                    Some(id) => {
                        set_r0(id.0);
                        SysEffect::Thread(id)
                    }
                    None => {
                        set_r0(SYS_ERROR);
                        SysEffect::Nothing
                    }
                }
            }
            nr::GETPID => {
                set_r0(space.0);
                SysEffect::Nothing
            }
            other => {
                set_r0(SYS_ERROR);
                SysEffect::Unknown(other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::Asm;
    use crate::isa::*;
    use crate::{Resume, Scheduler, StepEvent, TaskStatus, TEXT_BASE};

    #[test]
    fn programs_fork_map_and_exec() {
        let m = Machine::new();
        // The program exec'd by the child: prints 99, exits 7.
        let mut b = Asm::new();
        b.label("main").li(R1, 99).out(R1).li(R0, 7).halt();
        let pb = b.finish().unwrap();
        let fb = m.add_file(&pb.bytes);

        let mut a = Asm::new();
        a.label("main");
        a.li(R0, nr::MMAP as i32)
            .li(R1, 0x50_0000)
            .li(R2, 64)
            .li(R3, 0);
        a.li(R5, PROT_WRITE as i32).sys();
        a.li(R0, nr::FORK as i32).sys().cmpi(R0, 0).jz("child");
        a.li(R0, nr::GETPID as i32).sys().out(R0);
        a.li(R0, nr::EXIT as i32).li(R1, 3).sys();
        a.label("child").li(R0, nr::EXEC as i32).li(R1, fb.0 as i32);
        a.li(R2, 0).sys().li(R0, 100).halt();
        let pa = a.finish().unwrap();
        let fa = m.add_file(&pa.bytes);
        let (s, t) = m.spawn(fa, 0).unwrap();

        let mut effects = Vec::new();
        m.run_all(&mut Scheduler::round_robin(), 1000, |m, task, ev, _| {
            if ev == StepEvent::Syscall {
                effects.push(m.syscall(task));
            }
            Resume::Continue
        });
        assert_eq!(effects.len(), 5, "{effects:?}");
        assert!(matches!(effects[0], SysEffect::MappedAnon(_)));
        let SysEffect::Forked {
            parent,
            space: cs,
            task: ct,
        } = effects[1]
        else {
            panic!("{:?}", effects[1]);
        };
        assert_eq!(parent, s);
        assert!(effects.contains(&SysEffect::Exec {
            space: cs,
            file: fb
        }));
        assert!(effects.contains(&SysEffect::Exited { code: 3 }));
        assert_eq!(m.output(t), [s.0]);
        assert_eq!(m.status(t), Some(TaskStatus::Exited(3)));
        assert_eq!(m.output(ct), [99]);
        assert_eq!(m.status(ct), Some(TaskStatus::Exited(7)));
        assert_eq!(m.regs(ct).unwrap().pc, TEXT_BASE + 20);
        // The anonymous mapping came along into the child but exec dropped it.
        assert!(m
            .mappings(s)
            .iter()
            .any(|x| x.range.start == Addr(0x50_0000)));
        assert!(!m
            .mappings(cs)
            .iter()
            .any(|x| x.range.start == Addr(0x50_0000)));
    }

    #[test]
    fn threads_and_failures() {
        let m = Machine::new();
        let mut a = Asm::new();
        a.label("main")
            .li(R0, nr::THREAD as i32)
            .li(R1, (TEXT_BASE + 0x80) as i32);
        a.li(R2, (crate::STACK_TOP - 0x800) as i32).sys().out(R0);
        a.li(R0, nr::MUNMAP as i32)
            .li(R1, 0x123)
            .li(R2, 1)
            .sys()
            .out(R0);
        a.li(R0, 77).sys().out(R0).li(R0, 0).halt();
        a.nops_to(0x80).li(R0, 5).halt();
        let p = a.finish().unwrap();
        let f = m.add_file(&p.bytes);
        let (_, t) = m.spawn(f, 0).unwrap();
        let mut effects = Vec::new();
        m.run_all(&mut Scheduler::seeded(5), 1000, |m, task, ev, _| {
            if ev == StepEvent::Syscall {
                effects.push(m.syscall(task));
            }
            Resume::Continue
        });
        let SysEffect::Thread(th) = effects[0] else {
            panic!("{effects:?}");
        };
        assert_eq!(m.status(th), Some(TaskStatus::Exited(5)));
        assert!(matches!(effects[1], SysEffect::Unmapped { .. }));
        assert_eq!(effects[2], SysEffect::Unknown(77));
        assert_eq!(m.output(t), [th.0, 0, SYS_ERROR]);
    }
}
