//! Finds the line of a key path (`upstreams.inventory.client`) in block-style YAML text.
//!
//! serde reports lines for syntax and shape errors, but cross-checks (an unknown client, two
//! listeners on one address) run on parsed values that no longer know where they came from.
//! Config files are small and written in block style, so walking the text by indentation is
//! enough to point at the right line; where it cannot, the message simply has no line.

/// 1-based line number of the key at `path`, if found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut parent_indent: Option<usize> = None;
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    for segment in path {
        found = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = line.len() - content.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break; // left the parent's block
            }
            if key_of(content) == Some(segment) {
                found = Some((i, indent));
                break;
            }
        }
        let (i, indent) = found?;
        parent_indent = Some(indent);
        start = i + 1;
    }
    found.map(|(i, _)| i + 1)
}

fn key_of(content: &str) -> Option<&str> {
    let content = content.strip_prefix("- ").unwrap_or(content);
    let (key, _) = content.split_once(':')?;
    Some(key.trim().trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "clients:\n  idp:\n    client_id: a\n# note\nupstreams:\n  inv:\n    client: idp\n  other:\n    client: x\n";

    #[test]
    fn finds_nested_keys_within_their_parent() {
        assert_eq!(line_of(YAML, &["upstreams", "inv", "client"]), Some(7));
        assert_eq!(line_of(YAML, &["upstreams", "other", "client"]), Some(9));
        assert_eq!(line_of(YAML, &["clients", "idp"]), Some(2));
        assert_eq!(line_of(YAML, &["clients", "idp", "client"]), None);
    }
}
