/// Geometry of one convolution applied to an NHWC batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both sides of both axes).
    pub pad: usize,
}

/// Floats of im2col tile each thread packs at a time (256 KiB), to stay in L2 beside the weight
/// and output tiles.
pub(super) const TILE_FLOATS: usize = 64 * 1024;

/// Output positions of a window of `k` sliding by `stride` over `size` positions padded by `pad`
/// on both sides (convolutions and pooling alike).
pub(crate) fn output_size(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad - k) / stride + 1
}

impl ConvShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        output_size(self.h, self.kh, self.stride, self.pad)
    }
    /// Output width.
    pub fn out_w(&self) -> usize {
        output_size(self.w, self.kw, self.stride, self.pad)
    }
    /// Rows of the im2col matrix: output pixels in the batch.
    pub fn rows(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }
    /// Columns of the im2col matrix: one receptive field.
    pub fn patch(&self) -> usize {
        self.kh * self.kw * self.cin
    }
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.cin
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.rows() * self.cout
    }
    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.patch() * self.cout
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> u64 {
        self.output_len() as u64 * self.patch() as u64
    }

    /// Checks the shape is usable.
    ///
    /// # Panics
    /// If the kernel does not fit the padded input or a size is zero.
    pub fn validate(&self) {
        assert!(
            self.kh > 0 && self.kw > 0 && self.stride > 0 && self.cin > 0 && self.cout > 0,
            "degenerate convolution {self:?}"
        );
        assert!(
            self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw,
            "kernel {}x{} does not fit input {}x{} with padding {}",
            self.kh,
            self.kw,
            self.h,
            self.w,
            self.pad
        );
    }

    /// A 1x1 stride-1 layer without padding, whose input is its own im2col matrix (a strided
    /// 1x1 layer is not).
    pub(in crate::conv) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.pad == 0 && self.stride == 1
    }

    /// A 1x1 layer of any stride: each output pixel reads one input pixel.
    pub(in crate::conv) fn is_one_by_one(&self) -> bool {
        self.kh == 1 && self.kw == 1
    }

    /// The 1x1 stride-1 layer over this layer's gathered input windows (its im2col rows as
    /// pixels of `patch()` channels), with the same weight matrix and output.
    pub(in crate::conv) fn gathered(&self) -> ConvShape {
        ConvShape { h: self.out_h(), w: self.out_w(), cin: self.patch(), kh: 1, kw: 1, stride: 1, pad: 0, ..*self }
    }

    /// Output rows per im2col tile.
    pub(in crate::conv) fn tile_rows(&self) -> usize {
        (TILE_FLOATS / self.patch()).clamp(16, 2048)
    }
}

pub(super) fn check_lens(s: &ConvShape, x: usize, w: usize, y: usize) {
    s.validate();
    assert_eq!(x, s.input_len(), "conv input length for {s:?}");
    assert_eq!(w, s.weight_len(), "conv weight length for {s:?}");
    assert_eq!(y, s.output_len(), "conv output length for {s:?}");
}
