//! Compaction of a dense row into the indices (and values) of its nonzero entries: how the
//! event-driven executor turns a pixel's spikes into its list, with AVX-512's compress where
//! the CPU has it and a branch-free scalar loop elsewhere. Both give the same lists.

use std::sync::OnceLock;

/// Writes the indices of the entries of `dense` that are not 0.0 (NaN counts as nonzero, as
/// `v != 0.0` says) into the front of `indices`, ascending, and their values into the front
/// of `values` when given; returns how many. Slots past the count are left unspecified.
///
/// Panics if `indices` (or `values`) is shorter than `dense`, or `dense` holds 2^32 or more
/// entries.
#[inline]
pub fn compact_nonzero(dense: &[f32], indices: &mut [u32], values: Option<&mut [f32]>) -> usize {
    assert!(
        indices.len() >= dense.len(),
        "index slots shorter than the row"
    );
    assert!(
        u32::try_from(dense.len()).is_ok(),
        "row too long for u32 indices"
    );
    if let Some(v) = values.as_deref() {
        assert!(v.len() >= dense.len(), "value slots shorter than the row");
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked once above); the slot lengths are asserted.
        return unsafe { x86::compact_avx512(dense, indices, values) };
    }
    compact_scalar(dense, indices, values, 0, 0)
}

/// The scalar compaction of `dense[from..]`, continuing a list of `k` entries; returns the
/// new count. Every index is written at the next free slot, which only advances past nonzero
/// values (k ≤ i, so the write stays inside the slot).
#[inline(always)]
fn compact_scalar(
    dense: &[f32],
    indices: &mut [u32],
    values: Option<&mut [f32]>,
    from: usize,
    mut k: usize,
) -> usize {
    match values {
        None => {
            for (i, &v) in dense.iter().enumerate().skip(from) {
                indices[k] = i as u32;
                k += usize::from(v != 0.0);
            }
        }
        Some(values) => {
            for (i, &v) in dense.iter().enumerate().skip(from) {
                indices[k] = i as u32;
                values[k] = v;
                k += usize::from(v != 0.0);
            }
        }
    }
    k
}

/// Whether this CPU has AVX-512F (detected once per process).
fn has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _CMP_NEQ_UQ, _mm512_add_epi32, _mm512_cmp_ps_mask, _mm512_loadu_ps,
        _mm512_maskz_compress_epi32, _mm512_maskz_compress_ps, _mm512_set1_epi32,
        _mm512_setr_epi32, _mm512_setzero_ps, _mm512_storeu_epi32, _mm512_storeu_ps,
    };

    use super::compact_scalar;

    /// 16 entries at a time: a compare makes the nonzero mask, `vpcompressd` packs their
    /// indices (and values) to the front of a register, and a full-width store puts them at
    /// the list's end; the count advances by the mask's population. The store writes 16
    /// slots from k ≤ i, inside the slots since i + 16 ≤ the row's length.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `indices` (and `values`) at least as long as `dense`,
    /// which is shorter than 2^32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compact_avx512(
        dense: &[f32],
        indices: &mut [u32],
        mut values: Option<&mut [f32]>,
    ) -> usize {
        let n = dense.len();
        let mut k = 0usize;
        let mut i = 0usize;
        let step = _mm512_set1_epi32(16);
        let mut idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        // SAFETY: i + 16 <= n bounds the loads; k <= i bounds the 16-slot stores (see above).
        unsafe {
            while i + 16 <= n {
                let v = _mm512_loadu_ps(dense.as_ptr().add(i));
                let mask = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps());
                let packed = _mm512_maskz_compress_epi32(mask, idx);
                _mm512_storeu_epi32(indices.as_mut_ptr().add(k).cast(), packed);
                if let Some(values) = values.as_deref_mut() {
                    let packed = _mm512_maskz_compress_ps(mask, v);
                    _mm512_storeu_ps(values.as_mut_ptr().add(k), packed);
                }
                k += mask.count_ones() as usize;
                idx = _mm512_add_epi32(idx, step);
                i += 16;
            }
        }
        compact_scalar(dense, indices, values, i, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn compaction_lists_exactly_the_nonzero_entries_in_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [0usize, 1, 15, 16, 17, 64, 100, 512, 515] {
            for density in [0.0, 0.1, 0.5, 1.0] {
                let dense: Vec<f32> = (0..n)
                    .map(|_| match rng.random_bool(density) {
                        true => [1.0, 0.25, -3.0, f32::NAN][rng.random_range(0..4)],
                        false => [0.0, -0.0][rng.random_range(0..2)],
                    })
                    .collect();
                let want: Vec<u32> = (0..n as u32)
                    .filter(|&i| dense[i as usize] != 0.0)
                    .collect();
                let mut indices = vec![u32::MAX; n];
                let mut values = vec![9.0; n];
                let k = compact_nonzero(&dense, &mut indices, Some(&mut values));
                assert_eq!(&indices[..k], &want[..], "n={n} d={density}");
                for (&i, &v) in want.iter().zip(&values[..k]) {
                    assert_eq!(v.to_bits(), dense[i as usize].to_bits());
                }
                let mut only = vec![u32::MAX; n];
                assert_eq!(compact_nonzero(&dense, &mut only, None), k);
                assert_eq!(&only[..k], &want[..]);
                // The scalar path, whatever this CPU has.
                let mut scalar = vec![u32::MAX; n];
                assert_eq!(compact_scalar(&dense, &mut scalar, None, 0, 0), k);
                assert_eq!(&scalar[..k], &want[..]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "shorter")]
    fn short_slots_panic() {
        compact_nonzero(&[1.0; 20], &mut [0; 19], None);
    }
}
