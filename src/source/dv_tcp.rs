//! The DV TCP client: connects to an iniVation DV or dv-processing `NetworkWriter` (the AEDAT 4
//! network stream) and keeps the stream going across lost connections, reconnecting with
//! exponential backoff and jitter. Every reconnect is counted and the next output carries
//! `gap: true`, since events were lost while the connection was down.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Backoff, SourceError, pump};
use crate::format::{DecodeOptions, Format};
use crate::pipeline::StreamWriter;

/// Where to connect and how to retry.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    pub address: String,
    /// Reconnect delay bounds.
    pub reconnect: (Duration, Duration),
    /// Decoder options (packet size limit, batch bound).
    pub options: DecodeOptions,
}

/// What a client did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// Connections made.
    pub connections: u64,
    /// Connections that ended in a decode error.
    pub decode_errors: u64,
}

/// Runs the client until `cancel`, then finishes the stream (the windows binned so far are
/// classified and published).
pub async fn run(
    client: &Client,
    mut writer: StreamWriter,
    cancel: CancellationToken,
) -> Result<ClientReport, SourceError> {
    let mut report = ClientReport::default();
    let seed = client
        .address
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut backoff = Backoff::new(client.reconnect.0, client.reconnect.1, seed);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let connect = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            c = TcpStream::connect(&client.address) => c,
        };
        match connect {
            Ok(mut socket) => {
                backoff.reset();
                if report.connections > 0 {
                    writer.reconnected();
                }
                report.connections += 1;
                tracing::info!(stream = writer.id(), address = %client.address, "connected");
                let mut decoder = Format::DvNetwork.decoder(&client.options);
                let ended =
                    pump(&mut socket, &mut *decoder, &mut writer, &mut chunk, &cancel).await;
                match ended {
                    Ok(true) => break,
                    Ok(false) => {
                        tracing::warn!(stream = writer.id(), "the server closed the stream")
                    }
                    Err(SourceError::Pipeline(e)) => {
                        let _ = writer.disconnected().await;
                        return Err(SourceError::Pipeline(e));
                    }
                    Err(e) => {
                        if matches!(e, SourceError::Decode { .. }) {
                            report.decode_errors += 1;
                        }
                        tracing::warn!(stream = writer.id(), error = %e, "stream lost");
                    }
                }
                writer.disconnected().await?;
            }
            Err(e) => {
                tracing::debug!(stream = writer.id(), address = %client.address, error = %e, "connect failed");
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    writer.finish().await?;
    Ok(report)
}
