//! The stage table of a network (like Table 1 of the paper), its parameter count and its
//! multiply-adds, computed from the spec alone.

use crate::spec::{BlockKind, Family, ResNetSpec, ShortcutPlan};
use serde::Serialize;

/// One row of the stage table.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StageRow {
    /// Layer name (`conv1`, `layer1`, `fc`).
    pub layer: String,
    /// Output size, `HxW`.
    pub output: String,
    /// What the stage does.
    pub description: String,
    /// Multiply-adds of the stage.
    pub macs: u64,
    /// Parameters of the stage.
    pub params: u64,
}

/// A network's size and cost.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Weighted layers on the main path.
    pub depth: usize,
    /// Input `[h, w, c]` the cost is counted for.
    pub input: [usize; 3],
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-adds of one forward pass (convolutions and the classifier).
    pub macs: u64,
    /// Stage table.
    pub stages: Vec<StageRow>,
}

/// Output side of a convolution or pooling window.
pub(crate) fn conv_out(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad - k) / stride + 1
}

/// Multiply-adds and parameters of a convolution + batch norm on an `h x w` input; returns the
/// output size too.
fn conv_bn(h: usize, w: usize, cin: usize, cout: usize, k: usize, stride: usize) -> (usize, usize, u64, u64) {
    let (oh, ow) = (conv_out(h, k, stride, k / 2), conv_out(w, k, stride, k / 2));
    let macs = (oh * ow * cout * k * k * cin) as u64;
    let params = (k * k * cin * cout + 2 * cout) as u64;
    (oh, ow, macs, params)
}

impl ResNetSpec {
    /// The stage table, parameters and multiply-adds for an `h x w` input.
    pub fn summary(&self, h: usize, w: usize) -> Summary {
        let input = [h, w, self.in_channels];
        let mut stages = Vec::new();
        let (k, stride) = match self.family {
            Family::ImageNet => (7, 2),
            Family::Cifar => (3, 1),
        };
        let (mut h, mut w, macs, params) = conv_bn(h, w, self.in_channels, self.stem_width, k, stride);
        stages.push(StageRow {
            layer: "conv1".into(),
            output: format!("{h}x{w}"),
            description: format!("{k}x{k}, {}, stride {stride}", self.stem_width),
            macs,
            params,
        });
        if self.family == Family::ImageNet {
            h = conv_out(h, 3, 2, 1);
            w = conv_out(w, 3, 2, 1);
            stages.push(StageRow {
                layer: "pool".into(),
                output: format!("{h}x{w}"),
                description: "3x3 max pool, stride 2".into(),
                macs: 0,
                params: 0,
            });
        }
        let plans = self.blocks();
        for stage in 1..=self.depths.len() {
            let (mut smacs, mut sparams) = (0u64, 0u64);
            let mut shortcuts = Vec::new();
            let mut width = 0;
            for b in plans.iter().filter(|b| b.stage == stage) {
                width = b.width;
                let (bh, bw) = (h, w);
                for (cin, cout, k, s) in self.branch_convs(b) {
                    let (oh, ow, m, p) = conv_bn(h, w, cin, cout, k, s);
                    h = oh;
                    w = ow;
                    smacs += m;
                    sparams += p;
                }
                match b.shortcut {
                    ShortcutPlan::Projection => {
                        let (_, _, m, p) = conv_bn(bh, bw, b.cin, b.cout, 1, b.stride);
                        smacs += m;
                        sparams += p;
                        shortcuts.push("projection");
                    }
                    ShortcutPlan::Pad => shortcuts.push("zero-pad"),
                    _ => {}
                }
            }
            let body = match self.block {
                BlockKind::Basic => format!("[3x3, {width}; 3x3, {width}]"),
                BlockKind::Bottleneck => format!("[1x1, {width}; 3x3, {width}; 1x1, {}]", width * 4),
            };
            let mut description = format!("{body} x {}", self.depths[stage - 1]);
            if !self.residual {
                description.push_str(", plain");
            } else if !shortcuts.is_empty() {
                shortcuts.dedup();
                description.push_str(&format!(", shortcut {} ({})", self.shortcut, shortcuts.join(", ")));
            }
            stages.push(StageRow {
                layer: format!("layer{stage}"),
                output: format!("{h}x{w}"),
                description,
                macs: smacs,
                params: sparams,
            });
        }
        let feat = self.feature_channels();
        let fc_macs = (feat * self.num_classes) as u64;
        stages.push(StageRow {
            layer: "fc".into(),
            output: "1x1".into(),
            description: format!("average pool, {}-d fc, softmax", self.num_classes),
            macs: fc_macs,
            params: fc_macs + self.num_classes as u64,
        });
        Summary {
            model: self.name.clone(),
            depth: self.depth(),
            input,
            params: stages.iter().map(|s| s.params).sum(),
            macs: stages.iter().map(|s| s.macs).sum(),
            stages,
        }
    }
}
