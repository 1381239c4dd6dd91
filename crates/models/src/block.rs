//! Building blocks (He et al. 2015, Fig. 2 and Fig. 5): a residual branch of convolution +
//! batch norm units and a shortcut, `y = relu(F(x) + shortcut(x))`; a plain block drops the
//! shortcut, `y = relu(F(x))`.

use crate::spec::{BlockKind, BlockPlan, ShortcutPlan, StridePlacement};
use resnet_kernels::activations::{bf16_in_slots_mut, Activations};
use resnet_kernels::conv::InputTransform;
use resnet_kernels::conv::Precision;
use resnet_kernels::{elementwise, profile};
use resnet_nn::ops::{BatchNorm2d, BatchNormMode, BnReluMask, Conv2d, InputGradient, PadShortcut};
use resnet_nn::{Param, Tensor};

/// A convolution followed by batch norm. It keeps the convolution output `y` (what batch norm
/// and its backward pass read) and, when it is materialised, the unit's output `z` (after ReLU,
/// or after the residual addition and ReLU for the last unit of a block).
///
/// Inside a block the output of a unit is not stored at all: the next unit's convolution
/// applies this unit's batch norm and ReLU to `y` as it reads it ([`BatchNorm2d::transform`]),
/// and the backward pass recomputes the ReLU mask from `y` in the same way. That saves writing
/// and reading one activation per unit, and its memory.
#[derive(Clone, Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// Its batch norm.
    pub bn: BatchNorm2d,
    /// Convolution output (batch-norm input).
    pub y: Tensor,
    /// Unit output, when materialised (empty otherwise).
    pub z: Tensor,
    sums: Vec<f64>,
}

/// The ReLU after a unit, as its backward pass needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReluAfter {
    /// No ReLU, or one whose gradient mask was already applied.
    None,
    /// A ReLU whose output is the unit's stored `z`.
    Stored,
    /// A ReLU fused into what reads the unit's output, the next convolution or the stem's max
    /// pool (nothing stored): the mask comes from `y` and the batch norm.
    Fused,
}

impl ConvBn {
    /// `conv` is the torchvision name of the convolution, `bn` of its batch norm.
    pub fn new(conv: &str, bn: &str, cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        Self {
            conv: Conv2d::new(conv, cin, cout, k, stride, k / 2),
            bn: BatchNorm2d::new(bn, cout),
            y: Tensor::default(),
            z: Tensor::default(),
            sums: Vec::new(),
        }
    }

    /// `y = conv(t(x))` and the batch norm's normalisation for `mode` (in training, from the
    /// batch statistics the convolution gathers as it writes `y`). `t` is the previous unit's
    /// fused batch norm and ReLU, if any.
    ///
    /// Where the kernel configuration says so (`KernelConfig::stored`), training keeps `y` in
    /// bf16 (half its memory and traffic for every pass that reads it again), with the
    /// statistics of the stored values.
    pub fn convolve(&mut self, x: &Tensor, t: Option<InputTransform<'_>>, mode: BatchNormMode) {
        // A batch norm with frozen statistics needs no batch sums.
        let mode = self.bn.mode_in(mode);
        let train = mode == BatchNormMode::Train;
        let cout = self.conv.cout;
        self.sums.resize(2 * cout, 0.0);
        if train && self.conv.kernel_config().stored() == Precision::Bf16 {
            let shape = self.conv.output_shape(x.shape());
            self.y.reshape_for_bf16(shape);
            self.conv.forward_storing_bf16(x, t, self.y.bf16_mut(), &mut self.sums);
        } else {
            self.conv.forward_fused(x, t, &mut self.y, train.then_some(&mut self.sums[..]));
        }
        let rows = self.y.len() / cout;
        self.bn.prepare(mode, train.then_some((&self.sums[..], rows)));
    }

    /// `z = act(bn(conv(t(x))) (+ residual))` in eval mode, with the batch norm, the residual
    /// and the ReLU applied by the convolution as it writes its output: `y` is not written,
    /// saving a pass over the output (inference has no use for the batch norm's input).
    pub fn infer(&mut self, x: &Tensor, t: Option<InputTransform<'_>>, residual: Option<&[f32]>, relu: bool) {
        self.bn.prepare(BatchNormMode::Eval, None);
        let out = self.bn.output_transform(residual, relu);
        self.conv.forward_transformed(x, t, out, &mut self.z);
    }

    /// [`Self::infer`] with the residual in `residual`'s own buffer, which becomes the unit's
    /// output `z`; `residual` gets the buffer `z` had. Only where the convolution adds a residual
    /// in place ([`Conv2d::adds_residual_in_place`]).
    pub fn infer_onto_residual(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        residual: &mut Tensor,
        relu: bool,
    ) {
        self.bn.prepare(BatchNormMode::Eval, None);
        let out = self.bn.output_transform(None, relu);
        self.conv.forward_onto_residual(x, t, out, residual);
        std::mem::swap(&mut self.z, residual);
    }

    /// `z = act(bn(y) (+ residual))`.
    pub fn materialize(&mut self, residual: Option<&[f32]>, relu: bool) {
        self.bn.apply(&self.y, residual, relu, &mut self.z);
    }

    /// `z = act(bn(conv(x)) (+ residual))`.
    pub fn forward(&mut self, x: &Tensor, mode: BatchNormMode, residual: Option<&[f32]>, relu: bool) {
        self.convolve(x, None, mode);
        self.materialize(residual, relu);
    }

    /// Backward given the gradient `dz` of the unit output. Uses `dy` (at least as long as the
    /// convolution output) as scratch for the gradient of `y`, then writes (or adds) the gradient
    /// of the convolution's (transformed) input into `dx` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        x: &Tensor,
        t: Option<InputTransform<'_>>,
        dz: &[f32],
        relu: ReluAfter,
        dy: &mut [f32],
        dx: Option<&mut [f32]>,
        accumulate: bool,
    ) {
        let mask = match relu {
            ReluAfter::None => BnReluMask::None,
            ReluAfter::Stored => BnReluMask::Output(self.z.data()),
            ReluAfter::Fused => BnReluMask::OwnAffine,
        };
        let len = self.y.len();
        // Where every pass of the convolution rounds its output gradient to bf16 as it reads
        // it, the batch norm stores it so rounded: half the bytes written and read twice.
        if self.conv.reads_bf16_output_gradient(x.shape(), dx.is_some()) {
            let dy = bf16_in_slots_mut(dy, len);
            self.bn.backward(&self.y, dz, mask, InputGradient::Bf16(dy));
            self.conv.backward(x, t, Activations::Bf16(dy), dx, accumulate);
        } else {
            let dy = &mut dy[..len];
            self.bn.backward(&self.y, dz, mask, InputGradient::F32 { dx: dy, accumulate: false });
            self.conv.backward(x, t, &*dy, dx, accumulate);
        }
    }

    fn for_each_param(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.conv.weight);
        f(&mut self.bn.weight);
        f(&mut self.bn.bias);
    }

    fn activation_bytes(&self) -> usize {
        self.y.bytes() + self.z.bytes()
    }
}

/// The input of unit `i` of a block whose input is `x`, given the units before it: `x`, or the
/// previous unit's convolution output with its batch norm and ReLU as the input transform.
fn unit_input<'a>(x: &'a Tensor, before: &'a [ConvBn], i: usize) -> (&'a Tensor, Option<InputTransform<'a>>) {
    match i {
        0 => (x, None),
        _ => (&before[i - 1].y, Some(before[i - 1].bn.transform())),
    }
}

/// The gradient buffers a block's backward pass writes, by length: the gradient of its output
/// (`output`; its input's gradient is the output gradient of the block below, or the stem's),
/// of each unit's convolution output (`unit`, the first scratch buffer of [`Block::backward`])
/// and of each inner unit's output (`inner`, the other two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardLens {
    /// The block output.
    pub output: usize,
    /// The longest convolution output, the projection's included.
    pub unit: usize,
    /// The longest output of a unit but the last.
    pub inner: usize,
}

impl BackwardLens {
    /// The longer of each.
    pub fn max(self, o: Self) -> Self {
        Self { output: self.output.max(o.output), unit: self.unit.max(o.unit), inner: self.inner.max(o.inner) }
    }
}

/// The shortcut of a block.
#[derive(Clone, Debug)]
pub enum ShortcutPath {
    /// Plain network: none.
    None,
    /// Identity.
    Identity,
    /// Option A: subsample and zero-pad (its output is kept for the addition).
    Pad(PadShortcut, Tensor),
    /// 1x1 projection with batch norm (torchvision's `downsample.0` and `downsample.1`).
    Projection(Box<ConvBn>),
}

/// One building block.
#[derive(Clone, Debug)]
pub struct Block {
    /// torchvision name prefix (`layer2.0`).
    pub name: String,
    /// Residual-branch units in order; the last one's `z` is the block output.
    pub units: Vec<ConvBn>,
    /// The shortcut.
    pub shortcut: ShortcutPath,
}

impl Block {
    /// Builds the block a plan describes.
    pub fn new(plan: &BlockPlan, kind: BlockKind, placement: StridePlacement) -> Self {
        let p = &plan.name;
        let unit = |i: usize, cin, cout, k, stride| {
            ConvBn::new(&format!("{p}.conv{i}"), &format!("{p}.bn{i}"), cin, cout, k, stride)
        };
        let units = match kind {
            BlockKind::Basic => {
                vec![unit(1, plan.cin, plan.width, 3, plan.stride), unit(2, plan.width, plan.cout, 3, 1)]
            }
            BlockKind::Bottleneck => {
                let (s1, s2) = match placement {
                    StridePlacement::V1 => (plan.stride, 1),
                    StridePlacement::V1_5 => (1, plan.stride),
                };
                vec![
                    unit(1, plan.cin, plan.width, 1, s1),
                    unit(2, plan.width, plan.width, 3, s2),
                    unit(3, plan.width, plan.cout, 1, 1),
                ]
            }
        };
        let shortcut = match plan.shortcut {
            ShortcutPlan::None => ShortcutPath::None,
            ShortcutPlan::Identity => ShortcutPath::Identity,
            ShortcutPlan::Pad => ShortcutPath::Pad(
                PadShortcut { cin: plan.cin, cout: plan.cout, stride: plan.stride },
                Tensor::default(),
            ),
            ShortcutPlan::Projection => ShortcutPath::Projection(Box::new(ConvBn::new(
                &format!("{p}.downsample.0"),
                &format!("{p}.downsample.1"),
                plan.cin,
                plan.cout,
                1,
                plan.stride,
            ))),
        };
        Self { name: plan.name.clone(), units, shortcut }
    }

    /// The block output (valid after [`Block::forward`]).
    pub fn output(&self) -> &Tensor {
        &self.units.last().expect("a block has units").z
    }

    /// `out = relu(F(x) + shortcut(x))`, or `relu(F(x))` for a plain block.
    pub fn forward(&mut self, x: &Tensor, mode: BatchNormMode) {
        self.run(x, mode, false);
    }

    /// [`Self::forward`] in eval mode writing the block output alone: the last unit's batch
    /// norm, the shortcut addition and the ReLU are applied by its convolution as it writes
    /// (see [`ConvBn::infer`]), so that unit's `y` is never stored and read again; the
    /// projection shortcut likewise. The same values as `forward(x, BatchNormMode::Eval)`.
    pub fn infer(&mut self, x: &Tensor) {
        self.run(x, BatchNormMode::Eval, true);
    }

    /// [`Self::infer`] for an input the caller has no further use for. Where the last unit
    /// adds the shortcut in place ([`ConvBn::infer_onto_residual`]), the block output is written
    /// over the shortcut's buffer: the input's own for an identity shortcut, whose lines are
    /// then read and written once instead of a second buffer's being fetched and written too.
    /// On return `x` holds a buffer for the caller to reuse: its own, or the one the block
    /// output had.
    pub fn infer_consuming(&mut self, x: &mut Tensor) {
        let in_place = self.writes_over_shortcut(x.shape());
        self.run_head(x, BatchNormMode::Eval, true);
        if !in_place {
            return self.run_last(x, BatchNormMode::Eval, true);
        }
        let last = self.units.len() - 1;
        let (done, rest) = self.units.split_at_mut(last);
        let before = done.last().expect("a residual branch has two units or more");
        let residual = match &mut self.shortcut {
            ShortcutPath::Identity => x,
            ShortcutPath::Projection(p) => &mut p.z,
            ShortcutPath::None | ShortcutPath::Pad(..) => unreachable!("no residual buffer to write over"),
        };
        rest[0].infer_onto_residual(&before.y, Some(before.bn.transform()), residual, true);
    }

    /// Whether [`Self::infer_consuming`] writes the output of an input of shape `input` over the
    /// shortcut's buffer (so the block output needs no buffer of its own).
    pub fn writes_over_shortcut(&self, input: [usize; 4]) -> bool {
        let (last, inner) = self.units.split_last().expect("a block has units");
        let last_input = inner.iter().fold(input, |shape, unit| unit.conv.output_shape(shape));
        !inner.is_empty()
            && matches!(self.shortcut, ShortcutPath::Identity | ShortcutPath::Projection(_))
            && last.conv.adds_residual_in_place(last_input)
    }

    /// The forward pass; `fuse` applies each unit output's batch norm in its convolution.
    fn run(&mut self, x: &Tensor, mode: BatchNormMode, fuse: bool) {
        self.run_head(x, mode, fuse);
        self.run_last(x, mode, fuse);
    }

    /// The residual branch but its last unit, and the shortcut's own layers.
    fn run_head(&mut self, x: &Tensor, mode: BatchNormMode, fuse: bool) {
        let last = self.units.len() - 1;
        for i in 0..last {
            let (done, rest) = self.units.split_at_mut(i);
            let (input, t) = unit_input(x, done, i);
            rest[0].convolve(input, t, mode);
        }
        match &mut self.shortcut {
            ShortcutPath::None | ShortcutPath::Identity => {}
            ShortcutPath::Pad(op, out) => op.forward(x, out),
            ShortcutPath::Projection(p) if fuse => p.infer(x, None, None, false),
            // Its batch norm is applied where the last unit adds it (see `run_last`).
            ShortcutPath::Projection(p) => p.convolve(x, None, mode),
        }
    }

    /// The last unit of the residual branch, with the shortcut added and the ReLU.
    fn run_last(&mut self, x: &Tensor, mode: BatchNormMode, fuse: bool) {
        // Outside inference a projection's batch norm output is never stored: the last unit
        // applies it to the projection's convolution output as it adds it.
        let (residual, projection): (Option<&[f32]>, _) = match &self.shortcut {
            ShortcutPath::None => (None, None),
            ShortcutPath::Identity => (Some(x.data()), None),
            ShortcutPath::Pad(_, out) => (Some(out.data()), None),
            ShortcutPath::Projection(p) if fuse => (Some(p.z.data()), None),
            ShortcutPath::Projection(p) => (None, Some(&**p)),
        };
        let last = self.units.len() - 1;
        let (done, rest) = self.units.split_at_mut(last);
        let (input, t) = unit_input(x, done, last);
        let unit = &mut rest[0];
        if let Some(r_len) = residual.map(<[f32]>::len).or(projection.map(|p| p.y.len())) {
            let len: usize = unit.conv.output_shape(input.shape()).iter().product();
            assert_eq!(r_len, len, "{}: shortcut and residual branch shapes differ", self.name);
        }
        if fuse {
            unit.infer(input, t, residual, true);
            return;
        }
        unit.convolve(input, t, mode);
        match projection {
            Some(p) => unit.bn.apply_with_normalized_residual(&unit.y, &p.y, &p.bn, true, &mut unit.z),
            None => unit.materialize(residual, true),
        }
    }

    /// Backward of a training-mode forward on `x`. `d_out` is the gradient of the block output
    /// (it is overwritten: it becomes the gradient of the pre-ReLU sum); the input gradient is
    /// written into `dx` when given (nothing below needs it when every layer below is frozen).
    /// `scratch` holds three buffers, as long as [`Self::backward_lens`] says.
    ///
    /// The ReLU masks at block boundaries: `d_out_masked` says that `d_out` already carries the
    /// mask of this block's output ReLU (the block above applied it); with `input_is_relu` (`x`
    /// is a ReLU output, or a max pool of one, as every block input of a ResNet is) a block with
    /// an identity shortcut applies the mask of `x` to `dx` in its final addition, where it costs
    /// one more read instead of a pass of its own in the block below. Returns whether it did.
    pub fn backward(
        &mut self,
        x: &Tensor,
        d_out: &mut [f32],
        mut dx: Option<&mut [f32]>,
        scratch: [&mut [f32]; 3],
        d_out_masked: bool,
        input_is_relu: bool,
    ) -> bool {
        let [t1, mut cur, mut next] = scratch;
        let last = self.units.len() - 1;
        let has_shortcut = !matches!(self.shortcut, ShortcutPath::None);
        let d_out = &mut d_out[..self.output().len()];
        let mut dx = dx.as_mut().map(|d| &mut d[..x.len()]);
        if has_shortcut && !d_out_masked {
            // out = relu(s) with s = bn(y) + shortcut(x): both branches receive ds = d_out * [out > 0].
            let _p = profile::scope("relu mask");
            elementwise::relu_mask_in_place(self.output().data(), d_out);
        }
        // Walk the residual branch backwards; `cur` holds the gradient of the current unit's
        // output, and the unit writes its input's gradient into `next` (or `dx` for the first).
        for i in (0..=last).rev() {
            let (done, rest) = self.units.split_at_mut(i);
            let (input, t) = unit_input(x, done, i);
            let unit = &mut rest[0];
            let dz: &[f32] = if i == last { d_out } else { &cur[..unit.y.len()] };
            // Inner units' ReLUs were fused into the next convolution; the last one's mask is
            // still to apply without a shortcut, unless it was applied already (above, with a
            // shortcut, or by the block above).
            let relu = match (i < last, has_shortcut || d_out_masked) {
                (true, _) => ReluAfter::Fused,
                (false, false) => ReluAfter::Stored,
                (false, true) => ReluAfter::None,
            };
            let target = if i == 0 { dx.as_deref_mut() } else { Some(&mut next[..input.len()]) };
            unit.backward(input, t, dz, relu, t1, target, false);
            std::mem::swap(&mut cur, &mut next);
        }
        match (&mut self.shortcut, dx) {
            (ShortcutPath::None, _) | (ShortcutPath::Identity | ShortcutPath::Pad(..), None) => {}
            (ShortcutPath::Identity, Some(dx)) => {
                let _p = profile::scope("shortcut identity");
                if input_is_relu {
                    elementwise::add_assign_relu_mask(dx, d_out, x.data());
                    return true;
                }
                elementwise::add_assign(dx, d_out)
            }
            (ShortcutPath::Pad(op, _), Some(dx)) => op.backward(x.shape(), d_out, dx, true),
            (ShortcutPath::Projection(p), dx) => p.backward(x, None, d_out, ReluAfter::None, t1, dx, true),
        }
        false
    }

    /// Visits every convolution: the units', then the projection's.
    pub fn for_each_conv(&mut self, f: &mut dyn FnMut(&mut Conv2d)) {
        for u in &mut self.units {
            f(&mut u.conv);
        }
        if let ShortcutPath::Projection(p) = &mut self.shortcut {
            f(&mut p.conv);
        }
    }

    /// Visits parameters in torchvision's state-dict order.
    pub fn for_each_param(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for u in &mut self.units {
            u.for_each_param(f);
        }
        if let ShortcutPath::Projection(p) = &mut self.shortcut {
            p.for_each_param(f);
        }
    }

    /// The parameters in torchvision's state-dict order (read-only).
    pub fn params(&self) -> impl Iterator<Item = &Param> {
        let projection = match &self.shortcut {
            ShortcutPath::Projection(p) => Some(&**p),
            _ => None,
        };
        self.units.iter().chain(projection).flat_map(|u| [&u.conv.weight, &u.bn.weight, &u.bn.bias])
    }

    /// The batch norms in torchvision's order (read-only).
    pub fn batch_norms(&self) -> impl Iterator<Item = &BatchNorm2d> {
        let projection = match &self.shortcut {
            ShortcutPath::Projection(p) => Some(&p.bn),
            _ => None,
        };
        self.units.iter().map(|u| &u.bn).chain(projection)
    }

    /// Visits batch norms in torchvision's order.
    pub fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d)) {
        for u in &mut self.units {
            f(&mut u.bn);
        }
        if let ShortcutPath::Projection(p) = &mut self.shortcut {
            f(&mut p.bn);
        }
    }

    /// Visits the activations a forward pass writes besides the block output: each unit's
    /// convolution output and the shortcut's (a projection's output only in inference, `infer`,
    /// where its convolution applies the batch norm and its raw output is not written).
    pub fn for_each_inner_activation(&mut self, infer: bool, mut f: impl FnMut(&mut Tensor)) {
        self.units.iter_mut().for_each(|u| f(&mut u.y));
        match &mut self.shortcut {
            ShortcutPath::Pad(_, t) => f(t),
            ShortcutPath::Projection(p) if infer => f(&mut p.z),
            ShortcutPath::Projection(p) => f(&mut p.y),
            ShortcutPath::None | ShortcutPath::Identity => {}
        }
    }

    /// The block output, mutable (to lend it a buffer or take it back).
    pub fn output_mut(&mut self) -> &mut Tensor {
        &mut self.units.last_mut().expect("a block has units").z
    }

    /// What [`Self::backward`]'s buffers must hold for the activations of the last forward
    /// pass.
    pub fn backward_lens(&self) -> BackwardLens {
        let (last, inner) = self.units.split_last().expect("a block has units");
        let projection = match &self.shortcut {
            ShortcutPath::Projection(p) => p.y.len(),
            _ => 0,
        };
        BackwardLens {
            output: last.z.len(),
            unit: self.units.iter().map(|u| u.y.len()).fold(projection, usize::max),
            inner: inner.iter().map(|u| u.y.len()).max().unwrap_or(0),
        }
    }

    /// Bytes of activations kept.
    pub fn activation_bytes(&self) -> usize {
        let units: usize = self.units.iter().map(ConvBn::activation_bytes).sum();
        units
            + match &self.shortcut {
                ShortcutPath::Pad(_, t) => t.bytes(),
                ShortcutPath::Projection(p) => p.activation_bytes(),
                _ => 0,
            }
    }
}
