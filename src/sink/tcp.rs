//! The TCP subscriber endpoint: every connection receives the JSON lines of every output
//! (the same lines as the stdout and file sinks). When a token is configured, a client's
//! first line must be `Bearer <token>`, optionally followed by `stream <id>` on the same
//! line to receive one stream only; the token is compared in constant time. A connection
//! whose buffer fills (a slow reader) is closed and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Hub, token_matches};
use crate::telemetry as t;

/// How long a client has to send its first line when a token is required.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts subscribers on `listener` until `cancel`; then waits until each has received what
/// the hub sent it before the hub closed (after the last output).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    token: Option<String>,
    max_connections: usize,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let token = token.map(Arc::<str>::from);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "subscriber accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "tcp_sink").increment(1);
            tracing::warn!(%peer, "subscriber refused: connection limit reached");
            continue;
        };
        let hub = hub.clone();
        let token = token.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = subscriber(socket, peer, hub, token).await {
                tracing::debug!(%peer, error = %e, "subscriber ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn subscriber(
    socket: TcpStream,
    peer: SocketAddr,
    hub: Hub,
    token: Option<Arc<str>>,
) -> std::io::Result<()> {
    let _ = socket.set_nodelay(true);
    let (read, mut write) = socket.into_split();
    let mut filter = None;
    if let Some(expected) = &token {
        let mut line = String::new();
        let mut reader = BufReader::new(read).take_line_limit();
        let got = tokio::time::timeout(HELLO_TIMEOUT, reader.read_line(&mut line)).await;
        let (presented, stream) = parse_hello(&line);
        if !matches!(got, Ok(Ok(n)) if n > 0) || !token_matches(expected, presented.unwrap_or("")) {
            metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "tcp_sink").increment(1);
            tracing::warn!(%peer, "subscriber refused: missing or wrong token");
            write.write_all(b"error: unauthorised\n").await?;
            return Ok(());
        }
        filter = stream;
    }
    tracing::info!(%peer, "subscriber connected");
    let mut rx = hub.subscribe("tcp", filter);
    // At shutdown the hub closes the channel after the last output, so this ends only once
    // the subscriber has everything.
    while let Some(item) = rx.recv().await {
        write.write_all(item.line.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
    write.shutdown().await
}

/// `Bearer <token> [stream <id>]` → (token, stream).
fn parse_hello(line: &str) -> (Option<&str>, Option<String>) {
    let mut words = line.split_whitespace();
    let mut token = None;
    let mut stream = None;
    while let Some(w) = words.next() {
        match w {
            "Bearer" => token = words.next(),
            "stream" => stream = words.next().map(str::to_owned),
            _ => {}
        }
    }
    (token, stream)
}

/// Reads at most one short line, so a client cannot make the hello unbounded.
trait TakeLineLimit: Sized {
    fn take_line_limit(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeLineLimit for BufReader<R> {
    fn take_line_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_lines_parse() {
        assert_eq!(parse_hello("Bearer abc\n"), (Some("abc"), None));
        assert_eq!(
            parse_hello("Bearer abc stream cam0\r\n"),
            (Some("abc"), Some("cam0".into()))
        );
        assert_eq!(parse_hello(""), (None, None));
    }
}
