//! The in-process agent of `probe`: the code that runs inside the traced program, so that a
//! hit of a jump-patched probe never stops the program for the tracer.
//!
//! A jump-patched entry (`probe_core::arch::x86_64::jump`) goes to a trampoline that saves
//! the registers and calls [`probe_agent_hit`]`(regs, probe)` on the traced thread. The
//! handler counts the hit in the thread's own block of a counter region ([`counters`]) that
//! the controller (the ptrace tracer) maps too and reads without stopping anybody.
//!
//! How the region reaches the agent: the controller creates it (a `memfd`), and either
//! passes its descriptor in `PROBE_AGENT_FD` to a command it spawns with the agent in
//! `LD_PRELOAD` (the constructor maps it, closes the descriptor and removes the variable, so
//! the program does not see them), or maps it into a running process itself and calls
//! [`probe_agent_attach`]. Until a region is attached the handler counts nothing and returns
//! at once: a trampoline reached before is harmless.
//!
//! A forked child keeps the parent's mapping (shared), so its hits still reach the
//! controller; a handler registered with `pthread_atfork` makes the child's thread claim a
//! block of its own instead of writing into the parent thread's.
//!
//! The hit path takes no lock, makes no system call and allocates nothing: one load of the
//! region, one thread-local load (the agent's TLS is static TLS when it is loaded at start,
//! as `LD_PRELOAD` loads it), and a plain load and store on the thread's own cache line.

pub mod counters;
pub mod ring;
mod sync;

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use counters::{Block, Counters};
use probe_core::arch::x86_64::X86Regs;
use ring::{Record, RecordRegion, Ring, THREAD_RING};

/// The attached region (null: none yet), and its length.
static REGION: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static REGION_LEN: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every attach and in a forked child: a thread's block is valid only for the
/// generation it was claimed in.
static GENERATION: AtomicUsize = AtomicUsize::new(1);

/// The attached record region (null: none), and its length.
static RECORDS: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static RECORDS_LEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The calling thread's block and the generation it belongs to.
    static BLOCK: Cell<(usize, Option<Block>)> = const { Cell::new((0, None)) };
    /// The calling thread's ring (null: none left), its id, and the generation.
    static RING: Cell<(usize, *const Ring<THREAD_RING>, u32)> =
        const { Cell::new((0, core::ptr::null(), 0)) };
}

/// The record view of the attached region, if any.
fn records() -> Option<RecordRegion> {
    let base = RECORDS.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: attached only after `from_raw` accepted it; mapped for the process's life.
    unsafe { RecordRegion::from_raw(base, RECORDS_LEN.load(Ordering::Relaxed)) }
}

/// Records a hit of probe `probe` with the six integer argument registers (`--print`): what
/// a recording probe's trampoline calls. The record goes into the calling thread's own ring
/// in the region the controller drains; a full ring, or a thread past the region's rings,
/// counts the record as lost instead. No lock, no allocation; one system call (`gettid`)
/// the first time a thread records.
///
/// # Safety
/// `regs` is the trampoline's register file, or null (the words are then zero).
#[no_mangle]
pub unsafe extern "C" fn probe_agent_record(regs: *mut X86Regs, probe: u64) {
    let generation = GENERATION.load(Ordering::Relaxed);
    let words = if regs.is_null() {
        [0; 6]
    } else {
        // SAFETY: the trampoline's register file, valid for the call.
        let r = unsafe { &*regs };
        [r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9]
    };
    let _ = RING.try_with(|cell| {
        let (g, mut ring, mut tid) = cell.get();
        if g != generation || ring.is_null() {
            // A thread's first record of a generation, or one without a ring: only these
            // look at (and check) the region.
            let Some(region) = records() else {
                return;
            };
            if g == generation {
                region.orphan();
                return;
            }
            ring = region
                .claim()
                .map_or(core::ptr::null(), |r| r as *const Ring<THREAD_RING>);
            // SAFETY: gettid has no arguments and cannot fail.
            tid = unsafe { libc::gettid() } as u32;
            cell.set((generation, ring, tid));
            if ring.is_null() {
                region.orphan();
                return;
            }
        }
        // SAFETY: a ring of the attached region, mapped for the process's life.
        let ring = unsafe { &*ring };
        let _ = ring.push(&Record {
            probe: u32::try_from(probe).unwrap_or(u32::MAX),
            tid,
            words,
        });
    });
}

/// Attaches the record region mapped at `base`, `len` bytes. Returns 0, or -1 if it is not
/// valid.
///
/// # Safety
/// `base` is mapped, `len` bytes, for the rest of the process's life.
#[no_mangle]
pub unsafe extern "C" fn probe_agent_attach_records(base: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    if unsafe { RecordRegion::from_raw(base, len) }.is_none() {
        return -1;
    }
    RECORDS_LEN.store(len, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    RECORDS.store(base, Ordering::Release);
    0
}

/// The counter view of the attached region, if any.
fn region() -> Option<Counters> {
    let base = REGION.load(Ordering::Acquire);
    if base.is_null() {
        return None;
    }
    let len = REGION_LEN.load(Ordering::Relaxed);
    // SAFETY: a region is attached only after `Counters::from_raw` accepted it, and stays
    // mapped for the life of the process (the agent never unmaps it).
    unsafe { Counters::from_raw(base, len) }.ok()
}

/// Counts a hit of probe `probe` on the calling thread: what a jump-patched probe's
/// trampoline calls, with the register file at the probe. No lock, no allocation, no system
/// call; does nothing until a region is attached.
///
/// # Safety
/// Called by a trampoline with a valid register file (unused here), or from Rust with any
/// pointer: it is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn probe_agent_hit(_regs: *mut X86Regs, probe: u64) {
    let generation = GENERATION.load(Ordering::Relaxed);
    // `try_with`: a hit while the thread's TLS is being torn down counts nothing.
    let _ = BLOCK.try_with(|b| {
        let block = match b.get() {
            (g, Some(block)) if g == generation => block,
            // Only a thread's first hit of a generation looks at (and checks) the region.
            _ => {
                let Some(c) = region() else {
                    return;
                };
                let block = c.claim();
                b.set((generation, Some(block)));
                block
            }
        };
        block.hit(u32::try_from(probe).unwrap_or(u32::MAX));
    });
}

/// Attaches the counter region mapped at `base`, `len` bytes: from then on hits are counted
/// there. Returns 0, or -1 if the region is not valid (nothing changes then).
///
/// # Safety
/// `base` is mapped, `len` bytes, for the rest of the process's life.
#[no_mangle]
pub unsafe extern "C" fn probe_agent_attach(base: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller's contract.
    if unsafe { Counters::from_raw(base, len) }.is_err() {
        return -1;
    }
    REGION_LEN.store(len, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    REGION.store(base, Ordering::Release);
    0
}

/// In a forked child: its thread claims a new block (its copy of the TLS names the parent
/// thread's).
extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The variable naming the counter region's descriptor for a spawned command.
pub const FD_VARIABLE: &str = "PROBE_AGENT_FD";
/// The variable naming the record region's descriptor.
pub const RECORDS_FD_VARIABLE: &str = "PROBE_AGENT_RECORDS_FD";

/// Maps the regions named by `PROBE_AGENT_FD` and `PROBE_AGENT_RECORDS_FD`, if set, closes
/// the descriptors and removes the variables; registers the fork handler.
fn init_from_environment() {
    // SAFETY: a handler with no preparation or parent part; registered once.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    if let Some((p, len)) = map_from_variable(FD_VARIABLE) {
        // SAFETY: mapped `len` bytes, never unmapped.
        if unsafe { probe_agent_attach(p, len) } != 0 {
            // SAFETY: our own mapping, not attached.
            unsafe { libc::munmap(p.cast(), len) };
        }
    }
    if let Some((p, len)) = map_from_variable(RECORDS_FD_VARIABLE) {
        // SAFETY: mapped `len` bytes, never unmapped.
        if unsafe { probe_agent_attach_records(p, len) } != 0 {
            // SAFETY: our own mapping, not attached.
            unsafe { libc::munmap(p.cast(), len) };
        }
    }
}

/// Maps the file whose descriptor the variable `name` gives, closes the descriptor and
/// removes the variable.
fn map_from_variable(name: &str) -> Option<(*mut u8, usize)> {
    let fd = std::env::var_os(name)?.to_str()?.parse::<i32>().ok()?;
    // SAFETY: removing a variable while the program has not started (a constructor, before
    // any thread of the program's own).
    unsafe { std::env::remove_var(name) };
    let mut st: libc::stat = unsafe_zeroed_stat();
    // SAFETY: fstat fills `st`; a bad descriptor only fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_size <= 0 {
        return None;
    }
    let len = st.st_size as usize;
    let mapped = map_shared(fd, len);
    // SAFETY: the descriptor is the controller's gift, not the program's: the mapping keeps
    // the region alive without it.
    unsafe { libc::close(fd) };
    Some((mapped?, len))
}

/// Maps `len` bytes of the file `fd` shared and read-write (the counter region, in the agent
/// and in the controller alike); `None` if the kernel refuses.
pub fn map_shared(fd: i32, len: usize) -> Option<*mut u8> {
    // SAFETY: a new mapping at an address the kernel picks: it replaces nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: all-zero is a valid `struct stat` to be filled.
    unsafe { core::mem::zeroed() }
}

/// The agent's constructor, run by the dynamic linker when the object is loaded.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = {
    extern "C" fn init() {
        init_from_environment();
    }
    init
};
