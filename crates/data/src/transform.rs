//! Image decoding and the geometric primitives of augmentation: resampling a rectangle of an image
//! to an output grid (resize, crop and flip in one pass) with an antialiasing triangle filter.

use crate::{DataError, Image};
use std::path::Path;

/// Decodes a JPEG or PNG file into 8-bit RGB (grey, alpha, 16-bit and palette images are
/// converted; alpha is dropped).
pub(crate) fn decode_rgb(bytes: &[u8], path: &Path) -> Result<Image, DataError> {
    let format = sniff_image(bytes, path)?;
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "truncated JPEG: no end-of-image marker (FF D9) after the last scan ({} bytes)",
                bytes.len()
            ),
        });
    }
    // The decoder's default limits (512 MiB) stop a header that claims an absurd size.
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| DataError::Decode { path: path.to_path_buf(), reason: e.to_string() })?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image { height: h as usize, width: w as usize, channels: 3, pixels: rgb.into_raw() })
}

/// JPEG or PNG, from the first bytes of a file (its signature); anything else is not an image
/// this crate reads.
pub(crate) fn sniff_image(bytes: &[u8], path: &Path) -> Result<image::ImageFormat, DataError> {
    match image::guess_format(bytes) {
        Ok(f @ (image::ImageFormat::Jpeg | image::ImageFormat::Png)) => Ok(f),
        Ok(other) => Err(DataError::NotAnImage {
            path: path.to_path_buf(),
            reason: format!("it is {other:?}; only JPEG and PNG are read"),
        }),
        Err(_) => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(DataError::NotAnImage {
                path: path.to_path_buf(),
                reason: if bytes.is_empty() {
                    "the file is empty".into()
                } else {
                    format!("not a JPEG or PNG file (first bytes {})", head.join(" "))
                },
            })
        }
    }
}

/// Whether a JPEG stream ends its last scan with an end-of-image marker. The decoder fills a
/// scan cut short with grey rather than failing, so a truncated file would otherwise pass as
/// valid. Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker,
/// so `FF D9` after the last start-of-scan (`FF DA`) can only be the real end marker; an EXIF
/// thumbnail's markers all come before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// A rectangle in source pixel coordinates (continuous: pixel `i` covers `[i, i + 1)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub y: f64,
    pub x: f64,
    pub h: f64,
    pub w: f64,
}

impl Rect {
    /// The whole of an `h x w` image.
    #[cfg(test)]
    pub(crate) fn full(h: usize, w: usize) -> Self {
        Rect { y: 0.0, x: 0.0, h: h as f64, w: w as f64 }
    }
}

/// The size `(h, w)` of an image whose shorter side is resized to `side`, keeping the aspect
/// ratio (torchvision's `Resize(int)` rounding).
pub(crate) fn shorter_side_to(h: usize, w: usize, side: usize) -> (usize, usize) {
    if h <= w {
        (side, ((w as f64 * side as f64 / h as f64).round() as usize).max(side))
    } else {
        (((h as f64 * side as f64 / w as f64).round() as usize).max(side), side)
    }
}

/// The source rectangle of the window `(y0, x0, ch, cw)` of an `h x w` image resized to
/// `rh x rw`.
pub(crate) fn window_of_resized(
    h: usize,
    w: usize,
    (rh, rw): (usize, usize),
    y0: usize,
    x0: usize,
    ch: usize,
    cw: usize,
) -> Rect {
    let sy = h as f64 / rh as f64;
    let sx = w as f64 / rw as f64;
    Rect { y: y0 as f64 * sy, x: x0 as f64 * sx, h: ch as f64 * sy, w: cw as f64 * sx }
}

/// Resampling weights along one axis: for each output index, the first source index and the
/// weights of the source indices from there.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f32>,
    stride: usize,
}

impl Taps {
    /// Output `n` samples covering `[s0, s0 + sl)` of a source of length `src`. Downscaling
    /// widens the triangle filter to the scale factor, so that every source pixel contributes
    /// (the antialiasing of PIL's bilinear resize, which torchvision uses).
    fn new(src: usize, s0: f64, sl: f64, n: usize) -> Self {
        let scale = sl / n as f64;
        let support = scale.max(1.0);
        let stride = (2.0 * support).ceil() as usize + 2;
        let mut t = Taps { start: vec![0; n], len: vec![0; n], weights: vec![0.0; n * stride], stride };
        for i in 0..n {
            let center = s0 + (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0) as usize).min(src - 1);
            let hi = ((center + support).ceil().max(0.0) as usize).clamp(lo + 1, src).min(lo + stride);
            let w = &mut t.weights[i * stride..(i + 1) * stride];
            let mut sum = 0.0;
            for j in lo..hi {
                let d = ((j as f64 + 0.5 - center) / support).abs();
                let v = (1.0 - d).max(0.0);
                w[j - lo] = v as f32;
                sum += v;
            }
            if sum > 0.0 {
                for v in &mut w[..hi - lo] {
                    *v = (*v as f64 / sum) as f32;
                }
            } else {
                // The centre lies outside the image (only at the very edge): take the nearest pixel.
                w[..hi - lo].fill(0.0);
                w[0] = 1.0;
            }
            t.start[i] = lo;
            t.len[i] = hi - lo;
        }
        t
    }
}

/// Resamples the rectangle `r` of `img` to `out_h x out_w`, mirrored left-right when `flip`, and
/// writes the result as `f32` on the 0..255 scale (HWC) into `out`.
///
/// # Panics
/// If `out` is not `out_h * out_w * channels` long or the image is empty.
pub(crate) fn resample(img: &Image, r: Rect, out_h: usize, out_w: usize, flip: bool, out: &mut [f32]) {
    let c = img.channels;
    assert_eq!(out.len(), out_h * out_w * c, "resample output size");
    assert!(img.height > 0 && img.width > 0, "empty image");
    let ty = Taps::new(img.height, r.y, r.h, out_h);
    let tx = Taps::new(img.width, r.x, r.w, out_w);
    // Horizontal pass over just the source rows the vertical pass will read.
    let row0 = ty.start.iter().copied().min().unwrap_or(0);
    let row1 = (0..out_h).map(|i| ty.start[i] + ty.len[i]).max().unwrap_or(0);
    let mut tmp = vec![0f32; (row1 - row0) * out_w * c];
    let mut rowf = vec![0f32; img.width * c];
    for sy in row0..row1 {
        let src = &img.pixels[sy * img.width * c..(sy + 1) * img.width * c];
        // Converting the row once keeps the tap loop to multiply-adds.
        for (f, &p) in rowf.iter_mut().zip(src) {
            *f = p as f32;
        }
        let dst = &mut tmp[(sy - row0) * out_w * c..(sy - row0 + 1) * out_w * c];
        for ox in 0..out_w {
            let i = if flip { out_w - 1 - ox } else { ox };
            let (s, n) = (tx.start[i], tx.len[i]);
            let w = &tx.weights[i * tx.stride..i * tx.stride + n];
            let taps = &rowf[s * c..(s + n) * c];
            let d = &mut dst[ox * c..(ox + 1) * c];
            if c == 3 {
                // RGB, the common case, with the channel loop unrolled.
                let mut acc = [0f32; 3];
                for (p, &wk) in taps.chunks_exact(3).zip(w) {
                    acc[0] += wk * p[0];
                    acc[1] += wk * p[1];
                    acc[2] += wk * p[2];
                }
                d.copy_from_slice(&acc);
            } else {
                for (p, &wk) in taps.chunks_exact(c).zip(w) {
                    for (dv, &pv) in d.iter_mut().zip(p) {
                        *dv += wk * pv;
                    }
                }
            }
        }
    }
    let row = out_w * c;
    for oy in 0..out_h {
        let (s, n) = (ty.start[oy], ty.len[oy]);
        let w = &ty.weights[oy * ty.stride..oy * ty.stride + n];
        let dst = &mut out[oy * row..(oy + 1) * row];
        dst.fill(0.0);
        for (k, &wk) in w.iter().enumerate() {
            let src = &tmp[(s + k - row0) * row..(s + k - row0 + 1) * row];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += wk * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Image {
        let pixels = (0..h * w).flat_map(|i| [(i % w) as u8 * 10, (i / w) as u8 * 10, 7]).collect();
        Image { height: h, width: w, channels: 3, pixels }
    }

    #[test]
    fn identity_resample_is_exact_and_flip_mirrors() {
        let img = ramp(5, 7);
        let mut out = vec![0.0; 5 * 7 * 3];
        resample(&img, Rect::full(5, 7), 5, 7, false, &mut out);
        for (a, &b) in out.iter().zip(&img.pixels) {
            assert!((a - b as f32).abs() < 1e-3);
        }
        resample(&img, Rect::full(5, 7), 5, 7, true, &mut out);
        assert!((out[0] - 60.0).abs() < 1e-3, "first column of the flip is the last column");
    }

    #[test]
    fn downscale_averages_and_crop_selects() {
        let img = Image {
            height: 4,
            width: 4,
            channels: 1,
            pixels: vec![0, 100, 0, 100, 0, 100, 0, 100, 50, 50, 50, 50, 50, 50, 50, 50],
        };
        let mut out = vec![0.0; 1];
        resample(&img, Rect::full(4, 4), 1, 1, false, &mut out);
        assert!((out[0] - 50.0).abs() < 1.0, "{out:?}");
        let mut out = vec![0.0; 4];
        resample(&img, Rect { y: 2.0, x: 0.0, h: 2.0, w: 2.0 }, 2, 2, false, &mut out);
        assert!(out.iter().all(|v| (v - 50.0).abs() < 1e-3), "{out:?}");
        assert_eq!(shorter_side_to(300, 400, 256), (256, 341));
        assert_eq!(shorter_side_to(400, 300, 256), (341, 256));
    }
}
