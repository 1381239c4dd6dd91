//! Integration tests of resnet-interop: our eval-mode logits against PyTorch's and
//! onnxruntime's, genuine PyTorch files, round trips, and the errors wrong files produce.
//! Fixtures are written by tools/interop/make_fixtures.py.

mod common;
mod errors;
mod files;
mod generated;
mod hostile;
mod onnx;
