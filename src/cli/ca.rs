//! `tokenproxy ca`: the files apps trust the interception CA by (`ca.pem`, `bundle.pem`,
//! `truststore.p12`) written into a directory, or `ca.pem` printed.

use std::path::Path;

use super::{load, outcome, Exit};
use crate::intercept::{trust, trust_anchor};

pub fn run(config: &Path, out: Option<&Path>) -> Exit {
    let config = match load(config) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let written = trust_anchor(&config).and_then(|anchor| match out {
        Some(dir) => trust::write(dir, &anchor),
        None => {
            print!("{}", trust::pem(&anchor));
            Ok(())
        }
    });
    outcome(written, "ca")
}
