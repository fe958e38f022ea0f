//! The kernel's memory as the core reaches it, and its text write path.
//!
//! Text pages are mapped read-only (boot.rs) and CR0.WP is set, so ring 0 cannot write them
//! by accident. [`patch`] writes them with interrupts off and CR0.WP cleared for the copy
//! only, then makes every other CPU execute a serialising instruction before it returns.
//!
//! The protocol, after Linux's `text_poke_bp` (arch/x86/kernel/alternative.c), for the only
//! writes the core makes:
//! - install: one byte, `int3`, over an instruction's first byte. A one-byte store is atomic
//!   for instruction fetch: another CPU executes either the old instruction or the `int3`.
//! - remove: the original first byte back over the `int3`. A CPU that fetched the `int3`
//!   before traps anyway; the core finds no probe there and restarts the instruction
//!   (`Hit::Restart`).
//! - slots: written before the probe that uses them is published and never while a CPU can
//!   be in them (the core's slot reuse waits for a grace period); a CPU enters a slot only by
//!   `iretq` from `#BP`, which serialises.
//!
//! After each write [`patch`] sends the sync IPI to every other CPU and waits until each has
//! run its handler (`cpuid`, then `iretq`: both serialising), as `text_poke_sync` does with
//! `on_each_cpu(do_sync_core)`. When registration returns, every CPU executes the new text.
//! This needs every other CPU to take interrupts eventually: nothing may wait for the core's
//! writer lock, or for this CPU, with interrupts off.

use core::sync::atomic::{AtomicU64, Ordering};

use probe_core::{Addr, MemError, MemErrorKind};
use x86_64::registers::control::{Cr0, Cr0Flags};

use platform_kernel::KernelMemory;

use crate::{lapic, online_cpus, this_cpu, MAX_CPUS};

/// The identity map ends here.
const MAPPED_END: u64 = 4 << 30;

/// The sync generation the writer asks for, and the one each CPU has reached.
static SYNC_WANTED: AtomicU64 = AtomicU64::new(0);
static SYNC_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// How many text writes were made (for the tests).
pub static PATCHES: AtomicU64 = AtomicU64::new(0);

/// The kernel's memory accessors.
#[derive(Debug, Clone, Copy)]
pub struct Mem;

fn check(addr: Addr, len: usize) -> Result<(), MemError> {
    match addr.0.checked_add(len as u64) {
        Some(end) if addr.0 >= 0x1000 && end <= MAPPED_END => Ok(()),
        _ => Err(MemError::new(addr, MemErrorKind::Unmapped)),
    }
}

impl KernelMemory for Mem {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        check(addr, buf.len())?;
        // SAFETY: the range is inside the identity map (checked) and readable; the bytes may
        // change under us (text being patched), hence volatile byte reads.
        for (i, b) in buf.iter_mut().enumerate() {
            *b = unsafe { ((addr.0 as usize + i) as *const u8).read_volatile() };
        }
        Ok(buf.len())
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        check(addr, data.len())?;
        if is_text(addr.0, data.len()) {
            return Err(MemError::new(addr, MemErrorKind::Denied));
        }
        // SAFETY: mapped (checked), not text (checked), and the core writes only where the
        // emulated instruction would (the interrupted stack, below its pointer).
        for (i, &b) in data.iter().enumerate() {
            unsafe { ((addr.0 as usize + i) as *mut u8).write_volatile(b) };
        }
        Ok(())
    }

    fn patch_text(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        check(addr, data.len())?;
        if !is_text(addr.0, data.len()) {
            return Err(MemError::new(addr, MemErrorKind::Denied));
        }
        // The core patches only under its writer lock; this kernel's lock knows its holder.
        if !crate::probes::writer_held_here() {
            crate::fatal(format_args!(
                "text patched at {:#x} without the core's writer lock",
                addr.0
            ));
        }
        // SAFETY: the range is kernel text or the slot area (checked), which the core writes
        // only as the protocol above allows.
        unsafe { patch(addr.0, data) };
        Ok(())
    }
}

fn is_text(addr: u64, len: usize) -> bool {
    let (start, end) = crate::text_range();
    addr >= start && addr + len as u64 <= end
}

/// Write `data` at `addr` in the read-only text, then serialise every other CPU.
///
/// # Safety
///
/// `addr..addr + data.len()` is kernel text or the slot area, and changing it is safe for
/// any CPU executing it (the protocol in the module docs).
pub unsafe fn patch(addr: u64, data: &[u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cr0 = Cr0::read();
        // SAFETY: clearing WP lets this CPU write read-only pages; interrupts are off, so
        // nothing else runs on this CPU until it is set again below.
        unsafe { Cr0::write(cr0 - Cr0Flags::WRITE_PROTECT) };
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: inside the text (the caller's promise), writable while WP is clear.
            unsafe { ((addr as usize + i) as *mut u8).write_volatile(b) };
        }
        // SAFETY: restores the value read above.
        unsafe { Cr0::write(cr0) };
    });
    PATCHES.fetch_add(1, Ordering::Relaxed);
    sync_others();
}

/// Make every other online CPU execute a serialising instruction, and wait until they have.
fn sync_others() {
    let n = online_cpus();
    if n <= 1 {
        return;
    }
    let g = SYNC_WANTED.fetch_add(1, Ordering::SeqCst) + 1;
    lapic::ipi_others(lapic::SYNC_VECTOR);
    let me = this_cpu();
    for (cpu, done) in SYNC_DONE.iter().enumerate().take(n) {
        if cpu == me {
            continue;
        }
        while done.load(Ordering::Acquire) < g {
            core::hint::spin_loop();
        }
    }
}

/// The sync IPI's handler (interrupts off).
pub fn on_sync_ipi(cpu: usize) {
    let g = SYNC_WANTED.load(Ordering::Acquire);
    // Serialise: this CPU refetches every instruction after this point.
    core::arch::x86_64::__cpuid(0);
    SYNC_DONE[cpu].fetch_max(g, Ordering::Release);
    lapic::eoi();
}
