//! The replay server behind `inflor serve-events`: a DV-compatible TCP server that streams a
//! recording to every client that connects, as the AEDAT 4 network stream dv-processing's
//! `NetworkWriter` sends (its `NetworkReader` and inflor's `dv_tcp` source read it). Each client
//! gets its own pass from the start, paced by the timestamps at a speed factor, looped if asked.
//! It lets users and tests simulate a camera.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::file::{Embedded, next_batch, open};
use super::{Pacer, SourceError};
use crate::event::Event;
use crate::format::{DecodeOptions, Format, JaerOrientation};

/// What to serve.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The file (its name stands in logs for an embedded recording).
    pub path: PathBuf,
    /// The recording in memory instead of the file.
    pub embedded: Option<Embedded>,
    /// Forced input format.
    pub format: Option<Format>,
    /// Decoder options.
    pub options: DecodeOptions,
    /// Real-time factor; as fast as the client reads when None.
    pub speed: Option<f64>,
    /// Start again at the end.
    pub repeat: bool,
    /// Connections served at once.
    pub max_clients: usize,
}

/// Serves clients until `cancel`.
pub async fn serve(listener: TcpListener, recording: Recording, cancel: CancellationToken) {
    let recording = Arc::new(recording);
    let slots = Arc::new(tokio::sync::Semaphore::new(recording.max_clients.max(1)));
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
            tracing::warn!(%peer, "client refused: connection limit reached");
            continue;
        };
        let recording = Arc::clone(&recording);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tracing::info!(%peer, "client connected");
            match client(socket, &recording, &cancel).await {
                Ok(events) => tracing::info!(%peer, events, "client done"),
                Err(e) => tracing::info!(%peer, error = %e, "client gone"),
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Streams the recording to one client; returns the events sent.
async fn client(
    mut socket: TcpStream,
    recording: &Recording,
    cancel: &CancellationToken,
) -> Result<u64, SourceError> {
    let _ = socket.set_nodelay(true);
    let io = |source| SourceError::Io {
        what: "writing to a client".into(),
        source,
    };
    let mut pacer = Pacer::new(recording.speed);
    let mut sent = 0u64;
    let mut offset = 0i64;
    let mut bytes = Vec::new();
    let mut encoder = None;
    loop {
        let mut reader = open(
            &recording.path,
            recording.format,
            &recording.options,
            recording.embedded,
        )
        .await?;
        let mut span: Option<(i64, i64)> = None;
        let mut events = Vec::new();
        loop {
            let (r, batch, more) = next_batch(reader, std::mem::take(&mut events)).await?;
            reader = r;
            events = batch;
            let enc = encoder.get_or_insert_with(|| {
                let info = reader.info_or_default();
                let mut e = Format::DvNetwork.encoder(&info, JaerOrientation::default());
                bytes.clear();
                let begun = e.begin(&info, &mut bytes);
                (e, begun)
            });
            if let (_, Err(e)) = enc {
                return Err(encode_failed(e.to_string()));
            }
            if !bytes.is_empty() {
                socket.write_all(&bytes).await.map_err(io)?;
                bytes.clear();
            }
            for e in &mut events {
                e.t = e.t.saturating_add(offset);
            }
            if let (Some(f), Some(l)) = (events.first(), events.last()) {
                span = Some(span.map_or((f.t, l.t), |(a, b)| (a.min(f.t), b.max(l.t))));
            }
            let mut rest: &[Event] = &events;
            while !rest.is_empty() {
                let Some(n) = pacer.take(rest, cancel).await else {
                    return Ok(sent);
                };
                let (now, later) = rest.split_at(n);
                enc.0
                    .encode(now, &mut bytes)
                    .map_err(|e| encode_failed(e.to_string()))?;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(sent),
                    w = socket.write_all(&bytes) => w.map_err(io)?,
                }
                bytes.clear();
                sent += n as u64;
                rest = later;
            }
            if !more {
                break;
            }
        }
        match span {
            Some((first, last)) if recording.repeat => {
                offset = offset.saturating_add(last - first + 1);
            }
            _ => break,
        }
    }
    if let Some((mut e, _)) = encoder {
        e.end(&mut bytes)
            .map_err(|e| encode_failed(e.to_string()))?;
        socket.write_all(&bytes).await.map_err(io)?;
    }
    socket.shutdown().await.map_err(io)?;
    Ok(sent)
}

fn encode_failed(why: String) -> SourceError {
    SourceError::Io {
        what: "encoding the DV network stream".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    }
}
