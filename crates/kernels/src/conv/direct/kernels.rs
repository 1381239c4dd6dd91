//! Dispatch from run-time tile sizes to the const-generic micro-kernels.

use crate::simd::amx;
use crate::simd::avx512::{self, lane_mask, ConvTileArgs, ConvTileArgsBf16, RawOutputTransform, WgradTileArgs};
use std::arch::x86_64::__mmask16;

macro_rules! by_rows {
    ($kernel:ident, $rows:expr, $nb:literal, [$($r:literal)*], $args:tt) => {
        match $rows {
            $($r => $kernel::<$r, $nb> $args,)*
            _ => unreachable!("tile of {} rows", $rows),
        }
    };
}

/// One micro-kernel call's extent: `pixels` consecutive output pixels times `channels` output
/// channels, written or (`accumulate`) added to.
#[derive(Clone, Copy, Debug)]
pub(in crate::conv) struct Tile {
    /// Output pixels.
    pub(in crate::conv) pixels: usize,
    /// Output channels.
    pub(in crate::conv) channels: usize,
    /// Add to the output rather than write it.
    pub(in crate::conv) accumulate: bool,
}

/// Memory a caller reads after its current kernel calls (at most two ranges), prefetched toward
/// L2 while those calls compute, spread over their pixel pairs, so that fetching it overlaps
/// their arithmetic instead of following it. A hint: lines may be skipped where a call's share
/// straddles the two ranges.
#[derive(Clone, Copy, Debug, Default)]
pub(in crate::conv) struct NextReads<'a> {
    /// The ranges' bytes, in the order they will be read.
    pub(in crate::conv) ranges: [&'a [u8]; 2],
}

impl NextReads<'_> {
    /// Bytes per cache line.
    const LINE: usize = 64;

    fn lines(&self) -> usize {
        self.ranges.iter().map(|r| r.len().div_ceil(Self::LINE)).sum()
    }

    /// Part `i` of `n` equal parts (by bytes, the ranges taken one after the other), for the
    /// `i`-th of `n` groups of calls.
    pub(in crate::conv) fn part(&self, i: usize, n: usize) -> Self {
        let total: usize = self.ranges.iter().map(|r| r.len()).sum();
        let (mut lo, mut hi) = (i * total / n, (i + 1) * total / n);
        let ranges = self.ranges.map(|r| {
            let (a, b) = (lo.min(r.len()), hi.min(r.len()));
            (lo, hi) = (lo - a, hi - b);
            &r[a..b]
        });
        NextReads { ranges }
    }

    /// Lines `first..first + count` of the ranges taken one after the other, cut at the end of
    /// the range holding `first`: (address, lines).
    fn chunk(&self, mut first: usize, count: usize) -> (*const u8, usize) {
        for r in self.ranges {
            let lines = r.len().div_ceil(Self::LINE);
            if first < lines {
                return (r[first * Self::LINE..].as_ptr(), count.min(lines - first));
            }
            first -= lines;
        }
        (std::ptr::null(), 0)
    }
}

/// [`avx512::wgrad_pairs_bf16`] over `kh` taps (one kernel column), `co` output and `ci`
/// input channels, both multiples of 16: the three rows of a 3x3 kernel share each
/// broadcast; 24 accumulators or fewer per call. `next` is spread over the calls' prefetches
/// (`g`'s own are replaced).
///
/// # Safety
/// The kernel's contract for the whole block (`R`, `T` and `NB` cover it).
#[allow(clippy::too_many_arguments)]
pub(in crate::conv) unsafe fn wgrad_pairs(
    g: &avx512::WgradPairsArgs,
    kh: usize,
    co: usize,
    ci: usize,
    dy: *const u16,
    x: *const u32,
    acc: *mut f32,
    next: &NextReads<'_>,
) {
    use avx512::wgrad_pairs_bf16 as k;
    debug_assert!(co.is_multiple_of(16) && ci.is_multiple_of(16));
    type Kernel = unsafe fn(&avx512::WgradPairsArgs, *const u16, *const u32, *mut f32);
    let three = kh == 3;
    let taps = if three { 1 } else { kh };
    // The block of input channels from c0: (vectors, output channels per call, kernel); the row
    // counts divide 16, so they tile co.
    let block = |c0: usize| -> (usize, usize, Kernel) {
        let nb = ((ci - c0) / 16).min(if three { 2 } else { 4 });
        match (three, nb) {
            (true, 1) => (nb, 8, k::<3, 8, 1>),
            (true, _) => (nb, 4, k::<3, 4, 2>),
            (false, 1) => (nb, 16, k::<1, 16, 1>),
            (false, 2) => (nb, 8, k::<1, 8, 2>),
            (false, 3) => (nb, 8, k::<1, 8, 3>),
            _ => (nb, 4, k::<1, 4, 4>),
        }
    };
    let (mut calls, mut c0) = (0, 0);
    while c0 < ci {
        let (nb, rows, _) = block(c0);
        calls += taps * co / rows;
        c0 += 16 * nb;
    }
    let per_call = next.lines().div_ceil(calls.max(1));
    let (mut call, mut c0) = (0, 0);
    while c0 < ci {
        let (nb, rows, kernel) = block(c0);
        for ky in 0..taps {
            for o0 in (0..co).step_by(rows) {
                let (prefetch, prefetch_lines) = next.chunk(call * per_call, per_call);
                let g = avx512::WgradPairsArgs { prefetch, prefetch_lines, ..*g };
                call += 1;
                // SAFETY: block (ky.., o0.., c0..) of the caller's ranges (contract).
                unsafe {
                    let dy = dy.add(o0 * g.dy_stride);
                    let x = x.add(ky * g.x_tap_stride + c0);
                    let acc = acc.add(ky * g.acc_tap_stride + o0 * g.acc_row_stride + c0);
                    kernel(&g, dy, x, acc)
                }
            }
        }
        c0 += 16 * nb;
    }
}

/// Output pixels per forward tile for `nb` channel vectors (accumulators stay <= 24).
pub(in crate::conv) fn conv_pixels(nb: usize) -> usize {
    [16, 12, 8, 6][nb - 1]
}

/// Input channels per weight-gradient tile for `nb` channel vectors.
pub(in crate::conv) fn wgrad_channels(nb: usize) -> usize {
    [16, 12, 8, 6][nb - 1]
}

/// Input channels per stride-1 3-wide weight-gradient tile (three taps of accumulators).
pub(in crate::conv) fn wgrad_s1k3_channels(nb: usize) -> usize {
    [8, 4, 2][nb - 1]
}

/// Which forward micro-kernel computes a convolution's tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::conv) enum ConvKernel {
    /// [`avx512::conv_tile`]: any stride and kernel.
    General,
    /// [`avx512::conv_tile_s1k3`]: stride 1, 3-wide, up to 48 channels per tile.
    S1K3,
    /// [`amx::conv_tile`] (bf16 only), `kp` input pairs a step: 32 pixels x 32 channels on
    /// `wide` rows (more than 16 pixels), else 16 pixels x 64 channels.
    Amx { kp: usize, wide: bool },
}

impl ConvKernel {
    pub(in crate::conv) fn choose(s: &crate::conv::shape::ConvShape) -> Self {
        if s.stride == 1 && s.kw == 3 {
            ConvKernel::S1K3
        } else {
            ConvKernel::General
        }
    }

    /// Output channels per tile: up to 64 for the general kernel; for the 3-wide one all of
    /// them up to 48, else blocks of 32 (its best shape, 8 pixels x 2 vectors).
    pub(in crate::conv) fn channel_block(self, cout: usize) -> usize {
        match self {
            ConvKernel::General => 64,
            ConvKernel::S1K3 if cout <= 48 => cout,
            ConvKernel::S1K3 | ConvKernel::Amx { wide: true, .. } => 32,
            ConvKernel::Amx { wide: false, .. } => 64,
        }
    }

    pub(in crate::conv) fn max_pixels(self, channels: usize) -> usize {
        let nb = channels.div_ceil(16);
        match self {
            ConvKernel::General => conv_pixels(nb),
            ConvKernel::S1K3 => [16, 8, 6][nb - 1],
            ConvKernel::Amx { wide: true, .. } => 32,
            ConvKernel::Amx { wide: false, .. } => 16,
        }
    }

    /// Whether [`Self::run`] applies an output transform in registers (only the general
    /// kernel does; the others leave it to a pass over what they wrote).
    pub(in crate::conv) fn fuses_transform(self) -> bool {
        self == ConvKernel::General
    }

    /// # Safety
    /// The contract of the chosen kernel for `r <= self.max_pixels(channels)` pixels; an
    /// `transform` only where [`Self::fuses_transform`].
    pub(in crate::conv) unsafe fn run(
        self,
        tile: Tile,
        g: &ConvTileArgs,
        a: *const f32,
        w: *const f32,
        y: *mut f32,
        transform: Option<&RawOutputTransform>,
    ) {
        let Tile { pixels: r, channels, accumulate } = tile;
        debug_assert!(transform.is_none() || self.fuses_transform());
        use avx512::conv_tile_s1k3 as k;
        // SAFETY: forwarded contract; `r` is within the kernel's table (max_pixels) for this `nb`.
        unsafe {
            match self {
                ConvKernel::General => {
                    use avx512::conv_tile as k;
                    match channels.div_ceil(16) {
                        1 => {
                            by_rows!(k, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate, transform))
                        }
                        2 => {
                            by_rows!(k, r, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, a, w, y, &masks::<2>(channels), accumulate, transform))
                        }
                        3 => {
                            by_rows!(k, r, 3, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<3>(channels), accumulate, transform))
                        }
                        4 => {
                            by_rows!(k, r, 4, [1 2 3 4 5 6], (g, a, w, y, &masks::<4>(channels), accumulate, transform))
                        }
                        nb => unreachable!("{nb} channel vectors"),
                    }
                }
                ConvKernel::S1K3 => match channels.div_ceil(16) {
                    1 => {
                        by_rows!(k, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                    }
                    2 => by_rows!(k, r, 2, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<2>(channels), accumulate)),
                    3 => by_rows!(k, r, 3, [1 2 3 4 5 6], (g, a, w, y, &masks::<3>(channels), accumulate)),
                    nb => unreachable!("{nb} channel vectors"),
                },
                ConvKernel::Amx { .. } => unreachable!("AMX tiles are bf16 only"),
            }
        }
    }
}

impl ConvKernel {
    /// [`Self::run`] on bf16 channel pairs.
    ///
    /// # Safety
    /// The contract of the chosen bf16 kernel for `r <= self.max_pixels(channels)` pixels.
    pub(in crate::conv) unsafe fn run_bf16(
        self,
        tile: Tile,
        g: &ConvTileArgsBf16,
        a: *const u32,
        w: *const u32,
        y: *mut f32,
    ) {
        let Tile { pixels: r, channels, accumulate } = tile;
        use avx512::{conv_tile_bf16 as kg, conv_tile_s1k3_bf16 as ks};
        // SAFETY: forwarded contract.
        unsafe {
            match (self, channels.div_ceil(16)) {
                (ConvKernel::Amx { kp, .. }, nb) => amx::conv_tile(r, nb, kp, g, a, w, y, accumulate),
                (ConvKernel::General, 1) => {
                    by_rows!(kg, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                }
                (ConvKernel::General, 2) => {
                    by_rows!(kg, r, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, a, w, y, &masks::<2>(channels), accumulate))
                }
                (ConvKernel::General, 3) => {
                    by_rows!(kg, r, 3, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<3>(channels), accumulate))
                }
                (ConvKernel::General, 4) => {
                    by_rows!(kg, r, 4, [1 2 3 4 5 6], (g, a, w, y, &masks::<4>(channels), accumulate))
                }
                (ConvKernel::S1K3, 1) => {
                    by_rows!(ks, r, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, a, w, y, &masks::<1>(channels), accumulate))
                }
                (ConvKernel::S1K3, 2) => {
                    by_rows!(ks, r, 2, [1 2 3 4 5 6 7 8], (g, a, w, y, &masks::<2>(channels), accumulate))
                }
                (ConvKernel::S1K3, 3) => {
                    by_rows!(ks, r, 3, [1 2 3 4 5 6], (g, a, w, y, &masks::<3>(channels), accumulate))
                }
                (kind, nb) => unreachable!("{kind:?} with {nb} channel vectors"),
            }
        }
    }
}

/// # Safety
/// The contract of [`avx512::wgrad_tile_s1k3`] for `rc` input and `channels` output channels.
pub(in crate::conv) unsafe fn wgrad_tile_s1k3(
    rc: usize,
    channels: usize,
    g: &WgradTileArgs,
    tap_stride: usize,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
) {
    use avx512::wgrad_tile_s1k3 as k;
    // SAFETY: forwarded contract; `rc` is within the table of wgrad_s1k3_channels.
    unsafe {
        match channels.div_ceil(16) {
            1 => by_rows!(k, rc, 1, [1 2 3 4 5 6 7 8], (g, tap_stride, x, dy, acc, &masks::<1>(channels))),
            2 => by_rows!(k, rc, 2, [1 2 3 4], (g, tap_stride, x, dy, acc, &masks::<2>(channels))),
            3 => by_rows!(k, rc, 3, [1 2], (g, tap_stride, x, dy, acc, &masks::<3>(channels))),
            nb => unreachable!("{nb} channel vectors"),
        }
    }
}

pub(in crate::conv) fn masks<const NB: usize>(channels: usize) -> [__mmask16; NB] {
    std::array::from_fn(|j| lane_mask(channels.saturating_sub(16 * j).min(16)))
}

/// # Safety
/// The contract of [`avx512::wgrad_tile`] for `rc` input and `channels` output channels.
pub(in crate::conv) unsafe fn wgrad_tile(
    rc: usize,
    channels: usize,
    g: &WgradTileArgs,
    x: *const f32,
    dy: *const f32,
    acc: *mut f32,
) {
    use avx512::wgrad_tile as k;
    // SAFETY: forwarded contract; `rc` is within the table of wgrad_channels for this `nb`.
    unsafe {
        match channels.div_ceil(16) {
            1 => {
                by_rows!(k, rc, 1, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], (g, x, dy, acc, &masks::<1>(channels)))
            }
            2 => by_rows!(k, rc, 2, [1 2 3 4 5 6 7 8 9 10 11 12], (g, x, dy, acc, &masks::<2>(channels))),
            3 => by_rows!(k, rc, 3, [1 2 3 4 5 6 7 8], (g, x, dy, acc, &masks::<3>(channels))),
            4 => by_rows!(k, rc, 4, [1 2 3 4 5 6], (g, x, dy, acc, &masks::<4>(channels))),
            nb => unreachable!("{nb} channel vectors"),
        }
    }
}
