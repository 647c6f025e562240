//! Integration tests of the NATS sink against a real `nats-server` (Debian's package, which
//! `.ci/run` installs) on a free loopback port, read by a plain-protocol subscriber: a file
//! replay publishes every window on its stream's subject with the file sink's JSON line; a
//! server that goes away and comes back is reconnected to, what was published while it was
//! away is counted exactly, and windows after its return arrive. Without `nats-server` the
//! tests are skipped, except under `CI`, where its absence fails them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::daemon::{PATIENCE, Process, dv_stream, http_get, stream_model, summary, whole_lines};

/// The `nats-server` binary, or None (the test is skipped) when it is not installed.
fn nats_server_or_skip() -> Option<String> {
    // Debian installs it in /usr/sbin, which not every user's PATH holds.
    for bin in ["nats-server", "/usr/sbin/nats-server"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(bin.to_owned());
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nats-server is missing and CI is set: .ci/run installs it"
    );
    eprintln!("skipped: needs nats-server (Debian's nats-server package)");
    None
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `nats-server`, killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    /// Starts a server on 127.0.0.1:`port` and waits until it greets a client.
    fn start(bin: &str, port: u16) -> Self {
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let mut server = Self { child };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut info = String::new();
                BufReader::new(s).read_line(&mut info).unwrap();
                assert!(info.starts_with("INFO "), "{info}");
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("nats-server exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server at once (no lame-duck goodbye), as a crash or a lost host would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A subscriber speaking the NATS text protocol: the messages on `subject` arrive on a
/// channel as (subject, payload), until the server goes away.
struct Subscriber {
    messages: mpsc::Receiver<(String, String)>,
}

impl Subscriber {
    /// Subscribes and returns once the server has confirmed the subscription (a PONG after the
    /// SUB means the server has processed it).
    fn new(port: u16, subject: &str) -> Self {
        let mut write = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut read = BufReader::new(write.try_clone().unwrap());
        let mut line = String::new();
        read.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO "), "{line}");
        write!(
            write,
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"test\"}}\r\nSUB {subject} 1\r\nPING\r\n"
        )
        .unwrap();
        loop {
            line.clear();
            assert!(read.read_line(&mut line).unwrap() > 0, "server closed");
            match line.trim_end() {
                "PONG" => break,
                "PING" => write.write_all(b"PONG\r\n").unwrap(),
                other => assert!(!other.starts_with("-ERR"), "{other}"),
            }
        }
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                if !matches!(read.read_line(&mut line), Ok(n) if n > 0) {
                    break;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                // Whether the connection and the test are both still there.
                let alive = match words.as_slice() {
                    ["MSG", subject, _sid, .., bytes] => {
                        let mut payload = vec![0u8; bytes.parse::<usize>().unwrap() + 2];
                        read.read_exact(&mut payload).is_ok() && {
                            payload.truncate(payload.len() - 2);
                            let payload = String::from_utf8(payload).unwrap();
                            tx.send((subject.to_string(), payload)).is_ok()
                        }
                    }
                    ["PING"] => write.write_all(b"PONG\r\n").is_ok(),
                    _ => true,
                };
                if !alive {
                    break;
                }
            }
        });
        Self { messages }
    }

    /// The next `n` messages, each within the patience.
    fn take(&self, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                self.messages
                    .recv_timeout(PATIENCE)
                    .unwrap_or_else(|_| panic!("only {i} of {n} NATS messages arrived"))
            })
            .collect()
    }
}

/// The file sink's lines of one stream, once there are `n` of them.
fn lines_of(path: &Path, stream: &str, n: usize) -> Vec<String> {
    let needle = format!("\"stream\":{}", serde_json::to_string(stream).unwrap());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found: Vec<String> = whole_lines(path)
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect();
        if found.len() >= n {
            assert_eq!(found.len(), n, "more windows of {stream} than counted");
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} outputs of {stream}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sample of `/metrics`: the value of `name` on the series whose labels contain `labels`.
fn metric(admin: &str, name: &str, labels: &str) -> u64 {
    let scrape = http_get(admin, "/metrics");
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split_whitespace().next().is_some_and(|series| {
                (series == name || series.starts_with(&format!("{name}{{")))
                    && series.contains(labels)
            })
        })
        .and_then(|l| l.split_whitespace().last())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

/// Waits until a metric reaches `want` (it only grows), failing if it passes it.
fn wait_for_metric(admin: &str, name: &str, labels: &str, want: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = metric(admin, name, labels);
        assert!(got <= want, "{name}{{{labels}}} = {got}, past {want}");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} = {got}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_file_replay_publishes_every_window_on_its_subject() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let port = free_port();
    let _server = Server::start(&bin, port);
    let subscriber = Subscriber::new(port, "fleet.>");
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("nats.toml");
    // A dot inside the stream id would split the subject token: it becomes `_`.
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
[admin]
listen = "127.0.0.1:0"
[[streams]]
id = "dock.1"
source = {{ kind = "file", path = "assets/dvs-digits-0.aedat" }}
backpressure = "block"
[[sinks]]
kind = "file"
path = {sink:?}
[[sinks]]
kind = "nats"
url = "nats://127.0.0.1:{port}"
subject = "fleet.{{stream}}.windows"
"#
        ),
    )
    .unwrap();
    let (code, stderr) = Process::start(&["run", config.to_str().unwrap()]).wait();
    assert_eq!(code, 0, "{stderr}");
    let file = whole_lines(&sink);
    assert!(file.len() > 10, "{} windows", file.len());
    let published = subscriber.take(file.len());
    for (i, ((subject, payload), line)) in published.iter().zip(&file).enumerate() {
        assert_eq!(subject, "fleet.dock_1.windows", "window {i}");
        assert_eq!(payload, line, "window {i}");
    }
    let s = summary(&stderr);
    assert_eq!(s["windows"], file.len() as u64, "{s:?}");
    assert_eq!(s["nats_published"], file.len() as u64, "{s:?}");
    assert_eq!(s["nats_dropped"], 0, "{s:?}");
}

#[test]
fn a_nats_server_that_goes_away_and_comes_back() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let port = free_port();
    let server = Server::start(&bin, port);
    let before = Subscriber::new(port, "inflor.>");
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("nats.toml");
    // The push listener lets the test decide when windows are made: one recording per
    // connection, each connection a stream of its own (`push/127.0.0.1:PORT`).
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
backpressure = "block"
[[sinks]]
kind = "file"
path = {sink:?}
[[sinks]]
kind = "nats"
url = "nats://127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    let admin = daemon.address("admin on http://");
    let listen = daemon.address("listening on ");
    daemon.wait_for("NATS connected");
    let recording = dv_stream();
    // Pushes the recording as a new stream; returns its id and its windows, once the file
    // sink has them all.
    let push = |daemon: &mut Process| {
        let mut camera = TcpStream::connect(&listen).unwrap();
        let id = format!("push/{}", camera.local_addr().unwrap());
        camera.write_all(&recording).unwrap();
        drop(camera);
        daemon.wait_for("stream ended");
        let windows = metric(&admin, "inflor_windows_total", &format!("stream=\"{id}\""));
        assert!(windows > 5, "{windows} windows");
        let file = lines_of(&sink, &id, windows as usize);
        let subject = format!("inflor.{}", id.replace(['/', '.', ':'], "_"));
        (subject, file)
    };

    // The server is up: every window arrives.
    let (subject, first) = push(&mut daemon);
    for (got, line) in before.take(first.len()).iter().zip(&first) {
        assert_eq!(got.0, subject);
        assert_eq!(&got.1, line);
    }
    // It goes away: the daemon notices, keeps running, and counts what it cannot publish.
    server.kill();
    daemon.wait_for("NATS server lost");
    let (_, away) = push(&mut daemon);
    wait_for_metric(
        &admin,
        "inflor_outputs_failed_total",
        "sink=\"nats\"",
        away.len() as u64,
    );
    assert_eq!(metric(&admin, "inflor_nats_connected", ""), 0);
    // It comes back on the same port: the daemon reconnects and publishes again.
    let _server = Server::start(&bin, port);
    let after = Subscriber::new(port, "inflor.>");
    daemon.wait_for("NATS reconnected");
    assert_eq!(metric(&admin, "inflor_nats_connected", ""), 1);
    assert_eq!(metric(&admin, "inflor_nats_disconnects_total", ""), 1);
    let (subject, last) = push(&mut daemon);
    for (got, line) in after.take(last.len()).iter().zip(&last) {
        assert_eq!(got.0, subject);
        assert_eq!(&got.1, line);
    }

    daemon.signal("-TERM");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    let received = (first.len() + last.len()) as u64;
    assert_eq!(s["windows"], (first.len() + away.len() + last.len()) as u64);
    assert_eq!(s["published"], s["windows"], "{s:?}");
    assert_eq!(s["nats_published"], received, "{s:?}");
    assert_eq!(s["nats_dropped"], away.len() as u64, "{s:?}");
    assert_eq!(received + s["nats_dropped"], s["windows"], "{s:?}");
}

#[test]
fn a_server_unreachable_at_start_delays_nothing_and_its_windows_are_counted() {
    // No server is needed: nothing listens on the port, and the daemon must not wait for one.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let sink = dir.path().join("out.jsonl");
    let config = dir.path().join("nats.toml");
    std::fs::write(
        &config,
        format!(
            r#"
model = {model:?}
shutdown_grace_s = 2.0
[admin]
listen = "127.0.0.1:0"
[[streams]]
id = "digits"
source = {{ kind = "file", path = "assets/dvs-digits-0.aedat" }}
[[sinks]]
kind = "file"
path = {sink:?}
[[sinks]]
kind = "nats"
url = "nats://127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    daemon.wait_for("NATS server unreachable at start");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&stderr);
    let windows = whole_lines(&sink).len() as u64;
    assert!(windows > 10, "{s:?}");
    assert_eq!(s["published"], windows, "{s:?}");
    assert_eq!(s["nats_published"], 0, "{s:?}");
    assert_eq!(s["nats_dropped"], windows, "{s:?}");
}

#[test]
fn a_forwarder_that_falls_behind_is_counted_not_disconnected() {
    use inflor::pipeline::Publish;
    let dir = tempfile::tempdir().unwrap();
    let model = stream_model(dir.path());
    let infer = crate::support::run_inflor(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        crate::support::repo_file("assets/dvs-digits-0.aedat")
            .to_str()
            .unwrap(),
    ]);
    let line = String::from_utf8_lossy(&infer.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let mut output: inflor::session::Output = serde_json::from_str(&line).unwrap();
    let mut hub = inflor::sink::Hub::new(2);
    let mut forwarded = hub.forward("test");
    for i in 0..5 {
        output.window = i;
        hub.publish(&output, &line);
    }
    // Two fit, three found the buffer full: counted, and the forwarder stays subscribed.
    assert_eq!(forwarded_overflow(&forwarded), 3);
    assert_eq!(hub.len(), 1);
    assert_eq!(hub.dropped(), 0);
    assert_eq!(forwarded.outputs.try_recv().unwrap().output.window, 0);
    assert_eq!(forwarded.outputs.try_recv().unwrap().output.window, 1);
    output.window = 5;
    hub.publish(&output, &line);
    assert_eq!(forwarded.outputs.try_recv().unwrap().output.window, 5);
    assert_eq!(forwarded_overflow(&forwarded), 3);
    // Closing the hub ends the forwarder's stream.
    hub.close();
    assert!(forwarded.outputs.blocking_recv().is_none());
}

fn forwarded_overflow(f: &inflor::sink::Forwarded) -> u64 {
    f.overflow.load(std::sync::atomic::Ordering::Relaxed)
}
