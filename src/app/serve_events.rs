//! `inflor serve-events`: a DV-compatible TCP server replaying a recording (a simulated
//! camera), until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use inflor::source::serve;
use tokio_util::sync::CancellationToken;

use crate::app::decode_args::DecodeArgs;

/// Arguments of `inflor serve-events`.
#[derive(Debug, clap::Args)]
pub struct ServeEventsArgs {
    /// The recording (any supported format); the bundled recording when omitted.
    pub file: Option<PathBuf>,
    /// Listen address (port 0 picks a free port; the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub listen: std::net::SocketAddr,
    /// Real-time factor of the pacing (2 = twice as fast).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub speed: f64,
    /// Send as fast as the client reads instead of pacing.
    #[arg(long, conflicts_with = "speed")]
    pub unpaced: bool,
    /// Start again at the end of the recording.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Clients served at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_clients: u16,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Runs the server until a signal.
pub fn run(args: ServeEventsArgs) -> anyhow::Result<()> {
    let (path, embedded) = match &args.file {
        Some(p) => {
            // Fails here, with the file's own error, rather than at the first client.
            inflor::format::FileReader::open(p, args.decode.format, &args.decode.options())?;
            (p.clone(), None)
        }
        None => (
            PathBuf::from("dvs-digits-0.aedat"),
            Some(inflor::source::file::Embedded {
                name: "dvs-digits-0.aedat",
                bytes: crate::app::inspect::BUNDLED,
            }),
        ),
    };
    let recording = serve::Recording {
        path,
        embedded,
        format: args.decode.format,
        options: args.decode.options(),
        speed: (!args.unpaced).then_some(args.speed),
        repeat: args.repeat,
        max_clients: usize::from(args.max_clients),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        eprintln!("inflor: serving events on {}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve::serve(listener, recording, cancel.clone()));
        crate::app::run::Signals::new()?.next().await;
        cancel.cancel();
        let _ = server.await;
        anyhow::Ok(())
    })
}
