//! `resnet download weights`: torchvision's published ImageNet weights for the ResNets of He et
//! al. 2015 (Table 1's 18/34, torchvision's v1.5 50/101/152), fetched from torchvision's own
//! addresses and checked against the sha256 prefix in their file names, as `torch.hub` does.

use crate::fetch::{base_from_env, fetch_unless_present, Fetched, Published, PublishedHash};
use crate::DataError;
use std::path::{Path, PathBuf};

/// Where torchvision publishes its weights (the `url` of every `ResNet*_Weights` entry).
pub const TORCHVISION_WEIGHTS_BASE: &str = "https://download.pytorch.org/models/";

/// Slack over a file's published size (which torchvision rounds to 0.001 MiB) before a transfer
/// is stopped as too large.
const SIZE_SLACK_BYTES: u64 = 1 << 20;

/// Which of torchvision's ImageNet-1K weight sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsVariant {
    /// `IMAGENET1K_V1`: the original training recipe, close to the paper's results.
    V1,
    /// `IMAGENET1K_V2`: torchvision's later recipe (ResNet-50/101/152 only).
    V2,
}

impl WeightsVariant {
    /// torchvision's name, `IMAGENET1K_V1` or `IMAGENET1K_V2`.
    pub fn torchvision_name(self) -> &'static str {
        match self {
            WeightsVariant::V1 => "IMAGENET1K_V1",
            WeightsVariant::V2 => "IMAGENET1K_V2",
        }
    }

    /// `v1` or `v2`, as `resnet download weights --variant` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsVariant::V1 => "v1",
            WeightsVariant::V2 => "v2",
        }
    }
}

/// One file of torchvision's published ImageNet weights (a `torch.save` state dict).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorchvisionWeights {
    /// torchvision's builder name: `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`.
    pub network: &'static str,
    /// Which weight set.
    pub variant: WeightsVariant,
    /// torchvision's file name, `<network>-<first 8 hex digits of its sha256>.pth`.
    pub file: &'static str,
    /// The size torchvision publishes (`meta["_file_size"]`), in MiB.
    pub mib: f64,
    /// ImageNet-1K top-1 accuracy in percent, as torchvision publishes it (`meta["_metrics"]`).
    pub top1: f64,
    /// Whether torchvision's `weights="DEFAULT"` gives this file.
    pub default: bool,
}

/// torchvision's ResNet weights, from `ResNet{18,34,50,101,152}_Weights` in
/// `torchvision/models/resnet.py`: the file names of their `url`s, `_file_size` and `acc@1`, and
/// which one `DEFAULT` names.
pub const TORCHVISION_WEIGHTS: [TorchvisionWeights; 8] = {
    use WeightsVariant::{V1, V2};
    #[rustfmt::skip]
    let table = [
        TorchvisionWeights { network: "resnet18", variant: V1, file: "resnet18-f37072fd.pth", mib: 44.661, top1: 69.758, default: true },
        TorchvisionWeights { network: "resnet34", variant: V1, file: "resnet34-b627a593.pth", mib: 83.275, top1: 73.314, default: true },
        TorchvisionWeights { network: "resnet50", variant: V1, file: "resnet50-0676ba61.pth", mib: 97.781, top1: 76.130, default: false },
        TorchvisionWeights { network: "resnet50", variant: V2, file: "resnet50-11ad3fa6.pth", mib: 97.790, top1: 80.858, default: true },
        TorchvisionWeights { network: "resnet101", variant: V1, file: "resnet101-63fe2227.pth", mib: 170.511, top1: 77.374, default: false },
        TorchvisionWeights { network: "resnet101", variant: V2, file: "resnet101-cd907fc2.pth", mib: 170.530, top1: 81.886, default: true },
        TorchvisionWeights { network: "resnet152", variant: V1, file: "resnet152-394f9c45.pth", mib: 230.434, top1: 78.312, default: false },
        TorchvisionWeights { network: "resnet152", variant: V2, file: "resnet152-f82ba261.pth", mib: 230.474, top1: 82.284, default: true },
    ];
    table
};

impl TorchvisionWeights {
    /// The published hash: the hex digits between the last `-` and `.pth` of the file name, the
    /// start of the file's sha256 (what `torch.hub.load_state_dict_from_url(check_hash=True)`
    /// checks).
    pub fn sha256_prefix(&self) -> &'static str {
        let stem = self.file.strip_suffix(".pth").unwrap_or(self.file);
        stem.rsplit_once('-').map_or("", |(_, h)| h)
    }

    /// torchvision's address for the file.
    pub fn url(&self) -> String {
        format!("{TORCHVISION_WEIGHTS_BASE}{}", self.file)
    }

    /// The most bytes a transfer of this file may bring: its published size and 1 MiB.
    pub fn max_bytes(&self) -> u64 {
        (self.mib * f64::from(1u32 << 20)).ceil() as u64 + SIZE_SLACK_BYTES
    }

    /// What the file must be: its sha256 prefix and at most [`Self::max_bytes`].
    pub fn published(&self) -> Published<'static> {
        Published { hash: PublishedHash::Sha256Prefix(self.sha256_prefix()), max_bytes: self.max_bytes() }
    }
}

/// The networks [`torchvision_weights`] knows, in table order.
pub fn pretrained_networks() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TORCHVISION_WEIGHTS.iter().map(|w| w.network).collect();
    names.dedup();
    names
}

/// torchvision's weights for `network` in `variant`; `None` gives what torchvision's
/// `weights="DEFAULT"` gives (`IMAGENET1K_V1` for ResNet-18/34, `IMAGENET1K_V2` for 50/101/152).
///
/// # Errors
/// [`DataError::Config`] for a network torchvision publishes no weights for, or a variant it does
/// not publish for that network, naming what it does publish.
pub fn torchvision_weights(
    network: &str,
    variant: Option<WeightsVariant>,
) -> Result<&'static TorchvisionWeights, DataError> {
    let of_network: Vec<&'static TorchvisionWeights> =
        TORCHVISION_WEIGHTS.iter().filter(|w| w.network == network).collect();
    if of_network.is_empty() {
        return Err(DataError::config(
            format!("weights {network}"),
            format!(
                "torchvision publishes no ImageNet weights of that name; choose one of {}",
                pretrained_networks().join(", ")
            ),
        ));
    }
    let found = match variant {
        None => of_network.iter().find(|w| w.default),
        Some(v) => of_network.iter().find(|w| w.variant == v),
    };
    found.copied().ok_or_else(|| {
        let offered: Vec<String> =
            of_network.iter().map(|w| format!("{} ({})", w.variant.as_str(), w.variant.torchvision_name())).collect();
        let with_v2: Vec<&str> =
            TORCHVISION_WEIGHTS.iter().filter(|w| w.variant == WeightsVariant::V2).map(|w| w.network).collect();
        let asked = variant.map_or("DEFAULT", |v| v.as_str());
        DataError::config(
            format!("weights {network} --variant {asked}"),
            format!(
                "torchvision publishes only {} for {network}; v2 exists for {}",
                offered.join(", "),
                with_v2.join(", ")
            ),
        )
    })
}

/// The outcome of [`download_weights`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadedWeights {
    /// The verified file, `dir/<torchvision's file name>`.
    pub path: PathBuf,
    /// Whether it was already there, downloaded, or downloaded over a file of that name whose
    /// hash was not the published one.
    pub fetched: Fetched,
}

/// Downloads `weights` into `dir` (created if needed) under torchvision's file name, exactly as
/// published (a `.pth` that `resnet import`, `predict --weights` and `train --init` read). A file
/// already there whose sha256 starts with the published prefix is kept and not downloaded again;
/// one whose hash differs is replaced, but only by a download that verifies. The base address can
/// be replaced by setting [`DOWNLOAD_BASE_ENV`](crate::DOWNLOAD_BASE_ENV). `progress` gets the
/// bytes so far and the length when the server says it.
///
/// # Errors
/// [`DataError::Download`] (no network, HTTP error) saying where to put the file by hand,
/// [`DataError::Checksum`] for a file whose sha256 does not start with the published prefix,
/// [`DataError::TooLarge`] for a transfer larger than the published file,
/// [`DataError::Io`] when `dir` cannot be written.
pub fn download_weights(
    weights: &TorchvisionWeights,
    dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<DownloadedWeights, DataError> {
    download_weights_from(weights, dir, base_from_env().as_deref(), progress)
}

/// [`download_weights`] from `base` (`None`: [`TORCHVISION_WEIGHTS_BASE`]) instead of reading
/// [`DOWNLOAD_BASE_ENV`](crate::DOWNLOAD_BASE_ENV).
///
/// # Errors
/// As [`download_weights`].
pub fn download_weights_from(
    weights: &TorchvisionWeights,
    dir: &Path,
    base: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<DownloadedWeights, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let path = dir.join(weights.file);
    let bases = [base.unwrap_or(TORCHVISION_WEIGHTS_BASE).to_string()];
    match fetch_unless_present(&bases, &path, &weights.published(), progress) {
        Ok(fetched) => Ok(DownloadedWeights { path, fetched }),
        Err(DataError::Download { url, reason, .. }) => {
            let hint = format!(
                "Offline? Put {} (from {}, sha256 starting {}) into {} by hand; running this again verifies it",
                weights.file,
                weights.url(),
                weights.sha256_prefix(),
                dir.display()
            );
            Err(DataError::Download { url, reason, hint })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::MIN_SHA256_PREFIX;

    #[test]
    fn every_file_is_named_by_its_network_and_a_sha256_prefix() {
        for w in &TORCHVISION_WEIGHTS {
            let h = w.sha256_prefix();
            assert_eq!(w.file, format!("{}-{h}.pth", w.network), "{w:?}");
            assert_eq!(h.len(), MIN_SHA256_PREFIX, "{w:?}");
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{w:?}");
            assert!(w.url().starts_with("https://download.pytorch.org/models/") && w.url().ends_with(w.file));
            // Between 45 and 240 MB, so the cap stops an endless response within a few percent.
            assert!(w.max_bytes() > 45_000_000 && w.max_bytes() < 250_000_000, "{w:?}");
            assert!(w.max_bytes() as f64 >= w.mib * 1048576.0 + 1e5, "{w:?}");
        }
    }

    #[test]
    fn one_default_per_network_as_torchvision_chooses() {
        assert_eq!(pretrained_networks(), ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]);
        for n in pretrained_networks() {
            let defaults: Vec<_> = TORCHVISION_WEIGHTS.iter().filter(|w| w.network == n && w.default).collect();
            assert_eq!(defaults.len(), 1, "{n}");
            let v1 = torchvision_weights(n, Some(WeightsVariant::V1)).unwrap();
            assert_eq!((v1.network, v1.variant), (n, WeightsVariant::V1));
        }
        // `ResNet{18,34}_Weights.DEFAULT = IMAGENET1K_V1`; 50/101/152 default to `IMAGENET1K_V2`.
        assert_eq!(torchvision_weights("resnet18", None).unwrap().file, "resnet18-f37072fd.pth");
        assert_eq!(torchvision_weights("resnet34", None).unwrap().variant, WeightsVariant::V1);
        assert_eq!(torchvision_weights("resnet50", None).unwrap().file, "resnet50-11ad3fa6.pth");
        assert_eq!(torchvision_weights("resnet152", None).unwrap().variant, WeightsVariant::V2);
    }

    #[test]
    fn unpublished_networks_and_variants_are_refused_naming_what_exists() {
        let e = torchvision_weights("resnet18", Some(WeightsVariant::V2)).unwrap_err().to_string();
        assert!(e.contains("resnet18") && e.contains("only v1 (IMAGENET1K_V1)"), "{e}");
        assert!(e.contains("v2 exists for resnet50, resnet101, resnet152"), "{e}");
        let e = torchvision_weights("resnet20", None).unwrap_err().to_string();
        assert!(e.contains("resnet20") && e.contains("resnet18, resnet34, resnet50, resnet101, resnet152"), "{e}");
    }
}
