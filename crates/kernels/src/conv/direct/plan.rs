use crate::conv::shape::ConvShape;
use crate::threads::{self, split_even};
use rayon::prelude::*;

/// Weight bytes a task of the direct forward pass may stream from its own L2 cache, since the
/// micro-kernels read a weight vector per handful of multiply-adds; larger weights are cut into
/// runs of output channels (docs/tuning.md).
pub(in crate::conv) const TASK_WEIGHT_BYTES: usize = 512 << 10;

/// Bytes of input a pass of the direct forward pass over a long row reads at most (its pixels'
/// windows, or a run of their channels), so that with the task's weight slice it stays in L2
/// (docs/tuning.md).
pub(in crate::conv) const LINE_INPUT_BYTES: usize = 256 << 10;
/// Output bytes a transformed long row (see [`LINE_INPUT_BYTES`]) is written in before the
/// transform reads them back, so that they are still in L2 (docs/tuning.md).
pub(in crate::conv) const TRANSFORM_RUN_BYTES: usize = 128 << 10;

/// Input channels per pass of the direct forward pass over a long row of `pixels` pixels and
/// `cin` channels: all of them, or runs of whole vectors whose part of the row stays within
/// [`LINE_INPUT_BYTES`].
pub(in crate::conv) fn input_run(cin: usize, pixels: usize) -> usize {
    let runs = (4 * pixels * cin).div_ceil(LINE_INPUT_BYTES);
    cin.div_ceil(runs).next_multiple_of(16).min(cin)
}

/// Pixels of a transformed long row of `cout` channels written before the transform reads them
/// back (see [`TRANSFORM_RUN_BYTES`]), in whole 16-pixel micro-kernel blocks.
pub(in crate::conv) fn transform_run_pixels(cout: usize) -> usize {
    (TRANSFORM_RUN_BYTES / (4 * cout)).next_multiple_of(16)
}

/// How the direct forward pass cuts a layer into parallel tasks: bands of output rows of one
/// image, times runs of output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::conv) struct DirectPlan {
    /// Output rows per band (the last band may be shorter).
    pub(in crate::conv) band: usize,
    /// Bands per image.
    pub(in crate::conv) bands: usize,
    /// Output channels per task: all of them while their weights fit [`TASK_WEIGHT_BYTES`],
    /// else runs of whole steps (see [`DirectPlan::new`]) that do, as near the same width as
    /// whole steps allow, so each task reads its slice of a large weight once from memory and
    /// reuses it for every pixel of its band.
    pub(in crate::conv) chunk: usize,
    /// Channel runs per band.
    pub(in crate::conv) chunks: usize,
}

impl DirectPlan {
    /// The plan for `s` with micro-kernel channel blocks of `block` and weights of
    /// `weight_bytes` per (tap, input channel, output channel). Bands have at most 8 rows,
    /// fewer when there are few images, so every thread gets several tasks, and as many.
    pub(in crate::conv) fn new(s: &ConvShape, block: usize, weight_bytes: usize) -> Self {
        Self::for_threads(s, block, weight_bytes, threads::num_threads())
    }

    /// [`Self::new`] for a pool of `threads` threads.
    pub(in crate::conv) fn for_threads(s: &ConvShape, block: usize, weight_bytes: usize, threads: usize) -> Self {
        // Runs of at least two vectors (the micro-kernels take fewer channels than their block
        // with more pixels; at one vector they wait on loads, not multiply-adds).
        Self::in_steps(s, block.min(32), weight_bytes, threads)
    }

    /// [`Self::new`] with channel runs in whole multiples of `step` channels (the int8 weights
    /// are packed in blocks of that many).
    pub(in crate::conv) fn aligned(s: &ConvShape, step: usize, weight_bytes: usize) -> Self {
        Self::in_steps(s, step, weight_bytes, threads::num_threads())
    }

    fn in_steps(s: &ConvShape, step: usize, weight_bytes: usize, threads: usize) -> Self {
        let per_channel = s.kh * s.kw * s.cin * weight_bytes;
        let widest_run = if s.cout * per_channel <= TASK_WEIGHT_BYTES {
            s.cout
        } else {
            (TASK_WEIGHT_BYTES / per_channel / step * step).max(step).min(s.cout)
        };
        // Runs as near the same width as whole steps allow, so that no thread waits for another
        // at the end of the pass (docs/tuning.md).
        let chunk = s.cout.div_ceil(s.cout.div_ceil(widest_run)).next_multiple_of(step).min(s.cout);
        let chunks = s.cout.div_ceil(chunk);
        let oh = s.out_h();
        let per_image = (4 * threads).div_ceil(s.n * chunks).max(1);
        let widest = oh.div_ceil(per_image).clamp(1, 8);
        // Down to half that height, a band that gives every thread as many tasks, all of as
        // many rows where one does, for the same reason (docs/tuning.md).
        let even_split = |b: usize| (s.n * chunks * oh.div_ceil(b)).is_multiple_of(threads);
        let heights = (widest.div_ceil(2)..=widest).rev();
        let band = (heights.clone().find(|&b| oh.is_multiple_of(b) && even_split(b)))
            .or_else(|| heights.clone().find(|&b| even_split(b)))
            .unwrap_or(widest);
        DirectPlan { band, bands: oh.div_ceil(band), chunk, chunks }
    }

    /// Tasks in all: channel runs outermost, so that a thread's consecutive tasks share their
    /// weight slice.
    pub(in crate::conv) fn tasks(&self, n: usize) -> usize {
        self.chunks * n * self.bands
    }

    /// Image, band and channel run of task `i`.
    pub(in crate::conv) fn task(&self, n: usize, i: usize) -> (usize, usize, usize) {
        let (ch, rest) = (i / (n * self.bands), i % (n * self.bands));
        (rest / self.bands, rest % self.bands, ch)
    }

    /// What task `i` of layer `s` computes: its image, output rows, channels, and the input rows
    /// its strip holds.
    pub(in crate::conv) fn band(&self, s: &ConvShape, i: usize) -> TaskBand {
        let (img, b, ch) = self.task(s.n, i);
        let oy0 = b * self.band;
        let rows = self.band.min(s.out_h() - oy0);
        TaskBand {
            img,
            oy0,
            rows,
            channels: ch * self.chunk..((ch + 1) * self.chunk).min(s.cout),
            strip_rows: (rows - 1) * s.stride + s.kh,
        }
    }
}

/// One task of a [`DirectPlan`] ([`DirectPlan::band`]).
pub(in crate::conv) struct TaskBand {
    /// The image.
    pub(in crate::conv) img: usize,
    /// The first output row.
    pub(in crate::conv) oy0: usize,
    /// Output rows.
    pub(in crate::conv) rows: usize,
    /// Output channels.
    pub(in crate::conv) channels: std::ops::Range<usize>,
    /// Input rows the band reads (padding included).
    pub(in crate::conv) strip_rows: usize,
}

/// Copies the weight `w` (`[k, cout]`) into panels of `chunk` output channels (the last one
/// narrower if `chunk` does not divide `cout`): panel `p` is `[k, width]`, contiguous, from
/// `p * chunk * k` in `dst`.
///
/// A task of the direct forward pass reads one run of channels of every weight row; in the
/// `[k, cout]` layout those are a few hundred bytes every `4 * cout` bytes, a page apart or
/// nearly, which neither the hardware prefetchers nor the TLB follow, so each run is copied into
/// a contiguous panel (docs/tuning.md). The copy reads `w` front to back, each thread a range of
/// rows.
pub(in crate::conv) fn pack_panels(w: &[f32], k: usize, cout: usize, chunk: usize, dst: &mut [f32]) {
    assert_eq!(w.len(), k * cout);
    let ranges: Vec<_> = split_even(k, threads::num_threads()).collect();
    // Every thread's rows of every panel: (first channel, width, destination rows).
    let mut pieces: Vec<Vec<(usize, usize, &mut [f32])>> = ranges.iter().map(|_| Vec::new()).collect();
    let mut rest = &mut dst[..k * cout];
    for c_lo in (0..cout).step_by(chunk) {
        let width = chunk.min(cout - c_lo);
        let (mut panel, tail) = rest.split_at_mut(k * width);
        rest = tail;
        for (range, part) in ranges.iter().zip(&mut pieces) {
            let (rows, tail) = panel.split_at_mut(range.len() * width);
            panel = tail;
            part.push((c_lo, width, rows));
        }
    }
    threads::install(|| {
        pieces.into_par_iter().zip(ranges).for_each(|(mut part, range)| {
            for (i, row) in w[range.start * cout..range.end * cout].chunks_exact(cout).enumerate() {
                for (c_lo, width, rows) in part.iter_mut() {
                    rows[i * *width..(i + 1) * *width].copy_from_slice(&row[*c_lo..*c_lo + *width]);
                }
            }
        });
    });
}
