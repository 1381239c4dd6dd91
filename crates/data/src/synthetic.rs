//! A procedurally generated, learnable 10-class image set that needs no files: one coloured
//! shape per image, the class being the shape, at a random position and scale, in random
//! foreground and background colours, with pixel noise. Sample `i` of a split is a pure function
//! of `(seed, split, i)`, so it can be generated on any thread, in any order, any number of times.

use crate::{DataError, Dataset, Image};
use resnet_kernels::rng::Rng;

/// The classes, in label order.
pub(crate) const SHAPES: [&str; 10] =
    ["disk", "square", "triangle", "plus", "ring", "diamond", "hstripes", "vstripes", "cross", "checker"];

/// Stream tag of the generator, so that its numbers never coincide with the loader's.
const TAG: u64 = 0x5917_7E71_C000_0000;

/// A generated split: `count` images of `size x size x 3`.
pub(crate) struct SyntheticDataset {
    classes: Vec<String>,
    count: usize,
    size: usize,
    seed: u64,
    split: u64,
}

impl SyntheticDataset {
    /// Split `split` (0 train, 1 test) of the set generated from `seed`.
    pub(crate) fn new(count: usize, size: usize, seed: u64, split: u64) -> Self {
        Self { classes: SHAPES.iter().map(|s| s.to_string()).collect(), count, size, seed, split }
    }
}

/// Whether the point `(u, v)` (relative to the shape's centre, in units of its radius, `v` down)
/// lies inside shape `class`.
fn inside(class: u32, u: f32, v: f32) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let boxed = au.max(av) <= 0.9;
    match class {
        0 => u * u + v * v <= 1.0,
        1 => au.max(av) <= 0.8,
        2 => (-0.8..=0.8).contains(&v) && au <= (v + 0.8) * 0.6,
        3 => (au <= 0.28 && av <= 0.95) || (av <= 0.28 && au <= 0.95),
        4 => (0.3..=1.0).contains(&(u * u + v * v)),
        5 => au + av <= 1.0,
        6 => boxed && ((v + 1.0) * 2.5).floor() as i32 % 2 == 0,
        7 => boxed && ((u + 1.0) * 2.5).floor() as i32 % 2 == 0,
        8 => boxed && ((u - v).abs() <= 0.3 || (u + v).abs() <= 0.3),
        _ => boxed && (((u + 1.0) * 2.0).floor() as i32 + ((v + 1.0) * 2.0).floor() as i32) % 2 == 0,
    }
}

fn colour(rng: &mut Rng) -> [f32; 3] {
    [rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0)]
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.count
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn channels(&self) -> usize {
        3
    }
    fn image_size(&self) -> Option<(usize, usize)> {
        Some((self.size, self.size))
    }
    fn label(&self, index: usize) -> u32 {
        (index % SHAPES.len()) as u32
    }
    fn load(&self, index: usize) -> Result<Image, DataError> {
        assert!(index < self.count, "sample {index} of {}", self.count);
        let mut rng = Rng::derive(self.seed, &[TAG, self.split, index as u64]);
        let class = self.label(index);
        let s = self.size as f32;
        let bg = colour(&mut rng);
        // Redraw the foreground until it stands out from the background, so that the shape,
        // not luck, decides whether a sample is learnable.
        let mut fg = colour(&mut rng);
        for _ in 0..16 {
            if fg.iter().zip(&bg).map(|(a, b)| (a - b).abs()).sum::<f32>() >= 180.0 {
                break;
            }
            fg = colour(&mut rng);
        }
        let r = s * rng.uniform(0.22, 0.42);
        let margin = (r * 0.8).min(s / 2.0);
        let cy = rng.uniform(margin, s - margin);
        let cx = rng.uniform(margin, s - margin);
        let noise = rng.uniform(4.0, 16.0) as f64;
        let mut pixels = Vec::with_capacity(self.size * self.size * 3);
        for y in 0..self.size {
            for x in 0..self.size {
                let u = (x as f32 + 0.5 - cx) / r;
                let v = (y as f32 + 0.5 - cy) / r;
                let base = if inside(class, u, v) { fg } else { bg };
                for b in base {
                    pixels.push((b as f64 + rng.normal() * noise).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        Ok(Image { height: self.size, width: self.size, channels: 3, pixels })
    }
    fn describe(&self, index: usize) -> String {
        format!("synthetic {} sample {index}", if self.split == 0 { "train" } else { "test" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_by_seed_and_every_shape_is_drawn() {
        let a = SyntheticDataset::new(20, 32, 7, 0);
        let b = SyntheticDataset::new(20, 32, 7, 0);
        let c = SyntheticDataset::new(20, 32, 8, 0);
        assert_eq!(a.load(3).unwrap(), b.load(3).unwrap());
        assert_ne!(a.load(3).unwrap(), c.load(3).unwrap());
        assert_ne!(a.load(3).unwrap(), SyntheticDataset::new(20, 32, 7, 1).load(3).unwrap());
        for class in 0..10u32 {
            let hits = (0..64 * 64)
                .filter(|i| inside(class, (i % 64) as f32 / 32.0 - 1.0, (i / 64) as f32 / 32.0 - 1.0))
                .count();
            assert!(hits > 200 && hits < 64 * 64 - 200, "shape {class} covers {hits} of 4096 points");
        }
    }
}
