//! The values of the `outcome` label of the token-fetch metrics.

/// Outcomes of a token fetch, the values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Success,
    HttpError,
    InvalidResponse,
    TransportError,
    SecretUnavailable,
    /// A client assertion, subject or actor token missing, unreadable or expired.
    AssertionUnavailable,
    /// The parent proxy (`proxy.upstream_proxy`) refused the request or its CONNECT.
    UpstreamProxyRefused,
}

impl FetchOutcome {
    pub const ALL: [FetchOutcome; 7] = [
        FetchOutcome::Success,
        FetchOutcome::HttpError,
        FetchOutcome::InvalidResponse,
        FetchOutcome::TransportError,
        FetchOutcome::SecretUnavailable,
        FetchOutcome::AssertionUnavailable,
        FetchOutcome::UpstreamProxyRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Success => "success",
            FetchOutcome::HttpError => "http_error",
            FetchOutcome::InvalidResponse => "invalid_response",
            FetchOutcome::TransportError => "transport_error",
            FetchOutcome::SecretUnavailable => "secret_unavailable",
            FetchOutcome::AssertionUnavailable => "assertion_unavailable",
            FetchOutcome::UpstreamProxyRefused => "upstream_proxy_refused",
        }
    }
}
