//! A 4-D NHWC activation tensor whose storage is reused as its shape changes.

use resnet_kernels::activations::{bf16_in_slots, bf16_in_slots_mut, Activations};

/// An `[n, h, w, c]` tensor of `f32` in channels-last order. Vectors (logits, pooled features)
/// are `[n, 1, 1, c]`.
///
/// The storage only grows: a tensor given a smaller shape keeps the rest of its buffer as spare
/// room, so a buffer passed between layers of different sizes is initialised once, not on every
/// use.
///
/// A tensor may instead hold its elements in bf16, two to an `f32` slot of the same buffer
/// ([`Tensor::reshape_for_bf16`]): the convolution outputs that training keeps for the
/// backward pass where the kernel configuration stores them in bf16. Such a tensor is read through [`Tensor::activations`].
#[derive(Clone, Debug, Default)]
pub struct Tensor {
    shape: [usize; 4],
    /// At least `shape`'s product long (half of it, rounded up, in bf16); elements past it are
    /// spare.
    data: Vec<f32>,
    /// The elements are bf16, two to a slot.
    bf16: bool,
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.bf16 == other.bf16 && self.slots() == other.slots()
    }
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: [usize; 4]) -> Self {
        Self { shape, data: vec![0.0; shape.iter().product()], bf16: false }
    }

    /// Wraps `data` with the given shape.
    ///
    /// # Panics
    /// If the length does not match the shape.
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Self {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "tensor data does not match shape {shape:?}");
        Self { shape, data, bf16: false }
    }

    /// Gives the tensor a new shape, keeping its allocation when it is large enough. The contents
    /// are unspecified afterwards (stale values or zeros).
    pub fn reshape_for(&mut self, shape: [usize; 4]) {
        self.shape = shape;
        self.bf16 = false;
        self.grow_to(shape.iter().product());
    }

    /// [`Self::reshape_for`] with the elements in bf16, two to a slot of the buffer.
    pub fn reshape_for_bf16(&mut self, shape: [usize; 4]) {
        self.shape = shape;
        self.bf16 = true;
        self.grow_to(shape.iter().product::<usize>().div_ceil(2));
    }

    /// Grows the buffer to at least `len` slots.
    fn grow_to(&mut self, len: usize) {
        if self.data.len() < len {
            // Exactly: `resize` alone may double the capacity, and a buffer that grows from one
            // activation to a longer one would then hold up to twice the longest.
            self.data.reserve_exact(len - self.data.len());
            self.data.resize(len, 0.0);
        }
    }

    /// `[n, h, w, c]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// Batch size.
    pub fn n(&self) -> usize {
        self.shape[0]
    }
    /// Height.
    pub fn h(&self) -> usize {
        self.shape[1]
    }
    /// Width.
    pub fn w(&self) -> usize {
        self.shape[2]
    }
    /// Channels.
    pub fn c(&self) -> usize {
        self.shape[3]
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements, NHWC order.
    ///
    /// # Panics
    /// If they are held in bf16 (see [`Self::activations`]).
    pub fn data(&self) -> &[f32] {
        assert!(!self.bf16, "a bf16 tensor read as f32");
        &self.data[..self.len()]
    }
    /// The elements, mutable.
    ///
    /// # Panics
    /// If they are held in bf16.
    pub fn data_mut(&mut self) -> &mut [f32] {
        assert!(!self.bf16, "a bf16 tensor written as f32");
        let len = self.len();
        &mut self.data[..len]
    }
    /// Whether the elements are held in bf16.
    pub fn is_bf16(&self) -> bool {
        self.bf16
    }
    /// The elements as the kernels read them, f32 or bf16.
    pub fn activations(&self) -> Activations<'_> {
        match self.bf16 {
            true => Activations::Bf16(bf16_in_slots(&self.data, self.len())),
            false => Activations::F32(self.data()),
        }
    }
    /// The bf16 elements, mutable.
    ///
    /// # Panics
    /// If they are held in f32.
    pub fn bf16_mut(&mut self) -> &mut [u16] {
        assert!(self.bf16, "an f32 tensor written as bf16");
        let len = self.len();
        bf16_in_slots_mut(&mut self.data, len)
    }
    /// The slots the elements use.
    fn slots(&self) -> &[f32] {
        &self.data[..if self.bf16 { self.len().div_ceil(2) } else { self.len() }]
    }
    /// Consumes the tensor, returning its elements.
    ///
    /// # Panics
    /// If they are held in bf16.
    pub fn into_vec(mut self) -> Vec<f32> {
        assert!(!self.bf16, "a bf16 tensor read as f32");
        self.data.truncate(self.len());
        self.data
    }
    /// Bytes held by the allocation.
    pub fn bytes(&self) -> usize {
        self.data.capacity() * 4
    }
}

/// Activation buffers that no layer holds at the moment, lent to the next layer that needs one.
/// It is the memory plan of inference, where an activation is dead once the next block has read
/// it: the buffers in use stay a handful, whatever the depth.
#[derive(Clone, Debug, Default)]
pub struct TensorPool {
    spare: Vec<Tensor>,
}

impl TensorPool {
    /// Gives `t` the largest spare buffer, unless it has storage of its own. Largest first,
    /// because in inference every buffer ends up serving the largest activations anyway: the
    /// buffers reach that size within a few calls and are not grown again.
    pub fn lend(&mut self, t: &mut Tensor) {
        if t.bytes() > 0 {
            return;
        }
        if let Some(i) = (0..self.spare.len()).max_by_key(|&i| self.spare[i].bytes()) {
            *t = self.spare.swap_remove(i);
        }
    }

    /// Takes `t`'s storage back, leaving `t` empty.
    pub fn reclaim(&mut self, t: &mut Tensor) {
        if t.bytes() > 0 {
            self.spare.push(std::mem::take(t));
        }
    }

    /// Number of spare buffers.
    pub fn len(&self) -> usize {
        self.spare.len()
    }

    /// True when no buffer is spare.
    pub fn is_empty(&self) -> bool {
        self.spare.is_empty()
    }

    /// Bytes held by the spare buffers.
    pub fn bytes(&self) -> usize {
        self.spare.iter().map(Tensor::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_allocates_exactly_the_new_length() {
        // A full buffer of 10 grown to 15 would get 20 from `Vec`'s doubling.
        let mut t = Tensor::zeros([1, 1, 1, 10]);
        t.reshape_for([1, 1, 1, 15]);
        assert_eq!(t.bytes(), 15 * 4);
    }

    #[test]
    fn reshape_keeps_storage_when_shrinking() {
        let mut t = Tensor::zeros([4, 2, 2, 3]);
        let cap = t.bytes();
        t.reshape_for([2, 2, 2, 3]);
        assert_eq!(t.len(), 24);
        assert_eq!(t.bytes(), cap);
        t.reshape_for([4, 2, 2, 3]);
        assert_eq!(t.bytes(), cap);
        assert_eq!((t.n(), t.h(), t.w(), t.c()), (4, 2, 2, 3));
    }

    #[test]
    fn a_smaller_shape_sees_only_its_elements() {
        let mut t = Tensor::from_vec([1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        t.reshape_for([1, 1, 1, 2]);
        assert_eq!(t.data(), &[1.0, 2.0]);
        assert_eq!(t.data_mut().len(), 2);
        assert_eq!(t.clone().into_vec(), vec![1.0, 2.0]);
        // Equality ignores the spare elements.
        assert_eq!(t, Tensor::from_vec([1, 1, 1, 2], vec![1.0, 2.0]));
        assert_ne!(t, Tensor::from_vec([1, 1, 2, 1], vec![1.0, 2.0]));
        t.reshape_for([0, 0, 0, 0]);
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 24);
    }

    #[test]
    fn the_pool_lends_its_largest_buffer_to_empty_tensors_only() {
        let mut pool = TensorPool::default();
        let (mut small, mut big) = (Tensor::zeros([1, 1, 1, 2]), Tensor::zeros([1, 1, 1, 8]));
        pool.reclaim(&mut small);
        pool.reclaim(&mut big);
        assert!(small.is_empty() && small.bytes() == 0 && big.bytes() == 0);
        assert_eq!((pool.len(), pool.bytes()), (2, 40));
        let mut own = Tensor::zeros([1, 1, 1, 1]);
        pool.lend(&mut own);
        assert_eq!((own.bytes(), pool.len()), (4, 2), "a tensor with storage keeps it");
        let mut t = Tensor::default();
        pool.lend(&mut t);
        assert_eq!((t.bytes(), pool.len()), (32, 1));
        t.reshape_for([1, 1, 2, 3]);
        assert_eq!((t.len(), t.bytes()), (6, 32), "no new allocation for a smaller shape");
        let mut u = Tensor::default();
        pool.lend(&mut u);
        pool.lend(&mut Tensor::default());
        assert_eq!((u.bytes(), pool.len()), (8, 0));
    }
}
