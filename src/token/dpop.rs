//! The DPoP key of a client with `token_type: dpop`: from `dpop_key`, so that replicas
//! sharing tokens (the shared cache) share the key they are bound to, or else generated in
//! memory at start (ES256). Either way it lives as long as the client's config does.

use std::sync::Arc;

use crate::config::{ClientConfig, TokenType};
use crate::jose::{DpopKey, KeyError, Nonces};

/// A DPoP client's key, and the nonce its authorization server last sent, shared by every
/// token source of the client.
#[derive(Debug)]
pub struct ClientDpop {
    pub key: Arc<DpopKey>,
    pub nonces: Nonces,
}

/// `None` for a bearer client.
pub fn client_dpop(client: &ClientConfig) -> Result<Option<Arc<ClientDpop>>, KeyError> {
    Ok(dpop_key(client)?.map(|key| {
        Arc::new(ClientDpop {
            key,
            nonces: Nonces::default(),
        })
    }))
}

/// `None` for a bearer client.
pub fn dpop_key(client: &ClientConfig) -> Result<Option<Arc<DpopKey>>, KeyError> {
    if client.token_type != TokenType::Dpop {
        return Ok(None);
    }
    let key = match &client.dpop_key {
        Some(source) => {
            let text = source.read().map_err(|_| KeyError::Unreadable)?;
            DpopKey::from_text(text.expose(), None)?
        }
        None => DpopKey::generate()?,
    };
    Ok(Some(Arc::new(key)))
}
