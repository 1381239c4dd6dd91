//! ONNX export of ResNet-20 (option A shortcuts: Slice + Pad) and ResNet-50 (v1.5 bottlenecks,
//! projections), checked for structure here and run in onnxruntime by
//! tools/interop/check_onnx.py with the Python in `RESNET_PYTHON` (else `python3`); without
//! onnxruntime that part says it skipped, and fails under CI=true (.ci/run installs it).

use crate::common::*;
use prost::Message;
use resnet_interop::onnx::proto::{DimensionValue, ModelProto};
use resnet_interop::onnx::{IR_VERSION, OPSET};
use resnet_interop::OnnxOptions;
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{BatchNormMode, ResNet};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("RESNET_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_onnxruntime(python: &str) -> bool {
    Command::new(python).args(["-c", "import onnxruntime, numpy"]).output().is_ok_and(|o| o.status.success())
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `model` in onnxruntime on the NCHW `nchw` and compares with our `logits`: relative
/// `tolerance`, and at least `top1` of the samples with the same top class. Skips (or fails
/// under CI=true) without onnxruntime.
fn run_in_onnxruntime(
    model: &Path,
    dir: &TempDir,
    nchw: &[f32],
    shape: [usize; 4],
    logits: &[f32],
    tolerance: f64,
    top1: f64,
) {
    let python = python();
    if !has_onnxruntime(&python) {
        resnet_kernels::skip::skip_unless_ci(&format!(
            "onnxruntime and numpy not importable by {python} (set RESNET_PYTHON)"
        ));
        return;
    }
    let input = dir.path("input.f32");
    let expected = dir.path("logits.f32");
    std::fs::write(&input, bytes(nchw)).unwrap();
    std::fs::write(&expected, bytes(logits)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/interop/check_onnx.py");
    let [n, c, h, w] = shape;
    let out = Command::new(&python)
        .arg(&script)
        .arg(model)
        .arg(&input)
        .arg(format!("{n},{c},{h},{w}"))
        .arg(&expected)
        .arg(tolerance.to_string())
        .arg(top1.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{python} {}: {e}", script.display()));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "{}: onnxruntime disagrees with our logits:\n{report}", model.display());
}

fn check(zoo_name: &str, batch: usize, side: usize) {
    let spec = zoo::spec(zoo_name, &ModelOptions::default()).unwrap();
    let mut net = ResNet::new(spec.clone()).unwrap();
    net.load_state_dict(&generated_state(&spec)).unwrap();
    let (nchw, x) = generated_input(batch, 3, side);
    let logits = net.forward(&x, BatchNormMode::Eval).data().to_vec();

    let dir = TempDir::new(&format!("onnx-{zoo_name}"));
    let model = dir.path(&format!("{zoo_name}.onnx"));
    resnet_interop::export_onnx(&net, &model, &OnnxOptions::default()).unwrap();

    // The interface ONNX users expect, read back from the file.
    let m = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    assert_eq!((m.ir_version, m.opset_import[0].version, m.opset_import[0].domain.as_str()), (IR_VERSION, OPSET, ""));
    let g = m.graph.as_ref().unwrap();
    assert_eq!((g.input.len(), g.input[0].name.as_str(), g.output[0].name.as_str()), (1, "input", "logits"));
    let dims: Vec<DimensionValue> = g.input[0]
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap()
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.value.clone().unwrap())
        .collect();
    assert_eq!(
        dims,
        [
            DimensionValue::DimParam("batch".into()),
            DimensionValue::DimValue(3),
            DimensionValue::DimParam("height".into()),
            DimensionValue::DimParam("width".into())
        ]
    );
    // Every parameter and running statistic is an initializer; nothing else is.
    let floats = g.initializer.iter().filter(|t| t.data_type == 1).count();
    let state = net.state_dict().iter().filter(|t| !t.name.ends_with("num_batches_tracked")).count();
    assert_eq!(floats, state, "{zoo_name}: float initializers");

    run_in_onnxruntime(&model, &dir, &nchw, [batch, 3, side, side], &logits, 1e-4, 1.0);
}

/// The QDQ export of `zoo_name` quantized on its own input: in onnxruntime, logits near our int8
/// network's (8-bit rounding differs in places: onnxruntime's int32 bias and fixed-point
/// requantization) and the same top class for most samples.
fn check_int8(zoo_name: &str, batch: usize, side: usize) {
    let spec = zoo::spec(zoo_name, &ModelOptions::default()).unwrap();
    let mut net = ResNet::new(spec.clone()).unwrap();
    net.load_state_dict(&generated_state(&spec)).unwrap();
    let (nchw, x) = generated_input(batch, 3, side);
    let mut calibrator = resnet_quant::Calibrator::new(resnet_quant::Method::MinMax).unwrap();
    calibrator.observe(&mut net, &x).unwrap();
    let record = calibrator.finish(&net).unwrap();
    let logits = resnet_quant::QuantizedResNet::new(&net, &record).unwrap().infer(&x).data().to_vec();
    let dir = TempDir::new(&format!("onnx-int8-{zoo_name}"));
    let model = dir.path(&format!("{zoo_name}-int8.onnx"));
    resnet_interop::export_onnx_int8(&net, &record, &model, &OnnxOptions::default()).unwrap();
    let m = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    let g = m.graph.as_ref().unwrap();
    let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    let convs = count("Conv");
    // Every activation point quantized and dequantized; every convolution's weight and the
    // classifier's dequantized.
    assert_eq!(count("QuantizeLinear"), record.activations.len(), "{zoo_name}");
    assert_eq!(count("DequantizeLinear"), record.activations.len() + convs + 1, "{zoo_name}");
    assert!(!g.node.iter().any(|n| n.op_type == "BatchNormalization"), "{zoo_name}: batch norm is folded");
    run_in_onnxruntime(&model, &dir, &nchw, [batch, 3, side, side], &logits, 0.1, 0.75);
}

#[test]
fn resnet20_int8_onnx_runs_in_onnxruntime_near_our_int8_logits() {
    check_int8("resnet20", 8, 32);
}

#[test]
fn resnet18_int8_onnx_runs_in_onnxruntime_near_our_int8_logits() {
    check_int8("resnet18", 4, 64);
}

#[test]
fn resnet20_onnx_runs_in_onnxruntime_with_our_logits() {
    check("resnet20", 4, 32);
}

#[test]
fn resnet50_onnx_runs_in_onnxruntime_with_our_logits() {
    check("resnet50-v1.5", 2, 224);
}
