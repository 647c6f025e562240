//! The live web view: one page at `/` (static files compiled into the binary: `web/index.html`,
//! `web/view.js`, `web/view.css`) and its feed at `/events` (Server-Sent Events). A sink
//! ([`WebSink`]) keeps only the latest output of each stream, with its window's event image,
//! its last predictions and its rates; each browser is sent what changed at most every
//! [`MIN_INTERVAL`]. So the pipeline never waits for a browser and nothing queues for one:
//! a slow page skips windows, it never delays them.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use base64::Engine;
use serde::Serialize;

use crate::binner::SparseFrame;
use crate::pipeline::Publish;
use crate::session::Output;
use crate::telemetry as t;

const INDEX_HTML: &str = include_str!("web/index.html");
const VIEW_JS: &str = include_str!("web/view.js");
const VIEW_CSS: &str = include_str!("web/view.css");

/// Predictions each stream's history keeps (the page lists them newest first).
pub const HISTORY: usize = 20;
/// The shortest time between two updates sent to one browser. Ten a second reads as live,
/// and at 100 windows/s per stream most windows are skipped for display. Each update redraws
/// the page, and the browser often shares the daemon's CPU next to a camera: 20 a second cost
/// headless Chromium about 40% of a core for four streams.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Event images are summed over blocks of pixels down to at most this many pixels a side, so
/// an update stays small whatever the model's input size.
pub const MAX_SIDE: usize = 128;
/// How often the events/s and windows/s figures are recomputed.
const RATE_PERIOD: Duration = Duration::from_secs(1);

/// The `/streams` rows (the pipeline's counters), for the drops and queue depth.
pub type Counters = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The web view's shared state: what the sink writes and the feeds read.
#[derive(Clone)]
pub struct WebView {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<ViewState>,
    /// The state's version, bumped at each output; feeds wait on it.
    changed: tokio::sync::watch::Sender<u64>,
    clients: AtomicUsize,
    closed: AtomicBool,
    max_streams: usize,
    max_clients: usize,
}

#[derive(Default)]
struct ViewState {
    version: u64,
    streams: BTreeMap<String, StreamView>,
}

/// The latest of one stream.
struct StreamView {
    /// The [`ViewState`] version of its last output (so also which stream is the stalest).
    version: u64,
    /// The output's JSON line, as every sink publishes it.
    line: Arc<str>,
    frame: Option<FrameImage>,
    recent: VecDeque<Recent>,
    rate: Rate,
    /// The feed's encoding of this version, made by the first feed that needs it.
    encoded: Option<Arc<str>>,
}

/// One past prediction.
#[derive(Debug, Clone, Serialize)]
struct Recent {
    window: u64,
    class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    logit: f32,
    gap: bool,
}

/// Events and windows per second of wall time, over the last complete [`RATE_PERIOD`].
struct Rate {
    since: Instant,
    events: u64,
    windows: u64,
    events_per_s: f64,
    windows_per_s: f64,
}

impl Rate {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            events: 0,
            windows: 0,
            events_per_s: 0.0,
            windows_per_s: 0.0,
        }
    }

    fn add(&mut self, now: Instant, events: u64) {
        self.events += events;
        self.windows += 1;
        let elapsed = now.duration_since(self.since);
        if elapsed >= RATE_PERIOD {
            let s = elapsed.as_secs_f64();
            self.events_per_s = self.events as f64 / s;
            self.windows_per_s = self.windows as f64 / s;
            *self = Self {
                since: now,
                events: 0,
                windows: 0,
                ..*self
            };
        }
    }
}

/// A window's input summed over its timesteps: one plane of ON and one of OFF, each pixel
/// scaled to 0..=255 (square root of its share of the brightest pixel, so that faint edges
/// stay visible next to hot pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The ON plane then the OFF plane, row-major.
    pub pixels: Vec<u8>,
}

impl FrameImage {
    /// The image of a window's frames; `sum` is scratch kept between calls. None for no frames.
    pub fn of(frames: &[SparseFrame], sum: &mut Vec<f32>) -> Option<Self> {
        let shape = frames.first()?.shape;
        if shape.is_empty() {
            return None;
        }
        let block = shape.height.max(shape.width).div_ceil(MAX_SIDE);
        let (height, width) = (shape.height.div_ceil(block), shape.width.div_ceil(block));
        let plane = shape.height * shape.width;
        let out_plane = height * width;
        sum.clear();
        sum.resize(2 * out_plane, 0.0);
        for f in frames.iter().filter(|f| f.shape == shape) {
            for (&i, &v) in f.indices.iter().zip(&f.values) {
                let i = i as usize;
                let (c, p) = (i / plane, i % plane);
                // The binner puts polarity 1 (ON) in channel 1 and OFF in channel 0; a
                // one-channel input (polarities merged) is drawn as ON.
                let target = match (shape.channels, c) {
                    (1, _) | (_, 1) => 0,
                    (_, 0) => 1,
                    _ => continue,
                };
                let (y, x) = (p / shape.width / block, p % shape.width / block);
                if let Some(s) = sum.get_mut(target * out_plane + y * width + x) {
                    *s += v.abs();
                }
            }
        }
        let peak = sum.iter().copied().fold(0.0f32, f32::max);
        let pixels = sum
            .iter()
            .map(|&v| {
                if peak > 0.0 && v.is_finite() {
                    (255.0 * (v / peak).sqrt()).round() as u8
                } else {
                    0
                }
            })
            .collect();
        Some(Self {
            width,
            height,
            pixels,
        })
    }

    fn json(&self) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (on, off) = self.pixels.split_at(self.width * self.height);
        serde_json::json!({
            "width": self.width,
            "height": self.height,
            "on": b64.encode(on),
            "off": b64.encode(off),
        })
    }
}

impl WebView {
    /// An empty view that tracks at most `max_streams` streams (the least recently updated
    /// is forgotten to make room) and feeds at most `max_clients` browsers at once.
    pub fn new(max_streams: usize, max_clients: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(ViewState::default()),
                changed: tokio::sync::watch::Sender::new(0),
                clients: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                max_streams: max_streams.max(1),
                max_clients: max_clients.max(1),
            }),
        }
    }

    /// The sink that feeds the view (give it to the pipeline with the other sinks).
    pub fn sink(&self) -> WebSink {
        WebSink {
            shared: Arc::clone(&self.shared),
            sum: Vec::new(),
        }
    }

    /// The routes: `/` and its files, and the feed `/events`; `counters` gives the `/streams`
    /// rows for the drops and queue depths.
    pub fn router(&self, counters: Counters) -> Router {
        let feed = Arc::new(FeedContext {
            shared: Arc::clone(&self.shared),
            counters,
        });
        Router::new()
            .route(
                "/",
                get(|| async { file("text/html; charset=utf-8", INDEX_HTML) }),
            )
            .route(
                "/view.js",
                get(|| async { file("text/javascript; charset=utf-8", VIEW_JS) }),
            )
            .route(
                "/view.css",
                get(|| async { file("text/css; charset=utf-8", VIEW_CSS) }),
            )
            .route("/events", get(events))
            .with_state(feed)
    }

    /// Ends every feed (at shutdown, after the last output), so the admin server can stop;
    /// later requests for `/events` end at once.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Browsers connected to the feed now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Streams the view holds.
    pub fn streams(&self) -> usize {
        self.shared.state.lock().map_or(0, |s| s.streams.len())
    }
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The sink side of the view: records each output as its stream's latest.
pub struct WebSink {
    shared: Arc<Shared>,
    sum: Vec<f32>,
}

impl Publish for WebSink {
    fn publish(&mut self, output: &Output, line: &str) {
        // The image is made here, on the publisher thread, from frames the output carries
        // anyway; a feed only encodes it, at its own pace.
        let frame = output
            .frames
            .as_deref()
            .and_then(|f| FrameImage::of(f, &mut self.sum));
        let now = Instant::now();
        let recent = Recent {
            window: output.window,
            class: output.class.clone(),
            label: output.label.clone(),
            logit: output.top_k.first().map_or(0.0, |s| s.logit),
            gap: output.gap,
        };
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        state.version += 1;
        let version = state.version;
        if !state.streams.contains_key(&output.stream)
            && state.streams.len() >= self.shared.max_streams
            && let Some(oldest) = state
                .streams
                .iter()
                .min_by_key(|(_, v)| v.version)
                .map(|(k, _)| k.clone())
        {
            state.streams.remove(&oldest);
        }
        let view = match state.streams.get_mut(&output.stream) {
            Some(v) => v,
            None => state
                .streams
                .entry(output.stream.clone())
                .or_insert_with(|| StreamView {
                    version,
                    line: Arc::from(""),
                    frame: None,
                    recent: VecDeque::with_capacity(HISTORY),
                    rate: Rate::new(now),
                    encoded: None,
                }),
        };
        view.version = version;
        view.line = Arc::from(line);
        view.frame = frame;
        if view.recent.len() == HISTORY {
            view.recent.pop_back();
        }
        view.recent.push_front(recent);
        view.rate.add(now, output.events);
        view.encoded = None;
        drop(state);
        self.shared.changed.send_replace(version);
    }

    fn flush(&mut self) {}
}

struct FeedContext {
    shared: Arc<Shared>,
    counters: Counters,
}

/// One browser's feed: what it was last sent of each stream, and when it may be sent more.
struct Feed {
    context: Arc<FeedContext>,
    changed: tokio::sync::watch::Receiver<u64>,
    sent: BTreeMap<String, u64>,
    next_at: Option<tokio::time::Instant>,
}

impl Feed {
    /// A feed, or None when `max_clients` browsers are fed already.
    fn new(context: Arc<FeedContext>) -> Option<Self> {
        let shared = &context.shared;
        let n = shared
            .clients
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < shared.max_clients).then_some(n + 1)
            })
            .ok()?
            + 1;
        metrics::gauge!(t::SUBSCRIBERS, "sink" => "web").set(n as f64);
        let mut changed = shared.changed.subscribe();
        // What is there already goes out at once.
        changed.mark_changed();
        Some(Self {
            context,
            changed,
            sent: BTreeMap::new(),
            next_at: None,
        })
    }

    fn closed(&self) -> bool {
        self.context.shared.closed.load(Ordering::Acquire)
    }

    /// The next update: waits for a change, no sooner than [`MIN_INTERVAL`] after the last
    /// update. None once the view is closed.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.next_at {
                tokio::time::sleep_until(at).await;
            }
            if self.closed() {
                return None;
            }
            self.changed.changed().await.ok()?;
            if self.closed() {
                return None;
            }
            self.next_at = Some(tokio::time::Instant::now() + MIN_INTERVAL);
            if let Some(update) = self.update() {
                return Some(update);
            }
        }
    }

    /// `{"ids": [every stream], "streams": [those changed since the last update],
    /// "counters": {id: {...}}}`, or None when nothing changed.
    fn update(&mut self) -> Option<String> {
        let mut ids = Vec::new();
        let mut changed: Vec<Arc<str>> = Vec::new();
        {
            let mut state = self.context.shared.state.lock().ok()?;
            for (id, view) in state.streams.iter_mut() {
                ids.push(id.clone());
                if self.sent.get(id) == Some(&view.version) {
                    continue;
                }
                self.sent.insert(id.clone(), view.version);
                let encoded = match &view.encoded {
                    Some(e) => Arc::clone(e),
                    None => {
                        let e: Arc<str> = Arc::from(encode(id, view));
                        view.encoded = Some(Arc::clone(&e));
                        e
                    }
                };
                changed.push(encoded);
            }
            self.sent.retain(|id, _| state.streams.contains_key(id));
        }
        if changed.is_empty() {
            return None;
        }
        let counters = counters(&(self.context.counters)(), &ids);
        let mut out =
            String::with_capacity(changed.iter().map(|s| s.len() + 1).sum::<usize>() + 256);
        out.push_str("{\"ids\":");
        out.push_str(&serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
        out.push_str(",\"counters\":");
        out.push_str(&counters.to_string());
        out.push_str(",\"streams\":[");
        for (i, s) in changed.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(s);
        }
        out.push_str("]}");
        Some(out)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let n = self
            .context
            .shared
            .clients
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!(t::SUBSCRIBERS, "sink" => "web").set(n as f64);
    }
}

/// One stream's part of an update: its latest output (the JSON line itself), image, recent
/// predictions and rates.
fn encode(id: &str, view: &StreamView) -> String {
    let head = serde_json::json!({
        "stream": id,
        "frame": view.frame.as_ref().map(FrameImage::json),
        "recent": view.recent,
        "events_per_s": view.rate.events_per_s,
        "windows_per_s": view.rate.windows_per_s,
    })
    .to_string();
    // The line is already a JSON object: spliced in rather than parsed and written again.
    let mut s = String::with_capacity(head.len() + view.line.len() + 16);
    s.push_str(&head[..head.len() - 1]);
    s.push_str(",\"output\":");
    s.push_str(if view.line.is_empty() {
        "null"
    } else {
        &view.line
    });
    s.push('}');
    s
}

/// The counters the page shows, by stream id, from the `/streams` rows.
fn counters(rows: &serde_json::Value, ids: &[String]) -> serde_json::Value {
    const KEEP: [&str; 6] = [
        "events_received",
        "events_rate_limited",
        "events_dropped",
        "windows_dropped",
        "queue_depth",
        "connected",
    ];
    let mut out = serde_json::Map::new();
    for row in rows.as_array().into_iter().flatten() {
        let Some(id) = row.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        if !ids.iter().any(|i| i == id) {
            continue;
        }
        let picked: serde_json::Map<String, serde_json::Value> = KEEP
            .iter()
            .filter_map(|k| row.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        out.insert(id.to_owned(), serde_json::Value::Object(picked));
    }
    serde_json::Value::Object(out)
}

async fn events(State(context): State<Arc<FeedContext>>) -> axum::response::Response {
    let Some(feed) = Feed::new(context) else {
        metrics::counter!(t::CONNECTIONS_REFUSED, "listener" => "web").increment(1);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many web view clients (limits.max_connections)\n",
        )
            .into_response();
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let update = feed.next().await?;
        Some((
            Ok::<_, Infallible>(Event::default().event("update").data(update)),
            feed,
        ))
    });
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::binner::FrameShape;

    /// Longest a test waits for the server.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn output(stream: &str, window: u64, frames: Option<Vec<SparseFrame>>) -> Output {
        let mut o: Output = serde_json::from_value(serde_json::json!({
            "stream": stream, "window": window, "start_us": 0, "end_us": 10, "events": 5,
            "predicted": 1, "class": "one", "top_k": [{"class": 1, "name": "one", "logit": 0.5}],
            "logits": [0.1, 0.5], "gap": false, "complete": true, "executor": "event",
            "label": "zero",
            "stats": {"timesteps": 2, "spikes": 3, "firing_rate": 0.1, "synaptic_ops": 7,
                "dense_macs": 9, "performed_ops": 7, "neuron_updates": 2,
                "neuron_updates_total": 4, "energy_pj": 1.5, "dense_energy_pj": 2.5,
                "layers": []},
            "latency": {"compute_us": 1.0, "end_to_end_us": 2.0},
        }))
        .unwrap();
        o.frames = frames;
        o
    }

    /// Two 2×4×4 bins: ON events at (y 1, x 2), three of them; one OFF event at (3, 0).
    fn frames() -> Vec<SparseFrame> {
        let shape = FrameShape {
            channels: 2,
            height: 4,
            width: 4,
        };
        let mut a = SparseFrame::empty(shape);
        a.indices = vec![shape.index(0, 3, 0) as u32, shape.index(1, 1, 2) as u32];
        a.values = vec![1.0, 1.0];
        let mut b = SparseFrame::empty(shape);
        b.indices = vec![shape.index(1, 1, 2) as u32];
        b.values = vec![2.0];
        vec![a, b]
    }

    fn publish(sink: &mut WebSink, o: &Output) {
        sink.publish(o, &serde_json::to_string(o).unwrap());
    }

    /// Serves `view`'s routes on 127.0.0.1 port 0 on a runtime of its own; returns the address.
    fn serve(view: &WebView) -> (tokio::runtime::Runtime, String) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let counters: Counters = Arc::new(|| {
            serde_json::json!([{"id": "cam", "events_dropped": 4, "windows_dropped": 1,
                "queue_depth": 0, "source": "not shown"}])
        });
        let router = view.router(counters);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(async move { axum::serve(listener, router).await });
        (rt, addr)
    }

    fn get(addr: &str, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_ascii_lowercase(), body.to_owned())
    }

    /// A plain HTTP/1.1 reader of `/events`: chunked transfer decoding, then SSE framing.
    struct Events {
        r: BufReader<TcpStream>,
        text: String,
        ended: bool,
    }

    impl Events {
        fn open(addr: &str) -> Self {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
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
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            Self {
                r,
                text: String::new(),
                ended: false,
            }
        }

        /// Reads one chunk; false at the last one.
        fn chunk(&mut self) -> bool {
            let mut size = String::new();
            self.r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut data = vec![0; n + 2];
            self.r.read_exact(&mut data).unwrap();
            assert!(data.ends_with(b"\r\n"));
            self.text
                .push_str(std::str::from_utf8(&data[..n]).expect("UTF-8 events"));
            n > 0
        }

        /// The next event with data, as (event name, data); None once the response has ended.
        fn next(&mut self) -> Option<(String, String)> {
            loop {
                if let Some(end) = self.text.find("\n\n") {
                    let block: String = self.text.drain(..end + 2).collect();
                    let mut event = String::from("message");
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            event = v.to_owned();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push(v);
                        } else {
                            // Keep-alive comments only; anything else is malformed.
                            assert!(line.is_empty() || line.starts_with(':'), "{line:?}");
                        }
                    }
                    if !data.is_empty() {
                        return Some((event, data.join("\n")));
                    }
                    continue;
                }
                if self.ended || !self.chunk() {
                    self.ended = true;
                    return None;
                }
            }
        }

        fn update(&mut self) -> serde_json::Value {
            let (event, data) = self.next().expect("an update");
            assert_eq!(event, "update");
            serde_json::from_str(&data).expect("an update is one JSON document")
        }
    }

    #[test]
    fn the_page_and_its_files_are_served_from_the_binary() {
        let view = WebView::new(4, 4);
        let (_rt, addr) = serve(&view);
        let (head, body) = get(&addr, "/");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert_eq!(body, INDEX_HTML);
        assert!(body.contains("<canvas") && body.contains("src=\"view.js\""));
        // Nothing the page loads comes from elsewhere.
        assert!(!body.contains("http://") && !body.contains("https://"));
        let (head, body) = get(&addr, "/view.js");
        assert!(head.contains("content-type: text/javascript"), "{head}");
        assert_eq!(body, VIEW_JS);
        assert!(VIEW_JS.contains("new EventSource(\"events\")"));
        assert!(VIEW_JS.contains("requestAnimationFrame"));
        let (head, body) = get(&addr, "/view.css");
        assert!(head.contains("content-type: text/css"), "{head}");
        assert_eq!(body, VIEW_CSS);
    }

    #[test]
    fn the_feed_carries_each_streams_latest_output_its_image_and_history() {
        let view = WebView::new(4, 4);
        let mut sink = view.sink();
        let first = output("cam", 0, Some(frames()));
        publish(&mut sink, &first);
        let (_rt, addr) = serve(&view);
        let mut events = Events::open(&addr);
        // What is there already comes at once.
        let u = events.update();
        assert_eq!(u["ids"], serde_json::json!(["cam"]));
        assert_eq!(u["counters"]["cam"]["events_dropped"], 4);
        assert_eq!(u["counters"]["cam"]["windows_dropped"], 1);
        assert!(u["counters"]["cam"].get("source").is_none());
        let s = &u["streams"][0];
        assert_eq!(s["stream"], "cam");
        let back: Output = serde_json::from_value(s["output"].clone()).unwrap();
        assert_eq!(
            back,
            Output {
                frames: None,
                ..first
            }
        );
        let f = &s["frame"];
        assert_eq!(
            (f["width"].as_u64(), f["height"].as_u64()),
            (Some(4), Some(4))
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let on = b64.decode(f["on"].as_str().unwrap()).unwrap();
        let off = b64.decode(f["off"].as_str().unwrap()).unwrap();
        assert_eq!((on.len(), off.len()), (16, 16));
        assert_eq!(on[4 + 2], 255);
        // One OFF event against the peak of three: √(1/3) of full scale.
        assert_eq!(off[12], 147);
        assert_eq!(on.iter().chain(&off).filter(|&&p| p > 0).count(), 2);
        assert_eq!(s["recent"][0]["window"], 0);
        assert_eq!(s["recent"][0]["label"], "zero");

        // Many windows at once: the browser gets the latest, not each one.
        let last = 500;
        for w in 1..=last {
            publish(&mut sink, &output("cam", w, Some(frames())));
        }
        let mut updates = 0;
        let s = loop {
            let u = events.update();
            updates += 1;
            let s = u["streams"][0].clone();
            if s["output"]["window"] == last {
                break s;
            }
        };
        assert!(updates < last, "{updates} updates for {last} windows");
        let recent: Vec<u64> = s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["window"].as_u64().unwrap())
            .collect();
        assert_eq!(
            recent,
            (last + 1 - HISTORY as u64..=last).rev().collect::<Vec<_>>()
        );
        assert_eq!(view.clients(), 1);

        // Closing the view ends the feed, and a later request at once.
        view.close();
        assert!(events.next().is_none());
        assert!(Events::open(&addr).next().is_none());
    }

    #[test]
    fn a_browser_that_stops_reading_never_holds_the_sink_up() {
        let view = WebView::new(4, 4);
        let mut sink = view.sink();
        let (_rt, addr) = serve(&view);
        let mut stalled = Events::open(&addr);
        publish(&mut sink, &output("cam", 0, Some(frames())));
        stalled.update();
        // It reads nothing more while a large image is published over and over (more than
        // any socket buffer holds if each were sent).
        let shape = FrameShape {
            channels: 2,
            height: 128,
            width: 128,
        };
        let all: Vec<u32> = (0..shape.len() as u32).collect();
        let big = vec![SparseFrame {
            shape,
            values: vec![1.0; all.len()],
            indices: all,
        }];
        for w in 1..=2000 {
            publish(&mut sink, &output("cam", w, Some(big.clone())));
        }
        assert_eq!(view.streams(), 1);
        view.close();
        // What it finally reads ends with the view closed, however far behind it was.
        let mut windows = Vec::new();
        while let Some((_, data)) = stalled.next() {
            let u: serde_json::Value = serde_json::from_str(&data).unwrap();
            windows.push(u["streams"][0]["output"]["window"].as_u64().unwrap());
        }
        assert!(windows.len() < 2000, "{} updates", windows.len());
    }

    #[test]
    fn browsers_beyond_the_limit_are_refused() {
        let view = WebView::new(4, 1);
        let mut sink = view.sink();
        publish(&mut sink, &output("cam", 0, None));
        let (_rt, addr) = serve(&view);
        let mut first = Events::open(&addr);
        assert_eq!(first.update()["streams"][0]["output"]["window"], 0);
        let (head, body) = get(&addr, "/events");
        assert!(head.starts_with("http/1.1 503"), "{head}");
        assert!(body.contains("limits.max_connections"), "{body}");
        // The page itself is still served.
        assert!(get(&addr, "/").0.starts_with("http/1.1 200"));
        assert_eq!(view.clients(), 1);
    }

    #[test]
    fn images_pool_large_inputs_and_merged_polarities_draw_as_on() {
        let mut sum = Vec::new();
        let shape = FrameShape {
            channels: 2,
            height: 300,
            width: 200,
        };
        let mut f = SparseFrame::empty(shape);
        f.indices = vec![shape.index(1, 299, 199) as u32];
        f.values = vec![1.0];
        let img = FrameImage::of(&[f], &mut sum).unwrap();
        // Blocks of 3×3: 100 rows of 67 columns.
        assert_eq!((img.width, img.height), (67, 100));
        assert_eq!(img.pixels.len(), 2 * 67 * 100);
        assert_eq!(img.pixels[99 * 67 + 66], 255);
        let mono = FrameShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let mut f = SparseFrame::empty(mono);
        f.indices = vec![3];
        f.values = vec![0.5];
        let img = FrameImage::of(&[f], &mut sum).unwrap();
        assert_eq!(img.pixels, vec![0, 0, 0, 255, 0, 0, 0, 0]);
        assert!(FrameImage::of(&[], &mut sum).is_none());
    }

    #[test]
    fn the_view_keeps_at_most_its_stream_limit_forgetting_the_stalest() {
        let view = WebView::new(2, 2);
        let mut sink = view.sink();
        for s in ["a", "b", "a", "c"] {
            publish(&mut sink, &output(s, 0, None));
        }
        let state = view.shared.state.lock().unwrap();
        let ids: Vec<&str> = state.streams.keys().map(String::as_str).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(state.streams["a"].frame.is_none());
        assert_eq!(state.streams["a"].recent.len(), 2);
    }
}
