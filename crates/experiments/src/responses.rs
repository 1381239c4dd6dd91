//! Layer responses (Section 4.2, Fig. 7): "the standard deviations (std) of the layer
//! responses ... the outputs of each 3x3 layer, after BN and before other nonlinearity (ReLU /
//! addition)".
//!
//! Data and pooling: the test split, in eval mode (running batch-norm statistics), with the
//! checkpoint's own preprocessing; for each layer, the std of each channel over all images and
//! positions, averaged over the channels.

use crate::{markdown_table, ExperimentError};
use resnet_data::{open, DatasetKind, Loader, LoaderConfig, LoaderMode, OpenOptions};
use resnet_models::{BatchNormMode, ConvBn, ResNet};
use resnet_nn::Tensor;
use resnet_train::checkpoint::Checkpoint;
use resnet_train::fsutil;
use resnet_train::plot::{self, Figure, Panel, Series, Stroke};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The responses of one network.
#[derive(Clone, Debug, Serialize)]
pub struct LayerResponses {
    /// Model name.
    pub model: String,
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Whether it has shortcuts.
    pub residual: bool,
    /// Layer names in network order (`conv1`, `layer1.0.conv1`, ...).
    pub layers: Vec<String>,
    /// Std of each layer's response.
    pub std: Vec<f64>,
}

impl LayerResponses {
    /// Median over layers.
    pub fn median(&self) -> f64 {
        let mut v = self.std.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            0.5 * (v[m - 1] + v[m])
        }
    }
}

/// Results of [`responses`].
#[derive(Clone, Debug, Serialize)]
pub struct ResponsesReport {
    /// One per checkpoint.
    pub networks: Vec<LayerResponses>,
    /// The paper's claims, each stated as observed or not.
    pub findings: Vec<String>,
    /// Markdown summary.
    pub table: String,
    /// What was measured, in words.
    pub method: String,
}

/// Per-channel sums of one layer's responses.
struct Moments {
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    count: u64,
}

fn units(net: &ResNet) -> Vec<&ConvBn> {
    let mut v = vec![&net.stem.unit];
    for b in &net.blocks {
        v.extend(b.units.iter());
    }
    v.into_iter().filter(|u| u.conv.k == 3).collect()
}

fn accumulate(u: &ConvBn, m: &mut Moments) {
    let (scale, shift) = u.bn.affine(BatchNormMode::Eval);
    let c = scale.len();
    for row in u.y.data().chunks_exact(c) {
        for j in 0..c {
            let r = f64::from(row[j] * scale[j] + shift[j]);
            m.sum[j] += r;
            m.sumsq[j] += r * r;
        }
    }
    m.count += (u.y.len() / c) as u64;
}

/// Measures one checkpoint's responses on the test split of a dataset.
fn measure(
    path: &Path,
    kind: DatasetKind,
    data: Option<&Path>,
    opts: &OpenOptions,
    batch: usize,
) -> Result<LayerResponses, ExperimentError> {
    let ckpt = Checkpoint::load(path)?;
    let mut net = ckpt.network(path)?;
    let splits = open(kind, data, opts)?;
    let loader = Loader::new(
        splits.test,
        LoaderConfig {
            batch_size: batch,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            mode: LoaderMode::Eval(resnet_data::EvalView::Full),
            normalize: ckpt.preprocess.normalize.clone(),
            shard: resnet_data::Shard::WHOLE,
        },
    )?;
    let mut moments: Vec<Moments> = Vec::new();
    let mut names = Vec::new();
    for b in loader.epoch(0, 0) {
        let b = b?;
        let x = Tensor::from_vec(b.shape, b.images);
        net.forward(&x, BatchNormMode::Eval);
        let us = units(&net);
        if moments.is_empty() {
            for u in &us {
                let c = u.bn.channels();
                moments.push(Moments { sum: vec![0.0; c], sumsq: vec![0.0; c], count: 0 });
                names.push(u.conv.weight.name.trim_end_matches(".weight").to_string());
            }
        }
        for (u, m) in us.iter().zip(moments.iter_mut()) {
            accumulate(u, m);
        }
    }
    let std = moments
        .iter()
        .map(|m| {
            let n = m.count.max(1) as f64;
            let per_channel: Vec<f64> =
                m.sum.iter().zip(&m.sumsq).map(|(s, q)| (q / n - (s / n).powi(2)).max(0.0).sqrt()).collect();
            per_channel.iter().sum::<f64>() / per_channel.len().max(1) as f64
        })
        .collect();
    Ok(LayerResponses {
        model: ckpt.spec.name.clone(),
        checkpoint: path.to_path_buf(),
        residual: ckpt.spec.residual,
        layers: names,
        std,
    })
}

fn depth(model: &str) -> usize {
    model.trim_start_matches("cifar-").trim_start_matches("resnet").trim_start_matches("plain").parse().unwrap_or(0)
}

/// Measures every checkpoint, then writes `responses.csv`, `responses.png`/`.svg` (std by layer
/// index, and sorted by magnitude) and `summary.md` into `out`.
///
/// # Errors
/// Unreadable checkpoints or data.
pub fn responses(
    checkpoints: &[PathBuf],
    kind: DatasetKind,
    data: Option<&Path>,
    opts: &OpenOptions,
    batch: usize,
    out: &Path,
) -> Result<ResponsesReport, ExperimentError> {
    if checkpoints.is_empty() {
        return Err(ExperimentError::Config("give at least one checkpoint".into()));
    }
    let mut networks = Vec::new();
    for c in checkpoints {
        networks.push(measure(c, kind, data, opts, batch)?);
    }
    let mut csv = String::from("model,residual,layer_index,layer,std,sorted_rank\n");
    for n in &networks {
        let mut order: Vec<usize> = (0..n.std.len()).collect();
        order.sort_by(|&a, &b| n.std[b].total_cmp(&n.std[a]));
        let mut rank = vec![0; n.std.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r + 1;
        }
        for (i, (l, s)) in n.layers.iter().zip(&n.std).enumerate() {
            csv.push_str(&format!("{},{},{},{},{:.6},{}\n", n.model, n.residual, i + 1, l, s, rank[i]));
        }
    }
    fsutil::write_atomic(&out.join("responses.csv"), csv.as_bytes())?;
    let label = |n: &LayerResponses| format!("{}-{}", if n.residual { "ResNet" } else { "plain" }, depth(&n.model));
    let series = |sorted: bool| -> Vec<Series> {
        networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut v = n.std.clone();
                if sorted {
                    v.sort_by(|a, b| b.total_cmp(a));
                }
                Series {
                    label: label(n),
                    points: v.iter().enumerate().map(|(k, s)| ((k + 1) as f64, *s)).collect(),
                    stroke: if n.residual { Stroke::Solid } else { Stroke::Dashed },
                    color: i,
                }
            })
            .collect()
    };
    let fig = Figure {
        panels: vec![
            Panel {
                title: "layer responses".into(),
                x_label: "layer index (original)".into(),
                y_label: "std".into(),
                series: series(false),
                y_range: None,
            },
            Panel {
                title: "sorted by magnitude".into(),
                x_label: "layer index (sorted)".into(),
                y_label: "std".into(),
                series: series(true),
                y_range: None,
            },
        ],
    };
    plot::save(&fig, &out.join("responses"))?;
    let mut findings = Vec::new();
    for r in networks.iter().filter(|n| n.residual) {
        if let Some(p) = networks.iter().find(|n| !n.residual && depth(&n.model) == depth(&r.model)) {
            let ok = r.median() < p.median();
            findings.push(format!(
                "{} median response std {:.4} vs {} {:.4}: ResNet smaller than its plain twin {}",
                label(r),
                r.median(),
                label(p),
                p.median(),
                if ok { "(observed)" } else { "(NOT observed)" }
            ));
        }
    }
    let mut res: Vec<&LayerResponses> = networks.iter().filter(|n| n.residual).collect();
    res.sort_by_key(|n| depth(&n.model));
    for w in res.windows(2) {
        let ok = w[1].median() < w[0].median();
        findings.push(format!(
            "{} median {:.4} vs {} median {:.4}: deeper ResNet smaller {}",
            label(w[1]),
            w[1].median(),
            label(w[0]),
            w[0].median(),
            if ok { "(observed)" } else { "(NOT observed)" }
        ));
    }
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            let max = n.std.iter().copied().fold(0.0, f64::max);
            vec![label(n), n.std.len().to_string(), format!("{:.4}", n.median()), format!("{max:.4}")]
        })
        .collect();
    let method = "std of each 3x3 layer's output after batch norm, before ReLU/addition; eval mode on the test split; \
                  per-channel std over all images and positions, averaged over channels"
        .to_string();
    let mut table = markdown_table(&["network", "3x3 layers", "median std", "max std"], &rows);
    table.push_str(&format!("\nMethod: {method}.\n\n"));
    for f in &findings {
        table.push_str(&format!("- {f}\n"));
    }
    fsutil::write_atomic(&out.join("summary.md"), table.as_bytes())?;
    Ok(ResponsesReport { networks, findings, table, method })
}
