//! The networks of He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (2015).
//!
//! - ImageNet networks (Table 1): ResNet-18/34 with basic blocks, ResNet-50/101/152 with
//!   bottleneck blocks, and their plain (shortcut-free) twins.
//! - CIFAR-10 networks (Section 4.2): `6n+2` layers, three stages of `2n` 3x3 layers on 16, 32 and
//!   64 filters, and their plain twins.
//! - Shortcut options (Section 3.3): A (identity with zero-padded channels), B (projections where
//!   the shape changes), C (projections everywhere).
//! - Stride placement: the paper's (stride 2 on the first 1x1 of a downsampling bottleneck, "v1")
//!   and torchvision's (stride on the 3x3, "v1.5").
//!
//! Every network is described by one [`ResNetSpec`] (see [`zoo`] for the named ones) and built by
//! [`ResNet::new`]; parameter names are torchvision's state-dict keys.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod atomic_file;
mod block;
mod error;
mod features;
mod groups;
mod init;
mod memory;
mod resnet;
mod spec;
mod state_dict;
mod summary;
mod transfer;
mod weights_file;
pub mod zoo;

pub use atomic_file::{temporary_path, temporary_target, write_atomic};
pub use block::{BackwardLens, Block, ConvBn, ReluAfter, ShortcutPath};
pub use error::ModelError;
pub use features::FeatureLayer;
pub use groups::LayerGroup;
pub use init::InitConfig;
pub use memory::BatchMemory;
pub use resnet::{GradientsReady, ResNet, StemLayers};
pub use resnet_nn::ops::BatchNormMode;
pub use spec::{limits, BlockKind, Family, ResNetSpec, Shortcut, StridePlacement};
pub use state_dict::{NamedTensor, StateDictError, TensorData};
pub use summary::{StageRow, Summary};
pub use transfer::InitReport;
pub use weights_file::{read_weights_file, MAX_WEIGHTS_FILE_BYTES};
