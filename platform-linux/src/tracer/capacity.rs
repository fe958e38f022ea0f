//! How large the core's tables are in the Linux backend, and what a full one means.
//!
//! The core's tables are const generics; the tracer holds its core in a zeroed,
//! `MAP_NORESERVE` mapping ([`crate::sys::ZeroedMap`]), whose pages the kernel commits only
//! when first written. So the sizes are chosen for the largest programs people trace (every
//! function of `node`, about 80 000, plus its libraries) and cost memory in proportion to
//! what a session uses: the address space reserved is about 8.5 GiB; the hash tables (probes,
//! breakpoints) are touched all over once they hold more than a few entries a page (at
//! node's scale about 78 MiB in all), the rest a few hundred bytes per probe and 16 bytes
//! per slot a process uses.
//!
//! A table that fills up never loses a probe already attached: a new probe that does not fit
//! is skipped with the reason (`tracer::skips`), and the slots a process may need are
//! admitted at registration ([`XOL`] less [`XOL_RESERVE`] slot-needing probes), so a library
//! mapped later always finds a slot for each of its probes.

use probe_core::Capacity;

/// Probe-table buckets: up to 7/8 of them hold probes (229 376; node has about 80 000
/// functions, libc about 3 000).
pub const PROBES: usize = 1 << 18;
/// Registered consumers (a probe and a return probe on one function are two).
pub const CONSUMERS: usize = 1 << 18;
/// Installed breakpoints over all processes (7/8 of the buckets: 458 752, every function of
/// node in five processes at once). A hash table touches its pages all over: at node's
/// 78 000 breakpoints every page of this one (72 bytes a bucket, 38 MiB) is in use.
pub const SITES: usize = 1 << 19;
/// Traced address spaces with breakpoints at once (7/8 of the buckets: 3 584 processes). Each
/// bucket holds its space's slot bookkeeping (16 bytes a slot), committed only when a process
/// uses it, in proportion to the slots it took.
pub const SPACES: usize = 4096;
/// Out-of-line slots per address space (64 bytes each: an 8 MiB area in each traced process,
/// of which only the pages of slots written are ever committed). On Linux nearly every probe
/// takes one: the core boosts stack instructions (`push %rbp`) rather than emulating them.
pub const XOL: usize = 1 << 17;
/// Slots of each area kept out of the registration budget: one for the return trampoline,
/// the rest for slots retired (a library unmapped) and not yet reusable.
pub const XOL_RESERVE: usize = 256;

/// Most probes on distinct instructions that need a slot.
pub const SLOT_BUDGET: usize = XOL - XOL_RESERVE;

/// What a full table means, with its size.
pub fn capacity_text(c: Capacity) -> String {
    let limit = |n: usize| n - n / 8;
    match c {
        Capacity::Probes => format!(
            "the probe table is full ({} probes over all files)",
            limit(PROBES)
        ),
        Capacity::Consumers => {
            format!("the consumer table is full ({CONSUMERS} probes and return probes)")
        }
        Capacity::XolSlots => format!(
            "they need an out-of-line slot, and the {SLOT_BUDGET} slots a process's slot \
             area offers are taken"
        ),
        Capacity::Sites => format!(
            "the breakpoint table is full ({} breakpoints over all processes)",
            limit(SITES)
        ),
        Capacity::Spaces => format!(
            "probe follows at most {} processes with probes at once",
            limit(SPACES)
        ),
        other => format!("the {other:?} table is full"),
    }
}
