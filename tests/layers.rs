//! The architecture's one rule, held by a test: modules import in one direction.
//!
//! `src/lib.rs` declares the top-level modules in layers, lowest first. A module may use
//! `crate::X` only for an `X` in a lower layer, and no set of files may import each other in
//! a circle (through `crate::` or `super::` paths). Doc comments and `#[cfg(test)]` sections
//! are not imports and are left out.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module: `lib.rs` lists them in groups, lowest first, each
/// group opened by a `// layer:` comment.
fn declared_layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut layer = 0;
    let mut out = BTreeMap::new();
    for line in lib_rs.lines().map(str::trim) {
        if line.starts_with("// layer:") {
            layer += 1;
        } else if let Some(m) = line.strip_prefix("pub mod ") {
            out.insert(m.trim_end_matches(';').to_string(), layer);
        }
    }
    out
}

/// Source without comments and without the `#[cfg(test)]` part at the end of a file.
fn code_of(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::…` and `super::…` path in `code`, as segments; a `{a, b::c}` group gives one
/// path per member.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !is_ident(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let (paths, end) = parse_path(&bytes, i);
        out.extend(paths);
        i = end.max(i + 1);
    }
    out
}

/// Parses `a::b::{c, d::e}` starting at `i`; returns the expanded paths and where it ended.
fn parse_path(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect::<String>());
        }
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                let mut depth = 0;
                let open = i;
                while i < chars.len() {
                    match chars[i] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                let inner: String = chars[open + 1..i.min(chars.len())].iter().collect();
                let mut paths = Vec::new();
                for member in split_top_level(&inner) {
                    let member: Vec<char> = member.trim().chars().collect();
                    let (sub, _) = parse_path(&member, 0);
                    for s in sub {
                        let mut p = prefix.clone();
                        p.extend(s);
                        paths.push(p);
                    }
                }
                return (paths, i + 1);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().filter(|m| !m.trim().is_empty()).collect()
}

/// The module path of a source file: `src/proxy/plan.rs` is `[proxy, plan]`,
/// `src/config/mod.rs` is `[config]`, `src/lib.rs` is `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// Resolves a path used in `module` to an absolute module path (`super` climbs).
fn absolute(module: &[String], path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = Vec::new();
    let mut rest = path;
    if rest.first().map(String::as_str) == Some("crate") {
        rest = &rest[1..];
    } else {
        base = module.to_vec();
        while rest.first().map(String::as_str) == Some("super") {
            base.pop();
            rest = &rest[1..];
        }
    }
    base.extend(rest.iter().cloned());
    base
}

/// The deepest module of `path` that is a file in `files`.
fn file_of(files: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| files.contains_key(m))
}

/// Every violation in a source tree given as (relative path, text) pairs.
fn violations(lib_rs: &str, sources: &[(PathBuf, String)]) -> Vec<String> {
    let layers = declared_layers(lib_rs);
    let rank = |m: &str| layers.get(m).copied();
    let files: BTreeMap<Vec<String>, PathBuf> = sources
        .iter()
        .map(|(p, _)| (module_of(p), p.clone()))
        .collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (rel, text) in sources {
        let module = module_of(rel);
        let Some(top) = module.first() else { continue };
        for path in paths_in(&code_of(text)) {
            let target = absolute(&module, &path);
            let Some(used) = target.first() else { continue };
            if used != top {
                match (rank(top), rank(used)) {
                    (Some(a), Some(b)) if b < a => {}
                    _ => problems.push(format!(
                        "{}: uses crate::{} from its own, a higher or no layer ({top})",
                        rel.display(),
                        target.join("::")
                    )),
                }
            }
            if let Some(file) = file_of(&files, &target).filter(|f| f != &module) {
                edges.entry(module.clone()).or_default().insert(file);
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Import cycles among files, each reported once by its smallest member.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut ring: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    let min = (0..ring.len())
                        .min_by_key(|&i| ring[i].clone())
                        .unwrap_or(0);
                    ring.rotate_left(min);
                    found.insert(format!("import cycle: {}", ring.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn modules_import_only_lower_layers_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    read_tree(&src, &src, &mut sources);
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = declared_layers(&lib);
    assert!(
        layers.len() > 10 && layers.values().max() > Some(&5),
        "lib.rs declares the layers"
    );
    let problems = violations(&lib, &sources);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_upward_imports_and_cycles() {
    let lib = "// layer: a\npub mod low;\npub mod peer;\n// layer: b\npub mod high;\n";
    let src = |files: &[(&str, &str)]| -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    };
    let fine = src(&[
        ("low.rs", "pub struct A;"),
        ("high/mod.rs", "use crate::low::A;\nmod x;"),
        (
            "high/x.rs",
            "use super::super::low::A; // crate::high::nothing\n",
        ),
    ]);
    assert_eq!(violations(lib, &fine), Vec::<String>::new());

    let upward = src(&[
        ("low.rs", "use crate::{high::B, low::A};"),
        ("high.rs", "pub struct B;"),
    ]);
    let found = violations(lib, &upward);
    assert!(
        found.iter().any(|p| p.contains("crate::high::B")),
        "{found:?}"
    );

    let circle = src(&[
        ("low.rs", ""),
        ("high/mod.rs", "mod a;\nmod b;"),
        ("high/a.rs", "use super::b::X;"),
        ("high/b.rs", "pub fn f() { super::a::g() }"),
    ]);
    let found = violations(lib, &circle);
    assert_eq!(found, ["import cycle: high::a -> high::b"], "{found:?}");

    let in_tests = src(&[
        ("low.rs", "#[cfg(test)]\nmod tests { use crate::high::B; }"),
        ("high.rs", ""),
    ]);
    assert!(violations(lib, &in_tests).is_empty());

    let undeclared = src(&[("low.rs", "use crate::elsewhere::C;")]);
    assert_eq!(violations(lib, &undeclared).len(), 1);

    let peers = src(&[("low.rs", "fn f() { crate::peer::g() }"), ("peer.rs", "")]);
    assert_eq!(
        violations(lib, &peers).len(),
        1,
        "peers do not import each other"
    );
}

/// Files of a few hundred lines with one job each: none over 400.
#[test]
fn no_source_file_is_over_400_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    read_tree(&src, &src, &mut sources);
    let long: Vec<String> = sources
        .iter()
        .map(|(p, text)| (p, text.lines().count()))
        .filter(|(_, n)| *n > 400)
        .map(|(p, n)| format!("src/{} has {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}
