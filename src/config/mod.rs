//! The daemon's configuration: serde types parsed strictly (`deny_unknown_fields`) from TOML,
//! and [`compile`], which checks everything that can be checked before a port is bound and
//! reports every error at once, each with its key path. Imports only the types it names
//! (`binner`, `exec`, `session`).
//!
//! Environment variables override what operators usually set per deployment:
//! `INFLOR_MODEL` (the model file), `INFLOR_ADMIN` (the admin/metrics listen address) and
//! `INFLOR_LOG` (the log filter, e.g. `info` or `inflor=debug`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::binner::WindowPolicy;
use crate::exec::ExecutorKind;
use crate::session::Membranes;

/// The default admin (metrics, health, web view) listen address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model file; the bundled model when absent.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// The executor every stream uses.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// Executor worker threads; each stream runs on one of them.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/streams` and the web view.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Bounds on connections, packets, queues and subscribers.
    #[serde(default)]
    pub limits: Limits,
    /// Seconds to drain after SIGINT or SIGTERM before giving up.
    #[serde(default = "default_grace")]
    pub shutdown_grace_s: f64,
    /// The event streams.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// Where each window's output goes.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

fn default_workers() -> usize {
    1
}

fn default_grace() -> f64 {
    10.0
}

/// The admin HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address (loopback by default; `INFLOR_ADMIN` overrides).
    #[serde(default = "default_admin")]
    pub listen: String,
    /// Serve the live web view at `/`.
    #[serde(default = "yes")]
    pub web: bool,
}

fn default_admin() -> String {
    DEFAULT_ADMIN.to_owned()
}

fn yes() -> bool {
    true
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin(),
            web: true,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// An env-filter directive (`info`, `inflor=debug`); `INFLOR_LOG` overrides.
    #[serde(default)]
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Bounds that keep a misbehaving client or an overload from exhausting the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open connections per listener (push sources, subscriber endpoints).
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// The largest packet or record accepted from a socket or file, MiB.
    #[serde(default = "default_packet")]
    pub max_packet_mib: usize,
    /// Windows queued per stream between its source and its worker.
    #[serde(default = "default_queue")]
    pub queue_windows: usize,
    /// Streams alive at once (configured plus pushed connections).
    #[serde(default = "default_streams")]
    pub max_streams: usize,
    /// Outputs buffered per subscriber before a slow one is disconnected.
    #[serde(default = "default_subscriber_buffer")]
    pub subscriber_buffer: usize,
    /// Events one decoder call may produce (the batch size).
    #[serde(default = "default_batch")]
    pub batch_events: usize,
}

fn default_connections() -> usize {
    64
}
fn default_packet() -> usize {
    64
}
fn default_queue() -> usize {
    16
}
fn default_streams() -> usize {
    256
}
fn default_subscriber_buffer() -> usize {
    1024
}
fn default_batch() -> usize {
    1 << 16
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_connections(),
            max_packet_mib: default_packet(),
            queue_windows: default_queue(),
            max_streams: default_streams(),
            subscriber_buffer: default_subscriber_buffer(),
            batch_events: default_batch(),
        }
    }
}

/// One event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Its id: letters, digits, `.`, `_` and `-` (it appears in metric labels and NATS
    /// subjects).
    pub id: String,
    /// Where its events come from.
    pub source: SourceConfig,
    /// The window policy (`duration:US`, `count:N`, `equal-count`, `equal-duration`); the
    /// model's when absent.
    #[serde(default)]
    pub window: Option<String>,
    /// Bins per classification (T); the model's when absent.
    #[serde(default)]
    pub timesteps: Option<usize>,
    /// A classification every `hop` bins (sliding windows); T when absent (tumbling).
    #[serde(default)]
    pub hop: Option<usize>,
    /// `reset` (each window from rest, as trained) or `continuous`.
    #[serde(default)]
    pub membranes: Membranes,
    /// What happens when the stream's worker falls behind; `block` for files, `drop_oldest`
    /// for live sources when absent.
    #[serde(default)]
    pub backpressure: Option<Backpressure>,
    /// Keep at most this many events per second, by uniform decimation.
    #[serde(default)]
    pub max_events_per_s: Option<u64>,
    /// The sensor size `WxH`, when the stream does not say it.
    #[serde(default)]
    pub resolution: Option<String>,
    /// The true class of everything this stream shows (for demos and replays).
    #[serde(default)]
    pub label: Option<String>,
}

/// What a full per-stream queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backpressure {
    /// The source waits: nothing is lost, and a file replay stays deterministic.
    Block,
    /// The oldest queued window is dropped (counted, and the next output has `gap: true`):
    /// a live camera cannot be slowed down, and latency must not build up.
    DropOldest,
}

/// Where a stream's events come from, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A recording, replayed.
    File {
        /// The file.
        path: PathBuf,
        /// Its format, when detection should be skipped (`aedat2`, `evt3`...).
        #[serde(default)]
        format: Option<String>,
        /// Pace by the event timestamps at this speed (1 = real time); as fast as possible
        /// when absent.
        #[serde(default)]
        speed: Option<f64>,
        /// Start again at the end.
        #[serde(default, rename = "loop")]
        repeat: bool,
    },
    /// A client of an iniVation DV / dv-processing `NetworkWriter` (the AEDAT 4 network
    /// stream), reconnecting with exponential backoff and jitter.
    DvTcp {
        /// `host:port`.
        address: String,
        /// First reconnect delay, ms.
        #[serde(default = "default_reconnect_min")]
        reconnect_min_ms: u64,
        /// Longest reconnect delay, ms.
        #[serde(default = "default_reconnect_max")]
        reconnect_max_ms: u64,
    },
    /// A listener accepting AEDAT 4 network streams pushed by many clients, one stream per
    /// connection (`<id>/<peer address>`).
    Listen {
        /// Listen address.
        listen: String,
        /// Require this bearer token (read from the named environment variable) as the
        /// first line `Bearer <token>` of each connection.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// A USB camera through `neuromorphic-drivers` (Prophesee EVK3/EVK4, iniVation
    /// DVXplorer/DAVIS346).
    Usb {
        /// The camera's serial number; the first camera found when absent.
        #[serde(default)]
        serial: Option<String>,
    },
}

fn default_reconnect_min() -> u64 {
    100
}
fn default_reconnect_max() -> u64 {
    10_000
}

/// Where outputs go, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Standard output: JSON lines, or one human-readable line per window.
    Stdout {
        /// `json` (one `Output` per line) or `text`.
        #[serde(default)]
        format: StdoutFormat,
    },
    /// A JSON-lines file (appended).
    File {
        /// The file.
        path: PathBuf,
    },
    /// A TCP endpoint streaming the same JSON lines to every subscriber.
    Tcp {
        /// Listen address.
        listen: String,
        /// Require `Bearer <token>` (from this environment variable) as the first line.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// The gRPC API (`proto/inflor/v1/inflor.proto`): Subscribe, ListStreams, Ingest.
    Grpc {
        /// Listen address.
        listen: String,
        /// Require `authorization: Bearer <token>` (from this environment variable).
        #[serde(default)]
        token_env: Option<String>,
    },
    /// NATS: one subject per stream.
    Nats {
        /// Server URL, `nats://host:port`.
        url: String,
        /// The subject; `{stream}` is replaced by the stream id.
        #[serde(default = "default_subject")]
        subject: String,
    },
}

fn default_subject() -> String {
    "inflor.{stream}".to_owned()
}

/// Standard output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// One `Output` record per line.
    #[default]
    Json,
    /// One human-readable line per window.
    Text,
}

/// One problem in a configuration: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path (`streams[1].source.speed`), or `(file)` for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} configuration error{}",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors with their key paths.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Parses a configuration, reporting every key that does not fit (unknown keys, wrong types)
/// at once. Each top-level key and each stream and sink is read on its own, so one bad entry
/// does not hide the others.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let (config, errors) = parse_partial(text)?;
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors.0))
    }
}

/// Parses and compiles a configuration, with `overrides` applied in between, and reports the
/// errors of both steps together: a key that does not parse does not hide a value that is
/// wrong elsewhere.
pub fn load(text: &str, overrides: &Overrides) -> Result<Compiled, ConfigErrors> {
    let (mut config, mut errors) = parse_partial(text)?;
    overrides.apply(&mut config);
    match compile(&config) {
        Ok(compiled) if errors.0.is_empty() => Ok(compiled),
        Ok(_) => Err(ConfigErrors(errors.0)),
        Err(more) => {
            // An entry that did not parse is missing from the partial config; do not also
            // report its section as empty.
            let parse_failed = |section: &str| {
                errors
                    .0
                    .iter()
                    .any(|e| e.path.starts_with(&format!("{section}[")))
            };
            let keep: Vec<ConfigError> = more
                .0
                .into_iter()
                .filter(|e| !(e.path == "streams" && parse_failed("streams")))
                .collect();
            errors.0.extend(keep);
            Err(ConfigErrors(errors.0))
        }
    }
}

/// The config with every entry that parsed, and the errors of those that did not; fails
/// outright only when the text is not TOML.
fn parse_partial(text: &str) -> Result<(Config, Errors), ConfigErrors> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: "(file)".into(),
            message: e.message().to_owned()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        }])
    })?;
    let mut errors = Errors::default();
    let mut config = Config {
        model: None,
        executor: ExecutorKind::default(),
        workers: default_workers(),
        admin: AdminConfig::default(),
        log: LogConfig::default(),
        limits: Limits::default(),
        shutdown_grace_s: default_grace(),
        streams: Vec::new(),
        sinks: Vec::new(),
    };
    for (key, value) in table {
        match key.as_str() {
            "model" => set(&mut config.model, value, "model", &mut errors),
            "executor" => set(&mut config.executor, value, "executor", &mut errors),
            "workers" => set(&mut config.workers, value, "workers", &mut errors),
            "admin" => set(&mut config.admin, value, "admin", &mut errors),
            "log" => set(&mut config.log, value, "log", &mut errors),
            "limits" => set(&mut config.limits, value, "limits", &mut errors),
            "shutdown_grace_s" => set(
                &mut config.shutdown_grace_s,
                value,
                "shutdown_grace_s",
                &mut errors,
            ),
            "streams" | "sinks" => {
                let toml::Value::Array(items) = value else {
                    errors.add(&key, format!("expected an array of tables ([[{key}]])"));
                    continue;
                };
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("{key}[{i}]");
                    if key == "streams" {
                        if let Some(s) = read::<StreamConfig>(item, &path, &mut errors) {
                            config.streams.push(s);
                        }
                    } else if let Some(s) = read::<SinkConfig>(item, &path, &mut errors) {
                        config.sinks.push(s);
                    }
                }
            }
            other => errors.add(
                other,
                "unknown key (expected model, executor, workers, admin, log, limits, \
                 shutdown_grace_s, streams, sinks)",
            ),
        }
    }
    Ok((config, errors))
}

fn set<T: DeserializeOwned>(slot: &mut T, value: toml::Value, path: &str, errors: &mut Errors) {
    if let Some(v) = read(value, path, errors) {
        *slot = v;
    }
}

fn read<T: DeserializeOwned>(value: toml::Value, path: &str, errors: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            errors.add(full, e.into_inner().to_string());
            None
        }
    }
}

/// The environment variables that override a configuration, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `INFLOR_MODEL`.
    pub model: Option<PathBuf>,
    /// `INFLOR_ADMIN`.
    pub admin: Option<String>,
    /// `INFLOR_LOG`.
    pub log: Option<String>,
}

impl Overrides {
    /// Reads `INFLOR_MODEL`, `INFLOR_ADMIN` and `INFLOR_LOG` (empty values are ignored).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            model: var("INFLOR_MODEL").map(PathBuf::from),
            admin: var("INFLOR_ADMIN"),
            log: var("INFLOR_LOG"),
        }
    }

    /// Applies the overrides.
    pub fn apply(&self, config: &mut Config) {
        if let Some(m) = &self.model {
            config.model = Some(m.clone());
        }
        if let Some(a) = &self.admin {
            config.admin.listen = a.clone();
        }
        if let Some(l) = &self.log {
            config.log.level = Some(l.clone());
        }
    }
}

/// A stream, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Its id.
    pub id: String,
    /// Its source.
    pub source: Source,
    /// Window policy override.
    pub window: Option<WindowPolicy>,
    /// T override.
    pub timesteps: Option<usize>,
    /// Hop in bins.
    pub hop: Option<usize>,
    /// Reset or continuous membranes.
    pub membranes: Membranes,
    /// What a full queue does.
    pub backpressure: Backpressure,
    /// Decimation limit, events/s.
    pub max_events_per_s: Option<u64>,
    /// Sensor size override.
    pub resolution: Option<(u16, u16)>,
    /// True class.
    pub label: Option<String>,
}

/// A source, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file replay.
    File {
        /// The file.
        path: PathBuf,
        /// Forced format.
        format: Option<crate::format::Format>,
        /// Pacing speed (None: as fast as possible).
        speed: Option<f64>,
        /// Loop at the end.
        repeat: bool,
    },
    /// A DV TCP client.
    DvTcp {
        /// `host:port`.
        address: String,
        /// Backoff bounds.
        reconnect: (Duration, Duration),
    },
    /// A push listener.
    Listen {
        /// Listen address.
        listen: SocketAddr,
        /// Required bearer token.
        token: Option<String>,
    },
    /// A USB camera.
    Usb {
        /// Serial number.
        serial: Option<String>,
    },
}

/// A sink, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Standard output.
    Stdout(StdoutFormat),
    /// A JSON-lines file.
    File(PathBuf),
    /// The TCP subscriber endpoint.
    Tcp {
        /// Listen address.
        listen: SocketAddr,
        /// Required bearer token.
        token: Option<String>,
    },
    /// The gRPC API.
    Grpc {
        /// Listen address.
        listen: SocketAddr,
        /// Required bearer token.
        token: Option<String>,
    },
    /// NATS.
    Nats {
        /// Server URL.
        url: String,
        /// Subject template.
        subject: String,
    },
}

/// A configuration checked in full and ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The model file (None: the bundled model).
    pub model: Option<PathBuf>,
    /// Executor kind.
    pub executor: ExecutorKind,
    /// Worker threads.
    pub workers: usize,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Serve the web view.
    pub web: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Limits.
    pub limits: Limits,
    /// Drain deadline.
    pub shutdown_grace: Duration,
    /// Streams.
    pub streams: Vec<Stream>,
    /// Sinks.
    pub sinks: Vec<Sink>,
}

/// Checks everything that can be checked without binding a port or opening a socket: every
/// value's range, ids, addresses, files, tokens and conflicts between listeners. Every
/// problem is reported, each with its key path.
pub fn compile(config: &Config) -> Result<Compiled, ConfigErrors> {
    let mut errors = Errors::default();
    if let Some(path) = &config.model
        && !path.is_file()
    {
        errors.add("model", format!("{} is not a file", path.display()));
    }
    if !(1..=256).contains(&config.workers) {
        errors.add(
            "workers",
            format!("must be 1..=256, found {}", config.workers),
        );
    }
    let admin = parse_addr(&config.admin.listen, "admin.listen", &mut errors);
    if !(config.shutdown_grace_s.is_finite()
        && config.shutdown_grace_s > 0.0
        && config.shutdown_grace_s <= 300.0)
    {
        errors.add(
            "shutdown_grace_s",
            format!(
                "must be in (0, 300] seconds, found {}",
                config.shutdown_grace_s
            ),
        );
    }
    let l = &config.limits;
    for (key, value, lo, hi) in [
        ("limits.max_connections", l.max_connections, 1, 65_536),
        ("limits.max_packet_mib", l.max_packet_mib, 1, 4096),
        ("limits.queue_windows", l.queue_windows, 1, 65_536),
        ("limits.max_streams", l.max_streams, 1, 65_536),
        ("limits.subscriber_buffer", l.subscriber_buffer, 1, 1 << 20),
        ("limits.batch_events", l.batch_events, 1, 1 << 24),
    ] {
        if !(lo..=hi).contains(&value) {
            errors.add(key, format!("must be {lo}..={hi}, found {value}"));
        }
    }
    if let Some(level) = &config.log.level
        && tracing_subscriber::EnvFilter::try_new(level).is_err()
    {
        errors.add(
            "log.level",
            format!("{level:?} is not a log filter (e.g. info, inflor=debug)"),
        );
    }
    // A gRPC server takes streams through Ingest, so it needs no configured one.
    let ingest = config
        .sinks
        .iter()
        .any(|s| matches!(s, SinkConfig::Grpc { .. }));
    if config.streams.is_empty() && !ingest {
        errors.add(
            "streams",
            "at least one [[streams]] entry (or a gRPC sink, for Ingest) is needed",
        );
    }
    // Every listener, to refuse two on one address.
    let mut listeners: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(a) = admin {
        listeners.insert(a, "admin.listen".into());
    }
    let mut claim = |addr: SocketAddr, path: String, errors: &mut Errors| {
        // Port 0 asks the system for a free port: never a clash.
        if addr.port() == 0 {
            return;
        }
        if let Some(first) = listeners.get(&addr) {
            errors.add(&path, format!("{addr} is already used by {first}"));
        } else {
            listeners.insert(addr, path);
        }
    };
    let mut ids = BTreeSet::new();
    let mut streams = Vec::new();
    for (i, s) in config.streams.iter().enumerate() {
        let p = |k: &str| format!("streams[{i}].{k}");
        if s.id.is_empty()
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            errors.add(
                p("id"),
                format!("{:?} must be letters, digits, '.', '_' or '-'", s.id),
            );
        } else if !ids.insert(s.id.clone()) {
            errors.add(p("id"), format!("{:?} is used by an earlier stream", s.id));
        }
        let window = s
            .window
            .as_ref()
            .and_then(|w| match w.parse::<WindowPolicy>() {
                Ok(w) => Some(w),
                Err(e) => {
                    errors.add(p("window"), e.to_string());
                    None
                }
            });
        if s.timesteps == Some(0) {
            errors.add(p("timesteps"), "must be at least 1");
        }
        if let Some(hop) = s.hop {
            if hop == 0 {
                errors.add(p("hop"), "must be at least 1");
            } else if let Some(t) = s.timesteps
                && hop > t
            {
                errors.add(p("hop"), format!("{hop} is more than T = {t}"));
            }
        }
        if s.max_events_per_s == Some(0) {
            errors.add(p("max_events_per_s"), "must be at least 1");
        }
        let resolution = s
            .resolution
            .as_ref()
            .and_then(|r| match parse_resolution(r) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.add(p("resolution"), e);
                    None
                }
            });
        let source = match &s.source {
            SourceConfig::File {
                path,
                format,
                speed,
                repeat,
            } => {
                if !path.is_file() {
                    errors.add(
                        p("source.path"),
                        format!("{} is not a file", path.display()),
                    );
                }
                let format = format.as_ref().and_then(|f| {
                    use clap::ValueEnum;
                    match crate::format::Format::from_str(f, true) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            errors.add(
                                p("source.format"),
                                format!(
                                    "{f:?} is not a format (aedat2, aedat3, aedat4, dv-network, evt2, evt3, dat, atis, es)"
                                ),
                            );
                            None
                        }
                    }
                });
                if let Some(v) = speed
                    && !(v.is_finite() && *v > 0.0)
                {
                    errors.add(p("source.speed"), format!("must be positive, found {v}"));
                }
                Some(Source::File {
                    path: path.clone(),
                    format,
                    speed: *speed,
                    repeat: *repeat,
                })
            }
            SourceConfig::DvTcp {
                address,
                reconnect_min_ms,
                reconnect_max_ms,
            } => {
                if !address.contains(':')
                    || address
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .is_none()
                {
                    errors.add(p("source.address"), format!("{address:?} is not host:port"));
                }
                if *reconnect_min_ms == 0 || reconnect_min_ms > reconnect_max_ms {
                    errors.add(
                        p("source.reconnect_min_ms"),
                        format!(
                            "must be at least 1 and at most reconnect_max_ms ({reconnect_max_ms})"
                        ),
                    );
                }
                Some(Source::DvTcp {
                    address: address.clone(),
                    reconnect: (
                        Duration::from_millis(*reconnect_min_ms),
                        Duration::from_millis(*reconnect_max_ms),
                    ),
                })
            }
            SourceConfig::Listen { listen, token_env } => {
                let addr = parse_addr(listen, &p("source.listen"), &mut errors);
                if let Some(a) = addr {
                    claim(a, p("source.listen"), &mut errors);
                }
                let token = token(token_env.as_deref(), &p("source.token_env"), &mut errors);
                addr.map(|listen| Source::Listen { listen, token })
            }
            SourceConfig::Usb { serial } => Some(Source::Usb {
                serial: serial.clone(),
            }),
        };
        let backpressure = s.backpressure.unwrap_or(match s.source {
            SourceConfig::File { .. } => Backpressure::Block,
            _ => Backpressure::DropOldest,
        });
        if let Some(source) = source {
            streams.push(Stream {
                id: s.id.clone(),
                source,
                window,
                timesteps: s.timesteps,
                hop: s.hop,
                membranes: s.membranes,
                backpressure,
                max_events_per_s: s.max_events_per_s,
                resolution,
                label: s.label.clone(),
            });
        }
    }
    let mut sinks = Vec::new();
    for (i, s) in config.sinks.iter().enumerate() {
        let p = |k: &str| format!("sinks[{i}].{k}");
        match s {
            SinkConfig::Stdout { format } => sinks.push(Sink::Stdout(*format)),
            SinkConfig::File { path } => {
                let parent = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !parent.is_dir() {
                    errors.add(
                        p("path"),
                        format!("the folder {} does not exist", parent.display()),
                    );
                } else if path.is_dir() {
                    errors.add(p("path"), format!("{} is a folder", path.display()));
                }
                sinks.push(Sink::File(path.clone()));
            }
            SinkConfig::Tcp { listen, token_env } | SinkConfig::Grpc { listen, token_env } => {
                let addr = parse_addr(listen, &p("listen"), &mut errors);
                let token = token(token_env.as_deref(), &p("token_env"), &mut errors);
                if let Some(a) = addr {
                    claim(a, p("listen"), &mut errors);
                    sinks.push(match s {
                        SinkConfig::Tcp { .. } => Sink::Tcp { listen: a, token },
                        _ => Sink::Grpc { listen: a, token },
                    });
                }
            }
            SinkConfig::Nats { url, subject } => {
                if !url.starts_with("nats://")
                    || url.len() <= "nats://".len()
                    || url.parse::<async_nats::ServerAddr>().is_err()
                {
                    errors.add(p("url"), format!("{url:?} is not nats://host:port"));
                }
                let probe = subject.replace("{stream}", "s");
                if probe.is_empty()
                    || probe
                        .split('.')
                        .any(|t| t.is_empty() || t.contains([' ', '*', '>', '\t']))
                {
                    errors.add(
                        p("subject"),
                        format!(
                            "{subject:?} is not a NATS subject (dot-separated tokens, no wildcards)"
                        ),
                    );
                }
                sinks.push(Sink::Nats {
                    url: url.clone(),
                    subject: subject.clone(),
                });
            }
        }
    }
    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    Ok(Compiled {
        model: config.model.clone(),
        executor: config.executor,
        workers: config.workers,
        admin: admin.unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("a valid literal address")),
        web: config.admin.web,
        log_format: config.log.format,
        log_level: config.log.level.clone().unwrap_or_else(|| "info".into()),
        limits: config.limits.clone(),
        shutdown_grace: Duration::from_secs_f64(config.shutdown_grace_s),
        streams,
        sinks,
    })
}

fn parse_addr(text: &str, path: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.add(
                path,
                format!("{text:?} is not an IP address and port (e.g. 127.0.0.1:9464)"),
            );
            None
        }
    }
}

fn token(var: Option<&str>, path: &str, errors: &mut Errors) -> Option<String> {
    let var = var?;
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            errors.add(path, format!("the environment variable {var} is not set"));
            None
        }
    }
}

/// `WIDTHxHEIGHT`, both in 1..=65535.
pub fn parse_resolution(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, found {s:?}"))?;
    let parse = |v: &str, what: &str| match v.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{what} must be an integer 1..=65535, found {v:?}")),
        Ok(n) => Ok(n),
    };
    Ok((parse(w, "width")?, parse(h, "height")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = r#"
            workers = 0
            colour = "blue"
            [admin]
            listen = "localhost"
            [[streams]]
            id = "a b"
            window = "duration:0"
            source = { kind = "file", path = "/no/such/file", speed = -1.0 }
            [[streams]]
            id = "cam"
            source = { kind = "dv_tcp", address = "127.0.0.1:7777", spede = 1 }
            [[sinks]]
            kind = "nats"
            url = "http://x"
        "#;
        let errors = parse(text).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"colour"), "{errors:?}");
        assert!(paths.contains(&"streams[1].source"), "{errors:?}");
        assert!(errors.iter().any(|e| e.message.contains("spede")));
        // The parse errors aside, compile finds the rest.
        let ok = text
            .replace("colour = \"blue\"", "")
            .replace(", spede = 1", "");
        let config = parse(&ok).unwrap();
        let errors = compile(&config).unwrap_err().0;
        let paths: BTreeSet<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "workers",
            "admin.listen",
            "streams[0].id",
            "streams[0].window",
            "streams[0].source.path",
            "streams[0].source.speed",
            "sinks[0].url",
        ] {
            assert!(paths.contains(want), "{want} missing from {errors:?}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.aedat");
        std::fs::write(&file, b"x").unwrap();
        let text = format!(
            "[[streams]]\nid = \"r\"\nsource = {{ kind = \"file\", path = {:?} }}\n",
            file.display().to_string()
        );
        let mut config = parse(&text).unwrap();
        Overrides {
            model: None,
            admin: Some("127.0.0.1:9999".into()),
            log: Some("debug".into()),
        }
        .apply(&mut config);
        let c = compile(&config).unwrap();
        assert_eq!(c.admin.to_string(), "127.0.0.1:9999");
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.workers, 1);
        assert_eq!(c.streams[0].backpressure, Backpressure::Block);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn listeners_may_not_share_an_address() {
        let text = r#"
            [admin]
            listen = "127.0.0.1:9000"
            [[streams]]
            id = "p"
            source = { kind = "listen", listen = "127.0.0.1:9000" }
            [[sinks]]
            kind = "tcp"
            listen = "127.0.0.1:9000"
        "#;
        let errors = compile(&parse(text).unwrap()).unwrap_err().0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].message.contains("admin.listen"));
    }

    #[test]
    fn a_grpc_sink_needs_no_configured_stream() {
        let grpc = r#"
            [[sinks]]
            kind = "grpc"
            listen = "127.0.0.1:0"
        "#;
        let c = compile(&parse(grpc).unwrap()).unwrap();
        assert!(c.streams.is_empty());
        assert!(matches!(c.sinks[..], [Sink::Grpc { token: None, .. }]));
        let stdout = "[[sinks]]\nkind = \"stdout\"\n";
        let errors = compile(&parse(stdout).unwrap()).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "streams");
    }
}
