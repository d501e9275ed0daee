//! Client secrets: where they come from and how they are kept out of sight.
//!
//! A [`Secret`] prints as `***` under `Debug` and `Display`, so a stray `{:?}` of a config
//! or an error can never put a credential into a log line. A [`SecretSource`] is read at every
//! token fetch rather than once at start: a Kubernetes Secret rotated on disk (a swapped `..data`
//! symlink) or a changed environment is picked up by the next fetch with no reload needed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A credential that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that must send it (the token request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a client secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Literal(Secret),
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("secret file {path} cannot be read: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("secret {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the current value. Trailing newlines are trimmed (editors and `kubectl create
    /// secret --from-file` leave them); an empty or whitespace-only value counts as missing.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let (raw, what) = match self {
            SecretSource::Literal(s) => (s.0.clone(), "literal".to_string()),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvUnset(name.clone()))?,
                format!("from environment variable {name}"),
            ),
            SecretSource::File(path) => (read_file(path)?, format!("file {}", path.display())),
        };
        let trimmed = raw.trim_end_matches(['\n', '\r']);
        if trimmed.trim().is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(Secret(trimmed.to_string()))
    }

    /// The file behind this source, if any (for the permission check and the watcher).
    pub fn file(&self) -> Option<&Path> {
        match self {
            SecretSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// True when a secret file can be read by others, or by a group this process is not running
/// as. (In Kubernetes, a Secret mounted with `defaultMode: 0440` and the pod's `fsGroup` equal
/// to the container's group is group-readable by that group only: no warning.)
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.permissions().mode();
    mode & 0o004 != 0 || (mode & 0o040 != 0 && Some(meta.gid()) != effective_gid())
}

/// The effective group id, from /proc (no libc call, no unsafe).
fn effective_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn read_file(path: &Path) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|e| SecretError::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let s = Secret::new("canary-s3cr3t");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let src = SecretSource::Literal(s);
        assert!(!format!("{src:?}").contains("canary"));
    }

    #[test]
    fn file_is_trimmed_and_empty_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "abc\n\n").unwrap();
        let src = SecretSource::File(p.clone());
        assert_eq!(src.read().unwrap().expose(), "abc");
        std::fs::write(&p, " \n").unwrap();
        assert!(matches!(src.read(), Err(SecretError::Empty(_))));
        let missing = SecretSource::File(dir.path().join("nope"));
        assert!(matches!(
            missing.read(),
            Err(SecretError::FileUnreadable { .. })
        ));
    }

    #[test]
    fn group_or_world_readable_files_are_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable_by_others(&p));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&p));
        // Group-readable by our own group (the Kubernetes fsGroup setup) is fine.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!readable_by_others(&p), "the test runs as the file's group");
    }

    #[test]
    fn unset_env_is_an_error() {
        let src = SecretSource::Env("TOKENPROXY_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(
            src.read(),
            Err(SecretError::EnvUnset(
                "TOKENPROXY_TEST_SURELY_UNSET_VAR".into()
            ))
        );
    }
}
