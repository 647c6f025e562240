//! The TCP push listener: accepts AEDAT 4 network streams from many clients at once, one stream
//! per connection, named `<id>/<peer address>`. Connections beyond the limit are refused and
//! counted. With a token configured, a client's first line must be `Bearer <token>`, compared in
//! constant time. A connection that sends garbage is closed with a logged, counted error; the
//! windows it had completed are still classified, and other connections are unaffected.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{SourceError, pump};
use crate::format::{DecodeOptions, Format};
use crate::pipeline::{PipelineHandle, StreamSpec};
use crate::sink::token_matches;
use crate::telemetry as t;

/// How long a client has to send its token line.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest token line accepted.
const HELLO_MAX: usize = 512;

/// How the listener treats its clients.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The template of every connection's stream (its id is the prefix).
    pub spec: StreamSpec,
    /// Required bearer token.
    pub token: Option<String>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Decoder options (packet size limit, batch bound).
    pub options: DecodeOptions,
}

/// Accepts connections until `cancel`; then waits until every connection's stream has been
/// finished (its binned windows classified).
pub async fn serve(
    listener: TcpListener,
    config: Listener,
    pipeline: PipelineHandle,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "listen").increment(1);
            tracing::warn!(%peer, "connection refused: connection limit reached");
            continue;
        };
        let config = Arc::clone(&config);
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let id = format!("{}/{peer}", config.spec.id);
            match connection(socket, &id, &config, &pipeline, &cancel).await {
                Ok(()) => tracing::info!(stream = %id, "stream ended"),
                Err(e) => tracing::warn!(stream = %id, error = %e, "stream closed"),
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut socket: TcpStream,
    id: &str,
    config: &Listener,
    pipeline: &PipelineHandle,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    if let Some(token) = &config.token {
        hello(&mut socket, token).await?;
    }
    let mut spec = config.spec.clone();
    spec.id = id.to_owned();
    spec.session.stream = id.to_owned();
    spec.source = format!("{} (connection)", config.spec.source);
    let mut writer = pipeline.open(spec)?;
    tracing::info!(stream = %id, "stream connected");
    let mut decoder = Format::DvNetwork.decoder(&config.options);
    let mut chunk = vec![0u8; 1 << 16];
    let result = pump(&mut socket, &mut *decoder, &mut writer, &mut chunk, cancel).await;
    let finished = writer.finish().await;
    result?;
    finished?;
    Ok(())
}

/// Reads `Bearer <token>\n` byte by byte (never past the line, so the stream that follows is
/// untouched), within a time and size limit.
async fn hello(socket: &mut TcpStream, token: &str) -> Result<(), SourceError> {
    let refused = |why: &str| SourceError::Io {
        what: "authenticating a client".into(),
        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_owned()),
    };
    let mut line = Vec::with_capacity(64);
    let read = async {
        loop {
            let mut b = [0u8; 1];
            match socket.read(&mut b).await {
                Ok(0) => return Err(refused("the connection closed before its token line")),
                Ok(_) if b[0] == b'\n' => return Ok(()),
                Ok(_) if line.len() >= HELLO_MAX => return Err(refused("token line too long")),
                Ok(_) => line.push(b[0]),
                Err(source) => {
                    return Err(SourceError::Io {
                        what: "reading a token line".into(),
                        source,
                    });
                }
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .map_err(|_| refused("no token line in time"))??;
    let text = String::from_utf8_lossy(&line);
    let presented = text
        .trim_end_matches('\r')
        .strip_prefix("Bearer ")
        .unwrap_or("");
    if token_matches(token, presented) {
        Ok(())
    } else {
        metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "listen").increment(1);
        Err(refused("wrong token"))
    }
}
