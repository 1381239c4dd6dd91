//! What a quantized checkpoint carries besides the float state: the 8-bit range of every
//! activation the int8 network stores, and how the ranges were found. The int8 weights are a
//! function of the float weights (batch norm folded in, one symmetric scale per output
//! channel), so they are derived when the network is built rather than stored twice.

use crate::QuantError;
use resnet_models::ResNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The value of [`QuantRecord::format`].
pub const RECORD_FORMAT: &str = "resnet-int8-v1";

/// How the activation ranges were chosen from the calibration images.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The largest value seen.
    MinMax,
    /// The given percentile of the values seen (robust to rare outliers).
    Percentile(f64),
}

/// The 8-bit encoding of one activation: value `q` stands for `(q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationQuant {
    /// Real value of one step.
    pub scale: f32,
    /// The byte standing for zero (0 after a ReLU).
    pub zero_point: u8,
}

impl ActivationQuant {
    /// The signed encoding of `[-max_abs, max_abs]` in 127 steps each way (zero point 0).
    pub fn symmetric(max_abs: f32) -> Self {
        if max_abs <= f32::MIN_POSITIVE {
            return ActivationQuant { scale: 1.0, zero_point: 0 };
        }
        ActivationQuant { scale: max_abs / 127.0, zero_point: 0 }
    }

    /// The encoding of the range `[lo, hi]` (widened to hold zero) in 255 steps.
    pub fn for_range(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= f32::MIN_POSITIVE {
            // An activation that is zero everywhere: any scale encodes it.
            return ActivationQuant { scale: 1.0, zero_point: 0 };
        }
        let scale = (hi - lo) / 255.0;
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        ActivationQuant { scale, zero_point }
    }

    fn check(&self, name: &str) -> Result<(), QuantError> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(QuantError::BadRange {
                name: name.into(),
                reason: format!("scale {} is not positive", self.scale),
            });
        }
        Ok(())
    }
}

/// A quantized checkpoint's record (JSON in its `quantization` metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantRecord {
    /// [`RECORD_FORMAT`].
    pub format: String,
    /// How the ranges were found.
    pub method: Method,
    /// Calibration images seen.
    pub calibration_images: usize,
    /// The configuration of the run that trained the float network (its `dataset`, `data`, ...),
    /// or for imported weights the calibration dataset's: what commands take as the checkpoint's
    /// own dataset when none is given.
    #[serde(default)]
    pub run_config: Option<serde_json::Value>,
    /// The encoding of each activation point (see [`activation_points`]).
    pub activations: BTreeMap<String, ActivationQuant>,
    /// The layers whose outputs are kept in higher precision (`avgpool`: the classifier's input;
    /// records before int8 classifier weights name `fc`).
    pub float_layers: Vec<String>,
}

impl QuantRecord {
    /// Checks that the record is this version's and has exactly the network's activation points
    /// with usable encodings.
    ///
    /// # Errors
    /// [`QuantError`] naming the first problem.
    pub fn check(&self, net: &ResNet) -> Result<(), QuantError> {
        if self.format != RECORD_FORMAT {
            return Err(QuantError::Format(self.format.clone()));
        }
        let points = activation_points(net);
        for p in &points {
            self.activations.get(p).ok_or_else(|| QuantError::MissingActivation(p.clone()))?.check(p)?;
        }
        if let Some(extra) = self.activations.keys().find(|k| !points.contains(k)) {
            return Err(QuantError::UnknownActivation(extra.clone()));
        }
        Ok(())
    }

    /// The encoding of activation point `name`.
    ///
    /// # Errors
    /// If the record lacks it.
    pub fn get(&self, name: &str) -> Result<ActivationQuant, QuantError> {
        self.activations.get(name).copied().ok_or_else(|| QuantError::MissingActivation(name.into()))
    }
}

/// The activations the int8 network stores in 8 bits, by name: `input` (the normalised image),
/// `conv1` (the stem's output after its ReLU; max pooling keeps its encoding), each block's
/// inner unit outputs after their ReLU (`layer1.0.conv1`, named after the convolution that
/// produces them), each projection shortcut's output (`layer1.0.downsample.0`, signed: no ReLU)
/// and each block's output (`layer1.0`).
pub fn activation_points(net: &ResNet) -> Vec<String> {
    let mut points = vec!["input".to_string(), unit_name(&net.stem.unit)];
    for block in &net.blocks {
        let inner = &block.units[..block.units.len() - 1];
        points.extend(inner.iter().map(unit_name));
        points.extend(projection(block).map(unit_name));
        points.push(block.name.clone());
    }
    points
}

/// A block's projection shortcut, if it has one.
pub fn projection(block: &resnet_models::Block) -> Option<&resnet_models::ConvBn> {
    match &block.shortcut {
        resnet_models::ShortcutPath::Projection(p) => Some(p),
        _ => None,
    }
}

/// A unit's name, as the record's activation points name it: its convolution's
/// (`layer1.0.conv1`).
pub fn unit_name(unit: &resnet_models::ConvBn) -> String {
    unit.conv.weight.name.trim_end_matches(".weight").to_string()
}
