//! The kernels' configuration: what a caller chooses (precision, the algorithms allowed, an
//! instruction-set cap, the thread count), read from the environment once at the edge of a
//! program, and what the CPU can do.

use crate::conv::Precision;
use crate::simd::{self, Isa};

/// What a caller chooses about the kernels. A network holds one for its convolutions
/// (`ResNet::set_kernel_config`); a program installs its own once where it starts
/// ([`KernelConfig::install`]), which fixes the process-wide parts (thread count,
/// instruction-set cap) and is what new layers start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Arithmetic of the convolutions.
    pub precision: Precision,
    /// Whether the algorithm choice may take Winograd.
    pub winograd: bool,
    /// Whether the algorithm choice may take the AMX tiles (where the CPU has them).
    pub amx: bool,
    /// The highest instruction set the kernels use (below what the CPU has, to compare paths).
    pub isa: Isa,
    /// Compute threads (`None`: one per available core).
    pub threads: Option<usize>,
    /// How training keeps each convolution output for the backward pass: `None` in the
    /// precision it computes in (bf16 training in bf16, as autocast does: a fifth less memory
    /// for ResNet-50's training step), or in the precision given. See [`Self::stored`].
    pub stored: Option<Precision>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self { precision: Precision::F32, winograd: true, amx: true, isa: Isa::Avx512, threads: None, stored: None }
    }
}

/// The program's configuration, once installed.
static INSTALLED: std::sync::OnceLock<KernelConfig> = std::sync::OnceLock::new();

impl KernelConfig {
    /// The defaults, changed by `RESNET_NUM_THREADS=N`, `RESNET_ISA=scalar|avx2|avx512`,
    /// `RESNET_WINOGRAD=0`, `RESNET_AMX=0` and `RESNET_BF16_STORAGE=0|1` (training keeps its
    /// convolution outputs in f32 or bf16, whatever its precision). A program calls this once,
    /// where it starts.
    ///
    /// # Errors
    /// A message naming the variable whose value is not one it takes.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] reading the variables through `var`.
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        let switch = |name: &str, unset: bool| match var(name).as_deref().map(str::trim) {
            None | Some("") => Ok(unset),
            Some("1") => Ok(true),
            Some("0") => Ok(false),
            Some(other) => Err(format!("{name}={other}: expected 0 or 1")),
        };
        config.winograd = switch("RESNET_WINOGRAD", true)?;
        config.amx = switch("RESNET_AMX", true)?;
        if var("RESNET_BF16_STORAGE").is_some_and(|v| !v.trim().is_empty()) {
            let bf16 = switch("RESNET_BF16_STORAGE", false)?;
            config.stored = Some(if bf16 { Precision::Bf16 } else { Precision::F32 });
        }
        if let Some(v) = var("RESNET_ISA").filter(|v| !v.trim().is_empty()) {
            config.isa = match v.trim() {
                "scalar" => Isa::Scalar,
                "avx2" => Isa::Avx2,
                "avx512" => Isa::Avx512,
                other => return Err(format!("RESNET_ISA={other}: expected scalar, avx2 or avx512")),
            };
        }
        if let Some(v) = var("RESNET_NUM_THREADS").filter(|v| !v.trim().is_empty()) {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => config.threads = Some(n),
                _ => return Err(format!("RESNET_NUM_THREADS={v}: expected a whole number of threads, 1 or more")),
            }
        }
        Ok(config)
    }

    /// Makes this the program's configuration: puts the process-wide parts into effect (the
    /// thread count and the instruction-set cap) and makes it what new layers start with
    /// ([`Self::installed`]). Call it once, before any kernel runs.
    ///
    /// # Errors
    /// A message when another configuration, thread count or instruction set is already fixed.
    pub fn install(&self) -> Result<(), String> {
        simd::cap_isa(self.isa)?;
        if let Some(n) = self.threads {
            crate::threads::set_num_threads(n).map_err(|e| e.to_string())?;
        }
        match *INSTALLED.get_or_init(|| *self) {
            installed if installed == *self => Ok(()),
            installed => Err(format!("the kernels are already configured as {installed:?}")),
        }
    }

    /// The precision in which training keeps each convolution output for the backward pass.
    pub fn stored(&self) -> Precision {
        self.stored.unwrap_or(self.precision)
    }

    /// The configuration [`Self::install`] made the program's, else the default.
    pub fn installed() -> Self {
        INSTALLED.get().copied().unwrap_or_default()
    }

    /// Checks that `cpu` runs this configuration's precision.
    ///
    /// # Errors
    /// A message naming the missing CPU feature when bf16 is asked for and not supported.
    pub fn check(&self, cpu: &CpuFeatures) -> Result<(), String> {
        if self.precision == Precision::Bf16 && !cpu.bf16 {
            return Err("bf16 convolutions need a CPU with AVX-512 and AVX512_BF16 (e.g. Intel Cooper Lake or later, \
                        AMD Zen 4 or later); this one lacks them: use --precision fp32"
                .into());
        }
        Ok(())
    }
}

/// What the CPU runs, as far as the kernels care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// The instruction set the kernels use (the CPU's best, or the installed cap).
    pub isa: Isa,
    /// AVX512_BF16 (with AVX-512).
    pub bf16: bool,
    /// AMX-BF16 tiles, permitted by the operating system.
    pub amx: bool,
}

impl CpuFeatures {
    /// This CPU's features, under the instruction-set cap of [`KernelConfig::install`].
    pub fn current() -> Self {
        let isa = simd::isa();
        #[cfg(target_arch = "x86_64")]
        let bf16 = isa >= Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16");
        #[cfg(not(target_arch = "x86_64"))]
        let bf16 = false;
        #[cfg(target_arch = "x86_64")]
        let amx = bf16 && simd::amx::supported();
        #[cfg(not(target_arch = "x86_64"))]
        let amx = false;
        Self { isa, bf16, amx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<KernelConfig, String> {
        KernelConfig::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn environment_variables_set_the_configuration() {
        assert_eq!(from(&[]), Ok(KernelConfig::default()));
        let c =
            from(&[("RESNET_WINOGRAD", "0"), ("RESNET_AMX", "0"), ("RESNET_ISA", "avx2"), ("RESNET_NUM_THREADS", "3")])
                .unwrap();
        assert_eq!(
            c,
            KernelConfig { winograd: false, amx: false, isa: Isa::Avx2, threads: Some(3), ..Default::default() }
        );
        assert_eq!(KernelConfig::default().stored(), Precision::F32);
        let bf16 = KernelConfig { precision: Precision::Bf16, ..KernelConfig::default() };
        assert_eq!(bf16.stored(), Precision::Bf16, "bf16 training keeps bf16 outputs");
        let stored = from(&[("RESNET_BF16_STORAGE", "1")]).unwrap();
        let kept_f32 = from(&[("RESNET_BF16_STORAGE", "0")]).unwrap();
        assert_eq!((stored.stored(), kept_f32.stored()), (Precision::Bf16, Precision::F32));
        assert_eq!(KernelConfig { precision: Precision::Bf16, ..kept_f32 }.stored(), Precision::F32);
        for (name, value) in [
            ("RESNET_WINOGRAD", "no"),
            ("RESNET_ISA", "sse"),
            ("RESNET_NUM_THREADS", "0"),
            ("RESNET_BF16_STORAGE", "yes"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert!(err.starts_with(&format!("{name}={value}")), "{err}");
        }
    }

    #[test]
    fn bf16_is_refused_on_a_cpu_without_it() {
        let bf16 = KernelConfig { precision: Precision::Bf16, ..Default::default() };
        let without = CpuFeatures { isa: Isa::Avx512, bf16: false, amx: false };
        assert!(bf16.check(&without).unwrap_err().contains("AVX512_BF16"));
        assert_eq!(bf16.check(&CpuFeatures { bf16: true, ..without }), Ok(()));
    }
}
