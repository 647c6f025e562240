//! The binner: turns events into frames. Owns window policies, polarity channels, resizing by
//! per-pixel splat tables and sparse frames. Imports only `event`.

pub mod frame;

pub use frame::{FrameShape, SparseFrame};
