//! General matrix multiply, `C = β·C + op(A)·op(B)`, for f32 and f64, on row-major slices.
//! One contract for every caller; `matrixmultiply` does the blocking and the SIMD.
//!
//! `matrixmultiply` is used rather than a BLAS because it is pure Rust (no system library,
//! nothing to install) and its f64 kernel is what the exactness contract of `exec` relies on:
//! any summation order gives the same f64 for the sums that contract bounds.

/// Whether an operand is stored as written or as its transpose (both row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// The operand is stored as the matrix itself: `rows × cols`, row-major.
    No,
    /// The operand is stored as its transpose: `cols × rows`, row-major.
    Yes,
}

impl Transpose {
    /// (row stride, column stride) of a logical `rows × cols` operand stored this way.
    fn strides(self, rows: usize, cols: usize) -> (isize, isize) {
        match self {
            Transpose::No => (cols as isize, 1),
            Transpose::Yes => (1, rows as isize),
        }
    }
}

macro_rules! gemm_fn {
    ($name:ident, $t:ty, $mm:path) => {
        /// `C[m×n] = β·C + op(A)[m×k] · op(B)[k×n]`, all row-major. With `beta == 0` the
        /// previous contents of C are ignored (NaNs there do not propagate).
        ///
        /// # Panics
        ///
        /// If a slice is shorter than its operand (a caller bug, never an input error).
        #[allow(clippy::too_many_arguments)]
        pub fn $name(
            m: usize,
            k: usize,
            n: usize,
            a: &[$t],
            a_layout: Transpose,
            b: &[$t],
            b_layout: Transpose,
            beta: $t,
            c: &mut [$t],
        ) {
            assert!(
                a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
                "gemm operands shorter than {m}x{k} · {k}x{n}"
            );
            if m == 0 || n == 0 {
                return;
            }
            if k == 0 {
                // An empty product: C = β·C (β = 0 clears).
                for v in &mut c[..m * n] {
                    *v = if beta == 0.0 { 0.0 } else { *v * beta };
                }
                return;
            }
            let (rsa, csa) = a_layout.strides(m, k);
            let (rsb, csb) = b_layout.strides(k, n);
            // SAFETY: the assert above guarantees that every element (i, j) addressed through
            // these strides lies inside its slice: for the row-major `rows × cols` storage the
            // largest offset is rows·cols − 1, and the transposed storage has the same size.
            // `c` is uniquely borrowed, so it does not alias `a` or `b`.
            unsafe {
                $mm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    beta,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
    };
}

gemm_fn!(sgemm, f32, matrixmultiply::sgemm);
gemm_fn!(dgemm, f64, matrixmultiply::dgemm);

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: &[f64],
        at: Transpose,
        b: &[f64],
        bt: Transpose,
    ) -> Vec<f64> {
        let get_a = |i: usize, p: usize| match at {
            Transpose::No => a[i * k + p],
            Transpose::Yes => a[p * m + i],
        };
        let get_b = |p: usize, j: usize| match bt {
            Transpose::No => b[p * n + j],
            Transpose::Yes => b[j * k + p],
        };
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| get_a(i, p) * get_b(p, j)).sum();
            }
        }
        c
    }

    #[test]
    fn every_layout_matches_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        for at in [Transpose::No, Transpose::Yes] {
            for bt in [Transpose::No, Transpose::Yes] {
                let want = naive(m, k, n, &a, at, &b, bt);
                let mut c = vec![1.0; m * n];
                dgemm(m, k, n, &a, at, &b, bt, 1.0, &mut c);
                for (got, want) in c.iter().zip(&want) {
                    assert!((got - (want + 1.0)).abs() < 1e-12);
                }
                let mut c = vec![f64::NAN; m * n];
                dgemm(m, k, n, &a, at, &b, bt, 0.0, &mut c);
                for (got, want) in c.iter().zip(&want) {
                    assert!((got - want).abs() < 1e-12);
                }
                let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
                let bf: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                let mut cf = vec![0.0f32; m * n];
                sgemm(m, k, n, &af, at, &bf, bt, 0.0, &mut cf);
                for (got, want) in cf.iter().zip(&want) {
                    assert!((f64::from(*got) - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_scales_c() {
        let mut c = vec![2.0f32; 6];
        sgemm(2, 0, 3, &[], Transpose::No, &[], Transpose::No, 0.5, &mut c);
        assert_eq!(c, vec![1.0; 6]);
        sgemm(2, 0, 3, &[], Transpose::No, &[], Transpose::No, 0.0, &mut c);
        assert_eq!(c, vec![0.0; 6]);
    }
}
