//! Token lifecycle on a paused tokio clock: refresh timing, backoff, Retry-After, stale tokens,
//! waiting requests, single-flight. The clock is virtual, so timings are asserted exactly.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenproxy::config::TokenSettings;
use tokenproxy::metrics::Metrics;
use tokenproxy::token::{
    AccessToken, Ask, FetchError, Fetcher, Fetching, InvalidResponse, Issued, TokenSource,
};
use tokio::time::{sleep, Instant};

type Step = Result<Issued, FetchError>;

/// Answers from a script; when it runs out, fresh tokens `tok-N` living `default_life`.
struct Script {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Duration>>,
    /// What each fetch was told: the token it replaces, and whether an upstream refused it.
    asks: Mutex<Vec<(Option<String>, bool)>>,
    start: Instant,
    default_life: Duration,
    fetch_takes: Duration,
    hang: bool,
}

impl Script {
    fn new(steps: Vec<Step>) -> Arc<Script> {
        Script::with(steps, Duration::from_secs(100), Duration::ZERO, false)
    }
    fn with(
        steps: Vec<Step>,
        default_life: Duration,
        fetch_takes: Duration,
        hang: bool,
    ) -> Arc<Script> {
        Arc::new(Script {
            steps: Mutex::new(steps.into()),
            calls: Mutex::new(Vec::new()),
            asks: Mutex::new(Vec::new()),
            start: Instant::now(),
            default_life,
            fetch_takes,
            hang,
        })
    }
    /// Seconds after start at which each fetch began.
    fn times(&self) -> Vec<f64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs_f64())
            .collect()
    }
}

impl Fetcher for Script {
    fn fetch<'a>(&'a self, ask: Ask<'a>) -> Fetching<'a> {
        let replacing = ask.replacing.map(|h| h.to_str().unwrap().to_string());
        self.asks.lock().unwrap().push((replacing, ask.refused));
        Box::pin(async move {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(self.start.elapsed());
                calls.len()
            };
            if self.hang {
                std::future::pending::<()>().await;
            }
            sleep(self.fetch_takes).await;
            let next = self.steps.lock().unwrap().pop_front();
            next.unwrap_or_else(|| Ok(token(&format!("tok-{n}"), self.default_life)))
        })
    }
}

fn token(t: &str, life: Duration) -> Issued {
    Issued::new(AccessToken::parse(t).unwrap(), life)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn http_err(status: u16, code: Option<&str>, retry_after: Option<Duration>) -> Step {
    Err(FetchError::Http {
        status,
        code: code.map(String::from),
        retry_after,
    })
}

fn transport() -> Step {
    Err(FetchError::Transport("connection refused".into()))
}

fn spawn(script: &Arc<Script>, jitter: fn() -> f64) -> TokenSource {
    spawn_with(script, TokenSettings::default(), jitter)
}

fn spawn_with(script: &Arc<Script>, settings: TokenSettings, jitter: fn() -> f64) -> TokenSource {
    TokenSource::spawn(
        &["inv"],
        script.clone(),
        settings,
        Metrics::new().unwrap(),
        jitter,
        None,
        None,
    )
}

fn header(src: &TokenSource) -> String {
    src.current()
        .unwrap()
        .header()
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_75_to_80_percent_of_the_lifetime() {
    let low = Script::new(vec![]);
    let _a = spawn(&low, || 0.0);
    let high = Script::new(vec![]);
    let _b = spawn(&high, || 1.0);
    sleep(secs(200)).await;
    assert_eq!(low.times(), [0.0, 75.0, 150.0]);
    assert_eq!(high.times(), [0.0, 80.0, 160.0]);
}

#[tokio::test(start_paused = true)]
async fn same_token_or_tiny_lifetimes_cannot_cause_a_refresh_loop() {
    let steps = (0..100)
        .map(|_| Ok(token("same", Duration::from_millis(10))))
        .collect();
    let script = Script::new(steps);
    let _src = spawn(&script, || 0.0);
    sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        script.times().len(),
        11,
        "at most one fetch per min_refresh_interval (1s)"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_is_exponential_capped_and_jittered() {
    let script = Script::new((0..8).map(|_| transport()).collect());
    let _src = spawn(&script, || 1.0);
    sleep(secs(200)).await;
    // Full jitter at its top: waits 1, 2, 4, 8, 16, 30, 30, 30; success at 121 (next at 201).
    assert_eq!(
        script.times(),
        [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0, 121.0]
    );
    let low = Script::new((0..3).map(|_| transport()).collect());
    let _src = spawn(&low, || 0.0);
    sleep(secs(10)).await;
    assert_eq!(
        &low.times()[..4],
        [0.0, 1.0, 2.0, 3.0],
        "jitter 0 waits the minimum"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_clamped() {
    let script = Script::new(vec![
        http_err(503, None, Some(secs(7))),
        http_err(429, None, Some(secs(3600))),
        http_err(429, None, Some(Duration::ZERO)),
    ]);
    let _src = spawn(&script, || 0.0);
    sleep(secs(400)).await;
    assert_eq!(
        &script.times()[..4],
        [0.0, 7.0, 307.0, 308.0],
        "7s, then 1h clamped to 5m, then 0 raised to the 1s minimum"
    );
}

#[tokio::test(start_paused = true)]
async fn old_token_serves_until_expiry_then_requests_fail_fast_and_recover() {
    let mut steps = vec![Ok(token("first", secs(100)))];
    steps.extend((0..30).map(|_| transport()));
    let script = Script::new(steps);
    let src = spawn(&script, || 0.0);
    sleep(secs(80)).await; // refresh at 75s has failed
    assert_eq!(
        header(&src),
        "Bearer first",
        "the old token is still in use"
    );
    assert_eq!(src.get().await.unwrap().header(), "Bearer first");
    sleep(secs(11)).await; // 91s: past lifetime less skew (100s - 10s)
    assert!(src.current().is_none());
    let before = Instant::now();
    let err = src.get().await.unwrap_err();
    assert!(
        before.elapsed() <= secs(1),
        "waits for at most the next attempt (1s away)"
    );
    assert!(err.reason.contains("connection refused"), "{}", err.reason);
    let status = src.status();
    assert!(status.consecutive_failures > 0 && status.last_error.is_some());
    // The script runs out of failures and the server is back: recovery without intervention.
    sleep(secs(30 * 30)).await;
    assert!(src
        .get()
        .await
        .unwrap()
        .header()
        .to_str()
        .unwrap()
        .starts_with("Bearer tok-"));
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_the_first_token_gives_up_after_wait_timeout() {
    let script = Script::with(vec![], secs(100), Duration::ZERO, true);
    let src = spawn(&script, || 0.0);
    let before = Instant::now();
    let err = src.get().await.unwrap_err();
    assert_eq!(before.elapsed(), TokenSettings::default().wait_timeout);
    assert!(err.reason.contains("timed out waiting"), "{}", err.reason);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_waiters_share_one_fetch() {
    let script = Script::with(vec![], secs(100), secs(2), false);
    let src = Arc::new(spawn(&script, || 0.0));
    let waiters: Vec<_> = (0..1000)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.get().await.map(|t| t.header().clone()) })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap(), "Bearer tok-1");
    }
    assert_eq!(script.times(), [0.0]);
}

#[tokio::test(start_paused = true)]
async fn invalid_client_retries_once_at_once_then_backs_off() {
    let script = Script::new(vec![
        http_err(401, Some("invalid_client"), None),
        http_err(401, Some("invalid_client"), None),
        http_err(401, Some("invalid_client"), None),
    ]);
    let _src = spawn(&script, || 0.0);
    sleep(secs(100)).await;
    // Retry after the 1s floor (the secret is re-read), then the slow config-error pace (30s).
    assert_eq!(&script.times()[..4], [0.0, 1.0, 31.0, 61.0]);
}

#[tokio::test(start_paused = true)]
async fn configuration_errors_are_retried_slowly() {
    let script = Script::new(vec![
        http_err(400, Some("invalid_scope"), None),
        http_err(400, Some("unauthorized_client"), None),
    ]);
    let src = spawn(&script, || 1.0);
    sleep(secs(1)).await;
    assert!(src.status().last_error.unwrap().contains("invalid_scope"));
    sleep(secs(100)).await;
    assert_eq!(&script.times()[..3], [0.0, 30.0, 60.0]);
}

#[tokio::test(start_paused = true)]
async fn invalid_answers_are_never_used_and_backed_off() {
    let script = Script::new(vec![
        Err(FetchError::Invalid(InvalidResponse::NotJson)),
        Err(FetchError::Invalid(InvalidResponse::TokenSyntax)),
    ]);
    let src = spawn(&script, || 1.0);
    sleep(Duration::from_millis(500)).await;
    assert!(src.current().is_none());
    sleep(secs(5)).await;
    assert_eq!(script.times(), [0.0, 1.0, 3.0]);
    assert_eq!(header(&src), "Bearer tok-3");
}

#[tokio::test(start_paused = true)]
async fn a_401_forces_one_refresh_per_interval() {
    let script = Script::new(vec![]);
    let src = spawn(&script, || 0.0);
    sleep(secs(5)).await;
    let t1 = src.current().unwrap();
    assert!(src.invalidate(&t1, "inv"), "first 401: refresh");
    assert!(src.current().is_none(), "the refused token is dropped");
    let t2 = src.get().await.unwrap();
    assert_eq!(t2.header(), "Bearer tok-2");
    assert!(
        src.invalidate(&t1, "inv"),
        "a stale token was already replaced: use the new one"
    );
    assert!(
        !src.invalidate(&t2, "inv"),
        "a second forced refresh within 10s is refused"
    );
    assert_eq!(header(&src), "Bearer tok-2");
    sleep(secs(10)).await;
    assert!(src.invalidate(&t2, "inv"));
    src.get().await.unwrap();
    assert_eq!(script.times(), [0.0, 5.0, 15.0]);
    // Each forced fetch is told which token was refused, so a shared cache cannot return it.
    let asks = script.asks.lock().unwrap().clone();
    let ask = |s: &str, refused| (Some(s.to_string()), refused);
    assert_eq!(
        asks,
        [
            (None, false),
            ask("Bearer tok-1", true),
            ask("Bearer tok-2", true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_refresh_says_which_token_it_replaces() {
    let script = Script::new(vec![]);
    let _src = spawn(&script, || 0.0);
    sleep(secs(80)).await;
    let asks = script.asks.lock().unwrap().clone();
    assert_eq!(asks, [(None, false), (Some("Bearer tok-1".into()), false)]);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_clamped_to_max_lifetime() {
    let settings = TokenSettings {
        max_lifetime: secs(1000),
        ..TokenSettings::default()
    };
    let script = Script::new(vec![Ok(token("long", secs(100_000)))]);
    let _src = spawn_with(&script, settings, || 0.0);
    sleep(secs(800)).await;
    assert_eq!(script.times(), [0.0, 750.0]);
}

#[tokio::test(start_paused = true)]
async fn during_a_long_outage_requests_fail_at_once() {
    let settings = TokenSettings {
        backoff_min: secs(20),
        backoff_max: secs(60),
        ..TokenSettings::default()
    };
    let script = Script::new((0..5).map(|_| transport()).collect());
    let src = spawn_with(&script, settings, || 0.0);
    sleep(Duration::from_millis(10)).await;
    let before = Instant::now();
    assert!(src.get().await.is_err());
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "the next attempt (20s) is past wait_timeout (10s)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_during_a_start_up_glitch_waits_for_the_retry() {
    let script = Script::new(vec![transport()]);
    let src = spawn(&script, || 0.0);
    sleep(Duration::from_millis(10)).await;
    let before = Instant::now();
    assert_eq!(src.get().await.unwrap().header(), "Bearer tok-2");
    assert_eq!(
        before.elapsed(),
        Duration::from_millis(990),
        "served by the retry 1s after start"
    );
}
