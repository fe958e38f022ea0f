//! The hit counters the agent and the controller share: one region of memory (a `memfd`
//! both map), a header, then one block of counters per thread of the traced program, each
//! block on cache lines of its own. A thread claims a block at its first hit and from then on
//! writes only its own lines, with plain (non-`lock`ed) stores: a counting hit writes no line
//! another CPU writes, so its cost does not grow with the number of threads hitting one probe
//! (the per-CPU counters of perf and of the kernel's `percpu_counter`, with threads as CPUs).
//! Threads beyond the blocks the region holds share one last block, counted with atomic
//! adds: slower, never lost. The controller sums a probe's counters over every block.
//!
//! The layout is plain `repr(C)` data at fixed offsets, the same in every process that maps
//! it (the agent in each traced process, the controller), and is checked (magic, version,
//! sizes) before it is used.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The first word of a region: "PROBECTR".
pub const MAGIC: u64 = u64::from_le_bytes(*b"PROBECTR");
/// The layout's version.
pub const VERSION: u32 = 1;
/// A cache line.
const LINE: usize = 64;

/// The region's header (one cache line).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    magic: u64,
    version: u32,
    /// Counters per block.
    probes: u32,
    /// Blocks a thread can own (the shared overflow block follows them).
    threads: u32,
    /// The next block to hand out (may pass `threads`: those threads share the last block).
    next_block: AtomicU32,
    /// Bytes from one block to the next.
    stride: u64,
}

/// Why a region cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Shorter than its header says, or than a header.
    TooShort,
    /// Not a counter region of this version.
    BadHeader,
    /// Not aligned to a cache line.
    Misaligned,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LayoutError::TooShort => "the counter region is shorter than its layout",
            LayoutError::BadHeader => "the counter region has no valid header",
            LayoutError::Misaligned => "the counter region is not cache-line aligned",
        })
    }
}

/// The sizes of a region for `probes` probes and `threads` thread blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    probes: u32,
    threads: u32,
    stride: usize,
}

impl Layout {
    /// A layout; `None` if the region would not fit in memory.
    pub fn new(probes: u32, threads: u32) -> Option<Layout> {
        let bytes = (probes as usize).checked_mul(8)?;
        let stride = bytes.checked_add(LINE - 1)? & !(LINE - 1);
        let l = Layout {
            probes,
            threads,
            stride: stride.max(LINE),
        };
        l.bytes()?;
        Some(l)
    }

    /// Bytes of the whole region: the header, `threads` blocks and the overflow block.
    pub fn bytes(&self) -> Option<usize> {
        self.stride
            .checked_mul(self.threads as usize + 1)?
            .checked_add(LINE)
    }

    /// Writes the header of a region.
    ///
    /// # Safety
    /// `base` is cache-line aligned, points to [`Layout::bytes`] writable bytes that are zero
    /// (a fresh mapping) and that nothing else uses yet.
    pub unsafe fn init(&self, base: *mut u8) {
        let h = Header {
            magic: MAGIC,
            version: VERSION,
            probes: self.probes,
            threads: self.threads,
            next_block: AtomicU32::new(0),
            stride: self.stride as u64,
        };
        // SAFETY: the caller's contract: aligned, writable, not yet shared.
        unsafe { core::ptr::write(base as *mut Header, h) };
    }
}

/// A view of a mapped region.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    base: *const u8,
    probes: u32,
    threads: u32,
    stride: usize,
}

// SAFETY: every access through the view is atomic.
unsafe impl Send for Counters {}
// SAFETY: as above.
unsafe impl Sync for Counters {}

/// A thread's own block: the thread that claimed it is its only writer.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    counters: *const AtomicU64,
    probes: u32,
    /// The shared overflow block: counted with atomic adds.
    shared: bool,
}

impl Counters {
    /// The region at `base`, `len` bytes long, checked.
    ///
    /// # Safety
    /// `base` points to `len` bytes mapped for as long as the view (and every [`Block`]
    /// taken from it) is used, written only through this module.
    pub unsafe fn from_raw(base: *const u8, len: usize) -> Result<Counters, LayoutError> {
        if base as usize % LINE != 0 {
            return Err(LayoutError::Misaligned);
        }
        if len < core::mem::size_of::<Header>() {
            return Err(LayoutError::TooShort);
        }
        // SAFETY: aligned and at least a header long (checked above), mapped (the contract).
        let h = unsafe { &*(base as *const Header) };
        if h.magic != MAGIC || h.version != VERSION {
            return Err(LayoutError::BadHeader);
        }
        let layout = Layout::new(h.probes, h.threads).ok_or(LayoutError::BadHeader)?;
        if layout.stride as u64 != h.stride {
            return Err(LayoutError::BadHeader);
        }
        if layout.bytes().is_none_or(|need| need > len) {
            return Err(LayoutError::TooShort);
        }
        Ok(Counters {
            base,
            probes: h.probes,
            threads: h.threads,
            stride: layout.stride,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: checked in `from_raw`.
        unsafe { &*(self.base as *const Header) }
    }

    fn block_at(&self, i: u32) -> *const AtomicU64 {
        // SAFETY: i <= threads, so the block lies inside the region (checked in `from_raw`).
        unsafe { self.base.add(LINE + i as usize * self.stride) as *const AtomicU64 }
    }

    /// Counters per block.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// Hands the calling thread a block: its own while any is left, else the shared one.
    /// No allocation, no lock, no system call: safe at a probe's hit.
    pub fn claim(&self) -> Block {
        let i = self.header().next_block.fetch_add(1, Ordering::Relaxed);
        let shared = i >= self.threads;
        Block {
            counters: self.block_at(if shared { self.threads } else { i }),
            probes: self.probes,
            shared,
        }
    }

    /// How many threads claimed a block (those past the region's blocks included).
    pub fn claimed(&self) -> u32 {
        self.header().next_block.load(Ordering::Relaxed)
    }

    /// The hits of `probe` over every block (0 for a probe past the layout).
    pub fn total(&self, probe: u32) -> u64 {
        if probe >= self.probes {
            return 0;
        }
        (0..=self.threads)
            .map(|b| {
                // SAFETY: probe < probes, so the counter lies inside block b.
                let c = unsafe { &*self.block_at(b).add(probe as usize) };
                c.load(Ordering::Relaxed)
            })
            .fold(0u64, u64::wrapping_add)
    }
}

impl Block {
    /// Counts one hit of `probe` (ignored past the layout). A thread's own block takes one
    /// unlocked `add` (it is the only writer); the shared block an atomic add.
    #[inline]
    pub fn hit(&self, probe: u32) {
        if probe >= self.probes {
            return;
        }
        // SAFETY: probe < probes: inside the block, which lives as long as the region.
        let c = unsafe { &*self.counters.add(probe as usize) };
        if self.shared {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            add_one_in_one_instruction(c);
        }
    }

    /// Whether this is the shared overflow block.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

/// Adds one to `c` with a single instruction that is not `lock`ed: the only writer is the
/// calling thread, but a signal handler may run on it between any two instructions and
/// count a nested hit in the same word, so a load and a store (two instructions) would lose
/// that hit. A signal arrives at an instruction boundary, so one read-modify-write
/// instruction cannot be split; without `lock` it costs what a store does. (The kernel's
/// `this_cpu_inc` uses an unlocked `incq` the same way, safe against interrupts on its
/// CPU.) The controller's concurrent reads see either value: the memory access of an
/// aligned 8-byte `add` is not torn.
#[inline(always)]
fn add_one_in_one_instruction(c: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `c` is a valid, aligned AtomicU64 for the call; the instruction writes only
    // it (and the flags, declared clobbered by default).
    unsafe {
        core::arch::asm!("add qword ptr [{0}], 1", in(reg) c.as_ptr(), options(nostack));
    }
    #[cfg(not(target_arch = "x86_64"))]
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn region(probes: u32, threads: u32) -> (std::vec::Vec<u64>, Counters) {
        let l = Layout::new(probes, threads).unwrap();
        // u64s over-allocated by a line so the base can be aligned.
        let mut v = vec![0u64; l.bytes().unwrap() / 8 + 8];
        let p = v.as_mut_ptr() as usize;
        let base = ((p + LINE - 1) & !(LINE - 1)) as *mut u8;
        // SAFETY: aligned, zeroed, long enough, unused.
        unsafe { l.init(base) };
        // SAFETY: the vector outlives the view in each test.
        let c = unsafe { Counters::from_raw(base, l.bytes().unwrap()) }.unwrap();
        (v, c)
    }

    #[test]
    fn blocks_are_cache_lines_apart_and_sum() {
        let (_v, c) = region(3, 2);
        let a = c.claim();
        let b = c.claim();
        assert!(!a.is_shared() && !b.is_shared());
        assert_eq!((b.counters as usize - a.counters as usize) % LINE, 0);
        let o1 = c.claim();
        let o2 = c.claim();
        assert!(o1.is_shared() && o2.is_shared());
        for _ in 0..5 {
            a.hit(0);
        }
        b.hit(0);
        o1.hit(0);
        o2.hit(2);
        a.hit(7);
        assert_eq!(
            (c.total(0), c.total(1), c.total(2), c.total(7)),
            (7, 0, 1, 0)
        );
        assert_eq!(c.claimed(), 4);
    }

    #[test]
    fn a_bad_region_is_refused() {
        let (mut v, c) = region(1, 1);
        let base = c.base;
        let len = Layout::new(1, 1).unwrap().bytes().unwrap();
        // SAFETY: the same region, a length too short.
        assert_eq!(
            unsafe { Counters::from_raw(base, len - 1) }.unwrap_err(),
            LayoutError::TooShort
        );
        // SAFETY: one byte past an aligned base.
        assert_eq!(
            unsafe { Counters::from_raw(base.add(1), len) }.unwrap_err(),
            LayoutError::Misaligned
        );
        v.iter_mut().for_each(|w| *w = 0);
        // SAFETY: the zeroed region.
        assert_eq!(
            unsafe { Counters::from_raw(base, len) }.unwrap_err(),
            LayoutError::BadHeader
        );
    }
}
