//! Running the `resnet` binary in a scratch directory and reading what it did.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What one run of the binary did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts a clean success and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts an ordinary failure (exit 1 or 2, never a panic's 101 or an abort) whose standard
    /// error contains every one of `needles`, and returns self.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Run {
        assert!(
            matches!(self.code, Some(1) | Some(2)),
            "expected exit 1 or 2, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "a panic reached the user:\n{}", self.stderr);
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}:\n{}", self.stderr);
        }
        self
    }
}

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resnet"))
}

/// A `resnet` command run in `dir` with one compute thread (tests run side by side).
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(binary());
    c.current_dir(dir).env("RESNET_NUM_THREADS", "1").env_remove("RUST_BACKTRACE").stdin(Stdio::null());
    c
}

/// Runs `resnet ARGS` in `dir` to the end.
pub fn run<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::from_output(command(dir).args(args).output().expect("the resnet binary runs"))
}

/// A fresh scratch directory, removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// `dir/name`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Runs a command prepared with [`command`] (extra environment, say) to the end.
pub fn run_command(mut c: Command) -> Run {
    Run::from_output(c.output().expect("the resnet binary runs"))
}

/// Runs `resnet ARGS` in `dir` with its address space capped at `limit_mib` MiB (`ulimit -v`):
/// a run whose memory would grow without bound then fails instead of taking the machine down,
/// and a run that stays bounded is unaffected.
#[cfg(unix)]
pub fn run_capped<I, S>(dir: &Path, args: I, limit_mib: u64) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("sh");
    c.current_dir(dir).env("RESNET_NUM_THREADS", "1").env_remove("RUST_BACKTRACE").stdin(Stdio::null());
    c.arg("-c").arg(format!("ulimit -v {}; exec \"$0\" \"$@\"", limit_mib * 1024)).arg(binary()).args(args);
    run_command(c)
}

/// Waits until `path` exists (a bound, not a timing assert: a run that never writes it fails).
pub fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before writing {}", path.display());
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (`INT`, `TERM`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
    assert!(status.expect("kill runs").success());
}

/// Waits for `child` to end and collects what it printed.
pub fn finish(child: Child) -> Run {
    Run::from_output(child.wait_with_output().unwrap())
}

/// A CIFAR-10 binary folder of 16 random images per file.
pub fn tiny_cifar(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 7u32;
    let mut file = |name: &str| {
        let mut bytes = Vec::new();
        for i in 0..16u32 {
            bytes.push((i % 10) as u8);
            for _ in 0..3072 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((state >> 24) as u8);
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"] {
        file(name);
    }
    file("test_batch.bin");
}

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A tiny CIFAR-style network on a tiny synthetic set: 4 steps per epoch, seconds per run.
pub const TINY: &[&str] = &[
    "--model",
    "cifar-resnet8",
    "--synthetic-train",
    "128",
    "--synthetic-test",
    "32",
    "--synthetic-size",
    "16",
    "--batch-size",
    "32",
    "--eval-batch-size",
    "32",
    "--quiet",
];

/// An 8-bit RGB PNG of `pixels` (HWC), written with stored (uncompressed) deflate blocks.
pub fn png(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    for row in pixels.chunks(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        c.extend(&body);
        c.extend(crc32fast::hash(&body).to_be_bytes());
        c
    };
    let mut ihdr = (width as u32).to_be_bytes().to_vec();
    ihdr.extend((height as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    [b"\x89PNG\r\n\x1a\n".to_vec(), chunk(b"IHDR", &ihdr), chunk(b"IDAT", &z), chunk(b"IEND", &[])].concat()
}

/// Pseudo-random bytes (a fixed linear congruential stream).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 56) as u8
        })
        .collect()
}
