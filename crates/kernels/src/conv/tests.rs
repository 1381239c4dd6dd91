use super::*;
use crate::activations::Activations;
use crate::config::{CpuFeatures, KernelConfig};
use crate::conv::algorithm::{gathers_windows, ConvPass};
use crate::conv::bf16::bf16_bits;
use crate::conv::direct::{transform_run_pixels, DirectPlan};
use crate::conv::input::bn_relu_copy_on;
use crate::conv::params::{ConvParams, ConvWeight};
use crate::rng::Rng;
use crate::simd::{self, Isa};
use crate::Workspace;

fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// Direct definition of the convolution, accumulated in f64.
fn reference_forward(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = vec![0.0; s.output_len()];
    for n in 0..s.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..s.cout {
                    let mut acc = 0.0f64;
                    for ky in 0..s.kh {
                        for kx in 0..s.kw {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            for ci in 0..s.cin {
                                let xv = x[((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci];
                                let wv = w[((ky * s.kw + kx) * s.cin + ci) * s.cout + co];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    y[((n * oh + oy) * ow + ox) * s.cout + co] = acc as f32;
                }
            }
        }
    }
    y
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn algorithms() -> Vec<ConvAlgorithm> {
    let mut v = vec![ConvAlgorithm::Im2colGemm];
    if simd::isa() >= Isa::Avx512 {
        v.push(ConvAlgorithm::Direct);
        v.push(ConvAlgorithm::Winograd);
    } else {
        crate::skip::skip("the Direct and Winograd paths: no AVX-512 on this CPU (only the GEMM path is tested)");
    }
    v
}

fn shapes() -> Vec<ConvShape> {
    let c = |n, h, w, cin, cout, k, stride, pad| ConvShape { n, h, w, cin, cout, kh: k, kw: k, stride, pad };
    vec![
        c(2, 8, 8, 3, 16, 3, 1, 1),
        c(2, 8, 8, 4, 8, 3, 2, 1),
        c(2, 7, 7, 4, 8, 3, 2, 1),
        c(1, 9, 9, 3, 4, 7, 2, 3),
        c(2, 6, 6, 8, 16, 1, 1, 0),
        c(2, 6, 6, 8, 16, 1, 2, 0),
        c(2, 5, 5, 3, 2, 3, 1, 0),
        c(1, 4, 4, 2, 3, 3, 1, 2),
        c(3, 40, 40, 2, 3, 3, 1, 1),
        c(2, 9, 11, 37, 70, 3, 1, 1),
        c(2, 10, 10, 20, 33, 3, 2, 1),
        c(1, 7, 7, 130, 20, 1, 1, 0),
        c(2, 6, 7, 9, 24, 3, 1, 1),
        c(2, 5, 6, 5, 40, 3, 1, 1),
        // Strided backward data in blocks of columns: of rows that split an image (f32), of
        // three images and then two (bf16).
        c(5, 32, 32, 256, 16, 3, 2, 1),
        // Winograd's shapes: whole tiles, cut tiles, one tile wider than the image, and
        // paddings 0 and 2 (whose backward-data passes have paddings 2 and 0).
        c(2, 8, 8, 16, 16, 3, 1, 1),
        c(2, 9, 11, 32, 48, 3, 1, 1),
        c(3, 3, 2, 16, 32, 3, 1, 1),
        c(1, 7, 9, 32, 16, 3, 1, 0),
        c(2, 6, 5, 16, 32, 3, 1, 2),
        // Many tiles: several tasks and several runs of tiles per thread.
        c(8, 16, 16, 16, 32, 3, 1, 1),
        // Weights beyond the cache budget: the channel-group order (3x3 and 1x1 strided).
        c(2, 5, 5, 128, 130, 3, 1, 1),
        c(1, 6, 6, 700, 200, 1, 2, 0),
        // The direct forward pass in runs of output channels (weights past its L2 budget):
        // one image of 7x7 as ResNet-50's last stage at batch 1 (a last run of 40
        // channels; not a Winograd shape, whose rounding on 1152-term sums exceeds the
        // per-element tolerance here), and a 1x1 layer whose band is read as one long row.
        c(1, 7, 7, 128, 136, 3, 1, 1),
        c(2, 5, 7, 512, 300, 1, 1, 0),
        // A strided 3x3 layer whose direct forward pass gathers its windows first (weights
        // well past the budget), and a strided 1x1 layer read in place, row by row.
        c(1, 9, 9, 256, 144, 3, 2, 1),
        c(2, 7, 7, 64, 40, 1, 2, 0),
        // A 1x1 layer whose long rows are read in two runs of input channels (560 + 540).
        c(8, 8, 8, 1100, 32, 1, 1, 0),
        // Both: two runs of input channels into weight panels of 96 and 64 channels.
        c(2, 8, 8, 1100, 160, 1, 1, 0),
    ]
}

#[test]
fn forward_matches_direct_definition() {
    for s in shapes() {
        let mut rng = Rng::new(1);
        let x = random(s.input_len(), &mut rng);
        let w = random(s.weight_len(), &mut rng);
        for algo in algorithms() {
            let mut y = vec![f32::NAN; s.output_len()];
            forward(&ConvParams::new(s, algo, ConvWeight::new(&w)), &x, Epilogue::None, &mut y, &mut Workspace::new());
            assert_close(&y, &reference_forward(&s, &x, &w), &format!("{algo:?} {s:?}"));
        }
    }
}

/// A versioned weight's panels are kept from its second pass on and reused while the
/// version stays; a new version (new values) is packed afresh and the old panels dropped;
/// a backward-data pass in between (other weights, unversioned) does not disturb them.
#[test]
fn versioned_weights_reuse_their_panels_until_the_version_changes() {
    if simd::isa() < Isa::Avx512 {
        crate::skip::skip("the direct pass needs AVX-512");
        return;
    }
    let c = |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    // Runs of channels in panels: 3x3 (a last run of 40 channels), strided 3x3 read as
    // gathered windows, and 1x1 read as long rows.
    for s in [c(1, 7, 128, 136, 3, 1), c(1, 9, 256, 144, 3, 2), c(2, 5, 512, 300, 1, 1)] {
        let mut rng = Rng::new(3);
        let x = random(s.input_len(), &mut rng);
        let weights = [random(s.weight_len(), &mut rng), random(s.weight_len(), &mut rng)];
        let mut ws = Workspace::new();
        let mut y = vec![0.0; s.output_len()];
        // (version, weight, version of the panels kept after the pass)
        let passes = [(7, 0, None), (7, 0, Some(7)), (7, 0, Some(7)), (8, 1, None), (8, 1, Some(8))];
        for (version, i, kept) in passes {
            y.fill(f32::NAN);
            forward(
                &ConvParams::new(s, ConvAlgorithm::Direct, ConvWeight::versioned(&weights[i], version)),
                &x,
                Epilogue::None,
                &mut y,
                &mut ws,
            );
            assert_close(&y, &reference_forward(&s, &x, &weights[i]), &format!("version {version} {s:?}"));
            assert_eq!(ws.panels.key.map(|k| k.0), kept, "version {version} {s:?}");
        }
        // An unversioned pass of other weights leaves no panels behind to be mistaken.
        forward(
            &ConvParams::new(s, ConvAlgorithm::Direct, ConvWeight::new(&weights[0])),
            &x,
            Epilogue::None,
            &mut y,
            &mut ws,
        );
        assert_close(&y, &reference_forward(&s, &x, &weights[0]), &format!("unversioned {s:?}"));
        assert_eq!(ws.panels.key, None);
    }
}

/// The backward passes are the adjoints of the forward map: <conv(x), g> = <x, dx(g)> and
/// likewise for the weight, which checks every path without finite differences.
#[test]
fn backward_passes_are_adjoints_of_forward() {
    for (s, algo) in shapes().into_iter().flat_map(|s| algorithms().into_iter().map(move |a| (s, a))) {
        let mut rng = Rng::new(2);
        let x = random(s.input_len(), &mut rng);
        let w = random(s.weight_len(), &mut rng);
        let g = random(s.output_len(), &mut rng);
        let y = reference_forward(&s, &x, &w);
        let lhs = dot(&y, &g);
        let mut ws = Workspace::new();
        let mut dx = vec![f32::NAN; s.input_len()];
        backward_data(&ConvParams::new(s, algo, ConvWeight::new(&w)), &g, &mut dx, false, &mut ws);
        let mut dw = vec![f32::NAN; s.weight_len()];
        backward_weight(&ConvParams::new(s, algo, ConvWeight::new(&[])), &x, &g, &mut dw, false, &mut ws);
        let tol = 1e-4 * (1.0 + lhs.abs());
        assert!((dot(&x, &dx) - lhs).abs() < tol, "data adjoint {algo:?} {s:?}");
        assert!((dot(&w, &dw) - lhs).abs() < tol, "weight adjoint {algo:?} {s:?}");
        // Accumulation adds on top of what is there.
        let mut dx2 = dx.clone();
        backward_data(&ConvParams::new(s, algo, ConvWeight::new(&w)), &g, &mut dx2, true, &mut ws);
        let doubled: Vec<f32> = dx.iter().map(|v| 2.0 * v).collect();
        assert_close(&dx2, &doubled, "accumulated dx");
        let mut dw2 = dw.clone();
        backward_weight(&ConvParams::new(s, algo, ConvWeight::new(&[])), &x, &g, &mut dw2, true, &mut ws);
        let doubled: Vec<f32> = dw.iter().map(|v| 2.0 * v).collect();
        assert_close(&dw2, &doubled, "accumulated dw");
        // Per-element check of dx against the reference (small shapes): dx = d<y,g>/dx.
        if s.input_len() > 600 {
            continue;
        }
        let mut want_dx = vec![0.0f32; s.input_len()];
        for (i, v) in want_dx.iter_mut().enumerate() {
            let mut e = vec![0.0; s.input_len()];
            e[i] = 1.0;
            *v = dot(&reference_forward(&s, &e, &w), &g) as f32;
        }
        assert_close(&dx, &want_dx, &format!("dx {s:?}"));
        let mut want_dw = vec![0.0f32; s.weight_len()];
        for (i, v) in want_dw.iter_mut().enumerate() {
            let mut e = vec![0.0; s.weight_len()];
            e[i] = 1.0;
            *v = dot(&reference_forward(&s, &x, &e), &g) as f32;
        }
        assert_close(&dw, &want_dw, &format!("dw {s:?}"));
    }
}

/// The output transform gives exactly what a batch-norm pass over the output gives (the same
/// arithmetic), for every algorithm and shape: with and without residual and ReLU, an input
/// transform, and repeated versioned calls (the second keeps weight panels).
#[test]
fn output_transform_equals_a_batch_norm_pass_after() {
    let mut algos = algorithms();
    if bf16_supported() {
        algos.extend([ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16]);
    } else {
        crate::skip::skip("the bf16 paths: this CPU lacks AVX512_BF16");
    }
    // And a 1x1 layer whose long row is transformed in several runs of pixels, the last one cut.
    let runs = ConvShape { n: 1, h: 16, w: 200, cin: 16, cout: 272, kh: 1, kw: 1, stride: 1, pad: 0 };
    let band_px = DirectPlan::new(&runs, 64, 4).band * runs.w;
    let px_run = transform_run_pixels(runs.cout);
    assert!(band_px > px_run && !band_px.is_multiple_of(px_run), "{band_px} pixels a band, runs of {px_run}");
    let shapes = shapes().into_iter().chain([runs]);
    for (s, algo) in shapes.flat_map(|s| algos.clone().into_iter().map(move |a| (s, a))) {
        let mut rng = Rng::new(9);
        let x = random(s.input_len(), &mut rng);
        let w = random(s.weight_len(), &mut rng);
        let residual = random(s.output_len(), &mut rng);
        let (scale, shift) = (random(s.cout, &mut rng), random(s.cout, &mut rng));
        let (t_scale, t_shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
        let mut ws = Workspace::new();
        for (round, (res, relu)) in
            [(None, true), (Some(&residual[..]), true), (Some(&residual[..]), false)].into_iter().enumerate()
        {
            let t = (round == 1).then_some(InputTransform { scale: &t_scale, shift: &t_shift });
            let mut want = vec![f32::NAN; s.output_len()];
            forward(
                &ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(t),
                &x,
                Epilogue::None,
                &mut want,
                &mut ws,
            );
            let raw = want.clone();
            crate::batch_norm::scale_shift_act(&raw, s.cout, &scale, &shift, res, relu, &mut want);
            let out = OutputTransform { scale: &scale, shift: &shift, residual: res, relu };
            for call in 0..3 {
                let mut y = vec![f32::NAN; s.output_len()];
                forward(
                    &ConvParams::new(s, algo, ConvWeight::versioned(&w, 7)).with_input_transform(t),
                    &x,
                    Epilogue::Transform(out),
                    &mut y,
                    &mut ws,
                );
                let what = format!("{algo:?} {s:?} round {round} call {call}");
                assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
            }
        }
    }
}

/// The residual taken from the output buffer itself gives, bit for bit, what the same
/// residual in a buffer of its own gives, on every shape the direct pass runs so: 1x1
/// layers (one task and many; several channel runs, with and without kept panels), strided
/// layers read from a copied strip and through gathered windows, channels in part vectors.
#[test]
fn residual_in_place_equals_a_separate_residual() {
    let c = |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    let runs = [c(1, 14, 64, 256, 1, 1), c(2, 7, 512, 1024, 1, 1), c(3, 9, 24, 40, 1, 1), c(1, 14, 128, 256, 3, 2)];
    let strided = [c(2, 9, 16, 32, 3, 2), c(1, 12, 8, 20, 1, 2)];
    // Not in place: the 3-wide stride-1 kernel, a long row in several runs of input
    // channels (the first runs' sums would overwrite the residual), other algorithms.
    let others = [
        (ConvAlgorithm::Direct, c(1, 8, 16, 32, 3, 1)),
        (ConvAlgorithm::Direct, c(1, 56, 2048, 64, 1, 1)),
        (ConvAlgorithm::Winograd, c(1, 8, 16, 32, 3, 1)),
        (ConvAlgorithm::Im2colGemm, c(1, 14, 64, 256, 1, 1)),
    ];
    for (algo, s) in others {
        assert!(!adds_residual_in_place(algo, &s), "{algo:?} {s:?}");
    }
    if simd::isa() < Isa::Avx512 {
        assert!(runs.iter().chain(&strided).all(|s| !adds_residual_in_place(ConvAlgorithm::Direct, s)));
        crate::skip::skip("no AVX-512, so no residual in place");
        return;
    }
    assert!(gathers_windows(&runs[3]), "a layer of gathered windows");
    for s in runs.into_iter().chain(strided) {
        assert!(adds_residual_in_place(ConvAlgorithm::Direct, &s), "{s:?}");
        let mut rng = Rng::new(11);
        let x = random(s.input_len(), &mut rng);
        let w = random(s.weight_len(), &mut rng);
        let residual = random(s.output_len(), &mut rng);
        let (scale, shift) = (random(s.cout, &mut rng), random(s.cout, &mut rng));
        let mut ws = Workspace::new();
        for relu in [true, false] {
            let with = OutputTransform { scale: &scale, shift: &shift, residual: Some(&residual), relu };
            let mut want = vec![f32::NAN; s.output_len()];
            forward(
                &ConvParams::new(s, ConvAlgorithm::Direct, ConvWeight::new(&w)),
                &x,
                Epilogue::Transform(with),
                &mut want,
                &mut ws,
            );
            let without = OutputTransform { residual: None, ..with };
            // Three calls of one weight version: the second makes panels, the third uses them.
            for call in 0..3 {
                let mut y = residual.clone();
                let algo = ConvAlgorithm::Direct;
                forward(
                    &ConvParams::new(s, algo, ConvWeight::versioned(&w, 3)),
                    &x,
                    Epilogue::TransformOntoResidual(without),
                    &mut y,
                    &mut ws,
                );
                let what = format!("{s:?} relu {relu} call {call}");
                assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
            }
        }
    }
}

/// The fused input transform equals transforming first, the epilogue statistics equal the
/// sums of the output, and the weight gradient sees the transformed input too.
#[test]
fn input_transform_and_output_statistics() {
    for (s, algo) in shapes().into_iter().flat_map(|s| algorithms().into_iter().map(move |a| (s, a))) {
        let mut rng = Rng::new(4);
        let x = random(s.input_len(), &mut rng);
        let w = random(s.weight_len(), &mut rng);
        let g = random(s.output_len(), &mut rng);
        let scale = random(s.cin, &mut rng);
        let shift = random(s.cin, &mut rng);
        let tx: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| (v * scale[i % s.cin] + shift[i % s.cin]).max(0.0)).collect();
        let t = InputTransform { scale: &scale, shift: &shift };
        let mut ws = Workspace::new();
        let mut y = vec![f32::NAN; s.output_len()];
        let mut stats = vec![f64::NAN; 2 * s.cout];
        forward(
            &ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(Some(t)),
            &x,
            Epilogue::Stats(&mut stats),
            &mut y,
            &mut ws,
        );
        assert_close(&y, &reference_forward(&s, &tx, &w), &format!("transformed {algo:?} {s:?}"));
        for ch in 0..s.cout {
            let col = y.iter().skip(ch).step_by(s.cout);
            let (sum, sq) =
                col.fold((0.0f64, 0.0f64), |(a, b), &v| (a + f64::from(v), b + f64::from(v) * f64::from(v)));
            assert!((stats[ch] - sum).abs() <= 1e-3 * (1.0 + sum.abs()), "sum {algo:?} {s:?}");
            assert!((stats[s.cout + ch] - sq).abs() <= 1e-3 * (1.0 + sq), "sum of squares {algo:?} {s:?}");
        }
        let (mut dw, mut want) = (vec![0.0; s.weight_len()], vec![0.0; s.weight_len()]);
        backward_weight(
            &ConvParams::new(s, algo, ConvWeight::new(&[])).with_input_transform(Some(t)),
            &x,
            &g,
            &mut dw,
            false,
            &mut ws,
        );
        backward_weight(
            &ConvParams::new(s, ConvAlgorithm::Im2colGemm, ConvWeight::new(&[])),
            &tx,
            &g,
            &mut want,
            false,
            &mut ws,
        );
        assert_close(&dw, &want, &format!("transformed dw {algo:?} {s:?}"));
    }
}

#[test]
fn every_isa_version_of_the_transform_agrees() {
    let mut rng = Rng::new(9);
    let (x, a, b) = (random(7 * 13, &mut rng), random(13, &mut rng), random(13, &mut rng));
    let mut want = vec![0.0; x.len()];
    bn_relu_copy_on(Isa::Scalar, &x, &a, &b, &mut want);
    for isa in simd::available() {
        let mut got = vec![0.0; x.len()];
        bn_relu_copy_on(isa, &x, &a, &b, &mut got);
        assert_eq!(got, want, "{isa:?}");
    }
}

/// bf16 products (8-bit mantissas) with f32 sums: within about 1% of the largest output
/// (Winograd's bf16 products, whose transforms grow the rounding, within 15%; the error is
/// measured against the direct kernels' in the Winograd module).
#[test]
fn bf16_kernels_match_f32_within_bf16_rounding() {
    if !bf16_supported() {
        crate::skip::skip("this CPU lacks AVX512_BF16");
        return;
    }
    let close = |got: &[f32], want: &[f32], what: &str| {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let bound = if what.starts_with("WinogradBf16") { 0.15 } else { 0.02 };
        assert!(err <= bound * scale, "{what}: error {err} of {scale}");
    };
    let mut algos = vec![ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16];
    if amx_supported() {
        algos.push(ConvAlgorithm::AmxBf16);
    } else {
        crate::skip::skip("the AMX part: this CPU (or kernel) has no AMX bf16 tiles");
    }
    // Besides the general shapes, ones the AMX tiles take: 8 and 16 pairs a step, one and
    // two output blocks, partial pixel blocks, stride 2, 1x1.
    let c = |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    let tiled = [
        c(2, 20, 16, 16, 3, 1),
        c(2, 9, 32, 64, 3, 2),
        c(2, 7, 64, 32, 1, 1),
        c(1, 9, 48, 48, 3, 1),
        c(2, 6, 32, 16, 3, 1),
        c(3, 34, 16, 32, 3, 1),
        c(2, 8, 64, 48, 1, 1),
        // Pixel-pair weight-gradient blocks: 3x3 with one and two channel vectors at once,
        // 1x1 with one to four.
        c(2, 8, 48, 32, 3, 1),
        c(2, 6, 48, 16, 1, 1),
        c(1, 4, 32, 64, 1, 1),
        // Winograd's bf16 products (square 3x3 layers of 16, 32 and 64 channels): tile
        // counts beyond one block of each product kernel, partial tiles at the edge.
        c(3, 13, 16, 16, 3, 1),
        c(2, 10, 32, 32, 3, 1),
        c(1, 11, 64, 64, 3, 1),
        // ... and on the general bf16 kernel: wider, not square (backward-data swaps the
        // channels), enough tiles to run by runs of them.
        c(5, 14, 128, 96, 3, 1),
        c(2, 10, 16, 48, 1, 1),
        // The gathered weight gradient (strided, odd widths, 64k weights or more): over two
        // blocks of pixels, the second starting inside an image; an odd width.
        c(3, 60, 128, 64, 3, 2),
        c(1, 9, 256, 256, 1, 1),
        // ... and images too small for the pixel-pair path's bands (4x4, 3x3 and 1x1).
        c(8, 4, 256, 256, 3, 1),
        c(16, 4, 256, 512, 1, 1),
    ];
    for algo in algos {
        for s in shapes().into_iter().chain(tiled) {
            let mut rng = Rng::new(6);
            let (x, w, g) =
                (random(s.input_len(), &mut rng), random(s.weight_len(), &mut rng), random(s.output_len(), &mut rng));
            let (scale, shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
            let mut ws = Workspace::new();
            for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                let (mut a, mut b) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
                let (mut sa, mut sb) = (vec![0.0; 2 * s.cout], vec![0.0; 2 * s.cout]);
                forward(
                    &ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(t),
                    &x,
                    Epilogue::Stats(&mut sa),
                    &mut a,
                    &mut ws,
                );
                forward(
                    &ConvParams::new(s, ConvAlgorithm::Im2colGemm, ConvWeight::new(&w)).with_input_transform(t),
                    &x,
                    Epilogue::Stats(&mut sb),
                    &mut b,
                    &mut ws,
                );
                close(&a, &b, &format!("{algo:?} forward {s:?}"));
                close(
                    &sa.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &sb.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &format!("{algo:?} statistics {s:?}"),
                );
            }
            // Written, then added onto what is there.
            for accumulate in [false, true] {
                let (mut a, mut b) = (vec![0.5; s.input_len()], vec![0.5; s.input_len()]);
                let params = |algo| ConvParams::new(s, algo, ConvWeight::new(&w));
                backward_data(&params(algo), &g, &mut a, accumulate, &mut ws);
                backward_data(&params(ConvAlgorithm::Im2colGemm), &g, &mut b, accumulate, &mut ws);
                close(&a, &b, &format!("{algo:?} backward data {s:?} accumulate {accumulate}"));
            }
            for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                let (mut a, mut b) = (vec![0.5; s.weight_len()], vec![0.5; s.weight_len()]);
                backward_weight(
                    &ConvParams::new(s, algo, ConvWeight::new(&[])).with_input_transform(t),
                    &x,
                    &g,
                    &mut a,
                    true,
                    &mut ws,
                );
                backward_weight(
                    &ConvParams::new(s, ConvAlgorithm::Im2colGemm, ConvWeight::new(&[])).with_input_transform(t),
                    &x,
                    &g,
                    &mut b,
                    true,
                    &mut ws,
                );
                close(&a, &b, &format!("{algo:?} backward weight {s:?}"));
            }
        }
    }
}

/// A bf16-stored input gives, in the forward pass and the weight gradient of every algorithm,
/// exactly what its values widened to f32 give (read as strips, or from a widened copy), with
/// and without the input transform.
#[test]
fn a_bf16_input_gives_the_passes_of_its_f32_values() {
    let mut algos = algorithms();
    if bf16_supported() {
        algos.extend([ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16]);
    } else {
        crate::skip::skip("the bf16 algorithms: this CPU lacks AVX512_BF16");
    }
    // Strided layers whose bf16 weight gradient gathers windows (weights of 64K values or more).
    let gathered = [
        ConvShape { n: 2, h: 8, w: 8, cin: 64, cout: 128, kh: 3, kw: 3, stride: 2, pad: 1 },
        ConvShape { n: 2, h: 8, w: 8, cin: 256, cout: 512, kh: 1, kw: 1, stride: 2, pad: 0 },
    ];
    for s in &gathered {
        assert!(crate::conv::direct::gathered_weight_gradient_fits(s), "{s:?}");
    }
    for algo in algos {
        for s in shapes().into_iter().chain(gathered) {
            let mut rng = Rng::new(9);
            let (x, w, g) =
                (random(s.input_len(), &mut rng), random(s.weight_len(), &mut rng), random(s.output_len(), &mut rng));
            let x16: Vec<u16> = x.iter().map(|&v| bf16_bits(v) as u16).collect();
            let wide: Vec<f32> = x16.iter().map(|&b| f32::from_bits(u32::from(b) << 16)).collect();
            let (scale, shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
            let mut ws = Workspace::new();
            for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                let p = ConvParams::new(s, algo, ConvWeight::new(&w)).with_input_transform(t);
                let (mut y16, mut y) = (vec![0.0; s.output_len()], vec![1.0; s.output_len()]);
                forward(&p, Activations::Bf16(&x16), Epilogue::None, &mut y16, &mut ws);
                forward(&p, &wide[..], Epilogue::None, &mut y, &mut ws);
                assert_eq!(y16, y, "{algo:?} forward of {s:?}, transform {}", t.is_some());
                let (mut dw16, mut dw) = (vec![0.0; s.weight_len()], vec![1.0; s.weight_len()]);
                backward_weight(&p, Activations::Bf16(&x16), &g, &mut dw16, false, &mut ws);
                backward_weight(&p, &wide[..], &g, &mut dw, false, &mut ws);
                assert_eq!(dw16, dw, "{algo:?} weight gradient of {s:?}, transform {}", t.is_some());
            }
        }
    }
}

/// Where the bf16 passes take a bf16 output gradient at no cost (`backward_data_reads_bf16`,
/// `backward_weight_reads_bf16`), it gives exactly what the `f32` gradient it was rounded from
/// gives: 1x1 layers on the pixel-pair and gathered weight gradients, strided and small ones,
/// an odd count of output pixels, 3x3 on the direct kernels. Winograd reads a bf16 gradient as
/// it is, or a widened copy, and agrees with the rounded gradient's passes.
#[test]
fn a_bf16_output_gradient_gives_the_passes_of_the_f32_one_it_rounds() {
    if !bf16_supported() {
        crate::skip::skip("this CPU lacks AVX512_BF16");
        return;
    }
    let c = |n, hw, cin, cout, k, stride| ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride, pad: k / 2 };
    let (direct, winograd) = (ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16);
    let cases = [
        (c(2, 12, 32, 64, 1, 1), direct, true),
        (c(2, 8, 256, 512, 1, 2), direct, true),
        (c(2, 8, 64, 128, 3, 2), direct, true),
        (c(1, 9, 256, 256, 1, 1), direct, true),
        (c(2, 8, 32, 32, 3, 1), direct, true),
        // Winograd transforms the gradient before its products round it.
        (c(2, 8, 32, 32, 3, 1), winograd, false),
    ];
    for (s, algo, free) in &cases {
        let (s, algo, free) = (s, *algo, *free);
        let bf16_read = backward_data_reads_bf16(algo, s) && backward_weight_reads_bf16(algo, s);
        assert_eq!(bf16_read, free, "{algo:?} on {s:?}");
        let mut rng = Rng::new(11);
        let (x, w, g) =
            (random(s.input_len(), &mut rng), random(s.weight_len(), &mut rng), random(s.output_len(), &mut rng));
        let g16: Vec<u16> = g.iter().map(|&v| bf16_bits(v) as u16).collect();
        let rounded: Vec<f32> = g16.iter().map(|&b| f32::from_bits(u32::from(b) << 16)).collect();
        // A free pass rounds the f32 gradient itself; a widened copy is the rounded one's.
        let want_from = if free { &g } else { &rounded };
        let p = ConvParams::new(*s, algo, ConvWeight::new(&w));
        let mut ws = Workspace::new();
        let (mut dx16, mut dx) = (vec![0.5; s.input_len()], vec![0.5; s.input_len()]);
        backward_data(&p, Activations::Bf16(&g16), &mut dx16, true, &mut ws);
        backward_data(&p, &want_from[..], &mut dx, true, &mut ws);
        assert_eq!(dx16, dx, "{algo:?} input gradient of {s:?}");
        let (mut dw16, mut dw) = (vec![0.5; s.weight_len()], vec![0.5; s.weight_len()]);
        backward_weight(&p, &x[..], Activations::Bf16(&g16), &mut dw16, true, &mut ws);
        backward_weight(&p, &x[..], &want_from[..], &mut dw, true, &mut ws);
        assert_eq!(dw16, dw, "{algo:?} weight gradient of {s:?}");
    }
}

/// An output stored in bf16 is the f32 output rounded to nearest even, bit for bit, and its
/// statistics are those of the stored values, on every algorithm and path: rows rounded as a
/// direct task writes them (whole lines, and runs of a long row), Winograd's tiles, and the pass
/// after the others (the GEMM, and direct tasks in runs of channels).
#[test]
fn an_output_stored_in_bf16_is_the_rounded_output_with_its_statistics() {
    let mut algos = algorithms();
    if bf16_supported() {
        algos.extend([ConvAlgorithm::DirectBf16, ConvAlgorithm::WinogradBf16]);
    } else {
        crate::skip::skip("the bf16 algorithms: this CPU lacks AVX512_BF16");
    }
    // A 1x1 layer's long rows in runs of pixels, the last one cut; a weight too large for one
    // task's channels.
    let runs = ConvShape { n: 1, h: 16, w: 200, cin: 16, cout: 272, kh: 1, kw: 1, stride: 1, pad: 0 };
    let (band_px, px_run) = (DirectPlan::new(&runs, 64, 2).band * runs.w, transform_run_pixels(runs.cout));
    assert!(band_px > px_run && !band_px.is_multiple_of(px_run), "{band_px} pixels a band, runs of {px_run}");
    let large = ConvShape { n: 1, h: 4, w: 4, cin: 512, cout: 512, kh: 3, kw: 3, stride: 1, pad: 1 };
    assert!(DirectPlan::new(&large, 64, 2).chunks > 1);
    let mut all = shapes();
    all.extend([runs, large]);
    for algo in algos {
        for s in &all {
            let mut rng = Rng::new(5);
            let (x, w) = (random(s.input_len(), &mut rng), random(s.weight_len(), &mut rng));
            let (scale, shift) = (random(s.cin, &mut rng), random(s.cin, &mut rng));
            let mut ws = Workspace::new();
            for t in [None, Some(InputTransform { scale: &scale, shift: &shift })] {
                let what = format!("{algo:?} on {s:?}, transform {}", t.is_some());
                let p = ConvParams::new(*s, algo, ConvWeight::new(&w)).with_input_transform(t);
                let mut y = vec![0.0; s.output_len()];
                forward(&p, &x[..], Epilogue::None, &mut y, &mut ws);
                let (mut staging, mut y16, mut sums) =
                    (vec![f32::NAN; s.output_len()], vec![0u16; s.output_len()], vec![0.0; 2 * s.cout]);
                let epilogue = Epilogue::StatsStoringBf16 { sums: &mut sums, stored: &mut y16 };
                forward(&p, &x[..], epilogue, &mut staging, &mut ws);
                let rounded: Vec<u16> = y.iter().map(|&v| bf16_bits(v) as u16).collect();
                assert!(y16 == rounded, "{what}: stored values are not the rounded output");
                // Without an f32 output (the passes that need one stage it themselves).
                let (mut alone, mut sums_alone) = (vec![0u16; s.output_len()], vec![0.0; 2 * s.cout]);
                let epilogue = Epilogue::StatsStoringBf16 { sums: &mut sums_alone, stored: &mut alone };
                forward(&p, &x[..], epilogue, &mut [], &mut ws);
                assert!(alone == rounded && sums_alone == sums, "{what}: stored without an f32 output");
                let mut wide = vec![0.0; y16.len()];
                Activations::Bf16(&y16).widen_into(&mut wide);
                let mut want = vec![0.0; 2 * s.cout];
                crate::batch_norm::channel_sums(&wide, s.cout, &mut want, &mut ws);
                let mut size = vec![0.0f64; 2 * s.cout];
                for px in wide.chunks_exact(s.cout) {
                    for (ch, &v) in px.iter().enumerate() {
                        size[ch] += f64::from(v.abs());
                        size[s.cout + ch] += f64::from(v * v);
                    }
                }
                for (i, ((a, b), m)) in sums.iter().zip(&want).zip(&size).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * m + 1e-9, "{what}: sum {i} {a} against {b}");
                }
            }
        }
    }
}

#[test]
fn bf16_rounding_is_to_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3F80);
    // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one, 1.
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
    assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    assert!(f32::from_bits(bf16_bits(f32::NAN) << 16).is_nan());
}

/// The algorithm choice as a table: (shape, pass, configuration, CPU) -> algorithm, for CPUs
/// this machine need not have (the choice is a pure function of them).
#[test]
fn algorithm_choice_follows_the_measurements() {
    use ConvAlgorithm::*;
    use ConvPass::{Backward as B, Forward as F, WeightGradient as W};
    let zen4 = CpuFeatures { isa: Isa::Avx512, bf16: true, amx: false };
    let sapphire = CpuFeatures { amx: true, ..zen4 };
    let skylake = CpuFeatures { bf16: false, ..zen4 };
    let avx2 = CpuFeatures { isa: Isa::Avx2, bf16: false, amx: false };
    let f32 = KernelConfig::default();
    let bf16 = KernelConfig { precision: Precision::Bf16, ..f32 };
    let no_winograd = KernelConfig { winograd: false, ..f32 };
    let no_amx = KernelConfig { amx: false, ..bf16 };
    let strided = |s: ConvShape| ConvShape { stride: 2, ..s };
    #[rustfmt::skip]
    let table = [
        // Without AVX-512: the GEMM.
        (c3(128, 32, 16, 16, 3), B, f32, avx2, Im2colGemm),
        (c3(1, 7, 2048, 512, 1), F, f32, avx2, Im2colGemm),
        // f32: Winograd for 3x3 stride-1 layers with enough tiles, whatever their width.
        (c3(128, 32, 16, 16, 3), B, f32, skylake, Winograd),
        (c3(16, 28, 128, 128, 3), B, f32, skylake, Winograd),
        (c3(16, 14, 256, 256, 3), B, f32, skylake, Winograd),
        (c3(1, 14, 256, 256, 3), B, f32, skylake, Winograd),
        (c3(16, 7, 512, 512, 3), B, f32, skylake, Winograd),
        (c3(128, 32, 16, 16, 3), B, no_winograd, skylake, Direct),
        // Few tiles, channels not in whole vectors: the direct kernels.
        (c3(1, 7, 512, 512, 3), B, f32, skylake, Direct),
        (c3(1, 8, 64, 64, 3), B, f32, skylake, Direct),
        (c3(1, 16, 32, 32, 3), B, f32, skylake, Direct),
        (c3(128, 32, 3, 16, 3), B, f32, skylake, Direct),
        (strided(c3(128, 32, 16, 32, 3)), B, f32, skylake, Direct),
        // Strided with weights beyond the cache: the GEMM, but the forward pass with few pixels
        // gathers windows for the direct kernels.
        (strided(c3(1, 14, 512, 512, 3)), B, f32, skylake, Im2colGemm),
        (strided(c3(1, 14, 512, 512, 3)), F, f32, skylake, Direct),
        (strided(c3(128, 14, 512, 512, 3)), F, f32, skylake, Im2colGemm),
        (strided(c3(1, 14, 512, 512, 3)), F, bf16, zen4, DirectBf16),
        // 1x1 layers: the direct forward pass at batch 1, the GEMM otherwise.
        (c3(16, 56, 64, 256, 1), B, f32, skylake, Im2colGemm),
        (c3(16, 56, 64, 256, 1), F, f32, skylake, Im2colGemm),
        (c3(1, 7, 2048, 512, 1), B, f32, skylake, Im2colGemm),
        (c3(1, 7, 2048, 512, 1), F, f32, skylake, Direct),
        (c3(1, 56, 64, 256, 1), F, f32, skylake, Direct),
        (c3(1, 56, 64, 256, 1), F, bf16, zen4, DirectBf16),
        // bf16 with AMX: the tiles where the channels fit and the weights stay in cache.
        (c3(128, 32, 16, 16, 3), B, bf16, sapphire, AmxBf16),
        (c3(128, 32, 3, 16, 3), B, bf16, sapphire, DirectBf16),
        (c3(16, 7, 512, 512, 3), B, bf16, sapphire, Winograd),
        (c3(16, 56, 64, 256, 1), B, bf16, sapphire, AmxBf16),
        (c3(128, 32, 16, 16, 3), B, no_amx, sapphire, WinogradBf16),
        // bf16 without AMX: Winograd's bf16 products for square 16, 32 and 64 channels, the
        // direct bf16 kernels for the other layers, 1x1 and large strided ones included.
        (c3(128, 32, 16, 16, 3), B, bf16, zen4, WinogradBf16),
        (c3(128, 16, 32, 32, 3), B, bf16, zen4, WinogradBf16),
        (c3(128, 8, 64, 64, 3), B, bf16, zen4, WinogradBf16),
        // ... and wider ones by runs of tiles whose filter Winograd holds (the products on the
        // direct bf16 kernel); with few tiles (batch 1, or 512 channels at 7 px) f32 Winograd
        // by channel blocks.
        (c3(32, 28, 128, 128, 3), B, bf16, zen4, WinogradBf16),
        (c3(32, 14, 256, 256, 3), B, bf16, zen4, WinogradBf16),
        (c3(1, 14, 256, 256, 3), B, bf16, zen4, Winograd),
        (c3(1, 28, 128, 128, 3), B, bf16, zen4, Winograd),
        (c3(32, 7, 512, 512, 3), B, bf16, zen4, Winograd),
        // ... and their weight gradients Winograd's too (by positions where a thread's filter
        // gradient would leave the cache).
        (c3(32, 14, 256, 256, 3), W, bf16, zen4, WinogradBf16),
        (c3(32, 28, 128, 128, 3), W, bf16, zen4, WinogradBf16),
        (c3(32, 14, 256, 256, 3), W, f32, zen4, Winograd),
        (c3(32, 14, 256, 256, 3), W, bf16, skylake, Winograd),
        (c3(32, 7, 512, 512, 3), W, bf16, zen4, Winograd),
        (c3(128, 8, 256, 256, 3), W, bf16, zen4, WinogradBf16),
        // Wider than Winograd's weight gradient goes: the direct bf16 kernels in every pass.
        (c3(32, 7, 1024, 1024, 3), B, bf16, zen4, DirectBf16),
        (c3(32, 7, 1024, 1024, 3), B, f32, skylake, Winograd),
        // Past 128 tiles Winograd does not take 512 channels: the direct kernels.
        (c3(64, 7, 512, 512, 3), B, bf16, zen4, DirectBf16),
        (c3(32, 7, 512, 512, 3), B, f32, skylake, Winograd),
        (c3(64, 7, 512, 512, 3), B, f32, skylake, Direct),
        (c3(32, 56, 64, 256, 1), B, bf16, zen4, DirectBf16),
        (c3(32, 7, 2048, 512, 1), F, bf16, zen4, DirectBf16),
        (strided(c3(32, 14, 1024, 2048, 1)), B, bf16, zen4, DirectBf16),
        (strided(c3(32, 14, 512, 512, 3)), B, bf16, zen4, DirectBf16),
        (c3(128, 32, 3, 16, 3), B, bf16, zen4, DirectBf16),
        (c3(16, 56, 64, 256, 1), B, bf16, skylake, Im2colGemm),
        (c3(128, 32, 16, 16, 3), B, KernelConfig { winograd: false, ..bf16 }, zen4, DirectBf16),
    ];
    for (s, pass, config, cpu, want) in table {
        let got = ConvAlgorithm::choose(&s, pass, &config, &cpu);
        assert_eq!(got, want, "{s:?} {pass:?} {config:?} {cpu:?}");
    }
}

#[test]
fn direct_plan_cuts_large_weights_into_runs_of_channels() {
    let plan = |s: ConvShape, block| DirectPlan::new(&s, block, 4);
    // Weights within the budget: every channel in one run, as before.
    assert_eq!(plan(c3(128, 32, 16, 16, 3), 16).chunks, 1);
    // ResNet-50's last 3x3 layer at batch 1: 9.4 MB of weights in runs of 32 channels
    // (590 KB each).
    let last = plan(c3(1, 7, 512, 512, 3), 32);
    assert_eq!((last.chunk, last.chunks), (32, 16));
    // An uneven last run, and a 1x1 layer's runs of whole steps (160 + 140 channels, not
    // 256 + 44).
    assert_eq!((plan(c3(1, 7, 128, 136, 3), 32).chunk, plan(c3(1, 7, 128, 136, 3), 32).chunks), (96, 2));
    assert_eq!(plan(c3(2, 7, 512, 300, 1), 64).chunk, 160);
    // Runs as wide as each other where whole steps allow: 2 x 64 channels, not 96 + 32.
    let halves = plan(c3(1, 7, 128, 128, 3), 32);
    assert_eq!((halves.chunk, halves.chunks), (64, 2));
    // Bands of equal height that share out evenly among the threads, where the height
    // allows (ResNet-50's 28-row 1x1 layers at batch 1: 4 bands of 7 on one thread, 14 of 2
    // on two, 28 of 1 on four).
    for (threads, band) in [(1, 7), (2, 2), (4, 1)] {
        let rows = DirectPlan::for_threads(&c3(1, 28, 512, 128, 1), 64, 4, threads);
        assert_eq!((rows.band, rows.band * rows.bands), (band, 28), "{threads} threads: {rows:?}");
        assert!(rows.tasks(1).is_multiple_of(threads), "{threads} threads: {rows:?}");
    }
    // Every task is one (image, band, run), and every such triple is one task.
    for (s, block) in [(c3(3, 28, 512, 300, 3), 32), (c3(1, 28, 512, 128, 1), 64), (c3(5, 9, 64, 64, 3), 32)] {
        let p = plan(s, block);
        let mut seen: Vec<_> = (0..p.tasks(s.n)).map(|i| p.task(s.n, i)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), s.n * p.bands * p.chunks, "{s:?}");
        assert!(seen.iter().all(|&(img, b, ch)| img < s.n && b < p.bands && ch < p.chunks));
        assert!(p.band * p.bands >= s.out_h() && p.band * (p.bands - 1) < s.out_h());
    }
}

fn c3(n: usize, hw: usize, cin: usize, cout: usize, k: usize) -> ConvShape {
    ConvShape { n, h: hw, w: hw, cin, cout, kh: k, kw: k, stride: 1, pad: k / 2 }
}

#[test]
fn output_sizes_follow_the_usual_formula() {
    let s = ConvShape { n: 1, h: 224, w: 224, cin: 3, cout: 64, kh: 7, kw: 7, stride: 2, pad: 3 };
    assert_eq!((s.out_h(), s.out_w()), (112, 112));
    let s = ConvShape { n: 1, h: 32, w: 32, cin: 16, cout: 32, kh: 3, kw: 3, stride: 2, pad: 1 };
    assert_eq!((s.out_h(), s.out_w()), (16, 16));
    assert_eq!(s.macs(), 16 * 16 * 32 * 144);
}

#[test]
fn transposes_move_every_element_once() {
    let mut rng = Rng::new(7);
    // Sizes that leave partial blocks on both sides, and a row count that leaves a tail.
    for (rows, cols) in [(1, 1), (37, 70), (100, 33), (64, 32)] {
        let src = random(rows * cols, &mut rng);
        let base = random(rows * cols, &mut rng);
        for accumulate in [false, true] {
            let mut dst = base.clone();
            crate::conv::backward_data::transpose_into(&src, rows, cols, &mut dst, accumulate);
            for i in 0..rows {
                for j in 0..cols {
                    let want = if accumulate { base[j * rows + i] + src[i * cols + j] } else { src[i * cols + j] };
                    assert_eq!(dst[j * rows + i], want, "{rows} x {cols} at ({i}, {j}), accumulate {accumulate}");
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::conv::bf16_supported() {
        use crate::conv::bf16::transpose_bf16;
        for (rows, cols, stride) in [(1, 16, 2), (37, 48, 40), (64, 32, 64), (250, 2048, 256)] {
            let src = random(rows * cols, &mut rng);
            let mut dst = vec![1u16; cols * stride];
            transpose_bf16(&src, rows, cols, &mut dst, stride);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * stride + i],
                        bf16_bits(src[i * cols + j]) as u16,
                        "{rows} x {cols} at ({i}, {j})"
                    );
                }
            }
        }
    }
}
