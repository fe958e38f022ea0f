//! Compile-time guarantees about the core's layout and thread-safety (normal builds; loom's
//! primitives have other sizes).
//!
//! - A site-table entry (what the hit path reads first) stays within 72 bytes, its hot fields
//!   (state, key, probe, space, slot) first.
//! - The epoch clock and each per-CPU epoch word sit alone on a 128-byte line; a consumer slot's bookkeeping stays small.
//! - Everything the hit path shares between CPUs is `Send + Sync`.

use static_assertions::{assert_impl_all, const_assert};

use crate::consumer::ConsumerSlot;
use crate::reclaim::Epochs;
use crate::site::SitePayload;
use crate::space::SpacePayload;
use crate::table::{Entry, Table};
use crate::xol::XolSlot;

const_assert!(core::mem::size_of::<Entry<SitePayload>>() <= 72);
const_assert!(core::mem::size_of::<XolSlot>() == 16);
// The clock and each CPU's word on cache lines of their own.
const_assert!(core::mem::size_of::<Epochs<4>>() == 128 * 5);
const_assert!(core::mem::align_of::<Epochs<4>>() == 128);
const_assert!(core::mem::size_of::<ConsumerSlot<()>>() <= 96);
const_assert!(core::mem::size_of::<crate::task::RetInstance>() <= 128);

assert_impl_all!(Epochs<4>: Send, Sync);
assert_impl_all!(Table<SitePayload, 16>: Send, Sync);
assert_impl_all!(Table<SpacePayload<4>, 16>: Send, Sync);
assert_impl_all!(ConsumerSlot<u64>: Send, Sync);

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints the sizes the README quotes (`cargo test -p probe-core layout -- --nocapture`).
    #[test]
    fn layout_sizes() {
        use core::mem::size_of;
        #[cfg(feature = "x86_64")]
        {
            use crate::arch::x86_64::X86_64;
            use crate::probe::ProbePayload;
            extern crate std;
            std::println!(
                "probe entry {} B, site entry {} B, consumer slot {} B (+ the consumer), \
                 space entry {} B + {} B per XOL slot, return instance {} B, \
                 TaskState<32> {} B, TrapState<X86_64> {} B",
                size_of::<Entry<ProbePayload<X86_64>>>(),
                size_of::<Entry<SitePayload>>(),
                size_of::<ConsumerSlot<()>>(),
                size_of::<Entry<SpacePayload<0>>>(),
                size_of::<XolSlot>(),
                size_of::<crate::task::RetInstance>(),
                size_of::<crate::task::TaskState<32>>(),
                size_of::<crate::trap::TrapState<X86_64>>(),
            );
        }
        assert!(size_of::<Entry<SitePayload>>() <= 72);
    }
}
