//! Demangled C++ and Rust names (issue 13, item 9): `probe list` shows them, specs and globs
//! name functions by them (`rp::deep`, `'*::parse*'`, `'libstdc++:operator new*'`), output
//! shows them, and the mangled names keep working. Against `tests/programs/names.cc` and
//! `tests/programs/rp.rs` (built here with the `rustc` that builds the tests, both manglings).

mod common;
use common::{counts, probe, program, text};
use std::path::PathBuf;

fn trace(specs: &[&str], cmd: &[&str]) -> (String, Vec<(String, u64)>) {
    let mut v = vec!["trace"];
    v.extend_from_slice(specs);
    v.push("--");
    v.extend_from_slice(cmd);
    let out = probe(&v);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{v:?}: {}\n{stdout}",
        text(&out.stderr)
    );
    let c = counts(&stdout);
    (stdout, c)
}

/// `rp.rs` built with legacy (`"legacy"`) or v0 (`"v0"`) symbol mangling.
fn rust_program(mangling: &str) -> PathBuf {
    let mut flags = vec!["--crate-name", "rp", "-C", "opt-level=1"];
    // Legacy is the default (naming it needs `-Z unstable-options`).
    if mangling == "v0" {
        flags.push("-Csymbol-mangling-version=v0");
    }
    common::programs::rust_program(&format!("rp-{mangling}"), "rp.rs", &flags)
}

#[test]
fn list_shows_demangled_cxx_names_and_the_mangled_ones_on_request() {
    let prog = program("cxx-names");
    let p = prog.to_str().unwrap();
    let out = probe(&["list", p, "*::parse*"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let names: Vec<&str> = listed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .map(|s| Box::leak(s.into_boxed_str()) as &str)
        .collect();
    assert_eq!(
        names,
        [
            "ns::Parser::parse(char const*)",
            "ns::parse_line(char const*)"
        ],
        "{listed}"
    );
    let out = probe(&["list", p, "rp::deep", "--mangled"]);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("rp::deep(long)  # _ZN2rp4deepEl"),
        "{listed}"
    );
    // A substring matches the mangled name too.
    let out = probe(&["list", p, "_ZN2rp"]);
    assert!(text(&out.stdout).contains("rp::deep(long)"));
}

#[test]
fn cxx_functions_are_traced_by_demangled_name_glob_and_mangled_name() {
    let prog = program("cxx-names");
    let p = prog.to_str().unwrap();
    // No file and a `::`: a function of the traced program.
    let (stdout, c) = trace(&["rp::deep", "*::parse*"], &[p, "7"]);
    assert_eq!(
        c,
        [
            ("cxx-names:ns::Parser::parse(char const*)".to_owned(), 7),
            ("cxx-names:ns::parse_line(char const*)".to_owned(), 7),
            ("cxx-names:rp::deep(long)".to_owned(), 7),
        ],
        "{stdout}"
    );
    // The name with its parameters, the mangled name, and a return probe by name.
    let deep = format!("{p}:rp::deep(long)");
    let mangled = format!("{p}:_ZN2ns10parse_lineEPKc");
    let ret = format!("uretprobe:{p}:ns::Parser::parse");
    let (stdout, c) = trace(&[&deep, &mangled, &ret], &[p, "4"]);
    assert_eq!(
        c,
        [
            ("cxx-names:ns::parse_line(char const*)".to_owned(), 4),
            ("cxx-names:rp::deep(long)".to_owned(), 4),
            (
                "uretprobe:cxx-names:ns::Parser::parse(char const*)".to_owned(),
                4
            ),
        ],
        "{stdout}"
    );
    assert!(stdout.contains("sum "), "{stdout}");
}

#[test]
fn operator_new_in_libstdcxx_by_glob() {
    let prog = program("cxx-names");
    let p = prog.to_str().unwrap();
    let (stdout, c) = trace(&["libstdc++:operator new*"], &[p, "9"]);
    let single = c
        .iter()
        .find(|(n, _)| n.ends_with(":operator new(unsigned long)"))
        .unwrap_or_else(|| panic!("no operator new(unsigned long) in:\n{stdout}"));
    assert!(single.0.starts_with("libstdc++.so"), "{stdout}");
    assert_eq!(single.1, 9, "{stdout}");
    assert_eq!(c.len(), 1, "only the plain one is called: {stdout}");
    // A name with brackets is still a name, not a glob.
    let out = probe(&[
        "trace",
        "libstdc++:operator new[](unsigned long)",
        "libstdc++:operator delete[](void*)",
        "--",
        p,
        "9",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("attached 2 probes"), "{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(
        counts(&stdout),
        [
            ("libstdc++.so.6.0.30:operator delete[](void*)".to_owned(), 0),
            (
                "libstdc++.so.6.0.30:operator new[](unsigned long)".to_owned(),
                0
            ),
        ]
        .map(|(n, c)| (
            n.replace("libstdc++.so.6.0.30", single.0.split(':').next().unwrap()),
            c
        )),
        "neither is called: {stdout}"
    );
    // The other overloads (`operator new[]`, aligned, nothrow) were probed too, uncalled.
    let out = probe(&["list", "libstdc++", "operator new*"]);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("  operator new[](unsigned long)\n"),
        "{listed}"
    );
}

#[test]
fn rust_functions_by_demangled_name_in_both_manglings() {
    for m in ["legacy", "v0"] {
        let prog = rust_program(m);
        let p = prog.to_str().unwrap();
        let file = format!("rp-{m}");
        let out = probe(&["list", p, "rp::*"]);
        let listed = text(&out.stdout);
        assert!(listed.contains("  rp::deep\n"), "{m}: {listed}");
        assert!(
            listed.contains("  rp::parse::parse_word\n"),
            "{m}: {listed}"
        );
        assert!(
            !listed.contains("17h"),
            "{m}: the hash is left out: {listed}"
        );
        let (stdout, c) = trace(&["rp::deep", "*::parse*"], &[p, "6"]);
        assert_eq!(
            c,
            [
                (format!("{file}:rp::deep"), 6),
                (format!("{file}:rp::parse::parse_word"), 6),
            ],
            "{m}: {stdout}"
        );
        // The mangled symbol still names the function.
        let out = probe(&["list", p, "rp::deep", "--mangled"]);
        let t = text(&out.stdout);
        let line = t.lines().find(|l| l.contains("rp::deep  # ")).unwrap();
        let mangled = line.rsplit("# ").next().unwrap();
        assert!(mangled.starts_with(if m == "v0" { "_R" } else { "_ZN" }));
        let spec = format!("{p}:{mangled}");
        let (stdout, c) = trace(&[&spec], &[p, "3"]);
        assert_eq!(c, [(format!("{file}:rp::deep"), 3)], "{m}: {stdout}");
    }
}
