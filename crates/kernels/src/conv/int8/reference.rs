//! The portable int8 convolution: integer sums by plain loops and the epilogue with the
//! kernels' arithmetic, so its outputs are the AVX512-VNNI and AVX2 kernels' bit for bit. The
//! test oracle, and the path of CPUs without AVX2.

use super::pack::group_index;
use super::{check_buffers, Int8Input, Int8Output, Int8Residual, Int8Weights, Requant};
use crate::conv::ConvShape;
use crate::threads;
use rayon::prelude::*;

/// [`super::forward_int8`] without SIMD.
pub fn forward_int8_reference(
    s: &ConvShape,
    x: Int8Input<'_>,
    w: &Int8Weights,
    rq: &Requant<'_>,
    mut out: Int8Output<'_>,
) {
    check_buffers(s, &x, w, rq, &out);
    let (oh, ow, co) = (s.out_h(), s.out_w(), s.cout);
    let quads = s.cin.div_ceil(4);
    let rows = s.kh * s.kw * quads;
    // One output pixel: its integer sums, then the epilogue per channel.
    let pixel = |p: usize, sums: &mut [i32], write: &mut dyn FnMut(usize, f32)| {
        let (img, oy, ox) = (p / (oh * ow), (p / ow) % oh, p % ow);
        sums.fill(0);
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                let inside = iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w;
                for ci in 0..s.cin {
                    let a = if inside {
                        x.x[((img * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci]
                    } else {
                        x.zero_point
                    };
                    let row = (ky * s.kw + kx) * quads + ci / 4;
                    for (c, sum) in sums.iter_mut().enumerate() {
                        let q = w.quads[group_index(rows, co, row, c)];
                        *sum += i32::from(a) * i32::from((q >> (8 * (ci % 4))) as u8 as i8);
                    }
                }
            }
        }
        for (c, &sum) in sums.iter().enumerate() {
            let at = p * co + c;
            let mut v = (sum as f32).mul_add(rq.mult[c], rq.offset[c]);
            match rq.residual {
                Int8Residual::None => {}
                Int8Residual::U8 { x, scale } => v = f32::from(x[at]).mul_add(scale, v),
                Int8Residual::I8 { x, scale } => v = f32::from(x[at]).mul_add(scale, v),
            }
            write(at, v);
        }
    };
    threads::install(|| match &mut out {
        Int8Output::U8 { y, scale } => {
            let inv = 1.0 / *scale;
            y.par_chunks_mut(co).enumerate().for_each(|(p, row)| {
                let mut sums = vec![0; co];
                pixel(p, &mut sums, &mut |at, v| row[at - p * co] = super::requantize(v, inv));
            });
        }
        Int8Output::I8 { y, scale } => {
            let inv = 1.0 / *scale;
            y.par_chunks_mut(co).enumerate().for_each(|(p, row)| {
                let mut sums = vec![0; co];
                pixel(p, &mut sums, &mut |at, v| row[at - p * co] = super::requantize_i8(v, inv));
            });
        }
    });
}
