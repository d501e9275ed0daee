//! `tokenproxy demo`: a self-contained demonstration on loopback. Demo only.
//!
//! Starts a tiny built-in authorization server (client `demo-client`, throwaway secret), an
//! echo upstream that answers with the `Authorization` header it received, and the proxy with
//! a forward and a reverse listener, all on ephemeral 127.0.0.1 ports. It sends one request
//! through each listener, and one `https://` request through the forward listener, which
//! tokenproxy intercepts with a certificate from its generated CA, one to an upstream whose
//! tokens are DPoP-bound, and one to an upstream whose client holds no secret (a token the
//! demo's stand-in platform wrote to a file is its client assertion); it prints what the
//! upstream saw, and `curl` lines to try.

mod calls;
mod error;
mod peers;

pub use error::DemoError;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::serve;
use calls::{h2c_get, https_get, raw_get};
use peers::{
    echo_handler, token_endpoint, Platform, API_HOST, BOUND_HOST, CLIENT_ID, CLIENT_SECRET,
    FED_HOST,
};

/// Runs the demo; with `once`, exits after the self-check instead of serving until `stop`.
pub async fn run(once: bool, stop: impl std::future::Future<Output = ()>) -> Result<(), DemoError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let peers = Peers::start(stop_rx).await?;
    let trust_dir = std::env::temp_dir().join(format!("tokenproxy-demo-{}", std::process::id()));
    // The platform's token for the secretless client, written as kubelet would project it.
    std::fs::create_dir_all(&trust_dir)?;
    std::fs::write(trust_dir.join("token"), peers.platform.token()?)?;
    let proxy = crate::running::start(Config::from_yaml(&peers.config(&trust_dir))?).await?;
    let addrs = (
        proxy.forward_addr(),
        proxy.admin_addr(),
        proxy.reverse_addr("demo-api"),
    );
    let (Some(fwd), Some(admin), Some(rev)) = addrs else {
        return Err(DemoError::Check("listeners did not start".into()));
    };
    let trust = trust_dir.display();
    println!(
        "tokenproxy demo: DEMONSTRATION ONLY, everything on 127.0.0.1 with throwaway credentials\n"
    );
    println!(
        "  authorization server  http://{}/token   (built in, client_id {CLIENT_ID})",
        peers.idp
    );
    println!(
        "  echo upstream         http://{}        (answers with the Authorization header it got)",
        peers.echo
    );
    println!("  forward listener      {fwd}            (use as HTTP_PROXY; {API_HOST} is routed to the echo upstream)");
    println!("  reverse listener      http://{rev}     (upstream demo-api)");
    println!("  admin                 http://{admin}\n");
    let ca = proxy
        .app
        .interceptor
        .as_ref()
        .map(|i| i.authority.trust_anchor.clone())
        .ok_or_else(|| DemoError::Check("interception did not start".into()))?;
    show_calls(fwd, rev, ca, &trust.to_string()).await?;
    let metrics = String::from_utf8_lossy(&proxy.app.metrics.render()).to_string();
    println!("Token requests made to the authorization server: {} (one per distinct token request and lifetime, shared by all requests)", peers.issued.load(Ordering::Relaxed));
    for line in metrics.lines().filter(|l| {
        l.starts_with("tokenproxy_requests_total")
            || l.starts_with("tokenproxy_token_fetches_total{") && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    println!("\nTry it yourself:");
    println!("  curl -x http://{fwd} http://{API_HOST}/hello");
    println!("  curl http://{rev}/hello");
    println!("  curl --http2-prior-knowledge http://{rev}/hello");
    println!("  curl --proxy http://{fwd} --cacert {trust}/ca.pem https://{API_HOST}/hello");
    println!("  curl http://{admin}/status");
    println!("  curl -s http://{admin}/metrics | grep ^tokenproxy_");
    if !once {
        println!("\nServing until Ctrl-C.");
        stop.await;
    }
    proxy.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_dir_all(&trust_dir);
    Ok(())
}

/// The built-in authorization server and echo upstream, on ephemeral loopback ports.
struct Peers {
    idp: SocketAddr,
    echo: SocketAddr,
    /// Tokens the authorization server has issued.
    issued: Arc<AtomicU64>,
    /// Signs the secretless client's token file; the authorization server checks it.
    platform: Arc<Platform>,
}

impl Peers {
    async fn start(stop: watch::Receiver<bool>) -> Result<Peers, DemoError> {
        let issued = Arc::new(AtomicU64::new(0));
        let platform = Arc::new(Platform::new()?);
        let idp = TcpListener::bind("127.0.0.1:0").await?;
        let idp_addr = idp.local_addr()?;
        let (counter, trusted) = (issued.clone(), platform.clone());
        tokio::spawn(serve::serve(
            idp,
            move |req| token_endpoint(counter.clone(), trusted.clone(), req),
            stop.clone(),
        ));
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(serve::serve(
            echo,
            |req| async move { echo_handler(req) },
            stop,
        ));
        Ok(Peers {
            idp: idp_addr,
            echo: echo_addr,
            issued,
            platform,
        })
    }

    /// The demo's config: a bearer client and a DPoP client at the built-in server, and an
    /// upstream for each (one with a reverse listener), with interception on.
    fn config(&self, trust_dir: &std::path::Path) -> String {
        let (idp_addr, echo_addr, trust) = (self.idp, self.echo, trust_dir.display());
        format!(
            "proxy:\n  listen: 127.0.0.1:0\n  unmatched: deny\n  intercept:\n    ca: generate\n    trust_dir: {trust}\nadmin:\n  listen: 127.0.0.1:0\n\
             clients:\n  demo-idp:\n    token_endpoint: http://{idp_addr}/token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n\
               \x20 demo-dpop:\n    token_endpoint: http://{idp_addr}/token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    token_type: dpop\n\
               \x20 demo-federated:\n    token_endpoint: http://{idp_addr}/token\n    auth_method: client_assertion\n    client_assertion: {{ file: {trust}/token }}\n\
             upstreams:\n  demo-api:\n    url: http://{echo_addr}\n    match: [{API_HOST}]\n    listen: 127.0.0.1:0\n    client: demo-idp\n    scopes: [api:read, api:write]\n\
               \x20 demo-admin:\n    url: http://{echo_addr}\n    match: [{API_HOST}/admin/*]\n    client: demo-idp\n    scopes: [api:read, api:write, api:admin]\n\
               \x20 demo-bound:\n    url: http://{echo_addr}\n    match: [{BOUND_HOST}]\n    client: demo-dpop\n    scopes: [api:read]\n\
               \x20 demo-federated:\n    url: http://{echo_addr}\n    match: [{FED_HOST}]\n    client: demo-federated\n    scopes: [api:read]\n"
        )
    }
}

/// One request through each way in, printed as the curl line and what the upstream saw;
/// then the self-check: a bearer token on each, a DPoP-bound one with its proof.
async fn show_calls(
    fwd: SocketAddr,
    rev: SocketAddr,
    ca: rustls_pki_types::CertificateDer<'static>,
    trust: &str,
) -> Result<(), DemoError> {
    let via_forward = raw_get(fwd, &format!("http://{API_HOST}/orders?id=42"), API_HOST).await?;
    println!("$ curl -x http://{fwd} http://{API_HOST}/orders?id=42\n{via_forward}\n");
    let via_reverse = raw_get(rev, "/inventory", &rev.to_string()).await?;
    println!("$ curl http://{rev}/inventory\n{via_reverse}\n");
    let via_h2 = h2c_get(rev, "/inventory?via=h2").await?;
    println!("$ curl --http2-prior-knowledge http://{rev}/inventory?via=h2\n{via_h2}");
    println!("  (HTTP/2 from the app, with prior knowledge; HTTP/1.1 to this upstream)\n");
    let via_tls = https_get(fwd, ca, "/orders?id=42").await?;
    println!("$ curl --proxy http://{fwd} --cacert {trust}/ca.pem https://{API_HOST}/orders?id=42\n{via_tls}");
    println!("  (HTTPS intercepted: tokenproxy answered the CONNECT with a certificate for {API_HOST} from its generated CA)\n");
    let admin = raw_get(fwd, &format!("http://{API_HOST}/admin/users"), API_HOST).await?;
    println!("$ curl -x http://{fwd} http://{API_HOST}/admin/users\n{admin}");
    println!("  (one host, two identities: /admin/ paths match upstream demo-admin, which asks for api:admin and has a token of its own)\n");
    let bound = raw_get(
        fwd,
        &format!("http://{BOUND_HOST}/orders?id=42"),
        BOUND_HOST,
    )
    .await?;
    println!("$ curl -x http://{fwd} http://{BOUND_HOST}/orders?id=42\n{bound}");
    println!("  (a DPoP-bound token: the upstream gets a new proof with each request, signed with a key only tokenproxy holds)\n");
    let federated = raw_get(fwd, &format!("http://{FED_HOST}/orders?id=42"), FED_HOST).await?;
    println!("$ curl -x http://{fwd} http://{FED_HOST}/orders?id=42\n{federated}");
    println!("  (no secret: this client authenticated with a platform-issued token read from {trust}/token,");
    println!("   as a pod does with its projected service-account token; see docs/no-long-lived-secret.md)\n");
    let bearer = [&via_forward, &via_reverse, &via_h2, &via_tls]
        .iter()
        .all(|r| r.contains("Bearer demo-"));
    let dpop = bound.contains("DPoP demo-") && bound.contains(r#""htm":"GET""#);
    let token = |r: &str| {
        let v: serde_json::Value = serde_json::from_str(r).unwrap_or_default();
        v["authorization"].as_str().map(String::from)
    };
    let by_path = admin.contains("Bearer demo-") && token(&admin) != token(&via_forward);
    if !(bearer && by_path && dpop && federated.contains("Bearer demo-fed-")) {
        return Err(DemoError::Check(
            "the upstream did not receive a bearer token, another for /admin/, a DPoP-bound one and a federated one"
                .into(),
        ));
    }
    Ok(())
}
