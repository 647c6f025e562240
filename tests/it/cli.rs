//! The `inflor` binary end to end: `inspect` on every real recording in `../shared/data/` must
//! report the counts and durations that folder's README gives (computed there with independent
//! decoders), plus usage errors and exit codes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::shared_data;

fn inflor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inflor"))
        .args(args)
        .output()
        .expect("the inflor binary runs")
}

fn inspect_json(path: &Path) -> Value {
    let out = inflor(&["inspect", "--json", path.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect {} failed: {}\n{}",
        path.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// (file, format, events, duration in seconds as the README rounds it (3 decimals), skipped
/// non-event records or None where the README gives none).
type Row = (&'static str, &'static str, u64, f64, Option<u64>);

const README_TABLE: &[Row] = &[
    (
        "davis346_sample.aedat4",
        "aedat4",
        78_830,
        2.360,
        Some(59 + 2_363 + 236),
    ),
    (
        "dvxplorer_tonic/sample.aedat4",
        "aedat4",
        111_954,
        0.590,
        None,
    ),
    (
        "mnist_dvs/mnist_0_scale04_0001.aedat",
        "aedat2",
        15_744,
        2.211,
        Some(0),
    ),
    (
        "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
        "aedat2",
        1_782,
        0.197,
        Some(0),
    ),
    (
        "mnist_dvs/mnist_0_scale08_0001_qt1.aedat",
        "aedat2",
        5_078,
        0.197,
        Some(0),
    ),
    (
        "mnist_dvs/mnist_0_scale16_0001_qt1.aedat",
        "aedat2",
        11_209,
        0.197,
        Some(0),
    ),
    (
        "davis240c_aedat2/IMU_translBoxes.aedat",
        "aedat2",
        162_771,
        2.073,
        Some(33_837),
    ),
    (
        "davis240c_aedat2/IMU_rotDisk.aedat",
        "aedat2",
        374_296,
        3.167,
        Some(51_688),
    ),
    ("nmnist/sample_nmnist.bin", "atis", 4_325, 0.311, None),
    (
        "ncaltech101/faces_easy_0001.bin",
        "atis",
        67_445,
        0.299,
        None,
    ),
    ("ncars/sample_ncars.dat", "dat", 2_009, 0.100, None),
    ("ncars/NCARS_obj_004397_td.dat", "dat", 4_407, 0.100, None),
    (
        "prophesee_evt2/evt2_test_sparklers.raw",
        "evt2",
        521_252,
        0.096,
        None,
    ),
    (
        "prophesee_evt2/evt2_sample.raw",
        "evt2",
        539_481,
        0.050,
        None,
    ),
    (
        "prophesee_evt3/evt3_test_pedestrians.raw",
        "evt3",
        5_000,
        0.045,
        None,
    ),
    (
        "prophesee_evt3/evt3_sample.raw",
        "evt3",
        219_596,
        0.009,
        None,
    ),
    ("event_stream/dvs.es", "es", 473_225, 0.999, None),
];

#[test]
fn inspect_matches_the_shared_data_readme_for_every_recording() {
    let mut failures = Vec::new();
    for &(file, format, events, duration_s, skipped) in README_TABLE {
        let report = inspect_json(&shared_data(file));
        let got_format = report["format"].as_str().unwrap_or("?");
        let got_events = report["summary"]["events"].as_u64().unwrap_or(u64::MAX);
        let on = report["summary"]["on"].as_u64().unwrap_or(0);
        let off = report["summary"]["off"].as_u64().unwrap_or(0);
        let duration = report["duration_us"].as_i64().unwrap_or(-1) as f64 * 1e-6;
        let scale = 1000.0;
        let rounded = (duration * scale).round() / scale;
        let d = &report["decode"];
        let got_skipped = [
            "frames_skipped",
            "imu_skipped",
            "triggers_skipped",
            "other_skipped",
        ]
        .iter()
        .map(|k| d[k].as_u64().unwrap_or(0))
        .sum::<u64>();
        if got_format != format
            || got_events != events
            || on + off != events
            || (rounded - duration_s).abs() > 0.5 / scale
            || skipped.is_some_and(|s| s != got_skipped)
        {
            failures.push(format!(
                "{file}: format {got_format} (want {format}), events {got_events} (want {events}), \
                 duration {duration:.6} s (want {duration_s}), skipped {got_skipped} (want {skipped:?})"
            ));
        }
        assert!(report["error"].is_null(), "{file}: {}", report["error"]);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn inspect_header_only_jaer_file_reports_its_chip_and_no_events() {
    let report = inspect_json(&shared_data("jaer_header/sample_aedat_header.aedat"));
    assert_eq!(report["summary"]["events"], 0);
    assert_eq!(report["stream"]["width"], 346);
    assert_eq!(report["stream"]["height"], 260);
}

#[test]
fn inspect_text_names_every_field() {
    let out = inflor(&[
        "inspect",
        shared_data("mnist_dvs/mnist_0_scale04_0001_qt1.aedat")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "format:",
        "resolution:",
        "source:",
        "events:",
        "first t:",
        "last t:",
        "duration:",
        "mean rate:",
        "skipped:",
    ] {
        assert!(text.contains(field), "missing {field} in\n{text}");
    }
}

#[test]
fn missing_and_unrecognised_files_exit_2_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.xyz");
    std::fs::write(&junk, b"\x00\x01hello").unwrap();
    let out = inflor(&["inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("junk.xyz") && stderr.contains("unrecognised format"),
        "{stderr}"
    );

    let out = inflor(&["inspect", "/nonexistent/file.aedat"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_arguments_exit_2() {
    let out = inflor(&["inspect", "--resolution", "0x7", "x.aedat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("width"));
}

fn events_of(path: &Path) -> Vec<inflor::event::Event> {
    inflor::format::read_file(path, None, &inflor::format::DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .events
}

#[test]
fn convert_keeps_every_event_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (input, outputs) in [
        (
            "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
            &["a.aedat4", "b.aedat"][..],
        ),
        (
            "prophesee_evt3/evt3_test_pedestrians.raw",
            &["c.aedat4"][..],
        ),
        (
            "davis240c_aedat2/IMU_translBoxes.aedat",
            &["d.aedat", "e.aedat4"][..],
        ),
    ] {
        let source = shared_data(input);
        let expected = events_of(&source);
        for out in outputs {
            let target = dir.path().join(out);
            let status = inflor(&[
                "convert",
                source.to_str().unwrap(),
                target.to_str().unwrap(),
            ]);
            assert!(
                status.status.success(),
                "{}",
                String::from_utf8_lossy(&status.stderr)
            );
            assert_eq!(events_of(&target), expected, "{input} -> {out}");
        }
    }
    // A CIFAR10-DVS-style file converted back to AEDAT 2.0 keeps its address words.
    let source = shared_data("mnist_dvs/mnist_0_scale04_0001_qt1.aedat");
    let original = std::fs::read(&source).unwrap();
    let copy = std::fs::read(dir.path().join("b.aedat")).unwrap();
    let body = |b: &[u8]| b[b.len() - 1_782 * 8..].to_vec();
    assert_eq!(body(&copy), body(&original));
}

#[test]
fn convert_refuses_what_the_target_cannot_hold_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big.aedat");
    let source = shared_data("prophesee_evt3/evt3_test_pedestrians.raw");
    let out = inflor(&[
        "convert",
        source.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1280x720"));
    assert!(!target.exists());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn infer_gives_the_same_logits_with_every_executor() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    let out = inflor(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "10",
        "--input",
        "2x48x48",
        "--seed",
        "3",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recording = shared_data("mnist_dvs/mnist_0_scale04_0001_qt1.aedat");
    let logits: Vec<Value> = ["event", "dense", "reference"]
        .iter()
        .map(|executor| {
            let out = inflor(&[
                "infer",
                "--json",
                "--executor",
                executor,
                "--model",
                model.to_str().unwrap(),
                recording.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                doc["stats"]["layers"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty())
            );
            doc["logits"].clone()
        })
        .collect();
    assert_eq!(logits[0], logits[1]);
    assert_eq!(logits[0], logits[2]);
}

/// A reader that goes away early (`inflor model info M | head -1`) ends the command quietly
/// with exit 0, not with a panic about a broken pipe.
#[test]
fn a_closed_stdout_ends_model_info_quietly() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/tiny-dvs-digits.safetensors"
    );
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inflor"));
        cmd.args(["model", "info"]);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .arg(model)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closing the read end before the child writes makes its first write fail.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "json {json}: {stderr}");
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
    }
}
