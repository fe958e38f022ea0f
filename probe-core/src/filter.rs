//! Filter chains (the uprobes `filter` design, LKML, Sep 2010): a breakpoint is installed in a space iff some consumer wants that
//! space — it has no filter, or its filter accepts a task there — and re-evaluation when the
//! embedder's answers change.

use core::ops::ControlFlow;

use crate::addr::{FileId, SpaceId};
use crate::consumer::{Chain, Consumer};
use crate::engine::{ProbeCore, Writer};
use crate::error::Error;
use crate::platform::Platform;
use crate::probe::FILE_ENTRY;
use crate::site::List;
use crate::sync::Ordering;
use crate::table::NIL;

impl<
        P: Platform,
        C: Consumer<P>,
        const PROBES: usize,
        const CONSUMERS: usize,
        const SITES: usize,
        const SPACES: usize,
        const XOL: usize,
        const CPUS: usize,
        L: lock_api::RawMutex,
    > ProbeCore<P, C, PROBES, CONSUMERS, SITES, SPACES, XOL, CPUS, L>
{
    /// Whether some live consumer of probe `pi` wants space `space`: it has no filter, or its
    /// filter accepts some task of the space.
    pub(crate) fn wanted(&self, p: &P, pi: u32, space: SpaceId) -> bool {
        let head = self.probes.at(pi).val.consumers.load(Ordering::Acquire);
        for (_, slot) in Chain::new(&self.consumers, head) {
            if slot.is_live() {
                if !slot.has_filter.load(Ordering::Relaxed) {
                    return true;
                }
                let mut yes = false;
                slot.value.with(|c| {
                    if let Some(c) = c {
                        p.for_each_task(space, &mut |t| {
                            if c.filter(p, space, t) {
                                yes = true;
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        });
                    }
                });
                if yes {
                    return true;
                }
            }
        }
        false
    }

    /// Re-evaluate the filters of every probe for `space` (call when the embedder's filter
    /// answers changed, e.g. a task was created or a filter's target set changed): install
    /// where now wanted, remove where no longer wanted. Returns the first error; the rest
    /// proceed.
    pub fn refilter(&self, p: &P, space: SpaceId) -> Result<(), Error> {
        let w = self.writer.lock();
        self.refilter_locked(p, &w, space)
    }

    pub(crate) fn refilter_locked(&self, p: &P, w: &Writer, space: SpaceId) -> Result<(), Error> {
        let mut first: Result<(), Error> = Ok(());
        if let Some(sx) = self.spaces.lookup(space.0, 0) {
            let sp = &self.spaces.at(sx).val;
            sp.refilter.store(false, Ordering::Relaxed);
            let mut s = sp.sites.load(Ordering::Relaxed);
            while s != NIL {
                let site = self.sites.at(s);
                let nxt = site.val.next(List::Space);
                let pi = site.val.probe.load(Ordering::Relaxed);
                if !self.wanted(p, pi, space) {
                    if let Err(e) = self.remove_site(p, s, true) {
                        first = first.and(Err(e));
                    }
                }
                s = nxt;
            }
        }
        // Install where now wanted: walk every probed file's mappings in this space.
        for fe in self.probes.live_indices() {
            let (file, off) = self.probes.at(fe).key();
            if off != FILE_ENTRY {
                continue;
            }
            p.for_each_mapping(FileId(file), &mut |m| {
                if m.space == space && m.exec {
                    if let Err(e) = self.install_file_in_mapping(p, w, fe, &m) {
                        first = first.and(Err(e));
                    }
                }
                ControlFlow::Continue(())
            });
        }
        first
    }
}
