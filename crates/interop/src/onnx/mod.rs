//! ONNX export of any network of the zoo, in eval mode.
//!
//! The graph takes `input`, NCHW `float` `[batch, channels, height, width]` with a symbolic
//! `batch` (and, unless fixed by [`OnnxOptions::input_size`], symbolic `height` and `width`),
//! and returns `logits`, `[batch, classes]`. Every layer of He et al. 2015 maps to one standard
//! operator of opset [`OPSET`]:
//! - convolution + batch norm (Section 3.4): `Conv` (no bias) then `BatchNormalization` with the
//!   running statistics. Batch norm is kept as its own node rather than folded into the
//!   convolution, so the file holds exactly the state dict's tensors and numbers; runtimes fuse
//!   the pair themselves.
//! - `Relu`; the residual addition `y = F(x) + x` (Eq. 1) is `Add` then `Relu`.
//! - shortcut option B/C projections (Eq. 2): `Conv` 1x1 with the block's stride + batch norm.
//! - shortcut option A (Section 3.3): `Slice` with steps 2 on height and width (when the block
//!   subsamples), then `Pad` of the channels with zeros, `(cout - cin) / 2` before, the rest after.
//! - ImageNet stem's 3x3/2 `MaxPool`; then `GlobalAveragePool`, `Flatten`, `Gemm` (`fc`).
//!
//! Initializer names are torchvision's state-dict keys (`layer1.0.conv1.weight`), nodes are
//! named after their layers (`layer1.0.conv1`).
//!
//! Without [`OnnxOptions::preprocessing`] the graph takes inputs already normalised the way the
//! network was trained. With it, the normalisation is inside the graph (see [`Preprocessing`]):
//! `input` is then raw pixel values, `uint8` NHWC `[batch, height, width, channels]` or `float`
//! NCHW on the 0..255 scale, and the graph computes `(pixel - offset) * scale` before the first
//! convolution. Resizing and cropping stay outside: the image must already have the input size.

pub mod proto;
mod quantized;

pub use quantized::export_onnx_int8;

use crate::fsutil;
use crate::InteropError;
use proto::*;
use resnet_models::{Block, ConvBn, NamedTensor, ResNet, ResNetSpec, ShortcutPath, TensorData};
use resnet_nn::ops::{BatchNorm2d, Conv2d, Linear};
use resnet_quant::QuantRecord;
use std::collections::HashMap;
use std::path::Path;

/// The default-domain opset the graph is written for.
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17 (ONNX 1.12); every current runtime reads it.
pub const IR_VERSION: i64 = 8;

/// Choices for [`export_onnx`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxOptions {
    /// Fixed `(height, width)` of the input; `None` leaves them symbolic (any size works: the
    /// network ends in global average pooling). A per-pixel offset fixes them to its size.
    pub input_size: Option<(usize, usize)>,
    /// Normalisation inside the graph, taking raw pixels; `None`: the input is already normalised.
    pub preprocessing: Option<Preprocessing>,
    /// Extra `metadata_props` entries (key, value).
    pub metadata: Vec<(String, String)>,
}

/// The layout and type of the graph's `input` when it includes preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// `uint8` `[batch, height, width, channels]`: decoded image bytes as they come.
    Uint8Nhwc,
    /// `float` `[batch, channels, height, width]` holding pixel values on the 0..255 scale.
    FloatNchw,
}

impl InputFormat {
    /// The command-line spelling (`uint8-nhwc`, `float-nchw`).
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Uint8Nhwc => "uint8-nhwc",
            InputFormat::FloatNchw => "float-nchw",
        }
    }
}

/// Normalisation in the graph: `x = (pixel - offset) * scale` with pixels on the 0..255 scale.
/// `offset` and `scale` hold one value, one per channel, or (offset only) one per pixel and
/// channel, HWC order: the paper's per-pixel mean is `offset` = the mean image and `scale` = 1/64;
/// torchvision's `(p / 255 - mean) / std` is `offset` = 255 mean and `scale` = 1 / (255 std).
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessing {
    /// The graph input's layout and type.
    pub format: InputFormat,
    /// Subtracted from the pixels.
    pub offset: Vec<f32>,
    /// `(height, width)` of a per-pixel `offset`; `None` when it is per channel or one value.
    pub offset_size: Option<(usize, usize)>,
    /// Multiplies the difference (one value or one per channel).
    pub scale: Vec<f32>,
}

/// A convolution's `Conv` attributes.
fn conv_attributes(conv: &Conv2d) -> Vec<AttributeProto> {
    let (k, s, p) = (conv.k as i64, conv.stride as i64, conv.pad as i64);
    vec![
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("strides", &[s, s]),
        attr_ints("pads", &[p, p, p, p]),
        attr_ints("dilations", &[1, 1]),
        attr_int("group", 1),
    ]
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: ints.to_vec(), ..Default::default() }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f, ..Default::default() }
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: data_type::INT64,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// `[1, C, H, W]` (or `[1, C, 1, 1]`, `[1]`) broadcast shape of per-pixel HWC, per-channel or
/// single values, and the values in that NCHW order.
fn nchw_constant(values: &[f32], channels: usize, size: Option<(usize, usize)>) -> (Vec<usize>, Vec<f32>) {
    match size {
        Some((h, w)) => {
            let mut out = vec![0.0; values.len()];
            for y in 0..h {
                for x in 0..w {
                    for c in 0..channels {
                        out[(c * h + y) * w + x] = values[(y * w + x) * channels + c];
                    }
                }
            }
            (vec![1, channels, h, w], out)
        }
        None if values.len() == 1 => (vec![1], values.to_vec()),
        None => (vec![1, values.len(), 1, 1], values.to_vec()),
    }
}

fn dim(size: Option<usize>, param: &str) -> Dimension {
    Dimension {
        value: Some(match size {
            Some(s) => DimensionValue::DimValue(s as i64),
            None => DimensionValue::DimParam(param.into()),
        }),
    }
}

fn float_value(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    typed_value(name, data_type::FLOAT, dims)
}

fn typed_value(name: &str, elem_type: i32, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim: dims }) }),
        }),
        doc_string: String::new(),
    }
}

/// Nodes and initializers in the making.
struct Builder {
    state: HashMap<String, NamedTensor>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder {
    /// Adds `op` named `name`; its single output value is also called `name`.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        name.to_string()
    }

    /// The state-dict tensor `key` as an initializer; returns its name.
    fn weight(&mut self, key: &str) -> String {
        let t = self.state.remove(key).unwrap_or_else(|| panic!("{key} is not in the network's state dict"));
        let TensorData::F32(v) = &t.data else { panic!("{key} is not a float tensor") };
        self.initializers.push(TensorProto {
            dims: t.shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: key.into(),
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        key.to_string()
    }

    fn conv(&mut self, conv: &Conv2d, x: &str) -> String {
        let w = self.weight(&conv.weight.name);
        self.node("Conv", conv.weight.name.trim_end_matches(".weight"), &[x, &w], conv_attributes(conv))
    }

    fn batch_norm(&mut self, bn: &BatchNorm2d, x: &str) -> String {
        let prefix = bn.weight.name.trim_end_matches(".weight").to_string();
        let inputs: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|k| self.weight(&format!("{prefix}.{k}")))
            .collect();
        let refs: Vec<&str> = std::iter::once(x).chain(inputs.iter().map(String::as_str)).collect();
        // ONNX's momentum weighs the old estimate, PyTorch's the new batch; unused at inference.
        let attrs = vec![attr_float("epsilon", bn.eps), attr_float("momentum", 1.0 - bn.momentum)];
        self.node("BatchNormalization", &prefix, &refs, attrs)
    }

    fn unit(&mut self, unit: &ConvBn, x: &str) -> String {
        let y = self.conv(&unit.conv, x);
        self.batch_norm(&unit.bn, &y)
    }

    fn block(&mut self, block: &Block, x: &str) -> String {
        let mut y = x.to_string();
        let last = block.units.len() - 1;
        for (i, unit) in block.units.iter().enumerate() {
            y = self.unit(unit, &y);
            if i < last {
                y = self.node("Relu", &format!("{y}.relu"), &[&y], vec![]);
            }
        }
        let shortcut = match &block.shortcut {
            ShortcutPath::None => None,
            ShortcutPath::Identity => Some(x.to_string()),
            ShortcutPath::Projection(p) => Some(self.unit(p, x)),
            ShortcutPath::Pad(op, _) => Some(self.pad_shortcut(block, op, x)),
        };
        if let Some(s) = shortcut {
            y = self.node("Add", &format!("{}.add", block.name), &[&y, &s], vec![]);
        }
        self.node("Relu", &format!("{}.relu", block.name), &[&y], vec![])
    }

    /// The option-A shortcut of `block` on `x`: subsampling, then zero channels.
    fn pad_shortcut(&mut self, block: &Block, op: &resnet_nn::ops::PadShortcut, x: &str) -> String {
        let mut s = x.to_string();
        if op.stride > 1 {
            // x[:, :, ::stride, ::stride]: the same samples as the strided convolution.
            let name = format!("{}.shortcut.subsample", block.name);
            let starts = self.constant(&format!("{name}.starts"), &[0, 0]);
            let ends = self.constant(&format!("{name}.ends"), &[i64::MAX, i64::MAX]);
            let axes = self.constant(&format!("{name}.axes"), &[2, 3]);
            let stride = op.stride as i64;
            let steps = self.constant(&format!("{name}.steps"), &[stride, stride]);
            s = self.node("Slice", &name, &[&s, &starts, &ends, &axes, &steps], vec![]);
        }
        if op.cout > op.cin {
            let before = ((op.cout - op.cin) / 2) as i64;
            let after = (op.cout - op.cin) as i64 - before;
            let name = format!("{}.shortcut.pad", block.name);
            // [n, c, h, w] starts, then ends.
            let pads = self.constant(&format!("{name}.pads"), &[0, before, 0, 0, 0, after, 0, 0]);
            s = self.node("Pad", &name, &[&s, &pads], vec![]);
        }
        s
    }

    fn constant(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(int64_tensor(name, values));
        name.to_string()
    }

    /// The stem, its pooling and the blocks of the float network on `x`.
    fn float_body(&mut self, net: &ResNet, x: &str) -> String {
        let mut x = self.unit(&net.stem.unit, x);
        x = self.node("Relu", "relu", &[&x], vec![]);
        x = self.max_pool(net, &x);
        for block in &net.blocks {
            x = self.block(block, &x);
        }
        x
    }

    /// The ImageNet stem's max pooling on `x` (none for CIFAR nets).
    fn max_pool(&mut self, net: &ResNet, x: &str) -> String {
        let Some(pool) = &net.stem.pool else { return x.to_string() };
        let (k, s, p) = (pool.k as i64, pool.stride as i64, pool.pad as i64);
        let attrs =
            vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[s, s]), attr_ints("pads", &[p, p, p, p])];
        self.node("MaxPool", "maxpool", &[x], attrs)
    }

    /// The preprocessing nodes in front of the network, on `c`-channel input `x`: to NCHW
    /// float where the input is 8-bit NHWC, then `(x - offset) * scale`.
    fn preprocess(&mut self, pre: &Preprocessing, c: usize, x: &str) -> String {
        let mut x = x.to_string();
        if pre.format == InputFormat::Uint8Nhwc {
            x = self.node("Cast", "preprocess.cast", &[&x], vec![attr_int("to", i64::from(data_type::FLOAT))]);
            x = self.node("Transpose", "preprocess.nchw", &[&x], vec![attr_ints("perm", &[0, 3, 1, 2])]);
        }
        let (dims, offset) = nchw_constant(&pre.offset, c, pre.offset_size);
        self.initializers.push(float_tensor("preprocess.offset", &dims, &offset));
        let (dims, scale) = nchw_constant(&pre.scale, c, None);
        self.initializers.push(float_tensor("preprocess.scale", &dims, &scale));
        x = self.node("Sub", "preprocess.sub", &[&x, "preprocess.offset"], vec![]);
        self.node("Mul", "preprocess.mul", &[&x, "preprocess.scale"], vec![])
    }
}

/// The ONNX model of a network in eval mode (see the module docs for the graph).
///
/// # Panics
/// If the network's layers and its state dict disagree (a bug, not an input error).
pub(crate) fn onnx_model(net: &ResNet, opts: &OnnxOptions) -> ModelProto {
    model(net, opts, None)
}

/// The ONNX model of `net`: float, or with `record` the QDQ graph of its int8 network
/// (`quantized.rs`).
pub(crate) fn model(net: &ResNet, opts: &OnnxOptions, record: Option<&QuantRecord>) -> ModelProto {
    let spec = net.spec();
    let mut b = Builder {
        state: net.state_dict().into_iter().map(|t| (t.name.clone(), t)).collect(),
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let mut x = "input".to_string();
    if let Some(pre) = &opts.preprocessing {
        x = b.preprocess(pre, spec.in_channels, &x);
    }
    x = match record {
        None => b.float_body(net, &x),
        Some(record) => b.int8_body(net, record, &x),
    };
    x = b.node("GlobalAveragePool", "avgpool", &[&x], vec![]);
    x = b.node("Flatten", "flatten", &[&x], vec![attr_int("axis", 1)]);
    let (w, bias) = match record {
        None => (b.weight(&net.fc.weight.name), b.weight(&net.fc.bias.name)),
        Some(_) => b.int8_classifier_weights(&net.fc),
    };
    b.nodes.push(NodeProto {
        input: vec![x, w, bias],
        output: vec!["logits".into()],
        name: "fc".into(),
        op_type: "Gemm".into(),
        attribute: vec![attr_int("transB", 1)],
        ..Default::default()
    });
    // Only num_batches_tracked (training bookkeeping) may be left over.
    let left: Vec<&String> = b.state.keys().filter(|k| !k.ends_with("num_batches_tracked")).collect();
    assert!(left.is_empty(), "state tensors missing from the ONNX graph: {left:?}");

    let (input, input_doc) = graph_input(spec, opts);
    let output = float_value("logits", vec![dim(None, "batch"), dim(Some(spec.num_classes), "")]);
    let spec_json = serde_json::to_string(spec).expect("a spec serialises");
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "resnet-interop".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: format!(
            "{}{} (He et al. 2015, Deep Residual Learning for Image Recognition), eval mode; input {input_doc}",
            spec.name,
            if record.is_some() { ", int8 (QDQ)" } else { "" }
        ),
        graph: Some(GraphProto {
            node: b.nodes,
            name: spec.name.clone(),
            initializer: b.initializers,
            doc_string: String::new(),
            input: vec![input],
            output: vec![output],
            value_info: Vec::new(),
        }),
        metadata_props: std::iter::once(("resnet.spec".to_string(), spec_json))
            .chain(std::iter::once(("resnet.input".to_string(), input_doc)))
            .chain(opts.metadata.iter().cloned())
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
    }
}

/// The graph's input (shape and element type) and its description.
fn graph_input(spec: &ResNetSpec, opts: &OnnxOptions) -> (ValueInfoProto, String) {
    let fixed = opts.preprocessing.as_ref().and_then(|p| p.offset_size).or(opts.input_size);
    let (h, w) = match fixed {
        Some((h, w)) => (Some(h), Some(w)),
        None => (None, None),
    };
    let c = Some(spec.in_channels);
    let input = match opts.preprocessing.as_ref().map(|p| p.format) {
        Some(InputFormat::Uint8Nhwc) => typed_value(
            "input",
            data_type::UINT8,
            vec![dim(None, "batch"), dim(h, "height"), dim(w, "width"), dim(c, "")],
        ),
        _ => float_value("input", vec![dim(None, "batch"), dim(c, ""), dim(h, "height"), dim(w, "width")]),
    };
    let input_doc = match opts.preprocessing.as_ref().map(|p| p.format) {
        Some(f) => format!("{} raw pixels (0..255), normalised inside the graph", f.name()),
        None => "NCHW float, already normalised as in training".to_string(),
    };
    (input, input_doc)
}

/// Writes the ONNX model of `net` to `path` (atomically).
///
/// # Errors
/// [`InteropError::Write`] naming the file.
pub fn export_onnx(net: &ResNet, path: &Path, opts: &OnnxOptions) -> Result<(), InteropError> {
    let bytes = prost::Message::encode_to_vec(&onnx_model(net, opts));
    fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use resnet_models::zoo::{spec, ModelOptions};

    fn ops(m: &ModelProto) -> Vec<&str> {
        m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.as_str()).collect()
    }

    #[test]
    fn option_a_becomes_slice_and_pad_and_the_model_decodes() {
        let net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
        let m = onnx_model(&net, &OnnxOptions::default());
        let back = ModelProto::decode(m.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, m);
        let ops = ops(&m);
        // Two subsampling blocks (16 -> 32, 32 -> 64), each one Slice and one Pad.
        assert_eq!(ops.iter().filter(|&&o| o == "Slice").count(), 2);
        assert_eq!(ops.iter().filter(|&&o| o == "Pad").count(), 2);
        assert_eq!(ops.iter().filter(|&&o| o == "Conv").count(), 19);
        assert_eq!(ops.iter().filter(|&&o| o == "Add").count(), 9);
        let g = m.graph.unwrap();
        let pads = g.initializer.iter().find(|t| t.name == "layer2.0.shortcut.pad.pads").unwrap();
        let pads: Vec<i64> = pads.raw_data.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(pads, [0, 8, 0, 0, 0, 8, 0, 0]);
    }

    #[test]
    fn plain_nets_have_no_additions_and_projections_are_convolutions() {
        let plain = ResNet::new(spec("plain20", &ModelOptions::default()).unwrap()).unwrap();
        assert!(!ops(&onnx_model(&plain, &OnnxOptions::default())).contains(&"Add"));
        let opts = ModelOptions { shortcut: Some(resnet_models::Shortcut::C), ..Default::default() };
        let c = ResNet::new(spec("resnet20", &opts).unwrap()).unwrap();
        let m = onnx_model(&c, &OnnxOptions { input_size: Some((32, 32)), ..Default::default() });
        let ops = ops(&m);
        assert_eq!(ops.iter().filter(|&&o| o == "Conv").count(), 19 + 9);
        assert!(!ops.contains(&"Pad"));
    }

    #[test]
    fn preprocessing_takes_uint8_nhwc_and_fixes_the_size_of_a_mean_image() {
        let net = ResNet::new(spec("resnet20", &ModelOptions::default()).unwrap()).unwrap();
        let mean: Vec<f32> = (0..4 * 5 * 3).map(|i| i as f32).collect();
        let pre = Preprocessing {
            format: InputFormat::Uint8Nhwc,
            offset: mean,
            offset_size: Some((4, 5)),
            scale: vec![1.0 / 64.0],
        };
        let m = onnx_model(&net, &OnnxOptions { preprocessing: Some(pre), ..Default::default() });
        assert_eq!(&ops(&m)[..5], ["Cast", "Transpose", "Sub", "Mul", "Conv"]);
        let g = m.graph.unwrap();
        let t = g.input[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        assert_eq!(t.elem_type, data_type::UINT8);
        let dims: Vec<Option<DimensionValue>> = t.shape.as_ref().unwrap().dim.iter().map(|d| d.value.clone()).collect();
        assert_eq!(
            dims[1..],
            [Some(DimensionValue::DimValue(4)), Some(DimensionValue::DimValue(5)), Some(DimensionValue::DimValue(3))]
        );
        let offset = g.initializer.iter().find(|t| t.name == "preprocess.offset").unwrap();
        assert_eq!(offset.dims, [1, 3, 4, 5]);
        // NCHW element (c=1, y=0, x=1) is HWC element (0, 1, 1) = 4.
        let v: Vec<f32> = offset.raw_data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(v[20 + 1], 4.0);
    }
}
