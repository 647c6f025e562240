//! Integer kernels of int8 models: sums of selected int8 weight rows into i32 (the gather of
//! the event-driven executor and the reference's definition), and an int8 GEMM over 0/1
//! im2col rows (the dense executor).
//!
//! Integer sums are exact in every order, so none of these fixes an order for correctness:
//! every executor gets the same i32 whatever it does, as long as it sums the same terms. The
//! i32 cannot overflow: a node's fan-in is at most `snn::network::MAX_INT8_FAN_IN`, so a sum
//! is at most 127 × that ≤ 2^24 in magnitude (tests/it/int8.rs checks the worst case).
//!
//! The loops are plain Rust over contiguous rows (an i8 row widened and added into Cout i32
//! accumulators), which the compiler vectorises for the baseline target. Wider instruction
//! sets (AVX2, AVX-512 VNNI) are not dispatched here yet.

/// `out[o] = Σ_k weight[rows[k] + o]` for every `o < out.len()`: the sum of the int8 rows
/// that the spiking inputs select.
///
/// Precondition (checked in debug builds; callers build `rows` from validated shapes):
/// `rows[k] as usize + out.len() <= weight.len()` for every k.
#[inline]
pub fn sum_rows_i8(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    let cout = out.len();
    debug_assert!(rows.iter().all(|&r| r as usize + cout <= weight.len()));
    out.fill(0);
    for &r in rows {
        let row = &weight[r as usize..][..cout];
        for (a, &w) in out.iter_mut().zip(row) {
            *a += i32::from(w);
        }
    }
}

/// The definition of [`sum_rows_i8`], one output at a time (what the tests hold it to).
pub fn sum_rows_i8_scalar(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    for (o, out) in out.iter_mut().enumerate() {
        *out = rows
            .iter()
            .map(|&r| i32::from(weight[r as usize + o]))
            .sum();
    }
}

/// `c[m×n] += a[m×k] · b[k×n]`, row-major, with `a` the 0/1 im2col matrix of binary spikes
/// and `b` int8 weights. Every product is made (the dense executor's cost does not depend on
/// the input); rows of `b` stream past one row of `c` at a time.
pub fn igemm(m: usize, k: usize, n: usize, a: &[u8], b: &[i8], c: &mut [i32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    for (a_row, c_row) in a
        .chunks_exact(k.max(1))
        .zip(c.chunks_exact_mut(n.max(1)))
        .take(m)
    {
        for (&x, b_row) in a_row.iter().zip(b.chunks_exact(n.max(1))) {
            let x = i32::from(x);
            for (acc, &w) in c_row.iter_mut().zip(b_row) {
                *acc += x * i32::from(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn row_sums_equal_their_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for cout in [1usize, 7, 16, 33, 128] {
            let rows_total = 40;
            let weight: Vec<i8> = (0..rows_total * cout)
                .map(|_| rng.random_range(-127..=127))
                .collect();
            let rows: Vec<u32> = (0..rows_total)
                .filter(|_| rng.random_bool(0.4))
                .map(|r| (r * cout) as u32)
                .collect();
            let (mut fast, mut slow) = (vec![5; cout], vec![0; cout]);
            sum_rows_i8(&weight, &rows, &mut fast);
            sum_rows_i8_scalar(&weight, &rows, &mut slow);
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn igemm_equals_the_row_sums_of_its_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (m, k, n) = (5, 27, 12);
        let a: Vec<u8> = (0..m * k).map(|_| u8::from(rng.random_bool(0.3))).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.random_range(-127..=127)).collect();
        let mut c = vec![0i32; m * n];
        igemm(m, k, n, &a, &b, &mut c);
        for i in 0..m {
            let rows: Vec<u32> = (0..k)
                .filter(|&j| a[i * k + j] != 0)
                .map(|j| (j * n) as u32)
                .collect();
            let mut expect = vec![0; n];
            sum_rows_i8_scalar(&b, &rows, &mut expect);
            assert_eq!(&c[i * n..][..n], &expect[..]);
        }
    }
}
