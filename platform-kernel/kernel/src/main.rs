//! A small x86-64 kernel that runs probe-core on its own text, on every CPU.
//!
//! Boot (PVH entry, long mode, page tables) is in `boot.rs`; descriptor tables in `cpu.rs`;
//! the LAPIC, its timer and the start of the other processors in `lapic.rs`; the text write
//! path in `text.rs`; the core's instance and the `#BP`/`#DB`/timer handlers in `probes.rs`;
//! the scenarios the host tests check in `tests.rs`.
//!
//! It reports over COM1 and exits QEMU through `isa-debug-exit` (port 0xf4): status 33 for
//! success, 35 for failure. The kernel command line (`-append`) picks extra runs: `bench`
//! (cycles per hit), `alloc-in-trap` (a handler that allocates: must die loudly).
#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod serial;
mod bench;
mod boot;
mod cpu;
mod lapic;
mod probes;
mod tests;
mod text;

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use linked_list_allocator::LockedHeap;
use x86_64::instructions::port::Port;

/// Most CPUs the kernel drives.
pub const MAX_CPUS: usize = 8;

/// CPUs that have come up.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Number of CPUs online.
pub fn online_cpus() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// This CPU's number (its APIC id; QEMU numbers them from 0).
pub fn this_cpu() -> usize {
    lapic::id() as usize
}

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __slots_start: u8;
    static __slots_end: u8;
}

/// The text pages: code, read-only data, slots (`__text_start..__slots_end`).
pub fn text_range() -> (u64, u64) {
    // Linker-script symbols; only their addresses are taken.
    (
        &raw const __text_start as u64,
        &raw const __slots_end as u64,
    )
}

/// The image as the core's file: `__text_start..__slots_start` (code and read-only data).
pub fn image_range() -> (u64, u64) {
    (
        &raw const __text_start as u64,
        &raw const __slots_start as u64,
    )
}

/// The slot area.
pub fn slot_range() -> (u64, u64) {
    (
        &raw const __slots_start as u64,
        &raw const __slots_end as u64,
    )
}

// ------------------------------------------------------------------------------ exit

/// Leave QEMU with `code` (isa-debug-exit: the exit status is `code << 1 | 1`).
pub fn exit(success: bool) -> ! {
    let code: u32 = if success { 0x10 } else { 0x11 };
    // SAFETY: isa-debug-exit's port; writing it ends the virtual machine.
    unsafe { Port::<u32>::new(0xf4).write(code) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Report a fatal error and leave QEMU with failure. Usable from any context.
pub fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    serial::print_unlocked(format_args!("\nFATAL on cpu {}: {}\n", this_cpu(), args));
    exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(format_args!("panic: {info}"))
}

// ------------------------------------------------------------------------------ allocator

/// Nesting depth of exception and interrupt handlers per CPU: the allocator refuses to run
/// inside one.
pub static IN_TRAP: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Allocations made (registration time only).
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The heap (iced-x86's encoder, at registration), failing loudly when called from a trap.
struct TrapCheckedHeap(LockedHeap);

// SAFETY: delegates to LockedHeap, which is a correct allocator; the check only adds a
// diverging path.
unsafe impl GlobalAlloc for TrapCheckedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let cpu = this_cpu();
        if cpu < MAX_CPUS && IN_TRAP[cpu].load(Ordering::Relaxed) != 0 {
            fatal(format_args!(
                "allocation of {} bytes from a trap handler",
                layout.size()
            ));
        }
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let cpu = this_cpu();
        if cpu < MAX_CPUS && IN_TRAP[cpu].load(Ordering::Relaxed) != 0 {
            fatal(format_args!("deallocation from a trap handler"));
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: TrapCheckedHeap = TrapCheckedHeap(LockedHeap::empty());

const HEAP_SIZE: usize = 16 << 20;
#[repr(align(4096))]
#[allow(dead_code)] // Only its address is used.
struct HeapArea([u8; HEAP_SIZE]);
static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

// ------------------------------------------------------------------------------ bring-up

/// AP stacks.
const STACK_SIZE: usize = 64 * 1024;
#[repr(align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);
static mut AP_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// Timer period in LAPIC ticks (bus clock / 16).
const TIMER_COUNT: u32 = 200_000;

/// Ticks of the timer per CPU.
pub static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn cpu_init(cpu: usize) {
    // SAFETY: once per CPU, on that CPU, interrupts off (boot and AP entry run with IF=0).
    unsafe { cpu::init_cpu(cpu) };
    lapic::enable();
    lapic::start_timer(TIMER_COUNT);
}

/// The kernel command line (PVH `hvm_start_info.cmdline_paddr`), or "".
fn cmdline(start_info: u64) -> &'static str {
    if start_info == 0 {
        return "";
    }
    // SAFETY: QEMU's PVH loader put a `hvm_start_info` (magic, version, flags, nr_modules,
    // modlist_paddr, cmdline_paddr, ...) at `start_info` in identity-mapped low memory, and
    // the command line it points to is a NUL-terminated string there too.
    unsafe {
        let p = start_info as *const u32;
        if p.read() != 0x336e_c578 {
            return "";
        }
        let cmd = (start_info as *const u64).add(3).read() as *const u8;
        if cmd.is_null() {
            return "";
        }
        let mut n = 0;
        while n < 4096 && cmd.add(n).read() != 0 {
            n += 1;
        }
        core::str::from_utf8(core::slice::from_raw_parts(cmd, n)).unwrap_or("")
    }
}

/// Bootstrap processor entry (from `boot.rs`).
#[no_mangle]
extern "C" fn kernel_main(start_info: u64) -> ! {
    serial::init();
    println!("probe test kernel");
    lapic::mask_pic();
    cpu::init_idt(x86_64::structures::gdt::SegmentSelector(0x08));
    cpu_init(0);
    // SAFETY: the heap area is used by nothing else; initialised once, before any allocation.
    unsafe {
        HEAP.0
            .lock()
            .init((&raw mut HEAP_AREA).cast::<u8>(), HEAP_SIZE);
    }
    let cmd = cmdline(start_info);
    probes::init();
    ONLINE.store(1, Ordering::Release);
    println!("cpu 0 up");
    let n = (lapic::cpu_count() as usize).clamp(1, MAX_CPUS);
    for c in 1..n {
        // SAFETY: stack `c` is given to CPU `c` only; the top of the array element.
        let top = unsafe { (&raw mut AP_STACKS.0[c]).cast::<u8>().add(STACK_SIZE) } as u64;
        lapic::start_ap(c as u32, top);
        while online_cpus() <= c {
            core::hint::spin_loop();
        }
    }
    x86_64::instructions::interrupts::enable();
    println!("smp: {} cpus", online_cpus());
    tests::run(cmd)
}

/// Application processor entry (from `boot.rs`), on its own stack, interrupts off.
#[no_mangle]
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    cpu_init(cpu);
    if this_cpu() != cpu {
        fatal(format_args!("cpu {cpu} has APIC id {}", this_cpu()));
    }
    println!("cpu {cpu} up");
    ONLINE.fetch_add(1, Ordering::AcqRel);
    x86_64::instructions::interrupts::enable();
    tests::worker(cpu)
}

/// Every interrupt and exception (from `isr_common` in `boot.rs`).
#[no_mangle]
extern "C" fn trap_entry(f: &mut platform_kernel::TrapFrame) {
    let cpu = this_cpu();
    if cpu >= MAX_CPUS {
        fatal(format_args!("APIC id {cpu} out of range"));
    }
    // Every handler counts as a trap for the allocator, the timer's too.
    IN_TRAP[cpu].fetch_add(1, Ordering::Relaxed);
    match f.vector as u8 {
        3 => probes::on_breakpoint(cpu, f),
        1 => probes::on_debug(cpu, f),
        lapic::TIMER_VECTOR => {
            TICKS[cpu].fetch_add(1, Ordering::Relaxed);
            probes::on_timer(cpu, f);
            lapic::eoi();
        }
        lapic::SYNC_VECTOR => text::on_sync_ipi(cpu),
        lapic::SPURIOUS_VECTOR => {}
        v => {
            let cr2 = x86_64::registers::control::Cr2::read_raw();
            fatal(format_args!(
                "exception {v} ({}) error {:#x} at rip {:#x} rsp {:#x} cr2 {cr2:#x}",
                exception_name(v),
                f.error,
                f.rip,
                f.rsp
            ))
        }
    }
    IN_TRAP[cpu].fetch_sub(1, Ordering::Relaxed);
}

fn exception_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        2 => "NMI",
        6 => "#UD",
        8 => "#DF",
        13 => "#GP",
        14 => "#PF",
        _ => "exception",
    }
}

/// FNV-1a over `bytes`: the host compares the text's hash with the image file's.
pub fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
