use super::*;
use crate::rng::Rng;
use crate::simd;

#[test]
fn mean_var_match_two_pass_f64() {
    let (rows, c) = (1000, 5);
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..rows * c).map(|i| 100.0 + (i % c) as f32 + rng.uniform(-1.0, 1.0)).collect();
    let (mut m, mut v) = (vec![0.0; c], vec![0.0; c]);
    channel_mean_var(&x, c, &mut m, &mut v, &mut Workspace::new());
    for ch in 0..c {
        let col: Vec<f64> = (0..rows).map(|r| f64::from(x[r * c + ch])).collect();
        let mean = col.iter().sum::<f64>() / rows as f64;
        let var = col.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / rows as f64;
        assert!((f64::from(m[ch]) - mean).abs() < 1e-4);
        assert!((f64::from(v[ch]) - var).abs() < 1e-5 * var.max(1.0), "{} vs {var}", v[ch]);
    }
}

#[test]
fn scale_shift_act_applies_residual_and_relu() {
    let x = [1.0, -2.0, 3.0, -4.0];
    let r = [0.5, 0.5, -10.0, 0.0];
    let mut y = [0.0; 4];
    scale_shift_act(&x, 2, &[2.0, 1.0], &[0.0, 1.0], Some(&r), true, &mut y);
    assert_eq!(y, [2.5, 0.0, 0.0, 0.0]);
    scale_shift_act(&x, 2, &[2.0, 1.0], &[0.0, 1.0], None, false, &mut y);
    assert_eq!(y, [2.0, -1.0, 6.0, -3.0]);
}

/// Every pass over a bf16 activation gives exactly what it gives over the same values
/// widened to f32 (the same blocks summed in the same order), and the statistics stored
/// beside a bf16 output are those of the stored values.
#[test]
fn bf16_activations_give_the_f32_passes_of_their_values() {
    for c in [16, 48, 64, 256] {
        let rows = 3 * ROWS_PER_BLOCK + 13 + if c < 64 { 1100 } else { 0 };
        let n = rows * c;
        let y: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 4.0).collect();
        let mut ws = Workspace::new();
        let (mut y16, mut sums16) = (vec![0u16; n], vec![0.0; 2 * c]);
        channel_sums_storing_bf16(&y, c, &mut y16, &mut sums16, &mut ws);
        let mut wide = vec![0.0; n];
        Activations::Bf16(&y16).widen_into(&mut wide);
        for (i, (&w, &v)) in wide.iter().zip(&y).enumerate() {
            assert_eq!(w.to_bits() >> 16, crate::activations::bf16_bits(v), "element {i}");
        }
        let mut sums = vec![0.0; 2 * c];
        channel_sums(&wide, c, &mut sums, &mut ws);
        assert_eq!(sums16, sums, "{c} channels");

        let (x16, x) = (Activations::Bf16(&y16), Activations::F32(&wide));
        let vec = |k: usize| (0..c).map(|i| ((i * k) % 29) as f32 / 11.0 - 1.2).collect::<Vec<f32>>();
        let (scale, shift, mean, rstd) = (vec(3), vec(7), vec(13), vec(5));
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 211) as f32 / 50.0 - 2.0).collect();
        let z: Vec<f32> = (0..n).map(|i| ((i * 31) % 7) as f32 - 3.0).collect();
        let masks = [ReluMask::None, ReluMask::Output(&z), ReluMask::Affine { scale: &scale, shift: &shift }];
        for mask in masks {
            let (mut g1, mut g2, mut w1, mut w2) = (vec![0.0; c], vec![0.0; c], vec![1.0; c], vec![1.0; c]);
            backward_sums(x16, c, &mean, &rstd, &dy, mask, &mut g1, &mut g2, &mut ws);
            backward_sums(x, c, &mean, &rstd, &dy, mask, &mut w1, &mut w2, &mut ws);
            assert_eq!((&g1, &g2), (&w1, &w2), "backward sums, {c} channels, {mask:?}");
            let (mut dx16, mut dx) = (vec![0.5; n], vec![0.5; n]);
            let out = |dx| InputGradient::F32 { dx, accumulate: true };
            backward_input(x16, c, &mean, &rstd, &scale, &dy, mask, &g1, &g2, out(&mut dx16));
            backward_input(x, c, &mean, &rstd, &scale, &dy, mask, &w1, &w2, out(&mut dx));
            assert_eq!(dx16, dx, "input gradient, {c} channels, {mask:?}");
            // Stored in bf16: the f32 gradient rounded, element for element.
            let (mut dx_bf16, mut written) = (vec![1u16; n], vec![0.0; n]);
            backward_input(x16, c, &mean, &rstd, &scale, &dy, mask, &g1, &g2, InputGradient::Bf16(&mut dx_bf16));
            let plain = InputGradient::F32 { dx: &mut written, accumulate: false };
            backward_input(x16, c, &mean, &rstd, &scale, &dy, mask, &g1, &g2, plain);
            for (i, (&b, &v)) in dx_bf16.iter().zip(&written).enumerate() {
                assert_eq!(u32::from(b), crate::activations::bf16_bits(v), "bf16 input gradient {i}, {c} channels");
            }
        }
        for residual in [None, Some(&dy[..])] {
            let (mut out16, mut out) = (vec![0.0; n], vec![1.0; n]);
            scale_shift_act(x16, c, &scale, &shift, residual, true, &mut out16);
            scale_shift_act(x, c, &scale, &shift, residual, true, &mut out);
            assert_eq!(out16, out, "apply, {c} channels");
        }
        let (own, other) =
            (ChannelAffine { scale: &scale, shift: &shift }, ChannelAffine { scale: &mean, shift: &rstd });
        let (mut out16, mut out) = (vec![0.0; n], vec![1.0; n]);
        scale_shift_act_affine_residual(x16, own, x16, other, false, &mut out16);
        scale_shift_act_affine_residual(x, own, x, other, false, &mut out);
        assert_eq!(out16, out, "affine residual, {c} channels");
    }
}

/// A residual through its own affine map gives exactly what storing that map's output
/// and adding it as a plain residual gives.
#[test]
fn an_affine_residual_equals_its_stored_output_added() {
    for c in [48, 64] {
        let rows = 37;
        let x: Vec<f32> = (0..rows * c).map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0).collect();
        let r: Vec<f32> = (0..rows * c).map(|i| ((i * 104_729) % 97) as f32 / 13.0 - 3.5).collect();
        let vec = |k: usize| (0..c).map(|i| ((i * k) % 23) as f32 / 7.0 - 1.5).collect::<Vec<f32>>();
        let (a, b, ra, rb) = (vec(3), vec(5), vec(11), vec(17));
        let mut stored = vec![0.0; rows * c];
        scale_shift_act(&r, c, &ra, &rb, None, false, &mut stored);
        for relu in [false, true] {
            let (mut want, mut got) = (vec![0.0; rows * c], vec![1.0; rows * c]);
            scale_shift_act(&x, c, &a, &b, Some(&stored), relu, &mut want);
            let own = ChannelAffine { scale: &a, shift: &b };
            scale_shift_act_affine_residual(&x, own, &r, ChannelAffine { scale: &ra, shift: &rb }, relu, &mut got);
            assert_eq!(got, want, "relu {relu}, {c} channels");
        }
    }
}

/// The AVX-512 passes for 16, 32 and 64 channels give exactly what the baseline loops give
/// (same operations, same summation order), for every mask, residual and accumulation.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_rows_match_the_loops_exactly() {
    use crate::simd::batch_norm as fast;
    if simd::isa() < simd::Isa::Avx512 {
        crate::skip::skip("this CPU has no AVX-512");
        return;
    }
    let base = simd::Isa::Scalar;
    for c in [16, 32, 64] {
        // 200 rows: three full blocks of 64 and a partial one.
        let rows = 200;
        let mut rng = Rng::new(c as u64);
        let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect() };
        let (x, dy, z, a, b, k) = (v(rows * c), v(rows * c), v(rows * c), v(c), v(c), v(c));
        let masks = [ReluMask::None, ReluMask::Output(&z), ReluMask::Affine { scale: &a, shift: &b }];
        let fresh = || (vec![0.5f64; c], vec![-0.5f64; c]);
        let mut scratch = (vec![0.0f32; c], vec![0.0f32; c]);
        macro_rules! with_g {
            ($f:ident($($arg:expr),*)) => {
                // SAFETY: the CPU has AVX-512 (checked above).
                unsafe { match c { 16 => fast::$f::<1>($($arg),*), 32 => fast::$f::<2>($($arg),*), _ => fast::$f::<4>($($arg),*) } }
            };
        }
        let (mut p, mut q) = (fresh(), fresh());
        add_sums_loop_on(base, &x, &mut p.0, &mut p.1, &mut scratch.0, &mut scratch.1);
        with_g!(add_sums(&x, &mut q.0, &mut q.1));
        assert_eq!(p, q, "add_sums, {c} channels");
        let (mut p, mut q) = (fresh(), fresh());
        shifted_sums_loop_on(base, &x, &k, &mut p.0, &mut p.1, &mut scratch.0, &mut scratch.1);
        with_g!(shifted_sums(&x, &k, &mut q.0, &mut q.1));
        assert_eq!(p, q, "shifted_sums, {c} channels");
        for (m, mask) in masks.iter().enumerate() {
            let (mut p, mut q) = (fresh(), fresh());
            let all = (&k[..], 0..x.len());
            backward_rows_loop_on(
                base,
                Activations::F32(&x),
                all,
                &dy,
                *mask,
                &mut p.0,
                &mut p.1,
                &mut scratch.0,
                &mut scratch.1,
            );
            with_g!(backward_rows(&x, &k, &dy, *mask, &mut q.0, &mut q.1));
            assert_eq!(p, q, "backward_rows, mask {m}, {c} channels");
            for acc in [false, true] {
                let (mut d0, mut d1) = (z.clone(), z.clone());
                input_grad_rows_loop_on(base, &x, &dy, *mask, &a, &b, &k, &mut d0, acc);
                with_g!(input_grad_rows(&x, &dy, *mask, &a, &b, &k, &mut d1, acc));
                assert_eq!(d0, d1, "input_grad_rows, mask {m}, accumulate {acc}, {c} channels");
            }
        }
        for resid in [None, Some(z.as_slice())] {
            for relu in [false, true] {
                let (mut y0, mut y1) = (vec![0.0; rows * c], vec![1.0; rows * c]);
                scale_shift_rows_loop_on(base, &x, &a, &b, resid, relu, &mut y0);
                with_g!(scale_shift_rows(&x, &a, &b, resid, relu, &mut y1));
                assert_eq!(y0, y1, "scale_shift_rows, residual {}, relu {relu}, {c} channels", resid.is_some());
            }
        }
    }
}

/// Every instruction-set version of every pass agrees with the baseline one.
#[test]
fn every_isa_version_agrees() {
    let (rows, c) = (300, 19);
    let mut rng = Rng::new(8);
    let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect() };
    let (x, dy, z, a, b, k) = (v(rows * c), v(rows * c), v(rows * c), v(c), v(c), v(c));
    let base = simd::Isa::Scalar;
    for isa in simd::available() {
        let masks = [ReluMask::None, ReluMask::Output(&z), ReluMask::Affine { scale: &a, shift: &b }];
        for (resid, mask) in [None, Some(z.as_slice())].into_iter().flat_map(|r| masks.iter().map(move |m| (r, *m))) {
            for relu in [false, true] {
                let (mut y0, mut y1) = (vec![0.0; rows * c], vec![0.0; rows * c]);
                scale_shift_rows_loop_on(base, &x, &a, &b, resid, relu, &mut y0);
                scale_shift_rows_loop_on(isa, &x, &a, &b, resid, relu, &mut y1);
                assert_eq!(y0, y1, "{isa:?}");
            }
            for acc in [false, true] {
                let (mut d0, mut d1) = (dy.clone(), dy.clone());
                input_grad_rows_loop_on(base, &x, &dy, mask, &a, &b, &k, &mut d0, acc);
                input_grad_rows_loop_on(isa, &x, &dy, mask, &a, &b, &k, &mut d1, acc);
                for (p, q) in d0.iter().zip(&d1) {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{isa:?}");
                }
            }
            let (mut b0, mut b1) = (vec![0u16; x.len()], vec![1u16; x.len()]);
            input_grad_rows_bf16_loop_on(base, &x, &dy, mask, &a, &b, &k, &mut b0);
            input_grad_rows_bf16_loop_on(isa, &x, &dy, mask, &a, &b, &k, &mut b1);
            assert_eq!(b0, b1, "{isa:?}: bf16 input gradient");
            let sums = |isa| {
                let (mut s1, mut s2) = (vec![0.0; c], vec![0.0; c]);
                let (mut t1, mut t2) = (vec![0.0; c], vec![0.0; c]);
                backward_rows_loop_on(
                    isa,
                    Activations::F32(&x),
                    (&a, 0..x.len()),
                    &dy,
                    mask,
                    &mut s1,
                    &mut s2,
                    &mut t1,
                    &mut t2,
                );
                add_sums_loop_on(isa, &x, &mut s1, &mut s2, &mut t1, &mut t2);
                shifted_sums_loop_on(isa, &x, &a, &mut s1, &mut s2, &mut t1, &mut t2);
                (s1, s2)
            };
            let (p, q) = (sums(base), sums(isa));
            for (u, w) in p.0.iter().chain(&p.1).zip(q.0.iter().chain(&q.1)) {
                assert!((u - w).abs() <= 1e-4 * (1.0 + u.abs()), "{isa:?}");
            }
        }
    }
}
