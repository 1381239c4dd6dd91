//! The one error type of the crate. Every variant names the file it is about (when there is one)
//! and says what is wrong in its `Display`, so a message alone tells the user what to fix.

use resnet_models::{ModelError, StateDictError};
use std::path::{Path, PathBuf};

/// `"path: "`, or nothing for data that did not come from a file.
fn at(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

/// Why weights cannot be read, matched to a network or written.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    // ----- int8 -----
    /// A quantization record that does not fit the network it is exported with.
    #[error("the quantization record does not fit the network: {0}")]
    Quantization(String),

    // ----- files -----
    /// The file cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file cannot be written.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },

    // ----- safetensors -----
    /// Not a safetensors file (and not a PyTorch archive either).
    #[error("{}: not a safetensors file ({reason})", path.display())]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// A file that ends before the data its header promises.
    #[error("{}: truncated file: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// How much is missing.
        detail: String,
    },
    /// A tensor whose element type cannot be turned into weights.
    #[error("{}: tensor '{tensor}' {shape:?} has element type {dtype}; weights must be F32, F16, BF16 or F64 (and num_batches_tracked I64)", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its element type.
        dtype: String,
    },

    // ----- PyTorch .pth archives -----
    /// A zip archive that is not what `torch.save` writes.
    #[error("{}: not a PyTorch state-dict archive ({reason})", path.display())]
    NotPthArchive {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A pickle global outside the allow-list (it would run code in Python).
    #[error("{}: refused to load: data.pkl names the global '{module}.{name}' (byte {offset}); only plain tensor state dicts are read, and nothing in the file is executed", path.display())]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// The global's module.
        module: String,
        /// The global's name.
        name: String,
        /// Position in data.pkl.
        offset: usize,
    },
    /// A pickle opcode outside the allow-list.
    #[error("{}: refused to load: data.pkl uses the pickle opcode {name} (0x{code:02x}, byte {offset}), which plain tensor state dicts never use", path.display())]
    ForbiddenOpcode {
        /// The file.
        path: PathBuf,
        /// The opcode's name (pickletools' spelling).
        name: &'static str,
        /// The opcode byte.
        code: u8,
        /// Position in data.pkl.
        offset: usize,
    },
    /// A pickle that is malformed, or uses an allowed opcode or global in an unsupported way.
    #[error("{}: cannot read data.pkl at byte {offset}: {reason}", path.display())]
    BadPickle {
        /// The file.
        path: PathBuf,
        /// Position in data.pkl.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds something other than a name -> tensor mapping.
    #[error("{}: not a state dict: {reason}", path.display())]
    NotAStateDict {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A tensor whose shape, strides or offset do not fit its storage.
    #[error("{}: tensor '{tensor}' {shape:?}: {reason}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },

    // ----- features files -----
    /// A safetensors file that does not hold image features as `resnet embed` writes them.
    #[error("{}: not a features file: {reason}", path.display())]
    BadFeatures {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    // ----- matching weights to networks -----
    /// The architecture cannot be read off the tensor shapes.
    #[error(
        "{}cannot infer the architecture from the tensor shapes: {reason}; name the network with --model",
        at(path)
    )]
    Infer {
        /// The file, when the tensors came from one.
        path: Option<PathBuf>,
        /// What does not fit a torchvision-style ResNet.
        reason: String,
    },
    /// The weights are not those of the requested network.
    #[error("{}these are not weights for {model}: {mismatch}", at(path))]
    WrongArchitecture {
        /// The file, when the tensors came from one.
        path: Option<PathBuf>,
        /// The network they were matched against.
        model: String,
        /// Every missing, unexpected and mis-shaped tensor.
        mismatch: Box<StateDictError>,
    },
    /// A torchvision file was asked for a network torchvision's class does not reproduce.
    #[error("{model} cannot be written as a torchvision state dict: {reason}")]
    NotTorchvision {
        /// The network.
        model: String,
        /// What torchvision's class would do differently.
        reason: String,
    },
    /// The network cannot be built (unknown name, bad options).
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl InteropError {
    /// Attaches `path` to the errors about in-memory tensors that do not carry one yet.
    pub(crate) fn at_path(mut self, file: &Path) -> Self {
        if let InteropError::Infer { path, .. } | InteropError::WrongArchitecture { path, .. } = &mut self {
            if path.is_none() {
                *path = Some(file.to_path_buf());
            }
        }
        self
    }
}
