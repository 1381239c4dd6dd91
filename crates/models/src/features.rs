//! Image features for retrieval and linear probes: the global average of the stem's output, of
//! any stage's last block, or of the last stage (the classifier's input, He et al. 2015, Sec. 3.4:
//! "global average pooling" before the fully-connected layer), computed in inference mode.

use crate::spec::ResNetSpec;
use crate::{ModelError, ResNet};
use resnet_kernels::threads;
use resnet_nn::ops::BatchNormMode;
use resnet_nn::Tensor;
use std::fmt;
use std::str::FromStr;

/// A layer whose output, averaged over its height and width, serves as an image's features.
///
/// Parses from `stem`, `layer1` ... `layerK` (torchvision's stage names) and `features`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FeatureLayer {
    /// The stem's output (after the max pooling of ImageNet nets).
    Stem,
    /// The output of the last block of stage `k`, counted from 1 (`layer{k}`).
    Stage(usize),
    /// The classifier's input: the last stage's output ([`ResNet::features`]).
    #[default]
    Final,
}

impl FeatureLayer {
    /// Blocks of `spec` the forward pass runs to reach this layer.
    ///
    /// # Errors
    /// [`ModelError::NoSuchLayer`] for a stage the network does not have.
    pub fn blocks_in(self, spec: &ResNetSpec) -> Result<usize, ModelError> {
        match self {
            FeatureLayer::Stem => Ok(0),
            FeatureLayer::Final => Ok(spec.depths.iter().sum()),
            FeatureLayer::Stage(k) if (1..=spec.depths.len()).contains(&k) => Ok(spec.depths[..k].iter().sum()),
            FeatureLayer::Stage(_) => Err(ModelError::NoSuchLayer {
                model: spec.name.clone(),
                layer: self.to_string(),
                stages: spec.depths.len(),
            }),
        }
    }

    /// Channels of this layer's features in `spec`: the `c` of [`ResNet::embed`]'s output.
    ///
    /// # Errors
    /// [`ModelError::NoSuchLayer`] for a stage the network does not have.
    pub fn channels_in(self, spec: &ResNetSpec) -> Result<usize, ModelError> {
        self.blocks_in(spec)?;
        Ok(match self {
            FeatureLayer::Stem => spec.stem_width,
            FeatureLayer::Stage(k) => spec.widths[k - 1] * spec.block.expansion(),
            FeatureLayer::Final => spec.feature_channels(),
        })
    }
}

impl FromStr for FeatureLayer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "stem" => return Ok(FeatureLayer::Stem),
            "features" => return Ok(FeatureLayer::Final),
            _ => {}
        }
        match crate::groups::stage_number(&lower) {
            Some(k) => Ok(FeatureLayer::Stage(k)),
            _ => Err(format!(
                "unknown layer '{s}'; the layers are stem, layer1, layer2, ... (the last block of that stage) \
                 and features (the classifier's input)"
            )),
        }
    }
}

impl fmt::Display for FeatureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureLayer::Stem => f.write_str("stem"),
            FeatureLayer::Stage(k) => write!(f, "layer{k}"),
            FeatureLayer::Final => f.write_str("features"),
        }
    }
}

impl ResNet {
    /// The features of a batch at `layer`: its output averaged over height and width, in eval
    /// mode (running batch-norm statistics) through the memory-light pass of [`ResNet::infer`];
    /// only the blocks up to `layer` run. [`FeatureLayer::Final`] gives what
    /// [`ResNet::features`] holds after `forward(x, BatchNormMode::Eval)` (and computes the
    /// logits too); a stage leaves [`ResNet::features`] and [`ResNet::logits`] as they were.
    ///
    /// # Shapes
    /// `x`: `[n, h, w, c_in]`; the result `[n, 1, 1, c]`, `c` the layer's channels
    /// ([`FeatureLayer::channels_in`]).
    ///
    /// # Errors
    /// [`ModelError::NoSuchLayer`] for a stage the network does not have,
    /// [`ModelError::BadInput`] for an input it cannot take.
    ///
    /// # Examples
    /// ```
    /// use resnet_models::{zoo, FeatureLayer, InitConfig, ResNet};
    /// use resnet_nn::Tensor;
    ///
    /// let mut net = ResNet::new(zoo::spec("cifar-resnet8", &zoo::ModelOptions::default())?)?;
    /// net.init(&InitConfig::default());
    /// let x = Tensor::from_vec([2, 8, 8, 3], (0..384).map(|i| (i % 5) as f32 - 2.0).collect());
    /// let stage2 = net.embed(&x, "layer2".parse().unwrap())?;
    /// assert_eq!(stage2.shape(), [2, 1, 1, 32]); // the second stage has 32 filters
    /// let last = net.embed(&x, FeatureLayer::Final)?.clone();
    /// assert_eq!(&last, net.features());
    /// assert!(net.embed(&x, FeatureLayer::Stage(4)).is_err()); // CIFAR nets have three stages
    /// # Ok::<(), resnet_models::ModelError>(())
    /// ```
    pub fn embed(&mut self, x: &Tensor, layer: FeatureLayer) -> Result<&Tensor, ModelError> {
        let blocks = layer.blocks_in(self.spec())?;
        self.check_input(x.shape())?;
        Ok(threads::install_awake(move || self.run(x, BatchNormMode::Eval, true, blocks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BlockKind, Family, Shortcut, StridePlacement};
    use crate::zoo::{spec, ModelOptions};
    use crate::InitConfig;

    fn input(shape: [usize; 4]) -> Tensor {
        let len = shape.iter().product();
        Tensor::from_vec(shape, (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect())
    }

    /// `net` with He weights and running statistics moved away from their initial values (so
    /// that eval mode differs from training mode).
    fn trained(s: ResNetSpec, x: &Tensor) -> ResNet {
        let mut net = ResNet::new(s).unwrap();
        net.init(&InitConfig { seed: 3, ..InitConfig::default() });
        net.forward(x, BatchNormMode::Train);
        net
    }

    /// A small ImageNet-family network (7x7 stem with max pooling, bottlenecks, projections).
    fn small_imagenet() -> ResNetSpec {
        ResNetSpec {
            name: "small-bottleneck".into(),
            family: Family::ImageNet,
            block: BlockKind::Bottleneck,
            depths: vec![2, 1, 2],
            widths: vec![4, 8, 8],
            stem_width: 8,
            residual: true,
            shortcut: Shortcut::B,
            stride_placement: StridePlacement::V1_5,
            num_classes: 5,
            in_channels: 3,
        }
    }

    /// Mean over height and width of an NHWC tensor, `[n * c]`.
    fn spatial_mean(t: &Tensor) -> Vec<f32> {
        let [n, h, w, c] = t.shape();
        let mut out = vec![0.0f64; n * c];
        for (p, px) in t.data().chunks_exact(c).enumerate() {
            let img = p / (h * w);
            out[img * c..(img + 1) * c].iter_mut().zip(px).for_each(|(o, v)| *o += f64::from(*v));
        }
        out.into_iter().map(|v| (v / (h * w) as f64) as f32).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * scale, "{what}: element {i} is {g}, want {w}");
        }
    }

    #[test]
    fn layers_parse_and_print() {
        for (text, layer) in [
            ("stem", FeatureLayer::Stem),
            ("layer1", FeatureLayer::Stage(1)),
            (" Layer12 ", FeatureLayer::Stage(12)),
            ("features", FeatureLayer::Final),
        ] {
            assert_eq!(text.parse::<FeatureLayer>(), Ok(layer), "{text}");
            assert_eq!(layer.to_string().parse::<FeatureLayer>(), Ok(layer));
        }
        for bad in ["layer0", "layer", "layer-1", "layer2.1", "conv1", ""] {
            let e = bad.parse::<FeatureLayer>().unwrap_err();
            assert!(e.contains(&format!("'{bad}'")) && e.contains("layer1"), "{bad}: {e}");
        }
        assert_eq!(FeatureLayer::default(), FeatureLayer::Final);
    }

    #[test]
    fn final_embedding_is_the_pooled_features_of_an_eval_forward() {
        for (s, side) in [(spec("resnet20", &ModelOptions::default()).unwrap(), 12), (small_imagenet(), 40)] {
            let x = input([3, side, side, 3]);
            let mut net = trained(s, &x);
            let logits = net.forward(&x, BatchNormMode::Eval).clone();
            let want = net.features().clone();
            let mut lean = net.clone();
            let got = lean.embed(&x, FeatureLayer::Final).unwrap();
            assert_eq!(got.shape(), [3, 1, 1, net.spec().feature_channels()]);
            assert_eq!(got, &want, "{}", net.spec().name);
            assert_eq!(lean.logits(), &logits, "{}: the classifier ran on them", net.spec().name);
            assert_eq!(FeatureLayer::Final.channels_in(net.spec()), Ok(want.c()));
        }
    }

    #[test]
    fn stage_embedding_is_the_mean_of_that_stage_last_block_output() {
        for (s, side) in [(spec("resnet20", &ModelOptions::default()).unwrap(), 12), (small_imagenet(), 40)] {
            let x = input([2, side, side, 3]);
            let mut net = trained(s, &x);
            net.forward(&x, BatchNormMode::Eval);
            let name = net.spec().name.clone();
            let mut lean = net.clone();
            let logits = lean.infer(&x).clone();
            let before = lean.features().clone();
            let mut last = 0;
            for k in 1..=net.spec().depths.len() {
                last += net.spec().depths[k - 1];
                let block = &net.blocks[last - 1];
                assert!(block.name.starts_with(&format!("layer{k}.")), "{name}: {}", block.name);
                let got = lean.embed(&x, FeatureLayer::Stage(k)).unwrap().clone();
                assert_eq!(got.shape(), [2, 1, 1, block.output().c()], "{name} layer{k}");
                assert_eq!(FeatureLayer::Stage(k).channels_in(net.spec()), Ok(got.c()));
                assert_close(got.data(), &spatial_mean(block.output()), &format!("{name} layer{k}"));
            }
            let stem = lean.embed(&x, FeatureLayer::Stem).unwrap().clone();
            assert_eq!(FeatureLayer::Stem.channels_in(net.spec()), Ok(stem.c()));
            assert_close(stem.data(), &spatial_mean(net.stem.output()), &format!("{name} stem"));
            assert_eq!(lean.features(), &before, "{name}: a stage's embedding leaves the features alone");
            // The buffers handed around by the partial passes leave a full pass unchanged.
            assert_eq!(lean.infer(&x), &logits, "{name}");
        }
    }

    #[test]
    fn a_stage_the_network_lacks_is_an_error_naming_it() {
        let s = spec("resnet20", &ModelOptions::default()).unwrap();
        let mut net = ResNet::new(s).unwrap();
        let e = net.embed(&input([1, 8, 8, 3]), FeatureLayer::Stage(4)).unwrap_err();
        assert!(matches!(&e, ModelError::NoSuchLayer { stages: 3, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("resnet20 has no layer4") && text.contains("layer3"), "{text}");
        assert!(FeatureLayer::Stage(0).blocks_in(net.spec()).is_err());
        assert!(FeatureLayer::Stage(4).channels_in(net.spec()).is_err());
        let e = net.embed(&input([1, 8, 8, 1]), FeatureLayer::Stem).unwrap_err();
        assert!(matches!(e, ModelError::BadInput { c: 1, .. }), "{e:?}");
    }
}
