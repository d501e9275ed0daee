//! Rules that span sections: listener addresses, loops, and host patterns claimed twice.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::super::raw::RawConfig;
use super::super::{CaSource, Config};
use super::Validator;
use crate::host::{is_local_address, targets_own_listener};
use crate::pki::FileCa;

impl Validator<'_> {
    /// Two listeners on one address (an ephemeral port never collides).
    pub(super) fn check_listeners(&mut self, c: &Config) {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        for (role, (addr, _)) in c.listeners() {
            if addr.port() == 0 {
                continue;
            }
            match seen.get(&addr) {
                Some(other) => {
                    let msg = format!("{addr} is already used by {other}");
                    self.problem(&role.key(), msg);
                }
                None => {
                    seen.insert(addr, role.key().join("."));
                }
            }
        }
    }

    /// An upstream `url` that is one of tokenproxy's own listeners would send every request
    /// round and round until connections run out. The same rule refuses such requests at run
    /// time (`host::targets_own_listener`).
    pub(super) fn check_loops(&mut self, c: &Config) {
        let listens: Vec<SocketAddr> = c
            .listeners()
            .into_values()
            .map(|(a, _)| a)
            .filter(|a| a.port() != 0)
            .collect();
        for u in &c.upstreams {
            let Some(url) = &u.url else { continue };
            let own = |l: &&SocketAddr| {
                targets_own_listener(
                    std::slice::from_ref(*l),
                    &url.host,
                    url.port,
                    is_local_address,
                )
            };
            if let Some(l) = listens.iter().find(own) {
                let msg = format!("points at tokenproxy's own listener {l}: requests would loop");
                self.problem(&["upstreams", &u.name, "url"], msg);
            }
        }
        if let Some(parent) = &c.proxy.upstream_proxy {
            let own = |l: &&SocketAddr| {
                let l = std::slice::from_ref(*l);
                targets_own_listener(l, &parent.host, parent.port, is_local_address)
            };
            if let Some(l) = listens.iter().find(own) {
                let msg = format!("points at tokenproxy's own listener {l}: every outbound connection would loop (is the app's HTTP_PROXY expanded here?)");
                self.problem(&["proxy", "upstream_proxy", "url"], msg);
            }
        }
    }

    /// A host, port and path prefix may belong to one upstream only. The key named is
    /// `match`, or `url` when the patterns were derived from it. Upstreams sharing a host by
    /// path must agree on `intercept`, since a CONNECT names the host alone.
    pub(super) fn check_patterns(&mut self, c: &Config, raw: &RawConfig) {
        type Origin = (String, bool, u16);
        let mut claimed: HashMap<(Origin, Option<String>), String> = HashMap::new();
        let mut served: HashMap<Origin, (bool, String)> = HashMap::new();
        for u in &c.upstreams {
            let explicit = raw
                .upstreams
                .get(&u.name)
                .is_some_and(|r| r.match_hosts.is_some());
            let key = if explicit { "match" } else { "url" };
            for p in &u.match_hosts {
                let ports = p.port.map_or(vec![443, 80], |port| vec![port]);
                for port in ports {
                    let origin = (p.host.clone(), p.wildcard, port);
                    let id = (origin.clone(), p.path.clone());
                    match claimed.get(&id) {
                        Some(other) if other != &u.name => {
                            let msg = format!(
                                "{p} (port {port}) is already claimed by upstream {other}; \
                                 an upstream reached only through its reverse listener takes match: []"
                            );
                            self.problem(&["upstreams", &u.name, key], msg);
                            break; // once per pattern, not once per default port
                        }
                        _ => {
                            claimed.insert(id, u.name.clone());
                        }
                    }
                    match served.get(&origin) {
                        Some((intercept, other)) if *intercept != u.intercept => {
                            let msg = format!(
                                "upstream {other} shares {} (port {port}) and says intercept: {intercept}; \
                                 upstreams on one host must agree, as a CONNECT names only the host",
                                p.host
                            );
                            self.problem(&["upstreams", &u.name, "intercept"], msg);
                            break;
                        }
                        Some(_) => {}
                        None => {
                            served.insert(origin, (u.intercept, u.name.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Interception needs the forward listener, an upstream can only ask for it when it is
    /// configured, and a CA from files must be a CA certificate with its key.
    pub(super) fn check_intercept(&mut self, c: &Config, raw: &RawConfig) {
        let Some(intercept) = &c.proxy.intercept else {
            for (name, u) in &raw.upstreams {
                if u.intercept == Some(true) {
                    self.problem(
                        &["upstreams", name, "intercept"],
                        "needs proxy.intercept (the CA that signs the host certificates)",
                    );
                }
            }
            return;
        };
        if c.proxy.listen.is_none() {
            self.problem(
                &["proxy", "intercept"],
                "needs proxy.listen: interception serves CONNECT on the forward listener",
            );
        }
        if let (
            true,
            CaSource::Files {
                cert_file,
                key_file,
            },
        ) = (self.check_sources, &intercept.ca)
        {
            if let Err(e) = FileCa::load(cert_file, key_file) {
                self.problem(&["proxy", "intercept", "ca"], e.to_string());
            }
        }
    }
}
