//! `inflor replay` as fast as possible on the DVS-Digits test split: recordings/s, events/s and
//! the real-time factor, for the bundled model and a `resnet20`, on 1 and 2 threads.
//!
//! Run: `cargo bench --bench replay` (about 3 minutes on 2 cores). The dataset is
//! `$INFLOR_DVS_DIGITS`, else `../dvs-digits` beside the repository, else it is generated once
//! into `target/bench-dvs-digits` (`inflor synth`, about 2 minutes). `resnet20` has random
//! weights with calibrated firing (`inflor model init`), so only its speed means anything.
//!
//! Each scenario is the release binary in its own process, so the CPU time quoted is the whole
//! process's (user + system, from the parent's children times): "per core" divides the
//! recorded duration by CPU seconds, which is what "N× real time on one core" means.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_inflor");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn inflor(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("INFLOR_LOG", "warn")
        .output()
        .expect("inflor starts");
    assert!(
        out.status.success(),
        "inflor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dataset() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFLOR_DVS_DIGITS") {
        return PathBuf::from(dir);
    }
    let beside = root().join("../dvs-digits");
    if beside.join("split.txt").exists() {
        return beside;
    }
    let made = root().join("target/bench-dvs-digits");
    if !made.join("split.txt").exists() {
        let _ = std::fs::remove_dir_all(&made);
        eprintln!("generating DVS-Digits into {}", made.display());
        inflor(&[
            "synth",
            "--digits",
            "assets/digits.csv.gz",
            "--out",
            made.to_str().expect("UTF-8 path"),
            "--seed",
            "1",
        ]);
    }
    made
}

/// Children's user + system CPU seconds so far (fields 16 and 17 of `/proc/self/stat`, in
/// USER_HZ = 100 ticks on Linux).
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name, field 3 (state) is index 0, so cutime (16) is index 13.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(13) + tick(14)) / 100.0
}

fn scenario(name: &str, data: &Path, model: &str, threads: u16, limit: Option<u64>) {
    let threads_s = threads.to_string();
    let limit_s = limit.map(|l| l.to_string());
    let mut args = vec![
        "replay",
        data.to_str().expect("UTF-8 path"),
        "--model",
        model,
        "--threads",
        &threads_s,
        "--json",
    ];
    if let Some(l) = &limit_s {
        args.extend(["--limit", l]);
    }
    let cpu0 = children_cpu_s();
    let t0 = Instant::now();
    let out = inflor(&args);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - cpu0;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("replay --json prints one JSON object");
    let t = &report["throughput"];
    let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
    let recordings = report["samples"].as_u64().unwrap_or(0);
    println!(
        "replay/{name}/threads={threads}: {recordings} recordings, {:.1} recordings/s, {:.3} M events/s, \
         {:.0}x real time (replay's own wall {:.2} s), process wall {wall:.2} s, CPU {cpu:.2} s, \
         {:.0}x real time per CPU second, top-1 {:.2}%",
        f("recordings_per_s"),
        f("events_per_s") / 1e6,
        f("real_time_factor"),
        f("wall_s"),
        f("recorded_s") / cpu,
        report["top1"].as_f64().unwrap_or(f64::NAN) * 100.0,
    );
}

fn main() {
    let data = dataset();
    let resnet20 = root().join("target/bench-replay-resnet20.safetensors");
    if !resnet20.exists() {
        inflor(&[
            "model",
            "init",
            "--arch",
            "resnet20",
            "--classes",
            "10",
            "--class-names",
            "0,1,2,3,4,5,6,7,8,9",
            "--input",
            "2x48x48",
            "--seed",
            "1",
            resnet20.to_str().expect("UTF-8 path"),
        ]);
    }
    for threads in [1, 2] {
        scenario(
            "tiny-bundled",
            &data,
            "assets/tiny-dvs-digits.safetensors",
            threads,
            None,
        );
    }
    let resnet20 = resnet20.to_str().expect("UTF-8 path");
    for threads in [1, 2] {
        scenario("resnet20", &data, resnet20, threads, None);
    }
}
