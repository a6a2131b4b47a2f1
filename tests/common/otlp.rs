//! A fake OTLP/gRPC collector: it answers OK to every trace, metric and log
//! export and keeps the requests, so tests can read back what the gateway sent
//! (span names, parents, attributes, metric names) and search all of it for
//! personal data.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Every export request received, in arrival order.
#[derive(Debug, Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Received>>);

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        // A panicking test thread must not hide what was received.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.lock().traces.push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.lock().metrics.push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Store {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.lock().logs.push(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// One received span, flattened to strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The span name (the pipeline stage, for the gateway's spans).
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// Every attribute as `(key, value as text)`.
    pub attributes: Vec<(String, String)>,
    /// Every event as `name key=value ...`.
    pub events: Vec<String>,
    /// The resource attributes of the batch the span came in, as `(key, value)`.
    pub resource: Vec<(String, String)>,
}

impl Span {
    /// The value of an attribute, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// A collector listening on 127.0.0.1 on a free port; stops when dropped.
pub struct FakeCollector {
    /// `http://127.0.0.1:PORT`, for `otlp_endpoint`.
    pub endpoint: String,
    /// The listening address.
    pub address: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl FakeCollector {
    /// Starts the collector on the current tokio runtime.
    pub async fn start() -> FakeCollector {
        let incoming =
            TcpIncoming::bind("127.0.0.1:0".parse().expect("valid address")).expect("bind");
        let address = incoming.local_addr().expect("local address");
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .add_service(TraceServiceServer::new(store.clone()))
            .add_service(MetricsServiceServer::new(store.clone()))
            .add_service(LogsServiceServer::new(store.clone()));
        let server = tokio::spawn(async move {
            // A dropped sender stops the server as well as an explicit stop.
            let shutdown = async {
                let _ = stopped.await;
            };
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .expect("fake collector serves");
        });
        FakeCollector {
            endpoint: format!("http://{address}"),
            address,
            store,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops listening and closes the open connections, as a collector that went away.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    /// How many trace, metric and log export requests arrived.
    pub fn request_counts(&self) -> (usize, usize, usize) {
        let received = self.store.lock();
        (
            received.traces.len(),
            received.metrics.len(),
            received.logs.len(),
        )
    }

    /// Every span received, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        let received = self.store.lock();
        let mut spans = Vec::new();
        for request in &received.traces {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|resource| pairs(&resource.attributes))
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.push(Span {
                            name: span.name.clone(),
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent_span_id: hex::encode(&span.parent_span_id),
                            attributes: pairs(&span.attributes),
                            events: span
                                .events
                                .iter()
                                .map(|event| {
                                    let mut line = event.name.clone();
                                    for (key, value) in pairs(&event.attributes) {
                                        let _ = write!(line, " {key}={value}");
                                    }
                                    line
                                })
                                .collect(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The spans with this name.
    pub fn spans_named(&self, name: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// The distinct metric names received, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        let received = self.store.lock();
        let mut names: Vec<String> = received
            .metrics
            .iter()
            .flat_map(|request| &request.resource_metrics)
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
            .map(|metric| metric.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Everything received as text, one item a line: resource attributes, span
    /// names, attributes and events, metric names, units and data point
    /// attributes, log bodies and attributes. The personal-data search reads this.
    pub fn all_text(&self) -> String {
        let received = self.store.lock();
        let mut text = String::new();
        for request in &received.traces {
            for resource_spans in &request.resource_spans {
                if let Some(resource) = &resource_spans.resource {
                    push_pairs(&mut text, "resource", &resource.attributes);
                }
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        let _ = writeln!(text, "span {}", span.name);
                        push_pairs(&mut text, "span attribute", &span.attributes);
                        for event in &span.events {
                            let _ = writeln!(text, "span event {}", event.name);
                            push_pairs(&mut text, "event attribute", &event.attributes);
                        }
                        for link in &span.links {
                            push_pairs(&mut text, "link attribute", &link.attributes);
                        }
                        if let Some(status) = &span.status {
                            let _ = writeln!(text, "span status {}", status.message);
                        }
                    }
                }
            }
        }
        for request in &received.metrics {
            for resource_metrics in &request.resource_metrics {
                if let Some(resource) = &resource_metrics.resource {
                    push_pairs(&mut text, "resource", &resource.attributes);
                }
                for scope_metrics in &resource_metrics.scope_metrics {
                    for metric in &scope_metrics.metrics {
                        let _ = writeln!(
                            text,
                            "metric {} {} {}",
                            metric.name, metric.unit, metric.description
                        );
                        for attributes in data_point_attributes(metric.data.as_ref()) {
                            push_pairs(&mut text, "data point attribute", attributes);
                        }
                    }
                }
            }
        }
        for request in &received.logs {
            for resource_logs in &request.resource_logs {
                if let Some(resource) = &resource_logs.resource {
                    push_pairs(&mut text, "resource", &resource.attributes);
                }
                for scope_logs in &resource_logs.scope_logs {
                    for record in &scope_logs.log_records {
                        let body = record.body.as_ref().map(value_text).unwrap_or_default();
                        let _ = writeln!(text, "log {} {body}", record.event_name);
                        push_pairs(&mut text, "log attribute", &record.attributes);
                    }
                }
            }
        }
        text
    }

    /// Waits until `predicate` holds for the collector, or `timeout` passes;
    /// returns whether it held.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&FakeCollector) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if predicate(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn data_point_attributes(data: Option<&Data>) -> Vec<&Vec<KeyValue>> {
    match data {
        Some(Data::Gauge(gauge)) => gauge.data_points.iter().map(|p| &p.attributes).collect(),
        Some(Data::Sum(sum)) => sum.data_points.iter().map(|p| &p.attributes).collect(),
        Some(Data::Histogram(histogram)) => histogram
            .data_points
            .iter()
            .map(|p| &p.attributes)
            .collect(),
        Some(Data::ExponentialHistogram(histogram)) => histogram
            .data_points
            .iter()
            .map(|p| &p.attributes)
            .collect(),
        Some(Data::Summary(summary)) => summary.data_points.iter().map(|p| &p.attributes).collect(),
        None => Vec::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|pair| {
            let value = pair.value.as_ref().map(value_text).unwrap_or_default();
            (pair.key.clone(), value)
        })
        .collect()
}

fn push_pairs(text: &mut String, label: &str, attributes: &[KeyValue]) {
    for (key, value) in pairs(attributes) {
        let _ = writeln!(text, "{label} {key}={value}");
    }
}

fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(value_text)
            .collect::<Vec<_>>()
            .join(","),
        Some(any_value::Value::KvlistValue(list)) => pairs(&list.values)
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(","),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(any_value::Value::StringValueStrindex(index)) => format!("#{index}"),
        None => String::new(),
    }
}
