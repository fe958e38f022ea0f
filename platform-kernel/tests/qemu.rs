//! Boot the test kernel (`kernel/`) under QEMU on several CPUs and check what it printed
//! over the serial port and how it exited.
//!
//! The kernel is built here, for `x86_64-unknown-none`, into this test's own target
//! directory. Each test is skipped, with the reason printed, only where
//! `qemu-system-x86_64` is missing; a kernel that fails to build fails the tests.

use core::time::Duration;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// isa-debug-exit statuses: the kernel writes 0x10 (success) or 0x11 (failure).
const EXIT_SUCCESS: i32 = 0x10 << 1 | 1;
const EXIT_FAILURE: i32 = 0x11 << 1 | 1;

/// A hang guard only (TCG on a loaded machine is slow; a healthy run takes seconds).
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

fn qemu() -> Option<&'static str> {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then_some("qemu-system-x86_64")
}

macro_rules! require_qemu {
    () => {
        match qemu() {
            Some(q) => q,
            None => {
                eprintln!(
                    "skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
                );
                return;
            }
        }
    };
}

/// Build the kernel once per test binary; its path.
fn kernel() -> &'static Path {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel");
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // From the kernel's directory so that its .cargo/config.toml (target, flags) applies;
        // without the outer build's flags.
        let out = Command::new(cargo)
            .current_dir(&dir)
            .args(["build", "--release", "--target-dir"])
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the test kernel failed (is the x86_64-unknown-none target installed? \
             rustup target add x86_64-unknown-none):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join("x86_64-unknown-none/release/probe-test-kernel")
    })
}

/// TCG with one host thread for all virtual CPUs (they still interleave at translation-block
/// boundaries). Multi-threaded TCG (`PK_QEMU_MTTCG=1`) keeps running a stale translation of
/// an `int3` after the kernel restored the original byte and serialised every CPU: the
/// kernel detects that (an `int3` executed a million times that memory no longer holds) and
/// fails, rather than spinning.
fn accel() -> &'static str {
    if std::env::var_os("PK_QEMU_MTTCG").is_some() {
        "tcg,thread=multi"
    } else {
        "tcg,thread=single"
    }
}

/// One boot: what the serial port printed and QEMU's exit status.
struct Boot {
    serial: String,
    status: i32,
    /// Complete serial lines with the wall-clock time since QEMU started at which the host
    /// first saw each (polled every 100 ms: a coarse clock for long phases only).
    seen: Vec<(Duration, String)>,
}

impl Boot {
    /// When the first line starting with `prefix` was seen.
    fn seen_at(&self, prefix: &str) -> Option<Duration> {
        self.seen
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|&(t, _)| t)
    }
}

fn boot(qemu: &str, cpus: u32, cmdline: &str) -> Boot {
    let kernel = kernel();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "serial-{cpus}-{}-{}.txt",
        cmdline.replace(' ', "_"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new(qemu)
        .args(["-machine", "pc", "-accel", accel(), "-m", "256M", "-smp"])
        .arg(cpus.to_string())
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu");
    let start = Instant::now();
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&log) {
            let at = start.elapsed();
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            for line in complete.lines().skip(seen.len()) {
                seen.push((at, line.trim_end_matches('\r').to_owned()));
            }
        }
        if let Some(s) = child.try_wait().expect("wait for qemu") {
            break s;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let serial = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the kernel did not finish in {BOOT_TIMEOUT:?}; serial so far:\n{serial}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let serial = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .replace("\r\n", "\n");
    let _ = std::fs::remove_file(&log);
    let status = status.code().unwrap_or(-1);
    if status != EXIT_SUCCESS && status != EXIT_FAILURE {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        eprintln!("qemu exited with {status}: {err}");
    }
    Boot {
        serial,
        status,
        seen,
    }
}

/// The value after `prefix` on the line that starts with it.
fn field<'a>(serial: &'a str, prefix: &str) -> Option<&'a str> {
    serial
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
}

/// FNV-1a, as the kernel computes it.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The bytes the ELF file loads at `addr..addr + len` (one PT_LOAD segment).
fn image_bytes(elf: &[u8], addr: u64, len: u64) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "an ELF64 file");
    let phoff = u64_at(0x20) as usize;
    let phentsize = usize::from(u16_at(0x36));
    for i in 0..usize::from(u16_at(0x38)) {
        let ph = phoff + i * phentsize;
        let (ty, off, vaddr, filesz) =
            (u32_at(ph), u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32));
        if ty == 1 && vaddr <= addr && addr + len <= vaddr + filesz {
            let start = (off + addr - vaddr) as usize;
            return elf[start..start + len as usize].to_vec();
        }
    }
    panic!("no PT_LOAD segment holds {addr:#x}+{len:#x}");
}

fn check_run(cpus: u32) {
    let qemu = require_qemu!();
    let b = boot(qemu, cpus, "");
    let s = &b.serial;
    assert_eq!(b.status, EXIT_SUCCESS, "kernel failed:\n{s}");
    assert!(s.contains("all tests passed"), "{s}");
    for c in 0..cpus {
        assert!(
            s.contains(&format!("cpu {c} up\n")),
            "cpu {c} missing:\n{s}"
        );
    }
    assert!(s.contains(&format!("smp: {cpus} cpus")), "{s}");
    let iters = 2000 * u64::from(cpus);
    for kind in ["emulate", "boost", "riprel", "step", "call", "privileged"] {
        let want = format!("ok: {kind} hits {iters} of {iters} from {cpus} cpus");
        assert!(s.contains(&want), "no {want:?} in:\n{s}");
        let each = format!("ok: {kind} hits 2000 on each cpu");
        assert!(s.contains(&each), "no {each:?} in:\n{s}");
    }
    assert!(
        s.contains("ok: text identical to the image after unregister"),
        "{s}"
    );
    assert!(s.contains("ok: timer ticked on every cpu"), "{s}");
    for line in [
        "ok: returns (maxactive 1000): every return value right",
        "ok: returns: none missed with room for all, returns on every cpu",
        "ok: returns: maxactive 4 misses calls deeper than it",
        "ok: returns: text identical to the image",
    ] {
        assert!(s.contains(line), "no {line:?} in:\n{s}");
    }
    assert!(
        s.contains("ok: reentry: every call returned the right value"),
        "{s}"
    );
    assert!(
        s.contains("ok: reentry: text identical to the image"),
        "{s}"
    );
    let re = s
        .lines()
        .any(|l| l.starts_with("ok: reentry: ") && l.contains("probe hits from the timer"));
    assert!(re, "no reentry counts in:\n{s}");
    if cpus > 1 {
        for line in [
            "ok: stress: every probed call returned the right value",
            "ok: stress: no handler ran after its unregister returned (0 late calls)",
            "ok: stress: 8000 registrations and unregistrations",
            "ok: stress: no probes left",
            "ok: stress: text identical to the image",
        ] {
            assert!(s.contains(line), "no {line:?} in:\n{s}");
        }
    }

    // The text at the end hashes like the image file's bytes, not only like the kernel's
    // own copy of them.
    let image = field(s, "image: base ").expect("image line");
    let mut words = image.split_whitespace();
    let base = u64::from_str_radix(words.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(words.next(), Some("len"));
    let len = words.next().unwrap().trim_start_matches("0x");
    let len = u64::from_str_radix(len, 16).unwrap();
    let elf = std::fs::read(kernel()).unwrap();
    let want = format!("{:#018x}", fnv1a(&image_bytes(&elf, base, len)));
    assert_eq!(field(s, "text fnv "), Some(want.as_str()), "{s}");
}

#[test]
fn boots_and_probes_on_2_cpus() {
    check_run(2);
}

#[test]
fn boots_and_probes_on_4_cpus() {
    check_run(4);
}

/// Boot with `cmdline`, whose handler does what no trap handler may: the kernel must stop with
/// failure and print `message`.
fn dies_loudly(cmdline: &str, message: &str) {
    let qemu = require_qemu!();
    let b = boot(qemu, 2, cmdline);
    assert_eq!(b.status, EXIT_FAILURE, "{}", b.serial);
    assert!(
        b.serial.contains(message),
        "no {message:?} in:\n{}",
        b.serial
    );
}

#[test]
fn allocation_in_a_trap_handler_fails_loudly() {
    dies_loudly("alloc-in-trap", "bytes from a trap handler");
}

#[test]
fn writer_lock_in_a_trap_handler_fails_loudly() {
    dies_loudly(
        "lock-in-trap",
        "the core's writer lock taken from a trap handler",
    );
}

/// The in-kernel benchmark (not a timed test: it asserts only that it ran). Run it with
/// `cargo test -p platform-kernel --test qemu -- --ignored --nocapture benchmark`.
#[test]
#[ignore = "a benchmark; run explicitly"]
fn benchmark() {
    let qemu = require_qemu!();
    let b = boot(qemu, 2, "bench");
    assert_eq!(b.status, EXIT_SUCCESS, "{}", b.serial);
    for line in b.serial.lines().filter(|l| l.starts_with("bench: ")) {
        println!("{line}");
    }
    for kind in [
        "bare int3 round trip",
        "emulate hit",
        "boost hit",
        "riprel hit",
        "step hit",
    ] {
        assert!(
            b.serial.contains(&format!("bench: {kind}: ")),
            "{}",
            b.serial
        );
    }
    for n in [1, 1000, 100_000] {
        assert!(
            b.serial
                .contains(&format!("bench: boost hit with {n} probes registered: ")),
            "{}",
            b.serial
        );
    }
    assert!(
        b.serial.contains("bench: text identical to the image"),
        "{}",
        b.serial
    );
    // Wall-clock time of the longest registration and of the unregistration, as the host
    // saw the lines appear.
    let phase = |from: &str, to: &str| match (b.seen_at(from), b.seen_at(to)) {
        (Some(a), Some(z)) => format!("{:.1} s", z.saturating_sub(a).as_secs_f64()),
        _ => "not seen".to_owned(),
    };
    println!(
        "host: registering 99000 probes took {} wall-clock; unregistering 100000 took {}; \
         the whole boot {:.1} s",
        phase(
            "bench: registering 99000 more",
            "bench: registered 99000 probes"
        ),
        phase("bench: unregistering", "bench: unregistered"),
        b.seen.last().map_or(0.0, |(t, _)| t.as_secs_f64())
    );
}

/// The stress run with the timer hitting a probe whenever it interrupts a CPU in a slot,
/// while CPU 0 registers and unregisters (so slots are freed and reused).
#[test]
fn reentry_during_registration_stress_on_4_cpus() {
    let qemu = require_qemu!();
    let b = boot(qemu, 4, "reentry-stress");
    let s = &b.serial;
    assert_eq!(b.status, EXIT_SUCCESS, "kernel failed:\n{s}");
    for line in [
        "ok: stress: every probed call returned the right value",
        "ok: stress: no handler ran after its unregister returned (0 late calls)",
        "ok: reentry-stress: text identical to the image",
    ] {
        assert!(s.contains(line), "no {line:?} in:\n{s}");
    }
    let counted = s.lines().any(|l| {
        l.starts_with("ok: reentry-stress: ") && l.ends_with("reentries, each hit counted")
    });
    assert!(counted, "{s}");
}
