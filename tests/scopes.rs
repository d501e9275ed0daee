//! Least privilege (the seed's security notes): when the authorization server grants more
//! scopes than were asked for, it is counted per upstream, logged once, and `/status` shows
//! what was requested and what was granted. A narrower or equal grant, or none said, is not.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;

fn granted(scope: &str) -> Answer {
    Answer::json(
        200,
        &format!(
            r#"{{"access_token":"t-{}","token_type":"Bearer","expires_in":3600,"scope":"{scope}"}}"#,
            scope.len()
        ),
    )
}

#[tokio::test]
async fn a_broader_grant_is_counted_and_shown() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    idp.push(granted("orders:read orders:admin"));
    idp.push(granted("stock:read"));
    let config = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("orders", &echo.url(), "orders.example.com", "idp")
        .set(
            "upstreams.orders.scopes",
            serde_json::json!(["orders:read"]),
        )
        .upstream("stock", &echo.url(), "stock.example.com", "idp")
        .set(
            "upstreams.stock.scopes",
            serde_json::json!(["stock:read", "stock:write"]),
        );
    let p = tokenproxy::start(config.config()).await.unwrap();
    eventually(|| idp.calls() == 2).await;
    let admin = p.admin_addr().unwrap();
    let status = get(admin, "/status", "x", "").await;
    let rows = status.json()["upstreams"].as_array().unwrap().clone();
    let row = |name: &str| rows.iter().find(|r| r["upstream"] == name).unwrap().clone();
    let scopes: Vec<serde_json::Value> = ["orders", "stock"]
        .iter()
        .map(|n| row(n)["scopes"].clone())
        .collect();
    // The FakeIdp answers in request order, and the two sources fetch at once: whichever
    // asked for orders:read alone must not be told it got orders:admin unnoticed.
    let m = get(admin, "/metrics", "x", "").await.body;
    let broader = |u: &str| {
        m.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tokenproxy_token_scope_broader_total{{upstream=\"{u}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .to_string()
    };
    for (name, s) in ["orders", "stock"].iter().zip(&scopes) {
        let requested: Vec<&str> = s["requested"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let granted: Vec<&str> = s["granted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let wider = granted.iter().any(|g| !requested.contains(g));
        assert_eq!(
            broader(name),
            if wider { "1" } else { "0" },
            "{name}: {s}\n{m}"
        );
    }
    let total: u32 = ["orders", "stock"]
        .iter()
        .map(|n| broader(n).parse::<u32>().unwrap())
        .sum();
    assert_eq!(total, 1, "exactly one of the two grants was broader:\n{m}");
    p.shutdown().await;
}

#[test]
fn broader_is_a_set_comparison() {
    use tokenproxy::token::response::broader_than;
    let req = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(broader_than(&req(&["a"]), Some("a b")));
    assert!(!broader_than(&req(&["a", "b"]), Some("b a")));
    assert!(!broader_than(&req(&["a", "b"]), Some("a")));
    assert!(!broader_than(&req(&["a"]), None), "nothing said");
    assert!(
        !broader_than(&[], Some("x y")),
        "nothing asked: the server's default"
    );
    assert!(
        !broader_than(&req(&["a"]), Some("a  ")),
        "extra spaces are not scopes"
    );
}
