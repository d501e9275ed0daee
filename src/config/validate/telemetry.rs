//! The `tracing` section: where spans go and how many of them.

use super::super::raw::RawTracing;
use super::super::{defaults, TracingConfig};
use super::Validator;

/// The OTLP/HTTP path of traces, added to an endpoint given without a path (the collector's
/// base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is).
const TRACES_PATH: &str = "/v1/traces";

impl Validator<'_> {
    pub(super) fn tracing(&mut self, t: &RawTracing) -> Option<TracingConfig> {
        let key = |k| ["tracing", k];
        let traces_url = match &t.otlp_endpoint {
            None => {
                self.problem(
                    &["tracing"],
                    "tracing needs otlp_endpoint (the collector's OTLP/HTTP address, e.g. http://otel-collector:4318)",
                );
                None
            }
            Some(text) => {
                let text = self.expand(&key("otlp_endpoint"), text);
                match traces_url(&text) {
                    Ok(url) => Some(url),
                    Err(why) => {
                        self.problem(&key("otlp_endpoint"), format!("{text:?}: {why}"));
                        None
                    }
                }
            }
        };
        let sample_ratio = t.sample_ratio.unwrap_or(defaults::TRACE_SAMPLE_RATIO);
        if !(0.0..=1.0).contains(&sample_ratio) {
            self.problem(
                &key("sample_ratio"),
                format!("{sample_ratio}: a share between 0 (none) and 1 (all)"),
            );
        }
        let service_name = match &t.service_name {
            Some(name) => self.expand(&key("service_name"), name),
            None => defaults::TRACE_SERVICE_NAME.to_string(),
        };
        if service_name.trim().is_empty() || service_name.len() > 255 {
            self.problem(&key("service_name"), "1 to 255 characters");
        }
        Some(TracingConfig {
            traces_url: traces_url?,
            sample_ratio,
            service_name,
        })
    }
}

/// The URL spans are posted to: `http(s)://host[:port][/path]`, no credentials, query or
/// fragment (a collector's API key belongs in a header, not in a URL that gets logged).
fn traces_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("OTLP/HTTP needs http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no user or password in the URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("no query or fragment".into());
    }
    let mut url = url;
    if url.path() == "/" {
        url.set_path(TRACES_PATH);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_base_url_gets_the_traces_path_and_a_full_one_is_kept() {
        let url = |s| traces_url(s).unwrap_or_else(|e| e);
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
        assert!(traces_url("grpc://collector:4317").is_err());
        assert!(traces_url("http://u:p@collector:4318").is_err());
        assert!(traces_url("http://collector:4318/?key=1").is_err());
        assert!(traces_url("collector:4318").is_err());
    }
}
