//! Builds the C test programs in `tests/programs/` into `$OUT_DIR/programs/` and tells the
//! crate where they are (`PROBE_TEST_PROGRAMS`). Used by the integration tests and by
//! `probe-bench`; the `probe` binary itself does not need them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("programs");
    std::fs::create_dir_all(&out).expect("create programs dir");
    let src = PathBuf::from("tests/programs");
    println!("cargo:rerun-if-changed=tests/programs");
    println!("cargo:rerun-if-changed=build.rs");
    // (output name, source, extra flags)
    let programs: &[(&str, &str, &[&str])] = &[
        ("hits", "hits.c", &["-fPIE", "-pie"]),
        ("hits-nopie", "hits.c", &["-fno-pie", "-no-pie"]),
        (
            "hits-stripped",
            "hits.c",
            &["-fPIE", "-pie", "-s", "-rdynamic"],
        ),
        ("int3-loop", "int3_loop.c", &["-pthread"]),
        ("forker", "forker.c", &["-pthread"]),
        ("threads", "threads.c", &["-pthread"]),
        (
            "workload",
            "workload.c",
            &["-fPIE", "-pie", "-pthread", "-ldl"],
        ),
        ("libplugin.so", "plugin.c", &["-fPIC", "-shared"]),
        ("ret-prog", "ret_prog.c", &["-fPIE", "-pie", "-pthread"]),
        ("usdt-demo", "usdt_demo.c", &["-fPIE", "-pie"]),
        ("usdt-demo-nopie", "usdt_demo.c", &["-fno-pie", "-no-pie"]),
    ];
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(1)
        .get_compiler();
    for (name, file, flags) in programs {
        let mut cmd: Command = compiler.to_command();
        cmd.arg("-O1")
            .arg("-g")
            .args(*flags)
            .arg("-o")
            .arg(out.join(name))
            .arg(src.join(file));
        let status = cmd.status().expect("run the C compiler");
        assert!(status.success(), "compiling {file} failed: {cmd:?}");
    }
    // C++ programs: return probes through exceptions, with the unwinder in libgcc_s and
    // linked into the executable.
    let cxx = cc::Build::new()
        .cpp(true)
        .cargo_metadata(false)
        .opt_level(1)
        .get_compiler();
    let cxx_programs: &[(&str, &str, &[&str])] = &[
        ("ret-exc", "ret_exc.cc", &["-fPIE", "-pie"]),
        (
            "ret-exc-static-rt",
            "ret_exc.cc",
            &["-fPIE", "-pie", "-static-libgcc", "-static-libstdc++"],
        ),
    ];
    for (name, file, flags) in cxx_programs {
        let mut cmd: Command = cxx.to_command();
        cmd.arg("-O1")
            .arg("-g")
            .args(*flags)
            .arg("-o")
            .arg(out.join(name))
            .arg(src.join(file));
        let status = cmd.status().expect("run the C++ compiler");
        assert!(status.success(), "compiling {file} failed: {cmd:?}");
    }
    println!("cargo:rustc-env=PROBE_TEST_PROGRAMS={}", out.display());
}
