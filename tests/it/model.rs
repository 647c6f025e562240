//! Integration tests of the model file: the explicit graph (every built-in architecture written,
//! read back and giving the same logits), version 1 files, typed load errors, calibration,
//! and `model init` / `model info` from the command line.

use std::collections::HashMap;

use inflor::calibrate::{Calibration, calibrate};
use inflor::exec::{
    ExecutorKind, Plan, PlanOptions, RunOptions, input_frame_shape, synthetic_frames,
};
use inflor::model::file::{FORMAT_VERSION, METADATA_KEY, VERSION_KEY};
use inflor::model::{ArchSpec, Architecture, BuildError, LoadError, Model, NodeOp};
use inflor::snn::NeuronKind;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

pub fn spec(arch: Architecture, side: usize, classes: usize) -> ArchSpec {
    ArchSpec {
        arch,
        channels: 2,
        height: side,
        width: side,
        classes,
    }
}

/// A model whose BN statistics are calibrated so hidden layers fire at realistic rates.
pub fn calibrated_model(arch: Architecture, side: usize, seed: u64, neuron: NeuronKind) -> Model {
    let mut model = Model::random(spec(arch, side, 5), 3, seed).unwrap();
    model.metadata.neuron.model = neuron;
    model.rebuild().unwrap();
    let settings = Calibration {
        target_rate: 0.15,
        samples: 1,
        timesteps: 3,
        input_density: 0.1,
        seed,
    };
    calibrate(&mut model, &settings, &mut |_, _, _| {}).unwrap();
    model
}

fn logits(model: &Model, seed: u64) -> Vec<u32> {
    let frames = synthetic_frames(input_frame_shape(&model.network), 3, 0.1, seed);
    let plan = Plan::new(
        model.network.clone(),
        ExecutorKind::Dense,
        PlanOptions::default(),
    )
    .unwrap();
    plan.run(
        &mut plan.new_scratch(),
        &mut plan.new_state(),
        &frames,
        &RunOptions::default(),
    )
    .unwrap()
    .logits
    .iter()
    .map(|v| v.to_bits())
    .collect()
}

#[test]
fn every_builtin_architecture_round_trips_with_the_same_logits() {
    for (arch, side) in [
        (Architecture::Tiny, 16),
        (Architecture::VggSnn, 16),
        (Architecture::Resnet19, 8),
        (Architecture::Resnet20, 8),
    ] {
        let model = calibrated_model(arch, side, 7, NeuronKind::Srif);
        let bytes = model.to_bytes().unwrap();
        let loaded = Model::from_bytes(&bytes).unwrap();
        assert_eq!(loaded.metadata, model.metadata, "{arch}");
        assert_eq!(loaded.parameters, model.parameters, "{arch}");
        assert_eq!(*loaded.network, *model.network, "{arch}");
        assert_eq!(logits(&loaded, 3), logits(&model, 3), "{arch}");
        // The file carries the graph, not only a name: every node with its op and shape.
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&header.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
        let nodes = doc["graph"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), model.metadata.graph.nodes.len());
        assert!(
            nodes
                .iter()
                .all(|n| n["shape"].is_array() && n["op"]["type"].is_string())
        );
    }
}

#[test]
fn loading_builds_from_the_graph_not_the_architecture_name() {
    // Edit the graph: a wider classifier input through an extra pool is not any built-in
    // architecture, and it still loads and runs.
    let mut model = Model::random(spec(Architecture::Tiny, 16, 3), 2, 1).unwrap();
    model.metadata.provenance.architecture = Some("resnet19".into());
    let g = &mut model.metadata.graph;
    let conv = g.position("features.2.conv").unwrap();
    if let NodeOp::Conv2d { out_channels, .. } = &mut g.nodes[conv].op {
        *out_channels = 8;
    }
    for node in g.nodes.iter_mut().skip(1) {
        node.shape = None;
        match &mut node.op {
            NodeOp::BatchNorm { channels, .. } if node.name == "features.2.bn" => *channels = 8,
            NodeOp::Linear { in_features, .. } => *in_features = 8 * 2 * 2,
            _ => {}
        }
    }
    model.parameters = model.metadata.graph.random_parameters(4);
    model.rebuild().unwrap();
    let back = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
    assert_eq!(
        back.network
            .nodes()
            .iter()
            .find(|n| n.name == "classifier")
            .unwrap()
            .op
            .parameter_count(),
        32 * 3 + 3
    );
    assert_eq!(logits(&back, 1), logits(&model, 1));
}

#[test]
fn model_file_round_trips_and_is_python_friendly() {
    let mut model = calibrated_model(Architecture::Tiny, 16, 3, NeuronKind::LifHard { tau: 0.25 });
    model.metadata.class_names = vec!["a", "b", "c", "d", "e"]
        .into_iter()
        .map(String::from)
        .collect();
    model.metadata.provenance.dataset = Some("synthetic".into());
    model
        .metadata
        .provenance
        .extra
        .insert("epochs".into(), serde_json::json!(12));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model.save(&path).unwrap();
    assert!(!dir.path().join("m.safetensors.partial").exists());
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded.metadata, model.metadata);
    assert_eq!(loaded.parameters, model.parameters);
    assert_eq!(*loaded.network, *model.network);

    // Python-compatible layout: F32 tensors in PyTorch shapes, metadata strings.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("features.0.conv.weight").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    assert_eq!(w.shape(), &[16, 2, 3, 3]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta[VERSION_KEY], FORMAT_VERSION.to_string());
    let doc: serde_json::Value = serde_json::from_str(&meta[METADATA_KEY]).unwrap();
    assert_eq!(doc["format_version"], 2);
    assert_eq!(doc["provenance"]["architecture"], "tiny");
    assert_eq!(doc["neuron"]["model"]["kind"], "lif_hard");
    let bn = &doc["graph"]["nodes"][2];
    assert_eq!(bn["op"]["type"], "batch_norm");
    assert_eq!(bn["op"]["alpha"], 1.0);
    assert_eq!(bn["op"]["threshold_scaled"], true);
    assert_eq!(bn["inputs"], serde_json::json!(["features.0.conv"]));
}

/// A version 1 file written by an earlier release (`model init --arch tiny --classes 3
/// --input 2x16x16 --timesteps 4 --seed 5 --class-names zero,one,two`), with the output of
/// that release's `infer --json` on the bundled recording.
#[test]
fn version_1_files_still_load_and_classify_the_same() {
    let path = crate::support::test_data("model/tiny-v1.safetensors");
    let model = Model::load(&path).unwrap();
    assert_eq!(
        model.metadata.provenance.architecture.as_deref(),
        Some("tiny")
    );
    assert_eq!(model.metadata.class_names, ["zero", "one", "two"]);
    assert_eq!(model.metadata.input.timesteps, 4);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::support::test_data("model/tiny-v1.infer.json")).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inflor"))
        .args(["infer", "--json", "--model"])
        .arg(&path)
        .arg(crate::support::repo_file("assets/dvs-digits-0.aedat"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(f32s(&got["logits"]), f32s(&expected["logits"]));
    assert_eq!(got["predicted"], expected["predicted"]);
    assert_eq!(got["stats"]["spikes"], expected["stats"]["spikes"]);
    // Written again, it becomes version 2 and stays the same model.
    let again = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
    assert_eq!(again.metadata.format_version, FORMAT_VERSION);
    assert_eq!(*again.network, *model.network);
}

/// Re-serialises `model` with its tensors and metadata edited.
fn rewrite(
    model: &Model,
    edit_tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>, Dtype)>),
    edit_meta: impl FnOnce(&mut HashMap<String, String>),
) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = model
        .parameters
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Dtype::F32,
            )
        })
        .collect();
    edit_tensors(&mut tensors);
    let mut meta = HashMap::new();
    meta.insert(
        METADATA_KEY.to_owned(),
        serde_json::to_string(&model.metadata).unwrap(),
    );
    edit_meta(&mut meta);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b, d)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn load_errors_are_typed_and_name_the_problem() {
    let model = Model::random(spec(Architecture::Resnet19, 8, 3), 4, 1).unwrap();
    assert!(Model::from_bytes(&rewrite(&model, |_| {}, |_| {})).is_ok());

    // Missing tensor.
    let bytes = rewrite(
        &model,
        |t| t.retain(|(n, ..)| n != "layer2.0.downsample.1.running_var"),
        |_| {},
    );
    match Model::from_bytes(&bytes) {
        Err(LoadError::Build(BuildError::MissingTensor { name, expected })) => {
            assert_eq!(name, "layer2.0.downsample.1.running_var");
            assert_eq!(expected, vec![256]);
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    // Wrong shape: transposed FC weight.
    let bytes = rewrite(
        &model,
        |t| {
            let fc = t.iter_mut().find(|(n, ..)| n == "fc1.weight").unwrap();
            fc.1 = vec![512, 256];
        },
        |_| {},
    );
    let err = Model::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor fc1.weight has shape [512, 256], expected [256, 512]"
    );

    // Unexpected tensor (another architecture's weights); PyTorch's counters are ignored.
    let bytes = rewrite(
        &model,
        |t| {
            t.push((
                "features.0.conv.weight".into(),
                vec![1],
                vec![0; 4],
                Dtype::F32,
            ));
            t.push((
                "bn1.num_batches_tracked".into(),
                vec![],
                vec![0; 8],
                Dtype::I64,
            ));
        },
        |_| {},
    );
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(LoadError::Build(BuildError::UnexpectedTensor { name })) if name == "features.0.conv.weight"
    ));

    // Wrong dtype.
    let bytes = rewrite(
        &model,
        |t| {
            let b = t.iter_mut().find(|(n, ..)| n == "fc2.bias").unwrap();
            b.3 = Dtype::I32;
        },
        |_| {},
    );
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::WrongDtype { name, .. }) if name == "fc2.bias")
    );

    // NaN in a weight.
    let bytes = rewrite(
        &model,
        |t| {
            let w = t.iter_mut().find(|(n, ..)| n == "conv1.weight").unwrap();
            w.2[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        },
        |_| {},
    );
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(LoadError::Build(BuildError::InvalidValue { name, index: 2 })) if name == "conv1.weight"
    ));

    // Metadata problems.
    let with_meta = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = serde_json::to_value(&model.metadata).unwrap();
        f(&mut doc);
        let text = doc.to_string();
        rewrite(
            &model,
            |_| {},
            move |m| {
                m.insert(METADATA_KEY.to_owned(), text);
            },
        )
    };
    let bytes = rewrite(
        &model,
        |_| {},
        |m| {
            m.remove(METADATA_KEY);
        },
    );
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(LoadError::MissingMetadata)
    ));
    let bytes = rewrite(
        &model,
        |_| {},
        |m| {
            m.insert(METADATA_KEY.to_owned(), "{not json".into());
        },
    );
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(LoadError::BadMetadata(_))
    ));
    let bytes = with_meta(&|d| d["neuron"]["model"]["kind"] = "izhikevich".into());
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::UnknownNeuron(n)) if n == "izhikevich")
    );
    let bytes = with_meta(&|d| d["format_version"] = 99.into());
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(LoadError::UnsupportedVersion { found: 99 })
    ));
    let bytes = with_meta(&|d| d["neuron"]["vth"] = 1.0.into());
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("vth"))
    );
    let bytes = with_meta(&|d| d["class_names"] = serde_json::json!(["only one"]));
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("class names"))
    );
    let bytes = with_meta(&|d| d["input"]["height"] = 9.into());
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("input is"))
    );
    let bytes = with_meta(&|d| d["surprise"] = 1.into());
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("surprise"))
    );
    // Graph problems name the node.
    let bytes = with_meta(&|d| d["graph"]["nodes"][3]["inputs"] = serde_json::json!(["nowhere"]));
    let err = Model::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("nowhere") && err.contains("sn1"), "{err}");
    let bytes = with_meta(&|d| d["graph"]["nodes"][1]["op"]["kernel"] = serde_json::json!([5, 5]));
    let err = Model::from_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("\"conv1\"") && err.contains("declared shape"),
        "{err}"
    );
    let bytes = with_meta(&|d| {
        d["graph"]["nodes"][1]["op"]["kernel"] = serde_json::json!([5, 5]);
        d["graph"]["nodes"][1]["op"]["padding"] = 2.into();
    });
    let err = Model::from_bytes(&bytes).unwrap_err().to_string();
    assert_eq!(
        err,
        "tensor conv1.weight has shape [128, 2, 3, 3], expected [128, 2, 5, 5]"
    );
    let bytes = with_meta(&|d| d["graph"]["nodes"][1]["op"]["type"] = "conv3d".into());
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("conv3d"))
    );
    let bytes = with_meta(&|d| d["graph"]["nodes"][0]["shape"] = serde_json::json!([3, 8, 8]));
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::BadMetadata(m)) if m.contains("3 channels")),
    );
    // Version 1: an architecture that is not built in.
    let bytes = rewrite(
        &model,
        |_| {},
        |m| {
            m.insert(
            METADATA_KEY.to_owned(),
            r#"{"format_version":1,"architecture":{"arch":"resnet50","channels":2,"height":8,"width":8,"classes":3}}"#.into(),
        );
        },
    );
    assert!(
        matches!(Model::from_bytes(&bytes), Err(LoadError::UnknownArchitecture(a)) if a == "resnet50")
    );

    // Not a safetensors file at all.
    assert!(matches!(
        Model::from_bytes(b"hello"),
        Err(LoadError::Container(_))
    ));
    let missing = Model::load(std::path::Path::new("/nonexistent/model.safetensors"));
    assert!(matches!(missing, Err(LoadError::Io { .. })));
}

#[test]
fn calibration_reaches_the_target_rate() {
    let mut model = Model::random(spec(Architecture::Tiny, 16, 3), 4, 2).unwrap();
    let settings = Calibration {
        target_rate: 0.15,
        samples: 2,
        timesteps: 4,
        input_density: 0.1,
        seed: 7,
    };
    let mut calls = Vec::new();
    let report = calibrate(&mut model, &settings, &mut |done, total, layer| {
        calls.push((done, total, layer.to_owned()))
    })
    .unwrap();
    assert_eq!(report.layers.len(), 3);
    assert_eq!(calls.last().map(|c| (c.0, c.1)), Some((3, 3)));
    for (name, rate) in &report.layers {
        assert!((rate - 0.15).abs() < 0.03, "{name}: {rate}");
    }
    // The executor sees the same rates on the calibration inputs.
    let plan = Plan::new(
        model.network.clone(),
        ExecutorKind::Dense,
        PlanOptions::default(),
    )
    .unwrap();
    let mut scratch = plan.new_scratch();
    let mut spikes = 0u64;
    let mut total = 0u64;
    for k in 0..2 {
        let frames = synthetic_frames(input_frame_shape(&model.network), 4, 0.1, 7 + k);
        let out = plan
            .run(
                &mut scratch,
                &mut plan.new_state(),
                &frames,
                &RunOptions::default(),
            )
            .unwrap();
        spikes += out.stats.total_spikes();
        total += out.stats.total_neurons() * 4;
    }
    let rate = spikes as f64 / total as f64;
    assert!((rate - 0.15).abs() < 0.03, "overall {rate}");
}

/// `inflor model init` and `model info` from the command line, with the input-spec options,
/// refusals and the overwrite guard.
#[test]
fn cli_model_init_and_info() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_inflor");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    let init = |extra: &[&str]| {
        Command::new(bin)
            .args([
                "model",
                "init",
                "--arch",
                "tiny",
                "--classes",
                "10",
                "--input",
                "2x34x34",
            ])
            .args(["--seed", "3", "--timesteps", "4", "--window", "count:500"])
            .args(["--resize", "area", "--normalization", "log1p"])
            .args(extra)
            .arg(&model)
            .output()
            .unwrap()
    };
    let out = init(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = Command::new(bin)
        .args(["model", "info", "--json"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(info.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(doc["metadata"]["provenance"]["architecture"], "tiny");
    assert_eq!(doc["dense_macs_per_timestep"], 2_550_784);
    assert_eq!(
        doc["metadata"]["input"]["window"],
        serde_json::json!({"kind": "count", "bin_events": 500})
    );
    assert_eq!(doc["metadata"]["input"]["resize"], "area");
    assert_eq!(doc["metadata"]["input"]["normalization"], "log1p");
    let rates = doc["metadata"]["provenance"]["calibration"]["rates"]
        .as_object()
        .unwrap();
    assert_eq!(rates.len(), 3);
    let text = Command::new(bin)
        .args(["model", "info"])
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("shape (CxHxW)") && text.contains("16x34x34"),
        "{text}"
    );

    // An existing file is kept unless --force.
    let before = std::fs::read(&model).unwrap();
    let again = init(&["--target-rate", "0.2"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    assert!(init(&["--force", "--no-calibrate"]).status.success());
    assert_ne!(std::fs::read(&model).unwrap(), before);

    // Inputs the runtime cannot run are refused up front.
    let three = Command::new(bin)
        .args([
            "model",
            "init",
            "--arch",
            "tiny",
            "--classes",
            "2",
            "--input",
            "3x48x48",
        ])
        .arg(dir.path().join("three.safetensors"))
        .output()
        .unwrap();
    assert_eq!(three.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&three.stderr).contains("C must be 2"));
    assert!(!dir.path().join("three.safetensors").exists());
    let nowhere = Command::new(bin)
        .args(["model", "init", "--arch", "tiny", "--classes", "2"])
        .arg(dir.path().join("missing/dir/m.safetensors"))
        .output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(2));
}
