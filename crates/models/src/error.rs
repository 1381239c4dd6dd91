//! Errors of model construction.

/// Why a network cannot be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The name is not in the zoo and not a generic CIFAR name.
    #[error("unknown model '{name}'; `resnet models` lists the known ones (generic CIFAR nets: cifar-resnet<6n+2>, cifar-plain<6n+2>)")]
    UnknownModel {
        /// The name given.
        name: String,
    },
    /// A CIFAR depth that is not `6n+2`.
    #[error("CIFAR networks have 6n+2 layers (20, 32, 44, 56, 110, ...); {depth} is not of that form")]
    BadCifarDepth {
        /// The depth given.
        depth: usize,
    },
    /// An option that does not fit the network.
    #[error("invalid configuration for {model}: {reason}")]
    InvalidConfig {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer the network does not have (see [`FeatureLayer`](crate::FeatureLayer)).
    #[error("{model} has no {layer}: its layers are stem, layer1 to layer{stages}, and features")]
    NoSuchLayer {
        /// The model.
        model: String,
        /// The layer asked for.
        layer: String,
        /// Stages the network has.
        stages: usize,
    },
    /// An input the network cannot take.
    #[error("{model} cannot take a {h}x{w}x{c} input: {reason}")]
    BadInput {
        /// The model.
        model: String,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
        /// Channels.
        c: usize,
        /// Why.
        reason: String,
    },
}
