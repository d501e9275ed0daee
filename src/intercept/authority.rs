//! The certificate authority that signs host certificates for intercepted connections.
//!
//! Generated (the default): a root, and an intermediate whose name constraints (RFC 5280
//! §4.2.1.10) permit exactly the DNS names of the intercepted upstreams. The root key signs the
//! intermediate and is dropped; leaves are signed by the intermediate, so a stolen signing key
//! can mint nothing a client accepts for any other name. Clients enforce constraints on an
//! intermediate more reliably than on a root. Nothing is written to disk but the root
//! certificate, for the apps to trust.
//!
//! From files: a CA certificate and key (a Kubernetes Secret, cert-manager) sign leaves
//! directly; it is used as given, with a warning when it carries no name constraints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::error::InterceptError;
use crate::pki::FileCa;

/// How long a generated root and intermediate are valid. They live as long as the process, so
/// this only has to outlast any restart interval.
const GENERATED_CA_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Leaves start a little in the past, for clients whose clock is behind.
const BACKDATE: Duration = Duration::from_secs(300);

pub struct Authority {
    /// Signs the leaves: the generated intermediate, or the CA from files.
    issuer: Issuer<'static, KeyPair>,
    /// Sent after each leaf: the intermediate (generated) or the CA itself (files).
    chain_tail: CertificateDer<'static>,
    /// What apps trust: the generated root, or the CA from files.
    pub trust_anchor: CertificateDer<'static>,
    /// The DNS names (and their subdomains) the generated intermediate may sign for; `None`
    /// for a CA from files, which carries its own limits, if any.
    permitted: Option<Vec<String>>,
    /// Unix time at which the signing certificate expires.
    pub not_after: i64,
}

impl Authority {
    /// A new root and an intermediate constrained to `names` (DNS names; each also permits its
    /// subdomains, as RFC 5280 defines it).
    pub fn generate(names: Vec<String>) -> Result<Authority, InterceptError> {
        let now = SystemTime::now();
        let root_key = KeyPair::generate()?;
        let mut root = ca_params("tokenproxy interception root", now, 1)?;
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root, root_key);

        // An empty permitted list would mean "no constraint": permit a reserved name instead.
        let permitted = if names.is_empty() {
            vec!["invalid".to_string()]
        } else {
            names
        };
        let key = KeyPair::generate()?;
        let mut inter = ca_params("tokenproxy interception intermediate", now, 0)?;
        inter.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        inter.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted
                .iter()
                .cloned()
                .map(GeneralSubtree::DnsName)
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        inter.use_authority_key_identifier_extension = true;
        let inter_cert = inter.signed_by(&key, &root_issuer)?;
        drop(root_issuer); // the root key is gone from here on
        Ok(Authority {
            issuer: Issuer::new(inter, key),
            chain_tail: inter_cert.der().clone(),
            trust_anchor: root_cert.der().clone(),
            permitted: Some(permitted),
            not_after: unix(now + GENERATED_CA_LIFETIME),
        })
    }

    /// A CA from PEM files.
    pub fn from_files(ca: FileCa) -> Authority {
        Authority {
            issuer: ca.issuer,
            chain_tail: ca.cert.clone(),
            trust_anchor: ca.cert,
            permitted: None,
            not_after: ca.not_after,
        }
    }

    /// Whether this CA may sign for `host` (a normalised DNS name).
    pub fn covers(&self, host: &str) -> bool {
        self.permitted.as_ref().is_none_or(|names| {
            names.iter().any(|n| {
                host == n
                    || host
                        .strip_suffix(n.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
        })
    }

    /// A new key (ECDSA P-256) and a certificate for `host`, valid for `lifetime`. Returns the
    /// rustls key with its chain and the Unix time it expires.
    pub fn mint(
        &self,
        host: &str,
        lifetime: Duration,
    ) -> Result<(CertifiedKey, i64), InterceptError> {
        let now = SystemTime::now();
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.not_before = at(now - BACKDATE)?;
        params.not_after = at(now + lifetime)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)?;
        let chain = vec![cert.der().clone(), self.chain_tail.clone()];
        Ok((CertifiedKey::new(chain, signing), unix(now + lifetime)))
    }
}

fn ca_params(
    name: &str,
    now: SystemTime,
    path_len: u8,
) -> Result<CertificateParams, InterceptError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(
        DnType::OrganizationName,
        "tokenproxy (generated, in memory)",
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.not_before = at(now - BACKDATE)?;
    p.not_after = at(now + GENERATED_CA_LIFETIME)?;
    Ok(p)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn at(t: SystemTime) -> Result<OffsetDateTime, InterceptError> {
    OffsetDateTime::from_unix_timestamp(unix(t)).map_err(|_| InterceptError::Clock)
}
