//! Calibration: run the float network on a few images and find the range of every activation
//! the int8 network stores.

use crate::record::{projection, unit_name};
use crate::{ActivationQuant, Method, QuantError, QuantRecord, RECORD_FORMAT};
use resnet_models::{BatchNormMode, ResNet};
use resnet_nn::Tensor;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// Histogram bins of a non-negative activation.
const BINS: usize = 2048;

/// The values of one non-negative activation seen so far: their largest, and a histogram over
/// `[0, top)` whose range doubles (merging pairs of bins) when a larger value arrives.
#[derive(Clone, Debug)]
struct Histogram {
    top: f32,
    counts: Vec<u64>,
    max: f32,
    total: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram { top: 0.0, counts: vec![0; BINS], max: 0.0, total: 0 }
    }

    fn add(&mut self, values: impl Iterator<Item = f32>) -> Result<(), String> {
        for v in values {
            if !v.is_finite() {
                return Err(format!("a value that is not finite ({v})"));
            }
            let v = v.max(0.0);
            if v >= self.top {
                self.grow(v);
            }
            let bin = ((v / self.top) * BINS as f32) as usize;
            self.counts[bin.min(BINS - 1)] += 1;
            self.max = self.max.max(v);
            self.total += 1;
        }
        Ok(())
    }

    /// Widens the range past `v`: the first value sets it, later ones double it.
    fn grow(&mut self, v: f32) {
        if self.total == 0 || self.top == 0.0 {
            self.top = if v > 0.0 { v * 1.0001 } else { f32::MIN_POSITIVE };
            self.counts.iter_mut().for_each(|c| *c = 0);
            // Zeros seen before the first positive value all sit in the first bin.
            self.counts[0] = self.total;
            return;
        }
        while v >= self.top {
            for i in 0..BINS / 2 {
                self.counts[i] = self.counts[2 * i] + self.counts[2 * i + 1];
            }
            self.counts[BINS / 2..].iter_mut().for_each(|c| *c = 0);
            self.top *= 2.0;
        }
    }

    /// The upper edge of the bin where `percent` of the values lie at or below, at most the
    /// largest value seen.
    fn percentile(&self, percent: f64) -> f32 {
        let want = (self.total as f64 * percent / 100.0).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return ((i + 1) as f32 / BINS as f32 * self.top).min(self.max);
            }
        }
        self.max
    }
}

/// Collects activation ranges over calibration batches.
#[derive(Clone, Debug)]
pub struct Calibrator {
    method: Method,
    /// The input's range (signed, so min/max whatever the method).
    input: (f32, f32),
    /// Every other point's values (magnitudes for the signed ones, the projection outputs).
    points: BTreeMap<String, Histogram>,
    images: usize,
}

impl Calibrator {
    /// A calibrator for `method`.
    ///
    /// # Errors
    /// A percentile outside `(0, 100]`.
    pub fn new(method: Method) -> Result<Self, QuantError> {
        if let Method::Percentile(p) = method {
            if !(p > 0.0 && p <= 100.0) {
                return Err(QuantError::Calibration(format!("percentile {p} is not in (0, 100]")));
            }
        }
        Ok(Calibrator { method, input: (0.0, 0.0), points: BTreeMap::new(), images: 0 })
    }

    /// Runs `net` (eval mode) on the batch `x` and records every activation point's values.
    ///
    /// # Errors
    /// A value that is not finite (weights that overflow).
    ///
    /// # Panics
    /// If `x` does not fit the network (see [`ResNet::check_input`]).
    pub fn observe(&mut self, net: &mut ResNet, x: &Tensor) -> Result<(), QuantError> {
        net.forward(x, BatchNormMode::Eval);
        let bad = |name: &str, reason: String| QuantError::Calibration(format!("activation '{name}': {reason}"));
        for &v in x.data() {
            if !v.is_finite() {
                return Err(bad("input", format!("a value that is not finite ({v})")));
            }
            self.input = (self.input.0.min(v), self.input.1.max(v));
        }
        let mut record = |name: String, values: &mut dyn Iterator<Item = f32>| -> Result<(), QuantError> {
            let h = self.points.entry(name.clone()).or_insert_with(Histogram::new);
            h.add(values).map_err(|e| bad(&name, e))
        };
        // Inside a block the unit's output after batch norm and ReLU is never stored, nor a
        // projection's batch norm output, nor the stem's ReLU output before a max pool: each is
        // the convolution output through the unit's eval-mode affine map.
        let normalized = |unit: &resnet_models::ConvBn| {
            let (scale, shift) = unit.bn.affine(BatchNormMode::Eval);
            let c = scale.len();
            unit.y.data().iter().enumerate().map(move |(i, y)| y * scale[i % c] + shift[i % c]).collect::<Vec<f32>>()
        };
        record(unit_name(&net.stem.unit), &mut normalized(&net.stem.unit).into_iter().map(|v| v.max(0.0)))?;
        for block in &net.blocks {
            let (last, inner) = block.units.split_last().expect("a block has units");
            for unit in inner {
                record(unit_name(unit), &mut normalized(unit).into_iter().map(|v| v.max(0.0)))?;
            }
            if let Some(p) = projection(block) {
                // No ReLU: the magnitudes set a symmetric range.
                record(unit_name(p), &mut normalized(p).into_iter().map(f32::abs))?;
            }
            record(block.name.clone(), &mut last.z.data().iter().copied())?;
        }
        self.images += x.n();
        Ok(())
    }

    /// Images observed so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// The record of the ranges seen, for `net` (the network observed).
    ///
    /// # Errors
    /// If no image was observed, or `net` is not the network observed.
    pub fn finish(&self, net: &ResNet) -> Result<QuantRecord, QuantError> {
        if self.images == 0 {
            return Err(QuantError::Calibration("no calibration images were seen".into()));
        }
        let signed: BTreeSet<String> = net.blocks.iter().filter_map(projection).map(unit_name).collect();
        let mut activations = BTreeMap::new();
        activations.insert("input".to_string(), ActivationQuant::for_range(self.input.0, self.input.1));
        for (name, h) in &self.points {
            let hi = match self.method {
                Method::MinMax => h.max,
                Method::Percentile(p) => h.percentile(p),
            };
            let encoding = if signed.contains(name) {
                ActivationQuant::symmetric(hi)
            } else {
                ActivationQuant::for_range(0.0, hi)
            };
            activations.insert(name.clone(), encoding);
        }
        let record = QuantRecord {
            format: RECORD_FORMAT.into(),
            method: self.method,
            calibration_images: self.images,
            run_config: None,
            activations,
            float_layers: vec!["avgpool".into()],
        };
        record.check(net)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_follow_the_values_as_the_range_grows() {
        let mut h = Histogram::new();
        h.add([0.0, 0.0].into_iter()).unwrap();
        h.add((1..=1000).map(|i| i as f32 / 100.0)).unwrap();
        h.add([1000.0].into_iter()).unwrap();
        assert_eq!(h.total, 1003);
        assert_eq!(h.max, 1000.0);
        assert_eq!(h.percentile(100.0), 1000.0);
        // 99% of 1003 values: the 993rd, about 9.91, within a bin (1000 / 2048 wide) of it.
        let p = h.percentile(99.0);
        assert!((p - 9.91).abs() <= 1000.0 / 2048.0 + 0.01, "{p}");
        assert!(h.add([f32::NAN].into_iter()).is_err());
    }

    #[test]
    fn ranges_hold_zero_and_use_every_step() {
        let a = ActivationQuant::for_range(-1.0, 3.0);
        assert_eq!(a.scale, 4.0 / 255.0);
        assert_eq!(a.zero_point, 64);
        let r = ActivationQuant::for_range(0.5, 2.0);
        assert_eq!((r.scale, r.zero_point), (2.0 / 255.0, 0));
        assert_eq!(ActivationQuant::for_range(0.0, 0.0), ActivationQuant { scale: 1.0, zero_point: 0 });
    }
}
