//! The C and C++ test programs of `tests/programs/`, built at test time (never by `cargo
//! build` or `cargo install`, which need Rust alone) with the `cc` crate, a dev-dependency.
//!
//! They go to `<target>/tmp/probe-test-programs/`, rebuilt only when a source or its
//! command line changed. Test binaries run at once (cargo runs them one by one, but a user may
//! start several) take a lock file first, so no one compiles over another's program or runs a
//! half-written one; each program is written under a temporary name and renamed into place.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// (output name, source, C++, extra flags)
const PROGRAMS: &[(&str, &str, bool, &[&str])] = &[
    ("hits", "hits.c", false, &["-fPIE", "-pie"]),
    ("hits-nopie", "hits.c", false, &["-fno-pie", "-no-pie"]),
    (
        "hits-stripped",
        "hits.c",
        false,
        &["-fPIE", "-pie", "-s", "-rdynamic"],
    ),
    ("int3-loop", "int3_loop.c", false, &["-pthread"]),
    ("forker", "forker.c", false, &["-pthread"]),
    // A program that uses ptrace itself, for --no-follow.
    ("selftrace", "selftrace.c", false, &["-fPIE", "-pie"]),
    ("threads", "threads.c", false, &["-pthread"]),
    // Counts through the in-process agent's handler (issue 11).
    (
        "agent-records",
        "agent_records.c",
        false,
        &["-pthread", "-ldl"],
    ),
    ("agent-bench", "agent_bench.c", false, &["-ldl"]),
    (
        "agent-signals",
        "agent_signals.c",
        false,
        &["-pthread", "-ldl"],
    ),
    ("agent-user", "agent_user.c", false, &["-pthread", "-ldl"]),
    (
        "agent-phases",
        "agent_phases.c",
        false,
        &["-pthread", "-ldl"],
    ),
    (
        "workload",
        "workload.c",
        false,
        &["-fPIE", "-pie", "-pthread", "-ldl"],
    ),
    ("libplugin.so", "plugin.c", false, &["-fPIC", "-shared"]),
    (
        "ret-prog",
        "ret_prog.c",
        false,
        &["-fPIE", "-pie", "-pthread"],
    ),
    ("maps", "maps.c", false, &["-fPIE", "-pie", "-ldl"]),
    ("maps-static", "maps.c", false, &["-static", "-no-pie"]),
    ("usdt-demo", "usdt_demo.c", false, &["-fPIE", "-pie"]),
    (
        "usdt-demo-nopie",
        "usdt_demo.c",
        false,
        &["-fno-pie", "-no-pie"],
    ),
    // Return probes through C++ exceptions, with the unwinder in libgcc_s and linked in.
    ("ret-exc", "ret_exc.cc", true, &["-fPIE", "-pie"]),
    (
        "ret-exc-static-rt",
        "ret_exc.cc",
        true,
        &["-fPIE", "-pie", "-static-libgcc", "-static-libstdc++"],
    ),
    // Demangled names (issue 13, item 9).
    ("cxx-names", "names.cc", true, &["-fPIE", "-pie"]),
    // Functions probe must skip for known reasons, and a known number of mallocs (issue 13,
    // item 1); with -DMANY, 140 000 more functions than a process's slot area holds.
    ("skips", "skips.c", false, &["-fPIE", "-pie"]),
    ("many", "skips.c", false, &["-fPIE", "-pie", "-DMANY"]),
    // A known call chain main -> a -> b -> c for `--stack`, with and without frame pointers.
    (
        "stack-fp",
        "stack.c",
        false,
        &["-fPIE", "-pie", "-fno-omit-frame-pointer"],
    ),
    (
        "stack-nofp",
        "stack.c",
        false,
        &["-fPIE", "-pie", "-fomit-frame-pointer"],
    ),
    // No `.eh_frame` for the chain: the walk must follow the frame pointers.
    (
        "stack-fp-nocfi",
        "stack.c",
        false,
        &[
            "-fPIE",
            "-pie",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
    ),
];

/// The directory holding every built test program (built on first use).
pub fn programs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-test-programs");
        build_all(&out);
        out
    })
}

/// The path of test program `name` (`hits`, `workload`, `libplugin.so`, ...).
pub fn program(name: &str) -> PathBuf {
    programs_dir().join(name)
}

fn build_all(out: &Path) {
    std::fs::create_dir_all(out).expect("create the test programs' directory");
    let lock = File::create(out.join(".lock")).expect("create the lock file");
    platform_linux::sys::lock_exclusive(&lock).expect("lock the test programs' directory");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    for (name, file, cpp, flags) in PROGRAMS {
        let source = src.join(file);
        let mut cmd = compiler(*cpp);
        cmd.arg("-O1").arg("-g").args(*flags);
        build_one(out, name, &source, cmd);
    }
    drop(lock);
}

/// Builds `out/name` from `source` with `cmd` (completed with `-o TMP SOURCE`), unless it
/// is newer than the source and was built by the same command; written under a temporary
/// name and renamed into place. The caller holds the directory's lock.
fn build_one(out: &Path, name: &str, source: &Path, mut cmd: Command) -> PathBuf {
    let dst = out.join(name);
    let stamp = out.join(format!(".{name}.cmd"));
    let line = format!("{cmd:?} {}", source.display());
    if !up_to_date(&dst, source, &stamp, &line) {
        let tmp = out.join(format!(".{name}.tmp"));
        cmd.arg("-o").arg(&tmp).arg(source);
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running the compiler for {name}: {e}: {cmd:?}"));
        assert!(
            status.success(),
            "compiling {} failed: {cmd:?}",
            source.display()
        );
        std::fs::rename(&tmp, &dst).expect("move the built program into place");
        std::fs::write(&stamp, &line).expect("write the command stamp");
    }
    dst
}

/// Whether `dst` is newer than `source` and was built by the same command line.
fn up_to_date(dst: &Path, source: &Path, stamp: &Path, line: &str) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(dst), modified(source)) {
        (Some(d), Some(s)) if d >= s => std::fs::read_to_string(stamp).is_ok_and(|old| old == line),
        _ => false,
    }
}

/// The system's C (or C++) compiler as the `cc` crate finds it (`CC`/`CXX` honoured).
fn compiler(cpp: bool) -> Command {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    cc::Build::new()
        .cpp(cpp)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .target(&target)
        .host(&target)
        .opt_level(1)
        .warnings(false)
        .extra_warnings(false)
        .try_get_compiler()
        .unwrap_or_else(|e| {
            panic!(
                "the tests build C programs and need a C compiler (gcc or clang, g++ for C++) \
                 and <sys/sdt.h> (systemtap-sdt-dev): {e}"
            )
        })
        .to_command()
}

/// The path of Rust test program `name`, built on first use from `tests/programs/SOURCE`
/// with the `rustc` that builds the tests (`RUSTC`, else the one on `PATH`) and `flags`, into
/// the directory of the C programs; rebuilt only when the source or the command changed.
pub fn rust_program(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let out = programs_dir();
    let lock = File::create(out.join(".lock")).expect("create the lock file");
    platform_linux::sys::lock_exclusive(&lock).expect("lock the test programs' directory");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(source);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let mut cmd = Command::new(rustc);
    cmd.args(flags);
    let dst = build_one(out, name, &src, cmd);
    drop(lock);
    dst
}

/// (output name, source) of the Go test programs, built with `go build` when `go` is there.
const GO_PROGRAMS: &[(&str, &str)] = &[("gorec", "gorec.go")];

/// The path of Go test program `name` (`gorec`), built on first use with the `go` on
/// `PATH` into the same directory as the C programs, offline (`GO111MODULE=off`: a single
/// file of the standard library alone), with its build cache inside the target directory.
/// `Err` says why it cannot be built (no `go`); a failed build panics.
pub fn go_program(name: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let out = programs_dir();
    BUILT
        .get_or_init(|| build_go(out))
        .clone()
        .map(|()| out.join(name))
}

fn build_go(out: &Path) -> Result<(), String> {
    let version = Command::new("go").arg("version").output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`go version` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => return Err(format!("no `go` on PATH ({e}): install golang-go")),
    }
    let lock = File::create(out.join(".lock")).expect("create the lock file");
    platform_linux::sys::lock_exclusive(&lock).expect("lock the test programs' directory");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let gohome = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-test-go");
    for (name, file) in GO_PROGRAMS {
        let source = src.join(file);
        let dst = out.join(name);
        let mut cmd = Command::new("go");
        cmd.arg("build")
            .arg("-o")
            .env("GOCACHE", gohome.join("cache"))
            .env("GOPATH", gohome.join("gopath"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0");
        let stamp = out.join(format!(".{name}.cmd"));
        let line = format!("{cmd:?} {}", source.display());
        if up_to_date(&dst, &source, &stamp, &line) {
            continue;
        }
        let tmp = out.join(format!(".{name}.tmp"));
        cmd.arg(&tmp).arg(&source);
        let o = cmd
            .output()
            .unwrap_or_else(|e| panic!("running go build for {file}: {e}: {cmd:?}"));
        assert!(
            o.status.success(),
            "go build of {file} failed: {cmd:?}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::rename(&tmp, &dst).expect("move the built program into place");
        std::fs::write(&stamp, &line).expect("write the command stamp");
    }
    drop(lock);
    Ok(())
}

/// The in-process agent's shared object (`probe-agent`), built by cargo beside the test or
/// benchmark binary that asks (in its `deps/` directory or the one above).
pub fn agent_so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libprobe_agent.so"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libprobe_agent.so not found beside {}", exe.display()))
}
