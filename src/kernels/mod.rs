//! Numeric kernels shared by the executors and the trainer: GEMM wrappers with one contract
//! ([`gemm`]), im2col / col2im over NHWC images ([`im2col`]), and sums of selected weight rows
//! in f64, one generic SIMD body per instruction set with a scalar twin ([`rows`]), the
//! integer row sums and GEMM of int8 models ([`int8`]), and the compaction of dense spikes
//! into lists ([`compact`]). A leaf:
//! imports nothing else from the crate.
//!
//! Layout conventions (the same as `exec`): images are `[H][W][C]`, channel contiguous;
//! convolution weights are `[Cin][Kh][Kw][Cout]`, so one im2col row of an output pixel, in
//! `(c, ky, kx)` order, times the `[K][Cout]` weight matrix gives that pixel's Cout outputs.

pub mod compact;
pub mod gemm;
pub mod im2col;
pub mod int8;
pub mod rows;

pub use compact::compact_nonzero;
pub use gemm::{Transpose, dgemm, sgemm};
pub use im2col::{ConvGeometry, col2im_add, im2col};
pub use int8::{
    Int8Isa, TapSpan, igemm, igemm_scalar, igemm_with, sum_rows_i8, sum_rows_i8_scalar,
    sum_rows_i8_with, sum_taps_i8, sum_taps_i8_with,
};
pub use rows::{Isa, sum_rows, sum_rows_scalar, sum_rows_scaled};
