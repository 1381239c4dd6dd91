//! 2-D convolution without bias (every convolution of a ResNet is followed by batch norm, whose
//! shift makes a bias redundant; He et al. 2015, Section 3.4).

use crate::{Param, ParamKind, Tensor};
use resnet_kernels::conv::{self, ConvShape};
use resnet_kernels::{profile, Workspace};

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
            ws: Workspace::new(),
        }
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
        let s = self.shape_for(x.shape());
        y.reshape_for([s.n, s.out_h(), s.out_w(), s.cout]);
        let _p = profile::scope("conv forward");
        conv::conv2d_forward(&s, x.data(), &self.weight.value, y.data_mut(), &mut self.ws);
    }

    /// In the forward pass: `y = conv(x, w)`. Adds `dL/dw = im2col(x)^T dy` into
    /// `weight.grad`, and writes (or adds, when `accumulate`) `dL/dx = conv^T(dy, w)` into `dx`
    /// when it is given.
    pub fn backward(&mut self, x: &Tensor, dy: &[f32], dx: Option<&mut [f32]>, accumulate: bool) {
        let s = self.shape_for(x.shape());
        let p = profile::scope("conv backward weight");
        conv::conv2d_backward_weight(&s, x.data(), dy, &mut self.weight.grad, true, &mut self.ws);
        drop(p);
        if let Some(dx) = dx {
            let _p = profile::scope("conv backward data");
            conv::conv2d_backward_data(&s, dy, &self.weight.value, dx, accumulate, &mut self.ws);
        }
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
            randomize(&mut layer.weight.value, 1);
            let mut x = Tensor::zeros([2, h, h, 3]);
            randomize(x.data_mut(), 2);
            let r = probe(run(&layer, &x).len(), 3);
            let mut dx = vec![0.0; x.len()];
            let mut l = layer.clone();
            l.backward(&x, &r, Some(&mut dx), false);
            let tol = Tolerance::default();
            check_gradient("conv dx", x.data(), &dx, tol, |xv| {
                weighted_sum(run(&layer, &Tensor::from_vec(x.shape(), xv.to_vec())).data(), &r)
            });
            check_gradient("conv dw", &layer.weight.value, &l.weight.grad, tol, |w| {
                let mut m = layer.clone();
                m.weight.value.copy_from_slice(w);
                weighted_sum(run(&m, &x).data(), &r)
            });
        }
    }
}
