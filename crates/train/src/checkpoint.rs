//! Checkpoints: one safetensors file holding everything needed to evaluate, predict or resume.
//!
//! - The network's state under torchvision's keys and layouts (`conv1.weight`, ...,
//!   `fc.bias`, with batch-norm running statistics), so the file also loads in PyTorch with
//!   `model.load_state_dict(safetensors.torch.load_file(path), strict=False)`.
//! - `optimizer.velocity.<param>`: SGD momentum buffers (training checkpoints).
//! - `preprocess.pixel_mean`: the training set's mean image, when that is the normalisation.
//! - Metadata (JSON strings): `format`, `model` (the network's spec), `classes`, `preprocess`,
//!   and for training checkpoints `progress` (epoch, iteration, schedule and random-stream
//!   state, partial-epoch sums) and `config` (the run's resolved configuration), and for
//!   quantized checkpoints `quantization` (the int8 activation encodings, `resnet quantize`).

use crate::fsutil::{self, FileError};
use crate::schedule::ScheduleState;
use resnet_data::{EvalView, Normalize};
use resnet_models::{NamedTensor, ResNet, ResNetSpec, TensorData};
use resnet_quant::QuantRecord;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The value of the `format` metadata key.
const FORMAT: &str = "resnet-checkpoint-v1";

/// How inputs are prepared for the network (travels with the weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Normalisation of 8-bit pixels.
    pub normalize: Normalize,
    /// `(height, width)` the network was trained on.
    pub input_size: (usize, usize),
    /// Input channels.
    pub channels: usize,
    /// The evaluation view used with it.
    pub eval_view: EvalView,
}

/// Sums over the steps of an epoch so far (to resume mid-epoch with identical metrics).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// Sum of per-batch mean losses times batch size.
    pub loss: f64,
    /// Top-1 errors.
    pub errors: u64,
    /// Samples seen.
    pub samples: u64,
    /// Wall seconds spent training this epoch.
    pub seconds: f64,
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: u64,
    /// Batches of the current (incomplete) epoch already done.
    pub batch: u64,
    /// Optimisation steps done.
    pub iteration: u64,
    /// Best test (or validation) error seen, percent.
    pub best_error: Option<f64>,
    /// Learning-rate schedule state.
    pub schedule: ScheduleState,
    /// The current epoch's sums so far.
    pub partial: EpochSums,
    /// Random streams: every draw derives from `(seed, epoch, index)`, so this is the state.
    pub seed: u64,
}

/// The training part of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// SGD velocity per parameter name.
    pub velocity: Vec<(String, Vec<f32>)>,
    /// Position in the run.
    pub progress: Progress,
    /// The run's configuration (JSON of `TrainConfig`).
    pub config: serde_json::Value,
}

/// Everything a checkpoint file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Network structure.
    pub spec: ResNetSpec,
    /// Class names, by label.
    pub classes: Vec<String>,
    /// Input preparation.
    pub preprocess: Preprocess,
    /// Weights and buffers, torchvision form.
    pub state: Vec<NamedTensor>,
    /// Optimiser and progress (absent in exported weights).
    pub training: Option<TrainingState>,
    /// The int8 activation encodings of a quantized checkpoint (`resnet quantize`): with them
    /// the network runs as [`resnet_quant::QuantizedResNet`].
    pub quantization: Option<QuantRecord>,
}

/// Why a checkpoint cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a safetensors file, or a truncated one.
    #[error("{path}: not a readable safetensors file ({reason})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// A safetensors file that is not one of our checkpoints.
    #[error("{path}: not a resnet checkpoint ({reason})")]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A checkpoint that does not fit what it is used for.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Checkpoint {
    /// Builds the inference part of a checkpoint from a network.
    pub fn from_network(net: &ResNet, classes: Vec<String>, preprocess: Preprocess) -> Self {
        Self {
            spec: net.spec().clone(),
            classes,
            preprocess,
            state: net.state_dict(),
            training: None,
            quantization: None,
        }
    }

    /// A network with this checkpoint's weights.
    ///
    /// # Errors
    /// If the weights do not fit the spec (a damaged file).
    pub fn network(&self, path: &Path) -> Result<ResNet, CheckpointError> {
        let mismatch = |reason: String| CheckpointError::Mismatch { path: path.to_path_buf(), reason };
        let mut net = ResNet::new(self.spec.clone()).map_err(|e| mismatch(e.to_string()))?;
        net.load_state_dict(&self.state).map_err(|e| mismatch(e.to_string()))?;
        Ok(net)
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for t in &self.state {
            match &t.data {
                TensorData::F32(v) => owned.push((t.name.clone(), Dtype::F32, t.shape.clone(), f32_bytes(v))),
                TensorData::I64(v) => owned.push((t.name.clone(), Dtype::I64, t.shape.clone(), i64_bytes(v))),
            }
        }
        let mut preprocess = self.preprocess.clone();
        if let Normalize::PixelMean { mean, .. } = &mut preprocess.normalize {
            let (h, w) = preprocess.input_size;
            owned.push(("preprocess.pixel_mean".into(), Dtype::F32, vec![h, w, preprocess.channels], f32_bytes(mean)));
            mean.clear();
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("model".to_string(), serde_json::to_string(&self.spec).expect("spec serialises"));
        meta.insert("classes".to_string(), serde_json::to_string(&self.classes).expect("classes serialise"));
        meta.insert("preprocess".to_string(), serde_json::to_string(&preprocess).expect("preprocess serialises"));
        if let Some(t) = &self.training {
            for (name, v) in &t.velocity {
                owned.push((format!("optimizer.velocity.{name}"), Dtype::F32, vec![v.len()], f32_bytes(v)));
            }
            meta.insert("progress".to_string(), serde_json::to_string(&t.progress).expect("progress serialises"));
            meta.insert("config".to_string(), t.config.to_string());
        }
        if let Some(q) = &self.quantization {
            meta.insert("quantization".to_string(), serde_json::to_string(q).expect("record serialises"));
        }
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("consistent tensor")))
            .collect();
        safetensors::serialize(views, Some(meta)).expect("checkpoint serialises")
    }

    /// Writes the checkpoint atomically.
    ///
    /// # Errors
    /// [`CheckpointError::File`] naming the file; an existing file is left intact on failure.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        Ok(fsutil::write_atomic(path, &self.to_bytes())?)
    }

    /// Reads a checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError`] saying whether the file is unreadable (not a regular file, or larger
    /// than [`resnet_models::MAX_WEIGHTS_FILE_BYTES`]), not safetensors, truncated, or not one of
    /// ours.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        // A device, a FIFO or a file larger than any network within the model limits needs is
        // refused before anything is allocated for it.
        let bytes = resnet_models::read_weights_file(path).map_err(|e| FileError::new(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses checkpoint bytes (`path` is for messages).
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
        let not_ours = |reason: String| CheckpointError::NotACheckpoint { path: path.to_path_buf(), reason };
        let mismatch = |reason: String| CheckpointError::Mismatch { path: path.to_path_buf(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(not_ours(format!("format '{f}', expected '{FORMAT}'"))),
            None => return Err(not_ours(
                "no 'format' metadata; for plain torchvision weights use --weights with --model, or `resnet import`"
                    .into(),
            )),
        }
        let field = |k: &str| meta.get(k).ok_or_else(|| not_ours(format!("metadata lacks '{k}'")));
        let parse = |k: &str, v: &str| -> Result<serde_json::Value, CheckpointError> {
            serde_json::from_str(v).map_err(|e| not_ours(format!("metadata '{k}' is not valid JSON: {e}")))
        };
        let spec: ResNetSpec =
            serde_json::from_value(parse("model", field("model")?)?).map_err(|e| not_ours(format!("model: {e}")))?;
        let classes: Vec<String> = serde_json::from_value(parse("classes", field("classes")?)?)
            .map_err(|e| not_ours(format!("classes: {e}")))?;
        let mut preprocess: Preprocess = serde_json::from_value(parse("preprocess", field("preprocess")?)?)
            .map_err(|e| not_ours(format!("preprocess: {e}")))?;
        check_metadata(&spec, &classes, &preprocess).map_err(mismatch)?;
        let (mut state, mut velocity) = sort_tensors(&st, &mut preprocess).map_err(not_ours)?;
        check_mean_image(&preprocess).map_err(not_ours)?;
        let quantization: Option<QuantRecord> = match meta.get("quantization") {
            Some(q) => Some(
                serde_json::from_value(parse("quantization", q)?)
                    .map_err(|e| not_ours(format!("quantization: {e}")))?,
            ),
            None => None,
        };
        check_state(&spec, &mut state, &mut velocity, &preprocess, quantization.as_ref()).map_err(mismatch)?;
        let training = match meta.get("progress") {
            Some(p) => {
                let progress: Progress =
                    serde_json::from_value(parse("progress", p)?).map_err(|e| not_ours(format!("progress: {e}")))?;
                let config = parse("config", field("config")?)?;
                Some(TrainingState { velocity, progress, config })
            }
            None => None,
        };
        Ok(Self { spec, classes, preprocess, state, training, quantization })
    }
}

/// SGD momentum per parameter name.
type Velocity = Vec<(String, Vec<f32>)>;

/// The tensors of a checkpoint file sorted by what they are: the network's state, the momentum
/// (`optimizer.velocity.*`), and the mean image (`preprocess.pixel_mean`, put into `preprocess`).
fn sort_tensors(st: &SafeTensors<'_>, preprocess: &mut Preprocess) -> Result<(Vec<NamedTensor>, Velocity), String> {
    let mut state = Vec::new();
    let mut velocity = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ),
            Dtype::I64 => TensorData::I64(
                view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            ),
            other => return Err(format!("tensor {name} has type {other:?}; checkpoints hold F32 and I64")),
        };
        if let Some(param) = name.strip_prefix("optimizer.velocity.") {
            match data {
                TensorData::F32(v) => velocity.push((param.to_string(), v)),
                TensorData::I64(_) => return Err(format!("tensor {name} is not F32")),
            }
        } else if name == "preprocess.pixel_mean" {
            if let (Normalize::PixelMean { mean, .. }, TensorData::F32(v)) = (&mut preprocess.normalize, data) {
                *mean = v;
            }
        } else {
            state.push(NamedTensor { name, shape, data });
        }
    }
    Ok((state, velocity))
}

/// A mean image of the size the network's input is.
fn check_mean_image(preprocess: &Preprocess) -> Result<(), String> {
    if let Normalize::PixelMean { mean, .. } = &preprocess.normalize {
        let (h, w) = preprocess.input_size;
        if mean.len() != h * w * preprocess.channels {
            return Err(format!("the mean image has {} values, expected {h}x{w}x{}", mean.len(), preprocess.channels));
        }
    }
    Ok(())
}

/// Checks that the state is finite and fits the structure `spec` describes (and so does the
/// quantization record, if any), and puts the state and the momentum in torchvision's order.
fn check_state(
    spec: &ResNetSpec,
    state: &mut [NamedTensor],
    velocity: &mut Velocity,
    preprocess: &Preprocess,
    quantization: Option<&QuantRecord>,
) -> Result<(), String> {
    if let Some(name) = first_non_finite(state, &preprocess.normalize) {
        return Err(format!(
            "tensor '{name}' holds a value that is not finite (the training diverged); these weights cannot be used"
        ));
    }
    let mut net = ResNet::new(spec.clone()).map_err(|e| e.to_string())?;
    net.load_state_dict(state).map_err(|e| format!("the tensors do not match the model metadata: {e}"))?;
    if let Some(record) = quantization {
        record.check(&net).map_err(|e| e.to_string())?;
    }
    // Keep torchvision's order (safetensors stores keys sorted).
    let order: HashMap<String, usize> = net.state_dict().into_iter().enumerate().map(|(i, t)| (t.name, i)).collect();
    state.sort_by_key(|t| order.get(&t.name).copied().unwrap_or(usize::MAX));
    velocity.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(usize::MAX));
    Ok(())
}

/// Checks that the metadata agree with one another and stay within the model bounds, before
/// anything is allocated from them.
fn check_metadata(spec: &ResNetSpec, classes: &[String], pre: &Preprocess) -> Result<(), String> {
    spec.validate().map_err(|e| e.to_string())?;
    if classes.len() != spec.num_classes {
        return Err(format!(
            "the checkpoint lists {} class names but its classifier has {} outputs",
            classes.len(),
            spec.num_classes
        ));
    }
    if pre.channels != spec.in_channels {
        return Err(format!(
            "the preprocessing is for {} channel(s) but the network takes {}",
            pre.channels, spec.in_channels
        ));
    }
    let (h, w) = pre.input_size;
    let max = resnet_models::limits::MAX_INPUT_SIDE;
    if h == 0 || w == 0 || h > max || w > max {
        return Err(format!("the input size {h}x{w} is outside 1..={max} pixels"));
    }
    check_view(&pre.eval_view)
}

/// Bounds an evaluation view's sizes (each view is rendered at these sides) and its scale count.
pub fn check_view(view: &EvalView) -> Result<(), String> {
    let max = resnet_models::limits::MAX_INPUT_SIDE;
    let sides: Vec<usize> = match view {
        EvalView::Full => Vec::new(),
        EvalView::ResizeCenterCrop { resize, crop } | EvalView::TenCrop { resize, crop } => vec![*resize, *crop],
        EvalView::MultiScale { scales, crop } => {
            if scales.len() > MAX_SCALES {
                return Err(format!("{} scales; at most {MAX_SCALES} are supported", scales.len()));
            }
            scales.iter().chain([crop]).copied().collect()
        }
    };
    match sides.iter().find(|&&s| s > max) {
        Some(s) => Err(format!("an evaluation view of side {s}; at most {max} pixels are supported")),
        None => Ok(()),
    }
}

/// Scales of a multi-scale view (the paper uses five).
const MAX_SCALES: usize = 16;

/// The name of the first weight, buffer or mean image holding an infinity or a NaN.
fn first_non_finite(state: &[NamedTensor], normalize: &Normalize) -> Option<String> {
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    for t in state {
        if let TensorData::F32(v) = &t.data {
            if !finite(v) {
                return Some(t.name.clone());
            }
        }
    }
    match normalize {
        Normalize::PixelMean { mean, scale } if !finite(mean) || !scale.is_finite() => {
            Some("preprocess.pixel_mean".into())
        }
        Normalize::ChannelMeanStd { mean, std } if !finite(mean) || !finite(std) => {
            Some("preprocess (channel mean and std)".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resnet_models::zoo::{spec, ModelOptions};
    use resnet_models::InitConfig;

    fn sample() -> Checkpoint {
        let mut net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
        net.init(&InitConfig::default());
        let pre = Preprocess {
            normalize: Normalize::PixelMean { mean: (0..32 * 32 * 3).map(|i| i as f32).collect(), scale: 1.0 / 64.0 },
            input_size: (32, 32),
            channels: 3,
            eval_view: EvalView::Full,
        };
        let mut c = Checkpoint::from_network(&net, (0..10).map(|i| format!("c{i}")).collect(), pre);
        c.training = Some(TrainingState {
            velocity: vec![("conv1.weight".into(), vec![1.0; 432])],
            progress: Progress { epoch: 3, iteration: 1170, seed: 7, ..Progress::default() },
            config: serde_json::json!({"model": "resnet20"}),
        });
        c
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let back = Checkpoint::from_bytes(&c.to_bytes(), Path::new("x")).unwrap();
        assert_eq!(back, c);
        assert!(back.network(Path::new("x")).is_ok());
    }

    fn refused(c: &Checkpoint) -> String {
        match Checkpoint::from_bytes(&c.to_bytes(), Path::new("c.safetensors")) {
            Ok(_) => panic!("the checkpoint must be refused at load"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn metadata_that_disagrees_with_the_tensors_is_refused_at_load() {
        let mut c = sample();
        c.classes.truncate(3);
        let m = refused(&c);
        assert!(m.contains("c.safetensors") && m.contains("3 class names") && m.contains("10 outputs"), "{m}");
        let mut c = sample();
        c.spec.widths = vec![16, 32, 128];
        let m = refused(&c);
        assert!(m.contains("c.safetensors") && m.contains("layer3.0.conv1.weight"), "{m}");
        let mut c = sample();
        c.spec.depths = vec![3, 3, 4];
        assert!(refused(&c).contains("missing"));
        let mut c = sample();
        c.preprocess.normalize = Normalize::ChannelMeanStd { mean: vec![0.5], std: vec![0.25] };
        c.preprocess.channels = 1;
        assert!(refused(&c).contains("channel"));
    }

    #[test]
    fn non_finite_weights_are_refused_at_load_with_the_tensor_name() {
        let mut c = sample();
        let t = c.state.iter_mut().find(|t| t.name == "layer2.1.bn1.running_var").unwrap();
        if let TensorData::F32(v) = &mut t.data {
            v[3] = f32::INFINITY;
        }
        let m = refused(&c);
        assert!(m.contains("layer2.1.bn1.running_var") && m.contains("not finite"), "{m}");
    }

    #[test]
    fn absurd_depths_in_metadata_are_refused_without_building() {
        let mut c = sample();
        c.spec.depths = vec![100_000_000, 3, 3];
        let m = refused(&c);
        assert!(m.contains("blocks; at most"), "{m}");
        let mut c = sample();
        c.preprocess.eval_view = EvalView::ResizeCenterCrop { resize: 1 << 30, crop: 32 };
        assert!(refused(&c).contains("1073741824"));
        let mut c = sample();
        c.preprocess.eval_view = EvalView::MultiScale { scales: vec![256; 100_000], crop: 32 };
        assert!(refused(&c).contains("scales"));
        let mut c = sample();
        c.preprocess.normalize = Normalize::ChannelMeanStd { mean: vec![0.5; 3], std: vec![0.25; 3] };
        c.preprocess.input_size = (usize::MAX / 2, 4);
        refused(&c);
    }

    #[test]
    fn damaged_and_foreign_files_are_refused_with_reasons() {
        let bytes = sample().to_bytes();
        let err = Checkpoint::from_bytes(&bytes[..bytes.len() / 2], Path::new("half.safetensors")).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().starts_with("half.safetensors: not a readable safetensors file"), "{err}");
        let err = Checkpoint::from_bytes(b"hello, world", Path::new("t.txt")).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        let plain = safetensors::serialize(
            vec![("fc.bias", TensorView::new(Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap())],
            None::<HashMap<String, String>>,
        )
        .unwrap();
        let err = Checkpoint::from_bytes(&plain, Path::new("w.safetensors")).unwrap_err();
        assert!(err.to_string().contains("not a resnet checkpoint"), "{err}");
    }
}
