//! `tokenproxy status`: a running proxy's `/status` as a table for people, and its readiness
//! as the exit status for scripts (0 ready, 1 not).

use std::net::SocketAddr;

use serde_json::Value;

use super::wait::admin_get;
use super::{failed, Exit};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach the admin listener at {admin}: {source}")]
    Unreachable {
        admin: SocketAddr,
        source: std::io::Error,
    },
    #[error("the admin listener at {0} did not answer with a status document")]
    NotStatus(SocketAddr),
}

/// Prints the status; [`Exit::Ok`] when the proxy is ready, [`Exit::Failed`] when not.
pub async fn run(admin: SocketAddr, json: bool) -> Exit {
    match fetch(admin, json).await {
        Ok((text, ready)) => {
            print!("{text}");
            if ready {
                Exit::Ok
            } else {
                Exit::Failed
            }
        }
        Err(e) => failed("status", &e),
    }
}

/// What to print, and whether the proxy is ready (`/readyz` 200).
pub async fn fetch(admin: SocketAddr, json: bool) -> Result<(String, bool), StatusError> {
    let get = |path| async move {
        admin_get(admin, path)
            .await
            .map_err(|source| StatusError::Unreachable { admin, source })
    };
    let (code, body) = get("/status").await?;
    let (ready, _) = get("/readyz").await?;
    let doc: Value = serde_json::from_str(&body)
        .ok()
        .filter(|_| code == 200)
        .ok_or(StatusError::NotStatus(admin))?;
    let text = if json {
        format!("{body}\n")
    } else {
        table(&doc, ready == 200)
    };
    Ok((text, ready == 200))
}

/// One line per upstream: state, expiry, last refresh, counts, last error.
pub fn table(doc: &Value, ready: bool) -> String {
    let none = Vec::new();
    let rows: Vec<[String; 9]> = doc["upstreams"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .map(|u| {
            let s = |k: &str| match &u[k] {
                Value::Null => "-".to_string(),
                Value::String(v) => v.clone(),
                other => other.to_string(),
            };
            let expires = match u["seconds_to_expiry"].as_u64() {
                Some(n) => format!("{n}s"),
                None => "-".into(),
            };
            [
                s("upstream"),
                s("token_source"),
                s("client"),
                s("auth_method"),
                s("state"),
                expires,
                s("last_refresh"),
                format!("{}/{}", s("fetches"), s("failures")),
                s("last_error"),
            ]
        })
        .collect();
    let header = [
        "UPSTREAM",
        "TOKEN SOURCE",
        "CLIENT",
        "AUTH",
        "STATE",
        "EXPIRES IN",
        "LAST REFRESH",
        "FETCHES/FAILED",
        "LAST ERROR",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    let version = doc["version"].as_str().unwrap_or("?");
    out.push_str(&format!(
        "tokenproxy {version}: {}\n",
        if ready { "ready" } else { "NOT ready" }
    ));
    out
}
