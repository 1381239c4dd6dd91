//! The output side of a forward convolution: what happens to its output as it is written.

use crate::Workspace;

/// What follows a convolution in an eval-mode network, applied to its output as it is written:
/// `y = act(conv * scale + shift (+ residual))` per output channel, with `act` a ReLU or nothing.
/// That is a batch norm with fixed statistics, the residual addition of a block and its ReLU, so
/// the convolution's raw output is never stored and read again. The arithmetic is the batch
/// norm pass's ([`crate::batch_norm::scale_shift_act`]), so the values are the same.
#[derive(Clone, Copy, Debug)]
pub struct OutputTransform<'a> {
    /// Per-channel multiplier.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
    /// Added after the affine, same shape as the output.
    pub residual: Option<&'a [f32]>,
    /// ReLU last.
    pub relu: bool,
}

impl OutputTransform<'_> {
    /// The transform as the kernels take it, for output channels from `c0` on and the output
    /// element `at` (whose residual element it points to).
    #[cfg(target_arch = "x86_64")]
    pub(in crate::conv) fn raw(&self, c0: usize, at: usize) -> crate::simd::avx512::RawOutputTransform {
        crate::simd::avx512::RawOutputTransform {
            scale: self.scale[c0..].as_ptr(),
            shift: self.shift[c0..].as_ptr(),
            residual: self.residual.map(|r| r[at..].as_ptr()),
            relu: self.relu,
        }
    }

    /// Transforms `y`, rows of output channels `c0..c0 + width` whose first element is element
    /// `at` of the output: either whole pixels (`c0 = 0`, `width = cout`) or one pixel's run.
    pub(in crate::conv) fn apply(&self, y: &mut [f32], at: usize, c0: usize, width: usize) {
        let residual = self.residual.map(|r| &r[at..at + y.len()]);
        let (scale, shift) = (&self.scale[c0..c0 + width], &self.shift[c0..c0 + width]);
        crate::batch_norm::scale_shift_rows_in_place(y, scale, shift, residual, self.relu);
    }
}

/// What the forward pass does to its output besides writing it.
#[derive(Debug)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// Sums it per channel into `[2 * cout]` (sums, then sums of squares): a training-mode
    /// batch norm's statistics.
    Stats(&'a mut [f64]),
    /// Stores it in bf16 in `stored` (to nearest, ties to even, as
    /// [`crate::activations::Activations`] holds bf16) and sums the stored values per channel
    /// into `sums` (`[2 * cout]`, as [`Epilogue::Stats`]): a training-mode batch norm's
    /// statistics of what its passes will read. The `f32` output is then scratch: what it holds
    /// afterwards is unspecified.
    StatsStoringBf16 {
        /// The sums, then the sums of squares.
        sums: &'a mut [f64],
        /// The output as bf16 bits.
        stored: &'a mut [u16],
    },
    /// Transforms it (an eval-mode batch norm, residual and ReLU).
    Transform(OutputTransform<'a>),
    /// Transforms it, adding the residual the output buffer holds on entry, each value read
    /// before the sum is stored over it (the transform has no residual of its own). Only where
    /// [`crate::conv::adds_residual_in_place`] says so.
    TransformOntoResidual(OutputTransform<'a>),
}

impl Epilogue<'_> {
    /// Checks that its buffers fit an output of `len` floats and `cout` channels.
    ///
    /// # Panics
    /// If they do not.
    pub(in crate::conv) fn check(&self, cout: usize, len: usize) {
        let image = |what: &str, v: &[f32]| {
            assert_eq!(v.len(), len, "{what} of {} floats for an output of {len}", v.len());
        };
        match self {
            Epilogue::None => {}
            Epilogue::Stats(st) => {
                assert_eq!(st.len(), 2 * cout, "stats hold a sum and a sum of squares per output channel")
            }
            Epilogue::StatsStoringBf16 { sums, stored } => {
                assert_eq!(sums.len(), 2 * cout, "stats hold a sum and a sum of squares per output channel");
                assert_eq!(stored.len(), len, "a bf16 output of {} values for an output of {len}", stored.len());
            }
            Epilogue::Transform(o) | Epilogue::TransformOntoResidual(o) => {
                assert_eq!((o.scale.len(), o.shift.len()), (cout, cout), "output transform of the wrong length");
                match o.residual {
                    Some(r) if matches!(self, Epilogue::TransformOntoResidual(_)) => {
                        panic!("a residual of {} floats besides the one in the output", r.len())
                    }
                    Some(r) => image("residual", r),
                    None => {}
                }
            }
        }
    }

    /// The epilogue as a pass of its own over a finished output `y` of `cout` channels.
    pub(in crate::conv) fn run_after(self, y: &mut [f32], cout: usize, ws: &mut Workspace) {
        match self {
            Epilogue::None => {}
            Epilogue::Stats(out) => crate::batch_norm::channel_sums(y, cout, out, ws),
            Epilogue::StatsStoringBf16 { sums, stored } => {
                crate::batch_norm::channel_sums_storing_bf16(y, cout, stored, sums, ws)
            }
            Epilogue::Transform(o) => {
                crate::batch_norm::scale_shift_act_in_place(y, cout, o.scale, o.shift, o.residual, o.relu)
            }
            Epilogue::TransformOntoResidual(_) => unreachable!("the residual in the output is overwritten by the pass"),
        }
    }

    /// The Winograd output transform's form of the output transform (for an output of `len`
    /// floats, `cout` channels), or of none: writing (in bf16 where the output is stored so), or
    /// adding when `accumulate`. The statistics are gathered beside it.
    ///
    /// # Panics
    /// If the transform's buffers do not fit, or it would follow an accumulating pass.
    #[cfg(target_arch = "x86_64")]
    pub(in crate::conv) fn tile_write(
        &mut self,
        accumulate: bool,
        len: usize,
        cout: usize,
    ) -> crate::simd::winograd::TileWrite {
        use crate::simd::winograd::TileWrite;
        assert!(
            !(accumulate && matches!(self, Epilogue::Transform(_) | Epilogue::StatsStoringBf16 { .. })),
            "an output transform or a bf16 output after an accumulating pass"
        );
        self.check(cout, len);
        match self {
            Epilogue::Transform(o) => TileWrite::Transform(o.raw(0, 0)),
            Epilogue::StatsStoringBf16 { stored, .. } => TileWrite::StoreBf16(stored.as_mut_ptr()),
            Epilogue::TransformOntoResidual(_) => unreachable!("Winograd takes no residual from its output"),
            _ if accumulate => TileWrite::Accumulate,
            _ => TileWrite::Store,
        }
    }
}
