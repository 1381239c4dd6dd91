//! The CIFAR and IDX parsers on thousands of seeded mutations and truncations of valid files: no
//! panic, no allocation beyond what the input justifies (measured by a counting allocator, which
//! is why this test has its own binary and a single test function), and no work beyond it: the
//! IDX reader pulls each input byte at most once and decompresses no more than the input can
//! expand to (counted, not timed, so a busy machine cannot fail it).
//!
//! The cargo-fuzz targets in `crates/data/fuzz/` explore further; this runs in CI.

use resnet_data::{parse_cifar, parse_idx, read_idx, CifarFormat};
use resnet_kernels::rng::Rng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::{Read, Write};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated while `f` runs, growth of reallocations included: an upper bound on how far
/// its memory use rose.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    (r, region.change().bytes_allocated)
}

/// A reader that counts the bytes it hands out and the calls made to it, and fails every call
/// past `budget`: a parser that kept calling without progress ends with an error, not a hang.
struct Counted<R> {
    inner: R,
    bytes: u64,
    calls: u64,
    budget: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: R, budget: u64) -> Self {
        Self { inner, bytes: 0, calls: 0, budget }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls > self.budget {
            return Err(std::io::Error::other("work budget exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The work `read_idx` does on `input`: (read calls on the stream it parses, their budget, bytes
/// parsed). The parsed stream is the input itself, or its gzip decompression, which deflate's
/// ratio bounds at 1032 times the input.
fn idx_work(input: &[u8]) -> (u64, u64, u64) {
    let parsed_max = if input.starts_with(&[0x1f, 0x8b]) { 1032 * input.len() as u64 + 64 } else { input.len() as u64 };
    // Every call but a few at the end of the stream moves at least one byte.
    let budget = parsed_max + 16;
    if input.starts_with(&[0x1f, 0x8b]) {
        let mut parsed = Counted::new(flate2::read::GzDecoder::new(input), budget);
        let _ = read_idx(&mut parsed, "fuzz.idx", parsed_max);
        (parsed.calls, budget, parsed.bytes)
    } else {
        let mut parsed = Counted::new(input, budget);
        let _ = read_idx(&mut parsed, "fuzz.idx", parsed_max);
        (parsed.calls, budget, parsed.bytes)
    }
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
fn seeded_mutations_never_panic_overallocate_or_overwork() {
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

    let (mut ok, mut errors) = (0, 0);
    let mut most_parsed = 0u64;
    for iter in 0..6000 {
        let mut input = seeds[iter % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input);
        }
        let gz = input.starts_with(&[0x1f, 0x8b]);
        let (calls, budget, parsed) = idx_work(&input);
        assert!(calls <= budget, "read_idx made over {budget} read calls for {} input bytes", input.len());
        most_parsed = most_parsed.max(parsed);
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
    }
    println!("{ok} parsed, {errors} rejected, at most {most_parsed} bytes parsed from one input");
    assert!(ok > 1000 && errors > 1000, "the mutations exercise both paths: {ok} ok, {errors} errors");
}
