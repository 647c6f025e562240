//! Integration tests of the daemon (`inflor run`, `validate`, `serve-events`), on loopback only,
//! each bounded in time: every example config validates; a file replay publishes what `infer`
//! prints; a DV TCP client reads `serve-events` and SIGTERM loses no binned window; the push
//! listener survives garbage, forged packet lengths and clients that vanish mid-packet; overload
//! under `drop_oldest` is counted exactly and flagged; `/metrics` passes `promtool`; the real
//! dv-processing capture pushed in classifies as `infer` does; `cameras` with none attached says so
//! and exits 0, and a USB stream whose camera is absent fails at start. Its
//! helpers (a model, a running daemon, its outputs and summary) serve the NATS tests too.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use inflor::format::{FileReader, Format, JaerOrientation};

use crate::support::{repo_file, run_inflor};

/// Longest any step of these tests waits before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A small, fast stream model: tiny on 16×16, 4 bins of 500 events per window.
pub(crate) fn stream_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-stream.safetensors");
    let out = run_inflor(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "10",
        "--input",
        "2x16x16",
        "--timesteps",
        "4",
        "--window",
        "count:500",
        "--seed",
        "3",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A running `inflor` process whose stderr lines arrive on a channel.
pub(crate) struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`Process::start`], with extra environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inflor"))
            .args(args)
            .current_dir(repo_file(""))
            .env("INFLOR_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("inflor starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub(crate) fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {PATIENCE:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The address printed after `prefix` (e.g. "admin on http://").
    pub(crate) fn address(&mut self, prefix: &str) -> String {
        let line = self.wait_for(prefix);
        let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
        rest.split_whitespace().next().unwrap().to_owned()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal}");
    }

    /// Waits for the exit; returns the exit code and the whole stderr.
    pub(crate) fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "inflor did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole lines of a file a daemon is writing: the last one may be part-way written.
pub(crate) fn whole_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole.lines().map(str::to_owned).collect()
}

/// The JSON lines of a file sink, once it has at least `n` (or at the end, all of them).
pub(crate) fn outputs(path: &Path) -> Vec<serde_json::Value> {
    whole_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn wait_for_outputs(path: &Path, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while outputs(path).len() < n {
        assert!(Instant::now() < deadline, "fewer than {n} outputs in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The final summary's counts, by name (`inflor: stopped: key=value ...`).
pub(crate) fn summary(stderr: &str) -> std::collections::HashMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.contains("inflor: stopped:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

pub(crate) fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).unwrap();
    body.split_once("\r\n\r\n")
        .map_or(body.clone(), |(_, b)| b.to_owned())
}

/// The bundled recording as a DV network stream.
pub(crate) fn dv_stream() -> Vec<u8> {
    let path = repo_file("assets/dvs-digits-0.aedat");
    let mut reader = FileReader::open(&path, None, &Default::default()).unwrap();
    let mut events = Vec::new();
    let mut batch = Vec::new();
    while reader.next_batch(&mut batch).unwrap() {
        events.append(&mut batch);
    }
    events.append(&mut batch);
    let info = reader.info_or_default();
    let mut encoder = Format::DvNetwork.encoder(&info, JaerOrientation::default());
    let mut bytes = Vec::new();
    encoder.begin(&info, &mut bytes).unwrap();
    encoder.encode(&events, &mut bytes).unwrap();
    encoder.end(&mut bytes).unwrap();
    bytes
}

#[test]
fn every_example_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_file("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let out = Command::new(env!("CARGO_BIN_EXE_inflor"))
            .arg("validate")
            .arg(&path)
            .current_dir(repo_file(""))
            .env("INFLOR_MODEL", &model)
            .env("INFLOR_TOKEN", "example-token")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen >= 5, "only {seen} example configs");
}

#[test]
fn validate_reports_every_error_with_its_path_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"
workers = 0
colour = "blue"
[admin]
listen = "localhost"
[[streams]]
id = "a b"
source = { kind = "file", path = "/nonexistent/rec.aedat", speed = -1.0 }
"#,
    )
    .unwrap();
    let out = run_inflor(&[OsStrLike::from("validate"), config.as_os_str().into()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "colour",
        "workers",
        "admin.listen",
        "streams[0].id",
        "streams[0].source.path",
        "streams[0].source.speed",
    ] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
}

type OsStrLike = std::ffi::OsString;

#[test]
fn a_file_replay_publishes_what_infer_prints() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("replay.toml");
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
[admin]
listen = "127.0.0.1:0"
[[streams]]
id = "digits"
source = {{ kind = "file", path = "assets/dvs-digits-0.aedat" }}
[[sinks]]
kind = "file"
path = {sink:?}
"#
        ),
    )
    .unwrap();
    let daemon = Process::start(&["run", config.to_str().unwrap()]);
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let ours = outputs(&sink);
    let infer = run_inflor(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        repo_file("assets/dvs-digits-0.aedat").to_str().unwrap(),
    ]);
    assert!(infer.status.success());
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&infer.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(ours.len() > 10, "{} windows", ours.len());
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a["stream"], "digits");
        for key in [
            "window",
            "start_us",
            "end_us",
            "events",
            "predicted",
            "logits",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
        assert_eq!(a["gap"], false);
    }
    let s = summary(&stderr);
    assert_eq!(s["windows"], ours.len() as u64, "{s:?}");
    assert_eq!(s["published"], ours.len() as u64);
}

#[test]
fn a_dv_client_reads_serve_events_and_sigterm_loses_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let mut server = Process::start(&[
        "serve-events",
        "--listen",
        "127.0.0.1:0",
        "--speed",
        "20",
        "--loop",
    ]);
    let camera = server.address("serving events on ");
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("dv.toml");
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
[admin]
listen = "127.0.0.1:0"
[[streams]]
id = "cam"
source = {{ kind = "dv_tcp", address = "{camera}", reconnect_min_ms = 10, reconnect_max_ms = 200 }}
backpressure = "drop_oldest"
[[sinks]]
kind = "file"
path = {sink:?}
"#
        ),
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    let admin = daemon.address("admin on http://");
    daemon.wait_for("connected");
    wait_for_outputs(&sink, 20);
    let streams: serde_json::Value = serde_json::from_str(&http_get(&admin, "/streams")).unwrap();
    assert_eq!(streams[0]["id"], "cam");
    assert_eq!(streams[0]["sensor"], "128x128");
    assert!(http_get(&admin, "/readyz").contains("ready"));
    daemon.signal("-TERM");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    let published = outputs(&sink).len() as u64;
    assert_eq!(s["published"], published, "{s:?}");
    assert_eq!(s["inferences"], published);
    assert_eq!(
        s["windows"],
        s["inferences"] + s["windows_dropped"],
        "a binned window was lost: {s:?}"
    );
    drop(server);
}

#[test]
fn the_push_listener_survives_bad_clients_and_metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("listen.toml");
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
[admin]
listen = "127.0.0.1:0"
[limits]
max_packet_mib = 1
[[streams]]
id = "push"
source = {{ kind = "listen", listen = "127.0.0.1:0" }}
[[sinks]]
kind = "file"
path = {sink:?}
"#
        ),
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    let admin = daemon.address("admin on http://");
    let listen = daemon.address("listening on ");
    let good = dv_stream();

    // Garbage: closed with a counted error.
    let mut garbage = TcpStream::connect(&listen).unwrap();
    garbage.write_all(&[0xA5; 4096]).unwrap();
    drop(garbage);
    daemon.wait_for("stream closed");
    // A forged length (an IOHeader claiming 4 GiB): refused without allocating it.
    let forged = std::fs::read(crate::support::test_data(
        "malformed/dv_network/forged_header_length.bin",
    ))
    .unwrap();
    let mut f = TcpStream::connect(&listen).unwrap();
    f.write_all(&forged).unwrap();
    drop(f);
    daemon.wait_for("stream closed");
    // A client that vanishes mid-packet: what it completed is still classified.
    let mut half = TcpStream::connect(&listen).unwrap();
    half.write_all(&good[..good.len() / 2]).unwrap();
    drop(half);
    daemon.wait_for("stream closed");
    // A good client, after all that, is served in full.
    let mut ok = TcpStream::connect(&listen).unwrap();
    ok.write_all(&good).unwrap();
    drop(ok);
    daemon.wait_for("stream ended");

    let metrics = http_get(&admin, "/metrics");
    assert!(metrics.contains("inflor_decode_errors_total"), "{metrics}");
    assert!(
        metrics.contains("inflor_inference_latency_seconds_bucket"),
        "{metrics}"
    );
    promtool(&metrics);
    daemon.signal("-INT");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let published = outputs(&sink);
    let full: Vec<_> = published
        .iter()
        .filter(|o| o["stream"].as_str().unwrap().starts_with("push/127.0.0.1:"))
        .collect();
    assert_eq!(full.len(), published.len());
    let s = summary(&stderr);
    assert_eq!(s["windows"], s["inferences"], "{s:?}");
    assert_eq!(s["published"], published.len() as u64);
    assert!(s["streams"] >= 4, "{s:?}");
}

/// Checks a scrape with `promtool check metrics`, which CI installs (Debian's `prometheus`).
fn promtool(scrape: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing and CI is set: .ci/run installs it"
        );
        eprintln!("skipped: promtool check (needs promtool, from Debian's prometheus package)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overload_under_drop_oldest_is_counted_exactly_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("overload.toml");
    // The reference executor is orders of magnitude slower than decoding, and the queue holds
    // one window: most windows must be dropped.
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
executor = "reference"
[admin]
listen = "127.0.0.1:0"
[limits]
queue_windows = 1
[[streams]]
id = "burst"
source = {{ kind = "file", path = "assets/dvs-digits-0.aedat" }}
window = "count:50"
backpressure = "drop_oldest"
[[sinks]]
kind = "file"
path = {sink:?}
"#
        ),
    )
    .unwrap();
    let (code, stderr) = Process::start(&["run", config.to_str().unwrap()]).wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    let published = outputs(&sink);
    assert!(s["windows_dropped"] > 0, "{s:?}");
    assert_eq!(
        s["windows"],
        s["inferences"] + s["windows_dropped"],
        "{s:?}"
    );
    assert_eq!(s["published"], published.len() as u64);
    let events: u64 = published
        .iter()
        .map(|o| o["events"].as_u64().unwrap())
        .sum();
    assert_eq!(s["events_received"], 32481);
    assert!(
        events + s["events_dropped"] <= s["events_received"],
        "{s:?}"
    );
    assert!(published.iter().any(|o| o["gap"] == true));
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exported: std::collections::HashSet<&str> = inflor::telemetry::METRICS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("inflor_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(base),
                    "panel {:?} queries {name}, which the daemon does not export",
                    panel["title"]
                );
                queried += 1;
                rest = &rest[at + name.len()..];
            }
        }
    }
    assert!(queried >= 15, "{queried}");
}

#[test]
fn a_slow_subscriber_is_dropped_and_counted_and_filters_hold() {
    use inflor::pipeline::Publish;
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let infer = run_inflor(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        repo_file("assets/dvs-digits-0.aedat").to_str().unwrap(),
    ]);
    let line = String::from_utf8_lossy(&infer.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let mut output: inflor::session::Output = serde_json::from_str(&line).unwrap();
    output.stream = "a".into();
    let mut hub = inflor::sink::Hub::new(2);
    let mut fast = hub.subscribe("test", None);
    let mut slow = hub.subscribe("test", None);
    let mut only_b = hub.subscribe("test", Some("b".into()));
    for i in 0..5 {
        output.window = i;
        hub.publish(&output, &line);
        assert_eq!(fast.try_recv().unwrap().output.window, i);
    }
    // The slow one held two, the third found its buffer full: disconnected, counted once.
    assert_eq!(hub.dropped(), 1);
    assert_eq!(hub.len(), 2);
    assert_eq!(slow.try_recv().unwrap().output.window, 0);
    assert_eq!(slow.try_recv().unwrap().output.window, 1);
    assert!(slow.try_recv().is_err());
    // A filtered subscriber saw none of stream "a" and is not dropped for it.
    assert!(only_b.try_recv().is_err());
    output.stream = "b".into();
    hub.publish(&output, &line);
    assert_eq!(only_b.try_recv().unwrap().output.stream, "b");
}

#[test]
fn the_embedded_default_classifies_the_bundled_recording_and_stops_on_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inflor"))
        .arg("run")
        .env("INFLOR_ADMIN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // One stream per bundled recording (digits 0, 3, 7 and 9), each line with its true label;
    // the streams' first windows arrive in any order.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "stdout ended early"
        );
        let (stream, rest) = line.split_once(' ').unwrap();
        let digit = stream.strip_prefix("bundled-").expect(&line);
        assert!(["0", "3", "7", "9"].contains(&digit), "{line}");
        assert!(rest.contains(&format!("(true: {digit}")), "{line}");
        if rest.starts_with("#0 ") {
            assert!(seen.insert(digit.to_owned()), "{line}");
        }
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_dv_processing_capture_pushed_in_classifies_as_infer_does() {
    // Needs ../shared/data (dv-processing's NetworkWriter capture); skipped without it.
    let Some(capture) =
        crate::support::shared_data_or_skip("dv_network/dvprocessing_network_lz4.bin")
    else {
        eprintln!("skipped: ../shared/data is absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("listen.toml");
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
[admin]
listen = "127.0.0.1:0"
[[streams]]
id = "push"
source = {{ kind = "listen", listen = "127.0.0.1:0" }}
[[sinks]]
kind = "file"
path = {sink:?}
"#
        ),
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    let listen = daemon.address("listening on ");
    let mut client = TcpStream::connect(&listen).unwrap();
    client.write_all(&std::fs::read(&capture).unwrap()).unwrap();
    drop(client);
    daemon.wait_for("stream ended");
    daemon.signal("-TERM");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let ours = outputs(&sink);
    let infer = run_inflor(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        capture.to_str().unwrap(),
    ]);
    assert!(
        infer.status.success(),
        "{}",
        String::from_utf8_lossy(&infer.stderr)
    );
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&infer.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 18 700 events in windows of 4 × 500: 9 full windows.
    assert_eq!(ours.len(), 9, "{stderr}");
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(a["stream"].as_str().unwrap().starts_with("push/127.0.0.1:"));
        for key in [
            "window",
            "start_us",
            "end_us",
            "events",
            "predicted",
            "logits",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
    let s = summary(&stderr);
    assert_eq!(s["events_received"], 18_700, "{s:?}");
    assert_eq!(s["published"], 9);
}

/// The supported camera names, as `inflor cameras` prints them.
const CAMERA_NAMES: [&str; 4] = [
    "Prophesee EVK4",
    "Prophesee EVK3 HD",
    "iniVation DVXplorer",
    "iniVation DAVIS 346",
];

#[test]
fn cameras_lists_none_clearly_and_exits_0() {
    // No camera is attached where these tests run; if one is, each line must name it.
    for json in [false, true] {
        let args: &[&str] = if json {
            &["cameras", "--json"]
        } else {
            &["cameras"]
        };
        let out = run_inflor(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        let message = if json { &stderr } else { &stdout };
        if message.contains("no event camera found") {
            assert!(
                message.contains(
                    "looked for Prophesee EVK3/EVK4, iniVation DVXplorer/DAVIS346 over USB"
                ),
                "{message}"
            );
            if json {
                assert!(stdout.trim().is_empty(), "{stdout}");
            }
        } else {
            assert!(!stdout.trim().is_empty(), "{stdout}{stderr}");
            for line in stdout.lines() {
                if json {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(v["width"].as_u64().is_some_and(|w| w > 0), "{line}");
                } else {
                    assert!(CAMERA_NAMES.iter().any(|n| line.starts_with(n)), "{line}");
                }
            }
        }
    }
}

#[test]
fn run_with_a_usb_camera_that_is_not_there_fails_at_start_naming_stream_and_serial() {
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let config = dir.path().join("usb.toml");
    std::fs::write(
        &config,
        r#"
[admin]
listen = "127.0.0.1:0"

[[streams]]
id = "dock-7"
source = { kind = "usb", serial = "no-such-serial-42" }

[[sinks]]
kind = "stdout"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_inflor"))
        .arg("run")
        .arg(&config)
        .env("INFLOR_MODEL", &model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "stream dock-7: no event camera with serial \"no-such-serial-42\" found (looked for \
             Prophesee EVK3/EVK4, iniVation DVXplorer/DAVIS346 over USB)"
        ),
        "{stderr}"
    );
    // Refused before anything was served.
    assert!(!stderr.contains("admin on"), "{stderr}");
}
