//! Fault injection (smoltcp's `FaultInjector` idea): make the n-th read, write, patch, file
//! read or slot-area request fail, to drive the core's error paths.
//!
//! A [`FaultPlan`] is consulted by the [`Machine`](crate::Machine)'s platform and space
//! handles ([`Machine::inject_fault`](crate::Machine::inject_fault)); [`FaultySpace`] wraps
//! any [`AddressSpace`] with its own plan.

use std::sync::Mutex;

use probe_core::{Addr, AddressSpace, MemError, MemErrorKind, SpaceId};

/// Which operation a rule fails.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FaultOp {
    /// [`AddressSpace::read`].
    Read,
    /// [`AddressSpace::write`].
    Write,
    /// [`AddressSpace::patch_code`].
    Patch,
    /// [`Platform::read_file`](probe_core::Platform::read_file).
    ReadFile,
    /// [`Platform::xol_area`](probe_core::Platform::xol_area) (fails by returning `None`).
    XolArea,
}

/// One rule: fail the `nth` (1-based) matching operation, or every one from the `nth` on
/// when `sticky`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FaultRule {
    /// Which operation.
    pub op: FaultOp,
    /// Only operations on this space (`None`: any space; file reads have no space).
    pub space: Option<SpaceId>,
    /// Which matching operation fails first (1 = the next one).
    pub nth: u64,
    /// The error returned.
    pub kind: MemErrorKind,
    /// Keep failing after the `nth`.
    pub sticky: bool,
}

impl FaultRule {
    /// Fail the `nth` next `op` anywhere with [`MemErrorKind::Io`].
    pub const fn new(op: FaultOp, nth: u64) -> FaultRule {
        FaultRule {
            op,
            space: None,
            nth,
            kind: MemErrorKind::Io,
            sticky: false,
        }
    }

    /// Only in `space`.
    pub const fn in_space(mut self, space: SpaceId) -> FaultRule {
        self.space = Some(space);
        self
    }

    /// With error `kind`.
    pub const fn with_kind(mut self, kind: MemErrorKind) -> FaultRule {
        self.kind = kind;
        self
    }

    /// Keep failing from the `nth` on.
    pub const fn sticky(mut self) -> FaultRule {
        self.sticky = true;
        self
    }
}

/// A set of armed rules and how many operations each has seen.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    rules: Vec<(FaultRule, u64)>,
    injected: u64,
}

impl FaultPlan {
    /// No rules.
    pub const fn new() -> FaultPlan {
        FaultPlan {
            rules: Vec::new(),
            injected: 0,
        }
    }

    /// Arm a rule; it counts operations from now on.
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push((rule, 0));
    }

    /// Disarm every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Count one `op` on `space`; the error kind if a rule makes it fail.
    pub fn check(&mut self, op: FaultOp, space: Option<SpaceId>) -> Option<MemErrorKind> {
        let mut fail = None;
        for (rule, seen) in &mut self.rules {
            if rule.op != op || (rule.space.is_some() && rule.space != space) {
                continue;
            }
            *seen += 1;
            let hit = *seen == rule.nth || (rule.sticky && *seen >= rule.nth);
            if hit && fail.is_none() {
                fail = Some(rule.kind);
            }
        }
        if fail.is_some() {
            self.injected += 1;
        }
        fail
    }
}

/// Any [`AddressSpace`] with a [`FaultPlan`] in front of it.
#[derive(Debug)]
pub struct FaultySpace<S> {
    inner: S,
    plan: Mutex<FaultPlan>,
}

impl<S: AddressSpace> FaultySpace<S> {
    /// Wrap `inner` with an empty plan.
    pub fn new(inner: S) -> FaultySpace<S> {
        FaultySpace {
            inner,
            plan: Mutex::new(FaultPlan::new()),
        }
    }

    /// Arm a rule.
    pub fn inject(&self, rule: FaultRule) {
        self.plan().add(rule);
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.plan().injected()
    }

    /// The wrapped space.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, op: FaultOp, addr: Addr) -> Result<(), MemError> {
        let space = self.inner.id();
        match self.plan().check(op, Some(space)) {
            Some(kind) => Err(MemError::new(addr, kind)),
            None => Ok(()),
        }
    }
}

impl<S: AddressSpace> AddressSpace for FaultySpace<S> {
    fn id(&self) -> SpaceId {
        self.inner.id()
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        self.check(FaultOp::Read, addr)?;
        self.inner.read(addr, buf)
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.check(FaultOp::Write, addr)?;
        self.inner.write(addr, data)
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.check(FaultOp::Patch, addr)?;
        self.inner.patch_code(addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_and_sticky() {
        let mut p = FaultPlan::new();
        p.add(FaultRule::new(FaultOp::Patch, 2).in_space(SpaceId(1)));
        p.add(
            FaultRule::new(FaultOp::Read, 1)
                .sticky()
                .with_kind(MemErrorKind::Gone),
        );
        assert_eq!(p.check(FaultOp::Patch, Some(SpaceId(1))), None);
        assert_eq!(p.check(FaultOp::Patch, Some(SpaceId(2))), None);
        assert_eq!(
            p.check(FaultOp::Patch, Some(SpaceId(1))),
            Some(MemErrorKind::Io)
        );
        assert_eq!(p.check(FaultOp::Patch, Some(SpaceId(1))), None);
        for _ in 0..3 {
            assert_eq!(p.check(FaultOp::Read, None), Some(MemErrorKind::Gone));
        }
        assert_eq!(p.injected(), 4);
        p.clear();
        assert_eq!(p.check(FaultOp::Read, None), None);
    }
}
