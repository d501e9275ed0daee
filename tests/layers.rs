//! The architecture's one rule, held by a test: modules import in one direction.
//!
//! `src/lib.rs` declares the top-level modules in layers, lowest first. A module may use
//! `crate::X` only for an `X` in a lower layer, and no set of files may import each other in
//! a circle (through `crate::`, `super::`, `self::` or child-module paths, so a parent that
//! uses its child while the child uses the parent is a circle too). The sources are parsed
//! with syn: comments, strings and `#[cfg(test)]` items are not imports, wherever they are.
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

/// What one file uses: every path that starts at `crate`, `super` or `self`, or at a child
/// module it declares (`mod x;` then `use x::Y`, or `x::f()`), in `use` items, expressions,
/// types, and the tokens of macro calls. Items under `#[cfg(test)]`, comments and strings are
/// not uses. Parsed by syn, so a `//` inside a string or a test module in the middle of a file
/// changes nothing.
#[derive(Default)]
struct Uses {
    children: BTreeSet<String>,
    paths: Vec<Vec<String>>,
    /// Paths of `pub use` items: a parent re-exporting its children's names is their facade,
    /// not a user of them, so these make no edge into the file's own children.
    reexports: Vec<Vec<String>>,
}

fn uses_of(text: &str) -> Uses {
    let file = syn::parse_file(text).unwrap_or_else(|e| panic!("not Rust: {e}"));
    let mut uses = Uses::default();
    for item in &file.items {
        if let syn::Item::Mod(m) = item {
            if m.content.is_none() && !is_test(&m.attrs) {
                uses.children.insert(m.ident.to_string());
            }
        }
    }
    syn::visit::Visit::visit_file(&mut uses, &file);
    let children = uses.children.clone();
    let relevant = |p: &Vec<String>| {
        // A bare `self` is a receiver, not a module.
        p.len() > 1
            && p.first().is_some_and(|first| {
                matches!(first.as_str(), "crate" | "super" | "self") || children.contains(first)
            })
    };
    uses.paths.retain(relevant);
    uses.reexports.retain(relevant);
    uses
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => out.push([prefix.clone(), vec![n.ident.to_string()]].concat()),
        syn::UseTree::Rename(r) => out.push([prefix.clone(), vec![r.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, out);
            }
        }
    }
}

/// `a::b::c` sequences in a macro call's tokens (`format!("{}", crate::x::Y)`).
fn token_paths(tokens: proc_macro2::TokenStream, out: &mut Vec<Vec<String>>) {
    use proc_macro2::TokenTree;
    let mut current: Vec<String> = Vec::new();
    let mut colons = 0;
    for t in tokens {
        match t {
            TokenTree::Ident(i) if current.is_empty() || colons == 2 => {
                current.push(i.to_string());
                colons = 0;
            }
            TokenTree::Punct(p) if p.as_char() == ':' && !current.is_empty() && colons < 2 => {
                colons += 1
            }
            other => {
                if current.len() > 1 {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
                colons = 0;
                match other {
                    TokenTree::Group(g) => token_paths(g.stream(), out),
                    TokenTree::Ident(i) => current.push(i.to_string()),
                    _ => {}
                }
            }
        }
    }
    if current.len() > 1 {
        out.push(current);
    }
}

impl<'ast> syn::visit::Visit<'ast> for Uses {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let into = match u.vis {
            syn::Visibility::Inherited => &mut self.paths,
            _ => &mut self.reexports,
        };
        use_paths(&u.tree, &mut Vec::new(), into);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    /// `pub(super)` and `pub(crate)` name no item.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        token_paths(m.tokens.clone(), &mut self.paths);
        syn::visit::visit_macro(self, m);
    }
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

/// Resolves a path used in `module` to an absolute module path (`super` climbs; `self` and
/// a child's name start at `module`).
fn absolute(module: &[String], path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = Vec::new();
    let mut rest = path;
    if rest.first().map(String::as_str) == Some("crate") {
        rest = &rest[1..];
    } else {
        base = module.to_vec();
        if rest.first().map(String::as_str) == Some("self") {
            rest = &rest[1..];
        }
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
        let uses = uses_of(text);
        let reexports = uses.reexports.iter().map(|p| (p, true));
        for (path, reexport) in uses.paths.iter().map(|p| (p, false)).chain(reexports) {
            let target = absolute(&module, path);
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
            let facade = reexport && target.starts_with(&module);
            if let Some(file) = file_of(&files, &target).filter(|f| f != &module && !facade) {
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

    // What the text-based checker missed: code after a test module, a path after a `//`
    // inside a string, a path in a macro call, and a parent and child that use each other.
    let after_tests = src(&[
        (
            "low.rs",
            "#[cfg(test)]\nmod tests {}\nfn f() { let _ = \"http://x\"; crate::high::g() }",
        ),
        ("high.rs", ""),
    ]);
    let found = violations(lib, &after_tests);
    assert!(
        found.iter().any(|p| p.contains("crate::high::g")),
        "{found:?}"
    );
    let in_macro = src(&[
        ("low.rs", "fn f() { println!(\"{}\", crate::high::NAME) }"),
        ("high.rs", ""),
    ]);
    assert_eq!(violations(lib, &in_macro).len(), 1);
    let parent_child = src(&[
        ("low.rs", ""),
        (
            "high/mod.rs",
            "mod child;\nuse child::C;\npub struct P;\nfn f(_: C) {}",
        ),
        ("high/child.rs", "use super::P;\npub struct C(P);"),
    ]);
    let found = violations(lib, &parent_child);
    assert_eq!(found, ["import cycle: high -> high::child"], "{found:?}");
    // A parent that only re-exports its children's names is their facade, not a user.
    let child_only = src(&[
        ("low.rs", ""),
        (
            "high/mod.rs",
            "mod child;\nmod other;\npub use child::C;\npub use other::O;",
        ),
        ("high/child.rs", "use super::other::O;\npub struct C(O);"),
        ("high/other.rs", "pub struct O;"),
    ]);
    assert_eq!(violations(lib, &child_only), Vec::<String>::new());
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
