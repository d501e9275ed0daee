//! An OTLP/HTTP collector on 127.0.0.1:0 that decodes what it receives with the
//! `opentelemetry-proto` messages, for exact checks of tokenproxy's spans.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokenproxy::body::{full, Body};
use tokenproxy::serve as server;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One span as received, ids in hex.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub attributes: BTreeMap<String, String>,
    /// `span_id`s of linked spans.
    pub links: Vec<String>,
    pub service: String,
    pub error: bool,
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Clone)]
pub struct Collector {
    pub addr: SocketAddr,
    pub spans: Arc<Mutex<Vec<Span>>>,
    /// Every request body as received, for canary checks.
    pub raw: Arc<Mutex<Vec<u8>>>,
    pub paths: Arc<Mutex<Vec<String>>>,
    _stop: Arc<watch::Sender<bool>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let c = Collector {
            addr: listener.local_addr().unwrap(),
            spans: Arc::default(),
            raw: Arc::default(),
            paths: Arc::default(),
            _stop: Arc::new(stop),
        };
        let me = c.clone();
        tokio::spawn(server::serve(listener, move |req| me.clone().take(req), rx));
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    pub fn named(&self, name: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    pub fn in_trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans();
        spans
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    async fn take(self, req: Request<Incoming>) -> Response<Body> {
        self.paths
            .lock()
            .unwrap()
            .push(req.uri().path().to_string());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        self.raw.lock().unwrap().extend_from_slice(&body);
        let export = ExportTraceServiceRequest::decode(body).unwrap();
        let mut out = Vec::new();
        for rs in export.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| strings(&r.attributes).remove("service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: strings(&s.attributes),
                        links: s.links.iter().map(|l| hex(&l.span_id)).collect(),
                        service: service.clone(),
                        error: s.status.is_some_and(|st| st.code == 2),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(out);
        let mut resp = Response::new(full(""));
        resp.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        resp
    }
}

fn strings(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
