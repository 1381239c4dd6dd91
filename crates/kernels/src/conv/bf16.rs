use crate::activations::Activations;
use crate::conv::algorithm::bf16_supported;
use crate::conv::backward_data::TRANSPOSE_BLOCK;
use crate::conv::shape::ConvShape;

pub(super) use crate::activations::bf16_bits;

crate::multiversion! {
    /// Packs pixels of `c` channels into bf16 channel pairs (`ceil(c / 2)` per pixel), applying
    /// the input transform when there is one. `dst` holds the pairs as `f32` bit patterns.
    pub(in crate::conv) fn pack_pairs / pack_pairs_on(src: &[f32], c: usize, scale: &[f32], shift: &[f32], transform: bool, dst: &mut [f32]) {
        let pairs = c.div_ceil(2);
        for (d, s) in dst.chunks_exact_mut(pairs).zip(src.chunks_exact(c)) {
            for (p, o) in d.iter_mut().enumerate() {
                let get = |i: usize| {
                    if i >= c {
                        0.0
                    } else if transform {
                        (s[i] * scale[i] + shift[i]).max(0.0)
                    } else {
                        s[i]
                    }
                };
                *o = f32::from_bits(bf16_bits(get(2 * p)) | (bf16_bits(get(2 * p + 1)) << 16));
            }
        }
    }
}

/// `dst[j] = (bf16(lo[j]), bf16(hi[j]))`: the loop both pairings below compile for their
/// instruction set.
#[inline(always)]
fn pair_into(lo: &[f32], hi: &[f32], dst: &mut [u32]) {
    for ((d, &lo), &hi) in dst.iter_mut().zip(lo).zip(hi) {
        *d = bf16_bits(lo) | (bf16_bits(hi) << 16);
    }
}

crate::multiversion! {
    /// Two rows of values as bf16 pairs: `dst[j] = (bf16(lo[j]), bf16(hi[j]))`.
    pub(in crate::conv) fn pair_rows_bf16 / pair_rows_bf16_on(lo: &[f32], hi: &[f32], dst: &mut [u32]) {
        pair_into(lo, hi, dst)
    }
}

crate::multiversion! {
    /// A row of pixels (`c` channels each, an even count of pixels) as bf16 pixel pairs:
    /// `dst[m * c + j] = (bf16(src[2m][j]), bf16(src[2m + 1][j]))`.
    pub(in crate::conv) fn pixel_pairs_bf16 / pixel_pairs_bf16_on(src: &[f32], c: usize, dst: &mut [u32]) {
        for (d, two) in dst.chunks_exact_mut(c).zip(src.chunks_exact(2 * c)) {
            let (lo, hi) = two.split_at(c);
            pair_into(lo, hi, d);
        }
    }
}

crate::multiversion! {
    /// [`pixel_pairs_bf16`] of values already in bf16: adjacent pixels interleaved.
    fn bf16_pixel_pairs / bf16_pixel_pairs_on(src: &[u16], c: usize, dst: &mut [u32]) {
        for (d, two) in dst.chunks_exact_mut(c).zip(src.chunks_exact(2 * c)) {
            let (lo, hi) = two.split_at(c);
            for ((o, &lo), &hi) in d.iter_mut().zip(lo).zip(hi) {
                *o = u32::from(lo) | (u32::from(hi) << 16);
            }
        }
    }
}

/// [`pixel_pairs_bf16`] of values in either precision: bf16 ones paired as they are, which is
/// what rounding their `f32` values would give.
pub(in crate::conv) fn activation_pixel_pairs(src: Activations<'_>, c: usize, dst: &mut [u32]) {
    match src {
        Activations::F32(v) => pixel_pairs_bf16(v, c, dst),
        Activations::Bf16(v) => bf16_pixel_pairs(v, c, dst),
    }
}

/// `src` (`[rows, cols]` f32, `cols` a multiple of 16) transposed into `dst` (`[cols, stride]`
/// bf16, `rows <= stride`): 16 x 16 blocks with AVX-512, leftover rows one by one.
#[cfg(target_arch = "x86_64")]
pub(super) fn transpose_bf16(src: &[f32], rows: usize, cols: usize, dst: &mut [u16], stride: usize) {
    assert!(cols.is_multiple_of(16), "bf16 transpose of {cols} columns, not whole blocks of 16");
    for (b, block) in dst[..cols * stride].chunks_exact_mut(16 * stride).enumerate() {
        transpose_bf16_columns(src, rows, cols, 16 * b, block, stride);
    }
}

/// Columns `c0 .. c0 + 16` of `src` transposed into `block`, their 16 rows of `dst`.
#[cfg(target_arch = "x86_64")]
fn transpose_bf16_columns(src: &[f32], rows: usize, cols: usize, c0: usize, block: &mut [u16], stride: usize) {
    assert!(bf16_supported() && c0 + 16 <= cols && block.len() == 16 * stride && rows <= stride);
    assert!(src.len() >= rows * cols);
    let full = rows / 16 * 16;
    for r0 in (0..full).step_by(16) {
        // SAFETY: AVX-512 with BF16 was checked above; the block reads rows r0..r0 + 16 <= rows
        // and columns c0..c0 + 16 <= cols of src, and writes its 16 rows, columns r0..r0 + 16 <=
        // stride (lengths asserted above).
        unsafe {
            crate::simd::avx512::transpose16_bf16(
                src[r0 * cols + c0..].as_ptr(),
                cols,
                block[r0..].as_mut_ptr(),
                stride,
            )
        };
    }
    for r in full..rows {
        for c in 0..16 {
            block[c * stride + r] = bf16_bits(src[r * cols + c0 + c]) as u16;
        }
    }
}

/// Weights `[kh, kw, cin, cout]` as bf16 pairs of input channels, `[kh, kw, ceil(cin/2), cout]`.
pub(super) fn pack_weights_bf16(s: &ConvShape, w: &[f32], out: &mut [u32]) {
    let (taps, ci, co) = (s.kh * s.kw, s.cin, s.cout);
    let pairs = ci.div_ceil(2);
    for tap in 0..taps {
        let (w, out) = (&w[tap * ci * co..(tap + 1) * ci * co], &mut out[tap * pairs * co..(tap + 1) * pairs * co]);
        // Two input channels' rows of `cout` weights are a pixel pair of `cout` channels.
        let even = ci / 2 * 2;
        pixel_pairs_bf16(&w[..even * co], co, &mut out[..even / 2 * co]);
        if ci % 2 == 1 {
            for (o, &v) in out[even / 2 * co..].iter_mut().zip(&w[even * co..]) {
                *o = bf16_bits(v);
            }
        }
    }
}

/// A row-major `[rows, cols]` matrix transposed into bf16 pairs of its columns:
/// `out[p * rows + r] = (bf16(w[r][2p]), bf16(w[r][2p + 1]))` (`ceil(cols / 2)` rows of `rows`
/// pairs, the pair past an odd last column zero). The weight of the backward-data pass as a
/// forward one: `w^T` packed as [`pack_weights_bf16`] would pack it.
pub(super) fn pack_transposed_bf16(w: &[f32], rows: usize, cols: usize, out: &mut [u32]) {
    let pairs = cols.div_ceil(2);
    assert!(w.len() >= rows * cols && out.len() >= pairs * rows);
    for r0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
        for p0 in (0..pairs).step_by(TRANSPOSE_BLOCK) {
            for r in r0..(r0 + TRANSPOSE_BLOCK).min(rows) {
                let row = &w[r * cols..(r + 1) * cols];
                for p in p0..(p0 + TRANSPOSE_BLOCK).min(pairs) {
                    let hi = row.get(2 * p + 1).map_or(0, |&v| bf16_bits(v));
                    out[p * rows + r] = bf16_bits(row[2 * p]) | (hi << 16);
                }
            }
        }
    }
}
