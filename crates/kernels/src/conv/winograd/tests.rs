use super::super::ConvAlgorithm;
use super::product::{gradient_product, multiply, product};
use super::*;
use crate::conv::epilogue::Epilogue;
use crate::conv::forward::ForwardPass;
use crate::conv::input::ConvInput;
use crate::conv::input::InputTransform;
use crate::conv::params::{ConvParams, ConvWeight};
use crate::rng::Rng;
use crate::simd::avx512::ConvTileArgs;

/// The largest error of `y` against a double-precision sum of the convolution of `x` and `w`
/// (3x3, stride 1, padding 1), relative to the largest output.
fn relative_error(s: &ConvShape, x: &[f32], w: &[f32], y: &[f32]) -> f64 {
    let (cin, cout) = (s.cin, s.cout);
    let (mut err, mut top) = (0.0f64, 0.0f64);
    for (p, row) in y.chunks_exact(cout).enumerate() {
        let (img, oy, ox) = (p / (s.h * s.w), p / s.w % s.h, p % s.w);
        for (o, &got) in row.iter().enumerate() {
            let mut want = 0.0f64;
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                        continue;
                    }
                    let xi = ((img * s.h + iy as usize) * s.w + ix as usize) * cin;
                    for c in 0..cin {
                        want += f64::from(x[xi + c]) * f64::from(w[((ky * 3 + kx) * cin + c) * cout + o]);
                    }
                }
            }
            err = err.max((f64::from(got) - want).abs());
            top = top.max(want.abs());
        }
    }
    err / top
}

/// Normal inputs and He-initialised weights for a 14x14 layer of `cin -> cout` channels.
fn layer(n: usize, cin: usize, cout: usize) -> (ConvShape, Vec<f32>, Vec<f32>) {
    let s = ConvShape { n, h: 14, w: 14, cin, cout, kh: 3, kw: 3, stride: 1, pad: 1 };
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..s.input_len()).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.normal() as f32 * (2.0 / (9 * cin) as f32).sqrt()).collect();
    (s, x, w)
}

/// Winograd's forward pass of `x` with `w`, writing `y`, without an epilogue.
fn forward_plain(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32], bf16: bool) {
    let input = ConvInput { shape: *s, x: x.into(), transform: None };
    let pass = ForwardPass { input, weight: ConvWeight::new(w), accumulate: false };
    forward(&pass, y, Epilogue::None, bf16);
}

/// The error against a double-precision sum, relative to the output's largest value, for
/// layers of the sizes the networks have (up to 1152 terms per output). F(4x4, 3x3) adds
/// rounding in its transforms: measured 3e-6 to 1e-5 here, against 4e-7 to 1.2e-6 for the
/// direct kernels on the same data (about 50 to 90 f32 ulps of the largest output).
#[test]
fn error_stays_near_f32_rounding() {
    if simd::isa() < Isa::Avx512 {
        crate::skip::skip("no AVX-512 on this CPU");
        return;
    }
    for (cin, cout) in [(64, 64), (128, 128), (16, 32)] {
        let (s, x, w) = layer(2, cin, cout);
        let mut y = vec![f32::NAN; s.output_len()];
        forward_plain(&s, &x, &w, &mut y, false);
        let err = relative_error(&s, &x, &w, &y);
        eprintln!("{cin}->{cout}: error {err:e} of the largest output");
        assert!(err < 2e-5, "{cin}->{cout}: error {err:e}");
    }
}

/// With bf16 products the error is the rounding of the transformed input and filter to
/// bf16 (8 significant bits), grown by the output transform: measured 5.7e-2 to 7.4e-2 of
/// the largest output here, 21 to 31 times the direct bf16 kernels' on the same data (2.1e-3
/// to 2.6e-3; in RMS over the outputs, 2.3% of their RMS against 0.23%, ten times).
#[test]
fn bf16_products_error_against_the_direct_bf16_kernels() {
    if !super::bf16_supported() {
        crate::skip::skip("this CPU lacks AVX512_BF16");
        return;
    }
    // The square kernels' widths, then wider and non-square layers on the general bf16 kernel
    // (five images: enough tiles to run by runs of tiles).
    for (n, ci, co) in [(2, 16, 16), (2, 32, 32), (2, 64, 64), (5, 128, 128), (5, 256, 256), (5, 128, 96)] {
        let (s, x, w) = layer(n, ci, co);
        assert!(super::fits_bf16(&s), "{s:?}");
        let mut y = vec![f32::NAN; s.output_len()];
        forward_plain(&s, &x, &w, &mut y, true);
        let err = relative_error(&s, &x, &w, &y);
        let mut direct = vec![f32::NAN; s.output_len()];
        let mut ws = crate::Workspace::new();
        crate::conv::forward(
            &ConvParams::new(s, ConvAlgorithm::DirectBf16, ConvWeight::new(&w)),
            &x,
            Epilogue::None,
            &mut direct,
            &mut ws,
        );
        let direct_err = relative_error(&s, &x, &w, &direct);
        eprintln!(
            "{ci} -> {co} channels: bf16 Winograd error {err:e}, direct bf16 {direct_err:e} ({:.1}x)",
            err / direct_err
        );
        assert!(err < 0.1, "{ci} -> {co} channels: error {err:e} (direct bf16 {direct_err:e})");
    }
}

/// The products on kernels with the strides built in, forward and weight gradient (which
/// accumulates into existing values), for every tile count of their tables and several
/// blocks, equal the general micro-kernel's bit for bit (the same sums in the same order).
#[test]
fn square_products_equal_the_general_kernel() {
    if simd::isa() < Isa::Avx512 {
        crate::skip::skip("no AVX-512 on this CPU");
        return;
    }
    let mut rng = Rng::new(11);
    for c in [16, 32, 64] {
        for tiles in 1..=40 {
            let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
            let (v, u, g, du) = (r(tiles * POSITIONS * c), r(c * c), r(tiles * POSITIONS * c), r(c * c));
            let (row, at) = (POSITIONS * c, 5 * c);
            let forward = ConvTileArgs {
                a_pixel_stride: row,
                a_row_stride: 0,
                cin: c,
                kh: 1,
                kw: 1,
                w_row_stride: c,
                y_pixel_stride: row,
            };
            let gradient = ConvTileArgs {
                a_pixel_stride: 1,
                a_row_stride: row,
                cin: 1,
                kh: tiles,
                kw: 1,
                w_row_stride: row,
                y_pixel_stride: c,
            };
            // Position 5 of each tile: the forward products touch only its c floats a tile.
            let (mut want, mut got) = (vec![f32::NAN; tiles * row], vec![f32::NAN; tiles * row]);
            multiply(tiles, c, &forward, &v[at..], &u, &mut want[at..], false);
            product(tiles, c, c, &forward, &v[at..], &u, &mut got[at..]);
            let (mut want_du, mut got_du) = (du.clone(), du);
            multiply(c, c, &gradient, &v[at..], &g[at..], &mut want_du, true);
            gradient_product(tiles, c, c, &gradient, &v[at..], &g[at..], &mut got_du);
            for (pass, want, got) in [("forward", want, got), ("weight gradient", want_du, got_du)] {
                for (i, (w, x)) in want.iter().zip(&got).enumerate() {
                    assert!(w.to_bits() == x.to_bits(), "{pass}, {c} channels, {tiles} tiles, [{i}]: {x} vs {w}");
                }
            }
        }
    }
}

/// All three passes, element by element against the GEMM path, with the fused input
/// transform, the output statistics and accumulation into existing values: by runs of tiles
/// (shapes with many tasks and several runs per thread) and by channel blocks (blocks of one,
/// two and four vectors, several chunks of input channels, and layers too wide to hold their
/// transformed filter); weight gradients by runs of tiles and by positions.
#[test]
fn every_pass_matches_gemm_element_by_element() {
    if simd::isa() < Isa::Avx512 {
        crate::skip::skip("no AVX-512 on this CPU");
        return;
    }
    use crate::conv;
    let shape = |n, h, w, cin, cout| ConvShape { n, h, w, cin, cout, kh: 3, kw: 3, stride: 1, pad: 1 };
    for (s, by_channels) in [
        (shape(8, 8, 8, 32, 32), false),
        (shape(4, 16, 13, 16, 16), false),
        (shape(8, 15, 17, 16, 48), false),
        (shape(3, 18, 18, 64, 64), false),
        // 12 tiles: blocks of 16 channels.
        (shape(2, 9, 8, 64, 64), true),
        // 6 tiles: blocks of 32 channels, input channels in chunks of 48 (128 -> 64 here, the
        // other way round in the data gradient).
        (shape(1, 12, 8, 128, 64), true),
        // 4 tiles: blocks of 64 channels, chunks of 16.
        (shape(1, 5, 7, 64, 128), true),
        // 512 channels: no whole transformed filter, by channel blocks up to 128 tiles.
        (shape(1, 4, 4, 512, 512), true),
        (shape(65, 4, 4, 512, 144), true),
    ] {
        assert_eq!(runs_by_channels(&s), by_channels, "{s:?}");
        assert!(fits_weight_gradient(&s), "{s:?}");
        let mut rng = Rng::new(3);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let (w, g, x, scale, shift) = (r(s.weight_len()), r(s.output_len()), r(s.input_len()), r(s.cin), r(s.cin));
        let t = InputTransform { scale: &scale, shift: &shift };
        let mut ws = crate::Workspace::new();
        for pass in ["forward", "backward data", "backward weight"] {
            let len = match pass {
                "forward" => s.output_len(),
                "backward data" => s.input_len(),
                _ => s.weight_len(),
            };
            let base = r(len);
            let mut out = [base.clone(), base];
            let mut stats = [vec![0.0f64; 2 * s.cout], vec![0.0f64; 2 * s.cout]];
            for (k, algo) in [ConvAlgorithm::Im2colGemm, ConvAlgorithm::Winograd].into_iter().enumerate() {
                let (o, st) = (&mut out[k], &mut stats[k]);
                match pass {
                    "forward" => {
                        let p = ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(Some(t));
                        conv::forward(&p, &x, Epilogue::Stats(st), o, &mut ws)
                    }
                    "backward data" => {
                        conv::backward_data(&ConvParams::new(s, algo, ConvWeight::new(&w)), &g, o, true, &mut ws)
                    }
                    _ => {
                        let p = ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(Some(t));
                        conv::backward_weight(&p, &x, &g, o, true, &mut ws)
                    }
                }
            }
            let top = out[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (want, got)) in out[0].iter().zip(&out[1]).enumerate() {
                assert!((want - got).abs() <= 2e-5 * top, "{pass} {s:?} [{i}]: {got} vs {want} (largest {top})");
            }
            if pass == "forward" {
                // The fused statistics against those of the output written (the output
                // itself checked above), up to f32 summing: per channel, relative to the sum
                // of magnitudes.
                let co = s.cout;
                let mut want = vec![[0.0f64; 3]; co];
                for (i, &y) in out[1].iter().enumerate() {
                    let (y, c) = (f64::from(y), &mut want[i % co]);
                    *c = [c[0] + y, c[1] + y.abs(), c[2] + y * y];
                }
                for (c, [sum, magnitude, squares]) in want.into_iter().enumerate() {
                    let (got_sum, got_squares) = (stats[1][c], stats[1][co + c]);
                    assert!((got_sum - sum).abs() <= 1e-5 * (1.0 + magnitude), "{s:?} sum [{c}]: {got_sum} vs {sum}");
                    assert!(
                        (got_squares - squares).abs() <= 1e-5 * (1.0 + squares),
                        "{s:?} sum of squares [{c}]: {got_squares} vs {squares}"
                    );
                }
            }
        }
    }
}

/// The weight gradient by positions in chunks of a few tiles (several chunks, the last one
/// short) against the one by runs of tiles, with the fused input transform; without tiles, zero.
#[test]
fn weight_gradient_by_position_chunks_matches_runs_of_tiles() {
    if simd::isa() < Isa::Avx512 {
        crate::skip::skip("no AVX-512 on this CPU");
        return;
    }
    use super::weight_gradient::{by_positions, by_tiles};
    use crate::simd::winograd::filter_gradient;
    // 27 tiles: chunks of 7, 7, 7 and 6.
    let s = ConvShape { n: 3, h: 10, w: 9, cin: 32, cout: 48, kh: 3, kw: 3, stride: 1, pad: 1 };
    assert_eq!(tile_count(&s), 27);
    let mut rng = Rng::new(11);
    let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (x, dy, scale, shift, base) = (r(s.input_len()), r(s.output_len()), r(s.cin), r(s.cin), r(s.weight_len()));
    let input = ConvInput {
        shape: s,
        x: x.as_slice().into(),
        transform: Some(InputTransform { scale: &scale, shift: &shift }),
    };
    let mut want = base.clone();
    let mut partials = vec![0.0; 2 * POSITIONS * s.cin * s.cout];
    by_tiles(&input, &dy, &mut want, true, 2, &mut partials);
    // A batch without tiles: a zero gradient.
    let empty = ConvShape { n: 0, ..s };
    let none = ConvInput { shape: empty, x: [].as_slice().into(), transform: None };
    let mut du = vec![f32::NAN; POSITIONS * s.cin * s.cout];
    by_positions(&none, &[], &mut du, 7, &mut Vec::new());
    assert!(du.iter().all(|&v| v == 0.0));
    for chunk in [7, 27, 100] {
        let (mut du, mut buf) = (vec![f32::NAN; POSITIONS * s.cin * s.cout], Vec::new());
        by_positions(&input, &dy, &mut du, chunk, &mut buf);
        let mut got = base.clone();
        // SAFETY: AVX-512 (checked), cout a multiple of 16, `du` [36, cin, cout], `got` [9, cin, cout].
        unsafe { filter_gradient(du.as_ptr(), s.cin, s.cout, got.as_mut_ptr(), true) };
        let top = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!((w - g).abs() <= 1e-5 * top, "chunks of {chunk} [{i}]: {g} vs {w} (largest {top})");
        }
    }
}
