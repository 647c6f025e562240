//! Integration tests of the gRPC API (`proto/inflor/v1/inflor.proto`) served by `inflor run`,
//! through the client generated in the crate, on loopback only and bounded in time: Subscribe
//! receives exactly what the file sink writes and ends cleanly at shutdown; ListStreams lists
//! the running stream; a recording pushed through Ingest classifies as `infer` does on the
//! file; a missing or wrong bearer token is refused with UNAUTHENTICATED; an Ingest packet over
//! the maximum packet size is refused with OUT_OF_RANGE and the daemon carries on; a
//! subscriber that never reads is disconnected and counted while Ingest calls complete;
//! SIGTERM during an open Ingest call ends it with UNAVAILABLE after classifying every event
//! it took.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use inflor::format::FileReader;
use inflor::sink::grpc::proto;
use inflor::sink::grpc::proto::inflor_client::InflorClient;
use tonic::transport::Channel;

use crate::daemon::{
    PATIENCE, Process, dv_stream, outputs, stream_model, summary, wait_for_outputs,
};
use crate::support::{repo_file, run_inflor};

const TOKEN: &str = "grpc-test-token";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(addr: &str) -> InflorClient<Channel> {
    let channel = tokio::time::timeout(
        PATIENCE,
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("the gRPC server answers in time")
    .expect("the gRPC server accepts");
    InflorClient::new(channel)
}

/// A request carrying `authorization: Bearer <token>`.
fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A daemon config: the small stream model, a file sink, a gRPC sink with a token, and the
/// given streams and limits.
fn config(dir: &Path, streams: &str, limits: &str) -> std::path::PathBuf {
    let model = stream_model(dir);
    let sink = dir.join("out.jsonl");
    let path = dir.join("grpc.toml");
    std::fs::write(
        &path,
        format!(
            r#"
model = {model:?}
shutdown_grace_s = 20.0
[admin]
listen = "127.0.0.1:0"
[limits]
{limits}
{streams}
[[sinks]]
kind = "file"
path = {sink:?}
[[sinks]]
kind = "grpc"
listen = "127.0.0.1:0"
token_env = "INFLOR_GRPC_TEST_TOKEN"
"#
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Process {
    Process::start_with_env(
        &["run", config.to_str().unwrap()],
        &[("INFLOR_GRPC_TEST_TOKEN", TOKEN)],
    )
}

/// `infer --json` on the bundled recording with the model next to `config`.
fn infer(dir: &Path) -> Vec<serde_json::Value> {
    let out = run_inflor(&[
        "infer",
        "--json",
        "--model",
        dir.join("tiny-stream.safetensors").to_str().unwrap(),
        repo_file("assets/dvs-digits-0.aedat").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn same_windows(ours: &[serde_json::Value], theirs: &[serde_json::Value]) {
    assert!(ours.len() > 10, "{} windows", ours.len());
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        for key in [
            "window",
            "start_us",
            "end_us",
            "events",
            "predicted",
            "class",
            "logits",
        ] {
            assert_eq!(a[key], b[key], "{key} of window {}", b["window"]);
        }
    }
}

#[test]
fn subscribe_receives_what_the_file_sink_writes_and_ends_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        r#"[[streams]]
id = "push"
source = { kind = "listen", listen = "127.0.0.1:0" }
backpressure = "block""#,
        "subscriber_buffer = 100000",
    );
    let mut daemon = start(&config);
    let grpc = daemon.address("gRPC on ");
    let listen = daemon.address("listening on ");
    let rt = runtime();
    let mut client = rt.block_on(connect(&grpc));
    // The subscription is registered before the response comes back, so every window of the
    // stream pushed afterwards reaches it.
    let mut stream = rt
        .block_on(client.subscribe(authorised(proto::SubscribeRequest::default(), TOKEN)))
        .unwrap()
        .into_inner();
    let mut camera = TcpStream::connect(&listen).unwrap();
    camera.write_all(&dv_stream()).unwrap();
    drop(camera);
    daemon.wait_for("stream ended");
    daemon.signal("-TERM");
    let received: Vec<proto::Classification> = rt.block_on(async {
        let mut all = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, stream.message()).await {
                Ok(Ok(Some(c))) => all.push(c),
                // The stream ends cleanly once the daemon has sent the last window.
                Ok(Ok(None)) => break all,
                Ok(Err(status)) => panic!("the subscription failed: {status}"),
                Err(_) => panic!("the subscription did not end"),
            }
        }
    });
    // Closes the client's connections, so the server need not wait for them.
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let file = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    assert!(lines.len() > 10, "{} windows", lines.len());
    assert_eq!(received.len(), lines.len());
    for (c, line) in received.iter().zip(&lines) {
        assert_eq!(c.json, *line);
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(c.stream, v["stream"].as_str().unwrap());
        assert_eq!(serde_json::json!(c.window), v["window"]);
        assert_eq!(serde_json::json!(c.start_us), v["start_us"]);
        assert_eq!(serde_json::json!(c.end_us), v["end_us"]);
        assert_eq!(serde_json::json!(c.predicted), v["predicted"]);
        assert_eq!(c.class_name, v["class"].as_str().unwrap());
    }
    // And the windows are the ones `infer` makes of the recording.
    let ours: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    same_windows(&ours, &infer(dir.path()));
    assert!(!stderr.contains("cut off"), "{stderr}");
    let s = summary(&stderr);
    assert_eq!(s["published"], lines.len() as u64, "{s:?}");
}

#[test]
fn tokens_are_checked_and_list_streams_lists_the_running_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        r#"[[streams]]
id = "digits"
source = { kind = "file", path = "assets/dvs-digits-0.aedat", speed = 1.0, loop = true }"#,
        "",
    );
    let mut daemon = start(&config);
    let grpc = daemon.address("gRPC on ");
    daemon.wait_for("ready");
    let rt = runtime();
    let mut client = rt.block_on(connect(&grpc));
    let list = |client: &mut InflorClient<Channel>, token: Option<&str>| {
        let request = match token {
            Some(t) => authorised(proto::ListStreamsRequest {}, t),
            None => tonic::Request::new(proto::ListStreamsRequest {}),
        };
        rt.block_on(client.list_streams(request))
    };
    for token in [None, Some("wrong"), Some("")] {
        let status = list(&mut client, token).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    let status = rt
        .block_on(client.subscribe(proto::SubscribeRequest::default()))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // The replay's task says the sensor size once it has read the file's header.
    let deadline = std::time::Instant::now() + PATIENCE;
    let streams = loop {
        let streams = list(&mut client, Some(TOKEN)).unwrap().into_inner().streams;
        if streams.iter().all(|s| s.connected) {
            break streams;
        }
        assert!(std::time::Instant::now() < deadline, "{streams:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(streams.len(), 1, "{streams:?}");
    let s = &streams[0];
    assert_eq!(s.id, "digits");
    assert!(s.source.starts_with("file "), "{}", s.source);
    assert_eq!(s.backpressure, "block");
    assert!(s.connected);
    assert_eq!((s.width, s.height), (128, 128));
    // A subscriber of that stream receives its windows as the file sink writes them.
    let first: Vec<proto::Classification> = rt.block_on(async {
        let mut stream = client
            .subscribe(authorised(
                proto::SubscribeRequest {
                    stream: "digits".into(),
                },
                TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while got.len() < 2 {
            let c = tokio::time::timeout(PATIENCE, stream.message())
                .await
                .expect("a window in time")
                .unwrap()
                .expect("the subscription is open");
            got.push(c);
        }
        got
    });
    let sink = dir.path().join("out.jsonl");
    let last = first.iter().map(|c| c.window).max().unwrap();
    wait_for_outputs(&sink, usize::try_from(last).unwrap() + 1);
    let file = outputs(&sink);
    for c in &first {
        assert_eq!(c.stream, "digits");
        let line = file
            .iter()
            .find(|l| l["window"] == serde_json::json!(c.window))
            .unwrap();
        let ours: serde_json::Value = serde_json::from_str(&c.json).unwrap();
        assert_eq!(&ours, line);
    }
    daemon.signal("-INT");
    // Closes the client's connections, so the server need not wait for them.
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
}

/// The bundled recording's events and sensor size.
fn recording() -> (Vec<inflor::event::Event>, (u32, u32)) {
    let path = repo_file("assets/dvs-digits-0.aedat");
    let mut reader = FileReader::open(&path, None, &Default::default()).unwrap();
    let mut events = Vec::new();
    let mut batch = Vec::new();
    while reader.next_batch(&mut batch).unwrap() {
        events.append(&mut batch);
    }
    events.append(&mut batch);
    let info = reader.info_or_default();
    (events, (u32::from(info.width), u32::from(info.height)))
}

fn packet(stream: &str, sensor: (u32, u32), events: &[inflor::event::Event]) -> proto::EventPacket {
    proto::EventPacket {
        stream: stream.to_owned(),
        width: sensor.0,
        height: sensor.1,
        t: events.iter().map(|e| e.t).collect(),
        x: events.iter().map(|e| u32::from(e.x)).collect(),
        y: events.iter().map(|e| u32::from(e.y)).collect(),
        polarity: events.iter().map(|e| e.polarity).collect(),
    }
}

#[test]
fn ingest_classifies_as_infer_does_and_oversized_packets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // No configured stream: the gRPC server takes them through Ingest.
    let config = config(dir.path(), "", "max_packet_mib = 1");
    let mut daemon = start(&config);
    let grpc = daemon.address("gRPC on ");
    daemon.wait_for("ready");
    let (events, sensor) = recording();
    assert!(events.len() > 20_000, "{} events", events.len());
    let rt = runtime();
    let mut client = rt.block_on(connect(&grpc));
    // A packet of 1000 events at a time, the first naming the stream and the sensor.
    let packets: Vec<proto::EventPacket> = events
        .chunks(1000)
        .enumerate()
        .map(|(i, chunk)| {
            if i == 0 {
                packet("cam_1", sensor, chunk)
            } else {
                packet("", (0, 0), chunk)
            }
        })
        .collect();
    let n = packets.len() as u64;
    let summary_of = rt
        .block_on(async {
            tokio::time::timeout(
                PATIENCE,
                client.ingest(authorised(tokio_stream::iter(packets), TOKEN)),
            )
            .await
        })
        .expect("Ingest returns in time")
        .unwrap()
        .into_inner();
    assert_eq!(summary_of.stream, "cam_1");
    assert_eq!(summary_of.packets, n);
    assert_eq!(summary_of.events, events.len() as u64);
    let theirs = infer(dir.path());
    assert_eq!(summary_of.windows, theirs.len() as u64);
    assert_eq!(summary_of.inferences, theirs.len() as u64);
    let sink = dir.path().join("out.jsonl");
    wait_for_outputs(&sink, theirs.len());
    let ours = outputs(&sink);
    assert!(ours.iter().all(|o| o["stream"] == "cam_1"));
    same_windows(&ours, &theirs);

    // A packet of 200 000 events is over 1 MiB as encoded: refused from its length prefix.
    let big: Vec<inflor::event::Event> = events.iter().copied().cycle().take(200_000).collect();
    let status = rt
        .block_on(async {
            tokio::time::timeout(
                PATIENCE,
                client.ingest(authorised(
                    tokio_stream::iter(vec![
                        packet("cam_2", sensor, &events[..1000]),
                        packet("", (0, 0), &big),
                    ]),
                    TOKEN,
                )),
            )
            .await
        })
        .expect("Ingest returns in time")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");
    // The daemon carries on: an Ingest of a wrong token is refused, and a good one works.
    let status = rt
        .block_on(client.ingest(authorised(
            tokio_stream::iter(vec![packet("cam_3", sensor, &events[..1000])]),
            "nope",
        )))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let again = rt
        .block_on(client.ingest(authorised(
            tokio_stream::iter(vec![packet("cam_3", sensor, &events[..20_000])]),
            TOKEN,
        )))
        .unwrap()
        .into_inner();
    assert_eq!(again.events, 20_000);
    assert!(again.inferences > 0);
    assert_eq!(again.windows, again.inferences);
    daemon.signal("-TERM");
    // Closes the client's connections, so the server need not wait for them.
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("larger than the maximum packet size"),
        "{stderr}"
    );
}

/// The value of `name` on the `/metrics` series whose labels contain `labels` (0 if absent).
fn metric(admin: &str, name: &str, labels: &str) -> u64 {
    crate::daemon::http_get(admin, "/metrics")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split_whitespace().next().is_some_and(|series| {
                series.starts_with(&format!("{name}{{")) && series.contains(labels)
            })
        })
        .and_then(|l| l.split_whitespace().last())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_and_counted_without_stalling_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "", "subscriber_buffer = 1");
    let mut daemon = start(&config);
    let admin = daemon.address("admin on http://");
    let grpc = daemon.address("gRPC on ");
    daemon.wait_for("ready");
    let (events, sensor) = recording();
    let rt = runtime();
    let (slow_status, windows) = rt.block_on(async {
        // A subscriber that grants the server 1 KiB of HTTP/2 window and never reads: what
        // the server may send it is bounded, so its buffer in the hub fills.
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .initial_stream_window_size(1024)
            .initial_connection_window_size(1024)
            .connect()
            .await
            .unwrap();
        let mut slow_client = InflorClient::new(channel);
        let mut slow = slow_client
            .subscribe(authorised(proto::SubscribeRequest::default(), TOKEN))
            .await
            .unwrap()
            .into_inner();
        let mut client = connect(&grpc).await;
        // Three streams in turn; each call returns once its windows are published, so the
        // slow subscriber stalls none of them.
        let mut windows = Vec::new();
        for id in ["cam_1", "cam_2", "cam_3"] {
            let s = tokio::time::timeout(
                PATIENCE,
                client.ingest(authorised(
                    tokio_stream::iter(vec![packet(id, sensor, &events)]),
                    TOKEN,
                )),
            )
            .await
            .expect("Ingest returns in time")
            .unwrap()
            .into_inner();
            assert_eq!(s.windows, s.inferences);
            windows.push(s.windows);
        }
        // The slow one, reading at last, gets what was buffered for it, then the news.
        let status = loop {
            match tokio::time::timeout(PATIENCE, slow.message()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => panic!("the slow subscription ended without an error"),
                Ok(Err(status)) => break status,
                Err(_) => panic!("the slow subscription neither ended nor failed"),
            }
        };
        (status, windows)
    });
    assert_eq!(
        slow_status.code(),
        tonic::Code::ResourceExhausted,
        "{slow_status}"
    );
    assert!(windows.iter().all(|&w| w > 10), "{windows:?}");
    assert_eq!(
        metric(&admin, "inflor_subscribers_dropped_total", "sink=\"grpc\""),
        1
    );
    daemon.signal("-TERM");
    // Closes the client's connections, so the server need not wait for them.
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    assert_eq!(s["inferences"], windows.iter().sum::<u64>(), "{s:?}");
}

#[test]
fn sigterm_during_ingest_classifies_every_event_taken() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "", "");
    let mut daemon = start(&config);
    let grpc = daemon.address("gRPC on ");
    daemon.wait_for("ready");
    let (events, sensor) = recording();
    // The call runs on the runtime's worker while the test waits on the daemon.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(connect(&grpc));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let call = rt.spawn({
        let mut client = client.clone();
        async move {
            client
                .ingest(authorised(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                    TOKEN,
                ))
                .await
        }
    });
    let sent = 10_000;
    rt.block_on(async {
        for (i, chunk) in events[..sent].chunks(1000).enumerate() {
            let p = if i == 0 {
                packet("cam", sensor, chunk)
            } else {
                packet("", (0, 0), chunk)
            };
            tx.send(p).await.unwrap();
        }
    });
    // Once the daemon has taken every event sent, the call is left open and the daemon told
    // to stop.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let streams = rt
            .block_on(client.list_streams(authorised(proto::ListStreamsRequest {}, TOKEN)))
            .unwrap()
            .into_inner()
            .streams;
        if streams.iter().any(|s| s.events_received == sent as u64) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{streams:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.signal("-TERM");
    let status = rt
        .block_on(async { tokio::time::timeout(PATIENCE, call).await })
        .expect("the call ends in time")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    drop(tx);
    drop(client);
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    assert_eq!(s["events_received"], sent as u64, "{s:?}");
    assert!(s["windows"] >= 5, "{s:?}");
    assert_eq!(s["inferences"], s["windows"], "{s:?}");
    let file = outputs(&dir.path().join("out.jsonl"));
    assert_eq!(file.len() as u64, s["windows"]);
    assert!(file.iter().all(|o| o["stream"] == "cam"));
}

/// `limits.max_connections` bounds gRPC connections: one more is closed at once and counted,
/// the open one keeps working, and its slot is free again once it closes.
#[test]
fn connections_beyond_the_limit_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "", "max_connections = 1");
    let mut daemon = start(&config);
    let admin = daemon.address("admin on http://");
    let grpc = daemon.address("gRPC on ");
    daemon.wait_for("ready");
    let rt = runtime();
    let list = |client: &mut InflorClient<Channel>| {
        rt.block_on(async {
            tokio::time::timeout(
                PATIENCE,
                client.list_streams(authorised(proto::ListStreamsRequest {}, TOKEN)),
            )
            .await
            .expect("the server answers or closes in time")
        })
    };
    let mut first = rt.block_on(connect(&grpc));
    assert!(list(&mut first).is_ok());
    // The second connection is accepted by the kernel and closed by the server before HTTP/2
    // starts, so either connecting or the first call fails.
    let second = rt.block_on(async {
        tokio::time::timeout(
            PATIENCE,
            Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect(),
        )
        .await
        .expect("connecting ends in time")
    });
    if let Ok(channel) = second {
        let mut second = InflorClient::new(channel);
        assert!(list(&mut second).is_err(), "a second connection was served");
    }
    // At least one: the client may try its refused channel again before giving up.
    let refused = metric(
        &admin,
        "inflor_connections_refused_total",
        "listener=\"grpc\"",
    );
    assert!(refused >= 1, "{refused} refused");
    assert!(list(&mut first).is_ok(), "the first connection still works");
    drop(first);
    // Its permit goes back when the server sees the close; a new client gets in after that.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let ok = rt.block_on(async {
            match Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => InflorClient::new(channel)
                    .list_streams(authorised(proto::ListStreamsRequest {}, TOKEN))
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        });
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.signal("-TERM");
    drop(rt);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
}
