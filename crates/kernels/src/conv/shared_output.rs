/// An output that parallel tasks share, each writing only its own elements (the direct forward
/// pass: a band's rows in a run of channels; Winograd: the pixels of its tiles). `f32`, or bf16
/// bits where an output is stored so.
pub(super) struct SharedOutput<T = f32>(pub(super) *mut T);
// SAFETY: the tasks write disjoint elements (see the users).
unsafe impl<T> Send for SharedOutput<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedOutput<T> {}

// Copy whatever `T` is: it is a pointer (a derive would ask `T: Copy`).
impl<T> Clone for SharedOutput<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOutput<T> {}

impl<T> SharedOutput<T> {
    /// The element `offset` elements in (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` is within the output.
    pub(in crate::conv) unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: forwarded contract.
        unsafe { self.0.add(offset) }
    }
}
