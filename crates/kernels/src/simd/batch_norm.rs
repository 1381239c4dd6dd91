//! AVX-512 versions of the batch-norm row passes for rows of 16, 32 or 64 channels: the CIFAR
//! networks' widths, where a row is one to four vectors and the general loops (which keep their
//! per-channel accumulators in memory, since the channel count is only known at run time) spend
//! more on bookkeeping than on the data. Here the `G` vectors of a row, the per-channel
//! parameters and the accumulators are fixed-size arrays of registers.
//!
//! Each function computes what its general twin in [`crate::batch_norm`] computes (the same
//! block-wise `f32` then `f64` summation); the tests there compare them.

use crate::batch_norm::{ReluMask, ROWS_PER_BLOCK};
use std::arch::x86_64::*;

/// Channels per vector.
const LANES: usize = 16;

/// The `G` vectors at `x[at..at + 16 G]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn load<const G: usize>(x: &[f32], at: usize) -> [__m512; G] {
    let v = &x[at..at + G * LANES];
    // SAFETY: `v` holds G * LANES floats, so every vector read lies inside it.
    std::array::from_fn(|g| unsafe { _mm512_loadu_ps(v.as_ptr().add(g * LANES)) })
}

/// Writes the `G` vectors to `x[at..at + 16 G]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store<const G: usize>(x: &mut [f32], at: usize, v: [__m512; G]) {
    let out = &mut x[at..at + G * LANES];
    for (g, v) in v.into_iter().enumerate() {
        // SAFETY: `out` holds G * LANES floats, so every vector written lies inside it.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(g * LANES), v) };
    }
}

/// Adds the `G` vectors' lanes to `s[..16 G]` in `f64`.
#[target_feature(enable = "avx512f")]
#[inline]
fn add_to_f64<const G: usize>(s: &mut [f64], v: [__m512; G]) {
    let mut lanes = [0.0f32; LANES];
    for (g, v) in v.into_iter().enumerate() {
        // SAFETY: `lanes` holds one vector.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        for (o, &l) in s[g * LANES..(g + 1) * LANES].iter_mut().zip(&lanes) {
            *o += f64::from(l);
        }
    }
}

/// Per-channel sums over the rows of the `N` inputs (each `[rows, 16 G]`) of the two vectors
/// `pair(group, row_vectors)` gives, added into `s1` and `s2`: in registers over blocks of
/// [`ROWS_PER_BLOCK`] rows, in `f64` across blocks.
#[target_feature(enable = "avx512f")]
#[inline]
fn fold<const G: usize, const N: usize>(
    inputs: [&[f32]; N],
    s1: &mut [f64],
    s2: &mut [f64],
    pair: impl Fn(usize, [__m512; N]) -> (__m512, __m512),
) {
    let c = G * LANES;
    let rows = inputs[0].len() / c;
    let mut start = 0;
    while start < rows {
        let end = (start + ROWS_PER_BLOCK).min(rows);
        let (mut a, mut b) = ([_mm512_setzero_ps(); G], [_mm512_setzero_ps(); G]);
        for r in start..end {
            let row = inputs.map(|x| load::<G>(x, r * c));
            for g in 0..G {
                let (p, q) = pair(g, row.map(|v| v[g]));
                a[g] = _mm512_add_ps(a[g], p);
                b[g] = _mm512_add_ps(b[g], q);
            }
        }
        add_to_f64(s1, a);
        add_to_f64(s2, b);
        start = end;
    }
}

/// Writes `out[row] = f(group, out[row] vector, row_vectors)` for every row of `out`
/// (`[rows, 16 G]`), the row vectors taken from the `N` inputs.
#[target_feature(enable = "avx512f")]
#[inline]
fn map<const G: usize, const N: usize>(
    inputs: [&[f32]; N],
    out: &mut [f32],
    read_out: bool,
    f: impl Fn(usize, __m512, [__m512; N]) -> __m512,
) {
    let c = G * LANES;
    for r in 0..out.len() / c {
        let row = inputs.map(|x| load::<G>(x, r * c));
        let old = if read_out { load::<G>(out, r * c) } else { [_mm512_setzero_ps(); G] };
        store::<G>(out, r * c, std::array::from_fn(|g| f(g, old[g], row.map(|v| v[g]))));
    }
}

/// `p` (`[16 G]`) as vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn params<const G: usize>(p: &[f32]) -> [__m512; G] {
    load::<G>(p, 0)
}

/// `g` where `mask` is set, else zero.
#[target_feature(enable = "avx512f")]
#[inline]
fn keep(mask: __mmask16, g: __m512) -> __m512 {
    _mm512_maskz_mov_ps(mask, g)
}

/// Lanes of `v` above zero.
#[target_feature(enable = "avx512f")]
#[inline]
fn positive(v: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps())
}

/// [`crate::batch_norm`]'s `add_sums` for 16 G channels.
///
/// # Safety
/// The CPU supports AVX-512F. Everything else is checked: an input shorter than `out` or `x`
/// panics.
#[target_feature(enable = "avx512f")]
pub fn add_sums<const G: usize>(x: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    fold::<G, 1>([x], s1, s2, |_, [v]| (v, _mm512_mul_ps(v, v)));
}

/// [`crate::batch_norm`]'s `shifted_sums` for 16 G channels.
///
/// # Safety
/// The CPU supports AVX-512F. Everything else is checked: an input shorter than `out` or `x`
/// panics.
#[target_feature(enable = "avx512f")]
pub fn shifted_sums<const G: usize>(x: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    let k = params::<G>(shift);
    fold::<G, 1>([x], s1, s2, |g, [v]| {
        let d = _mm512_sub_ps(v, k[g]);
        (d, _mm512_mul_ps(d, d))
    });
}

/// [`crate::batch_norm`]'s `backward_rows` for 16 G channels.
///
/// # Safety
/// The CPU supports AVX-512F. Everything else is checked: an input shorter than `out` or `x`
/// panics.
#[target_feature(enable = "avx512f")]
pub fn backward_rows<const G: usize>(
    x: &[f32],
    mean: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    s1: &mut [f64],
    s2: &mut [f64],
) {
    let m = params::<G>(mean);
    match mask {
        ReluMask::None => fold::<G, 2>([x, dy], s1, s2, |g, [v, d]| (d, _mm512_mul_ps(d, _mm512_sub_ps(v, m[g])))),
        ReluMask::Output(z) => fold::<G, 3>([x, dy, z], s1, s2, |g, [v, d, o]| {
            let d = keep(positive(o), d);
            (d, _mm512_mul_ps(d, _mm512_sub_ps(v, m[g])))
        }),
        ReluMask::Affine { scale, shift } => {
            let (p, q) = (params::<G>(scale), params::<G>(shift));
            fold::<G, 2>([x, dy], s1, s2, |g, [v, d]| {
                let d = keep(positive(_mm512_add_ps(_mm512_mul_ps(v, p[g]), q[g])), d);
                (d, _mm512_mul_ps(d, _mm512_sub_ps(v, m[g])))
            })
        }
    }
}

/// [`crate::batch_norm`]'s `input_grad_rows` for 16 G channels: `dx (+)= a g + b + k x`.
///
/// # Safety
/// The CPU supports AVX-512F. Everything else is checked: an input shorter than `out` or `x`
/// panics.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub fn input_grad_rows<const G: usize>(
    x: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    a: &[f32],
    b: &[f32],
    k: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let (a, b, k) = (params::<G>(a), params::<G>(b), params::<G>(k));
    let grad = |g: usize, old: __m512, v: __m512, d: __m512| {
        let r = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(a[g], d), b[g]), _mm512_mul_ps(k[g], v));
        if accumulate {
            _mm512_add_ps(old, r)
        } else {
            r
        }
    };
    match mask {
        ReluMask::None => map::<G, 2>([x, dy], dx, accumulate, |g, old, [v, d]| grad(g, old, v, d)),
        ReluMask::Output(z) => {
            map::<G, 3>([x, dy, z], dx, accumulate, |g, old, [v, d, o]| grad(g, old, v, keep(positive(o), d)))
        }
        ReluMask::Affine { scale, shift } => {
            let (p, q) = (params::<G>(scale), params::<G>(shift));
            map::<G, 2>([x, dy], dx, accumulate, |g, old, [v, d]| {
                grad(g, old, v, keep(positive(_mm512_add_ps(_mm512_mul_ps(v, p[g]), q[g])), d))
            })
        }
    }
}

/// [`crate::batch_norm`]'s `scale_shift_rows` for 16 G channels: `y = act(x a + b (+ r))`.
///
/// # Safety
/// The CPU supports AVX-512F. Everything else is checked: an input shorter than `out` or `x`
/// panics.
#[target_feature(enable = "avx512f")]
pub fn scale_shift_rows<const G: usize>(
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let (a, b) = (params::<G>(scale), params::<G>(shift));
    let act = |v: __m512| if relu { _mm512_max_ps(v, _mm512_setzero_ps()) } else { v };
    match residual {
        Some(r) => map::<G, 2>([x, r], y, false, |g, _, [v, q]| {
            act(_mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(v, a[g]), b[g]), q))
        }),
        None => map::<G, 1>([x], y, false, |g, _, [v]| act(_mm512_add_ps(_mm512_mul_ps(v, a[g]), b[g]))),
    }
}
