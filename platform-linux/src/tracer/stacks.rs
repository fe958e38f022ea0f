//! `--stack` in the tracer: after a hit, while the thread is still stopped, its user stack is
//! walked ([`crate::stack`]) from the registers the probe saw, through the process's memory
//! and cached maps, with the return-probe trampoline mapped back to the real return
//! addresses from the thread's chain of tracked calls.

use probe_core::{Addr, AddressSpace, Platform};

use super::session::Session;
use crate::stack::SymFrame;
use crate::sys::Pid;

impl Session {
    /// Walks and counts the stacks of the hits just taken.
    pub(crate) fn collect_stacks(&mut self) {
        let Some(counts) = self.stacks.as_mut() else {
            return;
        };
        for req in self.shared.take_stacks() {
            let Some(t) = self.tasks.get(&Pid(req.task.0 as i32)) else {
                continue;
            };
            let Some(mem) = self.platform.space(t.space) else {
                continue;
            };
            let tramp = self.core.trampoline(t.space).map(|a| a.0);
            let chain: Vec<(u64, u64)> =
                t.ts.returns()
                    .frames()
                    .map(|(slot, _, ret)| (slot, ret.0))
                    .collect();
            let mut read = |addr: u64, buf: &mut [u8]| mem.read(Addr(addr), buf).unwrap_or(0);
            self.platform.with_map_lines(t.space, |maps| {
                counts.record(&mut read, maps, req.regs, tramp, &chain);
            });
            self.stats.stacks += 1;
        }
    }

    /// The stacks of the hits (`--stack`), symbolised, innermost frame first, least frequent
    /// first; empty without `--stack`.
    pub fn stacks(&self) -> Vec<(Vec<SymFrame>, u64)> {
        self.stacks
            .as_ref()
            .map(crate::stack::StackCounts::symbolised)
            .unwrap_or_default()
    }
}
