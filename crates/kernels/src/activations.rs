//! Activations as a network keeps them between its forward and backward passes: `f32`, or bf16
//! where bf16 training stores them so (half the memory, half the traffic of every pass that
//! reads them again). The kernels read a bf16 activation a block of rows at a time, widened to
//! `f32` in cache, so their arithmetic stays the `f32` code's.

use std::cell::RefCell;
use std::ops::Range;

/// A stored activation, `[rows, c]` as the kernels see it.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// bf16 values, each the high 16 bits of the `f32` it stands for.
    Bf16(&'a [u16]),
}

impl<'a> From<&'a [f32]> for Activations<'a> {
    fn from(x: &'a [f32]) -> Self {
        Activations::F32(x)
    }
}

impl<'a> From<&'a Vec<f32>> for Activations<'a> {
    fn from(x: &'a Vec<f32>) -> Self {
        Activations::F32(x)
    }
}

impl<'a, const N: usize> From<&'a [f32; N]> for Activations<'a> {
    fn from(x: &'a [f32; N]) -> Self {
        Activations::F32(x)
    }
}

impl<'a> Activations<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Activations::F32(x) => x.len(),
            Activations::Bf16(x) => x.len(),
        }
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `span`.
    pub fn slice(&self, span: Range<usize>) -> Activations<'a> {
        match *self {
            Activations::F32(x) => Activations::F32(&x[span]),
            Activations::Bf16(x) => Activations::Bf16(&x[span]),
        }
    }

    /// The `f32` values, when that is how they are stored.
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match *self {
            Activations::F32(x) => Some(x),
            Activations::Bf16(_) => None,
        }
    }

    /// The bytes the values occupy (what prefetching them touches).
    pub(crate) fn as_bytes(&self) -> &'a [u8] {
        match *self {
            // SAFETY: `f32` has no padding and any byte may be read as `u8`; the length is the
            // slice's size in bytes and the borrow is the slice's.
            Activations::F32(x) => unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), std::mem::size_of_val(x)) },
            // SAFETY: as above, for `u16`.
            Activations::Bf16(x) => unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), std::mem::size_of_val(x)) },
        }
    }

    /// Writes the values as `f32` into `dst` (exact: every bf16 value is an `f32`).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn widen_into(&self, dst: &mut [f32]) {
        assert_eq!(dst.len(), self.len(), "widening into a buffer of another length");
        match *self {
            Activations::F32(x) => dst.copy_from_slice(x),
            Activations::Bf16(x) => crate::threads::install(|| {
                use rayon::prelude::*;
                dst.par_chunks_mut(WIDEN_TASK).zip(x.par_chunks(WIDEN_TASK)).for_each(|(d, s)| widen_bf16(s, d));
            }),
        }
    }

    /// Runs `f` on values `span` as `f32`: the stored values themselves, or, for bf16, their
    /// widening in a buffer of this thread (keep spans cache-sized). A use nested in another
    /// (two bf16 operands of one pass) gets a second buffer, a deeper one a buffer of its own.
    pub(crate) fn with_f32<R>(&self, span: Range<usize>, f: impl FnOnce(&[f32]) -> R) -> R {
        let x = match *self {
            Activations::F32(x) => return f(&x[span]),
            Activations::Bf16(x) => &x[span],
        };
        let widened = |buf: &mut Vec<f32>| {
            let wide = crate::workspace::take(buf, x.len());
            widen_bf16(x, wide);
            f(wide)
        };
        WIDE.with(|[first, second]| match first.try_borrow_mut() {
            Ok(mut buf) => widened(&mut buf),
            Err(_) => match second.try_borrow_mut() {
                Ok(mut buf) => widened(&mut buf),
                Err(_) => widened(&mut Vec::new()),
            },
        })
    }
}

/// Values per parallel task of [`Activations::widen_into`].
const WIDEN_TASK: usize = 1 << 16;

/// The first `len` bf16 values of a buffer of `f32` slots that holds them two to a slot (a
/// buffer that serves as either, as an activation's does).
///
/// # Panics
/// If the slots hold fewer than `len` values.
pub fn bf16_in_slots(slots: &[f32], len: usize) -> &[u16] {
    assert!(2 * slots.len() >= len, "{} slots hold fewer than {len} bf16 values", slots.len());
    // SAFETY: the slots' bytes are initialised; `u16` has no invalid bit patterns and an
    // alignment (2) that the `f32` slots' (4) satisfies; `len` values are within the slots'
    // `4 * slots.len()` bytes (asserted), and the borrow of `slots` covers the result's life.
    unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<u16>(), len) }
}

/// [`bf16_in_slots`], mutable.
///
/// # Panics
/// If the slots hold fewer than `len` values.
pub fn bf16_in_slots_mut(slots: &mut [f32], len: usize) -> &mut [u16] {
    assert!(2 * slots.len() >= len, "{} slots hold fewer than {len} bf16 values", slots.len());
    // SAFETY: as in `bf16_in_slots`; the exclusive borrow of `slots` makes the result the only
    // access to those bytes while it lives, and any `u16` written leaves the `f32` slots valid
    // (every bit pattern is an `f32`).
    unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast::<u16>(), len) }
}

thread_local! {
    /// The buffers of [`Activations::with_f32`]: the first, and one for a use nested in it.
    static WIDE: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// `v` rounded to bf16 (nearest, ties to even; a NaN stays a NaN), as the 16 high bits of its
/// `f32` pattern.
#[inline(always)]
pub(crate) fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    if v.is_nan() {
        (b >> 16) | 0x40
    } else {
        (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    }
}

crate::multiversion! {
    /// `dst = src` widened from bf16.
    fn widen_bf16 / widen_bf16_on(src: &[u16], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s) << 16);
        }
    }
}

crate::multiversion! {
    /// `dst = bf16(values)`, and `values` replaced by what `dst` stands for.
    pub(crate) fn round_in_place / round_in_place_on(values: &mut [f32], dst: &mut [u16]) {
        for (d, v) in dst.iter_mut().zip(values.iter_mut()) {
            let b = bf16_bits(*v);
            *d = b as u16;
            *v = f32::from_bits(b << 16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even_and_widening_gives_it_back() {
        let mut x: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1013) as f32 / 37.0 - 13.0).collect();
        x[3] = f32::NAN;
        x[5] = 1.0 + 1.0 / 256.0; // a tie: rounds to even, 1.0
        let (mut bits, mut stored) = (vec![0u16; x.len()], x.clone());
        round_in_place(&mut stored, &mut bits);
        assert_eq!(stored[5], 1.0);
        assert!(stored[3].is_nan());
        for (i, (&r, &o)) in stored.iter().zip(&x).enumerate().filter(|&(i, _)| i != 3) {
            assert!((r - o).abs() <= o.abs() / 256.0, "element {i}: {o} rounded to {r}");
        }
        let mut wide = vec![0.0; x.len()];
        Activations::Bf16(&bits).widen_into(&mut wide);
        assert_eq!(wide[..3], stored[..3]);
        assert_eq!(wide[4..], stored[4..]);
        let sum: f32 = Activations::Bf16(&bits).with_f32(10..20, |v| v.iter().sum());
        assert_eq!(sum, stored[10..20].iter().sum::<f32>());
        for isa in crate::simd::available() {
            let (mut da, mut db) = (vec![0u16; x.len()], vec![1u16; x.len()]);
            let (mut sa, mut sb) = (x.clone(), x.clone());
            round_in_place_on(crate::simd::Isa::Scalar, &mut sa, &mut da);
            round_in_place_on(isa, &mut sb, &mut db);
            assert_eq!(da, db, "{isa:?}");
            assert_eq!(
                sa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                sb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
