//! The real CPU as the oracle of jump patching (`probe_core::arch::x86_64::jump`): in a
//! forked child, libc functions get their entry replaced by a 5-byte `jmp` to a trampoline
//! that counts the call (`pushfq; lock inc qword [counter]; popfq`, the stand-in for a
//! probe's handler) and runs the displaced instructions, relocated, before jumping back.
//! Every call must return what the unpatched function returned and be counted once; with
//! the original bytes back, nothing more is counted.

use core::ffi::{c_void, CStr};
use std::ffi::CString;
use std::io::Read;

use probe_core::arch::x86_64::jump::{
    encode_displaced, entry_patch_offset, jump_bytes, jump_patch,
};
use probe_core::Addr;
use probe_tests::x86::elf::functions;

/// A function under test: its name and calls of it with fixed inputs, giving one number each.
struct Case {
    name: &'static str,
    calls: fn(*const c_void) -> Vec<i64>,
}

/// Safety of every `calls` below: the pointer is `dlsym`'s for that very name, called
/// with the C signature the C library documents for it.
macro_rules! call {
    ($f:expr, fn($($t:ty),* $(,)?) -> $r:ty, $($arg:expr),* $(,)?) => {{
        // SAFETY: see the macro's comment.
        let f: extern "C" fn($($t),*) -> $r = unsafe { core::mem::transmute($f) };
        f($($arg),*) as i64
    }};
}

extern "C" fn cmp_i32(a: *const c_void, b: *const c_void) -> i32 {
    // SAFETY: qsort and bsearch pass pointers to elements of the i32 arrays given below.
    let (a, b) = unsafe { (*(a as *const i32), *(b as *const i32)) };
    a.cmp(&b) as i32
}

/// A qsort/bsearch comparison.
type Cmp = extern "C" fn(*const c_void, *const c_void) -> i32;

const S: &CStr = c"  -12345xyz";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "abs",
            calls: |f| {
                [-7, 0, 7, i32::MIN + 1]
                    .iter()
                    .map(|&x| call!(f, fn(i32) -> i32, x))
                    .collect()
            },
        },
        Case {
            name: "labs",
            calls: |f| {
                [-7i64, 0, 1 << 40]
                    .iter()
                    .map(|&x| call!(f, fn(i64) -> i64, x))
                    .collect()
            },
        },
        Case {
            name: "atoi",
            calls: |f| vec![call!(f, fn(*const i8) -> i32, S.as_ptr())],
        },
        Case {
            name: "atol",
            calls: |f| vec![call!(f, fn(*const i8) -> i64, S.as_ptr())],
        },
        Case {
            name: "strtol",
            calls: |f| {
                [10, 16, 36]
                    .iter()
                    .map(|&b| {
                        call!(
                            f,
                            fn(*const i8, *mut *mut i8, i32) -> i64,
                            S.as_ptr(),
                            core::ptr::null_mut(),
                            b
                        )
                    })
                    .collect()
            },
        },
        Case {
            name: "strtoul",
            calls: |f| {
                vec![call!(
                    f,
                    fn(*const i8, *mut *mut i8, i32) -> u64,
                    c"4096".as_ptr(),
                    core::ptr::null_mut(),
                    0
                )]
            },
        },
        Case {
            name: "toupper",
            calls: |f| {
                [b'a', b'Z', b'1']
                    .iter()
                    .map(|&c| call!(f, fn(i32) -> i32, i32::from(c)))
                    .collect()
            },
        },
        Case {
            name: "tolower",
            calls: |f| {
                [b'a', b'Z', b'1']
                    .iter()
                    .map(|&c| call!(f, fn(i32) -> i32, i32::from(c)))
                    .collect()
            },
        },
        Case {
            name: "ffs",
            calls: |f| {
                [0, 1, 0x80, i32::MIN]
                    .iter()
                    .map(|&x| call!(f, fn(i32) -> i32, x))
                    .collect()
            },
        },
        Case {
            name: "rand_r",
            calls: |f| {
                let mut seed = 42u32;
                (0..3)
                    .map(|_| call!(f, fn(*mut u32) -> i32, &mut seed))
                    .collect()
            },
        },
        Case {
            name: "qsort",
            calls: |f| {
                let mut v = [5i32, -1, 9, 3, 3, 0];
                let cmp: Cmp = cmp_i32;
                type Qsort = extern "C" fn(*mut c_void, usize, usize, Cmp);
                // SAFETY: `f` is dlsym's `qsort`, of this C signature.
                let qsort: Qsort = unsafe { core::mem::transmute(f) };
                qsort(v.as_mut_ptr().cast(), v.len(), 4, cmp);
                v.iter().map(|&x| i64::from(x)).collect()
            },
        },
        Case {
            name: "bsearch",
            calls: |f| {
                let v = [1i32, 3, 5, 7, 9];
                let cmp: Cmp = cmp_i32;
                [1i32, 4, 9]
                    .iter()
                    .map(|k| {
                        let p = call!(
                            f,
                            fn(*const c_void, *const c_void, usize, usize, Cmp) -> *const c_void,
                            (k as *const i32).cast(),
                            v.as_ptr().cast(),
                            v.len(),
                            4,
                            cmp
                        );
                        if p == 0 {
                            -1
                        } else {
                            (p - v.as_ptr() as i64) / 4
                        }
                    })
                    .collect()
            },
        },
        Case {
            name: "getenv",
            calls: |f| {
                let p = call!(f, fn(*const i8) -> *const i8, c"PROBE_JUMP_ORACLE".as_ptr());
                // SAFETY: getenv returned a NUL-terminated string of the environment or null.
                vec![if p == 0 {
                    -1
                } else {
                    unsafe { CStr::from_ptr(p as *const i8) }.to_bytes().len() as i64
                }]
            },
        },
    ]
}

/// Where libc is and which file it is: (load bias, path), from `dladdr` of `abs`.
fn libc_of(sym: *const c_void) -> (u64, String) {
    // SAFETY: all-zero is a valid Dl_info to fill; sym is a valid address in libc.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    assert_ne!(unsafe { libc::dladdr(sym, &mut info) }, 0);
    // SAFETY: dladdr filled dli_fname with a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    (info.dli_fbase as u64, path)
}

fn dlsym(name: &str) -> *const c_void {
    let c = CString::new(name).unwrap();
    // SAFETY: RTLD_DEFAULT and a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) as *const c_void }
}

/// An RWX page within +/-2 GiB of `near` (below it first), or `None`.
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
    // SAFETY: the pages hold libc's text in this (forked, single-threaded) child; they stay
    // executable, and only the bytes of one entry are changed while no thread runs them.
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

/// The child's work: patch, call, compare, count, restore. One line per function.
fn child(bodies: &std::collections::HashMap<u64, Vec<u8>>, bias: u64) -> String {
    let mut report = String::new();
    for case in cases() {
        let f = dlsym(case.name);
        if f.is_null() {
            report += &format!("{} missing\n", case.name);
            continue;
        }
        let Some(body) = bodies.get(&(f as u64 - bias)) else {
            report += &format!("{} no-symbol\n", case.name);
            continue;
        };
        let want = (case.calls)(f);
        let patch = match jump_patch(body, entry_patch_offset(body)) {
            Ok(p) => p,
            Err(r) => {
                report += &format!("{} refused {r:?}\n", case.name);
                continue;
            }
        };
        let Some(page) = page_near(f as u64) else {
            report += &format!("{} no-page\n", case.name);
            continue;
        };
        // The trampoline: counter at +0, code at +64.
        let code = page + 64;
        let mut t = vec![0x9c]; // pushfq
                                // lock inc qword [rip+d]: 7 + 1 bytes; d from the end of the instruction.
        let end = code + 1 + 8;
        let d = (page as i64 - end as i64) as i32;
        t.extend_from_slice(&[0xf0, 0x48, 0xff, 0x05]);
        t.extend_from_slice(&d.to_le_bytes());
        t.push(0x9d); // popfq
        let mut out = [0u8; 128];
        let n = encode_displaced(
            body,
            &patch,
            Addr(f as u64),
            Addr(code + t.len() as u64),
            &mut out,
        )
        .unwrap();
        t.extend_from_slice(&out[..n]);
        // SAFETY: the page is ours, RWX, 4096 bytes; the trampoline is under 256.
        unsafe { core::ptr::copy_nonoverlapping(t.as_ptr(), code as *mut u8, t.len()) };
        let entry = f as u64 + patch.at as u64;
        // SAFETY: reading the entry's bytes of a mapped function.
        let original: Vec<u8> =
            unsafe { core::slice::from_raw_parts(entry as *const u8, 5) }.to_vec();
        poke_code(
            entry,
            &jump_bytes(&patch, Addr(f as u64), Addr(code)).unwrap(),
        );
        let got = (case.calls)(f);
        let got2 = (case.calls)(f);
        // SAFETY: the counter is the page's first word, written only by the trampoline.
        let counted = unsafe { core::ptr::read_volatile(page as *const u64) };
        poke_code(entry, &original);
        let _ = (case.calls)(f);
        // SAFETY: as above.
        let after = unsafe { core::ptr::read_volatile(page as *const u64) };
        // Two runs of the case's calls (qsort's one call gives all of the sorted array).
        let per_run = if case.name == "qsort" {
            1
        } else {
            want.len() as u64
        };
        let expected_count = 2 * per_run;
        let ok = got == want && got2 == want && counted == expected_count && after == counted;
        report += &format!(
            "{} {} displaced={} insns={} rip={} counted={counted} want={expected_count} after={after} results={:?}/{:?}\n",
            case.name,
            if ok { "ok" } else { "WRONG" },
            patch.displaced,
            patch.insns,
            patch.rip_relative,
            want,
            got
        );
    }
    report
}

#[test]
fn jump_patched_libc_functions_run_exactly_as_before_and_count_every_call() {
    std::env::set_var("PROBE_JUMP_ORACLE", "yes");
    let (bias, path) = libc_of(dlsym("abs"));
    let bodies: std::collections::HashMap<u64, Vec<u8>> =
        functions(&path).unwrap().into_iter().collect();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only runs this test's code (no other thread exists in it; the
    // functions it calls take no lock another thread could have held at the fork, and the
    // little it allocates comes from a heap nobody else uses in it), then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let report = child(&bodies, bias);
        // SAFETY: writing our report to the pipe and leaving without unwinding.
        unsafe {
            libc::write(fds[1], report.as_ptr().cast(), report.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut report = String::new();
    // SAFETY: fds[0] is our read end; File takes it over.
    let mut rd = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    rd.read_to_string(&mut report).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    println!("{report}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child died: status {status:#x}\n{report}"
    );
    assert!(!report.contains("WRONG"), "{report}");
    let patched = report.lines().filter(|l| l.contains(" ok ")).count();
    assert!(
        patched >= 8,
        "only {patched} functions patched and checked:\n{report}"
    );
}
