//! The NATS sink: every output's JSON line (the line the stdout and file sinks write) is
//! published on one subject per stream, the configured subject with `{stream}` replaced by
//! the stream id made into one subject token ([`subject_token`]). It forwards from the
//! [`Hub`] through a bounded buffer and never waits on the network, so it cannot stall the
//! pipeline.
//!
//! NATS core delivers at most once, and the sink counts what it knows it lost:
//! - The daemon never waits for the server. The client connects in the background and keeps
//!   retrying (logged) while the server is unreachable; outputs produced before the first
//!   connection wait in the client's bounded buffer and go out once it connects.
//! - While connected, each output is handed to the client's buffer without waiting; one that
//!   does not fit is dropped.
//! - When the server goes away the client reconnects in the background (exponential backoff),
//!   and until it is back outputs are dropped rather than queued: a backlog would reach
//!   subscribers stale and all at once. What the client had not yet written when the
//!   connection broke may be lost without being counted.
//! - At shutdown the sink waits, at most for the given bound, until the client has written
//!   out what it holds.
//!
//! Dropped outputs are counted in `inflor_outputs_failed_total{sink="nats"}` and published
//! ones (handed to the client) in `inflor_outputs_published_total{sink="nats"}`; the
//! connection is `inflor_nats_connected` and its losses `inflor_nats_disconnects_total`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{ConnectOptions, Event};

use super::{Forwarded, Hub};
use crate::telemetry as t;

/// The sink kind, as metric label.
const SINK: &str = "nats";

/// Why the NATS sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server URL is not a NATS address.
    #[error("NATS server URL {url:?} is not valid")]
    Url {
        /// The URL as configured.
        url: String,
        /// The cause.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// What one NATS sink did, for the daemon's summary.
#[derive(Debug, Default)]
pub struct Counts {
    published: AtomicU64,
    dropped: AtomicU64,
    /// Outputs the hub dropped because the sink's buffer was full.
    overflow: Arc<AtomicU64>,
}

impl Counts {
    /// Outputs handed to the client. Those it still held, never having connected, when the
    /// daemon stopped are counted as dropped instead.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Outputs the sink could not publish: the server away, a buffer full, a publish error.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.overflow.load(Ordering::Relaxed)
    }

    fn add_published(&self, n: u64) {
        if n > 0 {
            self.published.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(t::OUTPUTS_PUBLISHED, "sink" => SINK).increment(n);
        }
    }

    fn add_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(t::OUTPUTS_FAILED, "sink" => SINK).increment(n);
        }
    }
}

/// A NATS sink: a client connecting in the background and the hub's outputs to publish.
pub struct Nats {
    client: async_nats::Client,
    url: String,
    subject: String,
    from: Forwarded,
    counts: Arc<Counts>,
}

impl Nats {
    /// Starts a client for the server at `url` (connecting in the background; this does not
    /// wait for the server) that buffers at most `buffer` outputs, and subscribes it to `hub`.
    /// `subject` holds `{stream}` where the stream's token goes. Fails only on a bad URL.
    pub async fn connect(
        url: &str,
        subject: &str,
        hub: &Hub,
        buffer: usize,
    ) -> Result<Self, NatsError> {
        metrics::gauge!(t::NATS_CONNECTED).set(0.0);
        let ever_connected = Arc::new(AtomicBool::new(false));
        // One warning per outage for the failed connection attempts, the rest at debug.
        let retry_logged = Arc::new(AtomicBool::new(false));
        let log_url = url.to_owned();
        let client = ConnectOptions::new()
            .name("inflor")
            .retry_on_initial_connect()
            .client_capacity(buffer.max(1))
            .event_callback(move |event| {
                let url = log_url.clone();
                let ever_connected = Arc::clone(&ever_connected);
                let retry_logged = Arc::clone(&retry_logged);
                async move { on_event(event, &url, &ever_connected, &retry_logged) }
            })
            .connect(url)
            .await
            .map_err(|source| NatsError::Url {
                url: url.to_owned(),
                source,
            })?;
        tracing::info!(%url, %subject, "NATS sink connecting in the background");
        let from = hub.forward(SINK);
        let counts = Arc::new(Counts {
            overflow: Arc::clone(&from.overflow),
            ..Counts::default()
        });
        Ok(Self {
            client,
            url: url.to_owned(),
            subject: subject.to_owned(),
            from,
            counts,
        })
    }

    /// What this sink has done so far (final once [`Nats::run`] has returned).
    pub fn counts(&self) -> Arc<Counts> {
        Arc::clone(&self.counts)
    }

    /// Publishes every output until the hub closes, then waits at most `flush_within` for the
    /// client to write out what it holds.
    pub async fn run(mut self, flush_within: Duration) {
        // Outputs handed to the client before its first connection: published once it has
        // connected, dropped if the daemon stops before it ever does.
        let mut waiting = 0u64;
        let mut full_logged = false;
        while let Some(item) = self.from.outputs.recv().await {
            let state = self.client.connection_state();
            if state == State::Disconnected {
                self.counts.add_dropped(1);
                continue;
            }
            if state == State::Connected {
                self.counts.add_published(std::mem::take(&mut waiting));
            }
            let subject = subject_for(&self.subject, &item.output.stream);
            let payload = bytes::Bytes::copy_from_slice(item.line.as_bytes());
            // One poll: the client's buffer has room now or the output is dropped. Outside
            // tokio's cooperative budget, so a busy moment is not mistaken for a full buffer.
            match poll_once(tokio::task::unconstrained(
                self.client.publish(subject, payload),
            )) {
                Some(Ok(())) => {
                    full_logged = false;
                    if state == State::Pending {
                        waiting += 1;
                    } else {
                        self.counts.add_published(1);
                    }
                }
                Some(Err(e)) => {
                    self.counts.add_dropped(1);
                    tracing::warn!(url = %self.url, stream = %item.output.stream, error = %e,
                        "NATS publish failed");
                }
                None => {
                    self.counts.add_dropped(1);
                    if !std::mem::replace(&mut full_logged, true) {
                        tracing::warn!(url = %self.url,
                            "the NATS client's buffer is full: outputs dropped");
                    }
                }
            }
        }
        match tokio::time::timeout(flush_within, self.client.flush()).await {
            Ok(Ok(())) => tracing::debug!(url = %self.url, "NATS sink flushed"),
            Ok(Err(e)) => tracing::warn!(url = %self.url, error = %e, "NATS flush failed"),
            Err(_) => tracing::warn!(
                url = %self.url,
                "NATS server did not take the last outputs within {:.1} s",
                flush_within.as_secs_f64()
            ),
        }
        if self.client.connection_state() == State::Pending {
            if waiting > 0 {
                tracing::warn!(url = %self.url, outputs = waiting,
                    "stopped before the NATS server was ever reached: outputs dropped");
            }
            self.counts.add_dropped(waiting);
        } else {
            self.counts.add_published(waiting);
        }
    }
}

fn on_event(event: Event, url: &str, ever_connected: &AtomicBool, retry_logged: &AtomicBool) {
    match event {
        Event::Connected => {
            metrics::gauge!(t::NATS_CONNECTED).set(1.0);
            retry_logged.store(false, Ordering::Relaxed);
            if ever_connected.swap(true, Ordering::Relaxed) {
                tracing::info!(%url, "NATS reconnected: publishing again");
            } else {
                tracing::info!(%url, "NATS connected");
            }
        }
        Event::Disconnected => {
            metrics::gauge!(t::NATS_CONNECTED).set(0.0);
            metrics::counter!(t::NATS_DISCONNECTS).increment(1);
            tracing::warn!(%url,
                "NATS server lost: reconnecting; outputs are dropped and counted until it is back");
        }
        Event::ClientError(e) => {
            if retry_logged.swap(true, Ordering::Relaxed) {
                tracing::debug!(%url, error = %e, "NATS connection attempt failed");
            } else if ever_connected.load(Ordering::Relaxed) {
                tracing::warn!(%url, error = %e, "NATS server unreachable: retrying");
            } else {
                tracing::warn!(%url, error = %e,
                    "NATS server unreachable at start: retrying in the background");
            }
        }
        Event::ServerError(e) => tracing::warn!(%url, error = %e, "NATS server error"),
        Event::LameDuckMode => tracing::info!(%url, "NATS server entering lame duck mode"),
        other => tracing::debug!(%url, event = %other, "NATS event"),
    }
}

/// The stream id as one NATS subject token: every character other than an ASCII letter,
/// digit, `-` or `_` becomes `_` (a subject's tokens are split by `.`, `*` and `>` are
/// wildcards, and whitespace ends a subject), and an empty id becomes `_`. So
/// `push/127.0.0.1:7000` is published as `push_127_0_0_1_7000`; ids that differ only in such
/// characters share a subject, and the record's `stream` field still tells them apart.
pub fn subject_token(stream: &str) -> String {
    if stream.is_empty() {
        return "_".to_owned();
    }
    stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The subject of `stream`'s outputs: `template` with every `{stream}` replaced by
/// [`subject_token`].
pub fn subject_for(template: &str, stream: &str) -> String {
    template.replace("{stream}", &subject_token(stream))
}

/// Polls `future` once: its output if it is ready now, else None (and the future is dropped).
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_become_one_valid_token() {
        assert_eq!(subject_token("dock-1"), "dock-1");
        assert_eq!(subject_token("cam_A9"), "cam_A9");
        assert_eq!(subject_token("push/127.0.0.1:7000"), "push_127_0_0_1_7000");
        assert_eq!(subject_token("a b\t*>.ü"), "a_b_____");
        assert_eq!(subject_token(""), "_");
        assert_eq!(
            subject_for("inflor.{stream}", "site.dock"),
            "inflor.site_dock"
        );
        assert_eq!(
            subject_for("fleet.{stream}.windows", "x"),
            "fleet.x.windows"
        );
    }

    #[test]
    fn poll_once_takes_only_what_is_ready() {
        assert_eq!(poll_once(async { 3 }), Some(3));
        assert_eq!(poll_once(std::future::pending::<()>()), None);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        assert!(poll_once(tx.send(1)).is_some());
        // The buffer is full: the send would wait, so it is not taken.
        assert!(poll_once(tx.send(2)).is_none());
    }
}
