//! The real CPU as the oracle of jump patching (`probe_core::arch::x86_64::jump`): in a
//! forked child, libc functions get their entry replaced by a 5-byte `jmp` to a trampoline
//! that counts the call (`pushfq; lock inc qword [counter]; popfq`, the stand-in for a
//! probe's handler) and runs the displaced instructions, relocated, before jumping back.
//! Every call must return what the unpatched function returned and be counted once; with
//! the original bytes back, nothing more is counted.

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::io::Read;

use probe_core::arch::x86_64::jump::ExtendedState;
use probe_core::arch::x86_64::X86Regs;
use probe_tests::x86::jump::{
    dlsym, extended_state, libc_functions, patch_entry, whole_extended_state, Tramp,
};

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

/// Calls of an `int f(int)` with each of `inputs`.
fn int_calls(f: *const c_void, inputs: &[i32]) -> Vec<i64> {
    inputs
        .iter()
        .map(|&x| call!(f, fn(i32) -> i32, x))
        .collect()
}

const S: &CStr = c"  -12345xyz";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "abs",
            calls: |f| int_calls(f, &[-7, 0, 7, i32::MIN + 1]),
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
            calls: |f| int_calls(f, &[b'a', b'Z', b'1'].map(i32::from)),
        },
        Case {
            name: "tolower",
            calls: |f| int_calls(f, &[b'a', b'Z', b'1'].map(i32::from)),
        },
        Case {
            name: "ffs",
            calls: |f| int_calls(f, &[0, 1, 0x80, i32::MIN]),
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
            name: "ldexp",
            calls: |f| {
                type Ldexp = extern "C" fn(f64, i32) -> f64;
                // SAFETY: `f` is dlsym's `ldexp`, of this C signature.
                let ldexp: Ldexp = unsafe { core::mem::transmute(f) };
                [(1.5, 3), (-0.75, -2), (3.0, 0)]
                    .iter()
                    .map(|&(x, n)| ldexp(x, n).to_bits() as i64)
                    .collect()
            },
        },
        Case {
            name: "copysign",
            calls: |f| {
                type Copysign = extern "C" fn(f64, f64) -> f64;
                // SAFETY: `f` is dlsym's `copysign`, of this C signature.
                let copysign: Copysign = unsafe { core::mem::transmute(f) };
                [(1.5, -1.0), (-2.0, 3.0)]
                    .iter()
                    .map(|&(x, y)| copysign(x, y).to_bits() as i64)
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

static HANDLER_SAW: AtomicU64 = AtomicU64::new(0);
static WRONG_IP: AtomicU64 = AtomicU64::new(0);
static EXPECT_IP: AtomicU64 = AtomicU64::new(0);

/// The probe handler the full trampolines call: counts the call in the page's counter (its
/// `ctx`), checks the register file's `rip`, and wipes the vector registers that carry
/// arguments (the trampoline must keep the probed function's vector arguments).
extern "C" fn on_hit(regs: *mut X86Regs, ctx: u64) {
    // SAFETY: the trampoline passes its saved register file, valid for the call.
    let regs = unsafe { &mut *regs };
    if regs.rip != EXPECT_IP.load(Ordering::SeqCst) || regs.rsp & 7 != 0 {
        WRONG_IP.fetch_add(1, Ordering::SeqCst);
    }
    HANDLER_SAW.fetch_add(1, Ordering::SeqCst);
    // SAFETY: ctx is the trampoline page, whose first word is the counter.
    unsafe { (*(ctx as *const AtomicU64)).fetch_add(1, Ordering::SeqCst) };
    // SAFETY: only clobbers vector registers, which the asm declares.
    unsafe {
        core::arch::asm!(
            "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2",
            "pcmpeqd xmm3, xmm3", "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5",
            "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
        );
    }
}

/// The child's work: patch, call, compare, count, restore. One line per function.
fn child(bodies: &HashMap<u64, Vec<u8>>, state: Option<ExtendedState>) -> String {
    let mut report = String::new();
    for case in cases() {
        let f = dlsym(case.name);
        if f.is_null() {
            report += &format!("{} missing\n", case.name);
            continue;
        }
        let want = (case.calls)(f);
        let tramp = match state {
            Some(state) => Tramp::Handler {
                handler: on_hit as *const () as u64,
                ctx: None,
                state,
            },
            None => Tramp::Count,
        };
        let p = match patch_entry(f, bodies, tramp) {
            Ok(p) => p,
            Err(e) => {
                report += &format!("{} not patched: {e:?}\n", case.name);
                continue;
            }
        };
        HANDLER_SAW.store(0, Ordering::SeqCst);
        WRONG_IP.store(0, Ordering::SeqCst);
        EXPECT_IP.store(f as u64 + p.patch.at as u64, Ordering::SeqCst);
        let got = (case.calls)(f);
        let got2 = (case.calls)(f);
        let counted = p.count();
        p.restore();
        let _ = (case.calls)(f);
        let after = p.count();
        // Two runs of the case's calls (qsort's one call gives all of the sorted array).
        let per_run = if case.name == "qsort" {
            1
        } else {
            want.len() as u64
        };
        let expected_count = 2 * per_run;
        let handler_ok = state.is_none()
            || (HANDLER_SAW.load(Ordering::SeqCst) == expected_count
                && WRONG_IP.load(Ordering::SeqCst) == 0);
        let ok = got == want
            && got2 == want
            && counted == expected_count
            && after == counted
            && handler_ok;
        report += &format!(
            "{} {} displaced={} insns={} rip={} counted={counted} want={expected_count} after={after} results={:?}/{:?}\n",
            case.name,
            if ok { "ok" } else { "WRONG" },
            p.patch.displaced,
            p.patch.insns,
            p.patch.rip_relative,
            want,
            got
        );
    }
    report
}

/// Forks, runs [`child`] there, returns its report (asserting it exited cleanly).
fn in_child(state: Option<ExtendedState>) -> String {
    std::env::set_var("PROBE_JUMP_ORACLE", "yes");
    let bodies = libc_functions();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only runs this test's code (no other thread exists in it; the
    // functions it calls take no lock another thread could have held at the fork, and the
    // little it allocates comes from a heap nobody else uses in it), then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let report = child(&bodies, state);
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
        patched >= 10,
        "only {patched} functions patched and checked:\n{report}"
    );
    report
}

#[test]
fn jump_patched_libc_functions_run_exactly_as_before_and_count_every_call() {
    in_child(None);
}

/// The whole trampoline: registers and vector state saved, a Rust handler called with the
/// register file (it sees the probed address and wipes xmm0-7), everything restored. The
/// float functions' arguments arrive in xmm registers, which the handler's wipe would
/// change if the trampoline did not keep them.
#[test]
fn full_trampolines_call_a_handler_and_keep_every_register() {
    // The argument vector registers only, at the CPU's widest width...
    in_child(Some(extended_state()));
    // ...and the whole extended state.
    in_child(Some(whole_extended_state()));
}
