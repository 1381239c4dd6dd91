//! One image outside any dataset, prepared exactly as evaluation prepares a dataset's images:
//! what `resnet predict` feeds a network.

use crate::read::read_image_file;
use crate::transform::decode_rgb;
use crate::{DataError, EvalView, Image, Normalize};
use std::path::Path;

/// Reads a JPEG or PNG file as an image of `channels` channels (3: RGB; 1: grey, by the
/// ITU-R 601 luma weights). The file is checked before it is read, as
/// [`read_image_file`](crate::read_image_file) says: a JPEG or PNG signature, at most
/// [`MAX_IMAGE_FILE_BYTES`](crate::MAX_IMAGE_FILE_BYTES).
///
/// # Errors
/// A [`DataError`] naming the file: unreadable, not an image, too large, truncated or corrupt.
pub fn read_image(path: &Path, channels: usize) -> Result<Image, DataError> {
    let bytes = read_image_file(path)?;
    Ok(decode_rgb(&bytes, path)?.with_channels(channels))
}

/// Renders the views of `view` for one image at the network's input size `(h, w)` and
/// normalises them: `[views, h, w, c]` NHWC floats and that shape. [`EvalView::Full`] on an
/// image of another size becomes a resize of the shorter side to the input size and a centre
/// crop, so any photo can be given to a network trained on small images.
///
/// # Errors
/// A [`DataError`] when the view does not fit the input size or the statistics do not fit the
/// view.
pub fn prepare_views(
    img: &Image,
    view: &EvalView,
    norm: &Normalize,
    input: (usize, usize),
) -> Result<(Vec<f32>, [usize; 4]), DataError> {
    let view = match view {
        EvalView::Full if (img.height, img.width) != input => {
            EvalView::ResizeCenterCrop { resize: input.0.max(input.1), crop: input.0.min(input.1) }
        }
        v => v.clone(),
    };
    let (h, w) = view.output_size(Some((img.height, img.width)))?;
    let c = img.channels;
    norm.check((h, w, c))?;
    let views = view.views();
    let mut out = vec![0.0; views * h * w * c];
    view.render(img, norm, (h, w, c), &mut out).map_err(|reason| DataError::config("prepare views", reason))?;
    Ok((out, [views, h, w, c]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_an_image_of_another_size() {
        let img =
            Image { height: 40, width: 60, channels: 3, pixels: (0..40 * 60 * 3).map(|i| (i % 251) as u8).collect() };
        let (x, shape) = prepare_views(&img, &EvalView::Full, &Normalize::None, (32, 32)).unwrap();
        assert_eq!(shape, [1, 32, 32, 3]);
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        let (_, shape) =
            prepare_views(&img, &EvalView::TenCrop { resize: 36, crop: 32 }, &Normalize::None, (32, 32)).unwrap();
        assert_eq!(shape, [10, 32, 32, 3]);
        let mean = Normalize::PixelMean { mean: vec![0.0; 16 * 16 * 3], scale: 1.0 };
        assert!(prepare_views(&img, &EvalView::Full, &mean, (32, 32)).is_err());
    }
}
