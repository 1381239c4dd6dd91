//! Images of one channel count read as another: RGB as grey by the ITU-R 601 luma weights (what
//! PIL's `convert("L")` computes), grey as RGB by repeating the channel. A network trained on
//! grey images can so be fine-tuned on colour ones, and the other way round.

use crate::{DataError, Dataset, Image, SharedDataset};
use std::sync::Arc;

impl Image {
    /// This image with `channels` channels (1 or 3).
    pub fn with_channels(self, channels: usize) -> Image {
        let pixels = match (self.channels, channels) {
            (3, 1) => self
                .pixels
                .chunks_exact(3)
                .map(|p| (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).round() as u8)
                .collect(),
            (1, 3) => self.pixels.iter().flat_map(|&v| [v; 3]).collect(),
            _ => return self,
        };
        Image { channels, pixels, ..self }
    }
}

/// A dataset whose images are read with another channel count.
struct ChannelView {
    inner: SharedDataset,
    channels: usize,
}

impl Dataset for ChannelView {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        self.inner.image_size()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(index)
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        Ok(self.inner.load(index)?.with_channels(self.channels))
    }
    fn describe(&self, index: usize) -> String {
        self.inner.describe(index)
    }
}

/// `dataset` with its images converted to `channels` channels (1 or 3); the dataset itself when
/// it already has them.
///
/// # Errors
/// A channel count other than 1 or 3.
pub fn with_channels(dataset: SharedDataset, channels: usize) -> Result<SharedDataset, DataError> {
    if !matches!(channels, 1 | 3) {
        return Err(DataError::config("input channels", format!("{channels} channels; images have 1 or 3")));
    }
    if dataset.channels() == channels {
        return Ok(dataset);
    }
    Ok(Arc::new(ChannelView { inner: dataset, channels }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_becomes_luma_and_grey_becomes_three_equal_channels() {
        let rgb = Image { height: 1, width: 2, channels: 3, pixels: vec![255, 0, 0, 10, 200, 30] };
        let grey = rgb.clone().with_channels(1);
        assert_eq!(grey.pixels, [76, 124]);
        assert_eq!(grey.clone().with_channels(3).pixels, [76, 76, 76, 124, 124, 124]);
        assert_eq!(rgb.clone().with_channels(3), rgb);
    }
}
