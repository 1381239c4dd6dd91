//! Starting a network from another one's trained state (fine-tuning): every tensor whose key and
//! shape match is taken, the classifier is made anew for another class count, and the first
//! convolution is adapted to another input channel count.

use crate::groups::LayerGroup;
use crate::state_dict::{NamedTensor, StateDictError, TensorData};
use crate::ResNet;
use std::collections::{BTreeMap, BTreeSet};

/// What [`ResNet::init_from`] took from the state dict and what it left as initialised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Keys loaded as they are.
    pub kept: Vec<String>,
    /// Keys loaded after adapting them, with how.
    pub adapted: Vec<(String, String)>,
    /// Keys left as initialised (the classifier of another class count), with why.
    pub new: Vec<(String, String)>,
}

impl InitReport {
    /// One paragraph for a person: how many tensors were kept, and each adapted or new one.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!("kept {} tensor(s) as they are", self.kept.len())];
        lines.extend(self.adapted.iter().map(|(k, how)| format!("adapted {k}: {how}")));
        lines.extend(self.new.iter().map(|(k, why)| format!("new {k}: {why}")));
        lines.join("\n")
    }
}

/// The first convolution's kernel `[cout, src, kh, kw]` (torchvision's layout) for `dst` input
/// channels, keeping its response to a grey image: fewer channels sum the source channels that
/// fold onto them (RGB to grey sums the three filters, as timm does), more channels repeat them
/// scaled by `src / dst`.
fn adapt_input_channels(kernel: &[f32], shape: &[usize], dst: usize) -> Vec<f32> {
    let (cout, src, area) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut out = vec![0.0; cout * dst * area];
    for o in 0..cout {
        for i in 0..src.max(dst) {
            let (from, to) = (i % src, i % dst);
            let scale = if dst > src { src as f32 / dst as f32 } else { 1.0 };
            let s = &kernel[(o * src + from) * area..][..area];
            let d = &mut out[(o * dst + to) * area..][..area];
            d.iter_mut().zip(s).for_each(|(d, s)| *d += s * scale);
        }
    }
    out
}

impl ResNet {
    /// Loads `tensors` (torchvision keys and layouts) as the starting point of fine-tuning. Every
    /// tensor whose key and shape match is taken; the classifier (`fc.*`) keeps its initial
    /// values where its shape differs (another class count) or the state has none; `conv1.weight`
    /// of another input channel count is adapted (see [`InitReport`]). `num_batches_tracked` may
    /// be absent. Anything else (a missing, unexpected or mis-shaped tensor) means the state is
    /// another architecture's, and nothing is loaded.
    ///
    /// # Errors
    /// [`StateDictError`] naming every tensor that does not fit.
    pub fn init_from(&mut self, tensors: &[NamedTensor]) -> Result<InitReport, StateDictError> {
        let by_name: BTreeMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut state = self.state_dict();
        let known: BTreeSet<String> = state.iter().map(|t| t.name.clone()).collect();
        let mut report = InitReport::default();
        let mut err = StateDictError::default();
        for own in &mut state {
            let classifier = LayerGroup::of(&own.name) == Some(LayerGroup::Classifier);
            let counter = own.name.ends_with("num_batches_tracked");
            let Some(&t) = by_name.get(own.name.as_str()) else {
                if classifier {
                    report.new.push((own.name.clone(), "not in the weights".into()));
                } else if !counter {
                    err.missing.push(own.name.clone());
                }
                continue;
            };
            let same_type = matches!(
                (&t.data, &own.data),
                (TensorData::F32(_), TensorData::F32(_)) | (TensorData::I64(_), TensorData::I64(_))
            );
            let same_shape = t.shape == own.shape || (counter && t.data.len() == 1);
            match (&t.data, same_shape && same_type) {
                (_, true) => {
                    own.data = t.data.clone();
                    report.kept.push(own.name.clone());
                }
                _ if classifier => report.new.push((
                    own.name.clone(),
                    format!("{:?} here, {:?} in the weights (another class count)", own.shape, t.shape),
                )),
                (TensorData::F32(v), false)
                    if own.name == "conv1.weight"
                        && t.shape.len() == 4
                        && t.shape[0] == own.shape[0]
                        && t.shape[2..] == own.shape[2..]
                        && t.shape[1] > 0
                        && v.len() == t.shape.iter().product::<usize>() =>
                {
                    let dst = own.shape[1];
                    own.data = TensorData::F32(adapt_input_channels(v, &t.shape, dst));
                    let how = if dst < t.shape[1] { "summed" } else { "repeated and scaled" };
                    report.adapted.push((
                        own.name.clone(),
                        format!("the filters of {} input channel(s) {how} for {dst}", t.shape[1]),
                    ));
                }
                _ if !same_type => err.wrong_type.push((own.name.clone(), "I64")),
                _ => err.mismatched.push((own.name.clone(), own.shape.clone(), t.shape.clone())),
            }
        }
        err.unexpected = tensors.iter().filter(|t| !known.contains(&t.name)).map(|t| t.name.clone()).collect();
        if !(err.missing.is_empty()
            && err.unexpected.is_empty()
            && err.mismatched.is_empty()
            && err.wrong_type.is_empty())
        {
            return Err(err);
        }
        self.load_state_dict(&state)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{spec, ModelOptions};
    use crate::InitConfig;

    fn net(model: &str, classes: usize, channels: usize, seed: u64) -> ResNet {
        let opts = ModelOptions { num_classes: Some(classes), in_channels: Some(channels), ..ModelOptions::default() };
        let mut n = ResNet::new(spec(model, &opts).unwrap()).unwrap();
        n.init(&InitConfig { seed, ..InitConfig::default() });
        n
    }

    fn tensor<'a>(state: &'a [NamedTensor], name: &str) -> &'a NamedTensor {
        state.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn a_new_class_count_keeps_the_backbone_and_reports_a_new_classifier() {
        let source = net("resnet20", 10, 3, 1);
        let mut target = net("resnet20", 5, 3, 2);
        let fc_before = target.fc.weight.value().to_vec();
        let report = target.init_from(&source.state_dict()).unwrap();
        let names: Vec<&str> = report.new.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["fc.weight", "fc.bias"]);
        assert!(report.new[0].1.contains("[5, 64]") && report.new[0].1.contains("[10, 64]"), "{report:?}");
        assert!(report.adapted.is_empty());
        let (s, t) = (source.state_dict(), target.state_dict());
        assert_eq!(report.kept.len(), s.len() - 2);
        for k in &report.kept {
            assert_eq!(tensor(&s, k), tensor(&t, k), "{k}");
        }
        assert_eq!(target.fc.weight.value(), fc_before.as_slice());
        assert!(report.describe().contains("new fc.weight"));
    }

    #[test]
    fn rgb_filters_are_summed_for_grey_inputs_and_repeated_for_more() {
        let source = net("resnet20", 10, 3, 3);
        let mut grey = net("resnet20", 10, 1, 4);
        let report = grey.init_from(&source.state_dict()).unwrap();
        assert_eq!(report.adapted.len(), 1, "{report:?}");
        let (src, dst) = (source.state_dict(), grey.state_dict());
        let (src, dst) = (tensor(&src, "conv1.weight"), tensor(&dst, "conv1.weight"));
        let (TensorData::F32(s), TensorData::F32(d)) = (&src.data, &dst.data) else { panic!() };
        // [16, 3, 3, 3] -> [16, 1, 3, 3]: each output filter is the sum of its three.
        for o in 0..16 {
            for k in 0..9 {
                let sum: f32 = (0..3).map(|c| s[(o * 3 + c) * 9 + k]).sum();
                assert!((d[o * 9 + k] - sum).abs() < 1e-6);
            }
        }
        // Grey to RGB: a grey image (the same value on each channel) gives the same response.
        let mut rgb = net("resnet20", 10, 3, 5);
        rgb.init_from(&grey.state_dict()).unwrap();
        let back = rgb.state_dict();
        let TensorData::F32(b) = &tensor(&back, "conv1.weight").data else { panic!() };
        for o in 0..16 {
            for k in 0..9 {
                let sum: f32 = (0..3).map(|c| b[(o * 3 + c) * 9 + k]).sum();
                assert!((d[o * 9 + k] - sum).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn another_architecture_is_refused_naming_the_tensor_and_nothing_is_loaded() {
        let deeper = net("resnet32", 10, 3, 6);
        let mut target = net("resnet20", 10, 3, 7);
        let before = target.state_dict();
        let err = target.init_from(&deeper.state_dict()).unwrap_err().to_string();
        assert!(err.contains("unexpected") && err.contains("layer1.3.conv1.weight"), "{err}");
        assert_eq!(target.state_dict(), before);
        let wider = net("resnet18", 10, 3, 8);
        let mut r34 = net("resnet34", 10, 3, 9);
        let err = r34.init_from(&wider.state_dict()).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("layer1.2.conv1.weight"), "{err}");
        let projection = {
            let opts = ModelOptions { shortcut: Some(crate::Shortcut::B), ..ModelOptions::default() };
            ResNet::new(spec("resnet20", &opts).unwrap()).unwrap()
        };
        let mut mismatched = net("resnet20", 10, 3, 10);
        let mut state = mismatched.state_dict();
        state.iter_mut().find(|t| t.name == "layer2.0.conv1.weight").unwrap().shape = vec![32, 16, 1, 9];
        let err = mismatched.init_from(&state).unwrap_err().to_string();
        assert!(err.contains("layer2.0.conv1.weight (expected [32, 16, 3, 3], found [32, 16, 1, 9])"), "{err}");
        let err = mismatched.init_from(&projection.state_dict()).unwrap_err().to_string();
        assert!(err.contains("layer2.0.downsample.0.weight"), "{err}");
    }
}
