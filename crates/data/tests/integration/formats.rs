//! Every format, from small generated files.

use crate::common::*;
use resnet_data::{open, DatasetKind, OpenOptions, SyntheticConfig};

#[test]
fn cifar10_folder_archive_and_download_layout_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar10(&dir);
    let opts = OpenOptions::default();
    let a = open(DatasetKind::Cifar10, Some(&dir), &opts).unwrap();
    assert_eq!((a.train.len(), a.test.len()), (10, 3));
    assert_eq!(a.train.classes()[0], "airplane");
    assert_eq!(a.train.classes()[9], "truck");
    assert_eq!((0..10).map(|i| a.train.label(i)).collect::<Vec<_>>(), vec![1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    assert_eq!(a.train.image_size(), Some((32, 32)));
    assert_eq!(a.train.describe(3), format!("{} record 1", dir.join("data_batch_2.bin").display()));
    // Record 0 of data_batch_1: planar R plane starts with seed 0 and steps 3 per pixel.
    let img = a.train.load(0).unwrap();
    assert_eq!((img.height, img.width, img.channels), (32, 32, 3));
    assert_eq!(&img.pixels[0..6], &[0, 0, 0, 3, 3, 3], "HWC: pixel 0 is R0 G0 B0 (1024 apart in the file)");

    // The parent folder, the official archive, and a folder holding the archive all open the same.
    let b = open(DatasetKind::Cifar10, Some(tmp.path()), &opts).unwrap();
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let arch_dir = tmp.path().join("dl");
    std::fs::create_dir_all(&arch_dir).unwrap();
    let archive = arch_dir.join("cifar-10-binary.tar.gz");
    std::fs::write(&archive, tar_gz("cifar-10-batches-bin", &refs)).unwrap();
    let c = open(DatasetKind::Cifar10, Some(&archive), &opts).unwrap();
    let d = open(DatasetKind::Cifar10, Some(&arch_dir), &opts).unwrap();
    for s in [&b, &c, &d] {
        assert_eq!((s.train.len(), s.test.len()), (10, 3));
        for i in 0..10 {
            assert_eq!(s.train.load(i).unwrap(), a.train.load(i).unwrap());
            assert_eq!(s.train.label(i), a.train.label(i));
        }
        assert_eq!(s.test.load(2).unwrap(), a.test.load(2).unwrap());
    }
    assert!(c.train.describe(0).contains("cifar-10-binary.tar.gz:cifar-10-batches-bin/data_batch_1.bin record 0"));
}

#[test]
fn cifar100_fine_by_default_coarse_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let file = |labels: &[(u8, u8)]| -> Vec<u8> {
        labels.iter().enumerate().flat_map(|(i, &(c, f))| cifar_record(&[c, f], i as u8)).collect()
    };
    std::fs::write(dir.join("train.bin"), file(&[(4, 30), (19, 99), (0, 0)])).unwrap();
    std::fs::write(dir.join("test.bin"), file(&[(1, 1)])).unwrap();
    let fine = open(DatasetKind::Cifar100, Some(tmp.path()), &OpenOptions::default()).unwrap();
    assert_eq!(fine.train.classes().len(), 100);
    assert_eq!((fine.train.label(0), fine.train.label(1)), (30, 99));
    assert_eq!(fine.train.classes()[30], "dolphin");
    let opts = OpenOptions { cifar100_coarse: true, ..Default::default() };
    let coarse = open(DatasetKind::Cifar100, Some(&dir), &opts).unwrap();
    assert_eq!(coarse.train.classes().len(), 20);
    assert_eq!((coarse.train.label(0), coarse.train.label(1)), (4, 19));
    assert_eq!(coarse.train.classes()[0], "aquatic_mammals");
}

#[test]
fn idx_raw_gz_and_subfolder() {
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(tmp.path(), 12, 5, false);
    let s = open(DatasetKind::Mnist, Some(tmp.path()), &OpenOptions::default()).unwrap();
    assert_eq!((s.train.len(), s.test.len(), s.train.channels()), (12, 5, 1));
    assert_eq!(s.train.image_size(), Some((4, 5)));
    assert_eq!(s.train.label(11), 1);
    assert_eq!(s.train.load(1).unwrap().pixels, (20..40).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(s.train.classes()[3], "3");

    // Where `resnet download` puts them: DIR/fashion-mnist/*.gz.
    let tmp2 = tempfile::tempdir().unwrap();
    write_mnist(&tmp2.path().join("fashion-mnist"), 12, 5, true);
    let f = open(DatasetKind::FashionMnist, Some(tmp2.path()), &OpenOptions::default()).unwrap();
    assert_eq!(f.train.load(1).unwrap(), s.train.load(1).unwrap());
    assert_eq!(f.train.classes()[9], "Ankle boot");
    let k = open(DatasetKind::Kmnist, Some(&tmp2.path().join("fashion-mnist")), &OpenOptions::default()).unwrap();
    assert_eq!(k.train.classes()[0], "o");

    // Generic IDX: the classes are the labels found.
    let tmp3 = tempfile::tempdir().unwrap();
    let d = tmp3.path();
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[3, 2, 2], &[0; 12])).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[3], &[0, 2, 1])).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(&[1, 2, 2], &[9; 4])).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[1], &[2])).unwrap();
    let g = open(DatasetKind::Idx, Some(d), &OpenOptions::default()).unwrap();
    assert_eq!(g.train.classes(), &["0", "1", "2"]);
    assert_eq!(g.test.load(0).unwrap().pixels, vec![9; 4]);
}

#[test]
fn imagefolder_jpeg_png_grey_alpha_16bit_palette() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Classes are sorted folder names, whatever the creation order.
    write_folder(root, "train", &["zebra", "ant"], 3, 8);
    write_folder(root, "val", &["ant", "zebra"], 1, 8);
    let odd = root.join("train/ant");
    let grey = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(6, 4, |x, _| image::Luma([x as u8 * 40])));
    std::fs::write(odd.join("grey.png"), png_bytes(&grey)).unwrap();
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(5, 5, image::Rgba([10, 20, 30, 0])));
    std::fs::write(odd.join("alpha.png"), png_bytes(&rgba)).unwrap();
    let deep = image::DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(3, 2, image::Rgb([65535u16, 0, 32896])));
    std::fs::write(odd.join("deep.PNG"), png_bytes(&deep)).unwrap();
    std::fs::write(odd.join("palette.png"), palette_png()).unwrap();
    std::fs::write(odd.join(".DS_Store"), b"hidden files are ignored").unwrap();

    let opts = OpenOptions { in_memory: Some(false), ..Default::default() };
    let s = open(DatasetKind::ImageFolder, Some(root), &opts).unwrap();
    assert_eq!(s.train.classes(), &["ant", "zebra"]);
    assert_eq!((s.train.len(), s.test.len()), (10, 2));
    assert_eq!(s.train.image_size(), None, "sizes differ");
    let by_name = |n: &str| (0..s.train.len()).find(|&i| s.train.describe(i).ends_with(n)).unwrap();
    let g = s.train.load(by_name("grey.png")).unwrap();
    assert_eq!((g.height, g.width, g.channels), (4, 6, 3), "grey becomes RGB");
    assert_eq!(&g.pixels[3..6], &[40, 40, 40]);
    assert_eq!(&s.train.load(by_name("alpha.png")).unwrap().pixels[0..3], &[10, 20, 30]);
    assert_eq!(&s.train.load(by_name("deep.PNG")).unwrap().pixels[0..3], &[255, 0, 128], "16-bit scaled to 8");
    assert_eq!(&s.train.load(by_name("palette.png")).unwrap().pixels[0..6], &[255, 0, 0, 0, 0, 255]);
    assert_eq!(s.train.label(by_name("zebra/000.jpg")), 1);
    assert_eq!(s.test.label(0), 0);

    // Decoded into memory (the default for small sets): the same pixels, `test/` also accepted.
    std::fs::rename(root.join("val"), root.join("test")).unwrap();
    let m = open(DatasetKind::ImageFolder, Some(root), &OpenOptions::default()).unwrap();
    for i in 0..s.train.len() {
        assert_eq!(m.train.load(i).unwrap(), s.train.load(i).unwrap());
        assert_eq!(m.train.describe(i), s.train.describe(i));
    }
}

/// A 2x1 palette PNG: red, blue.
fn palette_png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 2, 1);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[0, 1]).unwrap();
    drop(w);
    out
}

#[test]
fn synthetic_is_deterministic_balanced_and_sized() {
    let cfg = SyntheticConfig { train: 50, test: 20, size: 24, seed: 3 };
    let opts = OpenOptions { synthetic: cfg.clone(), ..Default::default() };
    let a = open(DatasetKind::Synthetic, None, &opts).unwrap();
    let b = open(DatasetKind::Synthetic, None, &OpenOptions { in_memory: Some(false), ..opts.clone() }).unwrap();
    assert_eq!((a.train.len(), a.test.len(), a.train.image_size()), (50, 20, Some((24, 24))));
    for i in [0, 17, 49] {
        assert_eq!(a.train.load(i).unwrap(), b.train.load(i).unwrap());
    }
    let mut counts = [0; 10];
    (0..50).for_each(|i| counts[a.train.label(i) as usize] += 1);
    assert_eq!(counts, [5; 10]);
    let other =
        open(DatasetKind::Synthetic, None, &OpenOptions { synthetic: SyntheticConfig { seed: 4, ..cfg }, ..opts })
            .unwrap();
    assert_ne!(other.train.load(0).unwrap(), a.train.load(0).unwrap());
}

#[test]
fn dataset_kind_names_round_trip() {
    for k in DatasetKind::ALL {
        assert_eq!(k.to_string().parse::<DatasetKind>().unwrap(), k);
    }
    let e = "imagenet".parse::<DatasetKind>().unwrap_err();
    assert!(e.contains("cifar10") && e.contains("fashion-mnist") && e.contains("synthetic"), "{e}");
    let e = open(DatasetKind::Cifar10, None, &OpenOptions::default()).err().unwrap().to_string();
    assert!(e.contains("--data"), "{e}");
}
