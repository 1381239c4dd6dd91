//! The whole network: stem, stages of blocks, global average pooling and the classifier.

use crate::block::{BackwardLens, Block, ConvBn};
use crate::groups::TrainableFrom;
use crate::spec::{Family, ResNetSpec};
use crate::ModelError;
use resnet_kernels::{profile, threads, CpuFeatures, KernelConfig};
use resnet_nn::ops::{
    global_avg_pool_backward, global_avg_pool_forward, BatchNorm2d, BatchNormMode, Linear, MaxPool2d,
};
use resnet_nn::{Param, Tensor, TensorPool};

/// The first layers: a convolution with batch norm and ReLU, then (ImageNet nets) 3x3/2 max
/// pooling.
#[derive(Clone, Debug)]
pub struct StemLayers {
    /// `conv1` and `bn1`.
    pub unit: ConvBn,
    /// Max pooling (ImageNet nets only).
    pub pool: Option<MaxPool2d>,
    /// Max pooling output.
    pub pooled: Tensor,
}

impl StemLayers {
    /// The stem output.
    pub fn output(&self) -> &Tensor {
        if self.pool.is_some() {
            &self.pooled
        } else {
            &self.unit.z
        }
    }

    fn output_mut(&mut self) -> &mut Tensor {
        if self.pool.is_some() {
            &mut self.pooled
        } else {
            &mut self.unit.z
        }
    }
}

/// Called with each group of parameters whose gradients a backward pass has finished (see
/// [`ResNet::backward_with`]).
pub type GradientsReady<'a> = &'a mut (dyn FnMut(&[&Param]) + Send);

/// A ResNet (or plain network) with its parameters and the activations of its last forward pass.
#[derive(Clone, Debug)]
pub struct ResNet {
    spec: ResNetSpec,
    /// Stem.
    pub stem: StemLayers,
    /// Blocks in order (`layer1.0`, `layer1.1`, ...).
    pub blocks: Vec<Block>,
    /// Classifier.
    pub fc: Linear,
    features: Tensor,
    /// Pooled output of a stage short of the last ([`ResNet::embed`]).
    stage_features: Tensor,
    logits: Tensor,
    d_features: Vec<f32>,
    grads: [Vec<f32>; 5],
    spare: TensorPool,
}

impl ResNet {
    /// Builds the network a spec describes, with every parameter zero (call
    /// [`ResNet::init`](crate::InitConfig) or load weights next).
    ///
    /// # Errors
    /// If the spec is invalid.
    pub fn new(spec: ResNetSpec) -> Result<Self, ModelError> {
        spec.validate()?;
        let stem = match spec.family {
            Family::ImageNet => StemLayers {
                unit: ConvBn::new("conv1", "bn1", spec.in_channels, spec.stem_width, 7, 2),
                pool: Some(MaxPool2d::new(3, 2, 1)),
                pooled: Tensor::default(),
            },
            Family::Cifar => StemLayers {
                unit: ConvBn::new("conv1", "bn1", spec.in_channels, spec.stem_width, 3, 1),
                pool: None,
                pooled: Tensor::default(),
            },
        };
        let blocks = spec.blocks().iter().map(|p| Block::new(p, spec.block, spec.stride_placement)).collect();
        let fc = Linear::new("fc", spec.feature_channels(), spec.num_classes);
        Ok(Self {
            spec,
            stem,
            blocks,
            fc,
            features: Tensor::default(),
            stage_features: Tensor::default(),
            logits: Tensor::default(),
            d_features: Vec::new(),
            grads: Default::default(),
            spare: TensorPool::default(),
        })
    }

    /// The structure.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// Checks that an input of shape `[n, h, w, c]` fits the network.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] saying why.
    pub fn check_input(&self, shape: [usize; 4]) -> Result<(), ModelError> {
        self.spec.check_input(shape)
    }

    /// Forward pass; returns the logits `[n, 1, 1, classes]`. Every activation is kept: in
    /// [`BatchNormMode::Train`] for [`ResNet::backward`], in eval mode for a look inside (each
    /// unit's `y`). For predictions alone, [`ResNet::infer`] needs far less memory.
    ///
    /// # Panics
    /// If the input does not fit (see [`ResNet::check_input`]).
    pub fn forward(&mut self, x: &Tensor, mode: BatchNormMode) -> &Tensor {
        let blocks = self.blocks.len();
        threads::install_awake(|| self.run(x, mode, false, blocks));
        &self.logits
    }

    /// Eval-mode forward pass (running batch-norm statistics) that keeps an activation only
    /// until the next block has read it, passing its buffer on: the memory of a few activations
    /// instead of all of them. Returns the same logits as `forward(x, BatchNormMode::Eval)`.
    ///
    /// # Panics
    /// If the input does not fit (see [`ResNet::check_input`]).
    pub fn infer(&mut self, x: &Tensor) -> &Tensor {
        let blocks = self.blocks.len();
        threads::install_awake(|| self.run(x, BatchNormMode::Eval, true, blocks));
        &self.logits
    }

    /// The forward pass through the stem and the first `blocks` blocks; returns the global
    /// average of the last output, which is the classifier's input (and the classifier runs)
    /// when every block has run. `release` hands each activation back to the pool once it is
    /// dead.
    ///
    /// The callers run it on a worker of the compute pool with the other workers kept awake
    /// (`threads::install_awake`), so that each kernel's parallel part starts there directly
    /// rather than by handing the pool a job and sleeping until it is done: that round trip (two
    /// thread wake-ups a kernel, dozens of kernels a pass) is measurable at small batches
    /// (docs/tuning.md, `threads::install_awake`).
    pub(crate) fn run(&mut self, x: &Tensor, mode: BatchNormMode, release: bool, blocks: usize) -> &Tensor {
        if let Err(e) = self.check_input(x.shape()) {
            panic!("{e}");
        }
        let spare = &mut self.spare;
        let stem = &mut self.stem;
        // Inference writes the stem's ReLU output alone (its convolution applies the batch norm),
        // the other passes its convolution output, and its ReLU output only where no max pool
        // applies the batch norm and ReLU as it reads.
        let pooled = stem.pool.is_some();
        spare.lend(if release { &mut stem.unit.z } else { &mut stem.unit.y });
        if release {
            stem.unit.infer(x, None, None, true);
        } else if pooled {
            stem.unit.convolve(x, None, mode);
        } else {
            spare.lend(&mut stem.unit.z);
            stem.unit.forward(x, mode, None, true);
        }
        if let Some(pool) = &mut stem.pool {
            spare.lend(&mut stem.pooled);
            match release {
                true => pool.forward(&stem.unit.z, &mut stem.pooled),
                false => pool.forward_transformed(&stem.unit.y, Some(stem.unit.bn.transform()), &mut stem.pooled),
            }
            if release {
                spare.reclaim(&mut stem.unit.z);
            }
        }
        if release {
            spare.reclaim(&mut stem.unit.y);
        }
        for i in 0..blocks {
            let (done, rest) = self.blocks.split_at_mut(i);
            let block = &mut rest[0];
            let input = if i == 0 { self.stem.output_mut() } else { done[i - 1].output_mut() };
            block.for_each_inner_activation(release, |t| spare.lend(t));
            // A block that writes its output over its shortcut needs no buffer for it.
            if !(release && block.writes_over_shortcut(input.shape())) {
                spare.lend(block.output_mut());
            }
            if release {
                // The block is its input's last reader: it may write its output over it.
                let mut input = std::mem::take(input);
                block.infer_consuming(&mut input);
                block.for_each_inner_activation(release, |t| spare.reclaim(t));
                spare.reclaim(&mut input);
            } else {
                block.forward(input, mode);
            }
        }
        let whole = blocks == self.blocks.len();
        let last = self.blocks[..blocks].last().map_or(self.stem.output(), Block::output);
        let pooled = if whole { &mut self.features } else { &mut self.stage_features };
        let _p = profile::scope("avg pool");
        global_avg_pool_forward(last, pooled);
        drop(_p);
        if release {
            spare.reclaim(self.blocks[..blocks].last_mut().map_or(self.stem.output_mut(), Block::output_mut));
        }
        if !whole {
            return &self.stage_features;
        }
        self.fc.forward(&self.features, &mut self.logits);
        &self.features
    }

    /// Logits of the last forward pass.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Pooled features of the last forward pass, `[n, 1, 1, c]`: the classifier's input, after
    /// [`ResNet::forward`], [`ResNet::infer`] or [`ResNet::embed`] of [`FeatureLayer::Final`]
    /// (a stage's embedding leaves them as they were).
    ///
    /// # Examples
    /// ```
    /// use resnet_models::{zoo, BatchNormMode, InitConfig, ResNet};
    /// use resnet_nn::Tensor;
    ///
    /// let mut net = ResNet::new(zoo::spec("cifar-resnet8", &zoo::ModelOptions::default())?)?;
    /// net.init(&InitConfig::default());
    /// let x = Tensor::from_vec([2, 8, 8, 3], (0..384).map(|i| (i % 5) as f32 - 2.0).collect());
    /// net.forward(&x, BatchNormMode::Eval);
    /// assert_eq!(net.features().shape(), [2, 1, 1, 64]); // cifar-resnet8 ends on 64 channels
    /// # Ok::<(), resnet_models::ModelError>(())
    /// ```
    ///
    /// [`FeatureLayer::Final`]: crate::FeatureLayer::Final
    pub fn features(&self) -> &Tensor {
        &self.features
    }

    /// Backward pass after a training-mode [`ResNet::forward`] on `x`: adds every parameter's
    /// gradient of the loss whose logit gradient is `dlogits` (`[n * classes]`).
    pub fn backward(&mut self, x: &Tensor, dlogits: &[f32]) {
        self.backward_with(x, dlogits, None);
    }

    /// [`Self::backward`] that calls `ready` with each group of parameters as soon as their
    /// gradients are final, in the order the pass finishes them: the classifier, the blocks
    /// from the last, the stem (data-parallel training starts summing them over the ranks
    /// while the pass goes on). It runs on the compute pool's threads.
    pub fn backward_with(&mut self, x: &Tensor, dlogits: &[f32], ready: Option<GradientsReady<'_>>) {
        // On a worker of the compute pool, as the forward pass (see `run`).
        threads::install_awake(|| self.backward_in_pool(x, dlogits, ready));
    }

    fn backward_in_pool(&mut self, x: &Tensor, dlogits: &[f32], mut ready: Option<GradientsReady<'_>>) {
        assert_eq!(dlogits.len(), self.logits.len(), "logit gradient length");
        let lens = self.backward_lens();
        for (g, len) in self.grads.iter_mut().zip([lens.output, lens.output, lens.unit, lens.inner, lens.inner]) {
            if g.len() < len {
                g.resize(len, 0.0);
            }
        }
        // Layers below the lowest trainable one need no gradient at all: the pass stops there.
        let lowest = self.lowest_trainable();
        let stem_trains = lowest == TrainableFrom::Stem;
        let first_block = match lowest {
            TrainableFrom::Stem => 0,
            TrainableFrom::Block(i) => i,
            TrainableFrom::Classifier | TrainableFrom::Nothing => self.blocks.len(),
        };
        if lowest == TrainableFrom::Nothing {
            return;
        }
        self.d_features.resize(self.features.len(), 0.0);
        let below = first_block < self.blocks.len();
        self.fc.backward(&self.features, dlogits, below.then_some(&mut self.d_features[..]), false);
        if let Some(r) = ready.as_mut() {
            r(&[&self.fc.weight, &self.fc.bias]);
        }
        if !below {
            return;
        }
        let [ga, gb, t1, t2, t3] = &mut self.grads;
        let (mut d_out, mut d_in) = (ga.as_mut_slice(), gb.as_mut_slice());
        let last_shape = self.blocks.last().map_or(self.stem.output(), Block::output).shape();
        let len = last_shape.iter().product();
        let p = profile::scope("avg pool");
        global_avg_pool_backward(last_shape, &self.d_features, &mut d_out[..len], false);
        drop(p);
        // Whether `d_out` carries the mask of the ReLU that produced its activation (every
        // block input is a ReLU output: the stem's, maybe max-pooled, or a block's).
        let mut masked = false;
        for i in (first_block..self.blocks.len()).rev() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let input = if i == 0 { self.stem.output() } else { done[i - 1].output() };
            let dx = (i > first_block || stem_trains).then_some(&mut *d_in);
            masked = rest[0].backward(input, d_out, dx, [t1, t2, t3], masked, true);
            if let Some(r) = ready.as_mut() {
                r(&rest[0].params().collect::<Vec<_>>());
            }
            std::mem::swap(&mut d_out, &mut d_in);
        }
        if !stem_trains {
            return;
        }
        let stem = &mut self.stem;
        let (dz, relu): (&[f32], _) = match &stem.pool {
            Some(pool) => {
                // The pool read the ReLU output from `y` (it was never stored): so does the mask.
                let y = &stem.unit.y;
                pool.backward(y.shape(), &d_out[..stem.pooled.len()], &mut d_in[..y.len()], false);
                (&d_in[..y.len()], crate::block::ReluAfter::Fused)
            }
            None => (&d_out[..stem.unit.z.len()], crate::block::ReluAfter::Stored),
        };
        // A mask applied to the max pool's output gradient is the stem ReLU's: each pooled
        // value goes back to the window element it came from, positive exactly when it is.
        let relu = if masked { crate::block::ReluAfter::None } else { relu };
        // The input needs no gradient.
        stem.unit.backward(x, None, dz, relu, t1, None, false);
        if let Some(r) = ready.as_mut() {
            r(&[&stem.unit.conv.weight, &stem.unit.bn.weight, &stem.unit.bn.bias]);
        }
    }

    /// The lengths of the backward pass's gradient buffers (see [`BackwardLens`]): the blocks'
    /// and the stem's, whose max pool's input gradient goes into a block-gradient buffer.
    fn backward_lens(&self) -> BackwardLens {
        let stem = &self.stem;
        let pool_input = if stem.pool.is_some() { stem.unit.y.len() } else { 0 };
        let stem = BackwardLens { output: stem.output().len().max(pool_input), unit: stem.unit.y.len(), inner: 0 };
        self.blocks.iter().map(Block::backward_lens).fold(stem, BackwardLens::max)
    }

    /// Visits every parameter in torchvision's state-dict order.
    pub fn for_each_param(&mut self, mut f: impl FnMut(&mut Param)) {
        f(&mut self.stem.unit.conv.weight);
        f(&mut self.stem.unit.bn.weight);
        f(&mut self.stem.unit.bn.bias);
        for b in &mut self.blocks {
            b.for_each_param(&mut f);
        }
        f(&mut self.fc.weight);
        f(&mut self.fc.bias);
    }

    /// Makes every convolution use `config`'s precision and allowed algorithms.
    ///
    /// # Errors
    /// A message naming the missing CPU feature where this CPU cannot run the precision.
    pub fn set_kernel_config(&mut self, config: KernelConfig) -> Result<(), String> {
        config.check(&CpuFeatures::current())?;
        self.stem.unit.conv.set_kernel_config(config);
        for b in &mut self.blocks {
            b.for_each_conv(&mut |c| c.set_kernel_config(config));
        }
        Ok(())
    }

    /// Visits every batch norm in torchvision's order.
    pub fn for_each_batch_norm(&mut self, mut f: impl FnMut(&mut BatchNorm2d)) {
        f(&mut self.stem.unit.bn);
        for b in &mut self.blocks {
            b.for_each_batch_norm(&mut f);
        }
    }

    /// Every batch norm in torchvision's order (read-only).
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut out = vec![&self.stem.unit.bn];
        for b in &self.blocks {
            out.extend(b.batch_norms());
        }
        out
    }

    /// All parameters, in order (read-only).
    pub fn params(&self) -> Vec<&Param> {
        let mut out = vec![&self.stem.unit.conv.weight, &self.stem.unit.bn.weight, &self.stem.unit.bn.bias];
        for b in &self.blocks {
            out.extend(b.params());
        }
        out.extend([&self.fc.weight, &self.fc.bias]);
        out
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        let _p = profile::scope("zero grad");
        self.for_each_param(|p| p.zero_grad());
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> u64 {
        self.params().iter().map(|p| p.len() as u64).sum()
    }

    /// Bytes held by activations, spare activation buffers and gradient buffers (the memory that
    /// grows with the batch; [`ResNetSpec::batch_memory`] computes it ahead).
    pub fn activation_bytes(&self) -> usize {
        let stem = self.stem.unit.y.bytes() + self.stem.unit.z.bytes() + self.stem.pooled.bytes();
        let blocks: usize = self.blocks.iter().map(Block::activation_bytes).sum();
        let grads: usize = self.grads.iter().chain([&self.d_features]).map(|g| g.capacity() * 4).sum();
        stem + blocks + grads + self.spare.bytes() + self.features.bytes() + self.logits.bytes()
    }
}
