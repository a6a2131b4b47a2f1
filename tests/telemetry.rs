//! Telemetry: the stage spans and the metrics reach an OTLP collector; without
//! an endpoint nothing is exported and the JSON logs still carry the span
//! fields; shutting down takes a bounded time when the collector does not answer.
//!
//! A process holds one global subscriber, so only the first test initialises
//! telemetry in this process; the others re-run this test binary with
//! `CHILD_MODE` set, and `child_process_scenario` plays the child's part.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::otlp::FakeCollector;
use passerelle::telemetry::{self, LogFormat, TelemetryConfig};

/// Set in the environment of a re-run test binary to the scenario it plays.
const CHILD_MODE: &str = "PASSERELLE_TELEMETRY_TEST_CHILD";
/// The collector endpoint handed to the child.
const CHILD_ENDPOINT: &str = "PASSERELLE_TELEMETRY_TEST_ENDPOINT";

const REFERRAL_ID: &str = "0b7e3f1c-5d2a-4c8e-9f61-2a4b6c8d0e12";
const CONSENT_ID: &str = "c-2026-000417";

const METRIC_NAMES: [&str; 7] = [
    "passerelle.delivery.attempts",
    "passerelle.delivery.duration",
    "passerelle.queue.depth",
    "passerelle.referrals.accepted",
    "passerelle.referrals.refused",
    "passerelle.request.duration",
    "passerelle.status_events",
];

/// The span tree the gateway builds for one referral, plus two spans the
/// exporter must leave out: one below INFO, one from outside the crate.
fn submit_referral() {
    let request = tracing::info_span!(
        target: "passerelle::server",
        "submit_referral",
        referral_id = REFERRAL_ID,
        format = "passerelle-v2"
    );
    let _request = request.enter();
    tracing::info_span!(target: "passerelle::pipeline", "decode").in_scope(|| {
        tracing::info!(target: "passerelle::pipeline", bytes = 812_u64, "decoded");
    });
    tracing::info_span!(target: "passerelle::pipeline", "consent", consent_id = CONSENT_ID)
        .in_scope(|| {
            tracing::debug_span!(target: "passerelle::pipeline", "consent_detail").in_scope(|| {});
        });
    tracing::info_span!(target: "some_dependency", "not_ours").in_scope(|| {});
}

fn record_metrics(metrics: &telemetry::Metrics) {
    metrics.referral_accepted("passerelle-v2");
    metrics.referral_refused("consent-withdrawn");
    metrics.status_event("accepted");
    metrics.set_queue_depth(4);
    metrics.delivery_attempt("delivered", Duration::from_millis(120));
    metrics.request("/v2/referrals", 202, Duration::from_millis(15));
}

#[tokio::test(flavor = "current_thread")]
async fn stage_spans_and_metrics_reach_the_collector() {
    let collector = FakeCollector::start().await;
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        // Only warnings are logged, yet the INFO spans must still be exported:
        // each layer has its own filter.
        log_level: "warn".to_owned(),
        otlp_endpoint: Some(collector.endpoint.clone()),
        service_name: "passerelle-telemetry-test".to_owned(),
        metrics_interval_seconds: 1,
    };
    let telemetry = telemetry::init(&config).expect("telemetry starts");
    let again = telemetry::init(&config).expect_err("a second init is refused");
    assert!(again.to_string().contains("already initialised"), "{again}");

    submit_referral();
    record_metrics(&telemetry.metrics());

    // The periodic reader exports on its own, before any shutdown.
    let all_metrics = |collector: &FakeCollector| {
        let names = collector.metric_names();
        METRIC_NAMES
            .iter()
            .all(|name| names.iter().any(|received| received == name))
    };
    assert!(
        collector
            .wait_for(all_metrics, Duration::from_secs(15))
            .await,
        "metrics received: {:?}",
        collector.metric_names()
    );

    // Shutting down blocks; the collector runs on this test's runtime and must keep answering.
    let started = Instant::now();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("shutdown does not panic");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let spans = collector.spans();
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    let [request] = collector
        .spans_named("submit_referral")
        .try_into()
        .expect("one request span");
    assert_eq!(request.parent_span_id, "", "the request span is a root");
    assert_eq!(request.attribute("referral_id"), Some(REFERRAL_ID));
    assert_eq!(request.attribute("format"), Some("passerelle-v2"));
    assert!(
        request.resource.contains(&(
            "service.name".to_owned(),
            "passerelle-telemetry-test".to_owned()
        )),
        "{:?}",
        request.resource
    );

    let [decode] = collector
        .spans_named("decode")
        .try_into()
        .expect("one decode span");
    let [consent] = collector
        .spans_named("consent")
        .try_into()
        .expect("one consent span");
    for stage in [&decode, &consent] {
        assert_eq!(
            stage.parent_span_id, request.span_id,
            "{} is a child",
            stage.name
        );
        assert_eq!(
            stage.trace_id, request.trace_id,
            "{} is in the trace",
            stage.name
        );
    }
    assert_eq!(consent.attribute("consent_id"), Some(CONSENT_ID));
    assert!(
        decode
            .events
            .iter()
            .any(|event| event.starts_with("decoded") && event.contains("bytes=812")),
        "{:?}",
        decode.events
    );
    assert!(
        !names.contains(&"consent_detail"),
        "DEBUG spans are not exported: {names:?}"
    );
    assert!(
        !names.contains(&"not_ours"),
        "other crates' spans are not exported: {names:?}"
    );

    let text = collector.all_text();
    assert!(
        text.contains("data point attribute reason=consent-withdrawn"),
        "{text}"
    );
    assert!(text.contains("span attribute referral_id="), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn without_an_endpoint_nothing_is_exported_and_json_logs_carry_span_fields() {
    let collector = FakeCollector::start().await;
    // The standard OpenTelemetry variables point at the collector: only the
    // configuration may turn export on, so they must be ignored.
    let endpoint = collector.endpoint.clone();
    let output = tokio::task::spawn_blocking(move || {
        run_child(
            "no-endpoint",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ],
        )
    })
    .await
    .expect("child ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let decoded = lines
        .iter()
        .find(|line| line["fields"]["message"] == "decoded")
        .unwrap_or_else(|| panic!("no JSON line for the decode event in:\n{stderr}"));
    assert_eq!(decoded["level"], "INFO");
    assert_eq!(decoded["span"]["name"], "decode");
    assert_eq!(decoded["spans"][0]["name"], "submit_referral");
    assert_eq!(decoded["spans"][0]["referral_id"], REFERRAL_ID);
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "telemetry ready"
                && line["fields"]["otlp_export"] == false),
        "{stderr}"
    );

    assert_eq!(
        collector.request_counts(),
        (0, 0, 0),
        "{}",
        collector.all_text()
    );
}

#[test]
fn shutdown_is_bounded_when_the_collector_does_not_answer() {
    // Connections complete in the kernel's backlog but nothing ever answers:
    // the case where an unbounded export would hang forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("address"));
    let started = Instant::now();
    let output = run_child("silent-collector", &[(CHILD_ENDPOINT, endpoint.as_str())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

/// Runs this test binary again as a child playing `mode`, and returns its output.
fn run_child(mode: &str, environment: &[(&str, &str)]) -> Output {
    let executable = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(executable);
    command
        .args([
            "--exact",
            "child_process_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (key, value) in environment {
        command.env(key, value);
    }
    command.output().expect("child runs")
}

/// The child's part; does nothing unless `CHILD_MODE` is set.
#[test]
fn child_process_scenario() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    match mode.as_str() {
        "no-endpoint" => {
            let config = TelemetryConfig {
                log_format: LogFormat::Json,
                ..TelemetryConfig::default()
            };
            let telemetry = telemetry::init(&config).expect("telemetry starts");
            submit_referral();
            record_metrics(&telemetry.metrics());
            telemetry.shutdown();
        }
        "silent-collector" => {
            // Outside any tokio runtime, on purpose: init must not need one.
            let config = TelemetryConfig {
                otlp_endpoint: Some(std::env::var(CHILD_ENDPOINT).expect("endpoint given")),
                metrics_interval_seconds: 1,
                ..TelemetryConfig::default()
            };
            let telemetry = telemetry::init(&config).expect("telemetry starts");
            submit_referral();
            record_metrics(&telemetry.metrics());
            let started = Instant::now();
            telemetry.shutdown();
            let elapsed = started.elapsed();
            assert!(
                elapsed < Duration::from_secs(7),
                "shutdown took {elapsed:?}"
            );
        }
        other => panic!("unknown child mode {other}"),
    }
}
