//! What training and prediction need, in one `use resnet::prelude::*;`.

pub use resnet_data::{open, prepare_views, read_image, DataError, DatasetKind, OpenOptions, Splits};
pub use resnet_interop::{export_onnx, load_weights, InteropError};
pub use resnet_models::zoo::{self, ModelOptions};
pub use resnet_models::{BatchNormMode, InitConfig, ModelError, ResNet, ResNetSpec};
pub use resnet_nn::ops::softmax_rows;
pub use resnet_nn::Tensor;
pub use resnet_train::checkpoint::{Checkpoint, CheckpointError};
pub use resnet_train::config::{RunLength, TrainConfig};
pub use resnet_train::trainer::{Observer, RunSummary, Silent, TrainError};
