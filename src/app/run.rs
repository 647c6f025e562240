//! `inflor run` (the streaming daemon) and `inflor validate` (its config check): reads and
//! checks the config in full before any port is bound, loads the model, binds every listener,
//! starts the pipeline and the sources, and on SIGINT/SIGTERM drains in order (sources stop,
//! binned windows are classified and published, sinks flush) within the grace period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use inflor::binner::{InputSpec, WindowPolicy};
use inflor::config::{self, Compiled, LogFormat, Sink, Source, Stream};
use inflor::exec::{Plan, PlanOptions};
use inflor::model::Model;
use inflor::pipeline::{Pipeline, PipelineHandle, Publish, StreamSpec, Totals};
use inflor::session::SessionOptions;
use inflor::sink;
use inflor::source::{self, dv_tcp, file, listen, usb};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::bad_input;

/// The prefix of the path a bundled recording goes by in the embedded default's streams.
const BUNDLED_PREFIX: &str = "bundled:";

/// Arguments of `inflor run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The TOML config (see `config/` for commented examples). Without it: the bundled model
    /// on the bundled recordings (one stream each), replayed in a loop at real time,
    /// classifications with the true label on stdout, the live web view on
    /// http://127.0.0.1:9464/ and metrics on http://127.0.0.1:9464/metrics.
    pub config: Option<PathBuf>,
}

/// Arguments of `inflor validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The TOML config to check.
    pub config: PathBuf,
}

/// Checks a config and reports every error with its key path (exit 2 if any).
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let compiled = load(&args.config)?;
    println!(
        "{}: ok ({} stream{}, {} sink{}, admin on {})",
        args.config.display(),
        compiled.streams.len(),
        if compiled.streams.len() == 1 { "" } else { "s" },
        compiled.sinks.len(),
        if compiled.sinks.len() == 1 { "" } else { "s" },
        compiled.admin
    );
    Ok(())
}

/// Reads, parses (with the environment overrides) and compiles a config file.
fn load(path: &Path) -> anyhow::Result<Compiled> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))
        .map_err(bad_input)?;
    compile_text(&text, path)
}

fn compile_text(text: &str, name: &Path) -> anyhow::Result<Compiled> {
    let report =
        |errors: config::ConfigErrors| bad_input(anyhow::anyhow!("{}: {errors}", name.display()));
    config::load(text, &config::Overrides::from_env()).map_err(report)
}

/// The embedded default: each bundled recording as a stream of its own, looped at real time
/// with its true label, text on stdout.
fn embedded_default() -> anyhow::Result<Compiled> {
    // The streams read the recordings compiled into the binary; the config names the binary
    // itself only to pass the check that a file source's path is a file.
    let exe = std::env::current_exe().context("locating the inflor binary")?;
    let mut text = String::new();
    for r in crate::app::BUNDLED_RECORDINGS {
        text.push_str(&format!(
            r#"
[[streams]]
id = "bundled-{label}"
source = {{ kind = "file", path = {exe:?}, speed = 1.0, loop = true }}
label = "{label}"
"#,
            label = r.label,
            exe = exe.display().to_string()
        ));
    }
    text.push_str(
        r#"
[[sinks]]
kind = "stdout"
format = "text"
"#,
    );
    let mut compiled = compile_text(&text, Path::new("the embedded default config"))?;
    for (stream, r) in compiled
        .streams
        .iter_mut()
        .zip(crate::app::BUNDLED_RECORDINGS)
    {
        if let Source::File { path, .. } = &mut stream.source {
            *path = PathBuf::from(format!("{BUNDLED_PREFIX}{}", r.name));
        }
    }
    Ok(compiled)
}

/// Runs the daemon.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let compiled = match &args.config {
        Some(path) => load(path)?,
        None => embedded_default()?,
    };
    let filter = compiled.log_level.clone();
    inflor::telemetry::init_tracing(compiled.log_format == LogFormat::Json, &filter)
        .context("setting up logging")?;
    let model = Arc::new(match &compiled.model {
        Some(path) => crate::app::load_model(path)?,
        None => crate::app::bundled_model()?,
    });
    for s in &compiled.streams {
        input_spec(&model, s).map_err(bad_input)?;
    }
    let cameras = open_cameras(&compiled)?;
    let plan = Plan::new(
        model.network.clone(),
        compiled.executor,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .context("preparing the executor")?;
    let metrics = inflor::telemetry::install_metrics().context("installing the metrics")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("inflor-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let (totals, nats) = runtime.block_on(daemon(compiled, model, plan, metrics, cameras))?;
    // The NATS sinks' counts, when there are any: published + dropped = published windows.
    let nats = nats.map_or_else(String::new, |(published, dropped)| {
        format!(" nats_published={published} nats_dropped={dropped}")
    });
    // One line for people and tests alike: windows binned = classified + dropped when
    // nothing was lost.
    eprintln!(
        "inflor: stopped: streams={} events_received={} events_rate_limited={} events_dropped={} windows={} windows_dropped={} inferences={} published={}{nats}",
        totals.streams,
        totals.events_received,
        totals.events_rate_limited,
        totals.events_dropped,
        totals.windows,
        totals.windows_dropped,
        totals.inferences,
        totals.published
    );
    Ok(())
}

/// Opens every USB camera the config names, in stream order, before anything is bound or
/// served: a camera that is not there fails the start, naming the stream and the serial.
fn open_cameras(c: &Compiled) -> anyhow::Result<Vec<usb::Camera>> {
    let mut cameras = Vec::new();
    for s in &c.streams {
        if let Source::Usb { serial } = &s.source {
            let camera = usb::Camera::open(&s.id, serial.as_deref())?;
            let info = camera.info();
            eprintln!(
                "inflor: stream {} reads the {} with serial {} ({}x{}, {})",
                s.id,
                info.name,
                info.serial.as_deref().unwrap_or("?"),
                info.width,
                info.height,
                info.speed
            );
            cameras.push(camera);
        }
    }
    Ok(cameras)
}

/// The model's input spec with the stream's window policy and T.
fn input_spec(model: &Model, s: &Stream) -> anyhow::Result<InputSpec> {
    let mut input = model.metadata.input;
    if let Some(w) = s.window {
        input.window = w;
    }
    if let Some(t) = s.timesteps {
        if t != input.timesteps {
            anyhow::bail!(
                "stream {}: timesteps = {t}, but the model was built for T = {}",
                s.id,
                input.timesteps
            );
        }
        input.timesteps = t;
    }
    if matches!(input.window, WindowPolicy::Recording { .. })
        && !matches!(s.source, Source::File { .. })
    {
        anyhow::bail!(
            "stream {}: the window policy {} bins whole recordings, and a live stream never \
             ends; set the stream's window to a streaming policy (\"count:N\" events or \
             \"duration:US\" microseconds per bin)",
            s.id,
            input.window
        );
    }
    Ok(input)
}

/// `web`: the web view is on, so each output keeps its window's frames for the view's image.
fn stream_spec(model: &Model, s: &Stream, web: bool) -> anyhow::Result<StreamSpec> {
    let source = match &s.source {
        Source::File { path, .. } => format!("file {}", path.display()),
        Source::DvTcp { address, .. } => format!("dv_tcp {address}"),
        Source::Listen { listen, .. } => format!("listen {listen}"),
        Source::Usb { serial } => format!("usb {}", serial.as_deref().unwrap_or("(first)")),
    };
    Ok(StreamSpec {
        id: s.id.clone(),
        source,
        input: input_spec(model, s)?,
        session: SessionOptions {
            stream: s.id.clone(),
            hop: s.hop,
            membranes: s.membranes,
            label: s.label.clone(),
            keep_frames: web,
            ..SessionOptions::default()
        },
        backpressure: s.backpressure,
        max_events_per_s: s.max_events_per_s,
        resolution: s.resolution,
    })
}

/// Runs the daemon until its sources end or a signal; returns the pipeline's totals and, when
/// there are NATS sinks, their outputs published and dropped.
async fn daemon(
    c: Compiled,
    model: Arc<Model>,
    plan: Arc<Plan>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    cameras: Vec<usb::Camera>,
) -> anyhow::Result<(Totals, Option<(u64, u64)>)> {
    // Every listener is bound before anything starts, so a taken port fails cleanly.
    let admin = inflor::telemetry::bind(c.admin).await?;
    let admin_addr = admin.local_addr()?;
    eprintln!("inflor: admin on http://{admin_addr}");
    if c.web {
        eprintln!("inflor: web view on http://{admin_addr}/");
    }
    let mut tcp_sinks = Vec::new();
    for s in &c.sinks {
        if let Sink::Tcp { listen, token } = s {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the TCP sink on {listen}"))?;
            eprintln!("inflor: subscribers on {}", l.local_addr()?);
            tcp_sinks.push((l, token.clone()));
        }
    }
    let mut grpc_sinks = Vec::new();
    for s in &c.sinks {
        if let Sink::Grpc { listen, token } = s {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the gRPC server on {listen}"))?;
            eprintln!("inflor: gRPC on {}", l.local_addr()?);
            grpc_sinks.push((l, token.clone()));
        }
    }
    let mut listeners = Vec::new();
    for s in &c.streams {
        if let Source::Listen { listen, .. } = &s.source {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding stream {}'s listener on {listen}", s.id))?;
            eprintln!("inflor: stream {} listening on {}", s.id, l.local_addr()?);
            listeners.push(l);
        }
    }

    let hub = sink::Hub::new(c.limits.subscriber_buffer);
    let mut sinks: Vec<Box<dyn Publish>> = Vec::new();
    for s in &c.sinks {
        match s {
            Sink::Stdout(format) => sinks.push(Box::new(sink::Stdout::new(*format))),
            Sink::File(path) => sinks
                .push(Box::new(sink::File::open(path).with_context(|| {
                    format!("opening the output file {}", path.display())
                })?)),
            _ => {}
        }
    }
    // NATS clients connect in the background: a server away at start delays nothing.
    let mut nats = Vec::new();
    for s in &c.sinks {
        if let Sink::Nats { url, subject } = s {
            nats.push(
                sink::nats::Nats::connect(url, subject, &hub, c.limits.subscriber_buffer)
                    .await
                    .map_err(bad_input)?,
            );
        }
    }
    let nats_counts: Vec<_> = nats.iter().map(|n| n.counts()).collect();
    // The web view keeps each stream's latest output; a browser never holds the pipeline up.
    let web = c
        .web
        .then(|| sink::web::WebView::new(c.limits.max_streams, c.limits.max_connections));
    if let Some(w) = &web {
        sinks.push(Box::new(w.sink()));
    }
    if !tcp_sinks.is_empty() || !grpc_sinks.is_empty() || !nats.is_empty() {
        sinks.push(Box::new(hub.clone()));
    }
    let pipeline = Pipeline::start(
        Arc::clone(&model),
        plan,
        c.workers,
        c.limits.queue_windows,
        c.limits.max_streams,
        sinks,
    )
    .context("starting the executor workers")?;
    let handle = pipeline.handle();

    let ready = Arc::new(AtomicBool::new(false));
    let admin_cancel = CancellationToken::new();
    let streams_handle = handle.clone();
    let streams: sink::web::Counters = Arc::new(move || streams_handle.streams_json());
    let router = inflor::telemetry::admin_router(
        inflor::telemetry::AdminState {
            metrics,
            ready: Arc::clone(&ready),
            streams: Arc::clone(&streams),
        },
        web.as_ref().map(|w| w.router(streams)),
    );
    let admin_stop = admin_cancel.clone();
    let admin_task = tokio::spawn(inflor::telemetry::serve(admin, router, async move {
        admin_stop.cancelled().await
    }));
    let sink_cancel = CancellationToken::new();
    let mut sink_tasks = JoinSet::new();
    for (l, token) in tcp_sinks {
        sink_tasks.spawn(sink::tcp::serve(
            l,
            hub.clone(),
            token,
            c.limits.max_connections,
            sink_cancel.clone(),
        ));
    }
    let grpc: Vec<sink::grpc::Server> = grpc_sinks
        .into_iter()
        .map(|(l, token)| {
            sink::grpc::Server::start(
                l,
                sink::grpc::Config {
                    token,
                    max_connections: c.limits.max_connections,
                    max_packet_bytes: c.limits.max_packet_mib << 20,
                    batch_events: c.limits.batch_events,
                },
                hub.clone(),
                handle.clone(),
            )
        })
        .collect();
    // Half the grace period for the NATS clients to write out what they hold at shutdown,
    // leaving the rest to the sources and the executors.
    for n in nats {
        sink_tasks.spawn(n.run(c.shutdown_grace / 2));
    }

    let cancel = CancellationToken::new();
    let mut sources = JoinSet::new();
    let mut listeners = listeners.into_iter();
    let mut cameras = cameras.into_iter();
    let options = source::network_options(c.limits.max_packet_mib << 20, c.limits.batch_events);
    for s in &c.streams {
        let spec = stream_spec(&model, s, c.web).map_err(bad_input)?;
        let cancel = cancel.clone();
        match &s.source {
            Source::File {
                path,
                format,
                speed,
                repeat,
            } => {
                let writer = handle.open(spec)?;
                let embedded = path
                    .to_str()
                    .and_then(|p| p.strip_prefix(BUNDLED_PREFIX))
                    .and_then(|name| {
                        crate::app::BUNDLED_RECORDINGS
                            .iter()
                            .find(|r| r.name == name)
                    })
                    .map(|r| file::Embedded {
                        name: r.name,
                        bytes: r.bytes,
                    });
                let replay = file::Replay {
                    path: path.clone(),
                    format: *format,
                    speed: *speed,
                    repeat: *repeat,
                    options: options.clone(),
                };
                let id = s.id.clone();
                sources.spawn(async move {
                    let r = file::replay(&replay, embedded, writer, cancel).await;
                    (
                        id,
                        r.map(|r| format!("{} events, {} passes", r.events, r.passes)),
                    )
                });
            }
            Source::DvTcp { address, reconnect } => {
                let writer = handle.open(spec)?;
                let client = dv_tcp::Client {
                    address: address.clone(),
                    reconnect: *reconnect,
                    options: options.clone(),
                };
                let id = s.id.clone();
                sources.spawn(async move {
                    let r = dv_tcp::run(&client, writer, cancel).await;
                    (id, r.map(|r| format!("{} connections", r.connections)))
                });
            }
            Source::Listen { token, .. } => {
                let Some(listener) = listeners.next() else {
                    anyhow::bail!("stream {}: its listener was not bound", s.id);
                };
                let config = listen::Listener {
                    spec,
                    token: token.clone(),
                    max_connections: c.limits.max_connections,
                    options: options.clone(),
                };
                let handle: PipelineHandle = handle.clone();
                let id = s.id.clone();
                sources.spawn(async move {
                    listen::serve(listener, config, handle, cancel).await;
                    (id, Ok("listener closed".to_owned()))
                });
            }
            Source::Usb { .. } => {
                let Some(camera) = cameras.next() else {
                    anyhow::bail!("stream {}: its camera was not opened", s.id);
                };
                let info = camera.info();
                let spec = StreamSpec {
                    source: format!(
                        "usb {} {}",
                        info.name,
                        info.serial.as_deref().unwrap_or("?")
                    ),
                    ..spec
                };
                let writer = handle.open(spec)?;
                let runtime = tokio::runtime::Handle::current();
                let batch = c.limits.batch_events;
                let id = s.id.clone();
                sources.spawn(async move {
                    let r = usb::run(camera, writer, runtime, cancel, batch).await;
                    (
                        id,
                        r.map(|r| {
                            format!(
                                "{} events, {} USB packets dropped by the driver",
                                r.events, r.packets_dropped
                            )
                        }),
                    )
                });
            }
        }
    }
    drop(handle);
    ready.store(true, Ordering::Release);
    tracing::info!(streams = c.streams.len(), "ready");

    // Runs until every source has ended (a replay without loop) or a signal arrives; with a
    // gRPC server, until a signal (Ingest streams may come at any time).
    let mut signals = Signals::new()?;
    let mut failed = false;
    let until_signal = !grpc.is_empty();
    loop {
        tokio::select! {
            done = sources.join_next(), if !(until_signal && sources.is_empty()) => match done {
                Some(r) => failed |= source_ended(r),
                None => break,
            },
            _ = signals.next() => {
                tracing::info!("signal: stopping the sources");
                eprintln!("inflor: stopping (a second signal forces exit)");
                break;
            }
        }
    }
    ready.store(false, Ordering::Release);
    cancel.cancel();
    let drain_started = tokio::time::Instant::now();
    let drain = async {
        // gRPC Ingest calls are sources too: they stop taking packets, and what they took is
        // binned and classified before the pipeline shuts down.
        for g in &grpc {
            g.stop_ingest().await;
        }
        while let Some(r) = sources.join_next().await {
            failed |= source_ended(r);
        }
        let totals = tokio::task::spawn_blocking(move || pipeline.shutdown())
            .await
            .context("draining the pipeline")?;
        hub.close();
        if let Some(w) = &web {
            w.close();
        }
        sink_cancel.cancel();
        // Subscribers get what remains of the grace period (less a margin to exit in) to
        // read what the hub sent them.
        let left = c
            .shutdown_grace
            .saturating_sub(drain_started.elapsed())
            .mul_f64(0.8);
        for g in grpc {
            g.stop(left).await;
        }
        while sink_tasks.join_next().await.is_some() {}
        anyhow::Ok(totals)
    };
    let totals = tokio::select! {
        r = tokio::time::timeout(c.shutdown_grace, drain) => match r {
            Ok(t) => t?,
            Err(_) => anyhow::bail!(
                "the drain did not finish within the {:.1} s grace period",
                c.shutdown_grace.as_secs_f64()
            ),
        },
        _ = signals.next() => {
            eprintln!("inflor: second signal: exiting without draining");
            std::process::exit(130);
        }
    };
    admin_cancel.cancel();
    // Open requests (a web view's feed ended by `close`, a scrape) finish first; a browser
    // that stopped reading is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), admin_task).await;
    if failed {
        anyhow::bail!("a source failed (see the log); everything it delivered was published");
    }
    let nats = (!nats_counts.is_empty()).then(|| {
        nats_counts
            .iter()
            .fold((0, 0), |(p, d), n| (p + n.published(), d + n.dropped()))
    });
    Ok((totals, nats))
}

/// Logs how a source ended; true if it failed.
fn source_ended(
    r: Result<(String, Result<String, source::SourceError>), tokio::task::JoinError>,
) -> bool {
    match r {
        Ok((id, Ok(what))) => {
            tracing::info!(stream = %id, %what, "source ended");
            false
        }
        Ok((id, Err(e))) => {
            tracing::error!(stream = %id, error = %e, "source failed");
            eprintln!("inflor: stream {id}: {e}");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "source task failed");
            true
        }
    }
}

/// SIGINT and SIGTERM as one stream of signals.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?,
        })
    }

    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
