//! Instruction-set dispatch.
//!
//! The CPU's features are detected once; every kernel with a SIMD version dispatches on
//! [`isa`]. Two mechanisms produce SIMD code:
//! - [`multiversion!`](crate::multiversion): one portable loop body compiled three times, for
//!   AVX-512, AVX2+FMA and baseline x86-64, so the compiler vectorises it for each;
//! - hand-written intrinsics in [`avx512`] for the convolution micro-kernels, whose portable
//!   twins in `portable` are their test oracle, and in [`avx2`] for the int8 kernel of CPUs
//!   without VNNI ([`int8`] describes an int8 tile to either);
//! - AMX tiles in [`amx`] (inline assembly) for the bf16 convolutions where the CPU has them.
//!
//! [`cap_isa`] (from `KernelConfig::install`) holds the kernels to a lower level (to test or
//! compare paths).

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod batch_norm;
#[cfg(target_arch = "x86_64")]
pub mod int8;
#[cfg(test)]
mod portable;
#[cfg(target_arch = "x86_64")]
pub mod winograd;

use std::sync::OnceLock;

/// An instruction-set level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Baseline code, no explicit SIMD.
    Scalar,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 F/BW/DQ/VL.
    Avx512,
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            Isa::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Scalar
    }
}

/// The instruction set the kernels use, fixed on first use.
static ISA: OnceLock<Isa> = OnceLock::new();

/// The instruction set kernels use: the CPU's best, or the cap of [`cap_isa`].
pub fn isa() -> Isa {
    *ISA.get_or_init(detect)
}

/// Holds the kernels to `cap` or below. Call it before any kernel runs.
///
/// # Errors
/// A message when the kernels already run another level.
pub fn cap_isa(cap: Isa) -> Result<(), String> {
    let capped = detect().min(cap);
    match *ISA.get_or_init(|| capped) {
        used if used == capped => Ok(()),
        used => {
            Err(format!("the kernels already run {used:?} code; choose the instruction set before any kernel runs"))
        }
    }
}

/// Every level this CPU can run, lowest first (tests run each).
#[cfg(test)]
pub fn available() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|&l| l <= isa()).collect()
}

/// Defines a function whose body is compiled for AVX-512, AVX2+FMA and baseline, dispatching on
/// [`isa`] at run time. Also defines `<name>_on(isa, ...)` to run one version explicitly.
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident / $name_on:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $name_on($crate::simd::isa(), $($arg),*)
        }

        /// Runs one instruction-set version of the function of the same name without `_on`.
        ///
        /// # Panics
        /// If this CPU cannot run `isa`.
        #[allow(clippy::too_many_arguments, dead_code)]
        $vis fn $name_on(isa: $crate::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v256($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }

            assert!(isa <= $crate::simd::isa(), "this CPU cannot run {isa:?} code");
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the assertion above checked that the CPU has every feature enabled here.
                $crate::simd::Isa::Avx512 => unsafe { v512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2 and FMA.
                $crate::simd::Isa::Avx2 => unsafe { v256($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
