//! A network's state in torchvision's `state_dict()` form: the same keys, the same tensor layouts
//! (`[out, in, kh, kw]` convolution kernels), `running_mean`, `running_var` and
//! `num_batches_tracked` buffers. Checkpoints, imports and exports all go through it.

use crate::ResNet;
use resnet_nn::ops::BatchNorm2d;
use resnet_nn::ParamKind;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Values of a state tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Parameters and float buffers.
    F32(Vec<f32>),
    /// Integer buffers (`num_batches_tracked`).
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry of a state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// torchvision key.
    pub name: String,
    /// Shape in torchvision's layout.
    pub shape: Vec<usize>,
    /// Values, row-major in that layout.
    pub data: TensorData,
}

/// Why a state dict does not fit a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct StateDictError {
    /// Keys the network has and the state dict lacks.
    pub missing: Vec<String>,
    /// Keys the state dict has and the network does not.
    pub unexpected: Vec<String>,
    /// `(key, expected shape, found shape)`.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// `(key, element type found)` for tensors of the right shape but an integer type where
    /// floats are needed.
    pub wrong_type: Vec<(String, &'static str)>,
}

impl fmt::Display for StateDictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(8).map(String::as_str).collect();
            let more = if v.len() > 8 { format!(" and {} more", v.len() - 8) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("{} missing tensor(s): {}", self.missing.len(), list(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("{} unexpected tensor(s): {}", self.unexpected.len(), list(&self.unexpected)));
        }
        if !self.mismatched.is_empty() {
            let shown: Vec<String> = self
                .mismatched
                .iter()
                .take(8)
                .map(|(k, want, got)| format!("{k} (expected {want:?}, found {got:?})"))
                .collect();
            parts.push(format!("{} tensor(s) of the wrong shape: {}", self.mismatched.len(), shown.join(", ")));
        }
        if !self.wrong_type.is_empty() {
            let shown: Vec<String> =
                self.wrong_type.iter().take(8).map(|(k, found)| format!("{k} ({found}, expected F32)")).collect();
            parts.push(format!("{} tensor(s) of the wrong element type: {}", self.wrong_type.len(), shown.join(", ")));
        }
        write!(f, "the weights do not fit this network: {}", parts.join("; "))
    }
}

/// torchvision's shape of a parameter stored in our layout.
fn torch_shape(kind: ParamKind, shape: &[usize]) -> Vec<usize> {
    match kind {
        // [kh, kw, cin, cout] -> [cout, cin, kh, kw]
        ParamKind::ConvWeight => vec![shape[3], shape[2], shape[0], shape[1]],
        _ => shape.to_vec(),
    }
}

/// Moves a convolution kernel between our layout `[kh, kw, cin, cout]` and torchvision's
/// `[cout, cin, kh, kw]` (`shape` is ours); `to_torch` says which way.
fn convert_kernel(v: &[f32], shape: &[usize], to_torch: bool) -> Vec<f32> {
    let (kh, kw, ci, co) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![0.0; v.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    let ours = ((y * kw + x) * ci + i) * co + o;
                    let torch = ((o * ci + i) * kh + y) * kw + x;
                    if to_torch {
                        out[torch] = v[ours];
                    } else {
                        out[ours] = v[torch];
                    }
                }
            }
        }
    }
    out
}

impl ResNet {
    /// The state in torchvision's form and order: each layer's parameters, then its batch-norm
    /// buffers, exactly as `model.state_dict()`.
    pub fn state_dict(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        let bns: BTreeMap<&str, &BatchNorm2d> =
            self.batch_norms().into_iter().map(|bn| (bn.weight.name.trim_end_matches(".weight"), bn)).collect();
        for p in self.params() {
            let data = match p.kind {
                ParamKind::ConvWeight => convert_kernel(p.value(), &p.shape, true),
                _ => p.value().to_vec(),
            };
            out.push(NamedTensor {
                name: p.name.clone(),
                shape: torch_shape(p.kind, &p.shape),
                data: TensorData::F32(data),
            });
            if p.kind == ParamKind::BnBias {
                let prefix = p.name.trim_end_matches(".bias");
                let bn = bns[prefix];
                let c = bn.running_mean.len();
                out.push(NamedTensor {
                    name: format!("{prefix}.running_mean"),
                    shape: vec![c],
                    data: TensorData::F32(bn.running_mean.clone()),
                });
                out.push(NamedTensor {
                    name: format!("{prefix}.running_var"),
                    shape: vec![c],
                    data: TensorData::F32(bn.running_var.clone()),
                });
                out.push(NamedTensor {
                    name: format!("{prefix}.num_batches_tracked"),
                    shape: vec![],
                    data: TensorData::I64(vec![bn.num_batches_tracked as i64]),
                });
            }
        }
        out
    }

    /// Loads a state dict (torchvision keys and layouts). Every parameter and running statistic
    /// must be present with its exact shape and nothing else may be there; `num_batches_tracked`
    /// is optional.
    ///
    /// # Errors
    /// [`StateDictError`] listing every missing, unexpected and mis-shaped tensor; the network
    /// is left unchanged then.
    pub fn load_state_dict(&mut self, tensors: &[NamedTensor]) -> Result<(), StateDictError> {
        let by_name: BTreeMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let expected = self.state_dict();
        let mut err = StateDictError::default();
        let mut known = BTreeSet::new();
        for e in &expected {
            known.insert(e.name.as_str());
            let optional = e.name.ends_with("num_batches_tracked");
            match by_name.get(e.name.as_str()) {
                None if optional => {}
                None => err.missing.push(e.name.clone()),
                Some(t) => {
                    let shape_ok = t.shape == e.shape || (optional && t.data.len() == 1);
                    let kind_ok = matches!((&t.data, &e.data), (TensorData::F32(_), TensorData::F32(_))) || optional;
                    if !shape_ok || t.data.len() != e.data.len() {
                        err.mismatched.push((e.name.clone(), e.shape.clone(), t.shape.clone()));
                    } else if !kind_ok {
                        err.wrong_type.push((e.name.clone(), "I64"));
                    }
                }
            }
        }
        for t in tensors {
            if !known.contains(t.name.as_str()) {
                err.unexpected.push(t.name.clone());
            }
        }
        if !(err.missing.is_empty()
            && err.unexpected.is_empty()
            && err.mismatched.is_empty()
            && err.wrong_type.is_empty())
        {
            return Err(err);
        }
        let f32s = |name: &str| match &by_name[name].data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        };
        self.for_each_param(|p| {
            let v = f32s(&p.name);
            let value = match p.kind {
                ParamKind::ConvWeight => convert_kernel(&v, &p.shape, false),
                _ => v,
            };
            p.set_value(value);
        });
        self.for_each_batch_norm(|bn| {
            let prefix = bn.weight.name.trim_end_matches(".weight").to_string();
            bn.running_mean = f32s(&format!("{prefix}.running_mean"));
            bn.running_var = f32s(&format!("{prefix}.running_var"));
            if let Some(t) = by_name.get(format!("{prefix}.num_batches_tracked").as_str()) {
                bn.num_batches_tracked = match &t.data {
                    TensorData::I64(v) => v.first().copied().unwrap_or(0).max(0) as u64,
                    TensorData::F32(v) => v.first().copied().unwrap_or(0.0).max(0.0) as u64,
                };
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::zoo::{spec, ModelOptions};
    use crate::{InitConfig, ResNet};

    #[test]
    fn round_trip_is_exact_and_ordered_like_torchvision() {
        let mut a = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
        a.init(&InitConfig { seed: 5, ..InitConfig::default() });
        a.for_each_batch_norm(|bn| {
            bn.running_mean[0] = 0.5;
            bn.num_batches_tracked = 7;
        });
        let sd = a.state_dict();
        let names: Vec<&str> = sd.iter().take(6).map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "bn1.num_batches_tracked"
            ]
        );
        assert_eq!(sd[0].shape, vec![16, 3, 3, 3]);
        let mut b = ResNet::new(a.spec().clone()).unwrap();
        b.load_state_dict(&sd).unwrap();
        assert_eq!(b.state_dict(), sd);
    }

    #[test]
    fn mismatches_are_all_listed() {
        let a = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
        let mut b = ResNet::new(spec("resnet32", &ModelOptions::default()).unwrap()).unwrap();
        let err = b.load_state_dict(&a.state_dict()).unwrap_err();
        assert!(err.missing.iter().any(|k| k.starts_with("layer1.3")), "{err}");
        let c = ResNet::new(spec("resnet20", &ModelOptions { num_classes: Some(100), ..Default::default() }).unwrap())
            .unwrap();
        let err = b.load_state_dict(&c.state_dict()).unwrap_err();
        assert!(err.mismatched.iter().any(|(k, _, _)| k == "fc.weight"), "{err}");
        assert!(err.to_string().contains("fc.weight (expected [10, 64], found [100, 64])"), "{err}");
    }
}
