//! A linear probe: a multinomial logistic regression trained on the image features `resnet embed`
//! writes, the usual measure of how much a network's features say about new classes.
//!
//! ```sh
//! resnet embed --checkpoint best.safetensors --data DATA --split train --out train.safetensors
//! resnet embed --checkpoint best.safetensors --data DATA --split test --out test.safetensors
//! cargo run --release -p resnet-examples --example linear_probe -- train.safetensors test.safetensors
//! ```
//!
//! Each feature is standardised with the training set's mean and standard deviation; the probe
//! minimises the mean cross-entropy plus `l2 / 2 * |W|^2` (the bias is not penalised) over the
//! whole training set by L-BFGS with a backtracking line search, deterministically. Options:
//! `--l2 X` (default `cv`: the value of 1e-4, 1e-3, ..., 1 with the lowest 5-fold
//! cross-validated error on the training set, as scikit-learn's `LogisticRegressionCV`) and
//! `--iterations N` (default 300).

use anyhow::{bail, Context};
use resnet_interop::FeatureSet;
use std::path::{Path, PathBuf};

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

fn main() -> std::process::ExitCode {
    match probe(Args::parse(std::env::args_os().skip(1))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads both files, fits the probe to the training features and prints both errors.
fn probe(args: anyhow::Result<Args>) -> anyhow::Result<()> {
    let args = args?;
    let train = labelled(&args.train)?;
    let test = labelled(&args.test)?;
    if train.channels != test.channels {
        bail!(
            "{} has {} features per image but {} has {}: embed both with the same network and --layer",
            args.train.display(),
            train.channels,
            args.test.display(),
            test.channels
        );
    }
    if let (Some(a), Some(b)) = (&train.classes, &test.classes) {
        if a != b {
            bail!("{} and {} name different classes", args.train.display(), args.test.display());
        }
    }
    if (train.layer.as_str(), train.model.as_str()) != (test.layer.as_str(), test.model.as_str()) {
        eprintln!(
            "warning: the training features are {} of {}, the test features {} of {}",
            train.layer, train.model, test.layer, test.model
        );
    }
    let classes = class_count(&train).max(class_count(&test));
    let standardize = Standardize::fit(&train.features, train.channels);
    let (mut x_train, mut x_test) = (train.features.clone(), test.features.clone());
    standardize.apply(&mut x_train);
    standardize.apply(&mut x_test);
    let (y_train, y_test) = (labels_of(&train), labels_of(&test));
    let data = Samples { x: &x_train, labels: &y_train, dim: train.channels };
    let (l2, how) = match args.l2 {
        Some(l2) => (l2, "given"),
        None => (cross_validated_l2(&data, classes, args.iterations), "chosen by 5-fold cross-validation"),
    };
    let probe = Probe::fit(&data, classes, &FitOptions { l2, iterations: args.iterations });
    let test_data = Samples { x: &x_test, labels: &y_test, dim: test.channels };
    println!(
        "linear probe on {} features ({} of {}), {classes} classes, l2 {l2} ({how})",
        train.channels, train.layer, train.model
    );
    println!("training error {:.2}% ({} images)", probe.error(&data), train.rows);
    println!("test error {:.2}% ({} images)", probe.error(&test_data), test.rows);
    Ok(())
}

/// The command line.
struct Args {
    train: PathBuf,
    test: PathBuf,
    /// The penalty, or `None` to choose it by cross-validation.
    l2: Option<f64>,
    iterations: usize,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<Args> {
        let usage = "usage: linear_probe TRAIN.safetensors TEST.safetensors [--l2 X|cv] [--iterations N]";
        let mut files = Vec::new();
        let (mut l2, mut iterations) = (None, 300);
        while let Some(a) = args.next() {
            let mut value = |flag: &str| {
                let v = args.next().with_context(|| format!("{flag} needs a value; {usage}"))?;
                v.into_string().map_err(|v| anyhow::anyhow!("{flag} {v:?} is not a number"))
            };
            match a.to_str() {
                Some("--l2") => {
                    let v = value("--l2")?;
                    l2 = match v.as_str() {
                        "cv" => None,
                        _ => Some(v.parse().ok().filter(|l: &f64| l.is_finite() && *l >= 0.0).with_context(|| {
                            format!("--l2 {v}: give a non-negative number (the penalty on the weights) or cv")
                        })?),
                    };
                }
                Some("--iterations") => {
                    let v = value("--iterations")?;
                    iterations = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .with_context(|| format!("--iterations {v}: give a count from 1 to 100000"))?;
                }
                Some(flag) if flag.starts_with("--") => bail!("unknown option {flag}; {usage}"),
                _ => files.push(PathBuf::from(a)),
            }
        }
        let [train, test]: [PathBuf; 2] = files.try_into().map_err(|_| anyhow::anyhow!("{usage}"))?;
        Ok(Args { train, test, l2, iterations })
    }
}

/// A features file whose rows have labels.
fn labelled(path: &Path) -> anyhow::Result<FeatureSet> {
    let set = FeatureSet::load(path)?;
    if set.labels.is_none() {
        bail!(
            "{}: the features have no labels; embed a dataset split (--dataset/--data), not image files",
            path.display()
        );
    }
    if set.rows == 0 {
        bail!("{}: the file holds no features", path.display());
    }
    Ok(set)
}

/// Classes: the file's class list, or one more than its largest label.
fn class_count(set: &FeatureSet) -> usize {
    let labels = set.labels.as_deref().unwrap_or_default();
    let seen = labels.iter().max().map_or(0, |&m| m as usize + 1);
    set.classes.as_ref().map_or(seen, |c| c.len().max(seen))
}

fn labels_of(set: &FeatureSet) -> Vec<usize> {
    // `FeatureSet::load` has checked that labels are non-negative.
    set.labels.as_deref().unwrap_or_default().iter().map(|&l| l as usize).collect()
}

/// Per-feature mean and standard deviation of a training set.
struct Standardize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Standardize {
    /// The statistics of the rows of `x` (`dim` features each). A constant feature gets a
    /// standard deviation of 1, so that it standardises to 0 rather than to a division by zero.
    fn fit(x: &[f32], dim: usize) -> Standardize {
        let rows = (x.len() / dim).max(1) as f64;
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                sum[j] += f64::from(v);
                sq[j] += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| {
                let s = (q / rows - m * m).max(0.0).sqrt();
                if s > 1e-6 * m.abs().max(1e-6) {
                    s as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardize { mean: mean.iter().map(|&m| m as f32).collect(), std }
    }

    fn apply(&self, x: &mut [f32]) {
        for row in x.chunks_exact_mut(self.mean.len()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }
}

/// Rows of features with their classes.
struct Samples<'a> {
    /// Row-major `[rows, dim]`.
    x: &'a [f32],
    labels: &'a [usize],
    dim: usize,
}

/// How [`Probe::fit`] trains.
struct FitOptions {
    /// Weight of the `1/2 |W|^2` penalty.
    l2: f64,
    /// L-BFGS iterations at most.
    iterations: usize,
}

/// The penalties cross-validation chooses from.
const L2_GRID: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// The penalty of [`L2_GRID`] whose probes, each trained on four fifths of `data` (rows by index
/// modulo 5) and tested on the rest, err least on average; the larger on a tie.
fn cross_validated_l2(data: &Samples<'_>, classes: usize, iterations: usize) -> f64 {
    let folds = 5;
    let mut best = (f64::INFINITY, L2_GRID[0]);
    for l2 in L2_GRID {
        let mut error = 0.0;
        for fold in 0..folds {
            let (mut fit, mut held) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
            for (i, (row, &label)) in data.x.chunks_exact(data.dim).zip(data.labels).enumerate() {
                let part = if i % folds == fold { &mut held } else { &mut fit };
                part.0.extend_from_slice(row);
                part.1.push(label);
            }
            let fit = Samples { x: &fit.0, labels: &fit.1, dim: data.dim };
            let held = Samples { x: &held.0, labels: &held.1, dim: data.dim };
            error += Probe::fit(&fit, classes, &FitOptions { l2, iterations }).error(&held) / folds as f64;
        }
        if error <= best.0 {
            best = (error, l2);
        }
    }
    best.1
}

/// A multinomial logistic regression, `p(k | x) = softmax(W x + b)_k`.
#[derive(Clone, Debug)]
struct Probe {
    classes: usize,
    /// `[classes * dim]` weights, then `[classes]` biases.
    params: Vec<f64>,
}

impl Probe {
    /// Fits the probe to `data` from all-zero parameters.
    fn fit(data: &Samples<'_>, classes: usize, opts: &FitOptions) -> Probe {
        let start = vec![0.0; classes * (data.dim + 1)];
        let params = lbfgs(start, opts.iterations, |p, g| objective(p, data, classes, opts.l2, g));
        Probe { classes, params }
    }

    /// The class probabilities of one row.
    fn probabilities(&self, row: &[f32]) -> Vec<f64> {
        let mut p = vec![0.0; self.classes];
        logits(&self.params, row, self.classes, &mut p);
        softmax(&mut p);
        p
    }

    /// Misclassified rows, percent.
    fn error(&self, data: &Samples<'_>) -> f64 {
        let wrong = data
            .x
            .chunks_exact(data.dim)
            .zip(data.labels)
            .filter(|(row, &label)| {
                let p = self.probabilities(row);
                let best = (0..self.classes).fold(0, |b, k| if p[k] > p[b] { k } else { b });
                best != label
            })
            .count();
        100.0 * wrong as f64 / data.labels.len().max(1) as f64
    }
}

/// `W row + b` into `out` (`classes` entries).
fn logits(params: &[f64], row: &[f32], classes: usize, out: &mut [f64]) {
    let dim = row.len();
    let (weights, bias) = params.split_at(classes * dim);
    for (k, o) in out.iter_mut().enumerate() {
        let w = &weights[k * dim..(k + 1) * dim];
        *o = bias[k] + w.iter().zip(row).map(|(a, &b)| a * f64::from(b)).sum::<f64>();
    }
}

/// In place, shifted by the largest value so that no exponential overflows.
fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// The mean cross-entropy plus `l2 / 2 * |W|^2`; its gradient into `grad`.
fn objective(params: &[f64], data: &Samples<'_>, classes: usize, l2: f64, grad: &mut [f64]) -> f64 {
    let dim = data.dim;
    grad.fill(0.0);
    let mut p = vec![0.0; classes];
    let mut loss = 0.0;
    for (row, &label) in data.x.chunks_exact(dim).zip(data.labels) {
        logits(params, row, classes, &mut p);
        softmax(&mut p);
        loss -= p[label].max(1e-300).ln();
        // d loss / d logit_k = p_k - [k == label]; the logit is linear in W's row k and in b_k.
        p[label] -= 1.0;
        let (gw, gb) = grad.split_at_mut(classes * dim);
        for (k, &r) in p.iter().enumerate() {
            gw[k * dim..(k + 1) * dim].iter_mut().zip(row).for_each(|(g, &x)| *g += r * f64::from(x));
            gb[k] += r;
        }
    }
    let n = data.labels.len().max(1) as f64;
    grad.iter_mut().for_each(|g| *g /= n);
    let weights = &params[..classes * dim];
    grad[..classes * dim].iter_mut().zip(weights).for_each(|(g, w)| *g += l2 * w);
    loss / n + 0.5 * l2 * weights.iter().map(|w| w * w).sum::<f64>()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` (its value; its gradient into the second argument) from `x` by L-BFGS with the
/// last 10 curvature pairs (Nocedal and Wright, *Numerical Optimization*, Algorithm 7.4) and a
/// backtracking line search on the Armijo condition. Stops after `iterations`, at a gradient
/// below 1e-9, or when no step decreases `f`.
fn lbfgs(mut x: Vec<f64>, iterations: usize, mut f: impl FnMut(&[f64], &mut [f64]) -> f64) -> Vec<f64> {
    const MEMORY: usize = 10;
    let mut g = vec![0.0; x.len()];
    let mut fx = f(&x, &mut g);
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let (mut x_new, mut g_new) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for _ in 0..iterations {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < 1e-9 {
            break;
        }
        // Two-loop recursion: d = -H g, H the inverse-Hessian estimate of the stored pairs.
        let mut d: Vec<f64> = g.iter().map(|v| -v).collect();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &d);
            d.iter_mut().zip(y).for_each(|(di, yi)| *di -= a * yi);
            alphas.push(a);
        }
        let gamma = pairs.back().map_or(1.0 / dot(&g, &g).sqrt().max(1.0), |(s, y, _)| dot(s, y) / dot(y, y));
        d.iter_mut().for_each(|di| *di *= gamma);
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &d);
            d.iter_mut().zip(s).for_each(|(di, si)| *di += (a - b) * si);
        }
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (rounding): start again from the gradient.
            pairs.clear();
            d = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        let mut step = 1.0;
        let accepted = loop {
            x_new.iter_mut().zip(&x).zip(&d).for_each(|((n, xi), di)| *n = xi + step * di);
            let f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope {
                break Some(f_new);
            }
            step *= 0.5;
            if step < 1e-20 {
                break None;
            }
        };
        let Some(f_new) = accepted else { break };
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        // Only pairs of positive curvature keep the estimate positive definite.
        if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
            if pairs.len() == MEMORY {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform numbers in [-1, 1) from a fixed linear congruential stream.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `per_class` points of each of `classes` clusters in `dim` dimensions: class `k` around
    /// `3 e_k`, each coordinate within 1 of it, so that the classes are linearly separable.
    fn clusters(classes: usize, dim: usize, per_class: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let noise = uniform(classes * per_class * dim, seed);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for (i, row) in noise.chunks_exact(dim).enumerate() {
            let k = i % classes;
            x.extend(row.iter().enumerate().map(|(j, v)| v + if j == k { 3.0 } else { 0.0 }));
            labels.push(k);
        }
        (x, labels)
    }

    /// Few samples, one informative coordinate among many noisy ones: a weak penalty fits the
    /// noise, so cross-validation must choose a stronger one than the weakest.
    #[test]
    fn cross_validation_chooses_a_stronger_penalty_when_the_weakest_overfits() {
        let (dim, n) = (60, 80);
        let noise = uniform(n * dim, 7);
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let x: Vec<f32> = noise
            .chunks_exact(dim)
            .zip(&labels)
            .flat_map(|(row, &k)| row.iter().enumerate().map(move |(j, v)| if j == 0 { v + k as f32 } else { *v }))
            .collect();
        let data = Samples { x: &x, labels: &labels, dim };
        let l2 = cross_validated_l2(&data, 2, 300);
        assert!(L2_GRID.contains(&l2) && l2 > L2_GRID[0], "chose {l2}");
    }

    #[test]
    fn separable_classes_are_learned_without_a_training_error() {
        let (x, labels) = clusters(4, 6, 50, 1);
        let standardize = Standardize::fit(&x, 6);
        let mut x = x;
        standardize.apply(&mut x);
        let data = Samples { x: &x, labels: &labels, dim: 6 };
        let probe = Probe::fit(&data, 4, &FitOptions { l2: 1e-4, iterations: 300 });
        assert_eq!(probe.error(&data), 0.0);
        let (mut held_out, held_labels) = clusters(4, 6, 25, 2);
        standardize.apply(&mut held_out);
        assert_eq!(probe.error(&Samples { x: &held_out, labels: &held_labels, dim: 6 }), 0.0);
    }

    #[test]
    fn the_fit_gives_the_frequencies_of_the_data_when_nothing_is_penalised() {
        // One feature, +1 or -1: at +1 four in five points are of class 1, at -1 one in five.
        // The maximum-likelihood probabilities are those frequencies, 0.8 and 0.2.
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let side = if i < 20 { 1.0 } else { -1.0 };
            let class1 = (i % 5 != 0) == (side > 0.0);
            x.push(side);
            labels.push(usize::from(class1));
        }
        let data = Samples { x: &x, labels: &labels, dim: 1 };
        let probe = Probe::fit(&data, 2, &FitOptions { l2: 0.0, iterations: 300 });
        let (up, down) = (probe.probabilities(&[1.0]), probe.probabilities(&[-1.0]));
        assert!((up[1] - 0.8).abs() < 1e-6 && (down[1] - 0.2).abs() < 1e-6, "{up:?} {down:?}");
        // A large penalty holds the weights near zero, and the bias (not penalised) gives every
        // point the overall frequency of each class: here one half.
        let probe = Probe::fit(&data, 2, &FitOptions { l2: 1e6, iterations: 300 });
        assert!((probe.probabilities(&[1.0])[1] - 0.5).abs() < 1e-5);
    }

    #[test]
    fn the_gradient_is_that_of_the_objective() {
        let (x, labels) = clusters(3, 4, 5, 3);
        let data = Samples { x: &x, labels: &labels, dim: 4 };
        let params: Vec<f64> = uniform(15, 4).iter().map(|&v| f64::from(v)).collect();
        let mut grad = vec![0.0; 15];
        objective(&params, &data, 3, 0.1, &mut grad);
        let mut scratch = vec![0.0; 15];
        for i in 0..15 {
            let (mut up, mut down) = (params.clone(), params.clone());
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric =
                (objective(&up, &data, 3, 0.1, &mut scratch) - objective(&down, &data, 3, 0.1, &mut scratch)) / 2e-6;
            assert!((numeric - grad[i]).abs() < 1e-6, "parameter {i}: {numeric} against {}", grad[i]);
        }
    }

    #[test]
    fn standardised_features_have_zero_mean_and_unit_deviation() {
        // The first feature is 1, 3, 5: mean 3, standard deviation sqrt(8/3); the second is constant.
        let mut x = vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        let s = Standardize::fit(&x, 2);
        s.apply(&mut x);
        let d = 2.0 / (8.0f32 / 3.0).sqrt();
        let want = [-d, 0.0, 0.0, 0.0, d, 0.0];
        for (got, want) in x.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{x:?}");
        }
        assert_eq!(s.std[1], 1.0, "a constant feature is left at 0, not divided by 0");
    }

    #[test]
    fn the_command_line_refuses_bad_values() {
        let parse = |a: &[&str]| Args::parse(a.iter().map(std::ffi::OsString::from));
        let a = parse(&["a", "b", "--l2", "0.01", "--iterations", "50"]).unwrap();
        assert_eq!((a.train, a.test, a.l2, a.iterations), ("a".into(), "b".into(), Some(0.01), 50));
        assert_eq!(parse(&["a", "b", "--l2", "cv"]).unwrap().l2, None);
        for (bad, needle) in [
            (&["a", "b", "--l2", "-1"][..], "--l2 -1"),
            (&["a", "b", "--l2", "nan"], "--l2 nan"),
            (&["a", "b", "--iterations", "0"], "--iterations 0"),
            (&["a"], "usage"),
            (&["a", "b", "--l2"], "--l2 needs a value"),
            (&["a", "b", "--lr", "1"], "unknown option --lr"),
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }
}
