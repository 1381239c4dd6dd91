//! 2-D convolution without bias (every convolution of a ResNet is followed by batch norm, whose
//! shift makes a bias redundant; He et al. 2015, Section 3.4).

use crate::{Param, ParamKind, Tensor};
use resnet_kernels::activations::Activations;
use resnet_kernels::conv::{
    self, ConvAlgorithm, ConvParams, ConvPass, ConvShape, ConvWeight, Epilogue, InputTransform, OutputTransform,
    Precision,
};
use resnet_kernels::{profile, CpuFeatures, KernelConfig, Workspace};

/// A square-kernel convolution layer.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// Kernel `[k, k, cin, cout]`.
    pub weight: Param,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// The precision and algorithms its passes use.
    config: KernelConfig,
    ws: Workspace,
}

impl Conv2d {
    /// A zero-initialised layer named `name` (its weight is `name.weight`).
    pub fn new(name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            weight: Param::zeros(format!("{name}.weight"), ParamKind::ConvWeight, &[k, k, cin, cout]),
            cin,
            cout,
            k,
            stride,
            pad,
            config: KernelConfig::installed(),
            ws: Workspace::new(),
        }
    }

    /// The precision and algorithms its passes use.
    pub fn kernel_config(&self) -> &KernelConfig {
        &self.config
    }

    /// Makes the layer's passes use `config` (its precision and allowed algorithms).
    pub fn set_kernel_config(&mut self, config: KernelConfig) {
        self.config = config;
    }

    /// The algorithm of `pass` on `s`.
    fn algorithm(&self, s: &ConvShape, pass: ConvPass) -> ConvAlgorithm {
        ConvAlgorithm::choose(s, pass, &self.config, &CpuFeatures::current())
    }

    /// The kernel geometry for an input of shape `[n, h, w, cin]`.
    ///
    /// # Panics
    /// If the input has the wrong channel count or is smaller than the kernel.
    pub fn shape_for(&self, input: [usize; 4]) -> ConvShape {
        let [n, h, w, c] = input;
        assert_eq!(c, self.cin, "{}: input has {c} channels, layer expects {}", self.weight.name, self.cin);
        let s = ConvShape {
            n,
            h,
            w,
            cin: self.cin,
            cout: self.cout,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        s.validate();
        s
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> [usize; 4] {
        let s = self.shape_for(input);
        [s.n, s.out_h(), s.out_w(), s.cout]
    }

    /// `y = conv(x, weight)`; `y` is reshaped to the output shape.
    ///
    /// # Shapes
    /// `x: [n, h, w, cin]` -> `y: [n, oh, ow, cout]`.
    pub fn forward(&mut self, x: &Tensor, y: &mut Tensor) {
        self.forward_fused(x, None, y, None);
    }

    /// `y = conv(t(x), weight)` where `t`, when given, is the batch norm and ReLU of the layer
    /// before, applied as the input is read (so their output need not exist). When `stats` is
    /// given it receives the per-channel sums of `y` (`[2 * cout]`: sums, then sums of squares),
    /// which is what the batch norm after this layer needs.
    pub fn forward_fused(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        y: &mut Tensor,
        stats: Option<&mut [f64]>,
    ) {
        self.forward_with(x, t, stats.map_or(Epilogue::None, Epilogue::Stats), y);
    }

    /// `y = out(conv(t(x), weight))`: the eval-mode batch norm, residual and ReLU that follow
    /// the layer, applied to its output as it is written (see [`OutputTransform`]); the raw
    /// convolution output is never stored.
    pub fn forward_transformed(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        out: OutputTransform<'_>,
        y: &mut Tensor,
    ) {
        self.forward_with(x, t, Epilogue::Transform(out), y);
    }

    /// Whether [`Self::forward_onto_residual`] runs for an input of shape `input`.
    pub fn adds_residual_in_place(&self, input: [usize; 4]) -> bool {
        let s = self.shape_for(input);
        conv::adds_residual_in_place(self.algorithm(&s, ConvPass::Forward), &s)
    }

    /// [`Self::forward_transformed`] whose residual is `y` itself (`out` has none): `y =
    /// act(conv(t(x), weight) * scale + shift + y)`, each value read just before it is
    /// overwritten, so the layer writes no second buffer of its output's size.
    ///
    /// # Panics
    /// Unless [`Self::adds_residual_in_place`], or if `y` does not have the output's shape.
    pub fn forward_onto_residual(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        out: OutputTransform<'_>,
        y: &mut Tensor,
    ) {
        let s = self.shape_for(x.shape());
        assert_eq!(y.shape(), [s.n, s.out_h(), s.out_w(), s.cout], "{}: residual of the wrong shape", self.weight.name);
        self.forward_with(x, t, Epilogue::TransformOntoResidual(out), y);
    }

    /// `y16 = bf16(conv(t(x), weight))` (to nearest, ties to even; `y16` of the output's length,
    /// [`Self::output_shape`]), with the per-channel sums of the stored values in `stats` (`[2 *
    /// cout]`, as [`Self::forward_fused`]): the output as bf16 training keeps it.
    pub fn forward_storing_bf16(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        y16: &mut [u16],
        stats: &mut [f64],
    ) {
        let s = self.shape_for(x.shape());
        self.run_forward(s, x, t, Epilogue::StatsStoringBf16 { sums: stats, stored: y16 }, &mut []);
    }

    /// The forward pass with `epilogue`; `y` is reshaped to the output shape.
    fn forward_with(&mut self, x: &Tensor, t: Option<InputTransform<'_>>, epilogue: Epilogue<'_>, y: &mut Tensor) {
        let s = self.shape_for(x.shape());
        y.reshape_for([s.n, s.out_h(), s.out_w(), s.cout]);
        self.run_forward(s, x, t, epilogue, y.data_mut());
    }

    /// The forward pass of shape `s` (of `x`) into the output slice `y`.
    fn run_forward(
        &mut self,
        s: ConvShape,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        epilogue: Epilogue<'_>,
        y: &mut [f32],
    ) {
        let _p = profile::layer_scope("conv forward", &self.weight.name);
        let weight = ConvWeight::versioned(self.weight.value(), self.weight.version());
        let params = ConvParams::new(s, self.algorithm(&s, ConvPass::Forward), weight).with_input_transform(t);
        conv::forward(&params, x.activations(), epilogue, y, &mut self.ws);
    }

    /// In the forward pass: `y = conv(t(x), w)`. Adds `dL/dw = im2col(t(x))^T dy` into
    /// `weight.grad` (unless the weight is frozen), and writes (or adds, when `accumulate`) `dL/dt(x) = conv^T(dy, w)` into
    /// `dx` when it is given (the gradient of the transformed input: the layer before owns `t`).
    ///
    /// `dy` may be bf16 (see [`Self::reads_bf16_output_gradient`]).
    pub fn backward<'g>(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        dy: impl Into<Activations<'g>>,
        dx: Option<&mut [f32]>,
        accumulate: bool,
    ) {
        let dy = dy.into();
        let s = self.shape_for(x.shape());
        // The gradient is set aside while the parameters borrow the weight's values.
        let mut grad = std::mem::take(&mut self.weight.grad);
        let weight = ConvWeight::versioned(self.weight.value(), self.weight.version());
        let params = ConvParams::new(s, self.algorithm(&s, ConvPass::Backward), weight).with_input_transform(t);
        if !self.weight.frozen {
            let _p = profile::layer_scope("conv backward weight", &self.weight.name);
            let params = ConvParams { algorithm: self.algorithm(&s, ConvPass::WeightGradient), ..params };
            conv::backward_weight(&params, x.activations(), dy, &mut grad, true, &mut self.ws);
        }
        if let Some(dx) = dx {
            let _p = profile::layer_scope("conv backward data", &self.weight.name);
            conv::backward_data(&params, dy, dx, accumulate, &mut self.ws);
        }
        self.weight.grad = grad;
    }

    /// Whether the backward pass on an input of shape `input` (with the input gradient when
    /// `input_gradient`) takes its output gradient in bf16 as well as in `f32`: in bf16 mode,
    /// where every pass that reads it rounds it to bf16 as it reads it, so that storing it
    /// rounded halves its memory traffic and changes nothing else (values next to bf16's
    /// smallest normal aside: see `batch_norm::InputGradient`).
    pub fn reads_bf16_output_gradient(&self, input: [usize; 4], input_gradient: bool) -> bool {
        let s = self.shape_for(input);
        self.config.precision == Precision::Bf16
            && (self.weight.frozen
                || conv::backward_weight_reads_bf16(self.algorithm(&s, ConvPass::WeightGradient), &s))
            && (!input_gradient || conv::backward_data_reads_bf16(self.algorithm(&s, ConvPass::Backward), &s))
    }

    /// Multiply-adds of one forward pass on `input`.
    pub fn macs(&self, input: [usize; 4]) -> u64 {
        self.shape_for(input).macs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradient, probe, randomize, weighted_sum, Tolerance};

    fn run(layer: &Conv2d, x: &Tensor) -> Tensor {
        let mut y = Tensor::default();
        layer.clone().forward(x, &mut y);
        y
    }

    #[test]
    fn gradients_match_finite_differences() {
        for &(k, stride, pad, h) in
            &[(3, 1, 1, 5), (3, 2, 1, 5), (1, 1, 0, 4), (1, 2, 0, 4), (7, 2, 3, 7), (3, 1, 0, 4)]
        {
            let mut layer = Conv2d::new("conv", 3, 4, k, stride, pad);
            randomize(layer.weight.value_mut(), 1);
            let mut x = Tensor::zeros([2, h, h, 3]);
            randomize(x.data_mut(), 2);
            let r = probe(run(&layer, &x).len(), 3);
            let mut dx = vec![0.0; x.len()];
            let mut l = layer.clone();
            l.backward(&x, None, &r, Some(&mut dx), false);
            let tol = Tolerance::default();
            check_gradient("conv dx", x.data(), &dx, tol, |xv| {
                weighted_sum(run(&layer, &Tensor::from_vec(x.shape(), xv.to_vec())).data(), &r)
            });
            check_gradient("conv dw", layer.weight.value(), &l.weight.grad, tol, |w| {
                let mut m = layer.clone();
                m.weight.value_mut().copy_from_slice(w);
                weighted_sum(run(&m, &x).data(), &r)
            });
        }
    }

    /// With an input transform t (BN + ReLU of the layer before): the weight gradient is taken
    /// through t(x), and the input gradient is that of t(x).
    #[test]
    fn fused_input_transform_gradients() {
        let mut layer = Conv2d::new("conv", 3, 4, 3, 1, 1);
        randomize(layer.weight.value_mut(), 5);
        let mut x = Tensor::zeros([2, 5, 5, 3]);
        randomize(x.data_mut(), 6);
        let (scale, shift) = (vec![1.5, -0.5, 0.8], vec![0.1, 0.2, -0.3]);
        let t = InputTransform { scale: &scale, shift: &shift };
        let tx = Tensor::from_vec(
            x.shape(),
            x.data().iter().enumerate().map(|(i, v)| (v * scale[i % 3] + shift[i % 3]).max(0.0)).collect(),
        );
        let (mut y1, mut y2) = (Tensor::default(), Tensor::default());
        let mut stats = vec![0.0; 8];
        layer.clone().forward_fused(&x, Some(t), &mut y1, Some(&mut stats));
        layer.clone().forward(&tx, &mut y2);
        assert_eq!(y1, y2);
        let sum0: f64 = y1.data().iter().step_by(4).map(|v| f64::from(*v)).sum();
        assert!((stats[0] - sum0).abs() < 1e-3);
        let r = probe(y1.len(), 7);
        let (mut a, mut b) = (layer.clone(), layer.clone());
        a.weight.zero_grad();
        b.weight.zero_grad();
        a.backward(&x, Some(t), &r, None, false);
        b.backward(&tx, None, &r, None, false);
        assert_eq!(a.weight.grad, b.weight.grad);
    }

    /// A bf16-mode 1x1 layer takes a bf16 output gradient, and its gradients from one are those
    /// of the same values in `f32`; in `f32` mode, and on Winograd's 3x3 passes, it does not.
    #[test]
    fn a_bf16_layer_takes_its_output_gradient_in_bf16_where_it_rounds_it_anyway() {
        use resnet_kernels::conv::bf16_supported;
        if !bf16_supported() {
            resnet_kernels::skip::skip("this CPU lacks AVX512_BF16");
            return;
        }
        let bf16 = |mut layer: Conv2d| {
            layer.set_kernel_config(KernelConfig { precision: Precision::Bf16, amx: false, ..layer.config });
            layer
        };
        let input = [2, 8, 8, 64];
        let mut f32_layer = Conv2d::new("conv", 64, 128, 1, 1, 0);
        randomize(f32_layer.weight.value_mut(), 11);
        assert!(!f32_layer.reads_bf16_output_gradient(input, true), "f32 mode");
        let wide = bf16(Conv2d::new("conv", 256, 256, 3, 1, 1));
        let wide_input = [5, 14, 14, 256];
        let s = wide.shape_for(wide_input);
        assert_eq!(wide.algorithm(&s, ConvPass::WeightGradient), ConvAlgorithm::WinogradBf16);
        assert!(!wide.reads_bf16_output_gradient(wide_input, true), "Winograd");
        let mut layer = bf16(f32_layer);
        assert!(layer.reads_bf16_output_gradient(input, true), "bf16 1x1");
        let mut x = Tensor::zeros(input);
        randomize(x.data_mut(), 12);
        // A gradient of bf16 values (the kernels' tests check the rounding of others).
        let r: Vec<f32> = probe(layer.shape_for(input).output_len(), 13)
            .iter()
            .map(|v| f32::from_bits(v.to_bits() & 0xFFFF_0000))
            .collect();
        let r16: Vec<u16> = r.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let mut other = layer.clone();
        let (mut dx, mut dx16) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        layer.weight.zero_grad();
        other.weight.zero_grad();
        layer.backward(&x, None, &r, Some(&mut dx), false);
        other.backward(&x, None, Activations::Bf16(&r16), Some(&mut dx16), false);
        assert_eq!(dx, dx16, "input gradient");
        assert_eq!(layer.weight.grad, other.weight.grad, "weight gradient");
    }

    /// In bf16 mode a wide 3x3 layer's backward pass, the weight gradient chosen apart (both
    /// choices `WinogradBf16` now: the input gradient with bf16 products, the weight gradient
    /// Winograd's f32 adjoint by positions): the weight gradient stays within bf16 rounding of
    /// f32's and the input gradient within Winograd's bf16 error (6-7% of the largest value,
    /// `bf16_products_error_against_the_direct_bf16_kernels`).
    #[test]
    fn bf16_backward_of_a_wide_layer_stays_near_f32() {
        use resnet_kernels::conv::{bf16_supported, Precision};
        if !bf16_supported() {
            resnet_kernels::skip::skip("this CPU lacks AVX512_BF16");
            return;
        }
        let mut f32_layer = Conv2d::new("conv", 256, 256, 3, 1, 1);
        randomize(f32_layer.weight.value_mut(), 8);
        let mut bf16_layer = f32_layer.clone();
        // Without AMX, whose tiles would take this layer on the CPUs that have them.
        let bf16 = KernelConfig { precision: Precision::Bf16, winograd: true, amx: false, ..f32_layer.config };
        bf16_layer.set_kernel_config(bf16);
        let mut x = Tensor::zeros([5, 14, 14, 256]);
        randomize(x.data_mut(), 9);
        let s = bf16_layer.shape_for(x.shape());
        assert_eq!(bf16_layer.algorithm(&s, ConvPass::Backward), ConvAlgorithm::WinogradBf16);
        assert_eq!(bf16_layer.algorithm(&s, ConvPass::WeightGradient), ConvAlgorithm::WinogradBf16);
        let r = probe(s.output_len(), 10);
        let (mut dx_f32, mut dx_bf16) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        f32_layer.set_kernel_config(KernelConfig { winograd: true, ..f32_layer.config });
        f32_layer.backward(&x, None, &r, Some(&mut dx_f32), false);
        bf16_layer.backward(&x, None, &r, Some(&mut dx_bf16), false);
        let close = |got: &[f32], want: &[f32], bound: f32, what: &str| {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= bound * scale, "{what}: error {err} of {scale}");
        };
        close(&bf16_layer.weight.grad, &f32_layer.weight.grad, 0.02, "weight gradient");
        close(&dx_bf16, &dx_f32, 0.15, "input gradient");
    }
}
