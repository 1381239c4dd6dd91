//! Input normalisation: the paper's per-pixel mean subtraction (Section 3.4, after Krizhevsky et
//! al. 2012; Section 4.2 for CIFAR-10) and torchvision's per-channel mean/std, plus the statistics
//! both need.

use crate::transform::{resample, shorter_side_to, window_of_resized};
use crate::{par, DataError, Dataset};
use serde::{Deserialize, Serialize};

/// How 8-bit pixels `p` become network inputs `x`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Normalize {
    /// `x = p / 255`.
    None,
    /// `x = (p - mean[y, x, c]) * scale`: the paper's per-pixel mean subtraction. `mean` is an
    /// HWC image on the 0..255 scale at the loader's output size (see [`pixel_mean`]); it is
    /// stored with the model so that evaluation subtracts the same image.
    PixelMean {
        /// The mean image, `h * w * c` values.
        mean: Vec<f32>,
        /// Multiplier after subtraction (`1 / 255` keeps inputs near unit range; `1` is Caffe's).
        scale: f32,
    },
    /// `x = (p / 255 - mean[c]) / std[c]`, torchvision's `Normalize` (needed for its weights).
    ChannelMeanStd {
        /// Per-channel mean on the 0..1 scale.
        mean: Vec<f32>,
        /// Per-channel standard deviation on the 0..1 scale.
        std: Vec<f32>,
    },
}

impl Normalize {
    /// torchvision's ImageNet statistics, for its pretrained weights.
    pub fn imagenet() -> Self {
        Normalize::ChannelMeanStd { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// Checks the statistics against a view of `h x w x c`.
    pub(crate) fn check(&self, (h, w, c): (usize, usize, usize)) -> Result<(), DataError> {
        match self {
            Normalize::None => Ok(()),
            Normalize::PixelMean { mean, scale } => {
                if mean.len() != h * w * c {
                    return Err(DataError::config(
                        "normalize: pixel mean",
                        format!(
                            "the mean image has {} values but the images are {h}x{w}x{c} = {}: a per-pixel \
                             mean fits only images of the size it was computed at (for views that crop or \
                             resize, normalise by channel: mean-std)",
                            mean.len(),
                            h * w * c
                        ),
                    ));
                }
                if !scale.is_finite() || mean.iter().any(|m| !m.is_finite()) {
                    return Err(DataError::config("normalize: pixel mean", "the mean or scale is not finite"));
                }
                Ok(())
            }
            Normalize::ChannelMeanStd { mean, std } => {
                if mean.len() != c || std.len() != c {
                    return Err(DataError::config(
                        "normalize: channel mean/std",
                        format!("{} means and {} stds for {c}-channel images", mean.len(), std.len()),
                    ));
                }
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
                    return Err(DataError::config(
                        "normalize: channel mean/std",
                        "every std must be positive and finite",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Normalises one view in place: `px` holds `f32` pixels on the 0..255 scale, HWC with `c`
    /// channels, at the loader's output size.
    pub(crate) fn apply(&self, px: &mut [f32], c: usize) {
        match self {
            Normalize::None => px.iter_mut().for_each(|v| *v *= 1.0 / 255.0),
            Normalize::PixelMean { mean, scale } => {
                for (v, m) in px.iter_mut().zip(mean) {
                    *v = (*v - m) * scale;
                }
            }
            Normalize::ChannelMeanStd { mean, std } => {
                // (p / 255 - m) / s = p * a + b with a = 1 / (255 s), b = -m / s.
                let ab: Vec<(f32, f32)> = (0..c).map(|k| (1.0 / (255.0 * std[k]), -mean[k] / std[k])).collect();
                for pix in px.chunks_exact_mut(c) {
                    for (v, &(a, b)) in pix.iter_mut().zip(&ab) {
                        *v = *v * a + b;
                    }
                }
            }
        }
    }

    /// The normalised value of pixel value `p` at flat HWC position `i` (channel `i % c`).
    pub(crate) fn value(&self, p: f32, i: usize, c: usize) -> f32 {
        match self {
            Normalize::None => p * (1.0 / 255.0),
            Normalize::PixelMean { mean, scale } => (p - mean[i]) * scale,
            Normalize::ChannelMeanStd { mean, std } => (p / 255.0 - mean[i % c]) / std[i % c],
        }
    }
}

/// Samples per block of a statistics pass: blocks are fixed, so sums come out in the same order
/// whatever the number of threads.
const BLOCK: usize = 256;

/// The mean image over `ds` (HWC, 0..255 scale), `height x width` with the dataset's channels:
/// the paper's "per-pixel mean". Images of another size are first resized (shorter side to
/// `max(height, width)`) and centre-cropped.
///
/// Parallel and deterministic (fixed blocks summed in order).
///
/// # Errors
/// The first sample that fails to load, or [`DataError::Config`] for an empty dataset or size.
pub fn pixel_mean(ds: &dyn Dataset, height: usize, width: usize) -> Result<Vec<f32>, DataError> {
    let n = ds.len();
    if n == 0 || height == 0 || width == 0 {
        return Err(DataError::config(
            "pixel mean",
            format!("needs samples and a size; got {n} samples, {height}x{width}"),
        ));
    }
    let c = ds.channels();
    let len = height * width * c;
    let blocks = par::map(n.div_ceil(BLOCK), |b| -> Result<Vec<f64>, DataError> {
        let mut sum = vec![0f64; len];
        let mut view = vec![0f32; len];
        for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
            let img = ds.load(i)?;
            if (img.height, img.width) == (height, width) {
                for (s, &p) in sum.iter_mut().zip(&img.pixels) {
                    *s += p as f64;
                }
            } else {
                let side = height.max(width);
                let (rh, rw) = shorter_side_to(img.height, img.width, side);
                let (y0, x0) = ((rh - height) / 2, (rw - width) / 2);
                let r = window_of_resized(img.height, img.width, (rh, rw), y0, x0, height, width);
                resample(&img, r, height, width, false, &mut view);
                for (s, &p) in sum.iter_mut().zip(&view) {
                    *s += p as f64;
                }
            }
        }
        Ok(sum)
    });
    let mut total = vec![0f64; len];
    for b in blocks {
        for (t, s) in total.iter_mut().zip(b?) {
            *t += s;
        }
    }
    Ok(total.iter().map(|&t| (t / n as f64) as f32).collect())
}

/// Per-channel mean and standard deviation (population) over every pixel of every image of
/// `ds`, on the 0..255 scale. Exact integer sums, so independent of the number of threads.
///
/// # Errors
/// The first sample that fails to load, or [`DataError::Config`] for an empty dataset.
pub fn channel_mean_std(ds: &dyn Dataset) -> Result<(Vec<f32>, Vec<f32>), DataError> {
    let n = ds.len();
    if n == 0 {
        return Err(DataError::config("channel mean/std", "the dataset has no samples"));
    }
    let c = ds.channels();
    let blocks = par::map(n.div_ceil(BLOCK), |b| -> Result<(Vec<u64>, Vec<u64>, u64), DataError> {
        let (mut s, mut s2, mut count) = (vec![0u64; c], vec![0u64; c], 0u64);
        for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
            let img = ds.load(i)?;
            for px in img.pixels.chunks_exact(c) {
                for k in 0..c {
                    let v = px[k] as u64;
                    s[k] += v;
                    s2[k] += v * v;
                }
            }
            count += (img.height * img.width) as u64;
        }
        Ok((s, s2, count))
    });
    let (mut s, mut s2, mut count) = (vec![0u64; c], vec![0u64; c], 0u64);
    for b in blocks {
        let (bs, bs2, bc) = b?;
        for k in 0..c {
            s[k] += bs[k];
            s2[k] += bs2[k];
        }
        count += bc;
    }
    if count == 0 {
        return Err(DataError::config("channel mean/std", "the images have no pixels"));
    }
    let mean: Vec<f64> = s.iter().map(|&v| v as f64 / count as f64).collect();
    let std = (0..c).map(|k| ((s2[k] as f64 / count as f64 - mean[k] * mean[k]).max(0.0)).sqrt() as f32).collect();
    Ok((mean.iter().map(|&m| m as f32).collect(), std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pixel_mean_of_another_size_is_explained_in_users_words() {
        let n = Normalize::PixelMean { mean: vec![0.0; 4 * 4 * 3], scale: 1.0 };
        let err = n.check((2, 2, 3)).unwrap_err().to_string();
        assert!(err.contains("48 values") && err.contains("2x2x3 = 12") && err.contains("mean-std"), "{err}");
        assert!(!err.contains("pixel_mean("), "no library call in a user's message: {err}");
        assert!(n.check((4, 4, 3)).is_ok());
    }
}
