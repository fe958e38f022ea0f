//! The SDT semaphore protocol (uprobes' reference counter, `kernel/events/uprobes.c` `update_ref_ctr`): a probe's 16-bit counter goes up by one in each space
//! where its breakpoint is installed and down by one where it is removed, in step, saturating,
//! never written outside its two bytes.

use core::ops::ControlFlow;

use crate::addr::{Addr, FileId, SpaceId};
use crate::consumer::Consumer;
use crate::engine::ProbeCore;
use crate::error::Error;
use crate::platform::{AddressSpace, Platform};
use crate::sync::Ordering;

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
    /// Add `delta` (+1 or -1) to the 16-bit little-endian counter at `addr`, saturating: the
    /// counter never goes below zero, whatever the program wrote there, and only its two bytes
    /// are ever written.
    pub(crate) fn sem_update(
        &self,
        p: &P,
        space: SpaceId,
        addr: Addr,
        up: bool,
    ) -> Result<(), Error> {
        let mem = p.space(space).ok_or(Error::NoSuchSpace(space))?;
        let mut b = [0u8; 2];
        mem.read_exact(addr, &mut b)?;
        let v = u16::from_le_bytes(b);
        let n = if up {
            v.saturating_add(1)
        } else {
            v.saturating_sub(1)
        };
        mem.write(addr, &n.to_le_bytes())?;
        Ok(())
    }

    /// Where the semaphore at file `offset` of `file` lives in `space`: a writable mapping of
    /// the file covering both of its bytes.
    pub(crate) fn sem_addr_in(
        &self,
        p: &P,
        file: FileId,
        space: SpaceId,
        offset: u64,
    ) -> Option<Addr> {
        let mut found = None;
        p.for_each_mapping(file, &mut |m| {
            if m.space == space && m.write {
                let second = offset.checked_add(1).and_then(|o| m.addr_of(o));
                if let (Some(a), Some(_)) = (m.addr_of(offset), second) {
                    found = Some(a);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        found
    }

    /// Increment the semaphore of probe `pi` for its site `si` in `space`, if it has one, the
    /// site has not counted yet, and the counter's mapping exists.
    pub(crate) fn sem_install(&self, p: &P, si: u32, pi: u32, space: SpaceId) -> Result<(), Error> {
        let Some(off) = self.probes.at(pi).val.opts.get().semaphore else {
            return Ok(());
        };
        let site = &self.sites.at(si).val;
        if site.sem_addr.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
        let (file, _) = self.probes.at(pi).key();
        if let Some(a) = self.sem_addr_in(p, FileId(file), space, off) {
            self.sem_update(p, space, a, true)?;
            site.sem_addr.store(a.0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Decrement what site `si` incremented, if anything.
    pub(crate) fn sem_remove(&self, p: &P, si: u32, space: SpaceId) -> Result<(), Error> {
        let a = self.sites.at(si).val.sem_addr.swap(0, Ordering::Relaxed);
        if a == 0 {
            return Ok(());
        }
        self.sem_update(p, space, Addr(a), false)
    }
}
