//! Sparse frames: the binner's output and the executors' input.

/// Channels × height × width of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameShape {
    /// Channels (2 for polarity).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl FrameShape {
    /// Number of values in one frame.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the frame has no values at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flat index of (c, y, x) in `[C][H][W]` order.
    #[inline]
    pub fn index(&self, c: usize, y: usize, x: usize) -> usize {
        (c * self.height + y) * self.width + x
    }
}

/// One time bin: the nonzero values of a `[C][H][W]` frame, by ascending flat index.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseFrame {
    /// The frame's shape.
    pub shape: FrameShape,
    /// Flat `[C][H][W]` indices of the nonzero values, strictly ascending.
    pub indices: Vec<u32>,
    /// The values, parallel to `indices`.
    pub values: Vec<f32>,
}

impl SparseFrame {
    /// An all-zero frame.
    pub fn empty(shape: FrameShape) -> Self {
        Self {
            shape,
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Builds a sparse frame from a dense `[C][H][W]` slice, keeping nonzero entries.
    pub fn from_dense(shape: FrameShape, dense: &[f32]) -> Self {
        debug_assert_eq!(dense.len(), shape.len());
        let mut frame = Self::empty(shape);
        for (i, &v) in dense.iter().enumerate() {
            if v != 0.0 {
                frame.indices.push(i as u32);
                frame.values.push(v);
            }
        }
        frame
    }

    /// Number of nonzero values.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Fraction of values that are nonzero.
    pub fn density(&self) -> f64 {
        if self.shape.is_empty() {
            0.0
        } else {
            self.nnz() as f64 / self.shape.len() as f64
        }
    }

    /// Writes the dense `[C][H][W]` view into `out` (resized to fit).
    pub fn write_dense(&self, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.shape.len(), 0.0);
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            out[i as usize] = v;
        }
    }

    /// The dense `[C][H][W]` view.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.write_dense(&mut out);
        out
    }
}
