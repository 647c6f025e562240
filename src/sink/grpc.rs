//! The gRPC API (`proto/inflor/v1/inflor.proto`, compiled by `build.rs` without `protoc`):
//! `Subscribe` streams classifications from the [`Hub`] (a subscriber that falls behind is
//! disconnected and counted, as on the TCP endpoint), `ListStreams` reports the live streams,
//! and `Ingest` takes a client stream of event packets as one pipeline stream per call.
//!
//! Every call carries `authorization: Bearer <token>` when a token is configured, compared in
//! constant time; others get UNAUTHENTICATED. Connections beyond the limit are closed at once
//! and counted; calls per connection are bounded by the same limit (HTTP/2 concurrent
//! streams). A packet larger than the maximum packet size is refused from its length prefix,
//! before it is read into memory.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use super::{Hub, Published, token_matches};
use crate::config::Backpressure;
use crate::event::Event;
use crate::pipeline::{PipelineError, PipelineHandle, StreamSpec, StreamWriter};
use crate::session::SessionOptions;
use crate::telemetry as t;

/// The code generated from `proto/inflor/v1/inflor.proto`: messages, the server trait and a
/// client (`proto::inflor_client::InflorClient`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inflor.v1");
}

use proto::inflor_server::{Inflor, InflorServer};

/// The longest stream id `Ingest` accepts, bytes.
const MAX_ID: usize = 128;

/// How the gRPC server treats its clients.
#[derive(Debug, Clone)]
pub struct Config {
    /// Required bearer token.
    pub token: Option<String>,
    /// Connections served at once, and calls at once on one connection.
    pub max_connections: usize,
    /// The largest event packet accepted, bytes (as encoded).
    pub max_packet_bytes: usize,
    /// Events handed to the pipeline at a time.
    pub batch_events: usize,
}

/// A running gRPC server.
pub struct Server {
    ingest_stop: CancellationToken,
    ingest: TaskTracker,
    stop: CancellationToken,
    /// Cancelled when the subscribers' time to read what they hold is up.
    cut: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// Serves the API on `listener` (bound by the caller, so a taken port fails before
    /// anything starts). Outputs come from `hub`; `Ingest` streams open on `pipeline`.
    pub fn start(
        listener: TcpListener,
        config: Config,
        hub: Hub,
        pipeline: PipelineHandle,
    ) -> Self {
        let ingest_stop = CancellationToken::new();
        let ingest = TaskTracker::new();
        let stop = CancellationToken::new();
        let max_connections = config.max_connections.max(1);
        let service = Service {
            hub,
            pipeline,
            ingest_stop: ingest_stop.clone(),
            ingest: ingest.clone(),
            max_packet_bytes: config.max_packet_bytes,
            batch_events: config.batch_events.max(1),
        };
        let token = config.token.map(Arc::<str>::from);
        let server = InflorServer::new(service).max_decoding_message_size(config.max_packet_bytes);
        let service =
            tonic::service::interceptor::InterceptedService::new(server, move |r: Request<()>| {
                authorise(token.as_deref(), r)
            });
        let slots = Arc::new(Semaphore::new(max_connections));
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
                match accepted {
                    Ok(socket) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            let _ = socket.set_nodelay(true);
                            Some(Ok::<_, std::io::Error>(Limited {
                                socket,
                                _permit: permit,
                            }))
                        }
                        Err(_) => {
                            metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "grpc")
                                .increment(1);
                            tracing::warn!(
                                peer = ?socket.peer_addr().ok(),
                                "gRPC connection refused: connection limit reached"
                            );
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        None
                    }
                }
            });
        let shutdown = stop.clone();
        let cut = CancellationToken::new();
        let cut_off = cut.clone();
        let task = tokio::spawn(async move {
            let serve = tonic::transport::Server::builder()
                .max_concurrent_streams(u32::try_from(max_connections).unwrap_or(u32::MAX))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
            tokio::select! {
                r = serve => r,
                _ = cut_off.cancelled() => {
                    tracing::warn!("gRPC subscribers did not finish reading in time; cut off");
                    Ok(())
                }
            }
        });
        Self {
            ingest_stop,
            ingest,
            stop,
            cut,
            task,
        }
    }

    /// Refuses new `Ingest` calls and ends those in flight, and returns once each has queued
    /// its binned windows and seen them classified. Call when the sources stop, before the
    /// pipeline shuts down.
    pub async fn stop_ingest(&self) {
        self.ingest_stop.cancel();
        self.ingest.close();
        self.ingest.wait().await;
    }

    /// Ends the server. Call after [`Hub::close`]: each subscriber's stream then ends once
    /// it has what the hub sent it; connections still open after `drain` are cut.
    pub async fn stop(self, drain: Duration) {
        self.ingest_stop.cancel();
        self.stop.cancel();
        let cut = self.cut.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            cut.cancel();
        });
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the gRPC server failed"),
            Err(e) => tracing::error!(error = %e, "the gRPC server task failed"),
        }
        timer.abort();
    }
}

/// Checks the bearer token of a call.
fn authorise(expected: Option<&str>, request: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = expected else {
        return Ok(request);
    };
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(expected, presented) {
        Ok(request)
    } else {
        metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "grpc").increment(1);
        tracing::warn!(peer = ?request.remote_addr(), "gRPC call refused: missing or wrong token");
        Err(Status::unauthenticated(
            "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
        ))
    }
}

/// A connection that holds a slot of the connection limit while it lives.
struct Limited {
    socket: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.socket.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

/// The service behind the generated server.
struct Service {
    hub: Hub,
    pipeline: PipelineHandle,
    ingest_stop: CancellationToken,
    ingest: TaskTracker,
    max_packet_bytes: usize,
    batch_events: usize,
}

#[tonic::async_trait]
impl Inflor for Service {
    type SubscribeStream = Subscription;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let peer = request.remote_addr();
        let stream = request.into_inner().stream;
        let filter = (!stream.is_empty()).then_some(stream);
        tracing::info!(?peer, stream = ?filter, "gRPC subscriber connected");
        Ok(Response::new(Subscription {
            rx: self.hub.subscribe("grpc", filter),
            hub: self.hub.clone(),
            ended: false,
        }))
    }

    async fn list_streams(
        &self,
        _request: Request<proto::ListStreamsRequest>,
    ) -> Result<Response<proto::ListStreamsResponse>, Status> {
        let doc = self.pipeline.streams_json();
        let streams = doc
            .as_array()
            .map(|rows| rows.iter().map(stream_info).collect())
            .unwrap_or_default();
        Ok(Response::new(proto::ListStreamsResponse { streams }))
    }

    async fn ingest(
        &self,
        request: Request<Streaming<proto::EventPacket>>,
    ) -> Result<Response<proto::IngestSummary>, Status> {
        // Taken before the check, so `stop_ingest` either sees this call or this call sees
        // the stop.
        let _busy = self.ingest.token();
        if self.ingest_stop.is_cancelled() {
            return Err(Status::unavailable("the daemon is shutting down"));
        }
        let peer = request.remote_addr();
        let mut packets = request.into_inner();
        let first = tokio::select! {
            biased;
            _ = self.ingest_stop.cancelled() => {
                return Err(Status::unavailable("the daemon is shutting down"));
            }
            m = packets.message() => m?,
        };
        let Some(first) = first else {
            return Err(Status::invalid_argument("the call sent no packet"));
        };
        let id = stream_id(&first.stream)?;
        let sensor = match (u16::try_from(first.width), u16::try_from(first.height)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "the first packet must give the sensor size (1..=65535 pixels each way), \
                     not {}x{}",
                    first.width, first.height
                )));
            }
        };
        let spec = StreamSpec {
            id: id.clone(),
            source: match peer {
                Some(p) => format!("grpc ingest from {p}"),
                None => "grpc ingest".to_owned(),
            },
            input: self.pipeline.model().metadata.input,
            session: SessionOptions {
                stream: id.clone(),
                ..SessionOptions::default()
            },
            // The client is slowed by HTTP/2 flow control rather than losing windows.
            backpressure: Backpressure::Block,
            max_events_per_s: None,
            resolution: None,
        };
        let mut writer = self.pipeline.open(spec).map_err(pipeline_status)?;
        tracing::info!(stream = %id, ?peer, "gRPC ingest stream opened");
        let fed = self.feed(&mut writer, sensor, first, &mut packets).await;
        // Whatever ended the call, what was accepted is classified before it returns.
        let (finished, totals) = writer.finish_counted().await;
        let packets = fed?;
        finished.map_err(pipeline_status)?;
        tracing::info!(stream = %id, packets, events = totals.events_received, "gRPC ingest stream ended");
        Ok(Response::new(proto::IngestSummary {
            stream: id,
            packets,
            events: totals.events_received,
            windows: totals.windows,
            inferences: totals.inferences,
        }))
    }
}

impl Service {
    /// Feeds the packets of one call to its stream; returns how many were taken.
    async fn feed(
        &self,
        writer: &mut StreamWriter,
        sensor: (u16, u16),
        first: proto::EventPacket,
        packets: &mut Streaming<proto::EventPacket>,
    ) -> Result<u64, Status> {
        writer.start(sensor).map_err(pipeline_status)?;
        let mut events = Vec::with_capacity(self.batch_events.min(1 << 16));
        let mut packet = first;
        let mut count = 0u64;
        loop {
            count += 1;
            if !packet.stream.is_empty() && packet.stream != writer.id() {
                writer.decode_error("malformed");
                return Err(Status::invalid_argument(format!(
                    "packet {count} names stream {:?}, but this call is stream {:?}",
                    packet.stream,
                    writer.id()
                )));
            }
            self.push(writer, &packet, count, &mut events).await?;
            let next = tokio::select! {
                biased;
                _ = self.ingest_stop.cancelled() => {
                    return Err(Status::unavailable(format!(
                        "the daemon is shutting down: the first {count} packets of stream {} \
                         were taken and are classified",
                        writer.id()
                    )));
                }
                m = packets.message() => m,
            };
            packet = match next {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(count),
                Err(status) => {
                    if status.code() == tonic::Code::OutOfRange {
                        writer.decode_error("oversized");
                        tracing::warn!(
                            stream = %writer.id(),
                            limit = self.max_packet_bytes,
                            "gRPC ingest packet refused: larger than the maximum packet size"
                        );
                    }
                    return Err(status);
                }
            };
        }
    }

    /// Checks one packet and pushes its events in batches.
    async fn push(
        &self,
        writer: &mut StreamWriter,
        packet: &proto::EventPacket,
        number: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Status> {
        let n = packet.t.len();
        if packet.x.len() != n || packet.y.len() != n || packet.polarity.len() != n {
            writer.decode_error("malformed");
            return Err(Status::invalid_argument(format!(
                "packet {number}: t, x, y and polarity must have one entry per event, not {}, \
                 {}, {} and {}",
                n,
                packet.x.len(),
                packet.y.len(),
                packet.polarity.len()
            )));
        }
        let received = Instant::now();
        let mut start = 0;
        while start < n {
            let end = (start + self.batch_events).min(n);
            events.clear();
            for i in start..end {
                let (Ok(x), Ok(y)) = (u16::try_from(packet.x[i]), u16::try_from(packet.y[i]))
                else {
                    writer.decode_error("malformed");
                    return Err(Status::invalid_argument(format!(
                        "packet {number}, event {i}: pixel ({}, {}) is beyond 65535",
                        packet.x[i], packet.y[i]
                    )));
                };
                events.push(Event::new(packet.t[i], x, y, packet.polarity[i]));
            }
            writer
                .push(events, received)
                .await
                .map_err(pipeline_status)?;
            start = end;
        }
        Ok(())
    }
}

/// Checks an `Ingest` stream id: 1 to 128 bytes of letters, digits and `._-:/` (the
/// characters of configured ids and of pushed connections' `<id>/<peer>`).
fn stream_id(id: &str) -> Result<String, Status> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "the first packet's stream id {id:?} must be 1 to {MAX_ID} letters, digits or `._-:/`"
        )))
    }
}

fn pipeline_status(e: PipelineError) -> Status {
    let message = e.to_string();
    match e {
        PipelineError::TooManyStreams(_) => Status::resource_exhausted(message),
        PipelineError::Duplicate(_) => Status::already_exists(message),
        PipelineError::Closed => Status::unavailable(message),
        PipelineError::NoSensorSize | PipelineError::Session(_) => {
            Status::invalid_argument(message)
        }
    }
}

/// One row of the `/streams` document as a `StreamInfo`.
fn stream_info(row: &serde_json::Value) -> proto::StreamInfo {
    let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
    let count = |k: &str| row[k].as_u64().unwrap_or(0);
    let (width, height) = row["sensor"]
        .as_str()
        .and_then(|s| s.split_once('x'))
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or((0, 0));
    proto::StreamInfo {
        id: text("id"),
        source: text("source"),
        connected: row["connected"].as_bool().unwrap_or(false),
        width,
        height,
        backpressure: text("backpressure"),
        queue_depth: count("queue_depth"),
        events_received: count("events_received"),
        events_rate_limited: count("events_rate_limited"),
        events_dropped: count("events_dropped"),
        windows: count("windows"),
        windows_dropped: count("windows_dropped"),
        inferences: count("inferences"),
        reconnects: count("reconnects"),
        decode_errors: count("decode_errors"),
    }
}

/// The record as the API sends it.
pub fn classification(p: &Published) -> proto::Classification {
    let o = &p.output;
    proto::Classification {
        stream: o.stream.clone(),
        window: o.window,
        start_us: o.start_us,
        end_us: o.end_us,
        events: o.events,
        predicted: u32::try_from(o.predicted).unwrap_or(u32::MAX),
        class_name: o.class.clone(),
        top_k: o
            .top_k
            .iter()
            .map(|s| proto::Score {
                class_index: u32::try_from(s.class).unwrap_or(u32::MAX),
                name: s.name.clone(),
                logit: s.logit,
            })
            .collect(),
        logits: o.logits.clone(),
        gap: o.gap,
        complete: o.complete,
        executor: o.executor.clone(),
        label: o.label.clone(),
        stats: Some(proto::SpikeStats {
            timesteps: o.stats.timesteps,
            spikes: o.stats.spikes,
            firing_rate: o.stats.firing_rate,
            synaptic_ops: o.stats.synaptic_ops,
            dense_macs: o.stats.dense_macs,
            energy_pj: o.stats.energy_pj,
        }),
        compute_us: o.latency.compute_us,
        end_to_end_us: o.latency.end_to_end_us,
        json: p.line.to_string(),
    }
}

/// A subscriber's stream of classifications. It ends cleanly after the hub closes at
/// shutdown, or with RESOURCE_EXHAUSTED when the hub dropped it for falling behind.
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<Published>,
    hub: Hub,
    ended: bool,
}

impl tokio_stream::Stream for Subscription {
    type Item = Result<proto::Classification, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(p)) => Poll::Ready(Some(Ok(classification(&p)))),
            Poll::Ready(None) => {
                this.ended = true;
                if this.hub.is_closed() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(Status::resource_exhausted(
                        "this subscriber fell behind by more than limits.subscriber_buffer \
                         windows and was disconnected",
                    ))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Output;

    #[test]
    fn stream_ids_are_checked() {
        assert!(stream_id("cam_0/left.1:2").is_ok());
        assert!(stream_id("").is_err());
        assert!(stream_id("a b").is_err());
        assert!(stream_id(&"x".repeat(MAX_ID + 1)).is_err());
    }

    #[test]
    fn tokens_are_required_when_configured() {
        let call = |header: Option<&str>| {
            let mut r = Request::new(());
            if let Some(h) = header {
                r.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            r
        };
        assert!(authorise(None, call(None)).is_ok());
        assert!(authorise(Some("s3cret"), call(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer nope"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let e = authorise(Some("s3cret"), call(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    fn output(window: u64) -> Output {
        serde_json::from_value(serde_json::json!({
            "stream": "cam", "window": window, "start_us": 0, "end_us": 10, "events": 5,
            "predicted": 1, "class": "1", "top_k": [{"class": 1, "name": "1", "logit": 0.5}],
            "logits": [0.1, 0.5], "gap": false, "complete": true, "executor": "event",
            "stats": {"timesteps": 4, "spikes": 3, "firing_rate": 0.1, "synaptic_ops": 7,
                "dense_macs": 9, "performed_ops": 7, "neuron_updates": 2,
                "neuron_updates_total": 4, "energy_pj": 1.5, "dense_energy_pj": 2.5,
                "layers": []},
            "latency": {"compute_us": 1.0, "end_to_end_us": 2.0},
        }))
        .unwrap()
    }

    /// The next item of a subscription, which must be ready now.
    fn next(s: &mut Subscription) -> Option<Result<proto::Classification, Status>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tokio_stream::Stream::poll_next(Pin::new(s), &mut cx) {
            Poll::Ready(item) => item,
            Poll::Pending => panic!("the subscription is not ready"),
        }
    }

    fn subscription(hub: &Hub) -> Subscription {
        Subscription {
            rx: hub.subscribe("grpc", None),
            hub: hub.clone(),
            ended: false,
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped_and_told_and_shutdown_ends_cleanly() {
        use crate::pipeline::Publish;
        let mut hub = Hub::new(2);
        let mut slow = subscription(&hub);
        let mut reader = subscription(&hub);
        for w in 0..4 {
            let o = output(w);
            let line = serde_json::to_string(&o).unwrap();
            hub.publish(&o, &line);
            // One that reads keeps up however long the stream is.
            let c = next(&mut reader).unwrap().unwrap();
            assert_eq!(c.window, w);
            assert_eq!(c.json, line);
            assert_eq!(c.stats.unwrap().synaptic_ops, 7);
        }
        // The slow one held two windows; the third found its buffer full.
        assert_eq!(hub.dropped(), 1);
        assert_eq!(hub.len(), 1);
        assert_eq!(next(&mut slow).unwrap().unwrap().window, 0);
        assert_eq!(next(&mut slow).unwrap().unwrap().window, 1);
        let e = next(&mut slow).unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(next(&mut slow).is_none());
        // At shutdown the reader's stream ends without an error, and a late one at once.
        hub.close();
        assert!(next(&mut reader).is_none());
        assert!(next(&mut subscription(&hub)).is_none());
    }

    #[test]
    fn stream_rows_become_stream_infos() {
        let row = serde_json::json!({
            "id": "cam", "source": "dv_tcp x", "connected": true, "sensor": "128x96",
            "backpressure": "drop_oldest", "queue_depth": 2, "windows": 7, "inferences": 5,
        });
        let info = stream_info(&row);
        assert_eq!((info.width, info.height), (128, 96));
        assert_eq!(info.id, "cam");
        assert_eq!(info.backpressure, "drop_oldest");
        assert_eq!((info.windows, info.inferences, info.queue_depth), (7, 5, 2));
        assert_eq!(stream_info(&serde_json::json!({"sensor": null})).width, 0);
    }
}
