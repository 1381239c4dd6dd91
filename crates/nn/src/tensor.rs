//! A 4-D NHWC activation tensor whose storage is reused as its shape changes.

/// An `[n, h, w, c]` tensor of `f32` in channels-last order. Vectors (logits, pooled features)
/// are `[n, 1, 1, c]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    shape: [usize; 4],
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: [usize; 4]) -> Self {
        Self { shape, data: vec![0.0; shape.iter().product()] }
    }

    /// Wraps `data` with the given shape.
    ///
    /// # Panics
    /// If the length does not match the shape.
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Self {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "tensor data does not match shape {shape:?}");
        Self { shape, data }
    }

    /// Gives the tensor a new shape, keeping its allocation when it is large enough. The contents
    /// are unspecified afterwards (stale values or zeros).
    pub fn reshape_for(&mut self, shape: [usize; 4]) {
        self.shape = shape;
        let len = shape.iter().product();
        if self.data.len() != len {
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
        self.data.len()
    }
    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The elements, NHWC order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The elements, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Consumes the tensor, returning its elements.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// Bytes held by the allocation.
    pub fn bytes(&self) -> usize {
        self.data.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
