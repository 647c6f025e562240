//! DVS-Digits: the definition of the emulated dataset made from the 1797 UCI handwritten
//! digits (see `docs/dvs-digits.md`): classes, file names, split and how each digit is shown.
//!
//! `inflor synth --digits assets/digits.csv.gz --out dvs-digits --seed 1`
//! generates it with the default emulator parameters.

use super::generate::LabelledImage;
use super::images::{DigitImage, ImageError};

/// File-name prefix: `<class>/dvsdigits_<class>_<n>.aedat`.
pub const PREFIX: &str = "dvsdigits";

/// Per class, recordings `_0` … `_35` are test data: 360 test and 1437 training recordings,
/// about 20 % of each class (the classes hold 174 to 183 digits, too few for CIFAR10-DVS's
/// 100 test recordings per class).
pub const TEST_PER_CLASS: u64 = 36;

/// Black pixels added around each 8 × 8 digit (making it 10 × 10). Strokes often touch the
/// 8 × 8 border; without a margin they would end in a hard edge where the image meets the
/// monitor's background, and that edge would fire like a stroke.
pub const MARGIN: usize = 1;

/// The class names, `"0"` … `"9"`, so label = digit (sorted names give the same order).
pub fn classes() -> Vec<String> {
    (0..10).map(|d: u8| d.to_string()).collect()
}

/// The emulator's inputs: each digit with its margin, labelled by its digit, in file order
/// (so a digit's per-class number `n` is its rank among the rows of its class).
pub fn inputs(digits: &[DigitImage]) -> Result<Vec<LabelledImage>, ImageError> {
    digits
        .iter()
        .map(|d| {
            Ok(LabelledImage {
                image: d.image.padded(MARGIN, 0.0)?,
                label: usize::from(d.label),
            })
        })
        .collect()
}
