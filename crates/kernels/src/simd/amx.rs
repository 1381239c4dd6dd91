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

    #[test]
    fn step_sizes() {
        assert_eq!(pairs_per_step(32, 64), Some(16));
        assert_eq!(pairs_per_step(8, 16), Some(8));
        assert_eq!(pairs_per_step(24, 32), Some(12));
        assert_eq!(pairs_per_step(2, 16), None);
        assert_eq!(pairs_per_step(32, 10), None);
    }
}
