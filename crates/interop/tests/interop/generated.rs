//! torchvision ResNet-18 and ResNet-50 and a CIFAR ResNet-20 with generated weights and
//! non-trivial batch-norm statistics: written as safetensors, imported through the real path
//! (architecture inferred), run in eval mode, and compared with PyTorch's logits.

use crate::common::*;
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::BatchNormMode;
use safetensors::SafeTensors;

const TOLERANCE: f64 = 1e-4;

fn check(model: &str, zoo_name: &str) {
    let fixture_bytes = std::fs::read(fixture("generated.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&fixture_bytes).unwrap();
    let meta = meta.metadata().as_ref().expect("fixture metadata");
    assert_eq!(meta["seed"], SEED.to_string(), "the fixture was made with another seed");
    let models: serde_json::Value = serde_json::from_str(&meta["models"]).unwrap();
    let batch = models[model]["batch"].as_u64().unwrap() as usize;
    let side = models[model]["side"].as_u64().unwrap() as usize;
    let fx = SafeTensors::deserialize(&fixture_bytes).unwrap();

    let spec = zoo::spec(zoo_name, &ModelOptions::default()).unwrap();
    let state = generated_state(&spec);
    let (nchw, x) = generated_input(batch, 3, side);

    // The generators must agree before the networks can be compared.
    let sums: Vec<f64> = fx
        .tensor(&format!("{model}.checksums"))
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        sums.len(),
        state.len() + 1,
        "{model}: torchvision's state dict has {} tensors, ours {}",
        sums.len() - 1,
        state.len()
    );
    for (t, want) in state.iter().zip(&sums) {
        let got: f64 = match &t.data {
            resnet_models::TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).sum(),
            resnet_models::TensorData::I64(v) => v.iter().map(|&x| x as f64).sum(),
        };
        assert!(
            (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
            "{model}: generated {} differs (sum {got} vs {want})",
            t.name
        );
    }
    let input_sum: f64 = nchw.iter().map(|&v| f64::from(v)).sum();
    assert!(
        (input_sum - sums[state.len()]).abs() <= 1e-9 * (1.0 + input_sum.abs()),
        "{model}: generated input differs"
    );

    let dir = TempDir::new(&format!("generated-{model}"));
    let file = dir.path(&format!("{model}.safetensors"));
    resnet_interop::write_safetensors(&file, &state).unwrap();
    let mut net = resnet_interop::load_weights(&file, None).unwrap();
    assert_eq!(net.spec(), &spec, "{model}: inferred architecture");

    let logits = net.forward(&x, BatchNormMode::Eval).data().to_vec();
    let want = fixture_f32(&fx, &format!("{model}.logits"));
    let (rel, top1) = compare(&logits, &want, spec.num_classes);
    println!("{model} ({zoo_name}) vs PyTorch: max error {rel:.3e} of the largest logit, top-1 identical: {top1}");
    assert!(rel <= TOLERANCE, "{model}: max error {rel:.3e} of the largest logit exceeds {TOLERANCE:e}");
    assert!(top1, "{model}: top-1 classes differ");

    // Round trip: exporting the imported network gives back the file's tensors, bit for bit.
    let out = dir.path("exported.safetensors");
    resnet_interop::export_torchvision(&net, &out).unwrap();
    assert!(raw_tensors(&out) == raw_tensors(&file), "{model}: exported tensors differ from the imported file's");
}

#[test]
fn torchvision_resnet18_matches_pytorch() {
    check("resnet18", "resnet18");
}

#[test]
fn torchvision_resnet50_matches_pytorch() {
    check("resnet50", "resnet50-v1.5");
}

#[test]
fn cifar_resnet20_matches_pytorch() {
    check("resnet20", "resnet20");
}
