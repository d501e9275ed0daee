//! rustls client configuration shared by the token endpoint client and the upstream client.
//!
//! One crypto provider (ring) for the whole process. Trust is the system store, read once,
//! plus an optional PEM `ca_file` per client or upstream (for private CAs). A client
//! certificate (mutual TLS, RFC 8705) is presented through [`ReloadingClientCert`], which reads
//! the certificate and key again when their text changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The system trust store, read once.
pub fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::debug!(error = %e, "skipping an unreadable system certificate");
        }
        loaded.certs
    })
}

/// A client config trusting the system store plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with(ca_file, None)
}

/// The system trust store as parsed trust anchors, parsed once and shared: parsing it is
/// about 130 KiB per copy, and every client and upstream TLS configuration trusts it.
fn system_roots() -> Arc<RootCertStore> {
    static STORE: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(native_roots().iter().cloned());
            Arc::new(roots)
        })
        .clone()
}

/// [`client_config`], presenting `client_cert` when a server asks for one.
pub fn client_config_with(
    ca_file: Option<&Path>,
    client_cert: Option<Arc<ReloadingClientCert>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match ca_file {
        None => system_roots(),
        Some(path) => {
            let ca_err = |reason: String| TlsError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificates in it".into()));
            }
            let mut roots = RootCertStore::clone(&system_roots());
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            Arc::new(roots)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // No ALPN here: hyper-rustls and reqwest each set the protocols they speak.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client_cert {
        Some(resolver) => {
            let mut config = builder.with_client_cert_resolver(resolver);
            // A resumed session skips client authentication, so a renewed certificate would
            // not be presented: a full handshake every time (new connections are rare here).
            config.resumption = rustls::client::Resumption::disabled();
            config
        }
        None => builder.with_no_client_auth(),
    })
}

/// Reads the certificate chain and the key, both PEM: `(certificate, key)`.
pub type ReadPair = Box<dyn Fn() -> Result<(String, String), String> + Send + Sync>;

/// A client certificate and key, read again (at a handshake) when their text has changed, so
/// a renewed certificate in a mounted Secret is presented on the next new connection.
pub struct ReloadingClientCert {
    read: ReadPair,
    /// The SHA-256 of the texts last parsed, and what they gave.
    cached: std::sync::Mutex<Option<([u8; 32], Arc<rustls::sign::CertifiedKey>)>>,
}

impl std::fmt::Debug for ReloadingClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadingClientCert(***)")
    }
}

impl ReloadingClientCert {
    pub fn new(read: ReadPair) -> Self {
        ReloadingClientCert {
            read,
            cached: std::sync::Mutex::new(None),
        }
    }

    /// The certificate and key as they are now.
    pub fn current(&self) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
        let (cert, key) = (self.read)()?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(cert.as_bytes());
        digest.update(key.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.finish().as_ref());
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = cached.as_ref().filter(|(seen, _)| *seen == id) {
            return Ok(k.clone());
        }
        let parsed = Arc::new(certified_key(&cert, &key)?);
        *cached = Some((id, parsed.clone()));
        Ok(parsed)
    }
}

impl rustls::client::ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self.current() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "no client certificate to present");
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A PEM certificate chain and its PEM key (PKCS#8, PKCS#1 or SEC1), checked to belong together.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls_pki_types::PrivateKeyDer;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "the certificate is not PEM".to_string())?;
    if chain.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "the private key is not PEM (PKCS#8, PKCS#1 or SEC1)".to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("the certificate and key do not belong together: {e}"))
}
