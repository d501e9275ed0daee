//! Where access-log lines go, and when: gathered in memory and written in batches, to
//! stdout (or stderr, for commands that keep stdout for something else).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Where lines go: stdout, unless the process keeps stdout for something else.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends access-log lines to stderr, as `exec` and `token` do with all their logs.
pub fn to_stderr() {
    TO_STDERR.store(true, Ordering::Relaxed);
}

/// Lines not yet written. A write per line would cost a system call per request (as much
/// kernel time as the request itself), so lines are gathered and written together: when
/// [`BATCH_BYTES`] have gathered, and otherwise every [`BATCH_INTERVAL`] by a thread of
/// the log's own, and at shutdown ([`flush`]).
static PENDING: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
const BATCH_BYTES: usize = 32 * 1024;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

fn pending() -> &'static Mutex<Vec<u8>> {
    PENDING.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| loop {
                std::thread::sleep(BATCH_INTERVAL);
                flush();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no access-log thread; lines are written in batches only");
        }
        Mutex::new(Vec::with_capacity(BATCH_BYTES))
    })
}

fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn push(line: &str) {
    let m = pending();
    let mut buf = lock(m);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    if buf.len() >= BATCH_BYTES {
        let batch = std::mem::replace(&mut *buf, Vec::with_capacity(BATCH_BYTES));
        drop(buf);
        write(&batch);
    }
}

/// Writes the lines gathered so far.
pub fn flush() {
    if let Some(m) = PENDING.get() {
        let batch = std::mem::take(&mut *lock(m));
        if !batch.is_empty() {
            write(&batch);
        }
    }
}

fn write(batch: &[u8]) {
    // Errors writing a log line have nowhere to be reported.
    let _ = if TO_STDERR.load(Ordering::Relaxed) {
        std::io::stderr().lock().write_all(batch)
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(batch).and_then(|()| out.flush())
    };
}
