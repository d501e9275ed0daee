//! Certificate authorities from PEM files: what both config validation and TLS interception
//! need to know about a CA someone hands us (a Kubernetes Secret, cert-manager).
//!
//! The certificate is parsed with `x509-parser` and the key with rcgen (ring); the key must be
//! the certificate's own, and the certificate a CA's.

use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {path}: {kind}")]
    Read {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("{0}: not a PEM certificate")]
    NotACertificate(PathBuf),
    #[error("{0}: not a CA certificate (basicConstraints CA:TRUE)")]
    NotACa(PathBuf),
    #[error(
        "{0}: not a PEM private key rcgen can sign with (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA)"
    )]
    NotAKey(PathBuf),
    #[error("{key} is not the key of the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// The SHA-256 fingerprint (lowercase hex) of the first certificate in `pem`, and its
/// expiry (Unix time): what identifies a certificate without showing it.
pub fn certificate_facts(pem: &str) -> Option<(String, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let x509 = pem.parse_x509().ok()?;
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &pem.contents)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some((sha256, x509.validity().not_after.timestamp()))
}

/// A CA loaded from files, ready to sign.
pub struct FileCa {
    pub issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    /// Whether the certificate limits the names it may sign for (RFC 5280 §4.2.1.10).
    pub name_constrained: bool,
    /// Unix time at which the CA certificate expires.
    pub not_after: i64,
}

impl FileCa {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<FileCa, CaFileError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| CaFileError::Read {
                path: p.to_path_buf(),
                kind: e.kind(),
            })
        };
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let not_cert = || CaFileError::NotACertificate(cert_file.to_path_buf());
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|_| not_cert())?;
        let x509 = pem.parse_x509().map_err(|_| not_cert())?;
        if !x509.is_ca() {
            return Err(CaFileError::NotACa(cert_file.to_path_buf()));
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| CaFileError::NotAKey(key_file.to_path_buf()))?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(CaFileError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
            });
        }
        let name_constrained = x509.name_constraints().ok().flatten().is_some();
        let not_after = x509.validity().not_after.timestamp();
        let cert = CertificateDer::from(pem.contents.clone());
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|_| not_cert())?;
        Ok(FileCa {
            issuer,
            cert,
            name_constrained,
            not_after,
        })
    }
}
