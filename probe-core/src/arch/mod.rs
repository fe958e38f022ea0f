//! The architecture trait and the architectures the core ships.
//!
//! An [`Arch`] knows the breakpoint instruction, how to analyse one instruction into a
//! [`Arch::Plan`] (emulate it, boost it in a slot, single-step it in a slot, or reject it),
//! how to encode that slot, how to emulate and fix up, and where a function's return address
//! lives. Everything is static dispatch: the core is generic over one `Arch`.
//!
//! `platform-mock` carries a second, tiny `Arch` for a toy ISA; it proves the trait is
//! really pluggable.

mod types;
#[cfg(feature = "x86_64")]
pub mod x86_64;

pub use types::{Arch, PlanKind, Registers, Reject};
