//! Jump patching in this very process, for the CPU oracle test of
//! `probe_core::arch::x86_64::jump` and its benchmark: find a libc function and its body,
//! get a trampoline page within reach, write a counting or a handler-calling trampoline,
//! patch the entry, and put the original bytes back. Only for a process (or forked child)
//! in which no other thread runs the patched function meanwhile.

use core::ffi::{c_void, CStr};
use std::collections::HashMap;
use std::ffi::CString;

use probe_core::arch::x86_64::jump::{
    encode_displaced, encode_trampoline, entry_patch_offset, jump_bytes, jump_patch, ExtendedState,
    HandlerCall, JumpPatch, JumpRefusal,
};
use probe_core::Addr;

use super::elf::functions;

/// The address `dlsym` gives for `name` (null if none).
pub fn dlsym(name: &str) -> *const c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: RTLD_DEFAULT and a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) as *const c_void }
}

/// The load bias and path of the object holding address `addr` (`dladdr`).
fn object_of(addr: usize) -> (u64, String) {
    // SAFETY: all-zero is a valid Dl_info to fill; sym is an address dladdr may look up.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    assert_ne!(unsafe { libc::dladdr(addr as *const c_void, &mut info) }, 0);
    // SAFETY: dladdr filled dli_fname with a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    (info.dli_fbase as u64, path)
}

/// The functions of the C library loaded here, by address in this process.
pub fn libc_functions() -> HashMap<u64, Vec<u8>> {
    let (bias, path) = object_of(dlsym("abs") as usize);
    functions(&path)
        .unwrap()
        .into_iter()
        .map(|(vaddr, body)| (vaddr + bias, body))
        .collect()
}

/// The cheapest way to keep the vector state across a handler at a function's entry: the
/// argument registers at the widest width this CPU passes vectors in (the controller's
/// choice, `platform_linux::inproc::argument_state`).
pub fn extended_state() -> ExtendedState {
    platform_linux::inproc::argument_state()
}

/// The whole-state choice: `xsavec` where the CPU has it, else `xsave`, else `fxsave`.
pub fn whole_extended_state() -> ExtendedState {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return ExtendedState::Fxsave;
    }
    // CPUID leaf 0xD exists where xsave does.
    let sub1 = core::arch::x86_64::__cpuid_count(0xd, 1);
    if sub1.eax & 2 != 0 {
        ExtendedState::Xsavec(sub1.ebx)
    } else {
        ExtendedState::Xsave(core::arch::x86_64::__cpuid_count(0xd, 0).ebx)
    }
}

/// An RWX page within +/-2 GiB of `near` (below it), or `None`.
fn page_near(near: u64) -> Option<u64> {
    for k in 1..2048u64 {
        let hint = (near & !0xfff).checked_sub(k << 20)?;
        // SAFETY: an anonymous mapping at a free address (MAP_FIXED_NOREPLACE never replaces).
        let p = unsafe {
            libc::mmap(
                hint as *mut c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED && p as u64 == hint {
            return Some(hint);
        }
    }
    None
}

/// Writes `bytes` over code at `at` (made writable for the copy).
fn poke_code(at: u64, bytes: &[u8]) {
    let start = at & !0xfff;
    let end = (at + bytes.len() as u64 + 0xfff) & !0xfff;
    // SAFETY: the pages hold the text of a loaded object; they stay executable, and only the
    // bytes of one entry change while no thread runs them (the module's rule).
    unsafe {
        assert_eq!(
            libc::mprotect(
                start as *mut c_void,
                (end - start) as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC
            ),
            0
        );
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
    }
}

/// What the trampoline does before the displaced instructions.
#[derive(Clone, Copy, Debug)]
pub enum Tramp {
    /// `pushfq; lock inc qword [counter]; popfq`.
    Count,
    /// Save everything and call a handler.
    Handler {
        /// `handler(regs, ctx)`.
        handler: u64,
        /// Its `ctx`: this word, or the trampoline page when `None`.
        ctx: Option<u64>,
        /// How the vector state is kept around it.
        state: ExtendedState,
    },
}

/// A function entry patched with a jump to its trampoline; [`Patched::restore`] undoes it.
#[derive(Debug)]
pub struct Patched {
    /// The analysis.
    pub patch: JumpPatch,
    /// The trampoline page: its first word is the counter of [`Tramp::Count`].
    pub page: u64,
    entry: u64,
    original: [u8; 5],
}

/// Why [`patch_entry`] did not patch.
#[derive(Debug)]
pub enum NotPatched {
    /// The body is not known.
    NoSymbol,
    /// The analysis refused the entry.
    Refused(JumpRefusal),
    /// No page within reach.
    NoPage,
}

/// Patches the entry of the function at `f` (its body from `bodies`).
pub fn patch_entry(
    f: *const c_void,
    bodies: &HashMap<u64, Vec<u8>>,
    tramp: Tramp,
) -> Result<Patched, NotPatched> {
    let body = bodies.get(&(f as u64)).ok_or(NotPatched::NoSymbol)?;
    let patch = jump_patch(body, entry_patch_offset(body)).map_err(NotPatched::Refused)?;
    let page = page_near(f as u64).ok_or(NotPatched::NoPage)?;
    let func = Addr(f as u64);
    // Counter at +0, code at +64.
    let code = page + 64;
    let mut t = Vec::new();
    let mut out = [0u8; 1024];
    match tramp {
        Tramp::Handler {
            handler,
            ctx,
            state,
        } => {
            let call = HandlerCall {
                handler,
                ctx: ctx.unwrap_or(page),
                state,
            };
            let n = encode_trampoline(body, &patch, func, Addr(code), &call, &mut out).unwrap();
            t.extend_from_slice(&out[..n]);
        }
        Tramp::Count => {
            // pushfq; lock inc qword [rip+d] (8 bytes, d from its end); popfq
            t.push(0x9c);
            let end = code + 1 + 8;
            let d = (page as i64 - end as i64) as i32;
            t.extend_from_slice(&[0xf0, 0x48, 0xff, 0x05]);
            t.extend_from_slice(&d.to_le_bytes());
            t.push(0x9d);
            let n = encode_displaced(body, &patch, func, Addr(code + t.len() as u64), &mut out)
                .unwrap();
            t.extend_from_slice(&out[..n]);
        }
    }
    assert!(t.len() <= 4096 - 64);
    // SAFETY: the page is ours, RWX, 4096 bytes; the trampoline fits after the counter.
    unsafe { core::ptr::copy_nonoverlapping(t.as_ptr(), code as *mut u8, t.len()) };
    let entry = f as u64 + patch.at as u64;
    let mut original = [0u8; 5];
    // SAFETY: reading the entry's five bytes of a mapped function.
    unsafe { core::ptr::copy_nonoverlapping(entry as *const u8, original.as_mut_ptr(), 5) };
    poke_code(entry, &jump_bytes(&patch, func, Addr(code)).unwrap());
    Ok(Patched {
        patch,
        page,
        entry,
        original,
    })
}

impl Patched {
    /// The trampoline's counter (the page's first word).
    pub fn count(&self) -> u64 {
        // SAFETY: the page is mapped for the life of the process; its first word is the counter.
        unsafe { core::ptr::read_volatile(self.page as *const u64) }
    }

    /// Puts the original bytes back.
    pub fn restore(&self) {
        poke_code(self.entry, &self.original);
    }
}
