//! Files built to exhaust memory: every size read from a file is checked against the file's real
//! size before anything is allocated from it.

use crate::common::*;
use resnet_interop::{read_state_dict, InteropError};

/// A stored (uncompressed) zip archive whose central directory claims `claimed` uncompressed
/// bytes for each entry through a zip64 extra field, whatever the entry really holds.
fn zip64_claiming(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, claimed) in entries {
        let offset = out.len() as u32;
        let extra: Vec<u8> = [0x0001u16.to_le_bytes().to_vec(), 16u16.to_le_bytes().to_vec()]
            .concat()
            .into_iter()
            .chain(claimed.to_le_bytes())
            .chain((data.len() as u64).to_le_bytes())
            .collect();
        let head = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend(45u16.to_le_bytes());
            }
            h.extend(45u16.to_le_bytes()); // version needed: zip64
            h.extend([0, 0, 0, 0, 0, 0, 0, 0]); // flags, method (stored), time, date
            h.extend(crc32fast::hash(data).to_le_bytes());
            h.extend(u32::MAX.to_le_bytes()); // compressed size: in the zip64 field
            h.extend(u32::MAX.to_le_bytes()); // uncompressed size: in the zip64 field
            h.extend((name.len() as u16).to_le_bytes());
            h.extend((extra.len() as u16).to_le_bytes());
            if central {
                h.extend([0; 6]); // comment length, disk, internal attributes
                h.extend([0; 4]); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h.extend(&extra);
            h
        };
        out.extend(head(0x0403_4b50, false));
        out.extend(*data);
        central.extend(head(0x0201_4b50, true));
    }
    let (cd_offset, cd_size, n) = (out.len() as u32, central.len() as u32, entries.len() as u16);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0, 0]);
    out
}

#[test]
fn a_pth_whose_zip64_directory_claims_a_terabyte_is_refused_without_allocating_it() {
    // One float tensor of 2^38 elements (1 TiB) in storage "0", which the directory claims holds
    // 2^40 bytes: every size agrees with every other, only the file is 2 KB.
    let numel = b"\x8a\x05\x00\x00\x00\x00\x40";
    let mut pickle = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu".to_vec();
    pickle.extend(numel);
    pickle.extend(b"tQK\x00");
    pickle.extend(numel);
    pickle.extend(b"\x85K\x01\x85\x89}tRu.");
    let storage = [0u8; 2048];
    let bytes = zip64_claiming(&[("w/data.pkl", &pickle, pickle.len() as u64), ("w/data/0", &storage, 1 << 40)]);
    assert!(bytes.len() < 4096);
    let dir = TempDir::new("zip64");
    let path = dir.path("huge.pth");
    std::fs::write(&path, &bytes).unwrap();
    let e = read_state_dict(&path).expect_err("the archive must be refused");
    let m = e.to_string();
    assert!(matches!(e, InteropError::Truncated { .. } | InteropError::NotPthArchive { .. }), "{m}");
    assert!(m.contains("huge.pth") && m.contains("1099511627776"), "{m}");
}

#[test]
fn a_fifo_is_refused_as_not_a_regular_file() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("weights.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    assert!(made, "this test needs mkfifo");
    // A writer with a bounded amount to say, so a reader that reads the pipe whole ends.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let _ = std::io::Write::write_all(&mut f, &[0u8; 1 << 16]);
            }
        })
    };
    let err = read_state_dict(&fifo).expect_err("a FIFO holds no weights");
    assert!(matches!(err, InteropError::Read { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("weights.safetensors") && message.contains("is not a regular file"), "{message}");
    // The refusal never opened the pipe, so the writer still waits for a reader: be it.
    std::fs::read(&fifo).unwrap();
    writer.join().unwrap();
}
