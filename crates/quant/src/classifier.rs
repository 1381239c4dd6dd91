//! The int8 network's classifier: the fully connected layer with int8 weights, one symmetric
//! step per output, on the real features of the average pool.

use resnet_kernels::conv::int8::quantize_weights;
use resnet_kernels::profile;
use resnet_kernels::quantized::linear_i8;
use resnet_nn::ops::Linear;
use resnet_nn::Tensor;

/// A classifier's weights quantized per output (int8, symmetric), its bias kept in f32: what the
/// int8 network runs and what a QDQ ONNX export stores. At a batch of one image, ResNet-50's f32
/// classifier spends its time reading 8 MB of weights; int8 codes read a quarter of that.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedClassifier {
    /// The weight's name (`fc.weight`).
    pub name: String,
    /// `[outputs, inputs]` int8 weights (torchvision's layout).
    pub weights: Vec<i8>,
    /// `[outputs]` steps of the weights (`max |w| / 127`).
    pub scales: Vec<f32>,
    /// `[outputs]` biases.
    pub bias: Vec<f32>,
}

impl QuantizedClassifier {
    /// The quantized weights of `fc`.
    pub fn of(fc: &Linear) -> Self {
        let (inputs, outputs) = (fc.inputs(), fc.outputs());
        let w = fc.weight.value();
        // `quantize_weights` takes one step per column of `[k, cout]`: the weight transposed.
        let by_column: Vec<f32> = (0..inputs).flat_map(|i| (0..outputs).map(move |o| w[o * inputs + i])).collect();
        let (codes, scales) = quantize_weights(&by_column, outputs);
        let weights =
            (0..outputs).flat_map(|o| (0..inputs).map(|i| codes[i * outputs + o]).collect::<Vec<_>>()).collect();
        QuantizedClassifier { name: fc.weight.name.clone(), weights, scales, bias: fc.bias.value().to_vec() }
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.scales.len()
    }

    /// `y = x W^T + b` for the features `x: [n, 1, 1, inputs]` into `y: [n, 1, 1, outputs]`.
    pub fn forward(&self, x: &Tensor, y: &mut Tensor) {
        let _p = profile::layer_scope("int8 fc", &self.name);
        y.reshape_for([x.n(), 1, 1, self.outputs()]);
        linear_i8(x.data(), &self.weights, &self.scales, &self.bias, y.data_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output row gets its own step, and the codes dequantize to within half a step of the
    /// weights; the layer runs on them.
    #[test]
    fn rows_get_their_own_steps() {
        let mut fc = Linear::new("fc", 3, 2);
        fc.weight.value_mut().copy_from_slice(&[0.5, -1.27, 0.1, 0.02, 0.01, -0.03]);
        fc.bias.value_mut().copy_from_slice(&[1.0, -1.0]);
        let q = QuantizedClassifier::of(&fc);
        for (got, want) in q.scales.iter().zip([0.01, 0.03 / 127.0]) {
            assert!((got - want).abs() <= 1e-6 * want, "step {got} vs {want}");
        }
        assert_eq!(q.weights, vec![50, -127, 10, 85, 42, -127]);
        for (o, row) in fc.weight.value().chunks_exact(3).enumerate() {
            for (i, w) in row.iter().enumerate() {
                assert!((f32::from(q.weights[o * 3 + i]) * q.scales[o] - w).abs() <= q.scales[o] / 2.0 + 1e-7);
            }
        }
        let x = Tensor::from_vec([1, 1, 1, 3], vec![1.0, 2.0, 3.0]);
        let mut y = Tensor::default();
        q.forward(&x, &mut y);
        let want = [1.0 + 0.5 - 2.54 + 0.3, -1.0 + 0.02 + 0.02 - 0.09];
        for (g, w) in y.data().iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{g} vs {w}");
        }
    }
}
