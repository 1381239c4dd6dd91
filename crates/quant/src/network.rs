//! The int8 network: every convolution with its batch norm folded into int8 weights, 8-bit
//! activations between them, the classifier on int8 weights and real features at the end.

use crate::classifier::QuantizedClassifier;
use crate::record::unit_name;
use crate::{ActivationQuant, QuantError, QuantRecord};
use resnet_kernels::conv::int8::{
    forward_int8, pack_weights, quantize_weights, requant_arrays, Int8Input, Int8Output, Int8Residual, Int8Weights,
    Requant,
};
use resnet_kernels::conv::ConvShape;
use resnet_kernels::elementwise::{pad_shortcut_forward, PadShortcutShape};
use resnet_kernels::pool::PoolShape;
use resnet_kernels::quantized::{global_avg_pool_u8, max_pool_u8, quantize_u8};
use resnet_kernels::{profile, threads};
use resnet_models::{BatchNormMode, ConvBn, ModelError, ResNet, ResNetSpec, ShortcutPath};
use resnet_nn::Tensor;

/// A unit's convolution with its eval-mode batch norm folded in (`w * scale` per output channel,
/// `shift` as the bias), its weights quantized per output channel: what the int8 network runs and
/// what a QDQ ONNX export stores.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// `[kh, kw, cin, cout]` int8 weights.
    pub weights: Vec<i8>,
    /// `[cout]` steps of the weights (symmetric, `max |w| / 127`).
    pub scales: Vec<f32>,
    /// `[cout]` biases (the batch norm's shift).
    pub bias: Vec<f32>,
}

impl QuantizedWeights {
    /// The folded, quantized weights of `unit`.
    pub fn of(unit: &ConvBn) -> Self {
        let conv = &unit.conv;
        let (scale, shift) = unit.bn.affine(BatchNormMode::Eval);
        let folded: Vec<f32> = conv
            .weight
            .value()
            .chunks_exact(conv.cout)
            .flat_map(|row| row.iter().zip(&scale).map(|(w, s)| w * s))
            .collect();
        let (weights, scales) = quantize_weights(&folded, conv.cout);
        QuantizedWeights { weights, scales, bias: shift }
    }
}

/// One convolution of the int8 network with its batch norm folded in.
#[derive(Clone, Debug)]
struct QuantConv {
    /// The weight's name (`layer1.0.conv1.weight`), for the profile.
    name: String,
    /// Geometry for a batch of one 1x1 image (the batch and size are filled in per call).
    geometry: ConvShape,
    weights: Int8Weights,
    mult: Vec<f32>,
    offset: Vec<f32>,
    input_zero_point: u8,
    /// The output's encoding: unsigned after a ReLU, signed for a projection (no ReLU).
    output: Encoding,
}

/// How a convolution's 8-bit output is encoded.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    /// Unsigned after a ReLU (zero point 0), with this step.
    Unsigned(f32),
    /// Signed, symmetric, with this step.
    Signed(f32),
}

impl QuantConv {
    /// Folds the unit's eval-mode batch norm into its convolution and quantizes the weights per
    /// output channel, for an input encoded by `input`.
    fn new(unit: &ConvBn, input: ActivationQuant, output: Encoding) -> Self {
        let conv = &unit.conv;
        let q = QuantizedWeights::of(unit);
        let weights = pack_weights(&q.weights, conv.k, conv.k, conv.cin, conv.cout);
        let (mult, offset) = requant_arrays(&weights, &q.scales, input.scale, input.zero_point, &q.bias);
        QuantConv {
            name: conv.weight.name.clone(),
            geometry: conv.shape_for([1, conv.k, conv.k, conv.cin]),
            weights,
            mult,
            offset,
            input_zero_point: input.zero_point,
            output,
        }
    }

    fn shape(&self, [n, h, w, _]: [usize; 4]) -> ConvShape {
        ConvShape { n, h, w, ..self.geometry }
    }

    fn output_shape(&self, input: [usize; 4]) -> [usize; 4] {
        let s = self.shape(input);
        [s.n, s.out_h(), s.out_w(), s.cout]
    }

    /// Runs on `x` (of shape `input`) into `y`, or `signed` for a signed output.
    fn run(&self, x: &[u8], input: [usize; 4], residual: Int8Residual<'_>, y: &mut Vec<u8>, signed: &mut Vec<i8>) {
        let len = self.shape(input).output_len();
        match self.output {
            Encoding::Unsigned(_) => self.run_into(x, input, residual, at_least(y, len)),
            Encoding::Signed(scale) => {
                self.run_with(x, input, residual, Int8Output::I8 { y: at_least(signed, len), scale })
            }
        }
    }

    /// Runs a unit of unsigned output on `x` (of shape `input`) into `y`, of the output's length.
    fn run_into(&self, x: &[u8], input: [usize; 4], residual: Int8Residual<'_>, y: &mut [u8]) {
        let Encoding::Unsigned(scale) = self.output else { unreachable!("{} has a signed output", self.name) };
        self.run_with(x, input, residual, Int8Output::U8 { y, scale });
    }

    fn run_with(&self, x: &[u8], input: [usize; 4], residual: Int8Residual<'_>, out: Int8Output<'_>) {
        let _p = profile::layer_scope("int8 conv", &self.name);
        let s = self.shape(input);
        let rq = Requant { mult: &self.mult, offset: &self.offset, residual };
        forward_int8(&s, Int8Input { x, zero_point: self.input_zero_point }, &self.weights, &rq, out);
    }
}

/// The shortcut of an int8 block.
#[derive(Clone, Debug)]
enum QuantShortcut {
    None,
    Identity,
    Pad {
        cout: usize,
        stride: usize,
    },
    /// Its output is real-valued.
    Projection(Box<QuantConv>),
}

/// One block of the int8 network.
#[derive(Clone, Debug)]
struct QuantBlock {
    units: Vec<QuantConv>,
    shortcut: QuantShortcut,
    /// The block input's step (for the identity and option-A shortcuts).
    input_scale: f32,
}

/// Buffers of the activations, kept between calls.
#[derive(Clone, Debug, Default)]
struct Buffers {
    input: Vec<u8>,
    current: Vec<u8>,
    next: Vec<u8>,
    inner: [Vec<u8>; 2],
    shortcut: Vec<u8>,
    projection: Vec<i8>,
    /// The early blocks' output gathered from the groups of images.
    gathered: Vec<u8>,
}

/// A ResNet with int8 convolutions: built from a float network and a [`QuantRecord`].
#[derive(Clone, Debug)]
pub struct QuantizedResNet {
    spec: ResNetSpec,
    record: QuantRecord,
    input: ActivationQuant,
    stem: QuantConv,
    pool: Option<(usize, usize, usize)>,
    blocks: Vec<QuantBlock>,
    /// The last block's output step (the average pool's input).
    last_scale: f32,
    fc: QuantizedClassifier,
    /// See [`Self::set_group_bytes`].
    group_bytes: usize,
    buffers: Buffers,
    features: Tensor,
    logits: Tensor,
}

impl QuantizedResNet {
    /// Quantizes `net` with the activation encodings of `record`.
    ///
    /// # Errors
    /// If the record does not fit the network (see [`QuantRecord::check`]).
    pub fn new(net: &ResNet, record: &QuantRecord) -> Result<Self, QuantError> {
        record.check(net)?;
        let stem_name = unit_name(&net.stem.unit);
        let input = record.get("input")?;
        let stem = QuantConv::new(&net.stem.unit, input, Encoding::Unsigned(record.get(&stem_name)?.scale));
        let pool = net.stem.pool.as_ref().map(|p| (p.k, p.stride, p.pad));
        let mut block_input = record.get(&stem_name)?;
        let mut blocks = Vec::with_capacity(net.blocks.len());
        for block in &net.blocks {
            let output = record.get(&block.name)?;
            let mut units = Vec::with_capacity(block.units.len());
            let mut unit_input = block_input;
            for (i, unit) in block.units.iter().enumerate() {
                let out = if i + 1 == block.units.len() { output } else { record.get(&unit_name(unit))? };
                units.push(QuantConv::new(unit, unit_input, Encoding::Unsigned(out.scale)));
                unit_input = out;
            }
            let shortcut = match &block.shortcut {
                ShortcutPath::None => QuantShortcut::None,
                ShortcutPath::Identity => QuantShortcut::Identity,
                ShortcutPath::Pad(p, _) => QuantShortcut::Pad { cout: p.cout, stride: p.stride },
                ShortcutPath::Projection(p) => {
                    let encoding = Encoding::Signed(record.get(&unit_name(p))?.scale);
                    QuantShortcut::Projection(Box::new(QuantConv::new(p, block_input, encoding)))
                }
            };
            blocks.push(QuantBlock { units, shortcut, input_scale: block_input.scale });
            block_input = output;
        }
        Ok(QuantizedResNet {
            spec: net.spec().clone(),
            record: record.clone(),
            input,
            stem,
            pool,
            blocks,
            last_scale: block_input.scale,
            fc: QuantizedClassifier::of(&net.fc),
            group_bytes: GROUP_BYTES,
            buffers: Buffers::default(),
            features: Tensor::default(),
            logits: Tensor::default(),
        })
    }

    /// Runs the early blocks, whose activations over a large batch would leave the cache, a
    /// group of images at a time, so that no activation of a group exceeds `bytes` (default
    /// [`GROUP_BYTES`], for a last-level cache of 32 MB; `usize::MAX` runs every layer on the
    /// whole batch). The logits are the same either way.
    pub fn set_group_bytes(&mut self, bytes: usize) {
        self.group_bytes = bytes.max(1);
    }

    /// The network's structure.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// The quantization record it was built with.
    pub fn record(&self) -> &QuantRecord {
        &self.record
    }

    /// Checks that an input of shape `[n, h, w, c]` fits the network.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] saying why.
    pub fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        self.spec.check_input(shape)
    }

    /// The logits `[n, 1, 1, classes]` of a batch of normalised images `[n, h, w, c]`.
    ///
    /// # Panics
    /// If the input does not fit (see [`Self::check_input`]).
    pub fn infer(&mut self, x: &Tensor) -> &Tensor {
        if let Err(e) = self.check_input(x.shape()) {
            panic!("{e}");
        }
        threads::install_awake(|| self.run(x));
        &self.logits
    }

    fn run(&mut self, x: &Tensor) {
        let mut b = std::mem::take(&mut self.buffers);
        let mut input_buf = std::mem::take(&mut b.input);
        let input = at_least(&mut input_buf, x.len());
        let quantizing = profile::scope("int8 quantize input");
        quantize_u8(x.data(), self.input.scale, self.input.zero_point, input);
        drop(quantizing);
        let batch = x.shape();
        let (grouped, group) = self.early_groups(batch);
        let mut shape = if group < batch[0] {
            // The early blocks a few images at a time, each group's output gathered into the
            // batch's (each image's values are contiguous).
            // batch's (each image's values are contiguous), where their last block writes them.
            let [n, h, w, c] = batch;
            let out = self.early_output_shape(batch, grouped);
            let len = out[1..].iter().product::<usize>();
            let mut gathered = std::mem::take(&mut b.gathered);
            let all = at_least(&mut gathered, n * len);
            for first in (0..n).step_by(group) {
                let images = group.min(n - first);
                let part = &input[first * h * w * c..][..images * h * w * c];
                let dest = &mut all[first * len..][..images * len];
                self.run_early(part, [images, h, w, c], grouped, &mut b, Some(dest));
            }
            std::mem::swap(&mut b.current, &mut gathered);
            b.gathered = gathered;
            out
        } else {
            self.run_early(input, batch, grouped, &mut b, None)
        };
        for block in &self.blocks[grouped..] {
            shape = block.run_buffered(shape, &mut b);
        }
        let [n, h, w, c] = shape;
        self.features.reshape_for([n, 1, 1, c]);
        let pooling = profile::scope("int8 avg pool");
        global_avg_pool_u8(&b.current[..n * h * w * c], n, c, self.last_scale, self.features.data_mut());
        drop(pooling);
        self.fc.forward(&self.features, &mut self.logits);
        b.input = input_buf;
        self.buffers = b;
    }

    /// The stem, its pooling and the first `blocks` blocks on `x` (of shape `input`), into
    /// `b.current`, or the last block's output into `dest` where given (then at least one
    /// block); returns the output shape.
    fn run_early(
        &self,
        x: &[u8],
        input: [usize; 4],
        blocks: usize,
        b: &mut Buffers,
        dest: Option<&mut [u8]>,
    ) -> [usize; 4] {
        self.stem.run(x, input, Int8Residual::None, &mut b.current, &mut b.projection);
        let mut shape = self.stem.output_shape(input);
        if let Some(s) = self.pool_shape(shape) {
            let _p = profile::scope("int8 max pool");
            max_pool_u8(&s, &b.current[..s.input_len()], at_least(&mut b.next, s.output_len()));
            std::mem::swap(&mut b.current, &mut b.next);
            shape = [s.n, s.out_h(), s.out_w(), s.c];
        }
        let Some(dest) = dest else {
            return self.blocks[..blocks].iter().fold(shape, |shape, block| block.run_buffered(shape, b));
        };
        let (last, first) = self.blocks[..blocks].split_last().expect("a destination for the output of no block");
        shape = first.iter().fold(shape, |shape, block| block.run_buffered(shape, b));
        last.run(shape, b, dest)
    }

    /// The output shape of the stem, its pooling and the first `blocks` blocks for an input of
    /// shape `input`.
    fn early_output_shape(&self, input: [usize; 4], blocks: usize) -> [usize; 4] {
        let mut shape = self.stem.output_shape(input);
        if let Some(s) = self.pool_shape(shape) {
            shape = [s.n, s.out_h(), s.out_w(), s.c];
        }
        self.blocks[..blocks].iter().fold(shape, |shape, block| block.output_shape(shape))
    }

    /// The max pooling after the stem, if any, for the stem's output of shape `[n, h, w, c]`.
    fn pool_shape(&self, [n, h, w, c]: [usize; 4]) -> Option<PoolShape> {
        self.pool.map(|(k, stride, pad)| PoolShape { n, h, w, c, k, stride, pad })
    }

    /// How many leading blocks run a group of images at a time, and the group: the blocks whose
    /// output over the whole batch exceeds `group_bytes`, in even groups of images small
    /// enough that each of their activations stays within it. A block's three activations and
    /// its residual then stay in the last-level cache instead of going to memory and back
    /// (docs/tuning.md).
    fn early_groups(&self, [n, h, w, c]: [usize; 4]) -> (usize, usize) {
        let mut shape = self.stem.output_shape([1, h, w, c]);
        let mut largest = shape.iter().product::<usize>();
        if let Some(s) = self.pool_shape(shape) {
            shape = [1, s.out_h(), s.out_w(), s.c];
        }
        let mut grouped = 0;
        for block in &self.blocks {
            shape = block.output_shape(shape);
            let bytes = shape.iter().product::<usize>();
            if n.saturating_mul(bytes) <= self.group_bytes {
                break;
            }
            largest = largest.max(bytes);
            grouped += 1;
        }
        if grouped == 0 {
            return (0, n);
        }
        let most = (self.group_bytes / largest.max(1)).max(1);
        (grouped, n.div_ceil(n.div_ceil(most)))
    }
}

/// The first `len` elements of `buf`, grown (zero-filled) where it is shorter but never
/// shrunk: a buffer that holds a short activation and then a longer one in every pass (the max
/// pool's output, then a block's) would otherwise be zero-filled again each time.
fn at_least<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

/// Bytes of an activation over a group of images up to which the early blocks run that group at
/// a time, by default (see [`QuantizedResNet::set_group_bytes`]; docs/tuning.md).
pub const GROUP_BYTES: usize = 4 << 20;

impl QuantBlock {
    /// The output shape for an input of shape `input`.
    fn output_shape(&self, input: [usize; 4]) -> [usize; 4] {
        self.units.iter().fold(input, |shape, unit| unit.output_shape(shape))
    }

    /// Runs on `b.current` (of shape `input`) into `b.current` (through `b.next`); returns the
    /// output shape.
    fn run_buffered(&self, input: [usize; 4], b: &mut Buffers) -> [usize; 4] {
        let mut next = std::mem::take(&mut b.next);
        let len = self.output_shape(input).iter().product::<usize>();
        let shape = self.run(input, b, at_least(&mut next, len));
        b.next = std::mem::replace(&mut b.current, next);
        shape
    }

    /// Runs on `b.current` (of shape `input`) into `y`, of the output's length; returns the
    /// output shape.
    fn run(&self, input: [usize; 4], b: &mut Buffers, y: &mut [u8]) -> [usize; 4] {
        let x = &b.current[..input.iter().product::<usize>()];
        let (last, inner) = self.units.split_last().expect("a block has units");
        let mut shape = input;
        for (i, unit) in inner.iter().enumerate() {
            let (done, rest) = b.inner.split_at_mut(i);
            let src = if i == 0 { x } else { &done[i - 1][..shape.iter().product::<usize>()] };
            unit.run(src, shape, Int8Residual::None, &mut rest[0], &mut b.projection);
            shape = unit.output_shape(shape);
        }
        let src = match inner.len() {
            0 => x,
            k => &b.inner[k - 1][..shape.iter().product::<usize>()],
        };
        let out_len = y.len();
        let residual = match &self.shortcut {
            QuantShortcut::None => Int8Residual::None,
            QuantShortcut::Identity => Int8Residual::U8 { x, scale: self.input_scale },
            QuantShortcut::Pad { cout, stride } => {
                let [n, h, w, cin] = input;
                let geometry = PadShortcutShape { n, h, w, cin, cout: *cout, stride: *stride };
                pad_shortcut_forward(&geometry, x, at_least(&mut b.shortcut, out_len));
                Int8Residual::U8 { x: &b.shortcut[..out_len], scale: self.input_scale }
            }
            QuantShortcut::Projection(p) => {
                p.run(x, input, Int8Residual::None, &mut b.shortcut, &mut b.projection);
                let Encoding::Signed(scale) = p.output else { unreachable!("a projection's output is signed") };
                Int8Residual::I8 { x: &b.projection[..out_len], scale }
            }
        };
        last.run_into(src, shape, residual, y);
        last.output_shape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::at_least;

    /// A buffer asked for fewer elements keeps its length and contents, so that asking for more
    /// again zero-fills nothing it already had; asked for more, it grows with zeros.
    #[test]
    fn buffers_grow_and_never_shrink() {
        let mut buf = vec![7u8; 10];
        assert_eq!(at_least(&mut buf, 4), &[7; 4]);
        assert_eq!(buf.len(), 10, "a shorter request truncated the buffer");
        at_least(&mut buf, 4).fill(1);
        assert_eq!(at_least(&mut buf, 12), &[1, 1, 1, 1, 7, 7, 7, 7, 7, 7, 0, 0]);
        assert_eq!(buf.len(), 12);
    }
}
