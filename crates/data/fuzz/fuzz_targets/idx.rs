//! `parse_idx` on arbitrary bytes (raw, and gzip when the input starts with the gzip magic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet_data::parse_idx;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_idx(data, "fuzz.idx") {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        if !data.starts_with(&[0x1f, 0x8b]) {
            assert!(a.data.len() + a.header_len == data.len());
        }
    }
});
