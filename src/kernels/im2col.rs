//! im2col and its adjoint col2im for NHWC images, in the column order of the `[Cin][Kh][Kw][Cout]`
//! weight layout: the columns of one output pixel are `(c, ky, kx)`, c slowest.
//!
//! A convolution of one image is then `out[P][Cout] = cols[P][K] · W[K][Cout]` with
//! K = Cin·Kh·Kw, and its input gradient is `col2im(grad_out[P][Cout] · Wᵀ)`.

/// The geometry of one 2-D convolution: zero padding and one stride for both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Input rows.
    pub in_height: usize,
    /// Input columns.
    pub in_width: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Kernel rows.
    pub kernel_height: usize,
    /// Kernel columns.
    pub kernel_width: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes, both sides).
    pub padding: usize,
    /// Output rows.
    pub out_height: usize,
    /// Output columns.
    pub out_width: usize,
}

/// Output length along one axis, or None when the window does not fit or a size is zero.
pub fn window_out(len: usize, k: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = len.checked_add(padding.checked_mul(2)?)?;
    if k == 0 || stride == 0 || padded < k {
        return None;
    }
    Some((padded - k) / stride + 1)
}

impl ConvGeometry {
    /// The geometry of a `kernel` convolution over an `in_height × in_width × in_channels`
    /// image, or None when the kernel does not fit.
    pub fn new(
        (in_height, in_width, in_channels): (usize, usize, usize),
        (kernel_height, kernel_width): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        Some(Self {
            in_height,
            in_width,
            in_channels,
            kernel_height,
            kernel_width,
            stride,
            padding,
            out_height: window_out(in_height, kernel_height, stride, padding)?,
            out_width: window_out(in_width, kernel_width, stride, padding)?,
        })
    }

    /// Columns per output pixel: Cin·Kh·Kw.
    pub const fn columns(&self) -> usize {
        self.in_channels * self.kernel_height * self.kernel_width
    }

    /// Output pixels: out_height·out_width.
    pub const fn out_pixels(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Values in one input image.
    pub const fn in_len(&self) -> usize {
        self.in_height * self.in_width * self.in_channels
    }

    /// The input row of kernel row `ky` for output row `oy`, if inside the image.
    #[inline(always)]
    fn source(&self, o: usize, k: usize, len: usize) -> Option<usize> {
        let pos = (o * self.stride + k).checked_sub(self.padding)?;
        (pos < len).then_some(pos)
    }
}

/// Writes the im2col rows of output pixels `first..first + rows` of one NHWC `image` into
/// `cols` (`rows × K`, row-major), converting each value with `convert`; padding gives zeros.
///
/// # Panics
///
/// If `image` or `cols` is too short, or the pixels run past the output (caller bugs).
pub fn im2col<S: Copy, T: Copy + Default>(
    g: &ConvGeometry,
    image: &[S],
    first: usize,
    rows: usize,
    cols: &mut [T],
    convert: impl Fn(S) -> T,
) {
    let k = g.columns();
    assert!(image.len() >= g.in_len() && cols.len() >= rows * k);
    assert!(first + rows <= g.out_pixels());
    let (kh, kw, cin) = (g.kernel_height, g.kernel_width, g.in_channels);
    for r in 0..rows {
        let pos = first + r;
        let (oy, ox) = (pos / g.out_width, pos % g.out_width);
        let col = &mut cols[r * k..][..k];
        col.fill(T::default());
        for ky in 0..kh {
            let Some(iy) = g.source(oy, ky, g.in_height) else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = g.source(ox, kx, g.in_width) else {
                    continue;
                };
                let src = &image[(iy * g.in_width + ix) * cin..][..cin];
                for (c, &v) in src.iter().enumerate() {
                    col[(c * kh + ky) * kw + kx] = convert(v);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column value of output pixels `first..first + rows`
/// back into the input position it was read from (`grad_image += col2im(cols)`); padding
/// positions are dropped.
///
/// # Panics
///
/// If a slice is too short, or the pixels run past the output (caller bugs).
pub fn col2im_add<T: Copy + std::ops::AddAssign>(
    g: &ConvGeometry,
    cols: &[T],
    first: usize,
    rows: usize,
    grad_image: &mut [T],
) {
    let k = g.columns();
    assert!(grad_image.len() >= g.in_len() && cols.len() >= rows * k);
    assert!(first + rows <= g.out_pixels());
    let (kh, kw, cin) = (g.kernel_height, g.kernel_width, g.in_channels);
    for r in 0..rows {
        let pos = first + r;
        let (oy, ox) = (pos / g.out_width, pos % g.out_width);
        let col = &cols[r * k..][..k];
        for ky in 0..kh {
            let Some(iy) = g.source(oy, ky, g.in_height) else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = g.source(ox, kx, g.in_width) else {
                    continue;
                };
                let dst = &mut grad_image[(iy * g.in_width + ix) * cin..][..cin];
                for (c, d) in dst.iter_mut().enumerate() {
                    *d += col[(c * kh + ky) * kw + kx];
                }
            }
        }
    }
}

/// [`col2im_add`] for columns in tap-major order `(ky, kx, c)`, c fastest (the product of a
/// gradient with weights whose rows were permuted the same way): each tap adds one
/// contiguous run of Cin values, which vectorises, where the `(c, ky, kx)` order gathers with
/// a stride of Kh·Kw. Adds into each input value in the same order as [`col2im_add`].
///
/// # Panics
///
/// If a slice is too short, or the pixels run past the output (caller bugs).
pub fn col2im_add_tap_major<T: Copy + std::ops::AddAssign>(
    g: &ConvGeometry,
    cols: &[T],
    first: usize,
    rows: usize,
    grad_image: &mut [T],
) {
    let k = g.columns();
    assert!(grad_image.len() >= g.in_len() && cols.len() >= rows * k);
    assert!(first + rows <= g.out_pixels());
    let (kw, cin) = (g.kernel_width, g.in_channels);
    for r in 0..rows {
        let pos = first + r;
        let (oy, ox) = (pos / g.out_width, pos % g.out_width);
        let col = &cols[r * k..][..k];
        for ky in 0..g.kernel_height {
            let Some(iy) = g.source(oy, ky, g.in_height) else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = g.source(ox, kx, g.in_width) else {
                    continue;
                };
                let dst = &mut grad_image[(iy * g.in_width + ix) * cin..][..cin];
                let src = &col[(ky * kw + kx) * cin..][..cin];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += *s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> ConvGeometry {
        ConvGeometry::new((5, 4, 3), (3, 2), 2, 1).unwrap()
    }

    #[test]
    fn shapes() {
        let g = geometry();
        // (5 + 2 - 3)/2 + 1 = 3 rows, (4 + 2 - 2)/2 + 1 = 3 columns.
        assert_eq!((g.out_height, g.out_width, g.columns()), (3, 3, 18));
        assert!(ConvGeometry::new((1, 1, 1), (3, 3), 1, 0).is_none());
        assert!(ConvGeometry::new((4, 4, 1), (3, 3), 0, 1).is_none());
    }

    #[test]
    fn im2col_times_weights_is_the_convolution() {
        let g = geometry();
        let cout = 2;
        let image: Vec<f32> = (0..g.in_len()).map(|i| (i as f32 * 0.7).sin()).collect();
        let weight: Vec<f32> = (0..g.columns() * cout)
            .map(|i| (i as f32 * 0.3).cos())
            .collect();
        let mut cols = vec![0.0f32; g.out_pixels() * g.columns()];
        im2col(&g, &image, 0, g.out_pixels(), &mut cols, |v| v);
        let mut out = vec![0.0f32; g.out_pixels() * cout];
        crate::kernels::sgemm(
            g.out_pixels(),
            g.columns(),
            cout,
            &cols,
            crate::kernels::Transpose::No,
            &weight,
            crate::kernels::Transpose::No,
            0.0,
            &mut out,
        );
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for co in 0..cout {
                    let mut want = 0.0f32;
                    for c in 0..g.in_channels {
                        for ky in 0..g.kernel_height {
                            for kx in 0..g.kernel_width {
                                let iy = (oy * 2 + ky) as isize - 1;
                                let ix = (ox * 2 + kx) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= 5 || ix >= 4 {
                                    continue;
                                }
                                let v = image[((iy as usize) * 4 + ix as usize) * 3 + c];
                                let w = weight[((c * 3 + ky) * 2 + kx) * cout + co];
                                want += v * w;
                            }
                        }
                    }
                    let got = out[(oy * g.out_width + ox) * cout + co];
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for all x, y.
        let g = geometry();
        let x: Vec<f32> = (0..g.in_len()).map(|i| (i as f32 * 0.9).sin()).collect();
        let y: Vec<f32> = (0..g.out_pixels() * g.columns())
            .map(|i| (i as f32 * 0.4).cos())
            .collect();
        let mut cols = vec![0.0f32; y.len()];
        im2col(&g, &x, 0, g.out_pixels(), &mut cols, |v| v);
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| f64::from(a * b)).sum();
        let mut back = vec![0.0f32; x.len()];
        col2im_add(&g, &y, 0, g.out_pixels(), &mut back);
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }

    #[test]
    fn tap_major_col2im_equals_col2im_of_the_permuted_columns() {
        let g = geometry();
        let (k, taps, cin) = (g.columns(), g.kernel_height * g.kernel_width, g.in_channels);
        let y: Vec<f32> = (0..g.out_pixels() * k)
            .map(|i| (i as f32 * 0.4).cos())
            .collect();
        // The same values with each pixel's columns moved from (c, tap) to (tap, c).
        let mut tap_major = vec![0.0f32; y.len()];
        for (src, dst) in y.chunks_exact(k).zip(tap_major.chunks_exact_mut(k)) {
            for c in 0..cin {
                for t in 0..taps {
                    dst[t * cin + c] = src[c * taps + t];
                }
            }
        }
        let mut want = vec![0.5f32; g.in_len()];
        col2im_add(&g, &y, 0, g.out_pixels(), &mut want);
        let mut got = vec![0.5f32; g.in_len()];
        col2im_add_tap_major(&g, &tap_major, 0, g.out_pixels(), &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn chunks_equal_the_whole() {
        let g = geometry();
        let x: Vec<f32> = (0..g.in_len()).map(|i| i as f32).collect();
        let mut whole = vec![0.0f64; g.out_pixels() * g.columns()];
        im2col(&g, &x, 0, g.out_pixels(), &mut whole, f64::from);
        let k = g.columns();
        for first in 0..g.out_pixels() {
            let mut one = vec![0.0f64; k];
            im2col(&g, &x, first, 1, &mut one, f64::from);
            assert_eq!(&one[..], &whole[first * k..][..k]);
        }
    }
}
