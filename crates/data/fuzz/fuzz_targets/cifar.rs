//! `parse_cifar` on arbitrary bytes, in all three layouts, with and without `skip_bad`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet_data::{parse_cifar, CifarFormat};

fuzz_target!(|data: &[u8]| {
    for format in
        [CifarFormat::Cifar10, CifarFormat::Cifar100 { coarse: false }, CifarFormat::Cifar100 { coarse: true }]
    {
        for skip_bad in [false, true] {
            if let Ok(r) = parse_cifar(data, "fuzz.bin", format, skip_bad) {
                assert_eq!(r.pixels.len(), r.labels.len() * 3072);
                assert!(r.pixels.len() <= data.len());
                assert!(r.labels.iter().all(|&l| (l as usize) < format.classes().len()));
            }
        }
    }
});
