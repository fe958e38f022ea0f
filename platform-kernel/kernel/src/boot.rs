//! Boot: the PVH entry (QEMU's `-kernel` loads this ELF and enters `pvh_start` in 32-bit
//! protected mode, paging off, `ebx` = the `hvm_start_info` address), page tables, long mode;
//! the real-mode trampoline the application processors start in; the exception and
//! interrupt entry stubs that build a [`TrapFrame`](platform_kernel::TrapFrame).
//!
//! Page tables: the first 4 GiB identity-mapped with 2 MiB pages; the text pages
//! (`__text_start..__text_end`: code, read-only data, slot area) without the write bit, so
//! with CR0.WP set nothing writes text except the text write path (`text.rs`). The LAPIC
//! page is in the mapped range.

use core::arch::global_asm;

/// Where the application-processor trampoline is copied (SIPI vector 0x08).
pub const AP_TRAMPOLINE: u64 = 0x8000;

global_asm!(
    r#"
    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit PVH entry point. QEMU reads the descriptor
       as a pointer-sized word in an ELF64 image. */
    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .quad pvh_start

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov esi, ebx
    /* Zero .bss (the stack and page tables live there). */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb
    mov dword ptr [boot_start_info], esi
    mov esp, offset boot_stack_top

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD[0..4]. */
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b
    /* PD entries: 2 MiB pages, present + writable + large, text read-only. */
    xor ecx, ecx
2:  mov eax, ecx
    shl eax, 21
    mov edx, 0x83
    cmp eax, offset __text_start
    jb 3f
    cmp eax, offset __text_end
    jae 3f
    mov edx, 0x81
3:  or eax, edx
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 2b

    call enter_long_mode_32
    /* Far jump to 64-bit code (selector 0x08 of boot_gdt). */
    .byte 0xea
    .long bsp_long
    .word 0x08

    /* PAE, CR3, EFER.LME, paging + write protect; then the caller far-jumps. */
enter_long_mode_32:
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    ret

    .code64
bsp_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, dword ptr [boot_start_info]
    call kernel_main
4:  hlt
    jmp 4b

ap_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, qword ptr [AP_STACK]
    mov rdi, qword ptr [AP_CPU]
    call ap_main
5:  hlt
    jmp 5b

    /* The application processors' trampoline, copied to 0x8000 and entered in real mode by
       the SIPI. Position-dependent on 0x8000 only; everything else is absolute. */
    .code16
    .global ap_tramp_start
ap_tramp_start:
    cli
    cld
    xor ax, ax
    mov ds, ax
    /* lgdt [0x8000 + (ap_gdt_ptr - ap_tramp_start)], encoded by hand (16-bit disp). */
    .byte 0x0f, 0x01, 0x16
    .word 0x8000 + (ap_gdt_ptr - ap_tramp_start)
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .byte 0x66, 0xea
    .long 0x8000 + (ap_prot - ap_tramp_start)
    .word 0x18
    .code32
ap_prot:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    .byte 0xea
    .long ap_long
    .word 0x08
    .p2align 3
ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
ap_gdt_ptr:
    .word 31
    .long 0x8000 + (ap_gdt - ap_tramp_start)
    .global ap_tramp_end
ap_tramp_end:

    /* The boot GDT is data: the CPU sets descriptors' accessed bits, and text is read-only
       once paging is on. */
    .section .data.boot, "aw"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
boot_gdt_ptr:
    .word 23
    .long boot_gdt
    .long 0

    .code64
    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip 65536
boot_stack_top:
boot_start_info:
    .skip 8
    .global boot_pml4
"#
);

// The entry stubs. Each pushes a zero error code where the CPU pushes none, then the vector,
// and jumps to `isr_common`, which saves the general registers (the `TrapFrame` layout) and
// calls `trap_entry(&mut TrapFrame)`.
//
// `#BP` first moves the CPU's five-word frame 32 bytes down: the int3 stack gap of Linux's
// entry code. An emulated `push` or `call` writes the 8 bytes below the interrupted stack
// pointer, which is where the CPU put this frame (it aligns the stack down to 16 and pushes);
// with the gap those 8 bytes are free, and `iretq` uses the moved frame.
global_asm!(
    r#"
    .section .text.isr, "ax"
    .code64
    .macro ISR_NOERR vec
    .global isr_\vec
isr_\vec:
    push 0
    push \vec
    jmp isr_common
    .endm
    .macro ISR_ERR vec
    .global isr_\vec
isr_\vec:
    push \vec
    jmp isr_common
    .endm

    ISR_NOERR 0
    ISR_NOERR 1
    ISR_NOERR 2
    ISR_NOERR 4
    ISR_NOERR 5
    ISR_NOERR 6
    ISR_NOERR 7
    ISR_ERR 8
    ISR_NOERR 9
    ISR_ERR 10
    ISR_ERR 11
    ISR_ERR 12
    ISR_ERR 13
    ISR_ERR 14
    ISR_NOERR 15
    ISR_NOERR 16
    ISR_ERR 17
    ISR_NOERR 18
    ISR_NOERR 19
    ISR_NOERR 32
    ISR_NOERR 240
    ISR_NOERR 255

    .global isr_3
isr_3:
    sub rsp, 32
    push rax
    mov rax, [rsp + 40]
    mov [rsp + 8], rax
    mov rax, [rsp + 48]
    mov [rsp + 16], rax
    mov rax, [rsp + 56]
    mov [rsp + 24], rax
    mov rax, [rsp + 64]
    mov [rsp + 32], rax
    mov rax, [rsp + 72]
    mov [rsp + 40], rax
    pop rax
    push 0
    push 3
    jmp isr_common

isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call trap_entry
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
"#
);

/// The vectors with an entry stub, and the stubs' symbol names.
pub const VECTORS: &[u8] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 32, 240, 255,
];

extern "C" {
    fn isr_0();
    fn isr_1();
    fn isr_2();
    fn isr_3();
    fn isr_4();
    fn isr_5();
    fn isr_6();
    fn isr_7();
    fn isr_8();
    fn isr_9();
    fn isr_10();
    fn isr_11();
    fn isr_12();
    fn isr_13();
    fn isr_14();
    fn isr_15();
    fn isr_16();
    fn isr_17();
    fn isr_18();
    fn isr_19();
    fn isr_32();
    fn isr_240();
    fn isr_255();
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
}

/// The entry stub of `vector`, if it has one.
pub fn stub(vector: u8) -> Option<u64> {
    let f: unsafe extern "C" fn() = match vector {
        0 => isr_0,
        1 => isr_1,
        2 => isr_2,
        3 => isr_3,
        4 => isr_4,
        5 => isr_5,
        6 => isr_6,
        7 => isr_7,
        8 => isr_8,
        9 => isr_9,
        10 => isr_10,
        11 => isr_11,
        12 => isr_12,
        13 => isr_13,
        14 => isr_14,
        15 => isr_15,
        16 => isr_16,
        17 => isr_17,
        18 => isr_18,
        19 => isr_19,
        32 => isr_32,
        240 => isr_240,
        255 => isr_255,
        _ => return None,
    };
    Some(f as usize as u64)
}

/// The application-processor trampoline's bytes in the image.
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: both symbols are labels in one section of the image, start before end; the
    // bytes between them are the assembled trampoline, never written.
    unsafe {
        let start = &raw const ap_tramp_start;
        let end = &raw const ap_tramp_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
