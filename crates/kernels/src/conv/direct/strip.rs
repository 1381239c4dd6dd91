use crate::activations::{bf16_bits, bf16_in_slots_mut, Activations};
use crate::conv::bf16::pack_pairs;
use crate::conv::input::{load_pixels, ConvInput};

/// Copies input rows `iy0 .. iy0 + rows` of image `img` into `strip` as rows of width
/// `w + 2 * pad`, with zeros for the padding and for rows outside the image: the part of the
/// zero-padded input that a band of output rows reads, built where it stays in cache.
///
/// With `bf16`, each pixel is stored as `ceil(cin / 2)` bf16 channel pairs instead (see
/// [`pack_pairs`]); zero bits are a bf16 zero pair, so the padding is the same. `row` is
/// scratch for one transformed input row (`w * cin` floats) in that case.
pub(in crate::conv) fn fill_strip(
    input: &ConvInput<'_>,
    img: usize,
    iy0: isize,
    rows: usize,
    strip: &mut [f32],
    bf16: bool,
    row: &mut [f32],
) {
    let (s, x, t) = (&input.shape, input.x, input.transform.as_ref());
    let (c, p) = (s.cin, s.pad);
    let e = if bf16 { c.div_ceil(2) } else { c };
    let wp = s.w + 2 * p;
    for (r, dst) in strip[..rows * wp * e].chunks_exact_mut(wp * e).enumerate() {
        let iy = iy0 + r as isize;
        if iy < 0 || iy >= s.h as isize {
            dst.fill(0.0);
            continue;
        }
        let src = ((img * s.h + iy as usize) * s.w) * c;
        dst[..p * e].fill(0.0);
        dst[(p + s.w) * e..].fill(0.0);
        let to = &mut dst[p * e..(p + s.w) * e];
        if let (true, Activations::Bf16(v)) = (bf16, x) {
            if c % 2 == 0 {
                // Already the pair layout: copied as it is, or transformed value by value.
                let (from, to) = (&v[src..src + s.w * c], bf16_in_slots_mut(to, s.w * c));
                match t {
                    None => to.copy_from_slice(from),
                    Some(t) => bn_relu_bf16(from, t.scale, t.shift, to),
                }
                continue;
            }
        }
        // A bf16 input row is widened in cache first (see `Activations::with_f32`).
        x.with_f32(src..src + s.w * c, |from| match (bf16, t) {
            (false, _) => load_pixels(from, to, t),
            // An even channel count makes the pair layout the plain bf16 array of the row.
            #[cfg(target_arch = "x86_64")]
            (true, _) if c % 2 == 0 => {
                // Without a transform the row is converted straight from the input.
                let row: &[f32] = match t {
                    Some(_) => {
                        let row = &mut row[..s.w * c];
                        load_pixels(from, row, t);
                        row
                    }
                    None => from,
                };
                debug_assert_eq!(2 * to.len(), row.len());
                // SAFETY: bf16 support was checked by the caller; `to` holds `w * c / 2` f32
                // slots, i.e. `w * c` u16 slots, exactly the converted row, and overlaps
                // neither the input nor the scratch row.
                unsafe { crate::simd::avx512::to_bf16(row.as_ptr(), to.as_mut_ptr() as *mut u16, row.len()) };
            }
            (true, Some(t)) => pack_pairs(from, c, t.scale, t.shift, true, to),
            (true, None) => pack_pairs(from, c, &[], &[], false, to),
        });
    }
}

crate::multiversion! {
    /// `dst = bf16(max(src * scale + shift, 0))` over whole pixels of bf16 values: the input
    /// transform of a bf16 activation in one pass, rounded as the `f32` path's conversion
    /// rounds it (but for values next to bf16's smallest normal, which that flushes to zero).
    fn bn_relu_bf16 / bn_relu_bf16_on(src: &[u16], scale: &[f32], shift: &[f32], dst: &mut [u16]) {
        let c = scale.len();
        for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((o, &v), &a), &b) in d.iter_mut().zip(s).zip(scale).zip(shift) {
                let v = f32::from_bits(u32::from(v) << 16);
                *o = bf16_bits((v * a + b).max(0.0)) as u16;
            }
        }
    }
}
