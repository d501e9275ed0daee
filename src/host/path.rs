//! Request paths as routing reads them, for `match` patterns with a path prefix.
//!
//! A prefix decides which token a request gets, so a path must not be able to look like one
//! prefix to tokenproxy and like another to the server behind it. Two readings are made.
//! [`strict`] is RFC 3986's: percent-encoded unreserved characters decoded, hex in upper case,
//! dot segments removed; everything else stays as sent, `%2F` included. [`lenient`] is what a
//! forgiving server may do on top: `%2F`, `%5C` and `\` taken as `/`, empty segments merged
//! (`//`), `;parameters` dropped from each segment (`..;` is `..` to Tomcat). Routing uses the
//! strict reading and refuses a path whose two readings route differently.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has a bad percent-encoding (a % not followed by two hex digits)")]
    BadEscape,
}

/// The RFC 3986 normal form (§6.2.2): borrowed when the path already is in it.
pub fn strict(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalise(path, false)
}

/// The strict form plus what lenient servers do: `%2F`, `%5C` and `\` as separators, no empty
/// segments, no `;parameters`.
pub fn lenient(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalise(path, true)
}

/// True if `path` (normalised) is `prefix` or lies under it; `prefix` has no trailing `/`.
pub fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Checks a configured prefix (`/orders`, from `/orders/*`): it must already be in strict
/// normal form, with no empty, dot or `;` segments, so that what is written is what matches.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && strict(prefix).is_ok_and(|p| p == prefix)
        && prefix[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(';'))
        && !prefix.contains(['\\', '*', '?', '#'])
}

fn normalise(path: &str, lenient: bool) -> Result<Cow<'_, str>, PathError> {
    let simple =
        |b: u8| !matches!(b, b'%' | b'.' | b'\\' | b';') && (b.is_ascii_graphic() || b >= 0x80);
    // The common case: nothing to decode, no dot, no doubled slash.
    if path.starts_with('/')
        && path.bytes().all(|b| simple(b) || b == b'/')
        && !(lenient && path.contains("//"))
    {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, lenient)?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, raw) in segments.iter().enumerate() {
        let seg = match lenient {
            true => raw.split(';').next().unwrap_or(""),
            false => raw,
        };
        match seg {
            "." | ".." => {
                if seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            "" if lenient && i != last => {}
            _ => out.push(seg),
        }
    }
    let normal = format!("/{}", out.join("/"));
    Ok(match normal == path {
        true => Cow::Borrowed(path),
        false => Cow::Owned(normal),
    })
}

/// Percent-decodes unreserved characters (and, leniently, the two slashes), upper-cases the
/// hex of the rest, and reads `\` as `/` when lenient.
fn decode(path: &str, lenient: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 1);
    if !path.starts_with('/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::BadEscape)?;
            let unreserved = value.is_ascii_alphanumeric() || b"-._~".contains(&value);
            if unreserved || (lenient && (value == b'/' || value == b'\\')) {
                out.push(if value == b'\\' { b'/' } else { value });
            } else {
                out.push(b'%');
                out.extend(hex.iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
            continue;
        }
        out.push(if lenient && b == b'\\' { b'/' } else { b });
        i += 1;
    }
    // Only ASCII bytes were added or replaced, so UTF-8 in the input stays UTF-8.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in ["/", "/orders/42", "/a-b_c~d/e", "/caf\u{e9}"] {
            assert!(matches!(strict(p).unwrap(), Cow::Borrowed(_)), "{p}");
            assert!(matches!(lenient(p).unwrap(), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn strict_is_rfc_3986() {
        let s = |p| strict(p).unwrap().into_owned();
        assert_eq!(s("/orders/../users"), "/users");
        assert_eq!(s("/orders/%2e%2E/users"), "/users");
        assert_eq!(s("/a/./b/."), "/a/b/");
        assert_eq!(s("/a/b/.."), "/a/");
        assert_eq!(s("/../../x"), "/x");
        assert_eq!(s("/%6Frders/1"), "/orders/1");
        assert_eq!(s("/a%2fb"), "/a%2Fb", "an encoded slash is data");
        assert_eq!(
            s("//orders/x"),
            "//orders/x",
            "an empty segment is a segment"
        );
        assert_eq!(s("/users/..;/orders"), "/users/..;/orders");
        assert_eq!(s("/a\\b"), "/a\\b");
        assert_eq!(s(""), "/");
    }

    #[test]
    fn lenient_reads_what_forgiving_servers_read() {
        let l = |p| lenient(p).unwrap().into_owned();
        assert_eq!(l("//orders/x"), "/orders/x");
        assert_eq!(l("/users/..;/orders/1"), "/orders/1");
        assert_eq!(l("/orders%2f..%2fusers"), "/users");
        assert_eq!(l("/orders%5C..%5Cusers"), "/users");
        assert_eq!(l("/orders\\..\\users"), "/users");
        assert_eq!(l("/orders;v=1/2"), "/orders/2");
        assert_eq!(l("/a/"), "/a/", "a trailing slash stays");
    }

    #[test]
    fn bad_escapes_are_refused() {
        for p in ["/%", "/%2", "/%zz", "/a%g0"] {
            assert_eq!(strict(p), Err(PathError::BadEscape), "{p}");
            assert_eq!(lenient(p), Err(PathError::BadEscape), "{p}");
        }
    }

    #[test]
    fn under_is_whole_segments() {
        assert!(under("/orders", "/orders"));
        assert!(under("/orders/", "/orders"));
        assert!(under("/orders/1", "/orders"));
        assert!(!under("/ordersx", "/orders"));
        assert!(!under("/order", "/orders"));
        assert!(under("/anything", ""), "the empty prefix is the whole host");
    }

    #[test]
    fn prefixes_must_be_written_normalised() {
        assert!(valid_prefix("/orders") && valid_prefix("/v1/orders"));
        for bad in [
            "orders",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/%6frders",
            "/a;b",
            "/a\\b",
            "/",
            "/a/*",
            "/a?b",
        ] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
