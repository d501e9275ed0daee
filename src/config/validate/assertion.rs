//! The credentials of a client: which of `client_secret`, `private_key` and the assertion
//! settings each `auth_method` needs, and (when sources are checked) that the key or secret
//! can sign with the algorithm asked for.

use super::super::raw::RawClient;
use super::super::{defaults, AssertionConfig, AuthMethod, SecretSource, TlsClientConfig};
use super::Validator;
use crate::jose::{KeyError, SigningAlg, SigningKey};

impl Validator<'_> {
    /// Checks which credentials `c` has against its method; returns the assertion settings of
    /// the methods that sign one.
    pub(super) fn credentials(
        &mut self,
        name: &str,
        c: &RawClient,
        secret: Option<&SecretSource>,
        issuer: Option<&str>,
    ) -> Option<AssertionConfig> {
        let key = |k| ["clients", name, k];
        let method = c.auth_method;
        let keyed = method == AuthMethod::PrivateKeyJwt || method.uses_mtls();
        match (keyed, secret.is_some(), c.private_key.is_some()) {
            (true, _, false) => self.problem(
                &key("auth_method"),
                format!("{} needs private_key", method.as_str()),
            ),
            (true, true, _) => self.problem(
                &key("client_secret"),
                format!(
                    "not used with {} (the private key proves who the client is): remove it",
                    method.as_str()
                ),
            ),
            (true, false, true) => {}
            (_, false, _) => self.problem(
                &key("auth_method"),
                format!("{} needs client_secret", method.as_str()),
            ),
            (_, true, _) => {}
        }
        if !keyed {
            for (k, set) in [
                ("private_key", c.private_key.is_some()),
                ("certificate", c.certificate.is_some()),
            ] {
                if set {
                    let msg = "only used with private_key_jwt, tls_client_auth or self_signed_tls_client_auth";
                    self.problem(&key(k), msg);
                }
            }
        }
        if method.uses_mtls() && c.certificate.is_none() {
            let msg = format!("{} needs certificate", method.as_str());
            self.problem(&key("auth_method"), msg);
        }
        if !method.uses_assertion() {
            let assertion_keys = [
                ("signing_alg", c.signing_alg.is_some()),
                ("key_id", c.key_id.is_some()),
                ("assertion_audience", c.assertion_audience.is_some()),
                ("assertion_lifetime", c.assertion_lifetime.is_some()),
            ];
            for (k, set) in assertion_keys {
                if set {
                    self.problem(
                        &key(k),
                        "only used with client_secret_jwt or private_key_jwt",
                    );
                }
            }
            return None;
        }
        let assertion = self.assertion(name, c, issuer)?;
        if self.check_sources {
            self.check_signing(name, method, &assertion, secret);
        }
        Some(assertion)
    }

    /// The certificate and key of the mutual-TLS methods; with sources checked, that they
    /// parse and belong together.
    pub(super) fn tls_client(&mut self, name: &str, c: &RawClient) -> Option<TlsClientConfig> {
        let key = |k| ["clients", name, k];
        if !c.auth_method.uses_mtls() {
            return None;
        }
        let tls = TlsClientConfig {
            certificate: self.secret(&key("certificate"), c.certificate.as_ref()?),
            private_key: self.secret(&key("private_key"), c.private_key.as_ref()?),
        };
        if self.check_sources {
            if let Ok((cert, pem)) = tls.read() {
                if let Err(e) =
                    crate::tls::certified_key(&cert, &pem).and_then(|_| not_expired(&cert))
                {
                    self.problem(&key("certificate"), e);
                }
            }
        }
        Some(tls)
    }

    fn assertion(
        &mut self,
        name: &str,
        c: &RawClient,
        issuer: Option<&str>,
    ) -> Option<AssertionConfig> {
        let key = |k| ["clients", name, k];
        match (c.auth_method, c.signing_alg) {
            (AuthMethod::PrivateKeyJwt, Some(alg)) if alg.is_hmac() => self.problem(
                &key("signing_alg"),
                format!("{alg} is keyed with the client secret: use auth_method: client_secret_jwt, or RS256, PS256, ES256, ES384 or EdDSA"),
            ),
            (AuthMethod::ClientSecretJwt, Some(alg)) if !alg.is_hmac() => self.problem(
                &key("signing_alg"),
                format!("client_secret_jwt signs with HS256, HS384 or HS512, not {alg}"),
            ),
            _ => {}
        }
        let audience = match c
            .assertion_audience
            .as_deref()
            .map(|a| self.expand(&key("assertion_audience"), a))
        {
            // `None`: the token endpoint in use, configured or discovered.
            None => None,
            Some(a) if a == "token_endpoint" => None,
            Some(a) if a == "issuer" => match issuer {
                Some(issuer) => Some(issuer.to_string()),
                None => {
                    self.problem(&key("assertion_audience"), "issuer needs clients.*.issuer");
                    return None;
                }
            },
            Some(literal) => {
                if reqwest::Url::parse(&literal).is_err() {
                    self.problem(
                        &key("assertion_audience"),
                        "token_endpoint, issuer, or an absolute URL",
                    );
                }
                Some(literal)
            }
        };
        let lifetime = self.duration(
            &key("assertion_lifetime"),
            &c.assertion_lifetime,
            defaults::ASSERTION_LIFETIME,
        );
        let (min, max) = defaults::ASSERTION_LIFETIME_RANGE;
        if lifetime < min || lifetime > max {
            self.problem(&key("assertion_lifetime"), "must be between 10s and 10m");
        }
        Some(AssertionConfig {
            private_key: c
                .private_key
                .as_ref()
                .map(|k| self.secret(&key("private_key"), k)),
            certificate: c
                .certificate
                .as_ref()
                .map(|k| self.secret(&key("certificate"), k)),
            signing_alg: c.signing_alg,
            key_id: c.key_id.as_deref().map(|k| self.expand(&key("key_id"), k)),
            audience,
            lifetime,
        })
    }

    /// Reads the key (or the secret) and the certificate, and checks they can sign.
    fn check_signing(
        &mut self,
        name: &str,
        method: AuthMethod,
        a: &AssertionConfig,
        secret: Option<&SecretSource>,
    ) {
        let key = |k| ["clients", name, k];
        let signed = match (method, &a.private_key, secret) {
            (AuthMethod::PrivateKeyJwt, Some(source), _) => source
                .read()
                .ok()
                .map(|text| SigningKey::private(text.expose(), a.signing_alg).map(|_| ()))
                .map(|r| r.map_err(|e| ("private_key", e))),
            (AuthMethod::ClientSecretJwt, _, Some(source)) => source.read().ok().map(|s| {
                let alg = a.signing_alg.unwrap_or(SigningAlg::HS256);
                SigningKey::secret(s.expose().as_bytes(), alg)
                    .map(|_| ())
                    .map_err(|e| ("client_secret", e))
            }),
            _ => None,
        };
        if let Some(Err((k, e))) = signed {
            let at = if matches!(e, KeyError::Mismatch(..)) && a.signing_alg.is_some() {
                "signing_alg"
            } else {
                k
            };
            self.problem(&key(at), e.to_string());
        }
        if let Some(text) = a.certificate.as_ref().and_then(|c| c.read().ok()) {
            use rustls_pki_types::pem::PemObject;
            if rustls_pki_types::CertificateDer::from_pem_slice(text.expose().as_bytes()).is_err() {
                self.problem(&key("certificate"), "not a PEM certificate");
            } else if let Err(e) = not_expired(text.expose()) {
                self.problem(&key("certificate"), e);
            }
        }
    }
}

/// An expired client certificate would only be refused by the server: say so up front.
fn not_expired(pem: &str) -> Result<(), String> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return Ok(());
    };
    let Ok(cert) = pem.parse_x509() else {
        return Ok(());
    };
    let not_after = cert.validity().not_after;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if not_after.timestamp() < i64::try_from(now).unwrap_or(i64::MAX) {
        return Err(format!("the certificate expired on {not_after}"));
    }
    Ok(())
}
