//! Line output in batches, owned by whoever writes the lines (the access log of one running
//! proxy): lines gather in memory and are written together, when 32 KiB have gathered, every
//! 100 ms by a thread of the sink's own (started with the first line, ended with the sink),
//! and on [`Sink::flush`]. A write per line would cost a system call per request, as much
//! kernel time as the request itself.
//!
//! Why not `tracing-appender`'s non-blocking writer: it hands each line to a worker thread
//! over a channel and wakes that thread for it when it is idle (a futex call per request at
//! moderate load), and writes per wake-up rather than per interval. This sink costs a mutex
//! and a copy per line and one `write(2)` per batch.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

const BATCH_BYTES: usize = 32 * 1024;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Where the lines go.
#[derive(Clone, Debug)]
pub enum Destination {
    Stdout,
    /// For commands that keep stdout for something else (`exec`).
    Stderr,
    /// Kept in memory, for tests that read the lines.
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// A batching line writer; clones share one buffer.
#[derive(Clone, Debug)]
pub struct Sink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pending: Mutex<Vec<u8>>,
    to: Destination,
    /// The interval flusher, started with the first line.
    flusher: OnceLock<()>,
}

impl Sink {
    pub fn new(to: Destination) -> Sink {
        Sink {
            inner: Arc::new(Inner {
                pending: Mutex::new(Vec::new()),
                to,
                flusher: OnceLock::new(),
            }),
        }
    }

    /// Adds one line (a newline is appended).
    pub fn push(&self, line: &str) {
        self.inner
            .flusher
            .get_or_init(|| spawn_flusher(Arc::downgrade(&self.inner)));
        let mut buf = lock(&self.inner.pending);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if buf.len() >= BATCH_BYTES {
            let batch = std::mem::replace(&mut *buf, Vec::with_capacity(BATCH_BYTES));
            drop(buf);
            self.inner.write(&batch);
        }
    }

    /// Writes the lines gathered so far.
    pub fn flush(&self) {
        self.inner.flush();
    }
}

impl Inner {
    fn flush(&self) {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            self.write(&batch);
        }
    }

    fn write(&self, batch: &[u8]) {
        // Errors writing a log line have nowhere to be reported.
        let _ = match &self.to {
            Destination::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(batch).and_then(|()| out.flush())
            }
            Destination::Stderr => std::io::stderr().lock().write_all(batch),
            Destination::Memory(m) => {
                lock(m).extend_from_slice(batch);
                Ok(())
            }
        };
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A thread that flushes every [`BATCH_INTERVAL`] while the sink lives.
fn spawn_flusher(sink: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || loop {
            std::thread::sleep(BATCH_INTERVAL);
            match sink.upgrade() {
                Some(inner) => inner.flush(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no access-log thread; lines are written in batches only");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn text(m: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(lock(m).clone()).unwrap()
    }

    #[test]
    fn two_sinks_keep_their_own_lines_until_flushed() {
        let (a, b) = (Arc::default(), Arc::default());
        let (one, two) = (
            Sink::new(Destination::Memory(Arc::clone(&a))),
            Sink::new(Destination::Memory(Arc::clone(&b))),
        );
        one.push("first");
        two.push("second");
        assert_eq!(text(&a), "", "batched, not written per line");
        one.flush();
        assert_eq!(text(&a), "first\n");
        assert_eq!(text(&b), "");
        drop(two);
        assert_eq!(text(&b), "second\n", "a dropped sink writes what it held");
    }

    #[test]
    fn a_full_batch_is_written_at_once_and_the_interval_writes_the_rest() {
        let m = Arc::default();
        let sink = Sink::new(Destination::Memory(Arc::clone(&m)));
        let line = "x".repeat(1023);
        for _ in 0..32 {
            sink.push(&line);
        }
        assert_eq!(lock(&m).len(), BATCH_BYTES, "32 KiB written in one batch");
        sink.push("tail");
        for _ in 0..100 {
            if text(&m).ends_with("tail\n") {
                return;
            }
            std::thread::sleep(BATCH_INTERVAL / 4);
        }
        panic!("the interval flusher did not write the last line");
    }
}
