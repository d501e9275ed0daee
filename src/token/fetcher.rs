//! Where a token source's tokens come from: the token endpoint, a shared cache in front of
//! it, or a script in tests. The source says what it holds, so that a cache never hands back
//! the very token an upstream has just refused.

use std::future::Future;
use std::pin::Pin;

use http::HeaderValue;

use super::error::FetchError;
use super::response::Issued;

/// What the source holds when it asks for a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// The token being replaced (its `Authorization` value): the one held now, or the one an
    /// upstream has just refused.
    pub replacing: Option<&'a HeaderValue>,
    /// An upstream refused `replacing` with a 401: it must not come back.
    pub refused: bool,
}

pub type Fetching<'a> = Pin<Box<dyn Future<Output = Result<Issued, FetchError>> + Send + 'a>>;

pub trait Fetcher: Send + Sync + 'static {
    fn fetch<'a>(&'a self, ask: Ask<'a>) -> Fetching<'a>;
}
