//! tokenproxy: an OAuth 2.0 client-credentials sidecar.
//!
//! It obtains a token per upstream from an authorization server, keeps it fresh, and adds
//! `Authorization: Bearer <token>` to the app's outgoing requests. The modules are layers,
//! listed below lowest first; each imports only from the layers beneath it:
//!
//! - foundations: [`body`] (the one body type), [`host`] (host and path rules, `match`
//!   patterns, the loop rule),
//!   [`jose`] (client assertions signed with ring), [`metrics`], [`pki`] (CA files), [`sink`]
//!   (batched lines, the access log's),
//!   [`sniff`] (what a connection opens with), [`tls`] (rustls, one provider);
//! - [`config`]: the YAML file, parsed then validated into one immutable [`Config`];
//! - [`trace`]: OpenTelemetry spans of requests and token fetches, exported over OTLP/HTTP
//!   (`tracing`), nothing at all when it is off;
//! - [`egress`]: how outbound connections leave: direct, or through the parent proxy
//!   (`proxy.upstream_proxy`), with the deny list applied to what names resolve to;
//! - [`token`] (endpoint client, cache and refresh per distinct token request), [`upstream`] (connection
//!   pools, the shared client, the router), [`intercept`] (the interception CA, host
//!   certificates, trust files), [`serve`] (HTTP/1 and HTTP/2 serving and drain);
//! - [`cache`]: the token cache shared by replicas, on Redis, in front of the token endpoint;
//! - [`error`]: why a start or a reload failed ([`StartError`]);
//! - [`snapshot`]: what requests read, behind one `ArcSwap`;
//! - [`proxy`] (the request pipeline: plan, attempt, send, finish) and [`admin`];
//! - [`listeners`]: sockets reconciled against the config;
//! - [`running`]: [`start`] binds every listener and returns a [`Running`] proxy with its bound
//!   addresses, so tests run the whole thing in-process on port 0; [`Running::apply`] swaps in
//!   a new config and [`Running::shutdown`] drains;
//! - entry points: [`reload`] (the config watched and applied), [`signals`];
//! - [`cli`]: the subcommands (`run`, `validate`, `ca`, `exec`, `token`, `status`, `wait`,
//!   `demo`), one config loader and one table of exit codes.

// The layers, lowest first, one group per layer (`tests/layers.rs` reads this list). A module
// imports only from modules in groups above its own; modules in one group are peers and do
// not import each other. The README draws the same picture.
//
// layer: foundations, no imports from the crate
pub mod body;
pub mod host;
pub mod jose;
pub mod metrics;
pub mod pki;
pub mod sink;
pub mod sniff;
pub mod tls;
// layer: the validated config
pub mod config;
// layer: traces out (OpenTelemetry), for every layer above
pub mod trace;
// layer: outbound connections, direct or through the parent proxy
pub mod egress;
// layer: tokens, upstream connections, interception certificates, HTTP serving
pub mod intercept;
pub mod serve;
pub mod token;
pub mod upstream;
// layer: the token cache shared by replicas
pub mod cache;
// layer: start-up errors
pub mod error;
// layer: what a request reads
pub mod snapshot;
// layer: the request pipeline and the admin views
pub mod admin;
pub mod proxy;
// layer: sockets reconciled against the config
pub mod listeners;
// layer: a started proxy
pub mod running;
// layer: entry points for the binary
pub mod reload;
pub mod signals;
// layer: the subcommands
pub mod cli;

pub use config::Config;
pub use error::StartError;
pub use running::{random_jitter, start, start_logging_to, start_with, Running};

pub use reload::ConfigSource;
