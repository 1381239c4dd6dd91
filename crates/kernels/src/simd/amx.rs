//! Intel AMX (Advanced Matrix Extensions) bf16 tiles for the direct convolution.
//!
//! One `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32
//! accumulators: 8192 multiply-adds, about 16 times what `vdpbf16ps` does per instruction.
//! The convolution maps onto it without repacking the input: the rows of the A tile are
//! consecutive output pixels of one row (their input windows are a fixed stride apart in the
//! padded strip), its columns the input channel pairs of one tap; the B tile is a block of the
//! pair-packed weights `[kh, kw, pairs, cout]`, which is already the layout AMX wants (two bf16
//! of consecutive input channels side by side); the C tile rows go straight to the output rows.
//!
//! Stable Rust has no AMX intrinsics, so the instructions are inline assembly. The compiler
//! never allocates tile registers itself, so their contents survive between the `asm!` blocks
//! of one kernel call.

use super::avx512::ConvTileArgsBf16;
use std::arch::asm;
use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// The tile shape this thread's AMX state holds (`rows | kp << 8`; 0: none yet). Loading a
    /// configuration costs about as much as several tile products, and consecutive calls
    /// nearly always want the same one.
    static LOADED: Cell<u32> = const { Cell::new(0) };
}

/// Whether this CPU and kernel run AMX bf16 tiles, asking Linux for permission to use the tile
/// state once (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, process-wide).
/// `RESNET_AMX=0` turns the tiles off (to compare paths).
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var("RESNET_AMX").as_deref() == Ok("0") {
            return false;
        }
        // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let cpu = edx & (1 << 22) != 0 && edx & (1 << 24) != 0;
        cpu && request_tile_permission()
    })
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call only changes this process's permitted XSAVE features;
    // it reads no memory of ours, and the registers the syscall instruction clobbers (rcx,
    // r11) are declared.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// Input channel pairs per tile step (the K of one `tdpbf16ps`) for a convolution with `pairs`
/// pairs and `cout` outputs, or `None` where the tiles do not fit it well: outputs must come in
/// blocks of 16, and a step of fewer than 8 pairs (e.g. a 3-channel stem) wastes the tile.
pub fn pairs_per_step(pairs: usize, cout: usize) -> Option<usize> {
    if !cout.is_multiple_of(16) {
        return None;
    }
    (8..=16).rev().find(|&k| pairs.is_multiple_of(k))
}

/// The tile layout (palette 1): C tiles 0 and 1 (`rows` pixels x 16 f32), A tile 2 (`rows`
/// pixels x `kp` pairs), B tiles 3 and 4 (`kp` pairs x 16 outputs, two bf16 each).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn new(rows: usize, kp: usize) -> Self {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let r = rows as u8;
        for (t, (colsb, rows)) in
            [(64, r), (64, r), (4 * kp as u16, r), (64, kp as u8), (64, kp as u8)].into_iter().enumerate()
        {
            c.colsb[t] = colsb;
            c.rows[t] = rows;
        }
        c
    }
}

/// `y (+)= conv(a, w)` for `px` (1..=16) consecutive output pixels and `16 * nb` (`nb` 1 or 2)
/// output channels, like [`super::avx512::conv_tile_bf16`], on AMX tiles, stepping `kp` pairs
/// at a time (from [`pairs_per_step`]).
///
/// # Safety
/// - [`supported`] returned true.
/// - `kp` divides `g.pairs`, `16 * nb` output channels fit in `g.cout`.
/// - The ranges of [`super::avx512::conv_tile_bf16`]: the input windows of the `px` pixels for
///   every tap lie in `a`'s allocation, the weight pairs `[tap, pair, 0..16 * nb]` in `w`'s, and
///   the `px` output rows of `16 * nb` floats (row stride `g.cout`) in `y`'s.
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_tile(
    px: usize,
    nb: usize,
    kp: usize,
    g: &ConvTileArgsBf16,
    a: *const u32,
    w: *const u32,
    y: *mut f32,
    accumulate: bool,
) {
    debug_assert!((1..=16).contains(&px) && (1..=2).contains(&nb) && g.pairs.is_multiple_of(kp) && kp <= 16);
    let key = (px | kp << 8) as u32;
    let (a_stride, w_stride, y_stride) = (4 * g.a_pixel_stride, 4 * g.cout, 4 * g.cout);
    // SAFETY (every block below): AMX is supported and permitted (caller's contract) and the
    // configuration loaded now or by an earlier call on this thread (the same `key`) gives every
    // tile its shape. Each tile load reads `rows` rows of
    // `colsb` bytes at the given stride: A tiles the `px` input windows of one tap and `kp`
    // pairs, B tiles `kp` weight rows of 16 outputs, C tiles the `px` x 16 output block, all
    // inside the ranges the caller guarantees; the stores write only that output block.
    unsafe {
        if LOADED.get() != key {
            let cfg = TileConfig::new(px, kp);
            asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
            LOADED.set(key);
        }
        if accumulate {
            asm!("tileloadd tmm0, [{p} + {s} * 1]", p = in(reg) y, s = in(reg) y_stride, options(nostack, readonly));
            if nb == 2 {
                asm!("tileloadd tmm1, [{p} + {s} * 1]", p = in(reg) y.add(16), s = in(reg) y_stride, options(nostack, readonly));
            }
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        }
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let tap = ky * g.kw + kx;
                for p0 in (0..g.pairs).step_by(kp) {
                    let ap = a.add(ky * g.a_row_stride + kx * g.pairs + p0);
                    let wp = w.add((tap * g.pairs + p0) * g.cout);
                    asm!(
                        "tileloadd tmm2, [{a} + {sa} * 1]",
                        "tileloadd tmm3, [{w} + {sw} * 1]",
                        "tdpbf16ps tmm0, tmm2, tmm3",
                        a = in(reg) ap,
                        sa = in(reg) a_stride,
                        w = in(reg) wp,
                        sw = in(reg) w_stride,
                        options(nostack, readonly)
                    );
                    if nb == 2 {
                        asm!(
                            "tileloadd tmm4, [{w} + {sw} * 1]",
                            "tdpbf16ps tmm1, tmm2, tmm4",
                            w = in(reg) wp.add(16),
                            sw = in(reg) w_stride,
                            options(nostack, readonly)
                        );
                    }
                }
            }
        }
        asm!("tilestored [{p} + {s} * 1], tmm0", p = in(reg) y, s = in(reg) y_stride, options(nostack));
        if nb == 2 {
            asm!("tilestored [{p} + {s} * 1], tmm1", p = in(reg) y.add(16), s = in(reg) y_stride, options(nostack));
        }
    }
}

/// `c (16 x 16 * nb f32, row stride c_stride floats) += a x b` with `a` 16 rows of `32 * kb`
/// bf16 (row stride `a_stride` bf16) and `b` `16 * kb` rows of `16 * nb` bf16 pairs (row stride
/// `b_stride` pairs; row `j` pairs columns `2j` and `2j + 1` of `a`). The weight gradient's
/// product: `a` is the output gradient transposed (channels x pixels), `b` the input's pixel
/// pairs.
///
/// # Safety
/// - [`supported`] returned true; `nb` is 1 or 2.
/// - `a` is readable for 16 rows of `32 * kb` bf16, `b` for `16 * kb` rows of `16 * nb` pairs,
///   and `c` readable and writable for 16 rows of `16 * nb` floats, at the given strides.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_tile(
    kb: usize,
    nb: usize,
    a: *const u16,
    a_stride: usize,
    b: *const u32,
    b_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    debug_assert!((1..=2).contains(&nb));
    let key = (16 | 16 << 8) as u32;
    let (sa, sb, sc) = (2 * a_stride, 4 * b_stride, 4 * c_stride);
    // SAFETY (every block below): AMX is supported and permitted (caller's contract), and every
    // tile is 16 rows of 64 bytes in the configuration loaded now or by an earlier call with the
    // same `key`. The loads read 16 rows of 64 bytes at the given strides: `a` columns
    // `32 * i .. 32 * (i + 1)`, `b` rows `16 * i ..` and the `c` block, all within the caller's
    // ranges; the stores write only the `c` block.
    unsafe {
        if LOADED.get() != key {
            let cfg = TileConfig::new(16, 16);
            asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
            LOADED.set(key);
        }
        asm!("tileloadd tmm0, [{p} + {s} * 1]", p = in(reg) c, s = in(reg) sc, options(nostack, readonly));
        if nb == 2 {
            asm!("tileloadd tmm1, [{p} + {s} * 1]", p = in(reg) c.add(16), s = in(reg) sc, options(nostack, readonly));
        }
        for i in 0..kb {
            let (ap, bp) = (a.add(32 * i), b.add(16 * i * b_stride));
            asm!(
                "tileloadd tmm2, [{a} + {sa} * 1]",
                "tileloadd tmm3, [{b} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm2, tmm3",
                a = in(reg) ap,
                sa = in(reg) sa,
                b = in(reg) bp,
                sb = in(reg) sb,
                options(nostack, readonly)
            );
            if nb == 2 {
                asm!(
                    "tileloadd tmm4, [{b} + {sb} * 1]",
                    "tdpbf16ps tmm1, tmm2, tmm4",
                    b = in(reg) bp.add(16),
                    sb = in(reg) sb,
                    options(nostack, readonly)
                );
            }
        }
        asm!("tilestored [{p} + {s} * 1], tmm0", p = in(reg) c, s = in(reg) sc, options(nostack));
        if nb == 2 {
            asm!("tilestored [{p} + {s} * 1], tmm1", p = in(reg) c.add(16), s = in(reg) sc, options(nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile call against a scalar sum of the same bf16 products, for full and partial
    /// pixel counts, both channel blocks, several taps and two pair steps, writing and adding.
    #[test]
    fn tile_matches_scalar_products() {
        if !supported() {
            eprintln!("skipped: this CPU (or kernel) has no AMX bf16 tiles");
            return;
        }
        let (kh, kw, pairs, cout, stride, wp) = (3, 3, 32, 32, 1, 20);
        let g = ConvTileArgsBf16 { a_pixel_stride: stride * pairs, a_row_stride: wp * pairs, pairs, kh, kw, cout };
        // Small integers are exact in bf16 and their products sum exactly in f32.
        let bf = |v: i32| (v as f32).to_bits() >> 16;
        let val = |i: usize, m: usize| (i * 7 % m) as i32 - (m / 2) as i32;
        let a: Vec<u32> = (0..kh * wp * pairs).map(|i| bf(val(i, 5)) | (bf(val(i + 1, 3)) << 16)).collect();
        let w: Vec<u32> = (0..kh * kw * pairs * cout).map(|i| bf(val(i, 7)) | (bf(val(i + 3, 5)) << 16)).collect();
        let lo = |u: u32| f32::from_bits(u << 16);
        let hi = |u: u32| f32::from_bits(u & 0xFFFF_0000);
        for (px, nb, accumulate) in [(16, 2, false), (7, 1, true), (16, 1, false), (1, 2, true)] {
            let kp = pairs_per_step(pairs, cout).unwrap();
            let mut y = vec![1.0f32; 16 * cout];
            // SAFETY: AMX checked above; kp divides pairs; the windows of 16 pixels over 3 x 3
            // taps reach (2 * wp + 15 + 2) * pairs + pairs <= a.len(); w and y are whole.
            unsafe { conv_tile(px, nb, kp, &g, a.as_ptr(), w.as_ptr(), y.as_mut_ptr(), accumulate) };
            for p in 0..16 {
                for o in 0..cout {
                    let want = if p < px && o < 16 * nb {
                        let mut s = if accumulate { 1.0f32 } else { 0.0 };
                        for ky in 0..kh {
                            for kx in 0..kw {
                                for q in 0..pairs {
                                    let av = a[ky * wp * pairs + (p * stride + kx) * pairs + q];
                                    let wv = w[((ky * kw + kx) * pairs + q) * cout + o];
                                    s += lo(av) * lo(wv) + hi(av) * hi(wv);
                                }
                            }
                        }
                        s
                    } else {
                        1.0
                    };
                    assert_eq!(y[p * cout + o], want, "pixel {p} output {o} (px {px}, nb {nb})");
                }
            }
        }
    }

    /// The weight-gradient product against scalar sums (exact for small integers).
    #[test]
    fn gemm_tile_matches_scalar_products() {
        if !supported() {
            eprintln!("skipped: this CPU (or kernel) has no AMX bf16 tiles");
            return;
        }
        let bf = |v: i32| ((v as f32).to_bits() >> 16) as u16;
        let (kb, a_stride, b_stride, c_stride) = (3, 100, 40, 36);
        let a: Vec<u16> = (0..16 * a_stride).map(|i| bf((i * 5 % 9) as i32 - 4)).collect();
        let b: Vec<u32> = (0..16 * kb * b_stride)
            .map(|i| u32::from(bf((i * 3 % 7) as i32 - 3)) | u32::from(bf((i % 5) as i32 - 2)) << 16)
            .collect();
        let val = |u: u16| f32::from_bits(u32::from(u) << 16);
        for nb in [1, 2] {
            let mut c: Vec<f32> = (0..16 * c_stride).map(|i| (i % 11) as f32).collect();
            let before = c.clone();
            // SAFETY: AMX checked above; a has 16 rows of 100 >= 96 bf16, b 48 rows of 40 >= 32
            // pairs, c 16 rows of 36 >= 32 floats.
            unsafe { gemm_tile(kb, nb, a.as_ptr(), a_stride, b.as_ptr(), b_stride, c.as_mut_ptr(), c_stride) };
            for i in 0..16 {
                for j in 0..c_stride {
                    let mut want = before[i * c_stride + j];
                    if j < 16 * nb {
                        for k in 0..32 * kb {
                            let pair = b[(k / 2) * b_stride + j];
                            let bv = if k % 2 == 0 { pair as u16 } else { (pair >> 16) as u16 };
                            want += val(a[i * a_stride + k]) * val(bv);
                        }
                    }
                    assert_eq!(c[i * c_stride + j], want, "row {i} column {j} (nb {nb})");
                }
            }
        }
    }

    #[test]
    fn step_sizes() {
        assert_eq!(pairs_per_step(32, 64), Some(16));
        assert_eq!(pairs_per_step(8, 16), Some(8));
        assert_eq!(pairs_per_step(24, 32), Some(12));
        assert_eq!(pairs_per_step(2, 16), None);
        assert_eq!(pairs_per_step(32, 10), None);
    }
}
