//! `${VAR}` expansion in config values.
//!
//! Only the braced form is expanded, so a `$` in a secret or a URL is left alone; `$$` is a
//! literal `$`. An unset variable is an error that names it (validation reports its line).

/// Expands `${VAR}` from the environment; `$$` is a literal `$`. Returns the missing name.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some((name, r)) = after.strip_prefix('{').and_then(|a| a.split_once('}')) {
            out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
            rest = r;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_braced_variables_only() {
        std::env::set_var("TOKENPROXY_TEST_ENV_A", "alpha");
        assert_eq!(
            expand_env("x-${TOKENPROXY_TEST_ENV_A}-y").unwrap(),
            "x-alpha-y"
        );
        assert_eq!(
            expand_env("cost $5 and $$6 and $HOME").unwrap(),
            "cost $5 and $6 and $HOME"
        );
        assert_eq!(
            expand_env("${TOKENPROXY_TEST_ENV_A}${TOKENPROXY_TEST_ENV_A}").unwrap(),
            "alphaalpha"
        );
        assert_eq!(
            expand_env("${TOKENPROXY_TEST_ENV_UNSET}"),
            Err("TOKENPROXY_TEST_ENV_UNSET".to_string())
        );
        assert_eq!(expand_env("unterminated ${X").unwrap(), "unterminated ${X");
    }
}
