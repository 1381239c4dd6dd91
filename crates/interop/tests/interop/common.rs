//! The deterministic weight and input generator that tools/interop/make_fixtures.py implements
//! identically in numpy, and helpers shared by the tests.

use resnet_models::{NamedTensor, ResNet, ResNetSpec, TensorData};
use resnet_nn::Tensor;
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The seed of make_fixtures.py.
pub const SEED: u64 = 2015;
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `(u * 2 - 1) * scale + offset` for the `len` uniforms of the stream named `name`, in `f32`
/// arithmetic in exactly the order numpy evaluates it.
pub fn generate(name: &str, len: usize, scale: f64, offset: f64) -> Vec<f32> {
    let seed = fnv1a64(name) ^ SEED;
    let (scale, offset) = (scale as f32, offset as f32);
    (1..=len as u64)
        .map(|i| {
            let u = (mix(seed.wrapping_add(i.wrapping_mul(GAMMA))) >> 40) as f32 * (1.0 / 16_777_216.0);
            (u * 2.0 - 1.0) * scale + offset
        })
        .collect()
}

/// make_fixtures.py's `rule`: `(scale, offset)` of a state tensor, `None` for
/// `num_batches_tracked`.
fn rule(name: &str, shape: &[usize]) -> Option<(f64, f64)> {
    if name.ends_with("num_batches_tracked") {
        return None;
    }
    Some(if shape.len() == 4 {
        ((6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt(), 0.0)
    } else if name == "fc.weight" {
        ((3.0 / shape[1] as f64).sqrt(), 0.0)
    } else if name == "fc.bias" {
        (0.1, 0.0)
    } else if name.ends_with("running_mean") {
        (0.2, 0.0)
    } else if name.ends_with("running_var") {
        (0.5, 1.0)
    } else if name.ends_with("weight") {
        (0.25, 0.75)
    } else if name.ends_with("bias") {
        (0.1, 0.0)
    } else {
        panic!("no rule for {name}")
    })
}

/// The generated state dict of a network, in torchvision's order and layouts.
pub fn generated_state(spec: &ResNetSpec) -> Vec<NamedTensor> {
    let net = ResNet::new(spec.clone()).unwrap();
    net.state_dict()
        .into_iter()
        .map(|t| {
            let data = match rule(&t.name, &t.shape) {
                Some((scale, offset)) => TensorData::F32(generate(&t.name, t.data.len(), scale, offset)),
                None => TensorData::I64(vec![1000]),
            };
            NamedTensor { data, ..t }
        })
        .collect()
}

/// The generated input `[n, c, side, side]`: NCHW values (as PyTorch sees them) and the NHWC
/// tensor our networks take.
pub fn generated_input(n: usize, c: usize, side: usize) -> (Vec<f32>, Tensor) {
    let nchw = generate("input", n * c * side * side, 2.0, 0.0);
    (nchw.clone(), nchw_to_nhwc(&nchw, [n, c, side, side]))
}

pub fn nchw_to_nhwc(v: &[f32], [n, c, h, w]: [usize; 4]) -> Tensor {
    let mut out = vec![0.0; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = v[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    Tensor::from_vec([n, h, w, c], out)
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("resnet-interop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// A float32 tensor of a safetensors fixture.
pub fn fixture_f32(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    f32s(t.data())
}

/// Every tensor of a safetensors file as `name -> (dtype, shape, bytes)`.
pub fn raw_tensors(path: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

/// Max |got - want| over max |want|, and whether every row's argmax agrees.
pub fn compare(got: &[f32], want: &[f32], classes: usize) -> (f64, bool) {
    assert_eq!(got.len(), want.len(), "logit counts differ");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max(f64::from(a - b).abs()));
    let argmax = |v: &[f32]| v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best });
    let same = got.chunks(classes).zip(want.chunks(classes)).all(|(g, w)| argmax(g) == argmax(w));
    (err / scale, same)
}
