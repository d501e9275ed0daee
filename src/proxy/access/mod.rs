//! The access log (`access_log`): one line per request through a proxy listener, written when
//! the response has ended (or was abandoned), to the same stream as the other logs, in
//! batches at most 100 ms apart.
//!
//! A line holds what an SRE asks first in an incident, and nothing a secret could hide in: no
//! header value (the host aside) and no token; the query string only with `include_query`.
//! Fields, in JSON or as `key=value` text:
//! `time`, `listener`, `upstream` (or `unmatched`), `method`, `host`, `path`, `protocol`,
//! `status`, `error` (tokenproxy's code when it answered itself), `grpc_status`, `bytes_in`,
//! `bytes_out`, `duration_ms`, `token_wait_ms`, `replayed` (a 401 replay), `connection`
//! (`new` or `reused` upstream connection).

use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::time::Instant;

use super::plan::Entry;
use super::trail::Trail;

use crate::body::{Body, BoxError};
use crate::config::{AccessLog, AccessLogFormat};
use crate::sink::Sink;

/// What is known of a request when it arrives. The URI, method and `Host` are kept as
/// they are (clones that share their bytes) and read only when the line is written.
pub struct Start {
    time: SystemTime,
    started: Instant,
    listener: &'static str,
    method: Method,
    uri: Uri,
    host_header: Option<HeaderValue>,
    include_query: bool,
    protocol: &'static str,
}

impl Start {
    pub fn of<B>(entry: &Entry, req: &Request<B>, include_query: bool) -> Start {
        let uri = req.uri().clone();
        let host_header = match uri.authority() {
            Some(_) => None,
            None => req.headers().get(header::HOST).cloned(),
        };
        Start {
            time: SystemTime::now(),
            started: Instant::now(),
            listener: match entry {
                Entry::Forward => "forward",
                Entry::Reverse(_) => "reverse",
                Entry::Intercepted(_) => "intercepted",
            },
            method: req.method().clone(),
            uri,
            host_header,
            include_query,
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
        }
    }

    fn host(&self) -> &str {
        match (self.uri.authority(), &self.host_header) {
            (Some(a), _) => a.as_str(),
            (None, Some(h)) => h.to_str().unwrap_or(""),
            (None, None) => "",
        }
    }

    fn path(&self) -> &str {
        match (self.include_query, self.uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str(),
            _ => self.uri.path(),
        }
    }
}

/// A line waiting for its response to end.
struct Pending {
    sink: Sink,
    start: Start,
    format: AccessLogFormat,
    upstream: Arc<str>,
    status: u16,
    error: Option<&'static str>,
    grpc_status: Option<u32>,
    trail: Trail,
    bytes_out: u64,
}

/// Makes `resp` write the access-log line for its request when its body has ended.
pub fn attach(
    resp: Response<Body>,
    sink: &Sink,
    log: AccessLog,
    start: Start,
    upstream: Arc<str>,
    error: Option<&'static str>,
    trail: Trail,
) -> Response<Body> {
    let status = resp.status().as_u16();
    let grpc_status = grpc_status(resp.headers());
    resp.map(|body| {
        Logged {
            body,
            line: Some(Box::new(Pending {
                sink: sink.clone(),
                start,
                format: log.format,
                upstream,
                status,
                error,
                grpc_status,
                trail,
                bytes_out: 0,
            })),
        }
        .boxed_unsync()
    })
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A response body that counts what it sends and writes the line when it is done.
struct Logged {
    body: Body,
    line: Option<Box<Pending>>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(line) = &mut self.line {
                    if let Some(data) = f.data_ref() {
                        line.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = f.trailers_ref() {
                        line.grpc_status = grpc_status(trailers).or(line.grpc_status);
                    }
                }
            }
            Poll::Ready(_) => self.write(),
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Logged {
    fn write(&mut self) {
        if let Some(line) = self.line.take() {
            line.sink.push(&line.render());
        }
    }
}

impl Drop for Logged {
    /// hyper drops a body it has sent whole without polling it to the end, and one whose
    /// client went away half-way: either way the request is over.
    fn drop(&mut self) {
        self.write();
    }
}

/// The time as RFC 3339 with milliseconds, written straight into the line.
struct Time(SystemTime);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

#[derive(Serialize)]
struct Fields<'a> {
    time: Time,
    listener: &'a str,
    upstream: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'a str,
    status: u16,
    error: Option<&'a str>,
    grpc_status: Option<u32>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    token_wait_ms: Option<f64>,
    replayed: bool,
    connection: Option<&'a str>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Pending {
    fn render(&self) -> String {
        let s = &self.start;
        let f = Fields {
            time: Time(s.time),
            listener: s.listener,
            upstream: &self.upstream,
            method: s.method.as_str(),
            host: s.host(),
            path: s.path(),
            protocol: s.protocol,
            status: self.status,
            error: self.error,
            grpc_status: self.grpc_status,
            bytes_in: self.trail.bytes_in(),
            bytes_out: self.bytes_out,
            duration_ms: millis(s.started.elapsed()),
            token_wait_ms: self.trail.token_wait.map(millis),
            replayed: self.trail.replayed,
            connection: self.trail.reuse.map(|r| r.as_str()),
        };
        match self.format {
            AccessLogFormat::Json => serde_json::to_string(&f).unwrap_or_default(),
            AccessLogFormat::Text => f.text(),
        }
    }
}

impl Fields<'_> {
    /// `key=value` pairs; values that come from the request (host, path, method) are quoted
    /// as JSON strings so that no byte of theirs can break the line apart.
    fn text(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        format!(
            "{} access listener={} upstream={} method={} host={} path={} protocol={} status={} error={} grpc_status={} bytes_in={} bytes_out={} duration_ms={} token_wait_ms={} replayed={} connection={}",
            humantime::format_rfc3339_millis(self.time.0),
            self.listener,
            q(self.upstream),
            q(self.method),
            q(self.host),
            q(self.path),
            self.protocol,
            self.status,
            self.error.unwrap_or("-"),
            opt(self.grpc_status.map(|g| g.to_string())),
            self.bytes_in,
            self.bytes_out,
            self.duration_ms,
            opt(self.token_wait_ms.map(|t| t.to_string())),
            self.replayed,
            self.connection.unwrap_or("-"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(format: AccessLogFormat) -> Pending {
        let req = Request::builder()
            .uri("http://api.example:8080/v1/items?key=SECRET")
            .body(())
            .unwrap();
        Pending {
            sink: Sink::new(crate::sink::Destination::Memory(Default::default())),
            start: Start::of(&Entry::Forward, &req, false),
            format,
            upstream: Arc::from("api"),
            status: 503,
            error: Some("token_unavailable"),
            grpc_status: None,
            trail: {
                let mut t = Trail::default();
                t.waited(Duration::from_micros(1500));
                t
            },
            bytes_out: 42,
        }
    }

    #[test]
    fn a_json_line_has_every_field_and_no_query() {
        let line = pending(AccessLogFormat::Json).render();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["listener"], "forward");
        assert_eq!(v["upstream"], "api");
        assert_eq!(v["host"], "api.example:8080");
        assert_eq!(v["path"], "/v1/items");
        assert_eq!(v["status"], 503);
        assert_eq!(v["error"], "token_unavailable");
        assert_eq!(v["bytes_out"], 42);
        assert_eq!(v["token_wait_ms"], 1.5);
        assert_eq!(v["replayed"], false);
        assert!(v["connection"].is_null());
        assert!(!line.contains("SECRET"));
        assert_eq!(v.as_object().unwrap().len(), 16);
    }

    #[test]
    fn the_query_is_logged_only_when_asked_for() {
        let req = Request::builder().uri("/x?key=1").body(()).unwrap();
        assert_eq!(Start::of(&Entry::Forward, &req, true).path(), "/x?key=1");
        assert_eq!(Start::of(&Entry::Forward, &req, false).path(), "/x");
    }

    #[test]
    fn a_text_line_quotes_what_came_from_the_request() {
        let line = pending(AccessLogFormat::Text).render();
        assert!(
            line.contains(" access listener=forward upstream=\"api\""),
            "{line}"
        );
        assert!(line.contains("path=\"/v1/items\" "), "{line}");
        assert!(line.contains("error=token_unavailable "), "{line}");
        assert!(line.contains("token_wait_ms=1.5 "), "{line}");
        assert!(line.ends_with("connection=-"), "{line}");
    }
}
