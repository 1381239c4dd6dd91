//! QDQ ONNX of a quantized checkpoint's int8 network: the float graph's operators with
//! `QuantizeLinear` + `DequantizeLinear` pairs wherever our int8 network stores 8-bit values,
//! and each convolution with its batch norm folded in, its int8 weights dequantized per output
//! channel (`DequantizeLinear` on axis 0) and its shift as a float bias. Runtimes that execute
//! QDQ graphs in integers (ONNX Runtime) fuse the pairs around `Conv` into int8 convolutions.
//!
//! Each activation point of [`QuantRecord`] becomes a pair with its scale and zero point: the
//! input (`uint8`, its zero point), the stem's and every unit's output after its ReLU (`uint8`,
//! zero point 0), each projection's output (`int8`, symmetric) and each block's output after the
//! addition and ReLU. The classifier's weights are int8 per output, dequantized on axis 0, as in
//! our int8 network; its input (the average pool's) stays float.

use super::*;
use resnet_quant::{unit_name, ActivationQuant, QuantizedClassifier, QuantizedWeights};

impl Builder {
    /// The stem, its pooling and the blocks of the int8 network on `x` (float).
    pub(super) fn int8_body(&mut self, net: &ResNet, record: &QuantRecord, x: &str) -> String {
        let point = |name: &str| record.get(name).unwrap_or_else(|e| panic!("{e} (the record was checked)"));
        let mut x = self.qdq("input", x, point("input"), false);
        let stem = unit_name(&net.stem.unit);
        x = self.qconv(&net.stem.unit, &x);
        x = self.node("Relu", "relu", &[&x], vec![]);
        x = self.qdq(&stem, &x, point(&stem), false);
        x = self.max_pool(net, &x);
        for block in &net.blocks {
            let (last, inner) = block.units.split_last().expect("a block has units");
            let mut y = x.clone();
            for unit in inner {
                y = self.qconv(unit, &y);
                y = self.node("Relu", &format!("{y}.relu"), &[&y], vec![]);
                y = self.qdq(&unit_name(unit), &y, point(&unit_name(unit)), false);
            }
            y = self.qconv(last, &y);
            let shortcut = match &block.shortcut {
                ShortcutPath::None => None,
                ShortcutPath::Identity => Some(x.clone()),
                ShortcutPath::Pad(op, _) => Some(self.pad_shortcut(block, op, &x)),
                ShortcutPath::Projection(p) => {
                    let s = self.qconv(p, &x);
                    Some(self.qdq(&unit_name(p), &s, point(&unit_name(p)), true))
                }
            };
            if let Some(s) = shortcut {
                y = self.node("Add", &format!("{}.add", block.name), &[&y, &s], vec![]);
            }
            y = self.node("Relu", &format!("{}.relu", block.name), &[&y], vec![]);
            x = self.qdq(&block.name, &y, point(&block.name), false);
        }
        x
    }

    /// `unit`'s convolution with its batch norm folded in, on `x`: its int8 weights
    /// dequantized per output channel, its shift as the bias. Takes the unit's tensors out of
    /// the state (so that every one is accounted for).
    fn qconv(&mut self, unit: &ConvBn, x: &str) -> String {
        let conv = &unit.conv;
        let name = unit_name(unit);
        let bn = unit.bn.weight.name.trim_end_matches(".weight").to_string();
        for key in [conv.weight.name.clone()]
            .into_iter()
            .chain(["weight", "bias", "running_mean", "running_var"].iter().map(|k| format!("{bn}.{k}")))
        {
            self.state.remove(&key).unwrap_or_else(|| panic!("{key} is not in the network's state dict"));
        }
        let q = QuantizedWeights::of(unit);
        let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
        // Ours is [kh, kw, cin, cout]; ONNX's OIHW.
        let mut oihw = vec![0i8; q.weights.len()];
        for tap in 0..k * k {
            for ci in 0..cin {
                for co in 0..cout {
                    oihw[(co * cin + ci) * k * k + tap] = q.weights[(tap * cin + ci) * cout + co];
                }
            }
        }
        let w = self.int8_weights(&name, vec![cout, cin, k, k], &oihw, &q.scales);
        self.initializers.push(float_tensor(&format!("{name}.bias"), &[cout], &q.bias));
        self.node("Conv", &name, &[x, &w, &format!("{name}.bias")], conv_attributes(conv))
    }

    /// The classifier's int8 weights dequantized per output (for a `Gemm` with `transB`) and its
    /// bias: the names of the two. Takes its tensors out of the state.
    pub(super) fn int8_classifier_weights(&mut self, fc: &Linear) -> (String, String) {
        for key in [&fc.weight.name, &fc.bias.name] {
            self.state.remove(key).unwrap_or_else(|| panic!("{key} is not in the network's state dict"));
        }
        let q = QuantizedClassifier::of(fc);
        let name = fc.weight.name.trim_end_matches(".weight").to_string();
        let weight = self.int8_weights(&name, vec![q.outputs(), fc.inputs()], &q.weights, &q.scales);
        let bias = format!("{name}.bias");
        self.initializers.push(float_tensor(&bias, &[q.outputs()], &q.bias));
        (weight, bias)
    }

    /// Initializers for int8 weights `codes` of shape `dims` (outputs first) with a step per
    /// output, and the `DequantizeLinear` node that makes them float again: its output's name.
    fn int8_weights(&mut self, name: &str, dims: Vec<usize>, codes: &[i8], scales: &[f32]) -> String {
        let outputs = dims[0];
        let weight = format!("{name}.weight_quantized");
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT8,
            name: weight.clone(),
            raw_data: codes.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        });
        self.initializers.push(float_tensor(&format!("{name}.weight_scale"), &[outputs], scales));
        self.initializers.push(TensorProto {
            dims: vec![outputs as i64],
            data_type: data_type::INT8,
            name: format!("{name}.weight_zero_point"),
            raw_data: vec![0; outputs],
            ..Default::default()
        });
        let inputs = [weight.as_str(), &format!("{name}.weight_scale"), &format!("{name}.weight_zero_point")];
        self.node("DequantizeLinear", &format!("{name}.weight_dequantized"), &inputs, vec![attr_int("axis", 0)])
    }

    /// `x` quantized to 8 bits with the encoding of activation point `point` (`int8` when
    /// `signed`, else `uint8`) and dequantized again.
    fn qdq(&mut self, point: &str, x: &str, q: ActivationQuant, signed: bool) -> String {
        let (scale, zero) = (format!("{point}.quant_scale"), format!("{point}.quant_zero_point"));
        self.initializers.push(float_tensor(&scale, &[], &[q.scale]));
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: if signed { data_type::INT8 } else { data_type::UINT8 },
            name: zero.clone(),
            raw_data: vec![q.zero_point],
            ..Default::default()
        });
        let quantized = self.node("QuantizeLinear", &format!("{point}.quantized"), &[x, &scale, &zero], vec![]);
        self.node("DequantizeLinear", &format!("{point}.dequantized"), &[&quantized, &scale, &zero], vec![])
    }
}

/// Writes the QDQ ONNX model of `net` quantized by `record` to `path` (atomically).
///
/// # Errors
/// [`InteropError::Write`] naming the file; [`InteropError::Quantization`] when the record does
/// not fit the network.
pub fn export_onnx_int8(
    net: &ResNet,
    record: &QuantRecord,
    path: &Path,
    opts: &OnnxOptions,
) -> Result<(), InteropError> {
    record.check(net).map_err(|e| InteropError::Quantization(e.to_string()))?;
    let bytes = prost::Message::encode_to_vec(&model(net, opts, Some(record)));
    fsutil::write_atomic(path, &bytes)
}
