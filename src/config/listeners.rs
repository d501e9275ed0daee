//! The listeners a config asks for, each named by its [`Role`].
//!
//! One list serves both validation (two listeners on one address) and the runtime (which
//! sockets to bind), so the two can never disagree about what a config listens on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{Config, Limits};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Forward,
    Admin,
    Reverse(String),
}

impl Role {
    /// The YAML key that sets this listener's address.
    pub fn key(&self) -> Vec<&str> {
        match self {
            Role::Forward => vec!["proxy", "listen"],
            Role::Admin => vec!["admin", "listen"],
            Role::Reverse(name) => vec!["upstreams", name, "listen"],
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Forward => f.write_str("forward listener"),
            Role::Admin => f.write_str("admin listener"),
            Role::Reverse(name) => write!(f, "reverse listener of {name}"),
        }
    }
}

impl Config {
    /// Every listener the config asks for, with its address (port 0: ephemeral) and limits.
    pub fn listeners(&self) -> BTreeMap<Role, (SocketAddr, Limits)> {
        let limits = self.proxy.limits;
        let mut want = BTreeMap::new();
        if let Some(a) = self.proxy.listen {
            want.insert(Role::Forward, (a, limits));
        }
        if let Some(a) = self.admin.listen {
            want.insert(Role::Admin, (a, limits));
        }
        for u in &self.upstreams {
            if let Some(a) = u.listen {
                want.insert(Role::Reverse(u.name.clone()), (a, limits));
            }
        }
        want
    }
}
