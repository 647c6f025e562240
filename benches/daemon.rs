//! The daemon end to end: `inflor serve-events` over loopback is the camera, `inflor run` the
//! daemon under test; both are the release binary, run as separate processes.
//!
//! Run: `cargo bench --bench daemon` (about 3 minutes; `-- --quick` halves each phase).
//! It prints one line per scenario:
//! - **throughput**: the camera sends as fast as the daemon reads (`--unpaced`, `block`), for
//!   `tiny` (the bundled model) and `resnet20` (random weights, 2×48×48), on 1 and 2 workers;
//!   events/s is what the daemon received and classified per second of wall time;
//! - **latency**: the camera is paced at 1 M and 10 M events/s (the bundled recording replayed
//!   faster than real time), `drop_oldest`, 100 windows/s; p50/p99 of each window's
//!   end-to-end latency (from the arrival of its last event to its output being ready, the
//!   `latency.end_to_end_us` of every output), and the drops;
//! - **fleet**: 16 streams at 1 M events/s each on 2 workers (tiny), drops counted, and the
//!   peak resident memory (VmHWM) of the daemon with 1 and 16 streams, for tiny and resnet19.
//!
//! Windows are bins of a fixed event count, T = 10 bins per window. Windows published after
//! the warm-up are the ones measured. Stream time runs faster than wall time in the paced
//! scenarios, so the windows/s figures are of wall time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_inflor");
/// The bundled recording: 32 481 events over 1.0 s.
const RECORDING_RATE: f64 = 32_481.0 / 0.999_612;

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("INFLOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("inflor starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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

    fn address(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no {prefix:?} line; stderr:\n{}", self.seen.join("\n"))
            });
            self.seen.push(line.clone());
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..]
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_owned();
            }
        }
    }

    /// Peak resident set size so far, MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// SIGTERM, then the summary line's counts.
    fn stop(mut self) -> std::collections::HashMap<String, u64> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.seen.extend(self.lines.try_iter());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let line = self
            .seen
            .iter()
            .find(|l| l.contains("inflor: stopped:"))
            .unwrap_or_else(|| panic!("no summary; stderr:\n{}", self.seen.join("\n")));
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Scenario<'a> {
    name: String,
    model: &'a Path,
    workers: usize,
    streams: usize,
    /// `None`: unpaced; otherwise events/s offered per stream.
    rate: Option<f64>,
    events_per_bin: u64,
    warmup: Duration,
    measure: Duration,
}

struct Outcome {
    events_per_s: f64,
    windows_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    windows: u64,
    windows_dropped: u64,
    events_dropped: u64,
    peak_rss_mib: f64,
}

fn run(dir: &Path, s: &Scenario) -> Outcome {
    let mut camera_args = vec![
        "serve-events".to_owned(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--loop".into(),
        "--max-clients".into(),
        s.streams.to_string(),
    ];
    match s.rate {
        None => camera_args.push("--unpaced".into()),
        Some(rate) => {
            camera_args.push("--speed".into());
            camera_args.push(format!("{}", rate / RECORDING_RATE));
        }
    }
    let camera_args: Vec<&str> = camera_args.iter().map(String::as_str).collect();
    let mut camera = Proc::start(&camera_args);
    let camera_addr = camera.address("serving events on ");
    let outputs = dir.join(format!("{}.jsonl", s.name.replace(['/', ' '], "_")));
    let _ = std::fs::remove_file(&outputs);
    let backpressure = if s.rate.is_none() {
        "block"
    } else {
        "drop_oldest"
    };
    // The grace period covers draining the queued windows at the end: 16 resnet19 streams
    // queue 64 windows of about a second each, more than the default 10 s. The bench measures
    // the steady state, not how fast a loaded daemon stops.
    let mut config = format!(
        "model = {:?}\nworkers = {}\nshutdown_grace_s = 180.0\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"text\"\n\
         [limits]\nqueue_windows = 4\n[[sinks]]\nkind = \"file\"\npath = {:?}\n",
        s.model.display().to_string(),
        s.workers,
        outputs.display().to_string()
    );
    for i in 0..s.streams {
        config.push_str(&format!(
            "[[streams]]\nid = \"cam{i}\"\nsource = {{ kind = \"dv_tcp\", address = \"{camera_addr}\" }}\n\
             window = \"count:{}\"\nbackpressure = \"{backpressure}\"\n",
            s.events_per_bin
        ));
    }
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config).expect("config written");
    let mut daemon = Proc::start(&["run", config_path.to_str().expect("utf-8 path")]);
    daemon.address("admin on http://");
    std::thread::sleep(s.warmup);
    let start_windows = lines(&outputs).len();
    let t0 = Instant::now();
    std::thread::sleep(s.measure);
    let measured: Vec<serde_json::Value> = lines(&outputs).split_off(start_windows);
    let wall = t0.elapsed().as_secs_f64();
    let peak_rss_mib = daemon.peak_rss_mib();
    let summary = daemon.stop();
    drop(camera);
    let events: u64 = measured
        .iter()
        .map(|o| o["events"].as_u64().unwrap_or(0))
        .sum();
    let mut latencies: Vec<f64> = measured
        .iter()
        .filter_map(|o| o["latency"]["end_to_end_us"].as_f64())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() as f64 - 1.0) * q).round() as usize] / 1e3
        }
    };
    Outcome {
        events_per_s: events as f64 / wall,
        windows_per_s: measured.len() as f64 / wall,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        windows: summary.get("windows").copied().unwrap_or(0),
        windows_dropped: summary.get("windows_dropped").copied().unwrap_or(0),
        events_dropped: summary.get("events_dropped").copied().unwrap_or(0),
        peak_rss_mib,
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line being written is incomplete; it is counted in the next read.
        .map_while(|l| serde_json::from_str(l).ok())
        .collect()
}

fn model_init(dir: &Path, arch: &str) -> PathBuf {
    let path = dir.join(format!("{arch}.safetensors"));
    if !path.exists() {
        let ok = Command::new(BIN)
            .args(["model", "init", "--arch", arch, "--classes", "10"])
            .args([
                "--input",
                "2x48x48",
                "--seed",
                "1",
                "--window",
                "count:10000",
            ])
            .arg(&path)
            .status()
            .expect("inflor model init runs")
            .success();
        assert!(ok, "model init {arch}");
    }
    path
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--quick` may follow.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned();
    let phase = |s: u64| Duration::from_secs(if quick { s.div_ceil(2) } else { s });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-bench");
    std::fs::create_dir_all(&dir).expect("bench folder");
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-dvs-digits.safetensors");
    let resnet20 = model_init(&dir, "resnet20");
    let resnet19 = model_init(&dir, "resnet19");
    println!(
        "cpu: {}; load before: {}",
        cpu_name(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut scenarios = Vec::new();
    for (arch, model) in [("tiny", &tiny), ("resnet20", &resnet20)] {
        for workers in [1, 2] {
            scenarios.push(Scenario {
                name: format!("throughput/{arch}/{workers}w"),
                model,
                workers,
                streams: 1,
                rate: None,
                events_per_bin: 10_000,
                warmup: phase(3),
                measure: phase(8),
            });
        }
    }
    for rate in [1e6, 1e7] {
        scenarios.push(Scenario {
            name: format!("latency/tiny/1w/{}M", rate / 1e6),
            model: &tiny,
            workers: 1,
            streams: 1,
            rate: Some(rate),
            events_per_bin: (rate / 1000.0) as u64,
            warmup: phase(3),
            measure: phase(10),
        });
    }
    for (arch, model) in [("tiny", &tiny), ("resnet19", &resnet19)] {
        for streams in [1, 16] {
            scenarios.push(Scenario {
                name: format!("fleet/{arch}/2w/{streams}x1M"),
                model,
                workers: 2,
                streams,
                rate: Some(1e6),
                events_per_bin: 10_000,
                warmup: phase(3),
                measure: phase(8),
            });
        }
    }
    for s in scenarios
        .iter()
        .filter(|s| filter.as_ref().is_none_or(|f| s.name.contains(f.as_str())))
    {
        let o = run(&dir, s);
        println!(
            "{:<28} {:>12.0} events/s {:>7.1} windows/s  e2e p50 {:>7.2} ms p99 {:>7.2} ms  \
             windows {} dropped {} (events dropped {})  peak RSS {:.1} MiB",
            s.name,
            o.events_per_s,
            o.windows_per_s,
            o.p50_ms,
            o.p99_ms,
            o.windows,
            o.windows_dropped,
            o.events_dropped,
            o.peak_rss_mib
        );
    }
    println!(
        "load after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let flags: Vec<&str> = ["avx2", "avx512f", "avx512_vnni", "amx_tile"]
        .into_iter()
        .filter(|f| info.split_whitespace().any(|w| w == *f))
        .collect();
    format!("{name} ({}), {} cpus", flags.join(" "), num_cpus())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
