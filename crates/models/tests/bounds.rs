//! Sizes that come from a command line or a file are checked against the documented model bound
//! (`resnet_models::limits`) before anything is allocated, and state dicts of the wrong element
//! type say so.

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{limits, ModelError, NamedTensor, ResNet, TensorData};

fn invalid(r: Result<impl std::fmt::Debug, ModelError>) -> String {
    match r {
        Err(e @ ModelError::InvalidConfig { .. }) => e.to_string(),
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn absurd_depths_are_refused_before_building() {
    // 300,000 blocks: building it would allocate until the process aborts.
    let m = invalid(spec("cifar-resnet600002", &ModelOptions::default()));
    assert!(m.contains("300000 blocks; at most 3000"), "{m}");
    // A spec read from a file: 100,000,000 blocks in one stage, never built.
    let mut s = spec("resnet20", &ModelOptions::default()).unwrap();
    s.depths = vec![100_000_000, 3, 3];
    let m = invalid(ResNet::new(s));
    assert!(m.contains("blocks; at most"), "{m}");
    assert!(spec(&format!("cifar-resnet{}", 6 * 1000 + 2), &ModelOptions::default()).is_ok());
}

#[test]
fn absurd_classes_channels_and_widths_are_refused() {
    let m = invalid(spec("resnet18", &ModelOptions { num_classes: Some(4_000_000_000), ..Default::default() }));
    assert!(m.contains("4000000000 classes"), "{m}");
    let m = invalid(spec("resnet18", &ModelOptions { in_channels: Some(100_000), ..Default::default() }));
    assert!(m.contains("100000 input channels"), "{m}");
    let mut s = spec("resnet20", &ModelOptions::default()).unwrap();
    s.widths = vec![16, 32, 1 << 20];
    assert!(invalid(ResNet::new(s)).contains("filters"));
    // Within every single bound, too many parameters together.
    let m = invalid(spec("resnet50", &ModelOptions { num_classes: Some(limits::MAX_CLASSES), ..Default::default() }));
    assert!(m.contains("parameters; at most"), "{m}");
}

#[test]
fn absurd_input_sides_are_refused() {
    let net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
    let e = net.check_input([1, 100_000, 100_000, 3]).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    assert!(net.check_input([1, 32, 32, 3]).is_ok());
}

#[test]
fn integer_weights_are_named_as_a_type_problem() {
    let mut net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
    let mut sd: Vec<NamedTensor> = net.state_dict();
    let t = sd.iter_mut().find(|t| t.name == "conv1.weight").unwrap();
    t.data = TensorData::I64(vec![0; t.data.len()]);
    let m = net.load_state_dict(&sd).unwrap_err().to_string();
    assert!(m.contains("conv1.weight (I64, expected F32)"), "{m}");
    assert!(!m.contains("expected [16, 3, 3, 3], found [16, 3, 3, 3]"), "{m}");
}
