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

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
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
pub struct Traced {
    cx: Context,
    tracer: Tracer,
}

impl Tracer {
    /// Starts the server span of `req`, which came in on `listener` (`forward`, `reverse`,
    /// `intercept`), for `host`; the query goes on it only with `include_query` (the access
    /// log's, read from the config in force, so a reload that turns it off is obeyed at once).
    pub fn request<B>(
        &self,
        req: &Request<B>,
        listener: &'static str,
        host: &str,
        include_query: bool,
    ) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
        // Sampled first, with nothing on it: an unsampled request pays for no attributes.
        let span = self
            .inner
            .tracer
            .span_builder(method_name(req.method()))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.inner.tracer, &parent);
        let cx = parent.with_span(span);
        let recording = cx.span().is_recording();
        if recording {
            let uri = req.uri();
            let mut attributes = vec![
                KeyValue::new("http.request.method", method_name(req.method())),
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
                if let Some(q) = uri.query().filter(|_| include_query) {
                    attributes.push(KeyValue::new("url.query", q.to_owned()));
                }
            }
            cx.span().set_attributes(attributes);
        }
        RequestSpan {
            recording,
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
            .span_builder(method_name(method))
            .with_kind(SpanKind::Client);
        let builder = match self.recording {
            false => builder,
            true => {
                let mut attributes =
                    vec![KeyValue::new("http.request.method", method_name(method))];
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
    /// headers, replacing the app's. (Written here rather than by the SDK's propagator, which
    /// formats through `fmt` and parses the header name and value back: a third of the cost
    /// of an unsampled request. The format is W3C Trace Context's, version 00.)
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = self.cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        headers.insert(TRACEPARENT, traceparent(context));
        let state = context.trace_state().header();
        match HeaderValue::from_str(&state) {
            Ok(value) if !state.is_empty() => {
                headers.insert(TRACESTATE, value);
            }
            _ => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// What the pool needs to put a connection-queue span under this attempt, when recorded.
    pub fn parent(&self) -> Option<Traced> {
        self.cx.span().is_recording().then(|| Traced {
            cx: self.cx.clone(),
            tracer: self.tracer.clone(),
        })
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
    pub fn queue_span(&self) -> Child {
        let span = self
            .tracer
            .span("connection queue", SpanKind::Internal, &self.cx);
        Child { span }
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-{trace id}-{span id}-{flags}`, lowercase hex.
fn traceparent(context: &SpanContext) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = Vec::with_capacity(55);
    let mut field = |bytes: &[u8]| {
        if !text.is_empty() {
            text.push(b'-');
        }
        for b in bytes {
            text.push(HEX[usize::from(b >> 4)]);
            text.push(HEX[usize::from(b & 0x0f)]);
        }
    };
    field(&[0]);
    field(&context.trace_id().to_bytes());
    field(&context.span_id().to_bytes());
    field(&[context.trace_flags().to_u8()]);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The span name and `http.request.method` of `method`: static for the standard ones.
fn method_name(method: &http::Method) -> std::borrow::Cow<'static, str> {
    use http::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return std::borrow::Cow::Owned(method.as_str().to_owned()),
    };
    std::borrow::Cow::Borrowed(name)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// Ours writes what the SDK's propagator writes, for sampled and unsampled contexts.
    #[test]
    fn traceparent_is_the_propagators() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let context = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
                SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
                flags,
                true,
                TraceState::default(),
            );
            let cx = Context::new().with_remote_span_context(context.clone());
            let mut theirs = HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut theirs);
            let ours = traceparent(&context);
            assert_eq!(
                Some(ours.to_str().unwrap_or_default()),
                theirs.get("traceparent").map(String::as_str)
            );
        }
    }
}
