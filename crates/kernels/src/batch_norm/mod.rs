//! Batch normalisation over the channel axis of NHWC activations (Ioffe & Szegedy 2015, used by
//! He et al. 2015 "right after each convolution and before activation", Section 3.4).
//!
//! An activation `[n, h, w, c]` is viewed as `rows x c`; statistics are per channel over all
//! rows. The forward pass applies an optional residual addition and ReLU in the same sweep
//! (`y = relu(x * scale + shift + residual)`), and the backward reductions can apply the ReLU
//! mask on the fly, which saves whole passes over memory in every residual block.
//!
//! Each pass is one loop over rows whose inner loop runs along the contiguous channels; it is
//! compiled for AVX-512, AVX2 and baseline (see [`crate::multiversion!`]). Reductions sum blocks
//! of rows in `f32` and the blocks in `f64`.

use crate::activations::{bf16_bits, round_in_place, Activations};
use crate::threads::{self, split_even};
use crate::workspace::take;
use crate::Workspace;
use rayon::prelude::*;

/// Rows handled per parallel task in the elementwise passes.
const ROWS_PER_TASK: usize = 1024;
/// Rows summed in `f32` before the block total moves into the `f64` sums.
pub(crate) const ROWS_PER_BLOCK: usize = 64;
/// Values of a bf16 activation an elementwise pass widens at a time: whole rows of at most this
/// many, so that the widened block stays in L1 while the pass reads it.
const ELEMENTWISE_WIDEN: usize = 4096;

/// Runs `simd::batch_norm::$f::<G>(args)` (16 G channels) and evaluates to `true` when the CPU
/// has AVX-512 and `$c` is 16, 32 or 64; evaluates to `false`, running nothing, otherwise.
macro_rules! avx512_rows {
    ($c:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use crate::simd::{batch_norm as rows, isa, Isa};
            match (isa(), $c) {
                // SAFETY (each arm): `Isa::Avx512` is only detected where the CPU has AVX-512F.
                (Isa::Avx512, 16) => { unsafe { rows::$f::<1>($($arg),*) }; true }
                (Isa::Avx512, 32) => { unsafe { rows::$f::<2>($($arg),*) }; true }
                (Isa::Avx512, 64) => { unsafe { rows::$f::<4>($($arg),*) }; true }
                _ => false,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }};
}

/// Whether the row passes of `c` channels run in registers (`avx512_rows!`).
fn register_rows(c: usize) -> bool {
    cfg!(target_arch = "x86_64") && crate::simd::isa() == crate::simd::Isa::Avx512 && matches!(c, 16 | 32 | 64)
}

crate::multiversion! {
    /// Adds `sum(x - shift)` and `sum((x - shift)^2)` over the rows of `x` into `s1`, `s2`.
    fn shifted_sums_loop / shifted_sums_loop_on(x: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64], t1: &mut [f32], t2: &mut [f32]) {
        let c = shift.len();
        for block in x.chunks(ROWS_PER_BLOCK * c) {
            t1.fill(0.0);
            t2.fill(0.0);
            for row in block.chunks_exact(c) {
                for (((a, b), &v), &k) in t1.iter_mut().zip(t2.iter_mut()).zip(row).zip(shift) {
                    let d = v - k;
                    *a += d;
                    *b += d * d;
                }
            }
            for (((a, b), &u), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(t1.iter()).zip(t2.iter()) {
                *a += f64::from(u);
                *b += f64::from(v);
            }
        }
    }
}

crate::multiversion! {
    /// Adds `sum(x)` and `sum(x^2)` per channel over the rows of `x` into `s1`, `s2` (through
    /// `f32` block sums `t1`, `t2`).
    fn add_sums_loop / add_sums_loop_on(x: &[f32], s1: &mut [f64], s2: &mut [f64], t1: &mut [f32], t2: &mut [f32]) {
        let c = s1.len();
        for block in x.chunks(ROWS_PER_BLOCK * c) {
            t1.fill(0.0);
            t2.fill(0.0);
            for row in block.chunks_exact(c) {
                for ((a, b), &v) in t1.iter_mut().zip(t2.iter_mut()).zip(row) {
                    *a += v;
                    *b += v * v;
                }
            }
            for (((a, b), &u), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(t1.iter()).zip(t2.iter()) {
                *a += f64::from(u);
                *b += f64::from(v);
            }
        }
    }
}

/// `sum(x - shift)` and `sum((x - shift)^2)` per channel over the rows of `x`, added into `s1`,
/// `s2` (`t1`, `t2`: `f32` scratch of `c` for the general loop).
fn shifted_sums(x: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64], t1: &mut [f32], t2: &mut [f32]) {
    if !avx512_rows!(shift.len(), shifted_sums(x, shift, s1, s2)) {
        shifted_sums_loop(x, shift, s1, s2, t1, t2);
    }
}

/// `sum(x)` and `sum(x^2)` per channel over the rows of `x`, added into `s1`, `s2` (`t1`, `t2`:
/// `f32` scratch of `c` for the general loop).
pub(crate) fn add_sums(x: &[f32], s1: &mut [f64], s2: &mut [f64], t1: &mut [f32], t2: &mut [f32]) {
    if !avx512_rows!(s1.len(), add_sums(x, s1, s2)) {
        add_sums_loop(x, s1, s2, t1, t2);
    }
}

/// Runs `f(values, sub)` over the elements `span` of `x` (rows of `c`) as `f32`: all at once
/// for `f32` values, for bf16 a block of `block_rows` rows at a time widened in cache. A row
/// pass that sums blocks of [`ROWS_PER_BLOCK`] rows from the start of what it is given gives the
/// same sums from blocks of that many rows.
fn for_f32_blocks(
    x: Activations<'_>,
    span: std::ops::Range<usize>,
    (c, block_rows): (usize, usize),
    mut f: impl FnMut(&[f32], std::ops::Range<usize>),
) {
    match x {
        Activations::F32(v) => f(&v[span.clone()], span),
        Activations::Bf16(_) => {
            let step = block_rows * c;
            for at in span.clone().step_by(step) {
                let sub = at..(at + step).min(span.end);
                x.with_f32(sub.clone(), |v| f(v, sub.clone()));
            }
        }
    }
}

/// Runs `rows_kernel(span, s1, s2, t1, t2)` over a fixed split of `rows` rows (one part per
/// thread, at least 256 rows each) and adds the parts' per-channel `f64` sums in order into
/// `out` (`[2 * c]`: the `s1` totals, then the `s2` totals). `span` is the part's element range;
/// `t1`, `t2` are `f32` scratch of `c`. A fixed split keeps results reproducible for a given
/// thread count.
fn reduce_rows(
    rows: usize,
    c: usize,
    out: &mut [f64],
    ws: &mut Workspace,
    rows_kernel: impl Fn(std::ops::Range<usize>, &mut [f64], &mut [f64], &mut [f32], &mut [f32]) + Sync,
) {
    let none: &mut [u16] = &mut [];
    reduce_rows_writing(rows, c, out, ws, (none, 0), |span, _, s1, s2, t1, t2| rows_kernel(span, s1, s2, t1, t2));
}

/// [`reduce_rows`] whose kernel also writes the part's rows of `dst` (`per_row` elements a
/// row; none when 0), handed to it as its second argument.
fn reduce_rows_writing<T: Send>(
    rows: usize,
    c: usize,
    out: &mut [f64],
    ws: &mut Workspace,
    (dst, per_row): (&mut [T], usize),
    rows_kernel: impl Fn(std::ops::Range<usize>, &mut [T], &mut [f64], &mut [f64], &mut [f32], &mut [f32]) + Sync,
) {
    let parts = threads::num_threads().min(rows.div_ceil(256)).max(1);
    let ranges: Vec<_> = split_even(rows, parts).collect();
    let mut dsts = Vec::with_capacity(parts);
    let mut rest = dst;
    for r in &ranges {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * per_row);
        dsts.push(part);
        rest = tail;
    }
    let partials = take(&mut ws.f64s, parts * 2 * c);
    threads::install(|| {
        partials.par_chunks_mut(2 * c).zip(ranges).zip(dsts).for_each(|((acc, range), dst)| {
            let (s1, s2) = acc.split_at_mut(c);
            s1.fill(0.0);
            s2.fill(0.0);
            crate::scratch::with_tile(2 * c, |t| {
                let (t1, t2) = t.split_at_mut(c);
                rows_kernel(range.start * c..range.end * c, dst, s1, s2, t1, t2);
            });
        });
    });
    sum_parts_in_order(partials, out);
}

/// `out` = the sum of the consecutive `out.len()`-long parts of `parts`, added in order (so
/// that per-task partial sums give the same total for a given split).
pub(crate) fn sum_parts_in_order(parts: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    for p in parts.chunks_exact(out.len()) {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
}

/// Per-channel sums of `x` (`[rows, c]`) into `out` (`[2 * c]`: sums, then sums of squares).
pub fn channel_sums(x: &[f32], c: usize, out: &mut [f64], ws: &mut Workspace) {
    assert!(c > 0 && x.len().is_multiple_of(c), "input of {} floats is not [rows, {c}]", x.len());
    assert_eq!(out.len(), 2 * c);
    reduce_rows(x.len() / c, c, out, ws, |span, s1, s2, t1, t2| add_sums(&x[span], s1, s2, t1, t2));
}

/// Stores `y` (`[rows, c]`) as bf16 in `y16` (nearest, ties to even) and puts the per-channel
/// sums of the stored values into `out` (`[2 * c]`, as [`channel_sums`]): the statistics of what
/// the passes that read `y16` see, in one pass over `y`.
///
/// # Panics
/// If the lengths disagree.
pub fn channel_sums_storing_bf16(y: &[f32], c: usize, y16: &mut [u16], out: &mut [f64], ws: &mut Workspace) {
    assert!(c > 0 && y.len().is_multiple_of(c), "input of {} floats is not [rows, {c}]", y.len());
    assert_eq!((y16.len(), out.len()), (y.len(), 2 * c), "bf16 output and sums lengths");
    let step = ROWS_PER_BLOCK * c;
    reduce_rows_writing(y.len() / c, c, out, ws, (y16, c), |span, dst, s1, s2, t1, t2| {
        crate::scratch::with_filter(step, |values| {
            for (src, dst) in y[span].chunks(step).zip(dst.chunks_mut(step)) {
                let values = &mut values[..src.len()];
                values.copy_from_slice(src);
                add_sums_storing_bf16(values, dst, s1, s2, t1, t2);
            }
        });
    });
}

/// Rounds `values` to bf16 in place, storing the bits in `stored`, and adds their per-channel
/// sums into `s1`, `s2` as [`add_sums`] does.
pub(crate) fn add_sums_storing_bf16(
    values: &mut [f32],
    stored: &mut [u16],
    s1: &mut [f64],
    s2: &mut [f64],
    t1: &mut [f32],
    t2: &mut [f32],
) {
    round_in_place(values, stored);
    add_sums(values, s1, s2, t1, t2);
}

/// Per-channel mean and biased variance from [`channel_sums`] over `rows` rows.
pub fn mean_var_from_sums(sums: &[f64], rows: usize, mean: &mut [f32], var: &mut [f32]) {
    let c = sums.len() / 2;
    let inv = 1.0 / rows.max(1) as f64;
    for ch in 0..c {
        let m = sums[ch] * inv;
        mean[ch] = m as f32;
        var[ch] = (sums[c + ch] * inv - m * m).max(0.0) as f32;
    }
}

/// Per-channel batch mean and biased variance of `x` (`[rows, c]`).
///
/// Sums are taken around the first row's values, a shift that keeps the one-pass variance
/// formula safe from cancellation.
///
/// # Panics
/// If the lengths disagree or `x` is empty.
pub fn channel_mean_var(x: &[f32], c: usize, mean: &mut [f32], var: &mut [f32], ws: &mut Workspace) {
    assert!(
        c > 0 && !x.is_empty() && x.len().is_multiple_of(c),
        "batch norm input of {} floats is not [rows, {c}]",
        x.len()
    );
    assert_eq!(mean.len(), c);
    assert_eq!(var.len(), c);
    let rows = x.len() / c;
    let shift = &x[..c];
    let mut sums = std::mem::take(&mut ws.sums);
    sums.resize(2 * c, 0.0);
    reduce_rows(rows, c, &mut sums, ws, |span, s1, s2, t1, t2| shifted_sums(&x[span], shift, s1, s2, t1, t2));
    let inv = 1.0 / rows as f64;
    for ch in 0..c {
        let m = sums[ch] * inv;
        mean[ch] = (f64::from(shift[ch]) + m) as f32;
        var[ch] = (sums[c + ch] * inv - m * m).max(0.0) as f32;
    }
    ws.sums = sums;
}

crate::multiversion! {
    /// `y = act(x * scale + shift (+ r))` over rows.
    fn scale_shift_rows_loop / scale_shift_rows_loop_on(x: &[f32], scale: &[f32], shift: &[f32], residual: Option<&[f32]>, relu: bool, y: &mut [f32]) {
        let c = scale.len();
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        match residual {
            Some(r) => {
                for ((yr, xr), rr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(r.chunks_exact(c)) {
                    for ((((o, &v), &a), &b), &q) in yr.iter_mut().zip(xr).zip(scale).zip(shift).zip(rr) {
                        *o = (v * a + b + q).max(floor);
                    }
                }
            }
            None => {
                for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((o, &v), &a), &b) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                        *o = (v * a + b).max(floor);
                    }
                }
            }
        }
    }
}

/// `y = act(x * scale + shift (+ r))` over rows.
fn scale_shift_rows(x: &[f32], scale: &[f32], shift: &[f32], residual: Option<&[f32]>, relu: bool, y: &mut [f32]) {
    if !avx512_rows!(scale.len(), scale_shift_rows(x, scale, shift, residual, relu, y)) {
        scale_shift_rows_loop(x, scale, shift, residual, relu, y);
    }
}

/// `y = x * scale + shift (+ residual)`, then ReLU if `relu`, per channel.
///
/// # Shapes
/// `x, y, residual: [rows, c]`, `scale, shift: [c]`.
///
/// # Panics
/// If the lengths disagree.
pub fn scale_shift_act<'x>(
    x: impl Into<Activations<'x>>,
    c: usize,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let x = x.into();
    assert!(c > 0 && x.len().is_multiple_of(c));
    assert_eq!(y.len(), x.len());
    assert_eq!((scale.len(), shift.len()), (c, c));
    if let Some(r) = residual {
        assert_eq!(r.len(), x.len(), "residual length");
    }
    map_rows(x, c, y, |xv, sub, yv| scale_shift_rows(xv, scale, shift, residual.map(|r| &r[sub]), relu, yv));
}

/// Runs `rows(values, sub, out)` over the rows of `x` (`c` values each) as `f32`, in parallel
/// tasks of [`ROWS_PER_TASK`] rows, a bf16 `x` a few rows at a time (see [`for_f32_blocks`]): `sub`
/// is the element range of `values`, `out` the same range of `y`.
fn map_rows<T: Send>(
    x: Activations<'_>,
    c: usize,
    y: &mut [T],
    rows: impl Fn(&[f32], std::ops::Range<usize>, &mut [T]) + Sync,
) {
    let chunk = ROWS_PER_TASK * c;
    threads::install(|| {
        y.par_chunks_mut(chunk).enumerate().for_each(|(t, yc)| {
            let at = t * chunk;
            for_f32_blocks(x, at..at + yc.len(), (c, (ELEMENTWISE_WIDEN / c).max(1)), |xv, sub| {
                let yv = &mut yc[sub.start - at..sub.end - at];
                rows(xv, sub, yv);
            });
        });
    });
}

crate::multiversion! {
    /// `y = act(x * scale + shift + (r * r_scale + r_shift))` over rows.
    fn two_affines_rows_loop / two_affines_rows_loop_on(x: &[f32], own: ChannelAffine<'_>, r: &[f32], other: ChannelAffine<'_>, relu: bool, y: &mut [f32]) {
        let c = own.scale.len();
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        for ((yr, xr), rr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(r.chunks_exact(c)) {
            let params = own.scale.iter().zip(own.shift).zip(other.scale.iter().zip(other.shift));
            for (((o, &v), &q), ((&a, &b), (&ra, &rb))) in yr.iter_mut().zip(xr).zip(rr).zip(params) {
                // The residual's value first, as a pass of its own would have stored it.
                let q = q * ra + rb;
                *o = (v * a + b + q).max(floor);
            }
        }
    }
}

/// A per-channel affine map `v * scale + shift`.
#[derive(Clone, Copy, Debug)]
pub struct ChannelAffine<'a> {
    /// Per-channel multiplier.
    pub scale: &'a [f32],
    /// Per-channel offset.
    pub shift: &'a [f32],
}

/// [`scale_shift_act`] whose residual is `r` through its own affine map `other`: `y = act(x *
/// own.scale + own.shift + (r * other.scale + other.shift))`, the values of a pass that first
/// stores the residual's batch norm output and then adds it (a projection shortcut's batch
/// norm, whose output then never exists).
///
/// # Shapes
/// `x, r, y: [rows, c]`, the maps' vectors: `[c]`.
///
/// # Panics
/// If the lengths disagree.
pub fn scale_shift_act_affine_residual<'x>(
    x: impl Into<Activations<'x>>,
    own: ChannelAffine<'_>,
    r: impl Into<Activations<'x>>,
    other: ChannelAffine<'_>,
    relu: bool,
    y: &mut [f32],
) {
    let (x, r) = (x.into(), r.into());
    let c = own.scale.len();
    assert!(c > 0 && x.len().is_multiple_of(c));
    assert_eq!((y.len(), r.len()), (x.len(), x.len()), "output and residual lengths");
    assert!([own.shift, other.scale, other.shift].iter().all(|v| v.len() == c), "affine maps of the wrong length");
    map_rows(x, c, y, |xv, sub, yv| r.with_f32(sub, |rv| two_affines_rows_loop(xv, own, rv, other, relu, yv)));
}

crate::multiversion! {
    /// `y = act(y * scale + shift (+ r))` over rows, in place: the arithmetic of
    /// `scale_shift_rows`, so a convolution that applies it to its output as it writes it (see
    /// [`crate::conv::OutputTransform`]) gives the same values as a pass of batch norm after it.
    pub(crate) fn scale_shift_rows_in_place / scale_shift_rows_in_place_on(y: &mut [f32], scale: &[f32], shift: &[f32], residual: Option<&[f32]>, relu: bool) {
        let c = scale.len();
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        match residual {
            Some(r) => {
                for (yr, rr) in y.chunks_exact_mut(c).zip(r.chunks_exact(c)) {
                    for (((o, &a), &b), &q) in yr.iter_mut().zip(scale).zip(shift).zip(rr) {
                        *o = (*o * a + b + q).max(floor);
                    }
                }
            }
            None => {
                for yr in y.chunks_exact_mut(c) {
                    for ((o, &a), &b) in yr.iter_mut().zip(scale).zip(shift) {
                        *o = (*o * a + b).max(floor);
                    }
                }
            }
        }
    }
}

/// [`scale_shift_act`] in place: `y = act(y * scale + shift (+ residual))`.
///
/// # Panics
/// If the lengths disagree.
pub fn scale_shift_act_in_place(
    y: &mut [f32],
    c: usize,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) {
    assert!(c > 0 && y.len().is_multiple_of(c));
    assert_eq!((scale.len(), shift.len()), (c, c));
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "residual length");
    }
    let chunk = ROWS_PER_TASK * c;
    threads::install(|| {
        y.par_chunks_mut(chunk).enumerate().for_each(|(t, yc)| {
            let span = t * chunk..t * chunk + yc.len();
            scale_shift_rows_in_place(yc, scale, shift, residual.map(|r| &r[span]), relu);
        });
    });
}

/// Which ReLU, if any, followed the batch norm in the forward pass, i.e. how its output
/// gradient is to be masked.
#[derive(Clone, Copy, Debug)]
pub enum ReluMask<'a> {
    /// No ReLU: the gradient passes unchanged.
    None,
    /// A ReLU whose output is this tensor: pass where it is positive.
    Output(&'a [f32]),
    /// A ReLU applied to `x * scale + shift` (the batch norm's own affine, when its output was
    /// never stored): pass where that is positive.
    Affine {
        /// Per-channel multiplier.
        scale: &'a [f32],
        /// Per-channel offset.
        shift: &'a [f32],
    },
}

impl<'a> ReluMask<'a> {
    fn rows(&self, span: std::ops::Range<usize>) -> ReluMask<'a> {
        match *self {
            ReluMask::Output(z) => ReluMask::Output(&z[span]),
            other => other,
        }
    }
}

crate::multiversion! {
    /// Adds `g` and `g * (x - mean)` per channel over the rows of `x` into the `f32` sums `t1`,
    /// `t2`, `g` masked by the ReLU. (Called in the version of its caller's `isa`.)
    #[allow(dead_code)]
    fn backward_rows_add / backward_rows_add_on(x: &[f32], mean: &[f32], dy: &[f32], mask: ReluMask<'_>, t1: &mut [f32], t2: &mut [f32]) {
        let c = mean.len();
        match mask {
            ReluMask::Output(z) => {
                for ((xr, gr), zr) in x.chunks_exact(c).zip(dy.chunks_exact(c)).zip(z.chunks_exact(c)) {
                    for (((((a, s), &v), &g), &o), &m) in t1.iter_mut().zip(t2.iter_mut()).zip(xr).zip(gr).zip(zr).zip(mean) {
                        let g = if o > 0.0 { g } else { 0.0 };
                        *a += g;
                        *s += g * (v - m);
                    }
                }
            }
            ReluMask::Affine { scale, shift } => {
                for (xr, gr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                    for (((((a, s), &v), &g), &m), (&p, &q)) in t1.iter_mut().zip(t2.iter_mut()).zip(xr).zip(gr).zip(mean).zip(scale.iter().zip(shift)) {
                        let g = if v * p + q > 0.0 { g } else { 0.0 };
                        *a += g;
                        *s += g * (v - m);
                    }
                }
            }
            ReluMask::None => {
                for (xr, gr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                    for ((((a, s), &v), &g), &m) in t1.iter_mut().zip(t2.iter_mut()).zip(xr).zip(gr).zip(mean) {
                        *a += g;
                        *s += g * (v - m);
                    }
                }
            }
        }
    }
}

/// Adds the `f32` block sums `t1`, `t2` into the `f64` sums `s1`, `s2`.
fn flush_block(t1: &[f32], t2: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    for (((a, b), &u), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(t1).zip(t2) {
        *a += f64::from(u);
        *b += f64::from(v);
    }
}

/// The general loop of [`backward_rows`] in `isa`'s version: blocks of [`ROWS_PER_BLOCK`] rows
/// summed in `f32` (`t1`, `t2`), each added into the `f64` sums. A bf16 `x` is widened a few rows
/// at a time, which stay in L1, added in the same order: the sums of its widened values.
#[allow(clippy::too_many_arguments)]
fn backward_rows_loop_on(
    isa: crate::simd::Isa,
    x: Activations<'_>,
    (mean, span): (&[f32], std::ops::Range<usize>),
    dy: &[f32],
    mask: ReluMask<'_>,
    s1: &mut [f64],
    s2: &mut [f64],
    t1: &mut [f32],
    t2: &mut [f32],
) {
    let c = mean.len();
    let few = (ELEMENTWISE_WIDEN / c).clamp(1, ROWS_PER_BLOCK);
    for at in span.clone().step_by(ROWS_PER_BLOCK * c) {
        t1.fill(0.0);
        t2.fill(0.0);
        for_f32_blocks(x, at..(at + ROWS_PER_BLOCK * c).min(span.end), (c, few), |xv, sub| {
            backward_rows_add_on(isa, xv, mean, &dy[sub.clone()], mask.rows(sub), t1, t2)
        });
        flush_block(t1, t2, s1, s2);
    }
}

/// `sum(g)` and `sum(g * (x - mean))` per channel over the elements `span` of `x` (`dy` and the
/// mask whole), added into `s1`, `s2`: in registers for 16 to 64 channels (a bf16 block widened
/// whole, 16 KB at most), by the general loop otherwise.
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    x: Activations<'_>,
    (mean, span): (&[f32], std::ops::Range<usize>),
    dy: &[f32],
    mask: ReluMask<'_>,
    s1: &mut [f64],
    s2: &mut [f64],
    t1: &mut [f32],
    t2: &mut [f32],
) {
    let c = mean.len();
    if register_rows(c) {
        for_f32_blocks(x, span, (c, ROWS_PER_BLOCK), |xv, sub| {
            avx512_rows!(c, backward_rows(xv, mean, &dy[sub.clone()], mask.rows(sub), s1, s2));
        });
    } else {
        backward_rows_loop_on(crate::simd::isa(), x, (mean, span), dy, mask, s1, s2, t1, t2);
    }
}

/// The two reductions batch-norm backward needs: `sum(g)` and `sum(g * xhat)` per channel, where
/// `xhat = (x - mean) * rstd` and `g` is `dy` masked by the ReLU that followed (see [`ReluMask`]).
///
/// # Shapes
/// `x, dy, mask output: [rows, c]`; `mean, rstd, sum_g, sum_g_xhat: [c]`.
#[allow(clippy::too_many_arguments)]
pub fn backward_sums<'x>(
    x: impl Into<Activations<'x>>,
    c: usize,
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    sum_g: &mut [f32],
    sum_g_xhat: &mut [f32],
    ws: &mut Workspace,
) {
    let x = x.into();
    assert!(c > 0 && x.len().is_multiple_of(c) && !x.is_empty());
    assert_eq!(dy.len(), x.len());
    check_mask(&mask, x.len(), c);
    let mut sums = std::mem::take(&mut ws.sums);
    sums.resize(2 * c, 0.0);
    reduce_rows(x.len() / c, c, &mut sums, ws, |span, s1, s2, t1, t2| {
        backward_rows(x, (mean, span), dy, mask, s1, s2, t1, t2)
    });
    for ch in 0..c {
        sum_g[ch] = sums[ch] as f32;
        sum_g_xhat[ch] = (sums[c + ch] * f64::from(rstd[ch])) as f32;
    }
    ws.sums = sums;
}

/// `store(dx, a * g + b + k * x)` per channel over rows, `g` masked by the ReLU: the body of
/// the input-gradient loops, inlined into each so that it vectorises with its store. One loop
/// per mask kind keeps every inner loop branch-free.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_into<D>(
    x: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    a: &[f32],
    b: &[f32],
    k: &[f32],
    dx: &mut [D],
    store: impl Fn(&mut D, f32),
) {
    let c = a.len();
    let rows = dx.chunks_exact_mut(c).zip(x.chunks_exact(c).zip(dy.chunks_exact(c)));
    match mask {
        ReluMask::None => {
            for (dr, (xr, gr)) in rows {
                for (((((d, &v), &g), &p), &q), &r) in dr.iter_mut().zip(xr).zip(gr).zip(a).zip(b).zip(k) {
                    store(d, p * g + q + r * v);
                }
            }
        }
        ReluMask::Output(z) => {
            for ((dr, (xr, gr)), zr) in rows.zip(z.chunks_exact(c)) {
                for ((((((d, &v), &g), &o), &p), &q), &r) in dr.iter_mut().zip(xr).zip(gr).zip(zr).zip(a).zip(b).zip(k)
                {
                    let g = if o > 0.0 { g } else { 0.0 };
                    store(d, p * g + q + r * v);
                }
            }
        }
        ReluMask::Affine { scale, shift } => {
            for (dr, (xr, gr)) in rows {
                for (((((d, &v), &g), (&p, &q)), &r), (&sc, &sh)) in
                    dr.iter_mut().zip(xr).zip(gr).zip(a.iter().zip(b)).zip(k).zip(scale.iter().zip(shift))
                {
                    let g = if v * sc + sh > 0.0 { g } else { 0.0 };
                    store(d, p * g + q + r * v);
                }
            }
        }
    }
}

crate::multiversion! {
    /// `dx (+)= a * g + b + k * x` per channel over rows, `g` masked by the ReLU.
    fn input_grad_rows_loop / input_grad_rows_loop_on(x: &[f32], dy: &[f32], mask: ReluMask<'_>, a: &[f32], b: &[f32], k: &[f32], dx: &mut [f32], accumulate: bool) {
        let keep = if accumulate { 1.0f32 } else { 0.0 };
        input_grad_into(x, dy, mask, a, b, k, dx, |d, v| *d = keep * *d + v);
    }
}

crate::multiversion! {
    /// `dx = bf16(a * g + b + k * x)` per channel over rows (nearest, ties to even), `g` masked
    /// by the ReLU.
    fn input_grad_rows_bf16_loop / input_grad_rows_bf16_loop_on(x: &[f32], dy: &[f32], mask: ReluMask<'_>, a: &[f32], b: &[f32], k: &[f32], dx: &mut [u16]) {
        input_grad_into(x, dy, mask, a, b, k, dx, |d, v| *d = bf16_bits(v) as u16);
    }
}

/// `dx (+)= a * g + b + k * x` per channel over rows, `g` masked by the ReLU.
#[allow(clippy::too_many_arguments)]
fn input_grad_rows(
    x: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    a: &[f32],
    b: &[f32],
    k: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    if !avx512_rows!(a.len(), input_grad_rows(x, dy, mask, a, b, k, dx, accumulate)) {
        input_grad_rows_loop(x, dy, mask, a, b, k, dx, accumulate);
    }
}

fn check_mask(mask: &ReluMask<'_>, len: usize, c: usize) {
    match mask {
        ReluMask::Output(z) => assert_eq!(z.len(), len, "ReLU output length"),
        ReluMask::Affine { scale, shift } => assert_eq!((scale.len(), shift.len()), (c, c), "ReLU affine length"),
        ReluMask::None => {}
    }
}

/// Where [`backward_input`] puts the input gradient.
#[derive(Debug)]
pub enum InputGradient<'a> {
    /// In `f32`: written, or added to what is there when `accumulate`.
    F32 {
        /// The gradient, `[rows, c]`.
        dx: &'a mut [f32],
        /// Whether to add to `dx` rather than overwrite it.
        accumulate: bool,
    },
    /// Written in bf16 (nearest, ties to even): for a convolution whose backward passes read
    /// their output gradient in bf16, rounding an `f32` one the same way (but for values within
    /// half a step of bf16's smallest normal, about 1.2e-38, which `vcvtneps2bf16` flushes to
    /// zero where this rounds them up).
    Bf16(&'a mut [u16]),
}

impl InputGradient<'_> {
    fn len(&self) -> usize {
        match self {
            InputGradient::F32 { dx, .. } => dx.len(),
            InputGradient::Bf16(dx) => dx.len(),
        }
    }
}

/// Input gradient of training-mode batch norm:
/// `dx = gamma * rstd * (g - sum_g / rows - xhat * sum_g_xhat / rows)`, with `g` as in
/// [`backward_sums`], into `dx` (see [`InputGradient`]).
#[allow(clippy::too_many_arguments)]
pub fn backward_input<'x>(
    x: impl Into<Activations<'x>>,
    c: usize,
    mean: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    dy: &[f32],
    mask: ReluMask<'_>,
    sum_g: &[f32],
    sum_g_xhat: &[f32],
    dx: InputGradient<'_>,
) {
    let x = x.into();
    assert!(c > 0 && x.len().is_multiple_of(c) && !x.is_empty());
    assert_eq!(dy.len(), x.len());
    assert_eq!(dx.len(), x.len());
    check_mask(&mask, x.len(), c);
    // With xhat = (x - mean) * rstd the formula is affine in (g, x) per channel:
    // dx = A g + B + K x, A = gamma rstd, K = -A rstd sum_g_xhat / rows,
    // B = -A sum_g / rows - K mean. Computed in f64, applied in f32.
    let rows = (x.len() / c) as f64;
    let mut coef = [Vec::with_capacity(c), Vec::with_capacity(c), Vec::with_capacity(c)];
    for ch in 0..c {
        let a = f64::from(gamma[ch]) * f64::from(rstd[ch]);
        let k = -a * f64::from(rstd[ch]) * f64::from(sum_g_xhat[ch]) / rows;
        let b = -a * f64::from(sum_g[ch]) / rows - k * f64::from(mean[ch]);
        coef[0].push(a as f32);
        coef[1].push(b as f32);
        coef[2].push(k as f32);
    }
    let [a, b, k] = &coef;
    match dx {
        InputGradient::F32 { dx, accumulate } => map_rows(x, c, dx, |xv, sub, dxv| {
            input_grad_rows(xv, &dy[sub.clone()], mask.rows(sub), a, b, k, dxv, accumulate)
        }),
        InputGradient::Bf16(dx) => map_rows(x, c, dx, |xv, sub, dxv| {
            input_grad_rows_bf16_loop(xv, &dy[sub.clone()], mask.rows(sub), a, b, k, dxv)
        }),
    }
}

#[cfg(test)]
mod tests;
