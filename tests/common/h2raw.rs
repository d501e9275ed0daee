//! A raw HTTP/2 client, frame by frame, so hostile tests can send what no well-behaved
//! client library would: resets in a burst, oversized or malformed header blocks.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// HTTP/2 error codes seen in RST_STREAM and GOAWAY.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The `:status` of a HEADERS frame whose block starts with it, as h2's encoder writes
    /// it: an indexed static entry (8–14), or a literal on name index 8 whose three digits are
    /// Huffman-coded.
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        let first = *self.payload.first()?;
        let indexed = [
            (8, 200),
            (9, 204),
            (10, 206),
            (11, 304),
            (12, 400),
            (13, 404),
            (14, 500),
        ];
        if first & 0x80 != 0 {
            return indexed
                .iter()
                .find(|(i, _)| *i == first & 0x7f)
                .map(|(_, s)| *s);
        }
        if first & 0x3f != 8 || self.payload.get(1)? & 0x80 == 0 {
            return None;
        }
        let len = usize::from(self.payload[1] & 0x7f);
        let bits: Vec<bool> = self
            .payload
            .get(2..2 + len)?
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
            .collect();
        // HPACK's Huffman codes for the digits: 0–2 in five bits, 3–9 in six.
        let mut digits = String::new();
        let mut at = 0;
        while digits.len() < 3 {
            let take = |n: usize| {
                bits.get(at..at + n)
                    .map(|b| b.iter().fold(0u8, |v, &x| v << 1 | u8::from(x)))
            };
            match take(5)? {
                c @ 0..=2 => {
                    digits.push(char::from(b'0' + c));
                    at += 5;
                }
                _ => {
                    let c = take(6)?;
                    digits.push(char::from(b'3' + c.checked_sub(0x19)?));
                    at += 6;
                }
            }
        }
        digits.parse().ok()
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the first byte's high bits set to `high`.
fn integer(out: &mut Vec<u8>, high: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing (no Huffman), in the order given.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A GET's pseudo-headers.
pub fn get_fields(authority: &str, path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":scheme".into(), "http".into()),
        (":authority".into(), authority.into()),
        (":path".into(), path.into()),
    ]
}

pub fn owned_block(fields: &[(String, String)]) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    block(&pairs)
}

/// Connects and sends the preface and an empty SETTINGS.
pub async fn open(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Reads frames until `done` says so, the connection closes, or `wait` passes. Returns
/// every frame read and whether the connection was closed by the server.
pub async fn read_until(
    s: &mut TcpStream,
    wait: Duration,
    mut done: impl FnMut(&Frame) -> bool,
) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await;
        match read {
            Err(_) => return (frames, false),
            Ok(Err(_)) => return (frames, true),
            Ok(Ok(_)) => {}
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if tokio::time::timeout_at(deadline, s.read_exact(&mut payload))
            .await
            .map_or(true, |r| r.is_err())
        {
            return (frames, true);
        }
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        let stop = done(&f);
        frames.push(f);
        if stop {
            return (frames, false);
        }
    }
}
