//! The documentation cannot drift from the code: every YAML block in the README and in
//! `docs/` that is a tokenproxy config (its top-level keys are config sections) is validated
//! as one, and every other YAML block (Kubernetes manifests, workflows) must at least parse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

const SECTIONS: [&str; 8] = [
    "proxy",
    "admin",
    "tokens",
    "clients",
    "upstreams",
    "cache",
    "access_log",
    "tracing",
];

fn pages() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Each ```yaml block of `text`, with the line it starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((i + 1, String::new())),
            Some((start, body)) if line.trim_start() == "```" => {
                blocks.push((*start, std::mem::take(body)));
                current = None;
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Sets every `${VAR}` a block names, so that expansion has something to expand.
fn set_variables(block: &str) {
    for part in block.split("${").skip(1) {
        if let Some(name) = part.split('}').next() {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                std::env::set_var(name, "placeholder");
            }
        }
    }
}

#[test]
fn every_config_in_the_documentation_is_valid() {
    let mut configs = 0;
    let mut others = 0;
    let mut problems = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (line, block) in yaml_blocks(&text) {
            let where_ = format!("{}:{line}", page.display());
            let value: serde_yaml::Value = match serde_yaml::from_str(&block) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{where_}: not YAML: {e}"));
                    continue;
                }
            };
            let is_config = value.as_mapping().is_some_and(|m| {
                !m.is_empty()
                    && m.keys()
                        .all(|k| k.as_str().is_some_and(|k| SECTIONS.contains(&k)))
            });
            if !is_config {
                others += 1;
                continue;
            }
            configs += 1;
            set_variables(&block);
            if let Err(e) = tokenproxy::Config::from_yaml(&block) {
                problems.push(format!("{where_}: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        configs >= 8,
        "only {configs} config blocks found: is the extraction broken?"
    );
    assert!(others >= 1, "no manifest or workflow blocks found");
}

#[test]
fn the_extraction_finds_blocks_and_their_lines() {
    let text = "intro\n```yaml\nproxy: {}\n```\ntext\n```sh\nls\n```\n```yaml\na: 1\n```\n";
    let blocks = yaml_blocks(text);
    assert_eq!(
        blocks,
        vec![(2, "proxy: {}\n".into()), (9, "a: 1\n".into())]
    );
}
