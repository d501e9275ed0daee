//! The credentials of a client: which of `client_secret`, `private_key` and the assertion
//! settings each `auth_method` needs, and (when sources are checked) that the key or secret
//! can sign with the algorithm asked for.

use super::super::raw::RawClient;
use super::super::{defaults, AssertionConfig, AuthMethod, Grant, SecretSource, TlsClientConfig};
use super::Validator;
use crate::jose::{key_file, KeyError, KeyFacts, SigningAlg, SigningKey};

impl Validator<'_> {
    /// Checks which credentials `c` has against its method; returns the assertion settings of
    /// the methods that sign one.
    pub(super) fn credentials(
        &mut self,
        name: &str,
        c: &RawClient,
        method: AuthMethod,
        secret: Option<&SecretSource>,
        issuer: Option<&str>,
    ) -> Option<AssertionConfig> {
        let key = |k| ["clients", name, k];
        let jwt_bearer = c.grant == Grant::JwtBearer;
        let keyed = method == AuthMethod::PrivateKeyJwt || method.uses_mtls();
        let needs_secret = matches!(
            method,
            AuthMethod::ClientSecretBasic
                | AuthMethod::ClientSecretPost
                | AuthMethod::ClientSecretJwt
        );
        if keyed && c.private_key.is_none() {
            self.problem(
                &key("auth_method"),
                format!("{} needs private_key", method.as_str()),
            );
        }
        match (needs_secret, secret.is_some()) {
            (true, false) => {
                let hint = if c.grant == Grant::TokenExchange {
                    " (or auth_method: none, for an endpoint that takes no client authentication)"
                } else {
                    ""
                };
                // A defaulted method has no line of its own: name the client.
                let at: &[&str] = if c.auth_method.is_some() {
                    &key("auth_method")
                } else {
                    &["clients", name]
                };
                self.problem(at, format!("{} needs client_secret{hint}", method.as_str()));
            }
            (false, true) => {
                let why = match method {
                    AuthMethod::ClientAssertion => " (the assertion proves who the client is)",
                    AuthMethod::None => "",
                    _ => " (the private key proves who the client is)",
                };
                self.problem(
                    &key("client_secret"),
                    format!("not used with {}{why}: remove it", method.as_str()),
                );
            }
            _ => {}
        }
        if !keyed && !jwt_bearer {
            for (k, set) in [
                ("private_key", c.private_key.is_some()),
                ("certificate", c.certificate.is_some()),
            ] {
                if set {
                    let msg = "only used with private_key_jwt, tls_client_auth, self_signed_tls_client_auth or grant: jwt_bearer";
                    self.problem(&key(k), msg);
                }
            }
        }
        if method.uses_mtls() && c.certificate.is_none() {
            let msg = format!("{} needs certificate", method.as_str());
            self.problem(&key("auth_method"), msg);
        }
        if !method.uses_assertion() && !jwt_bearer {
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
                        "only used with client_secret_jwt, private_key_jwt or grant: jwt_bearer",
                    );
                }
            }
            return None;
        }
        let assertion = self.assertion(name, c, method, issuer)?;
        if self.check_sources {
            self.check_signing(name, c, method, &assertion, secret);
        }
        Some(assertion)
    }

    /// The certificate and key of the mutual-TLS methods; with sources checked, that they
    /// parse and belong together.
    pub(super) fn tls_client(
        &mut self,
        name: &str,
        c: &RawClient,
        method: AuthMethod,
    ) -> Option<TlsClientConfig> {
        let key = |k| ["clients", name, k];
        if !method.uses_mtls() {
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
        method: AuthMethod,
        issuer: Option<&str>,
    ) -> Option<AssertionConfig> {
        let key = |k| ["clients", name, k];
        let signs_with_key = method == AuthMethod::PrivateKeyJwt || c.grant == Grant::JwtBearer;
        match (method, c.signing_alg) {
            (_, Some(alg)) if signs_with_key && alg.is_hmac() => self.problem(
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
            issuer: c
                .assertion_issuer
                .as_deref()
                .map(|i| self.expand(&key("assertion_issuer"), i)),
            subject: c
                .assertion_subject
                .as_deref()
                .map(|s| self.expand(&key("assertion_subject"), s)),
            scopes_in: c.scopes_in.unwrap_or_default(),
        })
    }

    /// Reads the key (or the secret) and the certificate, and checks they can sign.
    fn check_signing(
        &mut self,
        name: &str,
        c: &RawClient,
        method: AuthMethod,
        a: &AssertionConfig,
        secret: Option<&SecretSource>,
    ) {
        let key = |k| ["clients", name, k];
        let signed = match (method, &a.private_key, secret) {
            (_, Some(source), _) if c.grant == Grant::JwtBearer => {
                let loaded = source
                    .read()
                    .ok()
                    .map(|text| key_file::load(text.expose(), a.signing_alg));
                if let Some(Ok((_, facts))) = &loaded {
                    self.check_key_facts(name, c, facts);
                }
                loaded.map(|r| r.map(|_| ()).map_err(|e| ("private_key", e)))
            }
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

impl Validator<'_> {
    /// A jwt_bearer client needs an endpoint and an issuer, from the config or the key file.
    fn check_key_facts(&mut self, name: &str, c: &RawClient, facts: &KeyFacts) {
        let key = |k| ["clients", name, k];
        if c.token_endpoint.is_none() && c.issuer.is_none() {
            match &facts.token_uri {
                Some(uri) => {
                    let _ = self.token_endpoint(&key("private_key"), uri);
                }
                None => self.problem(
                    &["clients", name],
                    "needs token_endpoint or issuer (the key file has no token_uri)",
                ),
            }
        }
        let has_issuer =
            c.assertion_issuer.is_some() || facts.client_email.is_some() || c.client_id.is_some();
        if !has_issuer {
            self.problem(
                &key("grant"),
                "jwt_bearer needs assertion_issuer (or client_id, or a key file with client_email)",
            );
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
