//! Per-CPU descriptor tables: a GDT with a TSS whose IST stacks serve `#DB`, NMI and `#DF`;
//! one IDT shared by all CPUs (interrupt gates, so every handler starts with interrupts off).
//!
//! `#BP` deliberately has no IST stack: an IST handler that is re-entered on the same CPU (an
//! NMI handler hitting a probe while the CPU is in `#BP`) would overwrite its own frame. It
//! runs on the interrupted stack, with the int3 gap made by its entry stub (`boot.rs`).

use core::cell::UnsafeCell;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use crate::boot;
use crate::MAX_CPUS;

const IST_SIZE: usize = 16 * 1024;
/// IST index (1-based in the IDT, 0-based in the TSS) for `#DF`, NMI, `#DB`.
const IST_DF: u8 = 1;
const IST_NMI: u8 = 2;
const IST_DB: u8 = 3;

#[repr(C, align(16))]
struct Stacks([[u8; IST_SIZE]; 3]);

struct CpuTables {
    tss: TaskStateSegment,
    gdt: GlobalDescriptorTable,
    stacks: Stacks,
}

/// Each CPU's tables; entry `i` is written only by CPU `i`, once, in [`init_cpu`].
struct Tables(UnsafeCell<[CpuTables; MAX_CPUS]>);
// SAFETY: CPU `i` only touches entry `i` (see `init_cpu`); after it loaded them, the CPU
// reads them by itself (the TSS's IST pointers), and nobody writes them again.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables(UnsafeCell::new(
    [const {
        CpuTables {
            tss: TaskStateSegment::new(),
            gdt: GlobalDescriptorTable::new(),
            stacks: Stacks([[0; IST_SIZE]; 3]),
        }
    }; MAX_CPUS],
));

/// One IDT gate (64-bit interrupt gate).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    off_lo: u16,
    sel: u16,
    ist: u8,
    attr: u8,
    off_mid: u16,
    off_hi: u32,
    zero: u32,
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: written once by the bootstrap processor in `init_idt` before any other CPU runs
// or any interrupt is enabled; read-only afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(
    [Gate {
        off_lo: 0,
        sel: 0,
        ist: 0,
        attr: 0,
        off_mid: 0,
        off_hi: 0,
        zero: 0,
    }; 256],
));

/// Fill the IDT. Bootstrap processor only, before any other CPU starts.
pub fn init_idt(code: SegmentSelector) {
    // SAFETY: called once on the bootstrap processor before the others start and before
    // interrupts are enabled: nothing else reads or writes the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for &v in boot::VECTORS {
        let Some(addr) = boot::stub(v) else { continue };
        let ist = match v {
            1 => IST_DB,
            2 => IST_NMI,
            8 => IST_DF,
            _ => 0,
        };
        idt[v as usize] = Gate {
            off_lo: addr as u16,
            sel: code.0,
            ist,
            attr: 0x8e,
            off_mid: (addr >> 16) as u16,
            off_hi: (addr >> 32) as u32,
            zero: 0,
        };
    }
}

/// Load this CPU's GDT, TSS and the IDT. Returns the code selector.
///
/// # Safety
///
/// Called once per CPU, on CPU `cpu`, with interrupts off.
pub unsafe fn init_cpu(cpu: usize) -> SegmentSelector {
    // SAFETY: entry `cpu` is touched only by this CPU, once (the caller's promise); the
    // reference lives for the rest of the kernel, which the GDT/TSS loads require.
    let t: &'static mut CpuTables = unsafe { &mut (*TABLES.0.get())[cpu] };
    for i in 0..3 {
        let top = VirtAddr::from_ptr(t.stacks.0[i].as_ptr_range().end);
        t.tss.interrupt_stack_table[i] = top;
    }
    let code = t.gdt.append(Descriptor::kernel_code_segment());
    let data = t.gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS is 'static and its IST stacks are this CPU's own.
    let tss = t.gdt.append(Descriptor::tss_segment(&t.tss));
    t.gdt.load();
    // SAFETY: the selectors name descriptors of the GDT just loaded.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss);
    }
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the IDT is 'static, filled by `init_idt` before any CPU loads it, and every
    // gate names an entry stub of `boot.rs`.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
    code
}
