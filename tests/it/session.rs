//! Integration tests of `session::Session`: streaming equals one push, reset and continuous
//! membranes, the gap flag, and `infer` on folders with failing inputs.

use std::sync::Arc;

use inflor::binner::WindowPolicy;
use inflor::event::Event;
use inflor::exec::{ExecutorKind, Plan, PlanOptions, RunOptions};
use inflor::model::{Architecture, Model};
use inflor::session::{Membranes, Output, Session, SessionOptions};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{calibrated_model, spec};

/// A calibrated tiny model on 16×16 classifying stream windows of 4 bins of 300 events.
fn stream_model() -> Model {
    let mut model = calibrated_model(Architecture::Tiny, 16, 4, inflor::snn::NeuronKind::Srif);
    model.metadata.input.window = WindowPolicy::Count { bin_events: 300 };
    model.metadata.input.timesteps = 4;
    model.rebuild().unwrap();
    model
}

/// A random walk of `n` events over a 32×32 sensor.
fn events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (16i32, 16i32);
    (0..n)
        .map(|i| {
            x = (x + rng.random_range(-2..=2)).clamp(0, 31);
            y = (y + rng.random_range(-2..=2)).clamp(0, 31);
            Event {
                t: i as i64 * 13,
                x: x as u16,
                y: y as u16,
                polarity: rng.random_bool(0.5),
            }
        })
        .collect()
}

fn run(
    model: &Model,
    kind: ExecutorKind,
    options: SessionOptions,
    ev: &[Event],
    split: usize,
) -> Vec<Output> {
    let plan = Plan::new(model.network.clone(), kind, PlanOptions::default()).unwrap();
    let mut session = Session::new(plan, model, (32, 32), options).unwrap();
    let mut out = Vec::new();
    for chunk in ev.chunks(split) {
        session.push(chunk, &mut out).unwrap();
    }
    session.finish(&mut out).unwrap();
    out
}

fn logits(outputs: &[Output]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|o| o.logits.iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn any_batch_split_and_every_executor_give_the_same_outputs() {
    let model = stream_model();
    let ev = events(6000, 1);
    let options = SessionOptions {
        stream: "walk".into(),
        hop: Some(2),
        ..SessionOptions::default()
    };
    let whole = run(
        &model,
        ExecutorKind::Reference,
        options.clone(),
        &ev,
        ev.len(),
    );
    // 20 bins of 300 events; windows of 4 bins every 2 bins: 9 windows.
    assert_eq!(whole.len(), 9);
    assert!(
        whole
            .iter()
            .all(|o| o.stream == "walk" && o.complete && !o.gap)
    );
    assert_eq!(
        whole.iter().map(|o| o.window).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    for kind in [ExecutorKind::Dense, ExecutorKind::Event] {
        for split in [1, 77, 1000] {
            let got = run(&model, kind, options.clone(), &ev, split);
            assert_eq!(logits(&got), logits(&whole), "{kind} split {split}");
            assert_eq!(
                got.iter().map(|o| o.stats.spikes).collect::<Vec<_>>(),
                whole.iter().map(|o| o.stats.spikes).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn reset_and_continuous_membranes_follow_their_definitions() {
    let model = stream_model();
    let ev = events(3600, 2);
    // Reset: each window is the classification of its 4 bins from rest.
    let reset = run(
        &model,
        ExecutorKind::Event,
        SessionOptions::default(),
        &ev,
        500,
    );
    assert_eq!(reset.len(), 3);
    let plan = Plan::new(
        model.network.clone(),
        ExecutorKind::Reference,
        PlanOptions::default(),
    )
    .unwrap();
    let mut scratch = plan.new_scratch();
    let keep = SessionOptions {
        keep_frames: true,
        ..SessionOptions::default()
    };
    let kept = run(&model, ExecutorKind::Event, keep.clone(), &ev, 500);
    for (o, k) in reset.iter().zip(&kept) {
        let frames = k.frames.as_ref().unwrap();
        let mut state = plan.new_state();
        let direct = plan
            .run(&mut scratch, &mut state, frames, &RunOptions::default())
            .unwrap();
        assert_eq!(o.logits, direct.logits);
    }
    // Continuous: one state runs every bin once; a window averages its own bins.
    let continuous = run(
        &model,
        ExecutorKind::Event,
        SessionOptions {
            membranes: Membranes::Continuous,
            ..SessionOptions::default()
        },
        &ev,
        500,
    );
    let mut state = plan.new_state();
    for (o, k) in continuous.iter().zip(&kept) {
        state.reset_output();
        let direct = plan
            .run(
                &mut scratch,
                &mut state,
                k.frames.as_ref().unwrap(),
                &RunOptions::default(),
            )
            .unwrap();
        assert_eq!(o.logits, direct.logits);
    }
    assert_eq!(continuous[0].logits, reset[0].logits);
    assert_ne!(
        continuous[2].logits, reset[2].logits,
        "membranes carried over"
    );
}

#[test]
fn gap_flag_marks_the_next_output_only() {
    let model = stream_model();
    let plan = Plan::new(
        model.network.clone(),
        ExecutorKind::Event,
        PlanOptions::default(),
    )
    .unwrap();
    let mut session = Session::new(
        Arc::clone(&plan),
        &model,
        (32, 32),
        SessionOptions::default(),
    )
    .unwrap();
    let ev = events(3600, 3);
    let mut out = Vec::new();
    session.push(&ev[..1200], &mut out).unwrap();
    session.mark_gap();
    session.push(&ev[1200..], &mut out).unwrap();
    assert_eq!(
        out.iter().map(|o| o.gap).collect::<Vec<_>>(),
        vec![false, true, false]
    );
    assert!(
        out.iter()
            .all(|o| o.latency.compute_us > 0.0 && o.latency.end_to_end_us >= o.latency.compute_us)
    );
    // A plan for another model is refused.
    let other = Model::random(spec(Architecture::Tiny, 16, 5), 4, 9).unwrap();
    assert!(Session::new(plan, &other, (32, 32), SessionOptions::default()).is_err());
}

/// `infer` on a folder and a bad file: every input is reported, the exit code is 2, and the
/// JSON lines carry the Output record's latency fields.
#[test]
fn infer_reports_every_input_of_a_folder() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_inflor");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let init = Command::new(bin)
        .args([
            "model",
            "init",
            "--arch",
            "tiny",
            "--classes",
            "3",
            "--input",
            "2x16x16",
        ])
        .args(["--timesteps", "2", "--no-calibrate"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(init.status.success());
    let folder = dir.path().join("recordings/a");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        crate::support::repo_file("assets/dvs-digits-0.aedat"),
        folder.join("x.aedat"),
    )
    .unwrap();
    std::fs::copy(
        crate::support::repo_file("assets/dvs-digits-0.aedat"),
        folder.join("y.aedat"),
    )
    .unwrap();
    std::fs::write(folder.join("notes.txt"), "not events").unwrap();
    let bad = dir.path().join("bad.aedat");
    std::fs::write(&bad, b"#!AER-DAT2.0\r\n\x00\x00\x00").unwrap();
    let out = Command::new(bin)
        .args(["infer", "--json", "--threads", "2", "--model"])
        .arg(&model)
        .arg(&bad)
        .arg(dir.path().join("recordings"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "the two good recordings, not the text file");
    assert_eq!(lines[0]["logits"], lines[1]["logits"]);
    assert!(lines[0]["latency"]["compute_us"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[0]["executor"], "event");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.aedat") && stderr.contains("1 of 3 inputs"),
        "{stderr}"
    );
    // --top-k 0 is refused rather than silently made 1.
    let zero = Command::new(bin)
        .args(["infer", "--top-k", "0", "--model"])
        .arg(&model)
        .arg(folder.join("x.aedat"))
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
}
