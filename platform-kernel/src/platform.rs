//! [`KernelPlatform`]: the core's [`Platform`] for a kernel probing its own text.
//!
//! Kernel text has no file, so the kernel image is one "file", [`KERNEL_FILE`], mapped once,
//! executable, at its load address in one "space", [`KERNEL_SPACE`]: a probe on the kernel
//! instruction at `addr` is `ProbeKey::new(KERNEL_FILE, addr - base)`
//! ([`KernelPlatform::key_of`]). The file's bytes are a pristine copy of the image taken before
//! the first patch ([`KernelImage::original`]), so the core always reads the original
//! instruction, whatever breakpoints are in the live text.
//!
//! Memory goes through the kernel's own [`KernelMemory`]: plain loads and stores for data,
//! and a text write path (CR0.WP toggling or an alias mapping) that also serialises other
//! CPUs. One task per CPU ([`TaskId`] = CPU number): filters see the CPU, which is the only
//! "task" a kernel without a scheduler has.

use core::ops::ControlFlow;

use probe_core::arch::x86_64::X86_64;
use probe_core::{
    Addr, AddressSpace, FileId, Mapping, MemError, MemErrorKind, Platform, ProbeKey, Range,
    SpaceId, TaskId,
};

/// The kernel image, as the core's one file.
pub const KERNEL_FILE: FileId = FileId(1);
/// The kernel's address space, as the core's one space.
pub const KERNEL_SPACE: SpaceId = SpaceId(1);

/// The kernel's memory accessors. Implemented by the kernel; called at registration time
/// (`read`, `patch_text`) and on the hit path (`read`, `write`: the emulation of stack
/// instructions), so `read` and `write` must not block or allocate.
pub trait KernelMemory {
    /// Read mapped kernel memory at `addr`; returns how many bytes were read.
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError>;
    /// Write writable kernel memory (a stack slot).
    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError>;
    /// Write kernel text or the slot area (mapped read-only), and make every CPU see the new
    /// bytes before it next executes them (serialise the others). Registration time only.
    fn patch_text(&self, addr: Addr, data: &[u8]) -> Result<(), MemError>;
}

/// Where the kernel image and the slot area are.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage {
    /// Load address of the image (file offset 0).
    pub base: u64,
    /// The image's original bytes from `base` on: everything that may be probed.
    pub original: &'static [u8],
    /// The slot area: executable, written through [`KernelMemory::patch_text`], within
    /// +/-2 GiB of the text.
    pub slots: u64,
    /// How many slots of `X86_64::SLOT_SIZE` bytes the area holds.
    pub slot_count: usize,
}

/// The core's platform inside the kernel.
#[derive(Debug)]
pub struct KernelPlatform<M> {
    image: KernelImage,
    cpus: u64,
    mem: M,
}

/// The kernel space's memory, as the core sees it.
#[derive(Debug)]
pub struct KernelSpace<'a, M> {
    mem: &'a M,
}

impl<M: KernelMemory> KernelPlatform<M> {
    /// A platform over `image`, with `cpus` CPUs (tasks), using `mem`.
    pub const fn new(image: KernelImage, cpus: u64, mem: M) -> Self {
        KernelPlatform { image, cpus, mem }
    }

    /// The image layout.
    pub fn image(&self) -> &KernelImage {
        &self.image
    }

    /// The probe key of the kernel instruction at `addr`, if it lies in the image.
    pub fn key_of(&self, addr: u64) -> Option<ProbeKey> {
        let off = addr.checked_sub(self.image.base)?;
        (off < self.image.original.len() as u64).then_some(ProbeKey::new(KERNEL_FILE, off))
    }

    /// The kernel's memory accessors.
    pub fn mem(&self) -> &M {
        &self.mem
    }
}

impl<M: KernelMemory> AddressSpace for KernelSpace<'_, M> {
    fn id(&self) -> SpaceId {
        KERNEL_SPACE
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
        self.mem.read(addr, buf)
    }

    fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(addr, data)
    }

    fn patch_code(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
        self.mem.patch_text(addr, data)
    }
}

impl<M: KernelMemory> Platform for KernelPlatform<M> {
    type Arch = X86_64;
    type Space<'a>
        = KernelSpace<'a, M>
    where
        Self: 'a;

    fn space(&self, id: SpaceId) -> Option<KernelSpace<'_, M>> {
        (id == KERNEL_SPACE).then_some(KernelSpace { mem: &self.mem })
    }

    fn for_each_mapping(&self, file: FileId, f: &mut dyn FnMut(Mapping) -> ControlFlow<()>) {
        if file != KERNEL_FILE {
            return;
        }
        let start = Addr(self.image.base);
        let end = Addr(self.image.base + self.image.original.len() as u64);
        let _ = f(Mapping {
            space: KERNEL_SPACE,
            range: Range::new(start, end),
            file: KERNEL_FILE,
            file_offset: 0,
            exec: true,
            write: false,
        });
    }

    fn for_each_task(&self, space: SpaceId, f: &mut dyn FnMut(TaskId) -> ControlFlow<()>) {
        if space != KERNEL_SPACE {
            return;
        }
        for cpu in 0..self.cpus {
            if f(TaskId(cpu)).is_break() {
                return;
            }
        }
    }

    fn file_size(&self, file: FileId) -> Option<u64> {
        (file == KERNEL_FILE).then_some(self.image.original.len() as u64)
    }

    fn read_file(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        let orig = self.image.original;
        if file != KERNEL_FILE {
            return Err(MemError::new(Addr(offset), MemErrorKind::Gone));
        }
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o < orig.len())
            .ok_or(MemError::new(Addr(offset), MemErrorKind::Unmapped))?;
        let n = buf.len().min(orig.len() - start);
        buf[..n].copy_from_slice(&orig[start..start + n]);
        Ok(n)
    }

    fn xol_area(&self, space: SpaceId, _near: Addr, count: usize) -> Option<Addr> {
        (space == KERNEL_SPACE && count <= self.image.slot_count && self.image.slots != 0)
            .then_some(Addr(self.image.slots))
    }

    /// Kernel text runs in ring 0: privileged instructions are single-stepped (interrupts
    /// off) instead of refused; `cli`/`sti` are emulated.
    fn privileged(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The platform over a byte buffer standing in for kernel memory: registration patches
    //! the "text", unregistration restores it.

    extern crate std;

    use core::cell::RefCell;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    /// A flat "kernel memory" of `mem.len()` bytes at `base`.
    #[derive(Debug)]
    pub(crate) struct Buffer {
        pub(crate) base: u64,
        pub(crate) mem: RefCell<Vec<u8>>,
        pub(crate) patches: RefCell<usize>,
    }

    impl Buffer {
        fn range(&self, addr: Addr, len: usize) -> Result<core::ops::Range<usize>, MemError> {
            let off = addr
                .0
                .checked_sub(self.base)
                .ok_or(MemError::new(addr, MemErrorKind::Unmapped))? as usize;
            let end = off
                .checked_add(len)
                .filter(|&e| e <= self.mem.borrow().len())
                .ok_or(MemError::new(addr, MemErrorKind::Unmapped))?;
            Ok(off..end)
        }
    }

    impl KernelMemory for Buffer {
        fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<usize, MemError> {
            let r = self.range(addr, 1)?;
            let mem = self.mem.borrow();
            let n = buf.len().min(mem.len() - r.start);
            buf[..n].copy_from_slice(&mem[r.start..r.start + n]);
            Ok(n)
        }
        fn write(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
            let r = self.range(addr, data.len())?;
            self.mem.borrow_mut()[r].copy_from_slice(data);
            Ok(())
        }
        fn patch_text(&self, addr: Addr, data: &[u8]) -> Result<(), MemError> {
            *self.patches.borrow_mut() += 1;
            self.write(addr, data)
        }
    }

    pub(crate) const BASE: u64 = 0x20_0000;
    pub(crate) const SLOTS: u64 = BASE + 0x1000;

    /// Text: `push rbp; mov rbp, rsp; lea rax, [rdi+1]; pop rbp; ret`, then room for slots.
    pub(crate) fn platform() -> KernelPlatform<Buffer> {
        let text: &[u8] = &[0x55, 0x48, 0x89, 0xe5, 0x48, 0x8d, 0x47, 0x01, 0x5d, 0xc3];
        let mut mem = vec![0u8; 0x2000];
        mem[..text.len()].copy_from_slice(text);
        let original: &'static [u8] = Box::leak(mem[..0x1000].to_vec().into_boxed_slice());
        KernelPlatform::new(
            KernelImage {
                base: BASE,
                original,
                slots: SLOTS,
                slot_count: 0x1000 / 64,
            },
            2,
            Buffer {
                base: BASE,
                mem: RefCell::new(mem),
                patches: RefCell::new(0),
            },
        )
    }

    #[test]
    fn image_is_one_file_in_one_space() {
        let p = platform();
        assert_eq!(p.key_of(BASE + 4), Some(ProbeKey::new(KERNEL_FILE, 4)));
        assert_eq!(p.key_of(BASE - 1), None);
        assert_eq!(p.key_of(BASE + 0x1000), None);
        let mut maps = Vec::new();
        p.for_each_mapping(KERNEL_FILE, &mut |m| {
            maps.push(m);
            ControlFlow::Continue(())
        });
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].addr_of(4), Some(Addr(BASE + 4)));
        p.for_each_mapping(FileId(2), &mut |_| panic!("no other file"));
        let mut tasks = Vec::new();
        p.for_each_task(KERNEL_SPACE, &mut |t| {
            tasks.push(t);
            ControlFlow::Continue(())
        });
        assert_eq!(tasks, [TaskId(0), TaskId(1)]);
        assert_eq!(p.file_size(KERNEL_FILE), Some(0x1000));
        let mut b = [0u8; 4];
        assert_eq!(p.read_file(KERNEL_FILE, 0xffe, &mut b), Ok(2));
        assert!(p.read_file(KERNEL_FILE, 0x1000, &mut b).is_err());
        assert_eq!(p.xol_area(KERNEL_SPACE, Addr(BASE), 64), Some(Addr(SLOTS)));
        assert_eq!(p.xol_area(KERNEL_SPACE, Addr(BASE), 65), None);
        assert!(p.space(SpaceId(2)).is_none());
    }

    #[test]
    fn original_bytes_survive_a_patched_text() {
        let p = platform();
        p.space(KERNEL_SPACE)
            .unwrap()
            .patch_code(Addr(BASE), &[0xcc])
            .unwrap();
        let mut b = [0u8; 1];
        p.read_file(KERNEL_FILE, 0, &mut b).unwrap();
        assert_eq!(b, [0x55]);
        p.space(KERNEL_SPACE)
            .unwrap()
            .read_exact(Addr(BASE), &mut b)
            .unwrap();
        assert_eq!(b, [0xcc]);
    }
}
