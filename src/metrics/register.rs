//! Each metric made and registered in one step, on the registry it is given: the groups
//! (`Metrics`, interception, the shared cache, DPoP) list their metrics as one call each.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

type Result<T> = std::result::Result<T, prometheus::Error>;

/// Registers `m` on `r` and hands it back.
fn on<M: Collector + Clone + 'static>(r: &Registry, m: M) -> Result<M> {
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

pub fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter> {
    on(r, IntCounter::new(name, help)?)
}

pub fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    on(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> Result<Gauge> {
    on(r, Gauge::new(name, help)?)
}

pub fn int_gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    on(r, IntGauge::new(name, help)?)
}

pub fn int_gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    on(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

pub fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
    on(r, GaugeVec::new(Opts::new(name, help), labels)?)
}

pub fn histograms(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<HistogramVec> {
    on(
        r,
        HistogramVec::new(HistogramOpts::new(name, help), labels)?,
    )
}
