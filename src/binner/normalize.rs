//! Per-frame normalisation of binned values, applied after resizing. The model file names the
//! one it was trained with.

use serde::{Deserialize, Serialize};

/// How each frame's values are normalised after binning and resizing. All of these map zero to
/// zero, so a sparse frame stays sparse. Serialised by name: `"none"`, `"binary"`,
/// `"max_per_frame"`, `"log1p"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Raw (resized) event counts, as SpikingJelly's frames.
    #[default]
    None,
    /// `1` where the value is positive, else `0` (`x > 0`).
    Binary,
    /// Each value divided by the frame's largest value (both channels), so the maximum is `1`.
    MaxPerFrame,
    /// `ln(1 + x)`, which compresses hot pixels.
    Log1p,
}

impl Normalization {
    /// Normalises the nonzero values of one frame in place. Binned values are never negative.
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Binary => {
                for v in values {
                    *v = if *v > 0.0 { 1.0 } else { 0.0 };
                }
            }
            Self::MaxPerFrame => {
                let max = values.iter().copied().fold(0.0f32, f32::max);
                if max > 0.0 {
                    for v in values {
                        *v /= max;
                    }
                }
            }
            Self::Log1p => {
                for v in values {
                    *v = v.ln_1p();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_normalisation() {
        let raw = [1.0f32, 4.0, 0.5];
        let run = |n: Normalization| {
            let mut v = raw;
            n.apply(&mut v);
            v
        };
        assert_eq!(run(Normalization::None), raw);
        assert_eq!(run(Normalization::Binary), [1.0, 1.0, 1.0]);
        assert_eq!(run(Normalization::MaxPerFrame), [0.25, 1.0, 0.125]);
        assert_eq!(run(Normalization::Log1p), raw.map(f32::ln_1p));
        let mut empty: [f32; 0] = [];
        Normalization::MaxPerFrame.apply(&mut empty);
    }

    #[test]
    fn serialised_by_name() {
        for (n, name) in [
            (Normalization::None, "\"none\""),
            (Normalization::Binary, "\"binary\""),
            (Normalization::MaxPerFrame, "\"max_per_frame\""),
            (Normalization::Log1p, "\"log1p\""),
        ] {
            assert_eq!(serde_json::to_string(&n).unwrap(), name);
            assert_eq!(serde_json::from_str::<Normalization>(name).unwrap(), n);
        }
        assert!(serde_json::from_str::<Normalization>("\"zscore\"").is_err());
    }
}
