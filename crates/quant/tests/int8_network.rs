//! The int8 network against the float network it was made from: its logits within the error
//! 8-bit activations and weights bring, on each kind of network (option-A and projection
//! shortcuts, basic and bottleneck blocks, the ImageNet stem's max pooling, no shortcut), and
//! records that do not fit refused by name.

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet};
use resnet_nn::gradcheck::randomize;
use resnet_nn::Tensor;
use resnet_quant::{Calibrator, Method, QuantError, QuantRecord, QuantizedResNet};

/// A network with He-initialised weights whose running statistics are those of `x`, so that
/// its eval-mode activations are normalised as a trained network's are.
fn network(model: &str, x: &Tensor) -> ResNet {
    let mut net = ResNet::new(spec(model, &ModelOptions::default()).unwrap()).unwrap();
    net.init(&InitConfig { seed: 7, ..InitConfig::default() });
    net.for_each_batch_norm(|bn| bn.momentum = 1.0);
    net.forward(x, BatchNormMode::Train);
    net.for_each_batch_norm(|bn| {
        bn.momentum = 0.1;
        // Shifts and scales unlike the identity, so that folding them is tested.
        let c = bn.channels() as u64;
        randomize(bn.bias.value_mut(), c);
        bn.weight.value_mut().iter_mut().for_each(|g| *g = 0.5 + g.abs());
    });
    net
}

/// The record of `net` calibrated on `x` by `method`.
fn calibrated(net: &mut ResNet, x: &Tensor, method: Method) -> QuantRecord {
    let mut cal = Calibrator::new(method).unwrap();
    cal.observe(net, x).unwrap();
    cal.finish(net).unwrap()
}

fn batch(n: usize, side: usize, seed: u64) -> Tensor {
    let mut x = Tensor::zeros([n, side, side, 3]);
    randomize(x.data_mut(), seed);
    x
}

/// `|a - b| / |b|` over the whole batch of logits.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn int8_logits_track_the_float_network_on_every_kind_of_network() {
    for (model, side, n) in
        [("resnet20", 16, 8), ("cifar-plain8", 16, 8), ("resnet18", 64, 4), ("resnet50-v1.5", 64, 2)]
    {
        let x = batch(n, side, 1);
        let mut net = network(model, &x);
        for method in [Method::MinMax, Method::Percentile(99.999)] {
            let record = calibrated(&mut net, &x, method);
            assert_eq!(record.calibration_images, n);
            let mut q = QuantizedResNet::new(&net, &record).unwrap();
            // Images the calibration did not see.
            let test = batch(n, side, 2);
            let float = net.infer(&test).data().to_vec();
            let int8 = q.infer(&test).data().to_vec();
            let err = relative_error(&int8, &float);
            assert!(err < 0.08, "{model} {method:?}: logits differ by {err:.4} of their norm");
            // A second call reuses the buffers and gives the same logits.
            assert_eq!(q.infer(&test).data(), &int8[..], "{model}");
        }
    }
}

/// Running the early blocks a group of images at a time (groups of 2, 2 and 1 here, over
/// layer1 and layer2) gives the logits of running every layer on the whole batch, bit for bit.
#[test]
fn early_blocks_in_groups_of_images_give_the_same_logits() {
    let x = batch(5, 64, 1);
    let mut net = network("resnet50-v1.5", &x);
    let record = calibrated(&mut net, &x, Method::MinMax);
    let mut q = QuantizedResNet::new(&net, &record).unwrap();
    let test = batch(5, 64, 2);
    q.set_group_bytes(usize::MAX);
    let whole = q.infer(&test).data().to_vec();
    // layer1's output is 64 KB an image, layer2's 32 KB, layer3's 16 KB: 150 KB groups two
    // images through layer2.
    q.set_group_bytes(150 << 10);
    assert_eq!(q.infer(&test).data(), &whole[..]);
    // One image alone, and the batch again after it.
    q.set_group_bytes(1);
    assert_eq!(q.infer(&test).data(), &whole[..]);
}

#[test]
fn a_record_of_another_network_is_refused_by_name() {
    let x = batch(2, 16, 3);
    let mut net20 = network("resnet20", &x);
    let record = calibrated(&mut net20, &x, Method::MinMax);
    let net32 = network("resnet32", &x);
    match QuantizedResNet::new(&net32, &record) {
        Err(QuantError::MissingActivation(name)) => assert_eq!(name, "layer1.3.conv1"),
        other => panic!("expected a missing activation, got {other:?}"),
    }
    let mut wrong = record.clone();
    wrong.format = "resnet-int8-v0".into();
    assert!(matches!(QuantizedResNet::new(&net20, &wrong), Err(QuantError::Format(_))));
    let mut bad = record.clone();
    bad.activations.get_mut("layer2.0").unwrap().scale = 0.0;
    let err = QuantizedResNet::new(&net20, &bad).unwrap_err().to_string();
    assert!(err.contains("layer2.0") && err.contains("not positive"), "{err}");
}

#[test]
fn calibration_refuses_values_that_are_not_finite_and_empty_runs() {
    let x = batch(2, 16, 4);
    let mut net = network("resnet20", &x);
    let cal = Calibrator::new(Method::MinMax).unwrap();
    assert!(cal.finish(&net).unwrap_err().to_string().contains("no calibration images"));
    let mut cal = Calibrator::new(Method::MinMax).unwrap();
    let mut bad = x.clone();
    bad.data_mut()[5] = f32::NAN;
    let err = cal.observe(&mut net, &bad).unwrap_err().to_string();
    assert!(err.contains("input") && err.contains("not finite"), "{err}");
    assert!(Calibrator::new(Method::Percentile(0.0)).is_err());
    assert!(Calibrator::new(Method::Percentile(100.5)).is_err());
}
