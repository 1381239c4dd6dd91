//! torchvision's ImageNet conventions, for networks imported from torchvision weights.

/// torchvision's ImageNet channel means (RGB, 0..1 scale), `transforms.Normalize`'s `mean`.
pub(crate) const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// torchvision's ImageNet channel standard deviations (RGB, 0..1 scale).
pub(crate) const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Generated from torchvision's `ResNet50_Weights.IMAGENET1K_V1.meta["categories"]` by
/// tools/interop/make_fixtures.py.
const CLASSES: &str = include_str!("imagenet_classes.txt");

/// The 1000 ImageNet class names in torchvision's label order (`0` is "tench").
pub fn imagenet_classes() -> Vec<String> {
    CLASSES.lines().map(str::to_string).collect()
}

/// torchvision's evaluation transform for its ImageNet weights (`ResNet50_Weights.IMAGENET1K_V1
/// .transforms()`): `(mean, std, resize, crop)` = ImageNet mean and std on the 0..1 scale, the
/// shorter side resized to 256 (bilinear, antialiased), a centre crop of 224.
pub fn torchvision_preset() -> (Vec<f32>, Vec<f32>, usize, usize) {
    (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec(), 256, 224)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_torchvisions() {
        let c = imagenet_classes();
        assert_eq!(c.len(), 1000);
        assert_eq!(
            (c[0].as_str(), c[1].as_str(), c[281].as_str(), c[999].as_str()),
            ("tench", "goldfish", "tabby", "toilet tissue")
        );
        assert!(c.iter().all(|n| !n.is_empty() && n.trim() == n));
    }
}
