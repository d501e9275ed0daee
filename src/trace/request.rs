//! The spans of one proxied request, named and shaped by OpenTelemetry's HTTP semantic
//! conventions: a server span named by the method (continuing the app's W3C `traceparent`
//! and `tracestate`), and under it a `token wait` span (linked to the `token fetch` that
//! brought the token) and one client span per upstream attempt, whose context is the
//! `traceparent` the upstream receives. A second attempt (after a 401, a refused stream, a
//! DPoP nonce) says why in `tokenproxy.retry_reason` and counts in
//! `http.request.resend_count`; a wait for a connection slot is a `connection queue` span
//! under its attempt.
//!
//! Attributes are the method, the host (`server.address`), the path (`url.path`; the query
//! only with the access log's `include_query`), the protocol, the upstream's name, the status
//! and tokenproxy's error code: no other header, never a token.

use http::{HeaderMap, Request, Uri, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::{Child, Tracer};

/// The server span of one request, and the context its children start in.
pub struct RequestSpan {
    tracer: Tracer,
    cx: Context,
    recording: bool,
}

/// A request's attempt context, put in the request's extensions for the upstream pool: a
/// wait for a connection slot becomes a span under it.
#[derive(Clone)]
pub struct Traced(Context);

impl Tracer {
    /// Starts the server span of `req`, which came in on `listener` (`forward`, `reverse`,
    /// `intercept`), for `host`.
    pub fn request<B>(&self, req: &Request<B>, listener: &'static str, host: &str) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
        let uri = req.uri();
        let mut attributes = vec![
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("network.protocol.version", protocol(req.version())),
            KeyValue::new("tokenproxy.listener", listener),
        ];
        if !host.is_empty() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(scheme) = uri.scheme_str() {
            attributes.push(KeyValue::new("url.scheme", scheme.to_owned()));
        }
        if req.method() != http::Method::CONNECT {
            attributes.push(KeyValue::new("url.path", uri.path().to_owned()));
            if let Some(q) = uri.query().filter(|_| self.inner.include_query) {
                attributes.push(KeyValue::new("url.query", q.to_owned()));
            }
        }
        let span = self
            .inner
            .tracer
            .span_builder(req.method().as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.inner.tracer, &parent);
        let cx = parent.with_span(span);
        RequestSpan {
            recording: cx.span().is_recording(),
            tracer: self.clone(),
            cx,
        }
    }
}

impl RequestSpan {
    /// Notes the upstream the request was matched to.
    pub fn upstream(&self, name: &str) {
        if self.recording {
            let name = KeyValue::new("tokenproxy.upstream", name.to_owned());
            self.cx.span().set_attribute(name);
        }
    }

    /// The `token wait` span, when the request is traced; [`TokenWait::got`] links it to the
    /// fetch that brought the token.
    pub fn token_wait(&self) -> Option<TokenWait> {
        self.recording.then(|| TokenWait {
            child: Child {
                span: self.tracer.span("token wait", SpanKind::Internal, &self.cx),
            },
        })
    }

    /// A span for one send to the upstream at `uri`: the `n`th resend (0 for the first
    /// send), after `retry`. Its context goes upstream in `traceparent` whether or not the
    /// request is sampled (an unsampled one says so in its flags).
    pub fn attempt(
        &self,
        method: &http::Method,
        uri: &Uri,
        n: u32,
        retry: Option<&'static str>,
    ) -> Attempt {
        let builder = self
            .tracer
            .inner
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Client);
        let builder = match self.recording {
            false => builder,
            true => {
                let mut attributes = vec![KeyValue::new(
                    "http.request.method",
                    method.as_str().to_owned(),
                )];
                if let Some(host) = uri.host() {
                    attributes.push(KeyValue::new("server.address", host.to_owned()));
                }
                if let Some(port) = uri.port_u16() {
                    attributes.push(KeyValue::new("server.port", i64::from(port)));
                }
                if n > 0 {
                    attributes.push(KeyValue::new("http.request.resend_count", i64::from(n)));
                }
                if let Some(why) = retry {
                    attributes.push(KeyValue::new("tokenproxy.retry_reason", why));
                }
                builder.with_attributes(attributes)
            }
        };
        let span = builder.start_with_context(&self.tracer.inner.tracer, &self.cx);
        Attempt {
            cx: self.cx.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Ends the server span with the answer's status and tokenproxy's error code, if any.
    pub fn end(self, status: u16, error: Option<&'static str>) {
        let span = self.cx.span();
        if self.recording {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if let Some(code) = error {
                span.set_attribute(KeyValue::new("error.type", code));
            }
            if status >= 500 {
                span.set_status(Status::error(error.unwrap_or_default()));
            }
        }
        span.end();
    }
}

/// The `token wait` span of a request.
pub struct TokenWait {
    child: Child,
}

impl TokenWait {
    /// The token came: link to the fetch that brought it.
    pub fn got(mut self, fetched_by: Option<&SpanContext>) {
        if let Some(fetch) = fetched_by.filter(|f| f.is_valid()) {
            opentelemetry::trace::Span::add_link(&mut self.child.span, fetch.clone(), Vec::new());
        }
    }

    /// No token: the wait ended with `code`.
    pub fn failed(mut self, code: &'static str) {
        self.child.set(KeyValue::new("error.type", code));
        self.child.failed(code.to_owned());
    }
}

/// One upstream attempt's client span; ended when dropped (by [`Attempt::answered`] or
/// [`Attempt::failed`] first, when it is recorded).
pub struct Attempt {
    cx: Context,
    tracer: Tracer,
}

impl Attempt {
    /// Writes this attempt's `traceparent` (and the app's `tracestate`) into the request's
    /// headers, replacing the app's.
    pub fn inject(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeaderInjector(headers));
    }

    /// What the pool needs to put a connection-queue span under this attempt, when recorded.
    pub fn parent(&self) -> Option<Traced> {
        self.cx
            .span()
            .is_recording()
            .then(|| Traced(self.cx.with_value(self.tracer.clone())))
    }

    pub fn answered(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(String::new()));
        }
    }

    pub fn failed(&self, code: &'static str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", code));
        span.set_status(Status::error(code));
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

impl Traced {
    /// The `connection queue` span, from the wait's start to its end (when dropped).
    pub fn queue_span(&self) -> Option<Child> {
        let tracer = self.0.get::<Tracer>()?;
        let span = tracer.span("connection queue", SpanKind::Internal, &self.0);
        Some(Child { span })
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
