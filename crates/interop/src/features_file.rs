//! The image-features file `resnet embed` writes, for retrieval and linear probes in any tool
//! that reads safetensors: `features` F32 `[rows, channels]`, `labels` I64 `[rows]` when the
//! images had classes, and string metadata (`format`, `layer`, `model`, and as JSON lists
//! `classes` and `sources`).

use crate::fsutil;
use crate::safetensors_file::parse_safetensors;
use crate::InteropError;
use resnet_models::TensorData;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// The `format` metadata value of a features file.
pub const FEATURES_FORMAT: &str = "resnet-features";

/// Image features, one row per image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureSet {
    /// Row-major `[rows, channels]`.
    pub features: Vec<f32>,
    /// Rows (images).
    pub rows: usize,
    /// Features per row.
    pub channels: usize,
    /// The class of each row, when the images had classes.
    pub labels: Option<Vec<i64>>,
    /// The layer the features were pooled from (`layer3`, `features`); empty when unknown.
    pub layer: String,
    /// The network's name; empty when unknown.
    pub model: String,
    /// Class names, indexed by label, when known.
    pub classes: Option<Vec<String>>,
    /// Where each row comes from (a sample's description or an image path); empty when unknown.
    pub sources: Vec<String>,
}

impl FeatureSet {
    /// Row `i`.
    ///
    /// # Panics
    /// If `i` is not below [`FeatureSet::rows`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.channels..(i + 1) * self.channels]
    }

    /// The file's bytes.
    ///
    /// # Panics
    /// If the lengths disagree with `rows` and `channels` (a programming error).
    pub fn to_bytes(&self) -> Vec<u8> {
        assert_eq!(self.features.len(), self.rows * self.channels, "features do not fill [rows, channels]");
        let features: Vec<u8> = self.features.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut views = vec![(
            "features".to_string(),
            TensorView::new(Dtype::F32, vec![self.rows, self.channels], &features).expect("consistent features"),
        )];
        let labels: Vec<u8>;
        if let Some(l) = &self.labels {
            assert_eq!(l.len(), self.rows, "one label per row");
            labels = l.iter().flat_map(|v| v.to_le_bytes()).collect();
            views.push(("labels".into(), TensorView::new(Dtype::I64, vec![self.rows], &labels).expect("labels")));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FEATURES_FORMAT.to_string());
        meta.insert("layer".to_string(), self.layer.clone());
        meta.insert("model".to_string(), self.model.clone());
        if let Some(c) = &self.classes {
            meta.insert("classes".to_string(), serde_json::to_string(c).expect("strings serialise"));
        }
        meta.insert("sources".to_string(), serde_json::to_string(&self.sources).expect("strings serialise"));
        safetensors::serialize(views, Some(meta)).expect("consistent tensors serialise")
    }

    /// Writes the file atomically.
    ///
    /// # Errors
    /// [`InteropError::Write`] naming the file; an existing file is left intact on failure.
    pub fn save(&self, path: &Path) -> Result<(), InteropError> {
        fsutil::write_atomic(path, &self.to_bytes())
    }

    /// Reads a features file: ours, or any safetensors file with a 2-D `features` tensor (and
    /// optionally a 1-D `labels` of one integer per row); metadata it lacks is left empty.
    ///
    /// # Errors
    /// The errors of [`read_safetensors`](crate::read_safetensors), and
    /// [`InteropError::BadFeatures`] for a file without `features`, tensors of the wrong type or
    /// shape, a negative label or one beyond the class list, or metadata that does not parse.
    pub fn load(path: &Path) -> Result<FeatureSet, InteropError> {
        let bytes = fsutil::read(path)?;
        let tensors = parse_safetensors(&bytes, path)?;
        let bad = |reason: String| InteropError::BadFeatures { path: path.to_path_buf(), reason };
        let find = |name: &str| tensors.iter().find(|t| t.name == name);
        let f = find("features").ok_or_else(|| bad("it holds no tensor named 'features'".into()))?;
        let (rows, channels, features) = match (&f.data, f.shape.as_slice()) {
            (TensorData::F32(v), &[rows, channels]) => (rows, channels, v.clone()),
            _ => return Err(bad(format!("'features' must be a 2-D float tensor [rows, channels], not {:?}", f.shape))),
        };
        let labels = match find("labels") {
            None => None,
            Some(t) => match (&t.data, t.shape.as_slice()) {
                (TensorData::I64(v), &[n]) if n == rows => Some(v.clone()),
                _ => {
                    return Err(bad(format!(
                        "'labels' must be a 1-D integer tensor of {rows} (one per row), not {:?}",
                        t.shape
                    )))
                }
            },
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let text = |key: &str| meta.get(key).cloned().unwrap_or_default();
        let list = |key: &str| -> Result<Option<Vec<String>>, InteropError> {
            meta.get(key)
                .map(|v| {
                    serde_json::from_str(v)
                        .map_err(|e| bad(format!("metadata '{key}' is not a JSON list of strings: {e}")))
                })
                .transpose()
        };
        let classes = list("classes")?;
        let sources = list("sources")?.unwrap_or_default();
        if !sources.is_empty() && sources.len() != rows {
            return Err(bad(format!("{} sources for {rows} rows", sources.len())));
        }
        if let Some(l) = &labels {
            let limit = classes.as_ref().map_or(i64::MAX, |c| c.len() as i64);
            if let Some((row, label)) = l.iter().enumerate().find(|(_, &v)| v < 0 || v >= limit) {
                return Err(bad(format!("row {row} has the label {label}, outside the {limit} classes")));
            }
        }
        Ok(FeatureSet {
            features,
            rows,
            channels,
            labels,
            layer: text("layer"),
            model: text("model"),
            classes,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FeatureSet {
        FeatureSet {
            features: vec![1.0, -2.0, 0.5, 3.0, 4.0, -0.0],
            rows: 3,
            channels: 2,
            labels: Some(vec![1, 0, 1]),
            layer: "layer2".into(),
            model: "resnet20".into(),
            classes: Some(vec!["cat".into(), "dog".into()]),
            sources: vec!["a.png".into(), "b.png".into(), "c\u{fffd}.png".into()],
        }
    }

    #[test]
    fn a_features_file_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("features-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.safetensors");
        let set = sample();
        set.save(&path).unwrap();
        assert_eq!(FeatureSet::load(&path).unwrap(), set);
        assert_eq!(set.row(1), &[0.5, 3.0]);
        let unlabelled = FeatureSet { labels: None, classes: None, ..sample() };
        unlabelled.save(&path).unwrap();
        assert_eq!(FeatureSet::load(&path).unwrap(), unlabelled);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_that_are_not_features_are_refused_naming_the_problem() {
        let dir = std::env::temp_dir().join(format!("features-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.safetensors");
        let cases: Vec<(FeatureSet, &str)> = vec![
            (FeatureSet { labels: Some(vec![0, 2, 1]), ..sample() }, "label 2, outside the 2 classes"),
            (FeatureSet { labels: Some(vec![0, -1, 1]), ..sample() }, "label -1"),
        ];
        for (set, needle) in cases {
            std::fs::write(&path, set.to_bytes()).unwrap();
            let e = FeatureSet::load(&path).unwrap_err().to_string();
            assert!(e.contains("bad.safetensors") && e.contains(needle), "{e}");
        }
        let weights = vec![resnet_models::NamedTensor {
            name: "fc.weight".into(),
            shape: vec![2, 2],
            data: TensorData::F32(vec![0.0; 4]),
        }];
        crate::write_safetensors(&path, &weights).unwrap();
        let e = FeatureSet::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors") && e.contains("no tensor named 'features'"), "{e}");
        let flat = vec![resnet_models::NamedTensor {
            name: "features".into(),
            shape: vec![4],
            data: TensorData::F32(vec![0.0; 4]),
        }];
        crate::write_safetensors(&path, &flat).unwrap();
        let e = FeatureSet::load(&path).unwrap_err().to_string();
        assert!(e.contains("2-D float tensor"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
