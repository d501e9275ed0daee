//! Why interception could not be set up: a CA, a host certificate or a trust file.

use std::path::PathBuf;

use crate::pki::CaFileError;

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("interception CA: {0}")]
    CaFile(#[from] CaFileError),
    #[error("cannot write the trust files in {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot write the Java truststore: {0}")]
    Truststore(String),
    #[error("the system clock is out of the range certificates can express")]
    Clock,
    #[error("proxy.intercept is not set in this config")]
    NotConfigured,
    #[error("proxy.intercept.ca is generate: that CA exists only inside the running proxy, which writes its trust files to proxy.intercept.trust_dir at start; `tokenproxy ca` works with a CA from files")]
    GeneratedInProcess,
}
