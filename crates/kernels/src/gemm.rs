//! Matrix multiplication, the workhorse of every convolution and the fully connected layer.
//!
//! The interface is deliberately small (strided views in, one call) so the backend can change
//! without touching the convolution code. Today the backend is the `gemm` crate, whose AVX-512
//! micro-kernels are selected at run time, except for products of a few rows with a matrix read
//! column by column (dot products); [`matmul_reference`] is the naive oracle
//! tests use.

use rayon::prelude::*;

/// A read-only strided view of a row-major or transposed matrix inside a slice.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable strided view of a matrix inside a slice.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

fn required_len(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view with the given strides (in elements).
    ///
    /// # Panics
    /// If the view reaches past the end of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        let need = required_len(rows, cols, row_stride, col_stride);
        assert!(
            need <= data.len(),
            "matrix view {rows}x{cols} (strides {row_stride},{col_stride}) needs {need} elements, slice has {}",
            data.len()
        );
        Self { data, rows, cols, row_stride, col_stride }
    }

    /// A dense row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

impl<'a> MatMut<'a> {
    /// A `rows x cols` view with the given strides (in elements).
    ///
    /// # Panics
    /// If the view reaches past the end of `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        let need = required_len(rows, cols, row_stride, col_stride);
        assert!(
            need <= data.len(),
            "matrix view {rows}x{cols} (strides {row_stride},{col_stride}) needs {need} elements, slice has {}",
            data.len()
        );
        assert!(
            rows <= 1 || cols <= 1 || (row_stride != 0 && col_stride != 0),
            "a destination view must not alias itself"
        );
        Self { data, rows, cols, row_stride, col_stride }
    }

    /// A dense row-major `rows x cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
}

/// How much of the thread pool one multiplication may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    /// Run on the calling thread (the caller already parallelises around it).
    Sequential,
    /// Spread over the whole compute pool.
    Pool,
}

/// `c = a * b`, or `c += a * b` when `accumulate` is true.
///
/// # Panics
/// If the shapes do not agree.
pub fn matmul(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, par: Parallelism) {
    assert_eq!(a.rows, c.rows, "matmul: a has {} rows, c has {}", a.rows, c.rows);
    assert_eq!(b.cols, c.cols, "matmul: b has {} cols, c has {}", b.cols, c.cols);
    assert_eq!(a.cols, b.rows, "matmul: a is {}x{}, b is {}x{}", a.rows, a.cols, b.rows, b.cols);
    let (m, n, k) = (c.rows, c.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.row_stride + j * c.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    if m <= DOT_ROWS && a.col_stride == 1 && b.row_stride == 1 {
        matmul_dots(c, a, b, accumulate, par);
        return;
    }
    let parallelism = match par {
        Parallelism::Sequential => gemm::Parallelism::None,
        Parallelism::Pool => {
            let threads = crate::threads::num_threads();
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            }
        }
    };
    let mut run = || {
        // SAFETY: the constructors checked that every index `i*rs + j*cs` of each view lies inside
        // its slice, the shapes were checked above, and `c` is borrowed mutably so it cannot alias
        // `a` or `b`. The gemm crate reads `a`, `b` (and `c` when accumulating) and writes only `c`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.data.as_mut_ptr(),
                c.col_stride as isize,
                c.row_stride as isize,
                accumulate,
                a.data.as_ptr(),
                a.col_stride as isize,
                a.row_stride as isize,
                b.data.as_ptr(),
                b.col_stride as isize,
                b.row_stride as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    if par == Parallelism::Pool {
        crate::threads::install(run);
    } else {
        run();
    }
}

/// At most this many rows of `a`, each contiguous, times a `b` stored column by column (`W^T`
/// of a row-major `W`: a fully connected layer's forward pass at a batch of a few images) are
/// computed as dot products, reading `b` once from front to back, rather than by the `gemm`
/// crate, which packs `b` first and so doubles the memory traffic of what is a matrix-vector
/// product bound by it (docs/tuning.md).
pub(crate) const DOT_ROWS: usize = 32;

/// Columns of `c` per parallel task of [`matmul_dots`] (a quarter of a megabyte of `b` at
/// ResNet-50's 2048 inputs).
const DOT_COLUMNS: usize = 32;

/// [`matmul`] for at most [`DOT_ROWS`] contiguous rows of `a` and contiguous columns of `b`.
fn matmul_dots(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, par: Parallelism) {
    let (m, k) = (c.rows, a.cols);
    let rows: Vec<&[f32]> = (0..m).map(|i| &a.data[i * a.row_stride..][..k]).collect();
    let column_dot = |row: &[f32], j: usize| dot(row, &b.data[j * b.col_stride..][..k]);
    dot_products(&rows, c.cols, par, column_dot, |i, j, v| {
        let dst = &mut c.data[i * c.row_stride + j * c.col_stride];
        *dst = if accumulate { *dst + v } else { v };
    });
}

/// `write(i, j, column_dot(rows[i], j))` for every row `i` (at most [`DOT_ROWS`]) and column `j <
/// columns`: each parallel task takes [`DOT_COLUMNS`] columns and meets every row with each of
/// them, so that the columns (the large operand: a classifier's weight rows) are read once,
/// front to back.
pub(crate) fn dot_products(
    rows: &[&[f32]],
    columns: usize,
    par: Parallelism,
    column_dot: impl Fn(&[f32], usize) -> f32 + Sync,
    mut write: impl FnMut(usize, usize, f32),
) {
    let m = rows.len();
    assert!(m <= DOT_ROWS, "dot products of {m} rows (at most {DOT_ROWS})");
    // Each task's block of columns, row by row: `[m, width]`.
    let block = |j0: usize| -> Vec<f32> {
        let width = DOT_COLUMNS.min(columns - j0);
        let mut out = vec![0.0; m * width];
        for jj in 0..width {
            for (i, row) in rows.iter().enumerate() {
                out[i * width + jj] = column_dot(row, j0 + jj);
            }
        }
        out
    };
    let starts: Vec<usize> = (0..columns).step_by(DOT_COLUMNS).collect();
    let blocks: Vec<Vec<f32>> = match par {
        Parallelism::Pool => crate::threads::install(|| starts.par_iter().map(|&j0| block(j0)).collect()),
        Parallelism::Sequential => starts.iter().map(|&j0| block(j0)).collect(),
    };
    for (&j0, out) in starts.iter().zip(&blocks) {
        let width = out.len() / m.max(1);
        for i in 0..m {
            for jj in 0..width {
                write(i, j0 + jj, out[i * width + jj]);
            }
        }
    }
}

crate::multiversion! {
    /// `sum_p x[p] * y[p]` (see [`lanes_dot`]).
    fn dot / dot_on(x: &[f32], y: &[f32]) -> f32 {
        lanes_dot(x, y, |v| v)
    }
}

/// `sum_p x[p] * widen(y[p])`, in 32 lanes (vectors of independent partial sums) added up at the
/// end: the body of the dot products, inlined into each instruction set's version of its
/// callers so that it vectorises there.
#[inline(always)]
pub(crate) fn lanes_dot<T: Copy>(x: &[f32], y: &[T], widen: impl Fn(T) -> f32) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0.0f32; LANES];
    let whole = x.len() / LANES * LANES;
    for (xs, ys) in x[..whole].chunks_exact(LANES).zip(y[..whole].chunks_exact(LANES)) {
        for ((a, &p), &q) in acc.iter_mut().zip(xs).zip(ys) {
            *a += p * widen(q);
        }
    }
    let tail: f32 = x[whole..].iter().zip(&y[whole..]).map(|(&p, &q)| p * widen(q)).sum();
    acc.iter().sum::<f32>() + tail
}

/// The naive triple loop, accumulated in `f64`: the oracle [`matmul`] is tested against.
pub fn matmul_reference(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    assert_eq!(a.rows, c.rows);
    assert_eq!(b.cols, c.cols);
    assert_eq!(a.cols, b.rows);
    for i in 0..c.rows {
        for j in 0..c.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += f64::from(a.at(i, p)) * f64::from(b.at(p, j));
            }
            let dst = &mut c.data[i * c.row_stride + j * c.col_stride];
            *dst = if accumulate { *dst + acc as f32 } else { acc as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn check(m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool, par: Parallelism) {
        let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let c0 = random(m * n, &mut rng);
        let av = if ta { MatRef::row_major(&a, k, m).t() } else { MatRef::row_major(&a, m, k) };
        let bv = if tb { MatRef::row_major(&b, n, k).t() } else { MatRef::row_major(&b, k, n) };
        let mut got = c0.clone();
        let mut want = c0.clone();
        matmul(MatMut::row_major(&mut got, m, n), av, bv, acc, par);
        matmul_reference(MatMut::row_major(&mut want, m, n), av, bv, acc);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w} (m{m} n{n} k{k})");
        }
    }

    #[test]
    fn matches_reference_on_conv_shapes() {
        for &(m, n, k) in &[(1, 1, 1), (7, 16, 27), (64, 16, 144), (33, 64, 576), (5, 10, 64), (130, 3, 9)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        check(m, n, k, ta, tb, acc, Parallelism::Sequential);
                    }
                }
            }
            check(m, n, k, false, false, true, Parallelism::Pool);
        }
    }

    /// A few rows times a matrix read column by column (a fully connected layer's forward pass at
    /// batch 1-4) go through dot products: several parallel blocks of columns, the last one cut,
    /// and an inner dimension with a tail past the lanes; one more row goes to `gemm`.
    #[test]
    fn few_rows_as_dot_products_match_reference() {
        for m in 1..=DOT_ROWS + 1 {
            for acc in [false, true] {
                check(m, 2 * DOT_COLUMNS + 7, 2048 + 5, false, true, acc, Parallelism::Pool);
                check(m, 40, 33, false, true, acc, Parallelism::Sequential);
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps() {
        let a: Vec<f32> = vec![];
        let b: Vec<f32> = vec![];
        let mut c = vec![5.0; 4];
        // Adding an empty product keeps the values; writing it zeroes them.
        for (accumulate, want) in [(true, 5.0), (false, 0.0)] {
            let (a, b) = (MatRef::row_major(&a, 2, 0), MatRef::row_major(&b, 0, 2));
            matmul(MatMut::row_major(&mut c, 2, 2), a, b, accumulate, Parallelism::Sequential);
            assert_eq!(c, vec![want; 4], "accumulate {accumulate}");
        }
    }

    #[test]
    #[should_panic(expected = "needs")]
    fn view_past_the_end_panics() {
        let a = vec![0.0; 5];
        let _ = MatRef::row_major(&a, 2, 3);
    }
}
