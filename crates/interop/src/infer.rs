//! The architecture of a torchvision-style ResNet read off its state dict's names and shapes.
//!
//! - Family: `conv1` is 7x7 (ImageNet stem, Table 1) or 3x3 (CIFAR stem, Section 4.2).
//! - Block: `layer1.0.conv3` exists for bottlenecks (Fig. 5 right).
//! - Stages and depths: `layer{s}.{i}.conv1` for consecutive `s` and `i`; widths from each
//!   stage's first `conv1`.
//! - Shortcut (Section 3.3): projections (`downsample`) on every block is option C, exactly where
//!   the shape changes option B, nowhere while shapes change option A.
//! - Stride placement leaves no trace in shapes: bottleneck ImageNet nets get torchvision's v1.5.
//! - Plain nets and option-A nets have the same tensors; weights are taken as residual.

use crate::InteropError;
use resnet_models::zoo::{self, ModelOptions, ZOO};
use resnet_models::{BlockKind, Family, NamedTensor, ResNetSpec, Shortcut, StridePlacement};
use std::collections::HashMap;

/// The spec of the network whose state dict this is, named after the zoo entry it equals
/// (`resnet50-v1.5`, `resnet20`, `cifar-resnet8`, ...) or `inferred-<family>-<block>-<depths>`.
/// The result is a best reading of the shapes; loading the tensors into it checks every one.
///
/// # Errors
/// [`InteropError::Infer`] (without a path) saying which tensor is missing or does not fit.
pub fn infer_spec(tensors: &[NamedTensor]) -> Result<ResNetSpec, InteropError> {
    let fail = |reason: String| InteropError::Infer { path: None, reason };
    let shapes: HashMap<&str, &[usize]> = tensors.iter().map(|t| (t.name.as_str(), t.shape.as_slice())).collect();
    let shape = |name: &str| shapes.get(name).copied();
    let Some(stem) = shape("conv1.weight") else {
        let hint = if shapes.keys().any(|k| k.starts_with("module.")) {
            " (keys start with 'module.': strip that DataParallel prefix first)"
        } else {
            ""
        };
        return Err(fail(format!("there is no conv1.weight{hint}")));
    };
    let [stem_width, in_channels, kh, kw] = *stem else {
        return Err(fail(format!("conv1.weight has shape {stem:?}, not [out, in, kh, kw]")));
    };
    let family = match (kh, kw) {
        (7, 7) => Family::ImageNet,
        (3, 3) => Family::Cifar,
        _ => return Err(fail(format!("conv1 is {kh}x{kw}; a ResNet stem is 7x7 (ImageNet) or 3x3 (CIFAR)"))),
    };
    let num_classes = match shape("fc.weight") {
        Some(&[classes, _]) => classes,
        Some(other) => return Err(fail(format!("fc.weight has shape {other:?}, not [classes, features]"))),
        None => return Err(fail("there is no fc.weight".into())),
    };
    let block = if shapes.contains_key("layer1.0.conv3.weight") { BlockKind::Bottleneck } else { BlockKind::Basic };
    let mut depths = Vec::new();
    let mut widths = Vec::new();
    while let Some(first) = shape(&format!("layer{}.0.conv1.weight", depths.len() + 1)) {
        let s = depths.len() + 1;
        let depth = (0..).take_while(|i| shapes.contains_key(format!("layer{s}.{i}.conv1.weight").as_str())).count();
        depths.push(depth);
        widths.push(first[0]);
    }
    if depths.is_empty() {
        return Err(fail("there is no layer1.0.conv1.weight".into()));
    }
    let placement = match (family, block) {
        (Family::ImageNet, BlockKind::Bottleneck) => StridePlacement::V1_5,
        _ => StridePlacement::V1,
    };
    let mut spec = ResNetSpec {
        name: String::new(),
        family,
        block,
        depths,
        widths,
        stem_width,
        residual: true,
        shortcut: Shortcut::B,
        stride_placement: placement,
        num_classes,
        in_channels,
    };
    spec.shortcut = infer_shortcut(&spec, &|name| shapes.contains_key(name)).map_err(fail)?;
    spec.validate().map_err(|e| fail(e.to_string()))?;
    spec.name = zoo_name(&spec).unwrap_or_else(|| generic_name(&spec));
    Ok(spec)
}

/// Compares where projections are with where each option puts them.
fn infer_shortcut(spec: &ResNetSpec, has: &dyn Fn(&str) -> bool) -> Result<Shortcut, String> {
    let blocks = spec.blocks();
    let changes: Vec<bool> = blocks.iter().map(|b| b.stride != 1 || b.cin != b.cout).collect();
    let projected: Vec<bool> = blocks.iter().map(|b| has(&format!("{}.downsample.0.weight", b.name))).collect();
    let any_change = changes.iter().any(|&c| c);
    if projected == changes {
        // Without any shape change, A and B are the same network: keep the family's default.
        return Ok(if !any_change && spec.family == Family::Cifar { Shortcut::A } else { Shortcut::B });
    }
    if projected.iter().all(|&p| p) {
        return Ok(Shortcut::C);
    }
    if projected.iter().all(|&p| !p) {
        return Ok(Shortcut::A);
    }
    let list = |want: bool| -> Vec<&str> {
        blocks.iter().zip(&projected).filter(|(_, &p)| p == want).map(|(b, _)| b.name.as_str()).collect()
    };
    Err(format!(
        "projection shortcuts on {} but not on {}, which is none of options A, B and C",
        list(true).join(", "),
        list(false).join(", ")
    ))
}

/// The zoo name whose spec (with this one's shortcut, classes and channels) equals this one.
fn zoo_name(spec: &ResNetSpec) -> Option<String> {
    let opts = ModelOptions {
        shortcut: Some(spec.shortcut),
        num_classes: Some(spec.num_classes),
        in_channels: Some(spec.in_channels),
    };
    let cifar_generic = (spec.family == Family::Cifar && spec.depths.len() == 3)
        .then(|| format!("cifar-resnet{}", 6 * spec.depths[0] + 2));
    ZOO.iter().map(|e| e.name.to_string()).chain(cifar_generic).find_map(|name| {
        let candidate = zoo::spec(&name, &opts).ok()?;
        (ResNetSpec { name: spec.name.clone(), ..candidate.clone() } == *spec).then_some(candidate.name)
    })
}

fn generic_name(spec: &ResNetSpec) -> String {
    let family = match spec.family {
        Family::ImageNet => "imagenet",
        Family::Cifar => "cifar",
    };
    let block = match spec.block {
        BlockKind::Basic => "basic",
        BlockKind::Bottleneck => "bottleneck",
    };
    let depths: Vec<String> = spec.depths.iter().map(usize::to_string).collect();
    format!("inferred-{family}-{block}-{}", depths.join("-"))
}
