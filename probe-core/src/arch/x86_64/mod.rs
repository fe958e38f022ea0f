//! x86-64: the [`X86_64`] architecture, built on the iced-x86 decoder and encoder.
//!
//! - [`regs`]: the register file ([`X86Regs`], laid out as Linux's `user_regs_struct`).
//! - [`plan`]: the analysed instruction ([`Plan`]) and its compact classification.
//! - `analyze`: bytes to a plan (iced-x86 decoder; registration time, may allocate).
//! - `slot`: the out-of-line slot encoder (boost, single-step, scratch-register rewrite).
//! - [`jump`]: whether a function entry can be jump-patched (optprobes) instead of trapping.
//! - `emulate`: the emulator of the commonest instructions (hit path, no allocation).
//! - `step`: single-step set-up and fix-up ([`StepState`]).
//! - `arch_impl`: the [`Arch`](crate::arch::Arch) implementation tying them together.

mod analyze;
mod arch_impl;
mod emulate;
pub mod jump;
pub mod plan;
pub mod regs;
mod slot;
mod step;

pub use arch_impl::X86_64;
pub use plan::Plan;
pub use regs::X86Regs;
pub use step::StepState;

#[cfg(test)]
mod tests;
