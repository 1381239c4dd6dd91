//! The int8 convolution against its oracles: the VNNI kernels against the portable pass bit for
//! bit, and the portable pass against a float convolution of the values the integers stand for.

use super::*;
use crate::conv::ConvShape;
use crate::rng::Rng;

/// `(n, h, w, cin, cout, k, stride, pad)`: the layer kinds of the ResNets (stem, 3x3, 1x1 long
/// rows, strided 1x1 and 3x3), odd channel counts (a partial quad, partial vectors) and sizes.
type Dims = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: &[Dims] = &[
    (2, 17, 15, 3, 64, 7, 2, 3),
    (2, 8, 8, 16, 16, 3, 1, 1),
    (1, 9, 7, 32, 48, 3, 1, 1),
    (2, 6, 6, 64, 80, 3, 1, 1),
    (2, 7, 7, 64, 256, 1, 1, 0),
    (1, 5, 9, 256, 64, 1, 1, 0),
    (2, 9, 9, 64, 128, 1, 2, 0),
    (1, 8, 7, 6, 20, 1, 2, 0),
    (2, 9, 8, 32, 64, 3, 2, 1),
    (1, 5, 6, 6, 24, 3, 1, 1),
    (1, 4, 4, 8, 1000, 1, 1, 0),
];

fn shape((n, h, w, cin, cout, k, stride, pad): Dims) -> ConvShape {
    ConvShape { n, h, w, cin, cout, kh: k, kw: k, stride, pad }
}

/// A layer with random quantized values: input bytes, weights, scales, bias, residuals.
struct Case {
    s: ConvShape,
    x: Vec<u8>,
    zero_point: u8,
    q: Vec<i8>,
    w: Int8Weights,
    weight_scales: Vec<f32>,
    input_scale: f32,
    bias: Vec<f32>,
    residual_u8: Vec<u8>,
    residual_i8: Vec<i8>,
}

impl Case {
    fn new(s: ConvShape, zero_point: u8, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let x = (0..s.input_len()).map(|_| rng.below(256) as u8).collect();
        let wf: Vec<f32> = (0..s.weight_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let (q, weight_scales) = quantize_weights(&wf, s.cout);
        let w = pack_weights(&q, s.kh, s.kw, s.cin, s.cout);
        let bias = (0..s.cout).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let residual_u8 = (0..s.output_len()).map(|_| rng.below(256) as u8).collect();
        let residual_i8 = (0..s.output_len()).map(|_| rng.below(256) as u8 as i8).collect();
        // About one output step per 255 / 8 of the sums' spread, so the outputs use the range.
        let input_scale = 4.0 / (s.patch() as f32 * 128.0).sqrt();
        Case { s, x, zero_point, q, w, weight_scales, input_scale, bias, residual_u8, residual_i8 }
    }

    fn arrays(&self) -> (Vec<f32>, Vec<f32>) {
        requant_arrays(&self.w, &self.weight_scales, self.input_scale, self.zero_point, &self.bias)
    }

    fn residual<'a>(&'a self, kind: usize) -> Int8Residual<'a> {
        match kind {
            0 => Int8Residual::None,
            1 => Int8Residual::U8 { x: &self.residual_u8, scale: 0.02 },
            _ => Int8Residual::I8 { x: &self.residual_i8, scale: 0.03 },
        }
    }

    /// The real pre-activation values in f64 from the values the integers stand for.
    fn real(&self, residual: usize) -> Vec<f64> {
        let s = &self.s;
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut out = vec![0.0f64; s.output_len()];
        for p in 0..s.rows() {
            let (img, oy, ox) = (p / (oh * ow), (p / ow) % oh, p % ow);
            for co in 0..s.cout {
                let mut v = f64::from(self.bias[co]);
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                        let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                        if iy < 0 || ix < 0 || iy as usize >= s.h || ix as usize >= s.w {
                            continue;
                        }
                        for ci in 0..s.cin {
                            let a = self.x[((img * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci];
                            let xr = (f64::from(a) - f64::from(self.zero_point)) * f64::from(self.input_scale);
                            let q = self.q[((ky * s.kw + kx) * s.cin + ci) * s.cout + co];
                            v += xr * f64::from(q) * f64::from(self.weight_scales[co]);
                        }
                    }
                }
                let at = p * s.cout + co;
                v += match residual {
                    0 => 0.0,
                    1 => f64::from(self.residual_u8[at]) * 0.02,
                    _ => f64::from(self.residual_i8[at]) * 0.03,
                };
                out[at] = v;
            }
        }
        out
    }
}

#[test]
fn quantized_weights_round_per_channel_and_pack_in_quads() {
    // [k = 2, cout = 4]; the last channel is all zero.
    let w = [0.3f32, -2.0, 0.25, 0.0, 1.0, -0.5, 0.0, 0.0];
    let (q, scales) = quantize_weights(&w, 4);
    assert_eq!(scales, vec![1.0 / 127.0, 2.0 / 127.0, 0.25 / 127.0, 1.0]);
    assert_eq!(q, vec![38, -127, 127, 0, 127, -32, 0, 0]);
    let packed = pack_weights(&[1, 2, 3, 4, 5, 6, -1, -2, -3, -4], 1, 1, 5, 2);
    // Channels 0..4 of output channel 0 in the first quad, lowest byte first; channel 4 alone.
    assert_eq!(packed.quads[0], u32::from_le_bytes([1, 3, 5, (-1i8) as u8]));
    assert_eq!(packed.quads[1], u32::from_le_bytes([2, 4, 6, (-2i8) as u8]));
    assert_eq!(packed.quads[2], u32::from_le_bytes([(-3i8) as u8, 0, 0, 0]));
    assert_eq!(packed.sums, vec![1 + 3 + 5 - 1 - 3, 2 + 4 + 6 - 2 - 4]);
    // The AVX2 pairs: channels (0, 1), (2, 3), then (4, padding) and (padding, padding).
    let pairs = pack_pairs(&[1, 2, 3, 4, 5, 6, -1, -2, -3, -4], 1, 1, 5, 2);
    let pair = |lo: i16, hi: i16| u32::from(lo as u16) | u32::from(hi as u16) << 16;
    assert_eq!(pairs, vec![pair(1, 3), pair(2, 4), pair(5, -1), pair(6, -2), pair(-3, 0), pair(-4, 0), 0, 0]);
}

#[test]
fn requantize_rounds_half_to_even_and_saturates() {
    assert_eq!(requantize(2.5, 1.0), 2);
    assert_eq!(requantize(3.5, 1.0), 4);
    assert_eq!(requantize(-7.0, 1.0), 0);
    assert_eq!(requantize(1e9, 1.0), 255);
    assert_eq!(requantize(f32::NAN, 1.0), 0);
    assert_eq!(requantize(f32::INFINITY, 1.0), 255);
    assert_eq!(requantize_i8(-2.5, 1.0), -2);
    assert_eq!(requantize_i8(-1e9, 1.0), -128);
    assert_eq!(requantize_i8(1e9, 1.0), 127);
    assert_eq!(requantize_i8(f32::NAN, 1.0), -128);
}

#[test]
fn portable_pass_computes_the_real_convolution_of_the_quantized_values() {
    for (i, &dims) in SHAPES.iter().enumerate() {
        for zero_point in [0u8, 131] {
            let case = Case::new(shape(dims), zero_point, i as u64);
            let (mult, offset) = case.arrays();
            for residual in 0..3 {
                let rq = Requant { mult: &mult, offset: &offset, residual: case.residual(residual) };
                let x = Int8Input { x: &case.x, zero_point };
                let real = case.real(residual);
                // Signed outputs of a step fine enough that few clamp: within half a step.
                let step = real.iter().fold(0.0f64, |m, v| m.max(v.abs())) as f32 / 100.0;
                let mut y = vec![0i8; case.s.output_len()];
                forward_int8_reference(&case.s, x, &case.w, &rq, Int8Output::I8 { y: &mut y, scale: step });
                for (a, b) in y.iter().zip(&real) {
                    let exact = (b / f64::from(step)).clamp(-128.0, 127.0);
                    assert!((f64::from(*a) - exact).abs() <= 0.5 + 1e-3, "{dims:?} zp {zero_point}: {a} vs {exact}");
                }
                let scale = 0.05;
                let mut q = vec![0u8; case.s.output_len()];
                forward_int8_reference(&case.s, x, &case.w, &rq, Int8Output::U8 { y: &mut q, scale });
                for (a, b) in q.iter().zip(&real) {
                    let exact = (b / f64::from(scale)).clamp(0.0, 255.0);
                    assert!((f64::from(*a) - exact).abs() <= 0.5 + 1e-3, "{dims:?}: {a} vs {exact}");
                }
            }
        }
    }
}

/// Runs `kernel` on every shape, zero point, residual and output kind against the portable pass.
fn matches_portable_bit_for_bit(kernel: Int8Kernel, seed: u64) {
    for (i, &dims) in SHAPES.iter().enumerate() {
        for zero_point in [0u8, 77] {
            let mut case = Case::new(shape(dims), zero_point, seed + i as u64);
            let s = case.s;
            case.w.pairs = pack_pairs(&case.q, s.kh, s.kw, s.cin, s.cout);
            let (mult, offset) = case.arrays();
            let x = Int8Input { x: &case.x, zero_point };
            for residual in 0..3 {
                let rq = Requant { mult: &mult, offset: &offset, residual: case.residual(residual) };
                let n = s.output_len();
                let (mut want, mut got) = (vec![0u8; n], vec![0u8; n]);
                forward_int8_reference(&s, x, &case.w, &rq, Int8Output::U8 { y: &mut want, scale: 0.05 });
                forward_int8_on(kernel, &s, x, &case.w, &rq, Int8Output::U8 { y: &mut got, scale: 0.05 });
                assert_eq!(want, got, "{kernel:?} {dims:?} zp {zero_point} residual {residual}");
                let (mut want, mut got) = (vec![0i8; n], vec![1i8; n]);
                forward_int8_reference(&s, x, &case.w, &rq, Int8Output::I8 { y: &mut want, scale: 0.02 });
                forward_int8_on(kernel, &s, x, &case.w, &rq, Int8Output::I8 { y: &mut got, scale: 0.02 });
                assert_eq!(want, got, "{kernel:?} {dims:?} zp {zero_point} residual {residual} signed");
            }
        }
    }
}

#[test]
fn vnni_pass_matches_the_portable_pass_bit_for_bit() {
    if !vnni_supported() {
        crate::skip::skip("no AVX512-VNNI: the AVX2 kernel and the portable pass are the int8 paths here");
        return;
    }
    matches_portable_bit_for_bit(Int8Kernel::Vnni, 100);
}

#[test]
fn avx2_pass_matches_the_portable_pass_bit_for_bit() {
    if crate::simd::isa() < crate::simd::Isa::Avx2 {
        crate::skip::skip("no AVX2: the portable pass is the only int8 path here");
        return;
    }
    matches_portable_bit_for_bit(Int8Kernel::Avx2, 200);
}

#[test]
fn avx2_products_do_not_saturate_at_the_extremes() {
    // Every activation 255 and every weight -127 or 127: `vpmaddubsw` would clamp each pair sum
    // (2 * 255 * 127 = 64770) to 16 bits; the widened pairs must not.
    if crate::simd::isa() < crate::simd::Isa::Avx2 {
        crate::skip::skip("no AVX2: the portable pass is the only int8 path here");
        return;
    }
    let s = ConvShape { n: 1, h: 3, w: 3, cin: 64, cout: 24, kh: 3, kw: 3, stride: 1, pad: 1 };
    let q: Vec<i8> = (0..s.weight_len()).map(|i| if (i / s.cout).is_multiple_of(3) { -127 } else { 127 }).collect();
    let w = Int8Weights { pairs: pack_pairs(&q, 3, 3, 64, 24), ..pack_weights(&q, 3, 3, 64, 24) };
    let x = vec![255u8; s.input_len()];
    let (mult, offset) = (vec![1e-7f32; s.cout], vec![0.0f32; s.cout]);
    let rq = Requant { mult: &mult, offset: &offset, residual: Int8Residual::None };
    let input = Int8Input { x: &x, zero_point: 0 };
    let (mut want, mut got) = (vec![0i8; s.output_len()], vec![0i8; s.output_len()]);
    forward_int8_reference(&s, input, &w, &rq, Int8Output::I8 { y: &mut want, scale: 0.01 });
    forward_int8_on(Int8Kernel::Avx2, &s, input, &w, &rq, Int8Output::I8 { y: &mut got, scale: 0.01 });
    assert_eq!(want, got);
    assert!(want.iter().any(|&v| v != 0 && v.abs() < 127), "the sums should land inside the output range");
}

/// Sums far past the output's range, of either sign, and NaN: every kernel clamps them as the
/// portable pass does (the VNNI kernel converts past i32's range to 0x8000_0000 first).
#[test]
fn epilogue_saturates_extremes_as_the_portable_pass_does() {
    let s = ConvShape { n: 1, h: 2, w: 3, cin: 8, cout: 20, kh: 1, kw: 1, stride: 1, pad: 0 };
    let q: Vec<i8> = (0..s.weight_len()).map(|i| (i % 7) as i8 - 3).collect();
    let w = Int8Weights { pairs: pack_pairs(&q, 1, 1, 8, 20), ..pack_weights(&q, 1, 1, 8, 20) };
    let x: Vec<u8> = (0..s.input_len()).map(|i| (i * 37 % 256) as u8).collect();
    let extremes = [1e30, -1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9, 1.0, -1.0, 0.0];
    let mult: Vec<f32> = (0..s.cout).map(|c| extremes[c % extremes.len()]).collect();
    let offset: Vec<f32> = (0..s.cout).map(|c| if c < 10 { 0.0 } else { 4e9 }).collect();
    let input = Int8Input { x: &x, zero_point: 5 };
    let residual_u8: Vec<u8> = (0..s.output_len()).map(|i| (i * 53 % 256) as u8).collect();
    let kernels = [Int8Kernel::Vnni, Int8Kernel::Avx2].into_iter().filter(|k| match k {
        Int8Kernel::Vnni => vnni_supported(),
        _ => crate::simd::isa() >= crate::simd::Isa::Avx2,
    });
    for kernel in kernels {
        for residual in [Int8Residual::None, Int8Residual::U8 { x: &residual_u8, scale: 1e38 }] {
            let rq = Requant { mult: &mult, offset: &offset, residual };
            let n = s.output_len();
            let (mut want, mut got) = (vec![0u8; n], vec![1u8; n]);
            forward_int8_reference(&s, input, &w, &rq, Int8Output::U8 { y: &mut want, scale: 0.5 });
            forward_int8_on(kernel, &s, input, &w, &rq, Int8Output::U8 { y: &mut got, scale: 0.5 });
            assert_eq!(want, got, "{kernel:?} unsigned");
            assert!(want.contains(&255) && want.contains(&0));
            let (mut want, mut got) = (vec![0i8; n], vec![1i8; n]);
            forward_int8_reference(&s, input, &w, &rq, Int8Output::I8 { y: &mut want, scale: 0.5 });
            forward_int8_on(kernel, &s, input, &w, &rq, Int8Output::I8 { y: &mut got, scale: 0.5 });
            assert_eq!(want, got, "{kernel:?} signed");
            assert!(want.contains(&127) && want.contains(&-128));
        }
    }
}
