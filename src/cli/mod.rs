//! The subcommands of the `tokenproxy` binary, each a function from its arguments to an
//! [`Exit`]: `run`, `validate` (and `--online`), `ca`, `exec`, `token`, `status`, `wait`,
//! `demo`. One config loader ([`load`]) and one table of exit codes ([`Exit`]); `main.rs`
//! keeps the flags and turns an `Exit` into the process's status.

pub mod ca;
pub mod demo;
pub mod exec;
pub mod run;
pub mod status;
pub mod token;
pub mod validate;
pub mod wait;

use std::path::Path;

use crate::config::Config;

/// How a command ended: the one table of exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1: the command failed (not ready, unreachable, could not start).
    Failed,
    /// 2: a usage error (clap's own, and `token` refusing to print to a terminal).
    Usage,
    /// 69 (EX_UNAVAILABLE): no token could be had.
    NoToken,
    /// 78 (EX_CONFIG): the config is invalid.
    Config,
    /// 126: `exec` found the command but could not run it (as shells do).
    CannotRun,
    /// 127: `exec` did not find the command (as shells do).
    NotFound,
    /// `exec`: the command's own status (128+N if it died of signal N).
    Child(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::NoToken => 69,
            Exit::Config => 78,
            Exit::CannotRun => 126,
            Exit::NotFound => 127,
            Exit::Child(code) => code,
        }
    }
}

/// The config at `path`, validated with its secrets read; each problem is printed with its
/// line, and the command ends with [`Exit::Config`].
pub fn load(path: &Path) -> Result<Config, Exit> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        Exit::Config
    })
}

/// [`Exit::Ok`], or the error printed as `tokenproxy WHAT: …` and [`Exit::Failed`].
pub fn outcome<E: std::fmt::Display>(result: Result<(), E>, what: &str) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => failed(what, &e),
    }
}

/// Prints `tokenproxy WHAT: E`; [`Exit::Failed`].
pub fn failed(what: &str, e: &dyn std::fmt::Display) -> Exit {
    eprintln!("tokenproxy {what}: {e}");
    Exit::Failed
}
