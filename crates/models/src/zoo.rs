//! The named networks: one table, one row per network of the paper.

use crate::spec::{BlockKind, Family, ResNetSpec, Shortcut, StridePlacement};
use crate::ModelError;

/// A named network.
#[derive(Clone, Copy, Debug)]
pub struct ZooEntry {
    /// Name used on the command line.
    pub name: &'static str,
    /// Family.
    pub family: Family,
    /// Block type.
    pub block: BlockKind,
    /// Blocks per stage.
    pub depths: &'static [usize],
    /// `false` for plain twins.
    pub residual: bool,
    /// Stride placement (bottlenecks only).
    pub placement: StridePlacement,
    /// Where in the paper it appears.
    pub source: &'static str,
}

const fn imagenet(
    name: &'static str,
    block: BlockKind,
    depths: &'static [usize],
    residual: bool,
    placement: StridePlacement,
    source: &'static str,
) -> ZooEntry {
    ZooEntry { name, family: Family::ImageNet, block, depths, residual, placement, source }
}

const fn cifar(name: &'static str, n: &'static [usize], residual: bool) -> ZooEntry {
    ZooEntry {
        name,
        family: Family::Cifar,
        block: BlockKind::Basic,
        depths: n,
        residual,
        placement: StridePlacement::V1,
        source: "Sec. 4.2, Table 6",
    }
}

use BlockKind::{Basic, Bottleneck};
use StridePlacement::{V1, V1_5};

/// Every named network.
pub const ZOO: &[ZooEntry] = &[
    imagenet("resnet18", Basic, &[2, 2, 2, 2], true, V1, "Table 1"),
    imagenet("resnet34", Basic, &[3, 4, 6, 3], true, V1, "Table 1"),
    imagenet("resnet50", Bottleneck, &[3, 4, 6, 3], true, V1, "Table 1"),
    imagenet("resnet101", Bottleneck, &[3, 4, 23, 3], true, V1, "Table 1"),
    imagenet("resnet152", Bottleneck, &[3, 8, 36, 3], true, V1, "Table 1"),
    imagenet("resnet50-v1.5", Bottleneck, &[3, 4, 6, 3], true, V1_5, "torchvision"),
    imagenet("resnet101-v1.5", Bottleneck, &[3, 4, 23, 3], true, V1_5, "torchvision"),
    imagenet("resnet152-v1.5", Bottleneck, &[3, 8, 36, 3], true, V1_5, "torchvision"),
    imagenet("plain18", Basic, &[2, 2, 2, 2], false, V1, "Table 2"),
    imagenet("plain34", Basic, &[3, 4, 6, 3], false, V1, "Table 2"),
    cifar("resnet20", &[3, 3, 3], true),
    cifar("resnet32", &[5, 5, 5], true),
    cifar("resnet44", &[7, 7, 7], true),
    cifar("resnet56", &[9, 9, 9], true),
    cifar("resnet110", &[18, 18, 18], true),
    cifar("resnet1202", &[200, 200, 200], true),
    cifar("plain20", &[3, 3, 3], false),
    cifar("plain32", &[5, 5, 5], false),
    cifar("plain44", &[7, 7, 7], false),
    cifar("plain56", &[9, 9, 9], false),
    cifar("plain110", &[18, 18, 18], false),
    cifar("plain1202", &[200, 200, 200], false),
];

/// Choices that apply to any named network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// Shortcut option; default B for ImageNet nets (torchvision), A for CIFAR nets (the paper).
    pub shortcut: Option<Shortcut>,
    /// Classes; default 1000 (ImageNet) or 10 (CIFAR).
    pub num_classes: Option<usize>,
    /// Input channels; default 3.
    pub in_channels: Option<usize>,
}

/// The CIFAR network with `6n+2` layers.
pub fn cifar_spec(n: usize, residual: bool, opts: &ModelOptions) -> ResNetSpec {
    let depth = 6 * n + 2;
    ResNetSpec {
        name: if residual { format!("resnet{depth}") } else { format!("plain{depth}") },
        family: Family::Cifar,
        block: Basic,
        depths: vec![n; 3],
        widths: vec![16, 32, 64],
        stem_width: 16,
        residual,
        shortcut: opts.shortcut.unwrap_or(Shortcut::A),
        stride_placement: V1,
        num_classes: opts.num_classes.unwrap_or(10),
        in_channels: opts.in_channels.unwrap_or(3),
    }
}

fn from_entry(e: &ZooEntry, opts: &ModelOptions) -> ResNetSpec {
    match e.family {
        Family::Cifar => cifar_spec(e.depths[0], e.residual, opts),
        Family::ImageNet => ResNetSpec {
            name: e.name.to_string(),
            family: Family::ImageNet,
            block: e.block,
            depths: e.depths.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem_width: 64,
            residual: e.residual,
            shortcut: opts.shortcut.unwrap_or(Shortcut::B),
            stride_placement: e.placement,
            num_classes: opts.num_classes.unwrap_or(1000),
            in_channels: opts.in_channels.unwrap_or(3),
        },
    }
}

/// The spec of a named network: a zoo name, `resnet18-v1.5`/`resnet34-v1.5` (the same networks as
/// `resnet18`/`resnet34`), or `cifar-resnet<6n+2>` / `cifar-plain<6n+2>` for any CIFAR depth.
///
/// # Errors
/// [`ModelError::UnknownModel`], [`ModelError::BadCifarDepth`], or an invalid option.
pub fn spec(name: &str, opts: &ModelOptions) -> Result<ResNetSpec, ModelError> {
    let lower = name.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "resnet18-v1.5" => "resnet18",
        "resnet34-v1.5" => "resnet34",
        other => other,
    };
    let spec = if let Some(e) = ZOO.iter().find(|e| e.name == canonical) {
        from_entry(e, opts)
    } else if let Some((residual, digits)) = canonical
        .strip_prefix("cifar-resnet")
        .map(|d| (true, d))
        .or_else(|| canonical.strip_prefix("cifar-plain").map(|d| (false, d)))
    {
        let depth: usize = digits.parse().map_err(|_| ModelError::UnknownModel { name: name.to_string() })?;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(ModelError::BadCifarDepth { depth });
        }
        let mut s = cifar_spec((depth - 2) / 6, residual, opts);
        s.name = canonical.to_string();
        s
    } else {
        return Err(ModelError::UnknownModel { name: name.to_string() });
    };
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(spec("resnet20", &ModelOptions::default()).unwrap().depth(), 20);
        assert_eq!(spec("resnet152", &ModelOptions::default()).unwrap().depth(), 152);
        assert_eq!(spec("plain34", &ModelOptions::default()).unwrap().depth(), 34);
        let s = spec("cifar-resnet50", &ModelOptions::default()).unwrap();
        assert_eq!((s.family, s.depth()), (Family::Cifar, 50));
        assert_eq!(spec("resnet50", &ModelOptions::default()).unwrap().family, Family::ImageNet);
        assert!(matches!(
            spec("cifar-resnet21", &ModelOptions::default()),
            Err(ModelError::BadCifarDepth { depth: 21 })
        ));
        assert!(matches!(spec("vgg16", &ModelOptions::default()), Err(ModelError::UnknownModel { .. })));
        for e in ZOO {
            let s = spec(e.name, &ModelOptions::default()).unwrap();
            assert_eq!(s.name, e.name);
        }
    }
}
