//! The NumPy reference forward pass in `python/` (written from docs/model-format.md alone)
//! reproduces `inflor infer`'s logits bit for bit on the bundled recording, for float models
//! and for their int8 copies (`inflor model quantize`: exact integer sums, then the one f32
//! expression, so agreement is to the last bit of that expression). The Python used is
//! `INFLOR_PYTHON` (default `python3`) with `python/requirements.txt` installed; `.ci/run`
//! sets it up. Without NumPy and safetensors the test says so and skips, except under `CI`.

use std::process::Command;

use crate::support::repo_file;

/// The Python interpreter to use, if it has the reference's requirements.
fn python() -> Option<String> {
    let python = std::env::var("INFLOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{python} lacks numpy/safetensors and CI is set (install python/requirements.txt)"
    );
    eprintln!("skipped: needs {python} with numpy and safetensors (python/requirements.txt)");
    None
}

#[test]
fn numpy_reference_matches_infer_logits() {
    let Some(python) = python() else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_inflor");
    let dir = tempfile::tempdir().unwrap();
    let recording = repo_file("assets/dvs-digits-0.aedat");
    for (arch, window) in [("tiny", "equal-count"), ("resnet20", "duration:100000")] {
        let model = dir.path().join(format!("{arch}.safetensors"));
        let init = Command::new(bin)
            .args([
                "model",
                "init",
                "--arch",
                arch,
                "--classes",
                "4",
                "--input",
                "2x24x24",
            ])
            .args(["--timesteps", "3", "--seed", "9", "--window", window])
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let int8 = dir.path().join(format!("{arch}-int8.safetensors"));
        let quantize = Command::new(bin)
            .args(["model", "quantize"])
            .arg(&model)
            .arg(&int8)
            .output()
            .unwrap();
        assert!(
            quantize.status.success(),
            "{}",
            String::from_utf8_lossy(&quantize.stderr)
        );
        for (model, arch) in [(model, arch.to_owned()), (int8, format!("{arch} int8"))] {
            let frames = dir.path().join(format!("{arch}.npy"));
            let infer = Command::new(bin)
                .args(["infer", "--json", "--model"])
                .arg(&model)
                .arg(&recording)
                .arg("--dump-frames")
                .arg(&frames)
                .output()
                .unwrap();
            assert!(
                infer.status.success(),
                "{}",
                String::from_utf8_lossy(&infer.stderr)
            );
            let reference = Command::new(&python)
                .arg(repo_file("python/inflor_reference.py"))
                .arg(&model)
                .arg(&frames)
                .output()
                .unwrap();
            assert!(
                reference.status.success(),
                "{}",
                String::from_utf8_lossy(&reference.stderr)
            );
            let ours: Vec<serde_json::Value> = String::from_utf8_lossy(&infer.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&reference.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(!ours.is_empty(), "{arch}: no windows");
            assert_eq!(ours.len(), theirs.len(), "{arch}: window count");
            for (w, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // infer prints f32 logits at their shortest round-trip form and the reference prints
                // the same f32 values widened to f64, so compare them as f32 bit patterns.
                assert_eq!(
                    f32_bits(&a["logits"]),
                    f32_bits(&b["logits"]),
                    "{arch} window {w}"
                );
                assert_eq!(a["predicted"], b["predicted"], "{arch} window {w}");
            }
        }
    }
}

fn f32_bits(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("logits are an array")
        .iter()
        .map(|x| (x.as_f64().expect("a logit is a number") as f32).to_bits())
        .collect()
}
