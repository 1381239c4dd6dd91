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
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
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

/// The tile layout (palette 1). Four accumulators keep four independent `tdpbf16ps` chains in
/// flight (one chain waits on its previous product's latency, several times the issue
/// interval). C tiles 0..4 hold `16 x 16` f32 blocks: tiles 0 and 1 `rows0` rows, tiles 2 and 3
/// `rows1`; A tiles 4 (`rows0` rows) and 5 (`rows1`) of `kp` pairs; B tiles 6 and 7 of `kp` rows
/// of 16 pairs.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn new(rows0: usize, rows1: usize, kp: usize) -> Self {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let (r0, r1, k) = (rows0 as u8, rows1 as u8, kp as u8);
        let shapes =
            [(64, r0), (64, r0), (64, r1), (64, r1), (4 * kp as u16, r0), (4 * kp as u16, r1), (64, k), (64, k)];
        for (t, (colsb, rows)) in shapes.into_iter().enumerate() {
            c.colsb[t] = colsb;
            c.rows[t] = rows;
        }
        c
    }

    /// Loads the layout unless this thread's tiles already have it.
    ///
    /// # Safety
    /// AMX is supported and permitted ([`supported`]).
    unsafe fn ensure(rows0: usize, rows1: usize, kp: usize) {
        let key = (rows0 | rows1 << 8 | kp << 16) as u32;
        if LOADED.get() != key {
            let cfg = TileConfig::new(rows0, rows1, kp);
            // SAFETY: AMX is usable (caller's contract); the configuration is a valid palette-1
            // layout (rows <= 16, colsb <= 64) in 64 readable bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly)) };
            LOADED.set(key);
        }
    }
}

/// One AMX instruction on literal tile registers (the assembler needs them spelled out).
macro_rules! tile {
    (zero $t:literal) => {
        asm!(concat!("tilezero tmm", $t), options(nostack, nomem))
    };
    (load $t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{p} + {s} * 1]"), p = in(reg) $p, s = in(reg) $stride, options(nostack, readonly))
    };
    (store $t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tilestored [{p} + {s} * 1], tmm", $t), p = in(reg) $p, s = in(reg) $stride, options(nostack))
    };
    (dot $c:literal, $a:literal, $b:literal) => {
        asm!(concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
    };
}

/// The accumulators `(p, j)` in use: `pb` row blocks by `nb` channel blocks, at most four tiles
/// (`pb == 2` allows `nb <= 2`).
fn accumulators(pb: usize, nb: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..pb).flat_map(move |p| (0..nb).map(move |j| (p, j)))
}

/// What [`accumulator`] does with a C tile.
#[derive(Clone, Copy)]
enum AccOp {
    /// Load it from memory.
    Load,
    /// Set it to zero (no memory access).
    Zero,
    /// Store it to memory.
    Store,
}

/// Loads, zeroes or stores accumulator `(p, j)` (tile `2p + j`) at `c`, rows `stride` bytes apart.
///
/// # Safety
/// AMX usable, a layout loaded, and for a load (store) the block readable (writable).
unsafe fn accumulator(op: AccOp, p: usize, j: usize, c: *mut f32, stride: usize) {
    macro_rules! on {
        ($t:literal) => {
            match op {
                AccOp::Load => tile!(load $t, c, stride),
                AccOp::Zero => tile!(zero $t),
                AccOp::Store => tile!(store $t, c, stride),
            }
        };
    }
    // SAFETY: caller's contract; the match spells out the tile number 2p + j.
    unsafe {
        match 2 * p + j {
            0 => on!(0),
            1 => on!(1),
            2 => on!(2),
            _ => on!(3),
        }
    }
}

/// One reduction step over `pb` A blocks and `nb` B blocks: loads A tiles 4 (and 5) from `a0`
/// (and `a1`), and B blocks `j` from `b + 16 * j` into tiles 6 and 7 alternately, and adds the
/// products into the accumulators (`(p, j)` in tile `2p + j`).
///
/// # Safety
/// AMX usable, the layout of [`TileConfig::new`] loaded, every tile read in range.
#[inline(always)]
unsafe fn step(pb: usize, nb: usize, a0: *const u8, a1: *const u8, sa: usize, b: *const u32, sb: usize) {
    // SAFETY: caller's contract.
    unsafe {
        tile!(load 4, a0, sa);
        if pb == 2 {
            tile!(load 5, a1, sa);
        }
        tile!(load 6, b, sb);
        tile!(dot 0, 4, 6);
        if pb == 2 {
            tile!(dot 2, 5, 6);
        }
        if nb >= 2 {
            tile!(load 7, b.add(16), sb);
            tile!(dot 1, 4, 7);
            if pb == 2 {
                tile!(dot 3, 5, 7);
            }
        }
        if nb >= 3 {
            tile!(load 6, b.add(32), sb);
            tile!(dot 2, 4, 6);
        }
        if nb >= 4 {
            tile!(load 7, b.add(48), sb);
            tile!(dot 3, 4, 7);
        }
    }
}

/// `y (+)= conv(a, w)` for `px` (1..=32) consecutive output pixels and `16 * nb` output channels
/// (`nb` 1..=4; at most 2 when `px > 16`), like [`super::avx512::conv_tile_bf16`], on AMX
/// tiles, stepping `kp` pairs at a time (from [`pairs_per_step`]).
///
/// # Safety
/// - [`supported`] returned true.
/// - `kp` divides `g.pairs`, `16 * nb` output channels fit in `g.cout`.
/// - The ranges of [`super::avx512::conv_tile_bf16`]: the input windows of the `px` pixels for
///   every tap lie in `a`'s allocation, the weight pairs `[tap, pair, 0..16 * nb]` in `w`'s, and
///   the `px` output rows of `16 * nb` floats (row stride `g.y_pixel_stride`) in `y`'s.
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
    let pb = px.div_ceil(16);
    debug_assert!((1..=32).contains(&px) && (1..=4).contains(&nb) && pb * nb <= 4);
    debug_assert!(g.pairs.is_multiple_of(kp) && kp <= 16);
    let (rows0, rows1) = (px.min(16), if pb == 2 { px - 16 } else { px.min(16) });
    let (a_stride, w_stride, y_stride) = (4 * g.a_pixel_stride, 4 * g.cout, 4 * g.y_pixel_stride);
    // Pixel block 1 starts 16 pixels on: 16 input windows further in the strip.
    let (y1, a1_offset) = (16 * g.y_pixel_stride, 16 * g.a_pixel_stride);
    // SAFETY: AMX is usable (caller's contract) and every tile gets its shape from the layout
    // ensured here. Accumulator (p, j) is output pixels 16p.., channels 16j.. of the caller's
    // output block; A tiles read the windows of the block's pixels for one tap and `kp` pairs,
    // B tiles `kp` weight rows of 16 outputs: all inside the caller's ranges. Stores write only
    // the output block.
    unsafe {
        TileConfig::ensure(rows0, rows1, kp);
        let first = if accumulate { AccOp::Load } else { AccOp::Zero };
        for (p, j) in accumulators(pb, nb) {
            accumulator(first, p, j, y.add(p * y1 + 16 * j), y_stride);
        }
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let tap = ky * g.kw + kx;
                for p0 in (0..g.pairs).step_by(kp) {
                    let a0 = a.add(ky * g.a_row_stride + kx * g.pairs + p0);
                    let a1 = a0.wrapping_add(a1_offset);
                    let wp = w.add((tap * g.pairs + p0) * g.cout);
                    step(pb, nb, a0.cast(), a1.cast(), a_stride, wp, w_stride);
                }
            }
        }
        for (p, j) in accumulators(pb, nb) {
            accumulator(AccOp::Store, p, j, y.add(p * y1 + 16 * j), y_stride);
        }
    }
}

/// `c (16 * pb rows x 16 * nb f32, row stride c_stride floats) += a x b` with `a` `16 * pb` rows
/// of `32 * kb` bf16 (row stride `a_stride` bf16) and `b` `16 * kb` rows of `16 * nb` bf16 pairs
/// (row stride `b_stride` pairs; row `k` pairs columns `2k` and `2k + 1` of `a`). The weight
/// gradient's product: `a` is the output gradient transposed (channels x pixels), `b` the
/// input's pixel pairs.
///
/// # Safety
/// - [`supported`] returned true; `pb * nb <= 4`, `nb <= 4`, `pb <= 2`.
/// - `a` is readable for `16 * pb` rows of `32 * kb` bf16, `b` for `16 * kb` rows of `16 * nb`
///   pairs, and `c` readable and writable for `16 * pb` rows of `16 * nb` floats, at the given
///   strides.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_tile(
    kb: usize,
    pb: usize,
    nb: usize,
    a: *const u16,
    a_stride: usize,
    b: *const u32,
    b_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    debug_assert!((1..=2).contains(&pb) && (1..=4).contains(&nb) && pb * nb <= 4);
    let (sa, sb, sc) = (2 * a_stride, 4 * b_stride, 4 * c_stride);
    // SAFETY: AMX is usable (caller's contract) and every tile is 16 rows of 64 bytes in the
    // layout ensured here. Accumulator (p, j) is rows 16p.., columns 16j.. of `c`; the loads read
    // `a` rows 16p.. columns 32i.. and `b` rows 16i.., columns 16j.., all within the caller's
    // ranges; the stores write only the `c` block.
    unsafe {
        TileConfig::ensure(16, 16, 16);
        for (p, j) in accumulators(pb, nb) {
            accumulator(AccOp::Load, p, j, c.add(16 * p * c_stride + 16 * j), sc);
        }
        for i in 0..kb {
            let a0 = a.add(32 * i);
            step(pb, nb, a0.cast(), a0.wrapping_add(16 * a_stride).cast(), sa, b.add(16 * i * b_stride), sb);
        }
        for (p, j) in accumulators(pb, nb) {
            accumulator(AccOp::Store, p, j, c.add(16 * p * c_stride + 16 * j), sc);
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
            crate::skip::skip("this CPU (or kernel) has no AMX bf16 tiles");
            return;
        }
        let (kh, kw, pairs, cout, stride, wp) = (3, 3, 32, 64, 1, 36);
        let g = ConvTileArgsBf16 {
            a_pixel_stride: stride * pairs,
            a_row_stride: wp * pairs,
            pairs,
            kh,
            kw,
            cout,
            y_pixel_stride: cout,
        };
        // Small integers are exact in bf16 and their products sum exactly in f32.
        let bf = |v: i32| (v as f32).to_bits() >> 16;
        let val = |i: usize, m: usize| (i * 7 % m) as i32 - (m / 2) as i32;
        let a: Vec<u32> = (0..kh * wp * pairs).map(|i| bf(val(i, 5)) | (bf(val(i + 1, 3)) << 16)).collect();
        let w: Vec<u32> = (0..kh * kw * pairs * cout).map(|i| bf(val(i, 7)) | (bf(val(i + 3, 5)) << 16)).collect();
        let lo = |u: u32| f32::from_bits(u << 16);
        let hi = |u: u32| f32::from_bits(u & 0xFFFF_0000);
        for (px, nb, accumulate) in
            [(16, 2, false), (7, 1, true), (16, 4, false), (1, 3, true), (32, 2, false), (21, 1, true), (29, 2, true)]
        {
            let kp = pairs_per_step(pairs, cout).unwrap();
            let mut y = vec![1.0f32; 32 * cout];
            // SAFETY: AMX checked above; kp divides pairs; the windows of 32 pixels over 3 x 3
            // taps reach (2 * wp + 31 + 2) * pairs + pairs <= a.len(); w and y are whole.
            unsafe { conv_tile(px, nb, kp, &g, a.as_ptr(), w.as_ptr(), y.as_mut_ptr(), accumulate) };
            for p in 0..32 {
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
            crate::skip::skip("this CPU (or kernel) has no AMX bf16 tiles");
            return;
        }
        let bf = |v: i32| ((v as f32).to_bits() >> 16) as u16;
        let (kb, a_stride, b_stride, c_stride) = (3, 100, 72, 68);
        let a: Vec<u16> = (0..32 * a_stride).map(|i| bf((i * 5 % 9) as i32 - 4)).collect();
        let b: Vec<u32> = (0..16 * kb * b_stride)
            .map(|i| u32::from(bf((i * 3 % 7) as i32 - 3)) | u32::from(bf((i % 5) as i32 - 2)) << 16)
            .collect();
        let val = |u: u16| f32::from_bits(u32::from(u) << 16);
        for (pb, nb) in [(1, 1), (1, 2), (2, 2), (1, 4), (2, 1), (1, 3)] {
            let mut c: Vec<f32> = (0..32 * c_stride).map(|i| (i % 11) as f32).collect();
            let before = c.clone();
            // SAFETY: AMX checked above; a has 32 rows of 100 >= 96 bf16, b 48 rows of 72 >= 64
            // pairs, c 32 rows of 68 >= 64 floats.
            unsafe { gemm_tile(kb, pb, nb, a.as_ptr(), a_stride, b.as_ptr(), b_stride, c.as_mut_ptr(), c_stride) };
            for i in 0..32 {
                for j in 0..c_stride {
                    let mut want = before[i * c_stride + j];
                    if i < 16 * pb && j < 16 * nb {
                        for k in 0..32 * kb {
                            let pair = b[(k / 2) * b_stride + j];
                            let bv = if k % 2 == 0 { pair as u16 } else { (pair >> 16) as u16 };
                            want += val(a[i * a_stride + k]) * val(bv);
                        }
                    }
                    assert_eq!(c[i * c_stride + j], want, "row {i} column {j} (pb {pb}, nb {nb})");
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
