//! The trust material apps need to accept intercepted connections, written where they can
//! mount it (an `emptyDir` shared with the app):
//!
//! - `ca.pem`: our root alone (`NODE_EXTRA_CA_CERTS`, or to add to a trust store);
//! - `bundle.pem`: the system roots plus ours (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//!   `CURL_CA_BUNDLE`, Go);
//! - `truststore.p12`: the same as a PKCS#12 truststore for Java, password `changeit`
//!   (`-Djavax.net.ssl.trustStore=... -Djavax.net.ssl.trustStoreType=PKCS12`).
//!
//! Each file is written to a temporary name and renamed, so a reader never sees half of one.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use rustls_pki_types::CertificateDer;

use super::error::InterceptError;

/// The Java truststore password (the JDK's customary default; a truststore holds no secret).
pub const TRUSTSTORE_PASSWORD: &str = "changeit";

/// Writes `ca.pem`, `bundle.pem` and `truststore.p12` into `dir` (created if missing).
pub fn write(dir: &Path, ours: &CertificateDer<'_>) -> Result<(), InterceptError> {
    let io = |e: std::io::Error| InterceptError::Io(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let system = crate::tls::native_roots();
    let ca = pem(ours);
    let mut bundle = String::new();
    for root in system {
        bundle.push_str(&pem(root));
    }
    bundle.push_str(&ca);
    let p12 = truststore(system.iter().chain(std::iter::once(ours)))?;
    atomic_write(dir, "ca.pem", ca.as_bytes()).map_err(io)?;
    atomic_write(dir, "bundle.pem", bundle.as_bytes()).map_err(io)?;
    atomic_write(dir, "truststore.p12", &p12).map_err(io)?;
    Ok(())
}

/// A certificate as PEM text.
pub fn pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn truststore<'a>(
    certs: impl Iterator<Item = &'a CertificateDer<'a>>,
) -> Result<Vec<u8>, InterceptError> {
    let mut store = p12_keystore::KeyStore::new();
    for (i, der) in certs.enumerate() {
        // A system root that p12-keystore cannot read is left out rather than failing all.
        if let Ok(cert) = p12_keystore::Certificate::from_der(der.as_ref()) {
            store.add_entry(
                &format!("ca-{i}"),
                p12_keystore::KeyStoreEntry::Certificate(cert),
            );
        }
    }
    store
        .writer(TRUSTSTORE_PASSWORD)
        .write()
        .map_err(|e| InterceptError::Truststore(e.to_string()))
}

fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}
