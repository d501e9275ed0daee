//! OpenTelemetry traces (`tracing:`): where a request's time went, and why a token fetch was
//! slow. Off by default, and then nothing here runs: the request path holds an `Option` that
//! is `None`.
//!
//! - [`Tracer`]: made once at start from the config; the `opentelemetry` SDK's tracer with a
//!   parent-based ratio sampler (token fetches are always sampled: they are one per token
//!   lifetime, and the reason to trace at all), and a bounded queue exported in batches on
//!   the tokio runtime (`export`). A full queue drops spans and counts them; an export never
//!   blocks a request, and a collector that is down changes nothing but the counters.
//! - `request`: the spans of one proxied request: the server span (continuing the app's
//!   W3C `traceparent`), the token wait (linked to the fetch that brought the token), each
//!   upstream attempt (its context is the `traceparent` the upstream receives) and the wait
//!   for a connection slot.
//! - The token fetch span is the current OpenTelemetry context while its fetch runs, so the
//!   token endpoint's answer and the shared cache's Redis commands land on it ([`annotate`],
//!   [`child`]) without the lower layers holding a tracer.
//!
//! No header value but the host, no query (unless the access log's `include_query` is on), no
//! token, assertion or key is ever put on a span.

mod export;
mod request;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanKind, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::trace::{
    Sampler, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample, Span,
};
use opentelemetry_sdk::Resource;

pub use export::ExportError;
pub use opentelemetry::context::FutureExt;
pub use opentelemetry::trace::SpanContext;
pub use opentelemetry::{Context, KeyValue};
pub use request::{Attempt, RequestSpan, TokenWait, Traced};

use crate::config::TracingConfig;
use crate::metrics::TraceMetrics;

/// The name of the span of one token request (DESIGN.md, "Contract for the third wave").
pub const FETCH_SPAN: &str = "token fetch";

/// The process's tracer; cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    queue: export::Flusher,
}

impl Tracer {
    /// Starts the exporter on the current tokio runtime.
    pub fn start(config: &TracingConfig, metrics: &TraceMetrics) -> Result<Tracer, ExportError> {
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
            .build();
        let (processor, queue) = export::start(&config.traces_url, &resource, metrics.clone())?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampling::new(config.sample_ratio))
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("tokenproxy");
        Ok(Tracer {
            inner: Arc::new(Inner {
                tracer,
                provider,
                queue,
            }),
        })
    }

    /// Sends what is queued, waiting at most `within` (before a stop, or `exec`'s exit).
    pub async fn flush(&self, within: Duration) {
        self.inner.queue.flush(within).await;
    }

    /// The span of one token request, a root (requests that use its token link to it), and
    /// the context to run the fetch in.
    pub fn fetch_span(&self, upstreams: &str, retries: u32) -> (Context, SpanContext) {
        let mut attributes = vec![KeyValue::new("tokenproxy.upstreams", upstreams.to_owned())];
        if retries > 0 {
            attributes.push(KeyValue::new("tokenproxy.retries", i64::from(retries)));
        }
        let span = self
            .inner
            .tracer
            .span_builder(FETCH_SPAN)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.inner.tracer, &Context::new());
        let id = opentelemetry::trace::Span::span_context(&span).clone();
        (Context::new().with_span(span).with_value(self.clone()), id)
    }

    fn span(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, parent: &Context) -> Span {
        self.inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.inner.tracer, parent)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closes the queue; the exporter task sends what it holds and ends.
        let _ = self.provider.shutdown();
    }
}

/// Sets attributes on the span of the running token fetch, if it is traced.
pub fn annotate(attributes: impl FnOnce() -> Vec<KeyValue>) {
    Context::map_current(|cx| {
        let span = cx.span();
        if span.is_recording() {
            span.set_attributes(attributes());
        }
    });
}

/// Ends a fetch span with its outcome (as `tokenproxy_token_fetches_total` counts it) and,
/// when it failed, the error as `/status` shows it.
pub fn finish_fetch(cx: &Context, outcome: &'static str, error: Option<String>) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("tokenproxy.outcome", outcome));
    if let Some(message) = error {
        span.set_status(opentelemetry::trace::Status::error(message));
    }
    span.end();
}

/// A child of the current context's span (a Redis command inside a token fetch), when the
/// current context is a traced fetch; ended when dropped.
pub fn child(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Option<Child> {
    Context::map_current(|cx| {
        let tracer = cx.get::<Tracer>()?;
        if !cx.span().is_recording() {
            return None;
        }
        let mut span = tracer.span(name, SpanKind::Client, cx);
        opentelemetry::trace::Span::set_attributes(&mut span, attributes());
        Some(Child { span })
    })
}

/// A span that ends when dropped.
pub struct Child {
    span: Span,
}

impl Child {
    pub fn set(&mut self, attribute: KeyValue) {
        opentelemetry::trace::Span::set_attribute(&mut self.span, attribute);
    }

    pub fn failed(&mut self, message: String) {
        opentelemetry::trace::Span::set_status(
            &mut self.span,
            opentelemetry::trace::Status::error(message),
        );
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        opentelemetry::trace::Span::end(&mut self.span);
    }
}

/// Parent-based ratio sampling (an app's sampled `traceparent` is followed, an unsampled one
/// is not; without one, `sample_ratio` decides), except for token fetches, which are roots
/// and always sampled.
#[derive(Debug, Clone)]
struct Sampling {
    requests: Sampler,
}

impl Sampling {
    fn new(ratio: f64) -> Sampling {
        let root = match ratio {
            r if r >= 1.0 => Sampler::AlwaysOn,
            r if r <= 0.0 => Sampler::AlwaysOff,
            r => Sampler::TraceIdRatioBased(r),
        };
        Sampling {
            requests: Sampler::ParentBased(Box::new(root)),
        }
    }
}

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let root = parent.is_none_or(|p| !p.has_active_span());
        let sampler = match root && name == FETCH_SPAN {
            true => &Sampler::AlwaysOn,
            false => &self.requests,
        };
        sampler.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}
