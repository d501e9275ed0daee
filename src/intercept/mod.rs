//! TLS interception of CONNECT tunnels to matched hosts: the certificate side.
//!
//! - `authority`: the CA (generated with name constraints, or from files) and minting;
//! - `leaves`: host certificates per SNI name, cached, as a rustls certificate resolver;
//! - `trust`: the files apps trust the CA by (`ca.pem`, `bundle.pem`, `truststore.p12`);
//! - `error`: why a CA, a certificate or a trust file could not be made;
//!
//! The request side (SNI and Host checks, serving the decrypted HTTP) is `proxy::intercept`.

pub mod authority;
mod error;
pub mod leaves;
pub mod trust;

pub use error::InterceptError;

use std::sync::Arc;

use authority::Authority;
use leaves::Leaves;

use crate::config::{CaSource, Config};
use crate::metrics::InterceptMetrics;
use crate::pki::FileCa;

/// The trust anchor apps need for `config`'s interception CA, without starting a proxy: the
/// `tokenproxy ca` subcommand. Only a CA from files can be had this way.
pub fn trust_anchor(
    config: &Config,
) -> Result<rustls_pki_types::CertificateDer<'static>, InterceptError> {
    match config.proxy.intercept.as_ref().map(|i| &i.ca) {
        None => Err(InterceptError::NotConfigured),
        Some(CaSource::Generate) => Err(InterceptError::GeneratedInProcess),
        Some(CaSource::Files {
            cert_file,
            key_file,
        }) => Ok(FileCa::load(cert_file, key_file)?.cert),
    }
}

/// The interception CA and the TLS server settings of intercepted connections.
pub struct Interceptor {
    pub authority: Arc<Authority>,
    /// ALPN `http/1.1` only: what the decrypted side serves. No client certificates.
    pub tls: Arc<rustls::ServerConfig>,
}

impl Interceptor {
    /// Builds the CA for `config`'s intercepted hosts and writes the trust files, if asked.
    /// `None` when `proxy.intercept` is not set.
    pub fn from_config(
        config: &Config,
        metrics: &InterceptMetrics,
    ) -> Result<Option<Interceptor>, InterceptError> {
        let Some(ic) = &config.proxy.intercept else {
            return Ok(None);
        };
        let authority = match &ic.ca {
            CaSource::Generate => Authority::generate(intercepted_names(config))?,
            CaSource::Files {
                cert_file,
                key_file,
            } => {
                let ca = FileCa::load(cert_file, key_file)?;
                if !ca.name_constrained {
                    tracing::warn!(cert = %cert_file.display(),
                        "the interception CA has no name constraints: whoever holds its key can make certificates apps accept for any name; prefer ca: generate, or a CA constrained to the intercepted hosts");
                }
                Authority::from_files(ca)
            }
        };
        metrics.ca_expiry.set(authority.not_after as f64);
        if let Some(dir) = &ic.trust_dir {
            trust::write(dir, &authority.trust_anchor)?;
            tracing::info!(dir = %dir.display(), "wrote the interception trust files");
        }
        let authority = Arc::new(authority);
        let leaves = Leaves::new(authority.clone(), ic.leaf_lifetime, metrics.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(leaves));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Interceptor {
            authority,
            tls: Arc::new(tls),
        }))
    }

    /// Whether CONNECT to `host` can be intercepted: a DNS name the CA may sign for.
    pub fn covers(&self, host: &str) -> bool {
        !is_ip_literal(host) && self.authority.covers(host)
    }
}

/// The DNS names of every intercepted upstream's `match` patterns (a wildcard's suffix
/// permits its subdomains); IP literals cannot be intercepted and are left out.
pub fn intercepted_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .upstreams
        .iter()
        .filter(|u| u.intercept)
        .flat_map(|u| u.match_hosts.iter().map(|p| p.host.clone()))
        .filter(|h| !is_ip_literal(h))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok()
}
