/// An output that parallel tasks share, each writing only its own elements (the direct forward
/// pass: a band's rows in a run of channels; Winograd: the pixels of its tiles).
#[derive(Clone, Copy)]
pub(super) struct SharedOutput(pub(super) *mut f32);
// SAFETY: the tasks write disjoint elements (see the users).
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The element `offset` floats in (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` is within the output.
    pub(in crate::conv) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded contract.
        unsafe { self.0.add(offset) }
    }
}
