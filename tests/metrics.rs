//! The metrics page stays proportionate: per-upstream request series appear with the first
//! request, and every status code is counted, common or not.
#![allow(clippy::unwrap_used)]

use tokenproxy::metrics::{Metrics, RequestMetrics};

#[test]
fn an_upstream_without_requests_has_no_latency_histogram_and_every_code_counts() {
    let m = Metrics::new().unwrap();
    m.init_upstream("quiet");
    m.init_upstream("busy");
    let quiet = RequestMetrics::new(&m, "quiet");
    let busy = RequestMetrics::new(&m, "busy");
    let page = String::from_utf8(m.render()).unwrap();
    assert!(
        !page.contains("tokenproxy_request_duration_seconds_bucket"),
        "{page}"
    );

    for code in [200, 200, 418, 503, 599] {
        busy.count(http::StatusCode::from_u16(code).unwrap());
    }
    busy.observe(0.02);
    let page = String::from_utf8(m.render()).unwrap();
    for want in [
        r#"tokenproxy_requests_total{code="200",upstream="busy"} 2"#,
        r#"tokenproxy_requests_total{code="418",upstream="busy"} 1"#,
        r#"tokenproxy_requests_total{code="503",upstream="busy"} 1"#,
        r#"tokenproxy_requests_total{code="599",upstream="busy"} 1"#,
        r#"tokenproxy_request_duration_seconds_count{upstream="busy"} 1"#,
    ] {
        assert!(page.contains(want), "missing {want}:\n{page}");
    }
    assert!(!page.contains(r#"tokenproxy_request_duration_seconds_count{upstream="quiet"}"#));
    drop(quiet);
}
