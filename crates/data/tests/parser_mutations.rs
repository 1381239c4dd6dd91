//! The CIFAR and IDX parsers on thousands of seeded mutations and truncations of valid files: no
//! panic, no hang, and no allocation beyond what the input justifies (measured by a counting
//! allocator, which is why this test has its own binary and a single test function).
//!
//! The cargo-fuzz targets in `crates/data/fuzz/` explore further; this runs in CI.

use resnet_data::{parse_cifar, parse_idx, CifarFormat};
use resnet_kernels::rng::Rng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::Write;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated while `f` runs, growth of reallocations included: an upper bound on how far
/// its memory use rose.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    (r, region.change().bytes_allocated)
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// One random edit: flip bits, overwrite a run, truncate, append, duplicate a slice, or set a
/// header word (where sizes live) to an extreme.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    match rng.below(7) {
        0 if !v.is_empty() => {
            let i = rng.below(v.len() as u64) as usize;
            v[i] ^= 1 << rng.below(8);
        }
        1 if !v.is_empty() => {
            let i = rng.below(v.len() as u64) as usize;
            let n = (rng.below(16) as usize).min(v.len() - i);
            v[i..i + n].iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        }
        2 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
        3 => v.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
        4 if v.len() > 8 => {
            let i = rng.below(v.len() as u64 - 4) as usize;
            let n = rng.below(v.len().min(4096) as u64) as usize;
            let chunk: Vec<u8> = v[i..(i + n).min(v.len())].to_vec();
            v.splice(i..i, chunk);
        }
        5 if v.len() >= 8 => {
            let at = 4 * rng.below((v.len() / 4).min(5) as u64) as usize;
            let word = [0u32, 1, 0x7fff_ffff, 0xffff_ffff, rng.next_u64() as u32][rng.below(5) as usize];
            v[at..at + 4].copy_from_slice(&word.to_be_bytes());
        }
        _ => {
            if !v.is_empty() {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = [0, 0xff, 8, 1, 2, 3, 4][rng.below(7) as usize];
            }
        }
    }
}

#[test]
fn seeded_mutations_never_panic_hang_or_overallocate() {
    let mut rng = Rng::new(0xF022);
    let cifar10: Vec<u8> =
        (0..4u32).flat_map(|r| std::iter::once((r % 10) as u8).chain((0..3072).map(move |i| (i * r) as u8))).collect();
    let cifar100: Vec<u8> = (0..3u32)
        .flat_map(|r| [(r % 20) as u8, (r * 7 % 100) as u8].into_iter().chain((0..3072).map(|i| i as u8)))
        .collect();
    let images = idx(&[6, 7, 5], &(0..210).map(|i| i as u8).collect::<Vec<_>>());
    let labels = idx(&[6], &[1, 2, 3, 4, 5, 6]);
    let colour = idx(&[2, 3, 3, 3], &[9; 54]);
    let seeds: Vec<Vec<u8>> =
        vec![cifar10, cifar100, images.clone(), labels.clone(), colour, gzip(&images), gzip(&labels)];
    let formats =
        [CifarFormat::Cifar10, CifarFormat::Cifar100 { coarse: false }, CifarFormat::Cifar100 { coarse: true }];

    let start = Instant::now();
    let (mut ok, mut errors) = (0, 0);
    let mut slowest = Duration::ZERO;
    for iter in 0..6000 {
        let mut input = seeds[iter % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input);
        }
        let gz = input.starts_with(&[0x1f, 0x8b]);
        let t = Instant::now();
        let (idx_result, idx_peak) = allocated_by(|| parse_idx(&input, "fuzz.idx"));
        // Raw input: the data vector is at most the input. Gzip: what the compressed size can
        // expand to (deflate's ratio is at most 1032), counted twice for the vector's growth, plus
        // the decoder's own state.
        let idx_bound = if gz { 4 * 1032 * input.len() + (256 << 10) } else { input.len() + 4096 };
        assert!(idx_peak <= idx_bound, "parse_idx allocated {idx_peak} bytes for {} input bytes", input.len());
        match idx_result {
            Ok(a) => {
                assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
                ok += 1;
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.idx: "), "{e}");
                errors += 1;
            }
        }
        for (k, &format) in formats.iter().enumerate() {
            let skip_bad = (iter + k) % 2 == 0;
            let (r, peak) = allocated_by(|| parse_cifar(&input, "fuzz.bin", format, skip_bad));
            // Pixels at most the input; labels and record numbers 8 bytes per 3073-byte record;
            // with skip_bad a message of under 400 bytes per skipped record.
            assert!(peak <= input.len() + input.len() / 8 + 4096, "parse_cifar allocated {peak} for {}", input.len());
            match r {
                Ok(r) => {
                    assert_eq!(r.pixels.len(), r.labels.len() * 3072);
                    assert!(r.labels.iter().all(|&l| (l as usize) < format.classes().len()));
                    assert!(skip_bad || r.skipped.is_empty());
                    ok += 1;
                }
                Err(e) => {
                    assert!(!skip_bad || e.to_string().is_empty(), "skip_bad never fails on records: {e}");
                    assert!(e.to_string().starts_with("fuzz.bin"), "{e}");
                    errors += 1;
                }
            }
        }
        slowest = slowest.max(t.elapsed());
    }
    println!("{ok} parsed, {errors} rejected, slowest input {slowest:?}, total {:?}", start.elapsed());
    assert!(ok > 1000 && errors > 1000, "the mutations exercise both paths: {ok} ok, {errors} errors");
    assert!(slowest < Duration::from_secs(1), "an input took {slowest:?}");
}
