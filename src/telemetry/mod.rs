//! Telemetry: logging setup, **every metric name** the daemon exports (so dashboards and
//! alerts have one place to read them), the Prometheus recorder, and the admin HTTP server
//! (`/metrics`, `/healthz`, `/readyz`, `/streams`, plus routes others hand it, such as the web
//! view). Imports nothing else from the crate.
//!
//! Metric names follow `inflor_<what>_<unit>[_total]`; labels are bounded: `stream` (the
//! configured or connected streams, at most `limits.max_streams`), `layer` (the model's
//! neuron layers), `kind` (a fixed set of decode or source error kinds) and `sink` (the configured
//! sinks). Counters are updated once per window or batch, never per event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events a source delivered (after decoding, before rate limiting). Label: `stream`.
pub const EVENTS_RECEIVED: &str = "inflor_events_received_total";
/// Events removed by a stream's rate limiter (uniform decimation). Label: `stream`.
pub const EVENTS_RATE_LIMITED: &str = "inflor_events_rate_limited_total";
/// Events in windows dropped because the stream's worker fell behind. Label: `stream`.
pub const EVENTS_DROPPED: &str = "inflor_events_dropped_total";
/// Windows dropped because the stream's worker fell behind. Label: `stream`.
pub const WINDOWS_DROPPED: &str = "inflor_windows_dropped_total";
/// Windows binned and queued for execution. Label: `stream`.
pub const WINDOWS: &str = "inflor_windows_total";
/// Windows executed (classified). Label: `stream`.
pub const INFERENCES: &str = "inflor_inferences_total";
/// Executor time per window, seconds (histogram). Label: `stream`.
pub const INFERENCE_LATENCY: &str = "inflor_inference_latency_seconds";
/// From the arrival of a window's last event to its output being published, seconds
/// (histogram). Label: `stream`.
pub const END_TO_END_LATENCY: &str = "inflor_end_to_end_latency_seconds";
/// Windows waiting for a worker (gauge). Label: `stream`.
pub const QUEUE_DEPTH: &str = "inflor_queue_depth_windows";
/// Spikes per neuron per timestep in the last window (gauge). Labels: `stream`, `layer`.
pub const LAYER_FIRING_RATE: &str = "inflor_layer_firing_rate";
/// Synaptic operations performed. Label: `stream`.
pub const SYNAPTIC_OPS: &str = "inflor_synaptic_operations_total";
/// Estimated energy of the synaptic operations so far, joules (a gauge that only grows: the
/// exporter's counters are integers, and picojoules are not a base unit). Label: `stream`.
pub const ENERGY: &str = "inflor_energy_joules";
/// Reconnections of a client source. Label: `stream`.
pub const RECONNECTS: &str = "inflor_reconnects_total";
/// Decode errors that ended a connection or a file. Labels: `stream`, `kind`.
pub const DECODE_ERRORS: &str = "inflor_decode_errors_total";
/// Errors that ended a live source: a camera unplugged or failing. Labels: `stream`, `kind`
/// (`unplugged` or `device`).
pub const SOURCE_ERRORS: &str = "inflor_source_errors_total";
/// Raw USB packets a camera driver dropped because its ring overflowed (the events in them
/// are unknown, so packets are counted). Label: `stream`.
pub const CAMERA_PACKETS_DROPPED: &str = "inflor_camera_packets_dropped_total";
/// Connected subscribers (gauge). Label: `sink`.
pub const SUBSCRIBERS: &str = "inflor_subscribers";
/// Subscribers disconnected for falling behind. Label: `sink`.
pub const SUBSCRIBERS_DROPPED: &str = "inflor_subscribers_dropped_total";
/// Outputs a sink failed to deliver (a NATS server away, a file that cannot be written).
/// Label: `sink`.
pub const OUTPUTS_FAILED: &str = "inflor_outputs_failed_total";
/// Outputs published. Label: `sink`.
pub const OUTPUTS_PUBLISHED: &str = "inflor_outputs_published_total";
/// Live streams (gauge).
pub const STREAMS: &str = "inflor_streams";
/// Connections refused by a listener's limit or token check. Label: `listener`.
pub const CONNECTIONS_REFUSED: &str = "inflor_connections_refused_total";
/// Whether the NATS sink is connected to its server (gauge, 1 or 0; outputs are dropped and
/// counted in `inflor_outputs_failed_total{sink="nats"}` while it is 0 after a connection).
pub const NATS_CONNECTED: &str = "inflor_nats_connected";
/// Times the NATS sink lost its server.
pub const NATS_DISCONNECTS: &str = "inflor_nats_disconnects_total";

/// Every metric name, with its help text (for `# HELP` lines and the dashboard test).
pub const METRICS: [(&str, &str); 25] = [
    (
        EVENTS_RECEIVED,
        "Events a source delivered, before rate limiting",
    ),
    (
        EVENTS_RATE_LIMITED,
        "Events removed by the stream's rate limiter",
    ),
    (EVENTS_DROPPED, "Events in windows dropped under overload"),
    (WINDOWS_DROPPED, "Windows dropped under overload"),
    (WINDOWS, "Windows binned and queued"),
    (INFERENCES, "Windows classified"),
    (INFERENCE_LATENCY, "Executor time per window"),
    (
        END_TO_END_LATENCY,
        "From a window's last event to its publication",
    ),
    (QUEUE_DEPTH, "Windows waiting for a worker"),
    (
        LAYER_FIRING_RATE,
        "Spikes per neuron per timestep in the last window",
    ),
    (SYNAPTIC_OPS, "Synaptic operations performed"),
    (
        ENERGY,
        "Estimated energy of the synaptic operations so far (45 nm figures), joules",
    ),
    (RECONNECTS, "Reconnections of a client source"),
    (
        DECODE_ERRORS,
        "Decode errors that ended a connection or file",
    ),
    (
        SOURCE_ERRORS,
        "Errors that ended a live source (a camera unplugged or failing)",
    ),
    (
        CAMERA_PACKETS_DROPPED,
        "Raw USB packets a camera driver dropped (its ring overflowed)",
    ),
    (SUBSCRIBERS, "Connected subscribers"),
    (
        SUBSCRIBERS_DROPPED,
        "Subscribers disconnected for falling behind",
    ),
    (OUTPUTS_FAILED, "Outputs a sink failed to deliver"),
    (OUTPUTS_PUBLISHED, "Outputs published"),
    (STREAMS, "Live streams"),
    (
        CONNECTIONS_REFUSED,
        "Connections refused by a limit or a token check",
    ),
    (
        NATS_CONNECTED,
        "Whether the NATS sink is connected (1) or not (0)",
    ),
    (NATS_DISCONNECTS, "Times the NATS sink lost its server"),
    ("inflor_build_info", "Build information (always 1)"),
];

/// Histogram buckets for the latency metrics, seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 10.0,
];

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus recorder could not be built or installed.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    /// The admin address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A log filter could not be parsed.
    #[error("bad log filter {0:?}")]
    Filter(String),
}

/// Installs the process's Prometheus recorder (once; later calls return the same handle) and
/// describes every metric.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_latency_seconds".into()), &LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    for (name, help) in METRICS {
        if name.ends_with("_latency_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else {
            metrics::describe_gauge!(name, help);
        }
    }
    metrics::gauge!("inflor_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Sets up logging on stderr: `json` for one object per line, else text; `filter` is an
/// env-filter directive. Colour only on a terminal with `NO_COLOR` unset.
pub fn init_tracing(json: bool, filter: &str) -> Result<(), TelemetryError> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|_| TelemetryError::Filter(filter.to_owned()))?;
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(colour).try_init()
    };
    Ok(())
}

/// What the admin server reports beyond the metrics.
#[derive(Clone)]
pub struct AdminState {
    /// The Prometheus handle.
    pub metrics: PrometheusHandle,
    /// Set once the model is loaded and every source has started.
    pub ready: Arc<AtomicBool>,
    /// The `/streams` document.
    pub streams: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// The admin routes: `/metrics`, `/healthz`, `/readyz`, `/streams`, merged with `extra`
/// (the web view).
pub fn admin_router(state: AdminState, extra: Option<Router>) -> Router {
    let metrics = state.metrics.clone();
    let ready = Arc::clone(&state.ready);
    let streams = Arc::clone(&state.streams);
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ok = ready.load(Ordering::Acquire);
                async move {
                    if ok {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
                    }
                }
            }),
        )
        .route(
            "/streams",
            get(move || {
                let doc = streams();
                async move { axum::Json(doc) }
            }),
        );
    match extra {
        Some(extra) => router.merge(extra),
        None => router,
    }
}

/// Binds the admin address (so the caller can log it and fail before starting anything
/// else) and returns the listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, TelemetryError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (name, help) in METRICS {
            assert!(name.starts_with("inflor_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(!help.is_empty());
            assert!(seen.insert(name), "{name} twice");
        }
    }
}
