//! The module graph of each crate has no cycle: when two files import each other, the shared
//! piece belongs in a third, lower file (smoltcp's `wire` below `iface`).
//!
//! A module depends on every module its `crate::` paths name (outside comments and test
//! modules). A path through a re-export (`crate::arch::Reject`, re-exported by `arch/mod.rs`
//! from `arch/types.rs`) counts as a dependency on the module that defines the item. Edges to
//! a module's own ancestors or descendants are facades, not dependencies, and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments and without `#[cfg(test)]`-style test modules at the end.
fn code(src: &str) -> String {
    let cut = ["#[cfg(test)]\nmod ", "#[cfg(all(test"]
        .iter()
        .filter_map(|m| src.find(m))
        .min()
        .unwrap_or(src.len());
    src[..cut]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b::C` paths in `src` (with `{..}` groups expanded one level).
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        let end = rest
            .find(|c: char| {
                !(c.is_alphanumeric()
                    || c == '_'
                    || c == ':'
                    || c == '{'
                    || c == '}'
                    || c == ','
                    || c == ' '
                    || c == '\n')
            })
            .unwrap_or(rest.len());
        let text = &rest[..end];
        let (head, group) = match text.find('{') {
            Some(b) => {
                let group = &text[b + 1..];
                (
                    &text[..b],
                    Some(&group[..group.find('}').unwrap_or(group.len())]),
                )
            }
            None => (text.split([' ', '\n', ',', '}']).next().unwrap_or(""), None),
        };
        let base: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        match group {
            Some(g) => {
                for item in g.split(',') {
                    let mut p = base.clone();
                    p.extend(
                        item.trim()
                            .split("::")
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                    out.push(p);
                }
            }
            None => out.push(base),
        }
    }
    out
}

fn cycles_of(root: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rs_files(root, &mut files);
    let mods: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            (
                module_of(root, f),
                code(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    // Re-exports: (module, item) -> the submodule that defines it.
    let mut reexport: BTreeMap<(String, String), String> = BTreeMap::new();
    for (m, src) in &mods {
        for line in src.lines().map(str::trim) {
            let Some(rest) = line
                .strip_prefix("pub use ")
                .or_else(|| line.strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            let rest = rest.trim_end_matches(';');
            let rest = rest.strip_prefix("self::").unwrap_or(rest);
            let (sub, items) = match rest.split_once("::") {
                Some(x) => x,
                None => continue,
            };
            let child = if m.is_empty() {
                sub.to_owned()
            } else {
                format!("{m}::{sub}")
            };
            if !mods.contains_key(&child) {
                continue;
            }
            for it in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                let it = it.trim().rsplit("::").next().unwrap_or("").to_owned();
                reexport.insert((m.clone(), it), child.clone());
            }
        }
    }
    let related = |a: &str, b: &str| {
        a.is_empty()
            || b.is_empty()
            || a == b
            || a.starts_with(&format!("{b}::"))
            || b.starts_with(&format!("{a}::"))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, src) in &mods {
        let deps = graph.entry(m.clone()).or_default();
        for path in crate_paths(src) {
            // The longest prefix that is a module, then through a re-export of the next name.
            let mut target = None;
            for k in (1..=path.len()).rev() {
                let cand = path[..k].join("::");
                if mods.contains_key(&cand) {
                    target = Some(match path.get(k) {
                        Some(item) => reexport
                            .get(&(cand.clone(), item.clone()))
                            .cloned()
                            .unwrap_or(cand),
                        None => cand,
                    });
                    break;
                }
            }
            if let Some(t) = target {
                if !related(m, &t) {
                    deps.insert(t);
                }
            }
        }
    }
    strongly_connected(&graph)
}

/// Tarjan's algorithm: the components of more than one module.
fn strongly_connected(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct S<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let l = s.low[v].min(s.low[w]);
                s.low.insert(v, l);
            } else if s.on.contains(w) {
                let l = s.low[v].min(s.index[w]);
                s.low.insert(v, l);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn probe_core_has_no_module_cycle() {
    assert_eq!(cycles_of(&src("probe-core")), Vec::<Vec<String>>::new());
}

#[test]
fn platform_mock_has_no_module_cycle() {
    assert_eq!(cycles_of(&src("platform-mock")), Vec::<Vec<String>>::new());
}

#[test]
fn the_checker_finds_a_cycle() {
    let dir = std::env::temp_dir().join(format!("probe-cycles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "use crate::a::A;\npub struct B;\nfn f(x: bool) -> u8 { if x { crate::a::ONE\n} else { 2 } }\n",
    )
    .unwrap();
    let c = cycles_of(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c, vec![vec!["a".to_owned(), "b".to_owned()]]);
}

#[test]
fn platform_kernel_has_no_module_cycle() {
    assert_eq!(
        cycles_of(&src("platform-kernel")),
        Vec::<Vec<String>>::new()
    );
}

#[test]
fn probe_agent_has_no_module_cycle() {
    assert_eq!(cycles_of(&src("probe-agent")), Vec::<Vec<String>>::new());
}

/// Not yet a rule (issue 14, item 2): prints platform-linux's cycles, for the record.
#[test]
fn platform_linux_cycles_are_listed() {
    for c in cycles_of(&src("platform-linux")) {
        println!("platform-linux module cycle: {}", c.join(" <-> "));
    }
}
