//! Interoperability for the networks of He, Zhang, Ren, Sun, "Deep Residual Learning for Image
//! Recognition" (2015): PyTorch weights in, torchvision weights and ONNX models out, with the
//! same numbers on both sides.
//!
//! - **torchvision state dicts** (Table 1's ResNet-18/34 and torchvision's v1.5 ResNet-50/101/152,
//!   the CIFAR nets of Section 4.2, any shortcut option of Section 3.3): read from safetensors
//!   ([`read_safetensors`]) or `torch.save` archives ([`read_pth`], through a restricted unpickler
//!   that executes nothing), written back bit-exactly ([`write_safetensors`],
//!   [`export_torchvision`]).
//! - **Architecture inference** from tensor names and shapes ([`infer_spec`]), so weights load
//!   without naming the network ([`load_weights`]).
//! - **ONNX export** ([`export_onnx`]): eval-mode graph, NCHW `input` with a dynamic batch
//!   dimension, `logits` out, opset [`onnx::OPSET`].
//! - **Image features** as `resnet embed` writes them ([`FeatureSet`]): safetensors with
//!   `features`, `labels` and the sources of the rows.
//! - **torchvision's ImageNet conventions**: [`imagenet_classes`] and [`torchvision_preset`].
//!
//! ```no_run
//! use std::path::Path;
//! let net = resnet_interop::load_weights(Path::new("resnet50.safetensors"), None)?;
//! assert_eq!(net.spec().name, "resnet50-v1.5");
//! resnet_interop::export_onnx(&net, Path::new("resnet50.onnx"), &Default::default())?;
//! # Ok::<(), resnet_interop::InteropError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod elem;
mod error;
mod features_file;
mod fsutil;
mod infer;
pub mod onnx;
mod pickle;
mod preset;
mod pth;
mod safetensors_file;

pub use error::InteropError;
pub use features_file::{FeatureSet, FEATURES_FORMAT};
pub use infer::infer_spec;
pub use onnx::{export_onnx, export_onnx_int8, InputFormat, OnnxOptions, Preprocessing};
pub use preset::{imagenet_classes, torchvision_preset};
pub use pth::read_pth;
pub use safetensors_file::{read_safetensors, write_safetensors};

use pth::parse_pth;
use resnet_models::zoo::{self, ModelOptions};
use resnet_models::{BlockKind, Family, NamedTensor, ResNet, ResNetSpec, StridePlacement};
use safetensors_file::parse_safetensors;
use std::path::Path;

/// How files of `torch.save` before PyTorch 1.6 begin: `PROTO 2`, then `LONG1` of 10 bytes (its
/// magic number).
pub(crate) const LEGACY_TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a";

/// The container a weight file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightsFormat {
    /// `safetensors.torch.save_file`.
    Safetensors,
    /// `torch.save` (a zip archive).
    Pth,
}

impl WeightsFormat {
    /// The format of these leading bytes: zip archives start with `PK\x03\x04`, legacy
    /// `torch.save` files with a protocol-2 pickle of a 10-byte integer (`\x80\x02\x8a\x0a`, a
    /// header length no safetensors file has); everything else is tried as safetensors, whose
    /// parser then says what is wrong.
    pub(crate) fn sniff(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(LEGACY_TORCH_MAGIC) {
            WeightsFormat::Pth
        } else {
            WeightsFormat::Safetensors
        }
    }
}

/// Reads a state dict from a safetensors file or a `torch.save` archive, told apart by content
/// (not by extension).
///
/// # Errors
/// Those of [`read_safetensors`] or [`read_pth`].
pub fn read_state_dict(path: &Path) -> Result<Vec<NamedTensor>, InteropError> {
    let bytes = fsutil::read(path)?;
    match WeightsFormat::sniff(&bytes) {
        WeightsFormat::Safetensors => parse_safetensors(&bytes, path),
        WeightsFormat::Pth => parse_pth(&bytes, path),
    }
}

/// Builds the network these tensors belong to and loads them. With `model`, that zoo network
/// (classes and input channels taken from `fc.weight` and `conv1.weight`); without, the
/// architecture [`infer_spec`] reads off the shapes. Loading is strict: every parameter and
/// running statistic must be there with its exact shape, and nothing else; `num_batches_tracked`
/// may be absent.
///
/// # Errors
/// [`InteropError::Model`] for an unknown name, [`InteropError::Infer`] when the shapes are not
/// a ResNet's, [`InteropError::WrongArchitecture`] listing every missing, unexpected and
/// mis-shaped tensor.
pub(crate) fn network_from_state_dict(tensors: &[NamedTensor], model: Option<&str>) -> Result<ResNet, InteropError> {
    let spec = match model {
        Some(name) => {
            let dim = |key: &str, axis: usize| {
                tensors.iter().find(|t| t.name == key).and_then(|t| t.shape.get(axis).copied())
            };
            let opts =
                ModelOptions { shortcut: None, num_classes: dim("fc.weight", 0), in_channels: dim("conv1.weight", 1) };
            zoo::spec(name, &opts)?
        }
        None => infer_spec(tensors)?,
    };
    let mut net = ResNet::new(spec)?;
    net.load_state_dict(tensors).map_err(|mismatch| InteropError::WrongArchitecture {
        path: None,
        model: net.spec().name.clone(),
        mismatch: Box::new(mismatch),
    })?;
    Ok(net)
}

/// A network with the weights of a torchvision-layout file (safetensors or `.pth`): the
/// `--weights FILE [--model NAME]` of the command line. With `model`, that zoo network (classes
/// and input channels taken from `fc.weight` and `conv1.weight`); without, the architecture
/// [`infer_spec`] reads off the shapes. Loading is strict: every parameter and running
/// statistic must be there with its exact shape, and nothing else; `num_batches_tracked` may be
/// absent.
///
/// # Errors
/// Those of [`read_state_dict`]; [`InteropError::Model`] for an unknown name,
/// [`InteropError::Infer`] when the shapes are not a ResNet's,
/// [`InteropError::WrongArchitecture`] listing every missing, unexpected and mis-shaped tensor;
/// each naming the file.
pub fn load_weights(path: &Path, model: Option<&str>) -> Result<ResNet, InteropError> {
    let tensors = read_state_dict(path)?;
    network_from_state_dict(&tensors, model).map_err(|e| e.at_path(path))
}

/// Writes a network's state in torchvision's safetensors layout: what
/// `safetensors.torch.save_file(model.state_dict(), path)` would write for the same weights, so
/// `model.load_state_dict(safetensors.torch.load_file(path))` takes it. Importing an `F32` file
/// and exporting the network gives back the file's tensors bit for bit (`num_batches_tracked` is
/// always written; a file without it gets zeros).
///
/// # Errors
/// [`InteropError::Write`] naming the file.
pub fn export_torchvision(net: &ResNet, path: &Path) -> Result<(), InteropError> {
    if let Some(reason) = torchvision_difference(net.spec()) {
        return Err(InteropError::NotTorchvision { model: net.spec().name.clone(), reason });
    }
    write_safetensors(path, &net.state_dict())
}

/// Why torchvision's class of the same name would compute something else from this network's
/// state dict, for the one case where every key and shape still matches: the paper's v1 stride
/// placement in ImageNet bottleneck nets (torchvision's `resnet50/101/152` are v1.5). Every
/// other difference (shortcut options A and C, plain nets) changes the keys, so torchvision's
/// strict `load_state_dict` refuses the file by itself.
pub fn torchvision_difference(spec: &ResNetSpec) -> Option<String> {
    (spec.family == Family::ImageNet
        && spec.block == BlockKind::Bottleneck
        && spec.stride_placement == StridePlacement::V1)
        .then(|| {
            "it uses the paper's v1 stride placement (stride 2 on the first 1x1 convolution of a \
             downsampling bottleneck), while torchvision's ResNet-50/101/152 put it on the 3x3 \
             convolution (v1.5): every key and shape would match, but torchvision's model would \
             compute different outputs"
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_are_not_mistaken_for_pickles() {
        // Regression: a ResNet-50 file's header length starts with the byte 0x80, as pickles do.
        let mut st = 0x5880u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert_eq!(WeightsFormat::sniff(&st), WeightsFormat::Safetensors);
        assert_eq!(WeightsFormat::sniff(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."), WeightsFormat::Pth);
        assert_eq!(WeightsFormat::sniff(b"PK\x03\x04\x14\x00"), WeightsFormat::Pth);
    }
}
