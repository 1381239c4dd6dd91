//! Training augmentation and evaluation views, as in the paper and as torchvision users expect.
//!
//! Every random choice comes from the generator the loader derives for `(seed, epoch, sample)`,
//! drawn in a fixed order, so a sample looks the same whichever thread renders it.

use crate::normalize::Normalize;
use crate::transform::{resample, shorter_side_to, window_of_resized, Rect};
use crate::{DataError, Image};
use resnet_kernels::rng::Rng;
use serde::{Deserialize, Serialize};

/// How a training sample is augmented.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrainAugment {
    /// The image as it is (all images must have one size).
    None,
    /// The paper's CIFAR-10 augmentation (Section 4.2, after Lee et al. 2014): `pad` pixels of
    /// zero padding on each side, a random crop back to the original size, and a random
    /// horizontal flip. The padding is zero in the normalised input, i.e. after mean
    /// subtraction, as the paper describes it.
    PadCropFlip {
        /// Padding on each side (4 in the paper).
        pad: usize,
    },
    /// The paper's ImageNet training (Section 3.4, after Simonyan and Zisserman): shorter side
    /// resized to a random size in `[min, max]`, a random `crop x crop` crop, a random horizontal
    /// flip and, with `pca`, AlexNet's PCA colour augmentation (Krizhevsky et al. 2012).
    ScaleAugment {
        /// Smallest shorter side (256 in the paper).
        min: usize,
        /// Largest shorter side (480 in the paper).
        max: usize,
        /// Output side (224).
        crop: usize,
        /// AlexNet colour augmentation.
        pca: bool,
    },
    /// torchvision's `RandomResizedCrop(size)` (area 8%..100%, aspect ratio 3/4..4/3) and a
    /// random horizontal flip; with `pca`, AlexNet's colour augmentation too.
    RandomResizedCrop {
        /// Output side.
        size: usize,
        /// AlexNet colour augmentation.
        pca: bool,
    },
}

/// How an evaluation sample is presented; some views yield several crops per sample, whose
/// scores `eval` averages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EvalView {
    /// The image as it is (CIFAR evaluation: "the single view of the original 32x32 image").
    Full,
    /// Shorter side resized to `resize`, centre `crop x crop` crop (the single-crop ImageNet
    /// evaluation, 256/224).
    ResizeCenterCrop {
        /// Shorter side.
        resize: usize,
        /// Output side.
        crop: usize,
    },
    /// The paper's "standard 10-crop testing" (Section 3.4): shorter side to `resize`, the four
    /// corner crops and the centre crop, then the same five crops of the mirrored image
    /// (torchvision's `TenCrop` order).
    TenCrop {
        /// Shorter side.
        resize: usize,
        /// Output side.
        crop: usize,
    },
    /// 10-crop at each shorter side in `scales` (multi-scale testing, Section 3.4): `10 *
    /// scales.len()` views, scale by scale.
    MultiScale {
        /// Shorter sides (the paper uses 224, 256, 384, 480, 640).
        scales: Vec<usize>,
        /// Output side.
        crop: usize,
    },
}

/// AlexNet's PCA colour augmentation: eigenvalues and eigenvectors (columns) of the ImageNet
/// RGB covariance on the 0..1 scale, as published with fb.resnet.torch, and the standard
/// deviation of the random weights (0.1, as in Krizhevsky et al. 2012).
const PCA_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
const PCA_EIGVEC: [[f32; 3]; 3] = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]];
const PCA_STD: f64 = 0.1;

fn need_size(size: Option<(usize, usize)>, what: &str) -> Result<(usize, usize), DataError> {
    size.ok_or_else(|| {
        DataError::config(
            what,
            "the dataset's images differ in size; choose a training augmentation that resizes \
             (scale, random-resized-crop) and an evaluation view that does (center, ten-crop, multi-scale)",
        )
    })
}

fn check_crop(what: &str, crop: usize, side: usize) -> Result<(), DataError> {
    if crop == 0 || side == 0 {
        return Err(DataError::config(what, "sizes must be at least 1"));
    }
    if crop > side {
        return Err(DataError::config(what, format!("crop {crop} is larger than the resized shorter side {side}")));
    }
    Ok(())
}

/// Checks that `img` has the size and channels a fixed-size mode expects.
fn check_image(img: &Image, (h, w, c): (usize, usize, usize)) -> Result<(), String> {
    if (img.height, img.width, img.channels) != (h, w, c) {
        return Err(format!(
            "image is {}x{}x{} but the loader's output is {h}x{w}x{c} and this mode does not resize",
            img.height, img.width, img.channels
        ));
    }
    Ok(())
}

/// `px` (0..255, HWC with `c` channels) with the PCA colour shift for this sample added.
fn lighting(px: &mut [f32], c: usize, rng: &mut Rng) {
    let alpha: Vec<f32> = (0..3).map(|_| (rng.normal() * PCA_STD) as f32).collect();
    let mut shift = [0f32; 3];
    for (i, s) in shift.iter_mut().enumerate() {
        *s = 255.0 * (0..3).map(|j| PCA_EIGVEC[i][j] * alpha[j] * PCA_EIGVAL[j]).sum::<f32>();
    }
    for pix in px.chunks_exact_mut(c) {
        for (v, s) in pix.iter_mut().zip(shift) {
            *v += s;
        }
    }
}

/// An image a view can be rendered from: the dataset's channel count, not empty.
fn check_renderable(img: &Image, c: usize) -> Result<(), String> {
    if img.channels != c {
        return Err(format!("image has {} channels, the dataset {c}", img.channels));
    }
    if img.height == 0 || img.width == 0 {
        return Err("image is empty".into());
    }
    Ok(())
}

fn copy_u8(img: &Image, out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(&img.pixels) {
        *o = p as f32;
    }
}

impl TrainAugment {
    /// `(h, w)` of the output for a dataset whose images are `size` (`None`: sizes differ).
    pub(crate) fn output_size(
        &self,
        size: Option<(usize, usize)>,
        channels: usize,
    ) -> Result<(usize, usize), DataError> {
        let pca = match self {
            TrainAugment::ScaleAugment { pca, .. } | TrainAugment::RandomResizedCrop { pca, .. } => *pca,
            _ => false,
        };
        if pca && channels != 3 {
            return Err(DataError::config(
                "augmentation: pca",
                format!("PCA colour augmentation needs RGB images, not {channels} channel(s)"),
            ));
        }
        match self {
            TrainAugment::None => need_size(size, "augmentation none"),
            TrainAugment::PadCropFlip { .. } => need_size(size, "augmentation pad-crop-flip"),
            TrainAugment::ScaleAugment { min, max, crop, .. } => {
                if min > max {
                    return Err(DataError::config("augmentation scale", format!("min {min} is above max {max}")));
                }
                check_crop("augmentation scale", *crop, *min)?;
                Ok((*crop, *crop))
            }
            TrainAugment::RandomResizedCrop { size: s, .. } => {
                check_crop("augmentation random-resized-crop", *s, *s)?;
                Ok((*s, *s))
            }
        }
    }

    /// Augments and normalises one sample into `out` (`h * w * c` values).
    pub(crate) fn render(
        &self,
        img: &Image,
        rng: &mut Rng,
        norm: &Normalize,
        (h, w, c): (usize, usize, usize),
        out: &mut [f32],
    ) -> Result<(), String> {
        check_renderable(img, c)?;
        match self {
            TrainAugment::None => {
                check_image(img, (h, w, c))?;
                copy_u8(img, out);
                norm.apply(out, c);
            }
            TrainAugment::PadCropFlip { pad } => {
                check_image(img, (h, w, c))?;
                let dy = rng.below(2 * *pad as u64 + 1) as usize;
                let dx = rng.below(2 * *pad as u64 + 1) as usize;
                let flip = rng.bernoulli(0.5);
                // Output pixel (oy, ox) is source pixel (oy + dy - pad, ox' + dx - pad), where ox'
                // is ox or its mirror; outside the source it is the zero of the padding.
                for oy in 0..h {
                    let sy = (oy + dy).checked_sub(*pad).filter(|&s| s < h);
                    for ox in 0..w {
                        let o = &mut out[(oy * w + ox) * c..(oy * w + ox + 1) * c];
                        let ox = if flip { w - 1 - ox } else { ox };
                        let sx = (ox + dx).checked_sub(*pad).filter(|&s| s < w);
                        match (sy, sx) {
                            (Some(sy), Some(sx)) => {
                                let i = (sy * w + sx) * c;
                                for k in 0..c {
                                    o[k] = norm.value(img.pixels[i + k] as f32, i + k, c);
                                }
                            }
                            _ => o.fill(0.0),
                        }
                    }
                }
            }
            TrainAugment::ScaleAugment { min, max, crop, pca } => {
                let side = min + rng.below((max - min) as u64 + 1) as usize;
                let (rh, rw) = shorter_side_to(img.height, img.width, side);
                let y0 = rng.below((rh - crop) as u64 + 1) as usize;
                let x0 = rng.below((rw - crop) as u64 + 1) as usize;
                let flip = rng.bernoulli(0.5);
                // Only the crop window of the resized image is computed.
                let r = window_of_resized(img.height, img.width, (rh, rw), y0, x0, *crop, *crop);
                resample(img, r, h, w, flip, out);
                if *pca {
                    lighting(out, c, rng);
                }
                norm.apply(out, c);
            }
            TrainAugment::RandomResizedCrop { pca, .. } => {
                let r = random_resized_rect(img.height, img.width, rng);
                let flip = rng.bernoulli(0.5);
                resample(img, r, h, w, flip, out);
                if *pca {
                    lighting(out, c, rng);
                }
                norm.apply(out, c);
            }
        }
        Ok(())
    }
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3): ten
/// tries at a random area and log-uniform aspect ratio, else the central crop at the nearest
/// allowed ratio.
fn random_resized_rect(h: usize, w: usize, rng: &mut Rng) -> Rect {
    let area = (h * w) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.uniform(0.08, 1.0) as f64;
        let ratio = (lr0 + (lr1 - lr0) * rng.next_f64()).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let y = rng.below((h - ch) as u64 + 1) as usize;
            let x = rng.below((w - cw) as u64 + 1) as usize;
            return Rect { y: y as f64, x: x as f64, h: ch as f64, w: cw as f64 };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < 3.0 / 4.0 {
        (((w as f64) / (3.0 / 4.0)).round().min(h as f64) as usize, w)
    } else if in_ratio > 4.0 / 3.0 {
        (h, ((h as f64) * (4.0 / 3.0)).round().min(w as f64) as usize)
    } else {
        (h, w)
    };
    Rect { y: ((h - ch) / 2) as f64, x: ((w - cw) / 2) as f64, h: ch.max(1) as f64, w: cw.max(1) as f64 }
}

impl EvalView {
    /// Views per sample.
    pub fn views(&self) -> usize {
        match self {
            EvalView::Full | EvalView::ResizeCenterCrop { .. } => 1,
            EvalView::TenCrop { .. } => 10,
            EvalView::MultiScale { scales, .. } => 10 * scales.len(),
        }
    }

    /// `(h, w)` of each view for a dataset whose images are `size`.
    pub(crate) fn output_size(&self, size: Option<(usize, usize)>) -> Result<(usize, usize), DataError> {
        match self {
            EvalView::Full => need_size(size, "view full"),
            EvalView::ResizeCenterCrop { resize, crop } => {
                check_crop("view center", *crop, *resize)?;
                Ok((*crop, *crop))
            }
            EvalView::TenCrop { resize, crop } => {
                check_crop("view ten-crop", *crop, *resize)?;
                Ok((*crop, *crop))
            }
            EvalView::MultiScale { scales, crop } => {
                let smallest = scales
                    .iter()
                    .copied()
                    .min()
                    .ok_or_else(|| DataError::config("view multi-scale", "needs at least one scale"))?;
                check_crop("view multi-scale", *crop, smallest)?;
                Ok((*crop, *crop))
            }
        }
    }

    /// Renders and normalises every view of one sample into `out` (`views * h * w * c`).
    pub(crate) fn render(
        &self,
        img: &Image,
        norm: &Normalize,
        (h, w, c): (usize, usize, usize),
        out: &mut [f32],
    ) -> Result<(), String> {
        check_renderable(img, c)?;
        let view = h * w * c;
        match self {
            EvalView::Full => {
                check_image(img, (h, w, c))?;
                copy_u8(img, out);
                norm.apply(out, c);
            }
            EvalView::ResizeCenterCrop { resize, crop } => {
                let (rh, rw) = shorter_side_to(img.height, img.width, *resize);
                let r =
                    window_of_resized(img.height, img.width, (rh, rw), (rh - crop) / 2, (rw - crop) / 2, *crop, *crop);
                resample(img, r, h, w, false, out);
                norm.apply(out, c);
            }
            EvalView::TenCrop { resize, crop } => ten_crop(img, *resize, *crop, norm, c, out),
            EvalView::MultiScale { scales, crop } => {
                for (k, &s) in scales.iter().enumerate() {
                    ten_crop(img, s, *crop, norm, c, &mut out[k * 10 * view..(k + 1) * 10 * view]);
                }
            }
        }
        Ok(())
    }
}

/// The top-left corners of the five crops (top-left, top-right, bottom-left, bottom-right,
/// centre) of `crop x crop` in an `rh x rw` image.
pub(crate) fn five_crop_corners(rh: usize, rw: usize, crop: usize) -> [(usize, usize); 5] {
    [(0, 0), (0, rw - crop), (rh - crop, 0), (rh - crop, rw - crop), ((rh - crop) / 2, (rw - crop) / 2)]
}

fn ten_crop(img: &Image, resize: usize, crop: usize, norm: &Normalize, c: usize, out: &mut [f32]) {
    let (rh, rw) = shorter_side_to(img.height, img.width, resize);
    let view = crop * crop * c;
    let corners = five_crop_corners(rh, rw, crop);
    for (v, (flip, (y0, x0))) in [false, true].into_iter().flat_map(|f| corners.map(|p| (f, p))).enumerate() {
        // A crop at x0 of the mirrored image is the mirror of the crop at rw - crop - x0.
        let x = if flip { rw - crop - x0 } else { x0 };
        let r = window_of_resized(img.height, img.width, (rh, rw), y0, x, crop, crop);
        let o = &mut out[v * view..(v + 1) * view];
        resample(img, r, crop, crop, flip, o);
        norm.apply(o, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_resized_rect_stays_inside() {
        let mut rng = Rng::new(1);
        for (h, w) in [(10, 300), (300, 10), (50, 60), (1, 1)] {
            for _ in 0..200 {
                let r = random_resized_rect(h, w, &mut rng);
                assert!(r.y >= 0.0 && r.x >= 0.0 && r.h >= 1.0 && r.w >= 1.0);
                assert!(r.y + r.h <= h as f64 && r.x + r.w <= w as f64, "{r:?} in {h}x{w}");
            }
        }
    }

    #[test]
    fn lighting_shifts_every_pixel_by_one_colour() {
        let mut px = vec![100.0f32; 4 * 3];
        lighting(&mut px, 3, &mut Rng::new(5));
        assert_eq!(px[0..3], px[9..12]);
        assert!(px.iter().any(|&v| (v - 100.0).abs() > 1e-3));
    }
}
