//! Int8 weights: symmetric per-output-channel quantization, the packed layouts of the kernels
//! (quads of bytes for VNNI and the portable pass, pairs of 16-bit values for AVX2), and the
//! per-channel arrays of the requantizing epilogue.

use super::Int8Kernel;

/// Output channels per block of packed weights: the micro-kernel's widest call.
pub const BLOCK: usize = 64;

/// Largest magnitude of a quantized weight: the range is symmetric (`-127..=127`), so a zero
/// weight is exactly zero and the sign flips cleanly.
pub const WEIGHT_LEVELS: f32 = 127.0;

/// A convolution's weight as the int8 kernels read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Weights {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Quads of weights (a missing fourth channel zero) in blocks of [`BLOCK`] output channels
    /// (the last one narrower): block `b` is `[kh, kw, ceil(cin / 4), width]`, contiguous, from
    /// `b * BLOCK * kh * kw * ceil(cin / 4)`, so a micro-kernel call reads its weights front to
    /// back.
    pub quads: Vec<u32>,
    /// The same weights for the AVX2 kernel, packed where it is the kernel this CPU runs (else
    /// empty): pairs of input channels `2p`, `2p + 1` as two sign-extended 16-bit values (the
    /// lower channel in the low half, a missing channel zero), in blocks laid out as the quads'
    /// with `2 * ceil(cin / 4)` pairs per tap.
    pub pairs: Vec<u32>,
    /// `[cout]` sums of each output channel's weights (for the input zero point).
    pub sums: Vec<i32>,
}

/// Quantizes `w` (`[kh, kw, cin, cout]`, i.e. `[k, cout]`) per output channel: returns the
/// weights `round(w / scale)` and the scales `max |w| / 127` (1 for an all-zero channel).
pub fn quantize_weights(w: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    assert!(cout > 0 && w.len().is_multiple_of(cout), "weights [k, cout]");
    let mut max = vec![0.0f32; cout];
    for row in w.chunks_exact(cout) {
        for (m, v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> =
        max.iter().map(|&m| if m > 0.0 && m.is_finite() { m / WEIGHT_LEVELS } else { 1.0 }).collect();
    let q = w
        .chunks_exact(cout)
        .flat_map(|row| {
            row.iter().zip(&scales).map(|(v, s)| (v / s).round_ties_even().clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) as i8)
        })
        .collect();
    (q, scales)
}

/// Packs quantized weights `q` (`[kh, kw, cin, cout]`) into quads of input channels, in blocks
/// of output channels (see [`Int8Weights::quads`]), and into the pairs of the AVX2 kernel where
/// this CPU runs it.
pub fn pack_weights(q: &[i8], kh: usize, kw: usize, cin: usize, cout: usize) -> Int8Weights {
    assert_eq!(q.len(), kh * kw * cin * cout, "int8 weights [kh, kw, cin, cout]");
    let quads = pack_groups(q, kh * kw, cin, cout, 4, |v, slot| u32::from(v as u8) << (8 * slot));
    let pairs = if Int8Kernel::detect() == Int8Kernel::Avx2 { pack_pairs(q, kh, kw, cin, cout) } else { Vec::new() };
    let mut sums = vec![0i32; cout];
    for row in q.chunks_exact(cout) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += i32::from(v);
        }
    }
    Int8Weights { kh, kw, cin, cout, quads, pairs, sums }
}

/// The AVX2 kernel's layout of `q` (see [`Int8Weights::pairs`]).
pub fn pack_pairs(q: &[i8], kh: usize, kw: usize, cin: usize, cout: usize) -> Vec<u32> {
    assert_eq!(q.len(), kh * kw * cin * cout, "int8 weights [kh, kw, cin, cout]");
    // Two pairs per quad, so both kernels share the padding of `cin` to a multiple of four.
    pack_groups(q, kh * kw, cin.next_multiple_of(4), cout, 2, |v, slot| u32::from(i16::from(v) as u16) << (16 * slot))
}

/// Packs `q` (`[taps, cin, cout]`, `cin` channels at most `padded_cin`) in groups of `size`
/// input channels, one `u32` per group and output channel, `place` putting a weight in its slot
/// of the group; the groups in blocks of [`BLOCK`] output channels (see [`group_index`]).
fn pack_groups(
    q: &[i8],
    taps: usize,
    padded_cin: usize,
    cout: usize,
    size: usize,
    place: fn(i8, usize) -> u32,
) -> Vec<u32> {
    let cin = q.len() / (taps * cout);
    let groups = padded_cin.div_ceil(size);
    let rows = taps * groups;
    let mut packed = vec![0u32; rows * cout];
    for tap in 0..taps {
        for ci in 0..cin {
            let src = &q[(tap * cin + ci) * cout..][..cout];
            for (co, &v) in src.iter().enumerate() {
                packed[group_index(rows, cout, tap * groups + ci / size, co)] |= place(v, ci % size);
            }
        }
    }
    packed
}

/// Where the group of row `row` (`tap * groups + group`) and output channel `co` lies in the
/// blocked layout of a weight with `rows` rows and `cout` channels.
pub(super) fn group_index(rows: usize, cout: usize, row: usize, co: usize) -> usize {
    let (block, lane) = (co / BLOCK, co % BLOCK);
    let width = BLOCK.min(cout - block * BLOCK);
    block * BLOCK * rows + row * width + lane
}

/// The epilogue's `(mult, offset)` per output channel for an input of `input_scale` and
/// `zero_point`: `v = (sum - zero_point * weight_sum) * input_scale * weight_scale + bias`, with
/// the zero point's share folded into the offset.
pub fn requant_arrays(
    w: &Int8Weights,
    weight_scales: &[f32],
    input_scale: f32,
    zero_point: u8,
    bias: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    assert!(weight_scales.len() == w.cout && bias.len() == w.cout, "per-channel arrays of {} channels", w.cout);
    let mult: Vec<f32> = weight_scales.iter().map(|s| s * input_scale).collect();
    let offset = bias
        .iter()
        .zip(&mult)
        .zip(&w.sums)
        .map(|((b, m), &sum)| b - (i32::from(zero_point) * sum) as f32 * m)
        .collect();
    (mult, offset)
}
