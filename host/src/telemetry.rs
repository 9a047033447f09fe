//! Logs and traces of the process: log lines on stderr (filtered by `RUST_LOG`), and, when an
//! OTLP endpoint is given, the same `tracing` spans exported as OpenTelemetry traces — a span
//! per API request, per claim and per task attempt, carrying the run and task run ids.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where and how to export traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// The collector's traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces` (a URL without
    /// a path gets `/v1/traces`).
    pub endpoint: String,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: String,
}

/// Keeps the exporter alive; on drop, sends the spans not yet sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: the last traces were not exported: {e}");
        }
    }
}

/// The traces endpoint for `endpoint`: as given when it has a path, else the collector's
/// conventional `/v1/traces` under it.
fn traces_endpoint(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// Installs the process's subscriber: log lines at `default_filter` (unless `RUST_LOG` says
/// otherwise) and, with `otlp`, traces of this crate's spans and the API's requests.
pub fn init(default_filter: &str, otlp: Option<&Otlp>) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        );
    let Some(otlp) = otlp else {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(Telemetry::default());
    };
    let protocol = match otlp.protocol.as_str() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => anyhow::bail!("unknown OTLP protocol `{other}`: use http/protobuf or http/json"),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(traces_endpoint(&otlp.endpoint))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("hatchery").build())
        .build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("hatchery"))
        .with_filter(
            Targets::new()
                .with_target("hatchery", Level::INFO)
                .with_target("tower_http", Level::INFO),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

#[cfg(test)]
mod tests {
    use super::traces_endpoint;

    #[test]
    fn a_bare_collector_address_gets_the_traces_path() {
        assert_eq!(
            traces_endpoint("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint("https://otel.example.com/custom/traces"),
            "https://otel.example.com/custom/traces"
        );
    }
}
