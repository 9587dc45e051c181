//! Traces exported over OTLP/HTTP (protobuf) when `otel.endpoint` is set:
//! the tracer provider of a process, with a batch processor on a thread of
//! its own, and its flush at shutdown.
//!
//! Spans come from `tracing` through `tracing-opentelemetry` (see
//! [`crate::logging::traced_subscriber`]): the API's request spans, the
//! queue's `send` and `process` spans (whose trace context travels with
//! each job), and whatever the libraries and the workload record at the
//! levels `otel.filter` lets through.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};

use crate::Error;
use crate::config::OtelConfig;

/// Whether this process exports spans.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: its global subscriber records them
/// for OpenTelemetry. Request handling asks, to record the attributes an
/// exporter reads only when one does.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A process's span export, flushed by [`shutdown`](Self::shutdown); does
/// nothing when export is off.
#[derive(Debug, Default)]
#[must_use = "spans still batched are lost unless it is shut down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// The provider for `config`, `None` when no endpoint is set; its
    /// spans name `default_name` as their service unless
    /// `otel.service_name` names another.
    pub(crate) fn start(
        config: &OtelConfig,
        default_name: &'static str,
    ) -> Result<Option<(Self, Tracer)>, Error> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(None);
        };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|error| Error::Telemetry(error.to_string()))?;
        let name = config
            .service_name
            .clone()
            .unwrap_or_else(|| default_name.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(name).build())
            .build();
        let tracer = provider.tracer(default_name);
        Ok(Some((
            Self {
                provider: Some(provider),
            },
            tracer,
        )))
    }

    /// Marks the process as exporting, once its subscriber is installed.
    pub(crate) fn installed(&self) {
        if self.provider.is_some() {
            EXPORTING.store(true, Ordering::Relaxed);
        }
    }

    /// Sends the spans still batched and stops the exporter, waiting for
    /// it on a blocking thread (its HTTP client blocks).
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "spans not all exported at shutdown"),
            Err(error) => tracing::warn!(%error, "the span exporter's shutdown failed"),
        }
    }
}
