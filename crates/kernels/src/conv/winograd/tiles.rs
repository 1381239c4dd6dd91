//! Numbering the output tiles and transforming their input windows.

use super::{M, POSITIONS};
use crate::activations::Activations;
use crate::conv::algorithm::bf16_supported;
use crate::conv::input::ConvInput;
use crate::conv::shape::ConvShape;
use crate::simd::winograd::{input_tile, input_tile_bf16, input_tile_bf16_of_bf16, input_tile_of_bf16, TileWindow};

/// The transformed input tiles of tiles `first..first + count` into `v` (`[count, 36, cin]`:
/// each tile's 36 positions written together, as position-major `[36, count, cin]` stores land
/// a position's whole row of tiles apart; docs/tuning.md).
pub(super) fn transform_inputs(input: &ConvInput<'_>, first: usize, count: usize, v: &mut [f32], bf16: bool) {
    let s = &input.shape;
    let ci = s.cin;
    // In bf16, two values to an f32 slot.
    let slots = if bf16 { POSITIONS * count * ci / 2 } else { POSITIONS * count * ci };
    assert!(v.len() >= slots, "transformed-input buffer too short");
    // SAFETY: the places written lie within `v` (asserted above), which nothing else uses.
    unsafe { transform_inputs_to(input, first, count, v.as_mut_ptr(), bf16, [POSITIONS * ci, ci]) }
}

/// [`transform_inputs`] into the buffer at `v`, tile `k`'s position `p` at `k * stride[0] + p *
/// stride[1]` values (f32, or bf16 two to a slot), both strides multiples of `cin`.
///
/// # Safety
/// The places written (`(count - 1) * tile_stride + 35 * position_stride + cin` values from `v`,
/// two to a slot in bf16, at the strides' multiples) are writable and no other thread touches
/// them meanwhile.
pub(super) unsafe fn transform_inputs_to(
    input: &ConvInput<'_>,
    first: usize,
    count: usize,
    v: *mut f32,
    bf16: bool,
    [tile_stride, position_stride]: [usize; 2],
) {
    let (s, t) = (&input.shape, input.transform.as_ref());
    let ci = s.cin;
    assert!(tile_stride.is_multiple_of(ci) && position_stride.is_multiple_of(ci));
    assert!(!bf16 || bf16_supported(), "bf16 transforms need AVX512_BF16");
    let (v32, v16) = (v, v as *mut u16);
    let t = t.map(|t| (t.scale.as_ptr(), t.shift.as_ptr()));
    for (k, (img, oy, ox)) in tile_corners(s, first, count).enumerate() {
        let win = window(s.h, s.w, ci, s.pad, oy, ox);
        let at = img * s.h * s.w * ci;
        // SAFETY: AVX-512 (and AVX512_BF16 for bf16, asserted) and whole vectors of channels
        // (the callers run only shapes that fit); image `img` of `x` (length checked by the
        // callers), f32 or bf16, and the transform's `ci` floats; positions p < 36 of tile k <
        // count at `k * tile_stride + p * position_stride` values into `v` (f32, or bf16 two to
        // a slot), their `ci` values writable (contract).
        unsafe {
            let (v32, v16) = (v32.add(k * tile_stride), v16.add(k * tile_stride));
            match (input.x, bf16) {
                (Activations::F32(x), false) => input_tile(x[at..].as_ptr(), &win, t, v32, position_stride),
                (Activations::F32(x), true) => input_tile_bf16(x[at..].as_ptr(), &win, t, v16, position_stride),
                (Activations::Bf16(x), false) => input_tile_of_bf16(x[at..].as_ptr(), &win, t, v32, position_stride),
                (Activations::Bf16(x), true) => {
                    input_tile_bf16_of_bf16(x[at..].as_ptr(), &win, t, v16, position_stride)
                }
            }
        };
    }
}

/// Tiles `first..first + count` in order (numbered image by image, row by row over the output
/// of `s`): for each, its image and the top-left output pixel, without a division per tile.
pub(super) fn tile_corners(s: &ConvShape, first: usize, count: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (th, tw) = (s.out_h().div_ceil(M), s.out_w().div_ceil(M));
    let (mut img, mut ty, mut tx) = (first / (th * tw), first / tw % th, first % tw);
    (0..count).map(move |_| {
        let at = (img, M * ty, M * tx);
        tx += 1;
        if tx == tw {
            tx = 0;
            ty += 1;
            if ty == th {
                ty = 0;
                img += 1;
            }
        }
        at
    })
}

/// The window of an image of `h x w` pixels of `c` channels starting `pad` pixels before
/// output pixel (oy, ox).
pub(super) fn window(h: usize, w: usize, c: usize, pad: usize, oy: usize, ox: usize) -> TileWindow {
    TileWindow { h, w, c, y0: oy as isize - pad as isize, x0: ox as isize - pad as isize }
}
