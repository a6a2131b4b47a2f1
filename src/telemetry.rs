//! Logs, traces and metrics.
//!
//! Logs always go to stderr (text or JSON). Traces and metrics are exported
//! over OTLP/gRPC only when an endpoint is configured; otherwise [`Metrics`]
//! is a no-op and spans only feed the log lines.
//!
//! No personal data goes into any of them: metric attributes are built only
//! from `&'static str` values (codes chosen in the source, never read from
//! input), and spans carry identifiers and codes only. See
//! `docs/telemetry.md`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::error::Error;

/// How long one export to the collector may take, retries included, so that a
/// collector that is gone costs a bounded delay rather than a hang.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Telemetry::shutdown`] waits for the last exports before giving up.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);

/// The instrumentation scope of every span and metric.
const SCOPE: &str = "passerelle";

/// Bucket boundaries in seconds for the duration histograms: the SDK's default
/// boundaries are meant for milliseconds and would put every request in the
/// first bucket.
const SECONDS_BOUNDARIES: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the current span and its parents.
    Json,
}

/// The `[telemetry]` table of the gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Format of the log lines on stderr.
    pub log_format: LogFormat,
    /// Which log lines to write: an `EnvFilter` directive such as `info` or
    /// `warn,passerelle=debug`.
    pub log_level: String,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported traces and metrics.
    pub service_name: String,
    /// Seconds between two metric exports.
    pub metrics_interval_seconds: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            service_name: "passerelle".to_owned(),
            metrics_interval_seconds: 60,
        }
    }
}

impl TelemetryConfig {
    /// Checks what deserialisation cannot: the message starts with the key at fault.
    pub fn check(&self) -> Result<(), String> {
        self.problem()
            .map_or(Ok(()), |(key, detail)| Err(format!("{key}: {detail}")))
    }

    /// The first key at fault and what is wrong with it.
    fn problem(&self) -> Option<(&'static str, String)> {
        if let Err(error) = EnvFilter::try_new(&self.log_level) {
            return Some(("log_level", format!("not a log filter directive: {error}")));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && let Err(detail) = check_endpoint(endpoint)
        {
            return Some(("otlp_endpoint", detail));
        }
        if self.service_name.trim().is_empty() {
            return Some(("service_name", "must not be empty".to_owned()));
        }
        if self.metrics_interval_seconds == 0 {
            return Some(("metrics_interval_seconds", "must be at least 1".to_owned()));
        }
        None
    }
}

/// An OTLP/gRPC endpoint must be a plain `http://host:port` URI: the exporter
/// is built without TLS support, so `https://` would only fail later.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|error| format!("not a URI: {error}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: export to a local collector over http://".to_owned(),
            );
        }
        _ => return Err("must start with http://, e.g. http://127.0.0.1:4317".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(())
}

/// Installs the global tracing subscriber and, when an endpoint is configured,
/// the OTLP trace and metric exporters. Keep the returned guard alive until the
/// process ends, then call [`Telemetry::shutdown`].
///
/// Works inside or outside a tokio runtime: the exporters run on a runtime of
/// their own, so shutting down never waits on the caller's runtime. Fails if a
/// global subscriber is already installed (a second call, for instance).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, Error> {
    if let Some((key, detail)) = config.problem() {
        return Err(Error::config("[telemetry]", key, detail));
    }
    let log_filter = EnvFilter::try_new(&config.log_level)
        .map_err(|error| Error::config("[telemetry]", "log_level", error.to_string()))?;
    let log_layer = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![log_layer];

    let exporters = match &config.otlp_endpoint {
        Some(endpoint) => Some(Exporters::start(config, endpoint)?),
        None => None,
    };
    if let Some(exporters) = &exporters {
        // A filter of its own, not a global one: a global `warn` filter would
        // drop the INFO stage spans before this layer could export them. Only
        // our own spans go out, never those of the HTTP/2 stack that carries
        // the export itself.
        let span_filter = Targets::new().with_target(SCOPE, tracing::Level::INFO);
        let tracer = exporters.tracer_provider.tracer(SCOPE);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(span_filter)
                .boxed(),
        );
    }

    if let Err(error) = Registry::default().with(layers).try_init() {
        if let Some(exporters) = exporters {
            exporters.shut_down();
        }
        return Err(Error::Internal(format!(
            "telemetry is already initialised in this process: {error}"
        )));
    }
    if let Some(exporters) = &exporters {
        opentelemetry::global::set_meter_provider(exporters.meter_provider.clone());
    }
    tracing::info!(
        otlp_export = exporters.is_some(),
        service_name = %config.service_name,
        "telemetry ready"
    );
    Ok(Telemetry {
        exporters,
        metrics: Metrics::new(),
    })
}

/// The running telemetry. Dropping it flushes and stops the exporters, as
/// [`Telemetry::shutdown`] does.
pub struct Telemetry {
    exporters: Option<Exporters>,
    metrics: Metrics,
}

impl Telemetry {
    /// The metric instruments, built once after the meter provider was installed.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Exports what is pending and stops the exporters, waiting a bounded time
    /// (a few seconds) even when the collector is unreachable.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(exporters) = self.exporters.take() {
            exporters.shut_down();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Telemetry")
            .field("otlp_export", &self.exporters.is_some())
            .finish_non_exhaustive()
    }
}

/// The OTLP providers and the runtime their gRPC connections live on.
struct Exporters {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    runtime: tokio::runtime::Runtime,
}

impl Exporters {
    fn start(config: &TelemetryConfig, endpoint: &str) -> Result<Self, Error> {
        // The providers export from threads of their own and block on the
        // gRPC call; the connection must therefore be driven by a runtime that
        // is not the caller's, or shutting down from inside a single-threaded
        // caller runtime would wait on itself until the timeout.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("passerelle-telemetry")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the telemetry export runtime".to_owned(),
                source,
            })?;
        let providers = {
            // The tonic channel spawns its connection task on the current runtime.
            let _context = runtime.enter();
            build_providers(config, endpoint)
        };
        match providers {
            Ok((tracer_provider, meter_provider)) => Ok(Self {
                tracer_provider,
                meter_provider,
                runtime,
            }),
            Err(error) => {
                // Not a plain drop: dropping a runtime inside an async context panics.
                runtime.shutdown_background();
                Err(error)
            }
        }
    }

    /// Flushes and shuts down both providers in parallel, waiting at most
    /// [`SHUTDOWN_BUDGET`]; a provider still busy after that is abandoned.
    fn shut_down(self) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        let (done, finished) = mpsc::channel();
        let tracer_provider = self.tracer_provider;
        let meter_provider = self.meter_provider;
        let mut pending = 0;
        pending += spawn_shutdown("traces", done.clone(), move || {
            tracer_provider.shutdown_with_timeout(SHUTDOWN_BUDGET)
        });
        pending += spawn_shutdown("metrics", done, move || {
            meter_provider.shutdown_with_timeout(SHUTDOWN_BUDGET)
        });
        while pending > 0 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match finished.recv_timeout(remaining) {
                Ok((_, Ok(()))) => {}
                Ok((signal, Err(error))) => {
                    tracing::warn!(signal, error = %error, "telemetry export did not finish cleanly");
                }
                Err(_) => {
                    tracing::warn!(
                        budget_seconds = SHUTDOWN_BUDGET.as_secs(),
                        "telemetry export still busy at shutdown; pending data is dropped"
                    );
                    break;
                }
            }
            pending -= 1;
        }
        // Not a plain drop: dropping a runtime inside an async context panics.
        self.runtime.shutdown_background();
    }
}

/// The OTLP/gRPC span and metric pipelines; to be called inside the export runtime.
fn build_providers(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<(SdkTracerProvider, SdkMeterProvider), Error> {
    let build_error = |error: opentelemetry_otlp::ExporterBuildError| {
        Error::config("[telemetry]", "otlp_endpoint", error.to_string())
    };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();

    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(build_error)?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource.clone())
        .build();

    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(build_error)?;
    let reader = PeriodicReader::builder(metric_exporter)
        .with_interval(Duration::from_secs(config.metrics_interval_seconds))
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build();
    Ok((tracer_provider, meter_provider))
}

/// Runs one provider shutdown on a thread of its own, reporting on `done`;
/// returns how many reports to wait for: 0 when no thread could be started,
/// and that provider is then left unflushed rather than blocking the caller.
fn spawn_shutdown<F>(
    signal: &'static str,
    done: mpsc::Sender<(&'static str, opentelemetry_sdk::error::OTelSdkResult)>,
    shutdown: F,
) -> usize
where
    F: FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
{
    let spawned = std::thread::Builder::new()
        .name(format!("passerelle-{signal}-shutdown"))
        .spawn(move || {
            // The receiver may have given up waiting; nothing is left to tell.
            let _ = done.send((signal, shutdown()));
        });
    match spawned {
        Ok(_) => 1,
        Err(error) => {
            tracing::warn!(signal, error = %error, "no thread to shut telemetry down");
            0
        }
    }
}

/// The gateway's metric instruments. Cheap to clone; every clone records into
/// the same instruments. A no-op when no meter provider is installed.
///
/// Attribute values are `&'static str` on purpose: a code written in the
/// source can be a label, a value read from a referral cannot.
#[derive(Clone)]
pub struct Metrics {
    instruments: Arc<Instruments>,
}

struct Instruments {
    referrals_accepted: Counter<u64>,
    referrals_refused: Counter<u64>,
    status_events: Counter<u64>,
    queue_depth: Arc<AtomicU64>,
    // Held so the gauge lives as long as the metrics; its callback reads `queue_depth`.
    _queue_depth_gauge: ObservableGauge<u64>,
    delivery_attempts: Counter<u64>,
    delivery_duration: Histogram<f64>,
    request_duration: Histogram<f64>,
}

impl Metrics {
    /// Instruments from the global meter provider as it is now: build them
    /// after [`init`] (or take [`Telemetry::metrics`]), and once per process,
    /// since two sets would report two queue depth gauges.
    pub fn new() -> Self {
        Self::from_meter(&opentelemetry::global::meter(SCOPE))
    }

    fn from_meter(meter: &Meter) -> Self {
        let queue_depth = Arc::new(AtomicU64::new(0));
        let observed_depth = Arc::clone(&queue_depth);
        let queue_depth_gauge = meter
            .u64_observable_gauge("passerelle.queue.depth")
            .with_description("Referrals and status events waiting in the outbox.")
            .with_unit("{message}")
            .with_callback(move |observer| {
                observer.observe(observed_depth.load(Ordering::Relaxed), &[]);
            })
            .build();
        Self {
            instruments: Arc::new(Instruments {
                referrals_accepted: meter
                    .u64_counter("passerelle.referrals.accepted")
                    .with_description("Referrals accepted into the outbox, by input format.")
                    .with_unit("{referral}")
                    .build(),
                referrals_refused: meter
                    .u64_counter("passerelle.referrals.refused")
                    .with_description("Referrals refused, by reason code.")
                    .with_unit("{referral}")
                    .build(),
                status_events: meter
                    .u64_counter("passerelle.status_events")
                    .with_description("Status events accepted, by status.")
                    .with_unit("{event}")
                    .build(),
                queue_depth,
                _queue_depth_gauge: queue_depth_gauge,
                delivery_attempts: meter
                    .u64_counter("passerelle.delivery.attempts")
                    .with_description("Delivery attempts to recipients, by outcome.")
                    .with_unit("{attempt}")
                    .build(),
                delivery_duration: meter
                    .f64_histogram("passerelle.delivery.duration")
                    .with_description("Duration of one delivery attempt, by outcome.")
                    .with_unit("s")
                    .with_boundaries(SECONDS_BOUNDARIES.to_vec())
                    .build(),
                request_duration: meter
                    .f64_histogram("passerelle.request.duration")
                    .with_description("Duration of HTTP and gRPC requests, by route and status.")
                    .with_unit("s")
                    .with_boundaries(SECONDS_BOUNDARIES.to_vec())
                    .build(),
            }),
        }
    }

    /// A referral entered the outbox; `format` is the input format name.
    pub fn referral_accepted(&self, format: &'static str) {
        self.instruments
            .referrals_accepted
            .add(1, &[KeyValue::new("format", format)]);
    }

    /// A referral was refused; `reason` is a stable code such as `consent-withdrawn` or `invalid`.
    pub fn referral_refused(&self, reason: &'static str) {
        self.instruments
            .referrals_refused
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A status event was accepted; `status` is its lifecycle code.
    pub fn status_event(&self, status: &'static str) {
        self.instruments
            .status_events
            .add(1, &[KeyValue::new("status", status)]);
    }

    /// The number of messages now waiting in the outbox, read at each export.
    pub fn set_queue_depth(&self, depth: u64) {
        self.instruments.queue_depth.store(depth, Ordering::Relaxed);
    }

    /// One delivery attempt ended with `outcome` (e.g. `delivered`, `retry`, `failed`) after `latency`.
    pub fn delivery_attempt(&self, outcome: &'static str, latency: Duration) {
        let attributes = [KeyValue::new("outcome", outcome)];
        self.instruments.delivery_attempts.add(1, &attributes);
        self.instruments
            .delivery_duration
            .record(latency.as_secs_f64(), &attributes);
    }

    /// One HTTP or gRPC request on `route` (the route template or gRPC method,
    /// never the concrete path) ended with HTTP `status` after `latency`.
    pub fn request(&self, route: &'static str, status: u16, latency: Duration) {
        self.instruments.request_duration.record(
            latency.as_secs_f64(),
            &[
                KeyValue::new("route", route),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Metrics")
            .field(
                "queue_depth",
                &self.instruments.queue_depth.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::metrics::Temporality;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

    use super::*;

    fn parse(text: &str) -> Result<TelemetryConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config, TelemetryConfig::default());
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config.service_name, "passerelle");
        assert_eq!(config.metrics_interval_seconds, 60);
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            r#"
            log_format = "json"
            log_level = "warn,passerelle=debug"
            otlp_endpoint = "http://127.0.0.1:4317"
            service_name = "passerelle-test"
            metrics_interval_seconds = 1
            "#,
        )
        .expect("valid");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_level, "warn,passerelle=debug");
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(config.service_name, "passerelle-test");
        assert_eq!(config.metrics_interval_seconds, 1);
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let unknown = parse("log_formt = \"json\"").expect_err("unknown key");
        assert!(unknown.message().contains("log_formt"), "{unknown}");
        let format = parse("log_format = \"xml\"").expect_err("unknown format");
        assert!(format.message().contains("xml"), "{format}");
        assert!(format.message().contains("json"), "{format}");
        let interval = parse("metrics_interval_seconds = -1").expect_err("negative");
        assert!(interval.message().contains("u64"), "{interval}");
    }

    #[test]
    fn check_names_the_key_at_fault() {
        let cases = [
            ("log_level = \"info,[\"", "log_level: "),
            (
                "otlp_endpoint = \"127.0.0.1:4317\"",
                "otlp_endpoint: must start with http://",
            ),
            (
                "otlp_endpoint = \"https://collector:4317\"",
                "otlp_endpoint: https is not supported",
            ),
            ("otlp_endpoint = \"http://\"", "otlp_endpoint: "),
            ("otlp_endpoint = \"not a uri\"", "otlp_endpoint: "),
            ("service_name = \" \"", "service_name: must not be empty"),
            (
                "metrics_interval_seconds = 0",
                "metrics_interval_seconds: must be at least 1",
            ),
        ];
        for (text, expected) in cases {
            let config = parse(text).expect("valid TOML shape");
            let message = config.check().expect_err(text);
            assert!(message.starts_with(expected), "{text}: {message}");
        }
    }

    #[test]
    fn init_refuses_a_bad_configuration_by_key() {
        let config = TelemetryConfig {
            metrics_interval_seconds: 0,
            ..TelemetryConfig::default()
        };
        let error = init(&config).expect_err("refused before installing anything");
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "metrics_interval_seconds"),
            "{error}"
        );
    }

    /// Keeps every export as lines `name unit attributes = value`, so a test
    /// can read what a collector would receive.
    #[derive(Clone, Default)]
    struct RecordingExporter {
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl PushMetricExporter for RecordingExporter {
        async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
            let mut lines = self.lines.lock().expect("not poisoned");
            for scope in metrics.scope_metrics() {
                for metric in scope.metrics() {
                    for point in describe(metric.data()) {
                        lines.push(format!("{} {} {point}", metric.name(), metric.unit()));
                    }
                }
            }
            Ok(())
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    fn attributes<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> String {
        let mut pairs: Vec<String> = attributes
            .map(|pair| format!("{}={}", pair.key, pair.value))
            .collect();
        pairs.sort();
        format!("{{{}}}", pairs.join(","))
    }

    fn describe(data: &AggregatedMetrics) -> Vec<String> {
        match data {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .map(|point| format!("{} = {}", attributes(point.attributes()), point.value()))
                .collect(),
            AggregatedMetrics::U64(MetricData::Gauge(gauge)) => gauge
                .data_points()
                .map(|point| format!("{} = {}", attributes(point.attributes()), point.value()))
                .collect(),
            AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
                .data_points()
                .map(|point| {
                    format!(
                        "{} = count {} sum {}",
                        attributes(point.attributes()),
                        point.count(),
                        point.sum()
                    )
                })
                .collect(),
            other => vec![format!("unexpected {other:?}")],
        }
    }

    #[test]
    fn metrics_are_named_with_units_and_code_attributes() {
        let exporter = RecordingExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let metrics = Metrics::from_meter(&provider.meter(SCOPE));
        let copy = metrics.clone();

        metrics.referral_accepted("passerelle-v2");
        copy.referral_accepted("passerelle-v2");
        metrics.referral_accepted("csv");
        metrics.referral_refused("consent-withdrawn");
        metrics.status_event("accepted");
        metrics.set_queue_depth(3);
        copy.set_queue_depth(7);
        metrics.delivery_attempt("delivered", Duration::from_millis(250));
        metrics.delivery_attempt("retry", Duration::from_millis(1500));
        metrics.request("/v2/referrals", 202, Duration::from_millis(40));
        provider.force_flush().expect("flush");

        let mut lines = exporter.lines.lock().expect("not poisoned").clone();
        lines.sort();
        assert_eq!(
            lines,
            [
                "passerelle.delivery.attempts {attempt} {outcome=delivered} = 1",
                "passerelle.delivery.attempts {attempt} {outcome=retry} = 1",
                "passerelle.delivery.duration s {outcome=delivered} = count 1 sum 0.25",
                "passerelle.delivery.duration s {outcome=retry} = count 1 sum 1.5",
                "passerelle.queue.depth {message} {} = 7",
                "passerelle.referrals.accepted {referral} {format=csv} = 1",
                "passerelle.referrals.accepted {referral} {format=passerelle-v2} = 2",
                "passerelle.referrals.refused {referral} {reason=consent-withdrawn} = 1",
                "passerelle.request.duration s {route=/v2/referrals,status=202} = count 1 sum 0.04",
                "passerelle.status_events {event} {status=accepted} = 1",
            ]
        );
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn metrics_without_a_provider_record_nothing_and_do_not_fail() {
        // No provider is installed in unit tests, so the global meter is a no-op.
        let metrics = Metrics::new();
        metrics.referral_accepted("csv");
        metrics.set_queue_depth(5);
        metrics.request("/health", 200, Duration::from_millis(1));
        assert!(format!("{metrics:?}").contains("queue_depth: 5"));
    }
}
