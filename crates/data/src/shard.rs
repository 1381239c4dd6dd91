//! A rank's share of every batch, for data-parallel training: the ranks split each batch of
//! the shared, seeded order into contiguous parts, so together they see every sample of an
//! epoch once, no two the same, and each sample with the augmentation the whole batch would
//! give it (augmentations derive from the sample, not from who loads it).

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Part `index` of `count` of every batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This rank's part, `0..count`.
    pub index: usize,
    /// Parts of a batch (ranks).
    pub count: usize,
}

impl Shard {
    /// The whole of every batch (one process).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This part of the positions `batch`: `count` contiguous runs as equal as can be (the
    /// first ones one longer where the length does not divide; empty when it is shorter than
    /// the parts).
    pub fn part(&self, batch: Range<usize>) -> Range<usize> {
        let (len, count) = (batch.len(), self.count.max(1));
        let at = |k: usize| batch.start + k * (len / count) + k.min(len % count);
        at(self.index)..at(self.index + 1)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_a_batch_once_in_order() {
        for (len, count) in [(128, 2), (80, 3), (2, 4), (0, 2), (7, 1)] {
            let parts: Vec<_> = (0..count).map(|index| Shard { index, count }.part(10..10 + len)).collect();
            assert_eq!(parts[0].start, 10);
            assert_eq!(parts[count - 1].end, 10 + len);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1, "{len} over {count}");
            }
        }
        assert_eq!(Shard { index: 1, count: 2 }.part(0..128), 64..128);
    }
}
