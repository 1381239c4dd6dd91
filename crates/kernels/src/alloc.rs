//! A global allocator that gives every large block a cache-line (64-byte) start.
//!
//! The kernels read and write 64-byte vectors; glibc returns large blocks 16 bytes past a page
//! boundary, so every such vector of an activation straddles two cache lines, which slows the
//! memory-bound passes (Winograd transforms, batch norm, elementwise; docs/tuning.md, `LARGE`
//! and `LINE`). Binaries that run the kernels install it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this size up start on a cache line; smaller ones keep the system's alignment.
const LARGE: usize = 4096;
/// A cache line.
const LINE: usize = 64;

/// [`System`], with blocks of [`LARGE`] bytes or more aligned to 64 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheAligned;

/// The layout a request is served with: the same size, and at least a cache line of alignment
/// when large. A function of the request alone, so `dealloc` and `realloc` see the layout
/// `alloc` used.
fn served(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // The size is unchanged and 64 is a power of two, so this cannot fail.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every method forwards to `System` with the layout `served` derives from the caller's,
// which keeps the caller's size and at least its alignment, so `System`'s guarantees carry over;
// `dealloc` and `realloc` derive the same layout from the same request as `alloc` did.
unsafe impl GlobalAlloc for CacheAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `served` keeps the non-zero size of the caller's layout.
        unsafe { System.alloc(served(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(served(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this request, hence from `System` with this layout.
        unsafe { System.dealloc(ptr, served(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (served(layout), served(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout)));
        if old.align() == new.align() {
            // SAFETY: `ptr` came from `System` with `old`; the new size is non-zero (caller).
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // The alignment changes across `LARGE`: a fresh block, the contents copied over.
        // SAFETY: `new` has a non-zero size; both blocks hold at least the smaller size; `ptr`
        // came from `System` with `old`.
        unsafe {
            let fresh = System.alloc(new);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks start on a cache line; growing a small block past `LARGE`, shrinking a
    /// large one below it and freeing both keep the contents and the allocator's books right.
    #[test]
    fn large_blocks_start_on_a_cache_line() {
        let a = CacheAligned;
        for size in [LARGE, LARGE + 4, 1 << 20, 9 << 20] {
            let layout = Layout::from_size_align(size, 4).unwrap();
            // SAFETY: a non-zero size; the block is freed with the same layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % LINE, 0, "{size} bytes");
                a.dealloc(p, layout);
            }
        }
        // SAFETY: as above; each realloc passes the layout the block currently has.
        unsafe {
            let small = Layout::from_size_align(100, 4).unwrap();
            let p = a.alloc(small);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let p = a.realloc(p, small, 2 * LARGE);
            assert_eq!(p as usize % LINE, 0);
            assert!((0..100).all(|i| *p.add(i) == i as u8));
            let large = Layout::from_size_align(2 * LARGE, 4).unwrap();
            let p = a.realloc(p, large, 50);
            assert!((0..50).all(|i| *p.add(i) == i as u8));
            a.dealloc(p, Layout::from_size_align(50, 4).unwrap());
        }
    }
}
