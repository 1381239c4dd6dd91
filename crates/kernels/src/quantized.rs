//! The passes of int8 inference besides its convolutions (`conv::int8`): quantizing the input,
//! max pooling and global average pooling of 8-bit NHWC activations, and the classifier on int8
//! weights.

use crate::gemm::{dot_products, lanes_dot, Parallelism, DOT_ROWS};
use crate::pool::PoolShape;
use crate::threads;
use rayon::prelude::*;

/// Elements per parallel task of the elementwise passes.
const CHUNK: usize = 1 << 16;

crate::multiversion! {
    /// `y = clamp(round(x / scale) + zero_point, 0, 255)` for one chunk (`inv_scale = 1 / scale`;
    /// NaN to the zero point's floor, 0).
    fn quantize_chunk / quantize_chunk_on(x: &[f32], inv_scale: f32, zero_point: f32, y: &mut [u8]) {
        for (q, v) in y.iter_mut().zip(x) {
            let r = (v * inv_scale).round_ties_even() + zero_point;
            *q = if r > 0.0 { if r < 255.0 { r as u8 } else { 255 } } else { 0 };
        }
    }
}

/// Quantizes real values to 8 bits with `scale` and `zero_point`, rounding half to even and
/// saturating.
pub fn quantize_u8(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    assert_eq!(x.len(), y.len(), "quantize: input and output lengths");
    let (inv, zp) = (1.0 / scale, f32::from(zero_point));
    threads::install(|| {
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| quantize_chunk(x, inv, zp, y));
    });
}

/// Max pooling of 8-bit activations: the same windows as [`crate::pool::max_pool_forward`]
/// (padding never wins), and since quantizing is monotonic the same maximum as pooling the real
/// values and quantizing after.
pub fn max_pool_u8(s: &PoolShape, x: &[u8], y: &mut [u8]) {
    assert_eq!(x.len(), s.input_len(), "max pool input");
    assert_eq!(y.len(), s.output_len(), "max pool output");
    let (oh, ow) = (s.out_h(), s.out_w());
    threads::install(|| {
        y.par_chunks_mut(ow * s.c).enumerate().for_each(|(row, yr)| max_pool_row(s, x, row / oh, row % oh, yr));
    });
}

crate::multiversion! {
    /// Output row `oy` of image `img` of [`max_pool_u8`] into `yr`.
    fn max_pool_row / max_pool_row_on(s: &PoolShape, x: &[u8], img: usize, oy: usize, yr: &mut [u8]) {
        let c = s.c;
        yr.fill(0);
        for (ox, out) in yr.chunks_exact_mut(c).enumerate() {
            for p in s.window(oy, ox) {
                let at = (img * s.h * s.w + p) * c;
                out.iter_mut().zip(&x[at..at + c]).for_each(|(o, v)| *o = (*o).max(*v));
            }
        }
    }
}

/// Global average pooling of 8-bit activations standing for `q * scale`: `y[n, c]` is the mean
/// real value of channel `c` of image `n` (summed exactly in integers).
///
/// # Shapes
/// `x: [n, hw, c]`, `y: [n, c]`.
pub fn global_avg_pool_u8(x: &[u8], n: usize, c: usize, scale: f32, y: &mut [f32]) {
    assert!(
        n > 0 && c > 0 && x.len().is_multiple_of(n * c),
        "global pool input of {} values is not [{n}, hw, {c}]",
        x.len()
    );
    assert_eq!(y.len(), n * c, "global pool output");
    let hw = x.len() / (n * c);
    let step = scale / hw as f32;
    threads::install(|| {
        y.par_chunks_mut(c).enumerate().for_each(|(img, yr)| {
            let mut sums = vec![0u32; c];
            for px in x[img * hw * c..(img + 1) * hw * c].chunks_exact(c) {
                sums.iter_mut().zip(px).for_each(|(s, v)| *s += u32::from(*v));
            }
            yr.iter_mut().zip(&sums).for_each(|(o, s)| *o = *s as f32 * step);
        });
    });
}

/// A fully connected layer on int8 weights: `y[r, o] = bias[o] + scales[o] * sum_i x[r, i] *
/// weights[o, i]`, the features real, each weight row a symmetric int8 code with its own step.
/// A classifier at a small batch only streams its weights, so a quarter of the f32 bytes is
/// about a quarter of the time.
///
/// # Shapes
/// `x: [rows, inputs]`, `weights: [outputs, inputs]`, `scales` and `bias: [outputs]`, `y: [rows,
/// outputs]`.
pub fn linear_i8(x: &[f32], weights: &[i8], scales: &[f32], bias: &[f32], y: &mut [f32]) {
    let outputs = scales.len();
    assert!(outputs > 0 && weights.len().is_multiple_of(outputs), "int8 linear weights are not [{outputs}, inputs]");
    let inputs = weights.len() / outputs;
    assert_eq!(bias.len(), outputs, "int8 linear bias");
    assert!(inputs > 0 && x.len().is_multiple_of(inputs), "int8 linear input is not [rows, {inputs}]");
    let rows = x.len() / inputs;
    assert_eq!(y.len(), rows * outputs, "int8 linear output");
    let column_dot = |row: &[f32], o: usize| scales[o] * dot_i8(row, &weights[o * inputs..][..inputs]);
    for (first, chunk) in x.chunks(DOT_ROWS * inputs).enumerate() {
        let rows: Vec<&[f32]> = chunk.chunks_exact(inputs).collect();
        let y = &mut y[first * DOT_ROWS * outputs..];
        dot_products(&rows, outputs, Parallelism::Pool, column_dot, |r, o, v| y[r * outputs + o] = bias[o] + v);
    }
}

crate::multiversion! {
    /// `sum_p x[p] * w[p]` with the int8 `w` widened to f32 (see [`lanes_dot`]).
    fn dot_i8 / dot_i8_on(x: &[f32], w: &[i8]) -> f32 {
        lanes_dot(x, w, f32::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_adds_the_zero_point_and_saturates() {
        let x = [0.0, 0.25, 0.75, -0.25, 100.0, -100.0, f32::NAN, 1.0];
        let mut y = [0u8; 8];
        quantize_u8(&x, 0.5, 10, &mut y);
        assert_eq!(y, [10, 10, 12, 10, 210, 0, 0, 12]);
        for isa in crate::simd::available() {
            let mut z = [0u8; 8];
            quantize_chunk_on(isa, &x, 2.0, 10.0, &mut z);
            assert_eq!(y, z, "{isa:?}");
        }
    }

    #[test]
    fn max_pool_of_bytes_matches_the_float_pool() {
        // Three channels, and 64 (whole vectors of every instruction set).
        for c in [3, 64] {
            let s = PoolShape { n: 2, h: 7, w: 6, c, k: 3, stride: 2, pad: 1 };
            let x: Vec<u8> = (0..s.input_len()).map(|i| ((i * 37 + 11) % 251) as u8).collect();
            let xf: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
            let (mut yf, mut arg) = (vec![0.0; s.output_len()], vec![0; s.output_len()]);
            crate::pool::max_pool_forward(&s, &xf, &mut yf, &mut arg);
            let mut y = vec![0u8; s.output_len()];
            max_pool_u8(&s, &x, &mut y);
            assert_eq!(y.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), yf, "{c} channels");
            let row = s.out_w() * c;
            for isa in crate::simd::available() {
                let mut r = vec![7u8; row];
                max_pool_row_on(isa, &s, &x, 1, 2, &mut r);
                let at = (s.out_h() + 2) * row;
                assert_eq!(r, y[at..at + row], "{isa:?}, {c} channels");
            }
        }
    }

    #[test]
    fn average_pool_of_bytes_is_the_mean_real_value() {
        let x = [1u8, 10, 3, 30];
        let mut y = [0.0; 2];
        global_avg_pool_u8(&x, 1, 2, 0.5, &mut y);
        assert_eq!(y, [1.0, 10.0]);
    }

    /// Every row chunk (more rows than one pass of dot products takes), the column blocks' cut and
    /// the lanes' tail, on every instruction set, against the sums in f64.
    #[test]
    fn int8_linear_matches_the_sums_in_f64() {
        let (inputs, outputs) = (2048 + 5, 71);
        for rows in [1, 3, DOT_ROWS, DOT_ROWS + 2] {
            let x: Vec<f32> = (0..rows * inputs).map(|i| ((i * 29 + 3) % 97) as f32 / 97.0 - 0.3).collect();
            let w: Vec<i8> =
                (0..outputs * inputs).map(|i| ((i * 53 + 7) % 255) as i32 - 127).map(|v| v as i8).collect();
            let scales: Vec<f32> = (0..outputs).map(|o| 0.001 * (1 + o % 5) as f32).collect();
            let bias: Vec<f32> = (0..outputs).map(|o| o as f32 * 0.1 - 2.0).collect();
            let mut y = vec![f32::NAN; rows * outputs];
            linear_i8(&x, &w, &scales, &bias, &mut y);
            for r in 0..rows {
                for o in 0..outputs {
                    let sum: f64 =
                        (0..inputs).map(|i| f64::from(x[r * inputs + i]) * f64::from(w[o * inputs + i])).sum();
                    let want = f64::from(bias[o]) + f64::from(scales[o]) * sum;
                    let got = f64::from(y[r * outputs + o]);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "row {r} output {o}: {got} vs {want}");
                }
            }
        }
        let (x, w): (Vec<f32>, Vec<i8>) =
            ((0..77).map(|i| i as f32 * 0.5).collect(), (0..77).map(|i| (i % 9) as i8 - 4).collect());
        let want = dot_i8_on(crate::simd::Isa::Scalar, &x, &w);
        for isa in crate::simd::available() {
            assert!((dot_i8_on(isa, &x, &w) - want).abs() <= 1e-3 * want.abs().max(1.0), "{isa:?}");
        }
    }
}
