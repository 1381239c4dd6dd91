//! Deep residual networks (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
//! 2015) on the CPU, as one dependency: the crates of the `resnet` workspace re-exported as
//! modules, and a [`prelude`] of what training and prediction need.
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`kernels`] | `resnet-kernels` | NHWC f32 compute kernels, threads, the aligned allocator |
//! | [`nn`] | `resnet-nn` | tensors, layers with backward passes, SGD |
//! | [`models`] | `resnet-models` | the paper's ImageNet and CIFAR networks ([`models::zoo`]) |
//! | [`data`] | `resnet-data` | datasets, preprocessing, augmentation, the loader |
//! | [`train`] | `resnet-train` | training runs, evaluation, checkpoints, metrics, plots |
//! | [`interop`] | `resnet-interop` | torchvision weights in and out, ONNX export |
//! | [`quant`] | `resnet-quant` | int8 post-training quantization and inference |
//!
//! Features (both on by default): `download` (fetching the public datasets and torchvision's
//! pretrained weights over HTTPS) and `plot` (training curves as PNG and SVG; without it nothing
//! is drawn). With `default-features = false` neither the HTTP client nor the plotting library is
//! built.
//!
//! A network of the zoo, run on a batch:
//!
//! ```
//! use resnet::prelude::*;
//!
//! let spec = zoo::spec("resnet20", &ModelOptions::default())?;
//! let mut net = ResNet::new(spec)?;
//! net.init(&InitConfig::default());
//! let images = Tensor::zeros([2, 32, 32, 3]); // NHWC, normalised
//! let logits = net.infer(&images);
//! assert_eq!(logits.shape(), [2, 1, 1, 10]);
//! # Ok::<(), resnet::models::ModelError>(())
//! ```
//!
//! Training (here ResNet-20 on the built-in synthetic dataset, as `resnet train` with no
//! arguments), then the top class of an image from the checkpoint it wrote:
//!
//! ```no_run
//! use resnet::prelude::*;
//! use std::path::Path;
//! use std::sync::atomic::AtomicBool;
//!
//! let mut config = TrainConfig::quickstart();
//! config.length = RunLength::Epochs(1);
//! let stop = AtomicBool::new(false); // set it (from a Ctrl-C handler, say) to stop cleanly
//! let summary = resnet::train::trainer::run(config, Path::new("runs/first"), false, &stop, &mut Silent)?;
//!
//! let checkpoint = Checkpoint::load(&summary.last_checkpoint)?;
//! let mut net = checkpoint.network(&summary.last_checkpoint)?;
//! let p = &checkpoint.preprocess;
//! let image = read_image(Path::new("cat.png"), p.channels)?;
//! let (pixels, shape) = prepare_views(&image, &p.eval_view, &p.normalize, p.input_size)?;
//! let logits = net.infer(&Tensor::from_vec(shape, pixels));
//! let best = (0..checkpoint.classes.len()).max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]));
//! println!("{}", checkpoint.classes[best.unwrap()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A program that trains should also use the kernels' cache-line-aligned allocator, as the
//! `resnet` command does: `#[global_allocator] static A: resnet::kernels::alloc::CacheAligned =
//! resnet::kernels::alloc::CacheAligned;`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use resnet_data as data;
pub use resnet_interop as interop;
pub use resnet_kernels as kernels;
pub use resnet_models as models;
pub use resnet_nn as nn;
pub use resnet_quant as quant;
pub use resnet_train as train;

pub mod prelude;
