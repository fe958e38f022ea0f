//! # platform-kernel
//!
//! [`probe_core`] inside a bare-metal x86-64 kernel, probing the kernel's own text the way
//! Linux kprobes do. This crate is the glue an embedder writes; it is `no_std`, allocates
//! nothing, and builds on the host too (its logic is unit-tested there). The test kernel in
//! `kernel/` (its own workspace, built for `x86_64-unknown-none`) is the worked example: it
//! boots under QEMU on several CPUs, patches its text, and runs the core from its `#BP` and
//! `#DB` handlers.
//!
//! - [`frame`]: the trap frame the kernel's exception entry pushes, and its conversion to and
//!   from the core's register view ([`X86Regs`](probe_core::arch::x86_64::X86Regs)).
//! - [`platform`]: [`KernelPlatform`], the core's `Platform` and `AddressSpace`: the kernel
//!   image is one file ([`KERNEL_FILE`]) mapped once in one space ([`KERNEL_SPACE`]); memory
//!   access and text patching go through the kernel's [`KernelMemory`].
//! - [`trap`]: what the `#BP` and `#DB` handlers call ([`on_int3`](trap::on_int3),
//!   [`on_debug`](trap::on_debug)) and the per-CPU state of the trap in flight ([`CpuTrap`]).
//! - [`percpu`]: storage with one cache-line-padded value per CPU ([`PerCpu`]).
//!
//! `platform` and `trap` are the only files that name the core's API; they are what changes
//! when the core does.
#![no_std]

pub mod frame;
pub mod percpu;
pub mod platform;
pub mod trap;

pub use frame::TrapFrame;
pub use percpu::PerCpu;
pub use platform::{KernelImage, KernelMemory, KernelPlatform, KERNEL_FILE, KERNEL_SPACE};
pub use trap::{CpuTrap, TrapOutcome};
