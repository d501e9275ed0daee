//! Spans out of the process: a bounded queue, drained in batches by one task on the tokio
//! runtime into `opentelemetry-otlp`'s OTLP/HTTP (protobuf) exporter, which posts with a
//! reqwest client of ours (rustls, no proxy).
//!
//! A request that ends a span only tries to put it on the queue: when the queue is full the
//! span is dropped and counted (`tokenproxy_trace_spans_dropped_total{reason="queue_full"}`),
//! never waited for. A batch the collector does not take is dropped and counted too
//! (`reason="export_failed"`), and logged at most once a minute: a collector that is down
//! costs nothing but those counters.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::TraceMetrics;

/// Spans waiting to be exported, at most (the OpenTelemetry SDKs' default).
const QUEUE: usize = 2048;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// A span waits at most this long for its batch to fill.
const DELAY: Duration = Duration::from_secs(1);
/// One export request, at most.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The collector's answer is a small protobuf; more is not read.
const MAX_ANSWER: usize = 64 * 1024;
/// A failing collector is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tracing: the OTLP exporter: {0}")]
    Exporter(String),
    #[error("tracing: the HTTP client: {0}")]
    Client(String),
}

enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The SDK's span processor: ended spans go on the queue.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::Sender<Message>,
    metrics: TraceMetrics,
}

/// Asks the export task to send what it holds.
pub struct Flusher {
    tx: mpsc::Sender<Message>,
}

/// Starts the export task; returns the processor for the provider and a way to flush.
pub fn start(
    traces_url: &str,
    resource: &Resource,
    metrics: TraceMetrics,
) -> Result<(Queue, Flusher), ExportError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(
            crate::tls::client_config(None).map_err(|e| ExportError::Client(e.to_string()))?,
        )
        .timeout(EXPORT_TIMEOUT)
        .connect_timeout(EXPORT_TIMEOUT)
        .pool_max_idle_per_host(1)
        .user_agent(concat!("tokenproxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ExportError::Client(e.to_string()))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Post(http))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ExportError::Exporter(e.to_string()))?;
    exporter.set_resource(resource);
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(drain(rx, exporter, metrics.clone()));
    Ok((
        Queue {
            tx: tx.clone(),
            metrics,
        },
        Flusher { tx },
    ))
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(Message::Span(Box::new(span))).is_err() {
            self.metrics.dropped_queue_full.inc();
        }
    }

    /// The SDK's flush is synchronous and may be called on a runtime thread; the exporter's
    /// own asynchronous [`Flusher::flush`] is the one that waits.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Flusher {
    pub async fn flush(&self, within: Duration) {
        let (done, sent) = oneshot::channel();
        let asked = async {
            if self.tx.send(Message::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(within, asked).await.is_err() {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "tracing: spans not all exported before the deadline"
            );
        }
    }
}

/// The export task: batches of up to [`BATCH`] spans, sent when full, after [`DELAY`], or
/// when asked to flush; ends when every sender is gone.
async fn drain(
    mut rx: mpsc::Receiver<Message>,
    exporter: opentelemetry_otlp::SpanExporter,
    metrics: TraceMetrics,
) {
    let mut logged: Option<Instant> = None;
    // Idle until the first message of a batch: no timer ticks while nothing is traced.
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + DELAY;
        let mut batch = Vec::with_capacity(BATCH);
        let mut next = Some(first);
        // Until the batch is full, the delay is up, a flush is asked for, or the queue closes.
        let (flushed, open) = loop {
            match next {
                Some(Message::Span(span)) => batch.push(*span),
                Some(Message::Flush(done)) => break (Some(done), true),
                None => break (None, false),
            }
            if batch.len() == BATCH {
                break (None, true);
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(message) => next = message,
                Err(_) => break (None, true),
            }
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match exporter.export(batch).await {
                Ok(()) => metrics.exported.inc_by(n),
                Err(e) => {
                    metrics.dropped_export_failed.inc_by(n);
                    if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        logged = Some(Instant::now());
                        tracing::warn!(error = %e, spans = n, "tracing: the collector did not take a batch of spans; they are dropped (logged at most once a minute)");
                    }
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// `opentelemetry-http`'s client interface on reqwest, the client tokenproxy already has.
#[derive(Debug)]
struct Post(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Post {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let mut resp = self.0.execute(request).await?;
        let mut answer = http::Response::builder().status(resp.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = resp.headers().clone();
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}
