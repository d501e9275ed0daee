//! The trace exporter's counters (`tracing:`): spans sent, and spans dropped and why.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::register::{counter, counters};

#[derive(Clone)]
pub struct TraceMetrics {
    pub exported: IntCounter,
    /// The queue was full when the span ended (the collector is slower than the traffic).
    pub dropped_queue_full: IntCounter,
    /// The collector did not take the batch (down, refused, timed out).
    pub dropped_export_failed: IntCounter,
}

impl std::fmt::Debug for TraceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceMetrics")
    }
}

impl TraceMetrics {
    pub(super) fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let dropped: IntCounterVec = counters(
            r,
            "tokenproxy_trace_spans_dropped_total",
            "Spans not exported, by reason: queue_full (ended while 2048 were waiting) or export_failed (the collector did not take the batch).",
            &["reason"],
        )?;
        Ok(TraceMetrics {
            exported: counter(
                r,
                "tokenproxy_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_export_failed: dropped.with_label_values(&["export_failed"]),
        })
    }
}
