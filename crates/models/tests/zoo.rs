//! The networks have exactly the paper's (and torchvision's) sizes.

use resnet_models::zoo::{spec, ModelOptions};
use resnet_models::{BatchNormMode, InitConfig, ResNet, Shortcut};
use resnet_nn::Tensor;

fn opts(shortcut: Option<Shortcut>) -> ModelOptions {
    ModelOptions { shortcut, ..ModelOptions::default() }
}

#[test]
fn cifar_parameter_counts_match_the_paper() {
    // Option A; plain twins have the same count (option A adds no parameter).
    for (depth, params) in
        [(20, 269_722u64), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962), (1202, 19_421_274)]
    {
        for prefix in ["resnet", "plain"] {
            let s = spec(&format!("{prefix}{depth}"), &ModelOptions::default()).unwrap();
            assert_eq!(s.summary(32, 32).params, params, "{prefix}{depth}");
        }
    }
}

#[test]
fn imagenet_parameter_counts_match_torchvision() {
    for (name, params) in [
        ("resnet18", 11_689_512u64),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnet50-v1.5", 25_557_032),
    ] {
        assert_eq!(spec(name, &ModelOptions::default()).unwrap().summary(224, 224).params, params, "{name}");
    }
}

#[test]
fn multiply_adds_match_table_1() {
    let g = |name: &str| spec(name, &ModelOptions::default()).unwrap().summary(224, 224).macs as f64 / 1e9;
    for (name, paper) in
        [("resnet18", 1.8), ("resnet34", 3.6), ("resnet50", 3.8), ("resnet101", 7.6), ("resnet152", 11.3)]
    {
        let got = g(name);
        assert!((got - paper).abs() / paper < 0.05, "{name}: {got:.3} G vs paper {paper}");
    }
    let v15 = g("resnet50-v1.5");
    assert!((v15 - 4.09).abs() < 0.02, "resnet50-v1.5: {v15}");
    let r20 = spec("resnet20", &ModelOptions::default()).unwrap().summary(32, 32).macs as f64 / 1e6;
    assert!((r20 - 40.55).abs() / 40.55 < 0.005, "resnet20: {r20} M");
}

#[test]
fn built_networks_have_the_summary_counts() {
    for (name, sc) in [
        ("resnet20", None),
        ("resnet20", Some(Shortcut::B)),
        ("resnet20", Some(Shortcut::C)),
        ("plain20", None),
        ("resnet18", Some(Shortcut::A)),
        ("resnet50", None),
        ("resnet50", Some(Shortcut::C)),
    ] {
        let s = spec(name, &opts(sc)).unwrap();
        let net = ResNet::new(s.clone()).unwrap();
        assert_eq!(net.num_params(), s.summary(224, 224).params, "{name} {sc:?}");
    }
}

#[test]
fn options_change_shortcuts_as_the_paper_says() {
    let a = spec("resnet34", &opts(Some(Shortcut::A))).unwrap().summary(224, 224).params;
    let b = spec("resnet34", &opts(Some(Shortcut::B))).unwrap().summary(224, 224).params;
    let c = spec("resnet34", &opts(Some(Shortcut::C))).unwrap().summary(224, 224).params;
    // Table 3: A is parameter-free, B adds three projections, C adds one per block.
    assert!(a < b && b < c, "{a} {b} {c}");
    assert_eq!(a, spec("plain34", &ModelOptions::default()).unwrap().summary(224, 224).params);
}

#[test]
fn any_classes_and_input_channels() {
    let s = spec("resnet20", &ModelOptions { num_classes: Some(100), in_channels: Some(1), shortcut: None }).unwrap();
    let net = ResNet::new(s).unwrap();
    assert_eq!(net.fc.outputs(), 100);
    assert!(net.check_input([1, 28, 28, 1]).is_ok());
    assert!(net.check_input([1, 28, 28, 3]).is_err());
}

#[test]
fn inference_keeps_a_few_activations_whatever_the_depth() {
    let input = |n: usize, side: usize| {
        Tensor::from_vec([n, side, side, 3], (0..n * side * side * 3).map(|i| (i % 7) as f32 - 3.0).collect())
    };
    for (name, side) in [("resnet56", 32), ("resnet50", 64)] {
        let s = spec(name, &ModelOptions::default()).unwrap();
        let mut kept = ResNet::new(s.clone()).unwrap();
        kept.init(&InitConfig::default());
        let mut lean = kept.clone();
        let x = input(4, side);
        let want = kept.forward(&x, BatchNormMode::Eval).clone();
        assert_eq!(lean.infer(&x), &want, "{name}");
        // With AVX-512, ResNet-50's blocks write their output over their shortcut (the same
        // values, above); ResNet-56's basic blocks end in 3x3 layers, which do not.
        let inputs = std::iter::once(kept.stem.output()).chain(kept.blocks.iter().map(|b| b.output()));
        let over = kept.blocks.iter().zip(inputs).filter(|(b, x)| b.writes_over_shortcut(x.shape())).count();
        let avx512 = resnet_kernels::CpuFeatures::current().isa >= resnet_kernels::Isa::Avx512;
        assert_eq!(over > 0, avx512 && name == "resnet50", "{name}: {over} blocks write over their shortcut");
        let (all, few) = (kept.activation_bytes(), lean.activation_bytes());
        // The largest activation, in bytes; inference holds a handful of buffers that size.
        let largest = 4 * 4 * side * side * 16;
        assert!(few <= 8 * largest, "{name}: inference holds {few} bytes, more than 8 of the largest activation");
        assert!(few * 3 < all, "{name}: inference holds {few} bytes against {all} for the full forward");
        // Buffers grow to the largest role they are given, then repeated calls allocate nothing.
        // (Blocks that write their output over their input pass buffers on from role to role,
        // so that takes a few calls: five for this ResNet-50.)
        let mut sizes = vec![few];
        for _ in 0..8 {
            assert_eq!(lean.infer(&x), &want, "{name}");
            sizes.push(lean.activation_bytes());
        }
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]) && sizes[6] == sizes[8], "{name}: sizes {sizes:?}");
        assert!(sizes[8] <= 8 * largest, "{name}: inference settles at {} bytes", sizes[8]);
    }
}
