//! The live web view in a real browser: headless Chromium, driven through chromedriver (W3C
//! WebDriver over plain HTTP on loopback), loads `/` from `inflor run`'s embedded default and
//! sees each bundled stream's frame drawn and its predicted class appear, with the true label,
//! then move on to later windows; SIGINT with the page still open drains and exits 0. Without a
//! browser: a plain HTTP client reads the page and every stream's output and image from the
//! feed, and `[admin] web = false` serves neither.
//! Skipped without `chromium` and `chromedriver` on the PATH (Debian's `chromium` and
//! `chromium-driver`), except under env CI, where their absence is a failure.
//! `INFLOR_WEB_SCREENSHOT=PATH` saves what the browser shows (docs/web-view.png is made so).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::daemon::{PATIENCE, Process};

/// Chromium and chromedriver from the PATH, or None (and the test is skipped) when either is
/// missing outside CI.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if let (Some(chromium), Some(driver)) = (find("chromium"), find("chromedriver")) {
        return Some((chromium, driver));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium and chromedriver are missing and CI is set (.ci/run installs Debian's \
         chromium and chromium-driver)"
    );
    eprintln!("skipped: needs chromium and chromedriver (Debian: chromium chromium-driver)");
    None
}

/// One HTTP/1.1 exchange with `addr`; returns the status and the body.
fn http(addr: &str, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
    exchange(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
}

fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver may keep the connection open: the body is read by its length.
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the response ended in its head"));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|n| n.trim().parse::<usize>().map_err(|_| bad("a bad length")))
        .transpose()?;
    let mut bytes = Vec::new();
    match length {
        Some(n) => {
            bytes.resize(n, 0);
            r.read_exact(&mut bytes)?;
        }
        None if head.contains("transfer-encoding: chunked") => loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("a bad chunk"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        },
        None => {
            r.read_to_end(&mut bytes)?;
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("a response that is not UTF-8"))?;
    Ok((status, text))
}

/// A chromedriver process and one headless Chromium session.
struct Driver {
    child: Child,
    addr: String,
    /// Empty until the session is made (a failed start still ends chromedriver).
    session: String,
    profile: tempfile::TempDir,
}

impl Driver {
    fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let mut driver = Self {
            child: Command::new(chromedriver)
                .arg("--port=0")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
            addr: String::new(),
            session: String::new(),
            profile: tempfile::tempdir().unwrap(),
        };
        let (tx, lines) = mpsc::channel();
        let stdout = driver.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let needle = "started successfully on port ";
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("chromedriver says which port it took");
            if let Some(i) = line.find(needle) {
                break line[i + needle.len()..].trim_end_matches('.').to_owned();
            }
        };
        driver.addr = format!("127.0.0.1:{port}");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1100",
                    format!("--user-data-dir={}", driver.profile.path().display())],
            },
        }}});
        let (status, body) = http(&driver.addr, "POST", "/session", Some(&caps));
        assert_eq!(status, 200, "a browser session: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        driver.session = v["value"]["sessionId"].as_str().unwrap().to_owned();
        driver
    }

    /// A WebDriver command on the session; returns its `value`.
    fn call(&self, method: &str, what: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let path = format!("/session/{}/{what}", self.session);
        let (status, text) = http(&self.addr, method, &path, body.as_ref());
        assert_eq!(status, 200, "{method} {what}: {text}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["value"].take()
    }

    fn script(&self, js: &str) -> serde_json::Value {
        self.call(
            "POST",
            "execute/sync",
            Some(serde_json::json!({"script": js, "args": []})),
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = exchange(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows of each stream, read from its DOM and canvas.
const STATE: &str = r#"
return {
  status: document.getElementById("status").textContent,
  streams: Array.from(document.querySelectorAll("section.stream")).map((s) => {
    const c = s.querySelector("canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) lit++;
    return {
      stream: s.dataset.stream,
      window: Number(s.dataset.window),
      predicted: s.querySelector(".predicted").textContent,
      truth: s.querySelector(".truth").textContent,
      topk: s.querySelectorAll(".topk li").length,
      layers: s.querySelectorAll(".layers > div").length,
      recent: s.querySelectorAll(".recent li").length,
      figures: s.querySelector(".figures").textContent,
      lit,
    };
  }),
};
"#;

/// Polls the page until `done` holds of what it shows; fails after [`PATIENCE`].
fn until(
    driver: &Driver,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = driver.script(STATE);
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; it shows {state:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn chromium_shows_each_streams_frame_and_class_updating_live() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let mut daemon = Process::start_with_env(&["run"], &[("INFLOR_ADMIN", "127.0.0.1:0")]);
    let admin = daemon.address("admin on http://");
    daemon.wait_for(&format!("web view on http://{admin}/"));
    let driver = Driver::start(&chromium, &chromedriver);
    driver.call(
        "POST",
        "url",
        Some(serde_json::json!({"url": format!("http://{admin}/")})),
    );
    let digits = ["0", "3", "7", "9"];
    let first = until(&driver, "every bundled stream's class and frame", |s| {
        let streams = s["streams"].as_array().unwrap();
        streams.len() == digits.len()
            && streams.iter().all(|c| {
                !c["predicted"].as_str().unwrap().is_empty() && c["lit"].as_u64() > Some(0)
            })
    });
    assert_eq!(first["status"], "live");
    for (card, digit) in first["streams"].as_array().unwrap().iter().zip(digits) {
        assert_eq!(card["stream"], format!("bundled-{digit}"), "{card}");
        let predicted = card["predicted"].as_str().unwrap();
        assert!(
            predicted.len() == 1 && predicted.chars().all(|c| c.is_ascii_digit()),
            "{card}"
        );
        assert_eq!(card["truth"], format!("true: {digit}"), "{card}");
        assert_eq!(card["topk"], 5, "{card}");
        assert!(card["layers"].as_u64() > Some(0), "{card}");
        assert!(card["recent"].as_u64() > Some(0), "{card}");
        for figure in [
            "events/s",
            "windows/s",
            "compute",
            "end to end",
            "dropped win / ev",
        ] {
            assert!(card["figures"].as_str().unwrap().contains(figure), "{card}");
        }
    }
    // Later windows replace the first ones on every card.
    let seen: Vec<u64> = first["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["window"].as_u64().unwrap())
        .collect();
    until(&driver, "later windows on every card", |s| {
        let streams = s["streams"].as_array().unwrap();
        streams.len() == seen.len()
            && streams.iter().zip(&seen).all(|(c, &w)| {
                c["window"].as_u64() > Some(w) && !c["predicted"].as_str().unwrap().is_empty()
            })
    });
    if let Some(path) = std::env::var_os("INFLOR_WEB_SCREENSHOT") {
        // A few seconds in, so that the rates and the history have filled.
        until(&driver, "a full history", |s| {
            s["streams"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["recent"].as_u64() >= Some(12))
        });
        driver.call(
            "POST",
            "window/rect",
            Some(serde_json::json!({"width": 1400, "height": 780})),
        );
        let png = driver.call("GET", "screenshot", None);
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    // The open page does not hold the shutdown up: its feed ends with the drain.
    daemon.signal("-INT");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
}

/// Reads `/events` at `admin` with a plain HTTP/1.1 client (chunked transfer, then SSE
/// framing) until `done` returns true of an `update` event.
fn feed_until(admin: &str, mut done: impl FnMut(&serde_json::Value) -> bool) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let mut text = String::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            assert!(block.starts_with("event: update\n"), "{block}");
            let update: serde_json::Value = serde_json::from_str(data).unwrap();
            if done(&update) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no such update in time");
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        assert!(n > 0, "the feed ended");
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).unwrap();
        text.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
    }
}

#[test]
fn the_embedded_default_serves_the_page_and_its_feed_and_web_false_turns_them_off() {
    let mut daemon = Process::start_with_env(&["run"], &[("INFLOR_ADMIN", "127.0.0.1:0")]);
    let admin = daemon.address("admin on http://");
    let (status, page) = http(&admin, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<canvas") && page.contains("view.js"),
        "{page}"
    );
    // Every bundled stream, each with its output (true label included) and its image; an
    // update carries the streams that changed since the one before.
    let mut latest = std::collections::BTreeMap::new();
    let mut counters = serde_json::Value::Null;
    feed_until(&admin, |u| {
        // Streams appear as their first windows are classified.
        let ids = u["ids"].as_array().unwrap();
        let all = ["bundled-0", "bundled-3", "bundled-7", "bundled-9"];
        assert!(
            ids.iter().all(|i| all.contains(&i.as_str().unwrap())),
            "{u}"
        );
        for s in u["streams"].as_array().unwrap() {
            latest.insert(s["stream"].as_str().unwrap().to_owned(), s.clone());
        }
        counters = u["counters"].clone();
        latest.len() == 4
    });
    for s in latest.values() {
        let digit = s["stream"]
            .as_str()
            .unwrap()
            .strip_prefix("bundled-")
            .unwrap();
        assert_eq!(s["output"]["label"], digit, "{s}");
        assert_eq!(s["output"]["top_k"].as_array().unwrap().len(), 5);
        assert_eq!(
            (s["frame"]["width"].as_u64(), s["frame"]["height"].as_u64()),
            (Some(32), Some(32))
        );
        assert_eq!(
            counters[s["stream"].as_str().unwrap()]["windows_dropped"],
            0
        );
    }
    daemon.signal("-INT");
    assert_eq!(daemon.wait().0, 0);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-web.toml");
    std::fs::write(
        &config,
        r#"
[admin]
listen = "127.0.0.1:0"
web = false

[[streams]]
id = "digits"
source = { kind = "file", path = "assets/dvs-digits-0.aedat", speed = 1.0, loop = true }

[[sinks]]
kind = "stdout"
format = "json"
"#,
    )
    .unwrap();
    let mut daemon = Process::start(&["run", config.to_str().unwrap()]);
    let admin = daemon.address("admin on http://");
    daemon.wait_for("ready");
    assert_eq!(http(&admin, "GET", "/", None).0, 404);
    assert_eq!(http(&admin, "GET", "/events", None).0, 404);
    assert_eq!(http(&admin, "GET", "/healthz", None).0, 200);
    daemon.signal("-INT");
    let (code, stderr) = daemon.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("web view on"), "{stderr}");
}
