//! Central finite-difference gradient checks, used by every operator's tests and by the
//! whole-network tests in `resnet-models`.
//!
//! A layer `y = f(x)` is checked through the scalar `L(x) = <f(x), r>` for a fixed random probe
//! `r`: its gradient is exactly what the backward pass returns when fed `dy = r`. `L` is summed in
//! `f64`, so the differences measure the layer and not the summation.

use crate::Tensor;
use resnet_kernels::rng::Rng;

/// Fills `v` with uniform values in `[-1, 1)` from `seed`.
pub fn randomize(v: &mut [f32], seed: u64) {
    let mut rng = Rng::new(seed);
    v.iter_mut().for_each(|x| *x = rng.uniform(-1.0, 1.0));
}

/// A tensor of `shape` filled as [`randomize`] fills it.
pub fn random_tensor(shape: [usize; 4], seed: u64) -> Tensor {
    let mut t = Tensor::zeros(shape);
    randomize(t.data_mut(), seed);
    t
}

/// Fills `v` with values in `±[margin, 1)`: at least `margin` away from zero, so a finite
/// difference step smaller than `margin` never crosses a ReLU kink.
pub fn randomize_away_from_zero(v: &mut [f32], seed: u64, margin: f32) {
    let mut rng = Rng::new(seed);
    v.iter_mut().for_each(|x| {
        let m = rng.uniform(margin, 1.0);
        *x = if rng.bernoulli(0.5) { m } else { -m };
    });
}

/// A random probe vector of length `len` (the `dy` fed to the backward pass).
pub fn probe(len: usize, seed: u64) -> Vec<f32> {
    let mut r = vec![0.0; len];
    randomize(&mut r, seed ^ 0xABCD);
    r
}

/// `<y, r>` in `f64`.
pub fn weighted_sum(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(y.len(), r.len(), "output and probe lengths differ");
    y.iter().zip(r).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum()
}

/// Tolerances of a check.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Finite-difference step.
    pub eps: f32,
    /// Allowed relative error.
    pub rel: f64,
    /// Allowed absolute error.
    pub abs: f64,
    /// Coordinates checked at most (evenly spread).
    pub samples: usize,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self { eps: 1e-2, rel: 2e-3, abs: 2e-4, samples: 400 }
    }
}

/// Compares `analytic` (the backward pass's gradient of `loss` at `x0`) with central differences
/// `(loss(x + eps e_i) - loss(x - eps e_i)) / 2 eps`, on every coordinate or on up to
/// `tol.samples` evenly spread ones.
///
/// # Panics
/// On the first coordinate that disagrees beyond the tolerance, naming it.
pub fn check_gradient(what: &str, x0: &[f32], analytic: &[f32], tol: Tolerance, mut loss: impl FnMut(&[f32]) -> f64) {
    assert_eq!(x0.len(), analytic.len(), "{what}: gradient length");
    let step = x0.len().div_ceil(tol.samples.max(1)).max(1);
    let mut x = x0.to_vec();
    let mut worst = 0.0f64;
    for i in (0..x0.len()).step_by(step) {
        x[i] = x0[i] + tol.eps;
        let up = loss(&x);
        x[i] = x0[i] - tol.eps;
        let down = loss(&x);
        x[i] = x0[i];
        // The step actually taken in f32, not the nominal one.
        let h = f64::from(x0[i] + tol.eps) - f64::from(x0[i] - tol.eps);
        let numeric = (up - down) / h;
        let a = f64::from(analytic[i]);
        let err = (numeric - a).abs();
        let allowed = tol.abs + tol.rel * numeric.abs().max(a.abs());
        worst = worst.max(err / allowed);
        assert!(
            err <= allowed,
            "{what}[{i}]: analytic {a:.6e}, finite difference {numeric:.6e} (error {err:.3e} > {allowed:.3e})"
        );
    }
    assert!(worst.is_finite(), "{what}: non-finite gradient");
}

/// Seed of the random direction [`check_directional`] probes when the analytic gradient is all zeros.
const ALL_ZERO_PROBE_SEED: u64 = 0x5EED_0000;

/// Direction of a [`check_directional`] probe.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// Along the analytic gradient: the largest signal, and equality `<g_true, g> = |g|^2` holds
    /// only when the analytic gradient is right in magnitude along itself.
    Gradient,
    /// A random sign vector from this seed: catches errors orthogonal to the gradient.
    Random(u64),
}

/// Compares the directional derivative `<analytic, v>` along a unit direction `v` with
/// `(loss(x + eps v) - loss(x - eps v)) / 2 eps`; returns the relative error.
///
/// This is the check for whole networks: ReLU kinks crossed by a perturbation make single
/// coordinates noisy, while along a direction that moves every coordinate their effects
/// average out. A wrongly wired gradient shows up as a large, systematic error. An all-zero
/// analytic gradient along [`Direction::Gradient`] is checked along a fixed random direction
/// instead, so it passes only where the loss is flat.
///
/// # Panics
/// If the two disagree beyond `tol.rel` (relative) plus `tol.abs`.
pub fn check_directional(
    what: &str,
    x0: &[f32],
    analytic: &[f32],
    tol: Tolerance,
    dir: Direction,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> f64 {
    assert_eq!(x0.len(), analytic.len(), "{what}: gradient length");
    if x0.is_empty() {
        return 0.0;
    }
    let random_signs = |seed: u64| -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..x0.len()).map(|_| if rng.bernoulli(0.5) { 1.0 } else { -1.0 }).collect()
    };
    let mut v: Vec<f64> = match dir {
        Direction::Gradient => analytic.iter().map(|g| f64::from(*g)).collect(),
        Direction::Random(seed) => random_signs(seed),
    };
    let mut norm = v.iter().map(|d| d * d).sum::<f64>().sqrt();
    if norm == 0.0 {
        // An all-zero gradient (one never written, say) gives no direction of its own: probe a
        // random one, along which the loss must then be flat too.
        v = random_signs(ALL_ZERO_PROBE_SEED);
        norm = (x0.len() as f64).sqrt();
    }
    v.iter_mut().for_each(|d| *d /= norm);
    let eps = f64::from(tol.eps);
    let shifted =
        |sign: f64| -> Vec<f32> { x0.iter().zip(&v).map(|(x, d)| (f64::from(*x) + sign * eps * d) as f32).collect() };
    let up = loss(&shifted(1.0));
    let down = loss(&shifted(-1.0));
    let numeric = (up - down) / (2.0 * eps);
    let a: f64 = analytic.iter().zip(&v).map(|(g, d)| f64::from(*g) * d).sum();
    let err = (numeric - a).abs();
    let allowed = tol.abs + tol.rel * numeric.abs().max(a.abs());
    assert!(err <= allowed, "{what} ({dir:?}): directional derivative analytic {a:.6e}, finite difference {numeric:.6e} (error {err:.3e} > {allowed:.3e})");
    err / numeric.abs().max(a.abs()).max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L(x) = sum x_i^2 / 2`, whose gradient is `x`.
    fn half_square(x: &[f32]) -> f64 {
        x.iter().map(|v| 0.5 * f64::from(*v) * f64::from(*v)).sum()
    }

    #[test]
    fn directional_check_accepts_a_correct_gradient() {
        let x = [0.5f32, -1.0, 2.0];
        check_directional("half square", &x, &x, Tolerance::default(), Direction::Gradient, half_square);
    }

    /// A parameter whose gradient is never written reads as all zeros: that is no direction to
    /// probe along, and must not pass where the loss does change.
    #[test]
    #[should_panic(expected = "directional derivative")]
    fn directional_check_rejects_an_all_zero_gradient_of_a_changing_loss() {
        let x = [0.5f32, -1.0, 2.0];
        check_directional("half square", &x, &[0.0; 3], Tolerance::default(), Direction::Gradient, half_square);
    }

    /// An all-zero gradient is right where the loss is flat, and passes there.
    #[test]
    fn directional_check_accepts_an_all_zero_gradient_of_a_flat_loss() {
        let x = [0.5f32, -1.0, 2.0];
        check_directional("constant", &x, &[0.0; 3], Tolerance::default(), Direction::Gradient, |_| 3.0);
    }
}
