//! Where tracer and tracee run during a session: [`CpuPlacement`] and the session's
//! bookkeeping of the CPU masks it changed.
//!
//! A hit is two context switches (tracee → tracer → tracee). On a virtual machine whose
//! idle vCPUs halt, tracer and tracee on different CPUs pay a vCPU wake-up on every resume
//! (about 25 us a hit on a 2-vCPU VM, against about 6 us on one CPU: see `probe-bench`). So
//! while the traced program has one thread, the tracer pins that thread and itself to one CPU
//! (the one the thread ran on, if the tracer may run there). A program with more threads is
//! not pinned: one CPU would serialise its threads; its masks are put back as they were. The
//! tracer alone stays on the CPU it runs on then: measured, that beats a free tracer at 2 and
//! 4 threads (the woken tracer need not be found a CPU at every stop), and the program cannot
//! observe it.
//!
//! What the program sees after detach is what it had: every mask we changed is restored, and
//! a thread that set its own mask meanwhile (found by comparing its mask with the one we set)
//! keeps its own and is never touched again. Threads the program created while pinned
//! inherited our mask; they get the mask their creator had.

use std::collections::{HashMap, HashSet};

use crate::sys::{self, Pid, SysError};

/// Whether a session chooses CPUs for the tracer and the traced threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuPlacement {
    /// A single-threaded program and the tracer share one CPU; several threads run where the
    /// scheduler puts them, the tracer alone pinned (the default).
    #[default]
    Auto,
    /// Never change a CPU mask (`probe trace --no-cpu-placement`).
    Off,
    /// Pin only the tracer (to the CPU it runs on); never change the program's masks. For
    /// measurements (`probe-bench`).
    TracerOnly,
}

/// A thread whose mask we set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pinned {
    /// The mask it had (or would have had, for a thread born pinned).
    original: Vec<usize>,
    /// The mask we gave it.
    set: Vec<usize>,
}

/// The masks a session changed, so that it can put them back.
#[derive(Debug)]
pub(crate) struct Placer {
    policy: CpuPlacement,
    /// The tracer thread's mask when the session started.
    tracer_original: Vec<usize>,
    /// The CPU the tracer is pinned to, if it is.
    tracer_pinned: Option<usize>,
    /// Whether the single traced thread runs on the tracer's CPU.
    sharing: bool,
    pinned: HashMap<Pid, Pinned>,
    /// Threads that changed their own mask while we had pinned them: theirs from then on.
    own_mask: HashSet<Pid>,
}

impl Placer {
    /// Reads the calling (tracer) thread's mask.
    pub(crate) fn new(policy: CpuPlacement) -> Placer {
        Placer {
            policy,
            tracer_original: sys::cpus_allowed(),
            tracer_pinned: None,
            sharing: false,
            pinned: HashMap::new(),
            own_mask: HashSet::new(),
        }
    }

    /// The CPU the tracer and the single traced thread share, if they do.
    pub(crate) fn shared_cpu(&self) -> Option<usize> {
        self.tracer_pinned.filter(|_| self.sharing)
    }

    /// Decides again after the set of traced threads changed (`threads`: every live one).
    /// Errors are returned as sentences; nothing of the program depends on placement.
    pub(crate) fn update(&mut self, threads: &[Pid]) -> Vec<String> {
        let mut errors = Vec::new();
        if self.policy == CpuPlacement::Off {
            return errors;
        }
        self.notice_own_masks();
        if self.policy == CpuPlacement::TracerOnly || threads.len() > 1 {
            self.unpin_program(&mut errors);
            if matches!(self.policy, CpuPlacement::TracerOnly | CpuPlacement::Auto) {
                if let Err(e) = self.pin_tracer_here() {
                    errors.push(format!("pinning the tracer: {e}"));
                }
            }
            return errors;
        }
        if let [tid] = threads {
            if self.pinned.contains_key(tid) {
                return errors;
            }
            if let Err(e) = self.pin_single(*tid) {
                errors.push(format!("placing thread {tid} on the tracer's CPU: {e}"));
            }
        } else {
            self.unpin_all(&mut errors);
        }
        errors
    }

    /// `child` was just created by `parent` (a thread or a process): it inherited the mask.
    pub(crate) fn on_clone(&mut self, parent: Pid, child: Pid) {
        if let Some(p) = self.pinned.get(&parent).cloned() {
            self.pinned.insert(child, p);
        }
    }

    /// A non-leader thread `former` exec'd and goes on as `tid`.
    pub(crate) fn on_rename(&mut self, former: Pid, tid: Pid) {
        self.pinned.remove(&tid);
        if let Some(p) = self.pinned.remove(&former) {
            self.pinned.insert(tid, p);
        }
        if self.own_mask.remove(&former) {
            self.own_mask.insert(tid);
        }
    }

    /// Thread `tid` is let go (`--no-follow`'s fork child): the mask it inherited from a
    /// thread we pinned goes back to that thread's own, unless it changed it.
    pub(crate) fn release(&mut self, tid: Pid) -> Result<(), String> {
        self.own_mask.remove(&tid);
        let Some(p) = self.pinned.remove(&tid) else {
            return Ok(());
        };
        match sys::affinity_of(Some(tid)) {
            Ok(m) if m == p.set => sys::set_affinity(Some(tid), &p.original)
                .map_err(|e| format!("restoring the CPU mask of process {tid}: {e}")),
            _ => Ok(()),
        }
    }

    /// Thread `tid` is gone.
    pub(crate) fn forget(&mut self, tid: Pid) {
        self.pinned.remove(&tid);
        self.own_mask.remove(&tid);
    }

    /// Puts back every mask we changed, the tracer's too (at detach).
    pub(crate) fn restore_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        self.unpin_all(&mut errors);
        errors
    }

    /// Threads whose mask is no longer the one we set changed it themselves.
    fn notice_own_masks(&mut self) {
        let mut theirs = Vec::new();
        for (&tid, p) in &self.pinned {
            match sys::affinity_of(Some(tid)) {
                Ok(m) if m == p.set => {}
                Ok(_) => theirs.push((tid, true)),
                Err(_) => theirs.push((tid, false)),
            }
        }
        for (tid, alive) in theirs {
            self.pinned.remove(&tid);
            if alive {
                self.own_mask.insert(tid);
            }
        }
    }

    fn pin_single(&mut self, tid: Pid) -> Result<(), SysError> {
        let mask = sys::affinity_of(Some(tid))?;
        let usable: Vec<usize> = mask
            .iter()
            .copied()
            .filter(|c| self.tracer_original.contains(c))
            .collect();
        let Some(&first) = usable.first() else {
            // No CPU both may use: leave both alone.
            return self.unpin_tracer();
        };
        let cpu = cpu_of(tid).filter(|c| usable.contains(c)).unwrap_or(first);
        if mask != [cpu] && !self.own_mask.contains(&tid) {
            sys::set_affinity(Some(tid), &[cpu])?;
            self.pinned.insert(
                tid,
                Pinned {
                    original: mask,
                    set: vec![cpu],
                },
            );
        } else if mask != [cpu] {
            // Its own mask allows several CPUs: it is the program's choice, not ours.
            return self.unpin_tracer();
        }
        if self.tracer_pinned != Some(cpu) {
            sys::set_affinity(None, &[cpu])?;
            self.tracer_pinned = Some(cpu);
        }
        self.sharing = true;
        Ok(())
    }

    fn unpin_all(&mut self, errors: &mut Vec<String>) {
        self.unpin_program(errors);
        if let Err(e) = self.unpin_tracer() {
            errors.push(format!("restoring the tracer's CPU mask: {e}"));
        }
    }

    /// Puts back the masks of the program's threads (the tracer's stays as it is).
    fn unpin_program(&mut self, errors: &mut Vec<String>) {
        self.sharing = false;
        self.notice_own_masks();
        let mut tids: Vec<Pid> = self.pinned.keys().copied().collect();
        tids.sort();
        for tid in tids {
            let Some(p) = self.pinned.remove(&tid) else {
                continue;
            };
            match sys::set_affinity(Some(tid), &p.original) {
                Ok(()) | Err(SysError::NoSuchProcess { .. }) => {}
                Err(e) => errors.push(format!("restoring the CPU mask of thread {tid}: {e}")),
            }
        }
    }

    fn pin_tracer_here(&mut self) -> Result<(), SysError> {
        if self.tracer_pinned.is_some() {
            return Ok(());
        }
        let cpu = sys::current_cpu()
            .filter(|c| self.tracer_original.contains(c))
            .or(self.tracer_original.first().copied());
        if let Some(cpu) = cpu {
            sys::set_affinity(None, &[cpu])?;
            self.tracer_pinned = Some(cpu);
        }
        Ok(())
    }

    fn unpin_tracer(&mut self) -> Result<(), SysError> {
        if self.tracer_pinned.take().is_some() {
            sys::set_affinity(None, &self.tracer_original)?;
        }
        Ok(())
    }
}

/// The CPU thread `tid` last ran on (field 39 of `/proc/TID/stat`).
pub fn cpu_of(tid: Pid) -> Option<usize> {
    sys::stat_fields(tid)?.get(36)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_self_is_an_allowed_cpu() {
        let c = cpu_of(sys::gettid()).expect("field 39");
        assert!(sys::cpus_allowed().contains(&c), "{c}");
    }

    #[test]
    fn off_changes_nothing() {
        let mut p = Placer::new(CpuPlacement::Off);
        let before = sys::cpus_allowed();
        assert!(p.update(&[sys::gettid()]).is_empty());
        assert_eq!(sys::cpus_allowed(), before);
        assert_eq!(p.shared_cpu(), None);
    }
}
