//! The known HTTP/2 attacks and malformed streams against a listener: each gets the right
//! GOAWAY or RST_STREAM, and the proxy keeps serving.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::h2raw::*;
use common::*;
use tokenproxy::Running;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(5);

async fn setup() -> (FakeIdp, Echo, Running, SocketAddr) {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let upstreams = format!(
        "  api:\n    url: {}\n    listen: 127.0.0.1:0\n    client: idp\n",
        echo.url()
    );
    let p = tokenproxy::start(config(&idp, "  header_read_timeout: 1s", &upstreams))
        .await
        .unwrap();
    let rev = p.reverse_addr("api").unwrap();
    (idp, echo, p, rev)
}

/// The proxy still answers a plain request on a new connection.
async fn healthy(rev: SocketAddr) {
    let r = get(rev, "/after", "api", "").await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn goaway(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .and_then(Frame::error_code)
}

fn reset(frames: &[Frame], stream: u32) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == RST_STREAM && f.stream == stream)
        .and_then(Frame::error_code)
}

#[tokio::test]
async fn rapid_reset_ends_the_connection_with_enhance_your_calm() {
    let (_idp, echo, p, rev) = setup().await;
    let mut s = open(rev).await;
    let headers = owned_block(&get_fields("api", "/"));
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &headers));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let _ = s.write_all(&burst).await; // the server may close before reading it all
    let (frames, _) = read_until(&mut s, WAIT, |f| f.kind == GOAWAY).await;
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    let served = echo.requests.load(Ordering::SeqCst);
    assert!(
        served < 2000,
        "{served} of 2000 reset streams reached the upstream"
    );
    healthy(rev).await;
    p.shutdown().await;
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let (_idp, _echo, p, rev) = setup().await;
    let mut s = open(rev).await;
    // Take the server's SETTINGS (max 100 streams) into effect by acknowledging them.
    let (frames, _) = read_until(&mut s, WAIT, |f| f.kind == SETTINGS && f.flags == 0).await;
    assert!(frames.iter().any(|f| f.kind == SETTINGS), "{frames:?}");
    s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
    // Requests whose bodies never come keep their streams open.
    let mut fields = get_fields("api", "/held");
    fields[0].1 = "POST".into();
    let headers = owned_block(&fields);
    let mut burst = Vec::new();
    for i in 0..101u32 {
        burst.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &headers));
    }
    s.write_all(&burst).await.unwrap();
    let (frames, _) = read_until(&mut s, WAIT, |f| f.kind == RST_STREAM).await;
    assert_eq!(reset(&frames, 201), Some(REFUSED_STREAM), "{frames:?}");
    assert!(frames
        .iter()
        .all(|f| f.kind != RST_STREAM || f.stream == 201));
    // Closing it ends the held streams (and a graceful stop need not wait for them).
    drop(s);
    healthy(rev).await;
    assert!(p.shutdown().await, "drained");
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_and_a_continuation_flood_ends_the_connection() {
    let (_idp, echo, p, rev) = setup().await;
    // 70 KB of headers, over the 64 KiB limit, in HEADERS plus CONTINUATION frames.
    let mut s = open(rev).await;
    let mut fields = get_fields("api", "/big");
    fields.push(("x-big".into(), "a".repeat(70_000)));
    let blockbytes = owned_block(&fields);
    let chunks: Vec<&[u8]> = blockbytes.chunks(16_000).collect();
    let mut out = frame(HEADERS, END_STREAM, 1, chunks[0]);
    for (i, c) in chunks[1..].iter().enumerate() {
        let last = i + 2 == chunks.len();
        out.extend(frame(
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            1,
            c,
        ));
    }
    // Then a well-formed request on the same connection.
    out.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &owned_block(&get_fields("api", "/ok")),
    ));
    s.write_all(&out).await.unwrap();
    let (frames, _) = read_until(&mut s, WAIT, |f| f.kind == HEADERS && f.stream == 3).await;
    let status = |id| {
        frames
            .iter()
            .find(|f| f.kind == HEADERS && f.stream == id)
            .and_then(Frame::status)
    };
    assert_eq!(status(1), Some(431), "{frames:?}");
    assert_eq!(status(3), Some(200), "the connection goes on: {frames:?}");
    assert_eq!(
        echo.requests.load(Ordering::SeqCst),
        1,
        "only the good one went up"
    );
    // A raw client answers no PING, so a graceful stop would wait for it until the drain
    // deadline: close it first.
    drop(s);

    // A header block that never ends: CONTINUATION after CONTINUATION.
    let mut s = open(rev).await;
    let mut out = frame(HEADERS, 0, 1, &owned_block(&get_fields("api", "/")));
    for _ in 0..50 {
        out.extend(frame(CONTINUATION, 0, 1, &[0u8; 16]));
    }
    let _ = s.write_all(&out).await;
    let (frames, _) = read_until(&mut s, WAIT, |f| f.kind == GOAWAY).await;
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    let (_, closed) = read_until(&mut s, WAIT, |_| false).await;
    assert!(closed);
    healthy(rev).await;
    assert!(p.shutdown().await, "drained");
}

#[tokio::test]
async fn malformed_streams_are_refused() {
    let (_idp, echo, p, rev) = setup().await;
    let with = |extra: (&str, &str)| {
        let mut f = get_fields("api", "/");
        f.push((extra.0.into(), extra.1.into()));
        f
    };
    let mut pseudo_after_regular = vec![("x-a".to_string(), "1".to_string())];
    pseudo_after_regular.extend(get_fields("api", "/"));
    let mut no_path = get_fields("api", "/");
    no_path.pop();
    // h2 resets the stream where it can, and ends the connection where the header block
    // itself cannot be trusted.
    let cases = [
        ("unknown pseudo-header", with((":foo", "bar")), GOAWAY),
        (
            "connection-specific header",
            with(("connection", "keep-alive")),
            RST_STREAM,
        ),
        ("te other than trailers", with(("te", "gzip")), RST_STREAM),
        ("upper-case name", with(("X-Upper", "1")), GOAWAY),
        (
            "pseudo-header after a regular one",
            pseudo_after_regular,
            RST_STREAM,
        ),
        ("no :path", no_path, RST_STREAM),
    ];
    for (what, fields, kind) in cases {
        let mut s = open(rev).await;
        let out = frame(HEADERS, END_HEADERS | END_STREAM, 1, &owned_block(&fields));
        s.write_all(&out).await.unwrap();
        let (frames, _) = read_until(&mut s, WAIT, |f| {
            f.kind == GOAWAY || (f.kind == RST_STREAM && f.stream == 1)
        })
        .await;
        let last = frames.last().map(|f| (f.kind, f.error_code()));
        assert_eq!(
            last,
            Some((kind, Some(PROTOCOL_ERROR))),
            "{what}: {frames:?}"
        );
    }
    assert_eq!(
        echo.requests.load(Ordering::SeqCst),
        0,
        "none reached the upstream"
    );
    healthy(rev).await;
    p.shutdown().await;
}

#[tokio::test]
async fn a_ping_flood_does_not_hurt_and_an_idle_connection_is_closed() {
    let (_idp, _echo, p, rev) = setup().await;
    let mut s = open(rev).await;
    let mut flood = Vec::new();
    for i in 0..20_000u64 {
        flood.extend(frame(PING, 0, 0, &i.to_be_bytes()));
    }
    let _ = s.write_all(&flood).await;
    healthy(rev).await;
    // Nothing more is sent: past header_read_timeout (1s) with no stream open, GOAWAY; and
    // as this client never answers the PING of a graceful shutdown, a close 1s later.
    let (frames, closed) = read_until(&mut s, Duration::from_secs(8), |_| false).await;
    assert!(closed, "the idle connection was closed");
    assert_eq!(
        goaway(&frames),
        Some(0),
        "a graceful GOAWAY (NO_ERROR) first"
    );
    p.shutdown().await;
}
