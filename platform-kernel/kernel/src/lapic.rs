//! The local APIC (xAPIC, memory-mapped at its default base), its timer, IPIs, and starting
//! the application processors with INIT-SIPI-SIPI.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::boot::{self, AP_TRAMPOLINE};

const BASE: u64 = 0xfee0_0000;
const ID: u64 = 0x20;
const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
const LVT_TIMER: u64 = 0x320;
const TIMER_INIT: u64 = 0x380;
const TIMER_DIV: u64 = 0x3e0;

/// The timer's vector.
pub const TIMER_VECTOR: u8 = 32;
/// The text-sync IPI's vector.
pub const SYNC_VECTOR: u8 = 240;
/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 255;

fn reg(off: u64) -> *mut u32 {
    (BASE + off) as *mut u32
}

fn read(off: u64) -> u32 {
    // SAFETY: the LAPIC page is identity-mapped (boot.rs); `off` is one of its registers.
    unsafe { reg(off).read_volatile() }
}

fn write(off: u64, v: u32) {
    // SAFETY: as in `read`; writing a LAPIC register affects only this CPU's interrupt state.
    unsafe { reg(off).write_volatile(v) }
}

/// This CPU's APIC id (QEMU numbers them 0..n, which is also our CPU number).
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Mask the legacy 8259 PICs: the firmware left their IRQ 0 on vector 8 (`#DF`'s), and this
/// kernel uses only the LAPIC.
pub fn mask_pic() {
    // SAFETY: the PICs' data ports; writing 0xff masks all their interrupt lines.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Enable this CPU's LAPIC (spurious vector 255).
pub fn enable() {
    write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// Start the periodic timer on this CPU.
pub fn start_timer(count: u32) {
    write(TIMER_DIV, 0x3); // divide by 16
    write(LVT_TIMER, u32::from(TIMER_VECTOR) | (1 << 17));
    write(TIMER_INIT, count);
}

/// End of interrupt.
pub fn eoi() {
    write(EOI, 0);
}

fn wait_icr() {
    while read(ICR_LO) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Send a fixed IPI with `vector` to every CPU but this one.
pub fn ipi_others(vector: u8) {
    wait_icr();
    write(ICR_HI, 0);
    write(ICR_LO, u32::from(vector) | (0b11 << 18));
    wait_icr();
}

fn ipi(apic: u32, lo: u32) {
    wait_icr();
    write(ICR_HI, apic << 24);
    write(ICR_LO, lo);
    wait_icr();
}

/// Number of CPUs, from QEMU's firmware configuration device (`FW_CFG_NB_CPUS`).
pub fn cpu_count() -> u32 {
    // SAFETY: the fw_cfg selector and data ports of QEMU's PC machine; selecting key 5 and
    // reading two bytes has no other effect.
    unsafe {
        Port::<u16>::new(0x510).write(0x05);
        let mut data = Port::<u8>::new(0x511);
        let lo = u32::from(data.read());
        let hi = u32::from(data.read());
        lo | hi << 8
    }
}

/// Stack top and CPU number of the processor being started, read by `ap_long` (boot.rs).
#[no_mangle]
static AP_STACK: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static AP_CPU: AtomicU64 = AtomicU64::new(0);

/// Busy-wait about `n` pause iterations: INIT-SIPI spacing (the protocol wants delays, QEMU
/// does not need them; nothing here depends on how long it takes).
fn pause(n: u32) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// Start CPU `cpu` (APIC id `cpu`) on the stack ending at `stack_top`; returns once the
/// processor has been sent INIT-SIPI-SIPI. The caller waits for it to report in.
pub fn start_ap(cpu: u32, stack_top: u64) {
    let tramp = boot::ap_trampoline();
    // SAFETY: 0x8000 is identity-mapped, writable RAM that nothing else uses (below the image
    // at 2 MiB, above the real-mode IVT/BDA); the trampoline is a few hundred bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(tramp.as_ptr(), AP_TRAMPOLINE as *mut u8, tramp.len());
    }
    AP_STACK.store(stack_top, Ordering::SeqCst);
    AP_CPU.store(u64::from(cpu), Ordering::SeqCst);
    ipi(cpu, 0x4500); // INIT
    pause(100_000);
    let sipi = 0x4600 | (AP_TRAMPOLINE >> 12) as u32;
    ipi(cpu, sipi);
    pause(10_000);
    ipi(cpu, sipi);
}
