//! Resizing count frames from sensor resolution to model input with per-pixel splat tables that
//! reproduce `torch.nn.functional.interpolate` (`nearest`; `bilinear` with
//! `align_corners=False, antialias=False`; `area`, which is adaptive average pooling).
//!
//! Resizing is linear in the frame, so each sensor pixel's count can be pushed ("splatted") into
//! the outputs it contributes to instead of pulling every output from the whole frame. The table
//! is built once per geometry. For each sensor pixel it lists *slots*: one slot per output for
//! `nearest` and `area`, four per output for `bilinear` (one per corner of the 2×2 neighbourhood).
//! Counts are summed per slot in integers, and each output's value is computed from its slots
//! with torch's weights and torch's order of operations. So the splat result does not depend on
//! the order of events, and it equals resizing the count frame:
//!
//! - `nearest`: bit-identical to torch (`floor(o · (in/out))` in `f32`; `o >> 1` for exact 2×).
//! - `area`: bit-identical to torch (`sum / kh / kw` in `f32`, where the integer sum is exact up
//!   to 2^24 events per output).
//! - `bilinear`: torch's CPU code picks its kernel by output size. For `out_h + out_w <= 128` (for
//!   example 48×48) it computes `w = λy·λx` and `i00·w00 + i01·w01 + i10·w10 + i11·w11`, and the
//!   compiler fuses that into multiply-adds on FMA-capable CPUs (AVX2 and AVX-512 builds). We
//!   reproduce that computation bit for bit, with a correctly rounded [`fused_mul_add`]. For larger
//!   outputs torch runs a separable kernel with slightly different rounding. There the two agree to
//!   within a few `f32` ulps of the largest contributing count (tested to `4e-6 · max count`).
//!
//! Slots hold `u32` counts that saturate at `u32::MAX`, so an adversarial stream cannot wrap them.

use serde::{Deserialize, Serialize};

use super::counts::nonzero_mask;
use super::frame::FrameShape;
use super::{BinnerError, FrameSpec, POLARITY_CHANNELS};

/// How a count frame is resized from sensor resolution to model input, named as in
/// `torch.nn.functional.interpolate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// `mode='nearest'`: each output takes the sensor pixel at `floor(o · in / out)`.
    Nearest,
    /// `mode='bilinear', align_corners=False, antialias=False`.
    Bilinear,
    /// `mode='area'`: the mean over each output's adaptive-pooling window.
    Area,
}

impl ResizeMode {
    /// The name torch uses for this mode.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Area => "area",
        }
    }
}

/// `a · b + c` with a single rounding, as a fused multiply-add instruction computes it. This is
/// exact for results in the normal `f32` range.
///
/// `f32::mul_add` calls `fmaf` from the C library unless the build targets FMA. In a scratch
/// measurement of one 2×48×48 bilinear frame, that took 35 µs, this version 20 µs, and the FMA
/// instruction 7 µs. So bilinear finalisation uses the instruction when the CPU has it (checked
/// at run time) and this function otherwise. This version works in `f64`: the product of two
/// `f32` values is exact there, the sum is rounded once to `f64`, and the rare case where that
/// rounding lands exactly halfway between two `f32` values is repaired with the exact error of
/// the sum.
#[inline]
pub fn fused_mul_add(a: f32, b: f32, c: f32) -> f32 {
    let product = f64::from(a) * f64::from(b);
    let addend = f64::from(c);
    let sum = product + addend;
    let bits = sum.to_bits();
    // The 29 low fraction bits of an f64 are what rounding to f32 drops. If they read exactly
    // "one half", a second rounding could go the wrong way, unless the f64 sum was exact.
    if bits & 0x1FFF_FFFF == 0x1000_0000 && sum.is_finite() {
        let addend_part = sum - product;
        let error = (product - (sum - addend_part)) + (addend - addend_part);
        if error != 0.0 {
            let toward_larger_magnitude = (error > 0.0) == (sum > 0.0);
            let nudged = if toward_larger_magnitude {
                f64::from_bits(bits + 1)
            } else {
                f64::from_bits(bits - 1)
            };
            return nudged as f32;
        }
    }
    sum as f32
}

/// torch's `nearest_idx`: the source index for output `o` (`mode='nearest'`).
pub fn nearest_source(o: usize, n_in: usize, n_out: usize) -> usize {
    debug_assert!(n_in > 0 && n_out > 0 && o < n_out);
    if n_in == n_out {
        o
    } else if n_out == 2 * n_in {
        o >> 1
    } else {
        let scale = n_in as f32 / n_out as f32;
        ((o as f32 * scale).floor() as usize).min(n_in - 1)
    }
}

/// The adaptive-pooling window `[start, end)` of output `o` (`mode='area'`): torch's
/// `start_index` and `end_index`, `floor(o · in / out)` and `ceil((o + 1) · in / out)`.
pub fn area_window(o: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    debug_assert!(n_in > 0 && n_out > 0 && o < n_out);
    let (o, n_in, n_out) = (o as u64, n_in as u64, n_out as u64);
    let start = o * n_in / n_out;
    let end = ((o + 1) * n_in).div_ceil(n_out);
    (start as usize, end as usize)
}

/// torch's `compute_source_index_and_lambda` (`align_corners=False`): the two source indices of
/// output `o` and their weights `(i0, i1, λ0, λ1)`. The source coordinate
/// `scale · (o + 0.5) − 0.5` is computed with one rounding, as torch's FMA builds do.
pub fn bilinear_taps(o: usize, n_in: usize, n_out: usize) -> (usize, usize, f32, f32) {
    debug_assert!(n_in > 0 && n_out > 0 && o < n_out);
    if n_in == n_out {
        return (o, o, 1.0, 0.0);
    }
    let scale = n_in as f32 / n_out as f32;
    let source = fused_mul_add(scale, o as f32 + 0.5, -0.5).max(0.0);
    let i0 = (source.floor() as usize).min(n_in - 1);
    let lambda1 = (source - i0 as f32).clamp(0.0, 1.0);
    let i1 = i0 + usize::from(i0 < n_in - 1);
    (i0, i1, 1.0 - lambda1, lambda1)
}

/// How an output's value is computed from its slot counts, per output position in a channel.
#[derive(Debug, Clone)]
enum OutputWeights {
    /// One slot; the value is the count.
    Count,
    /// One slot; the value is `count / kh / kw`.
    Area(Vec<[f32; 2]>),
    /// Four slots (corners 00, 01, 10, 11); weights `λy·λx` per corner.
    Bilinear(Vec<[f32; 4]>),
}

/// The precomputed splat table of one sensor geometry, model input and resize mode: for each
/// sensor pixel, the output slots its count is added to, plus the weights that turn slot counts
/// into output values. Shared by every window of a stream; immutable once built.
#[derive(Debug, Clone)]
pub struct SplatTable {
    sensor_width: usize,
    sensor_height: usize,
    shape: FrameShape,
    mode: ResizeMode,
    /// log2 of the slots per output: 0 (nearest, area) or 2 (bilinear).
    slot_shift: u32,
    /// Slots per channel: `height · width << slot_shift`.
    channel_slots: usize,
    /// `starts[q]..starts[q + 1]` indexes `targets` for sensor pixel `q = y · width + x`.
    starts: Vec<u32>,
    /// Slot indices within one channel, ascending per pixel.
    targets: Vec<u32>,
    /// The same table transposed, for dense windows: `gather_starts[s]..gather_starts[s + 1]`
    /// indexes `gather_sources`, the pixels that feed slot `s`, ascending. Empty for identity.
    gather_starts: Vec<u32>,
    gather_sources: Vec<u32>,
    weights: OutputWeights,
    /// Whether the CPU has FMA, so bilinear finalisation can use the instruction.
    hardware_fma: bool,
}

/// Whether this CPU executes fused multiply-adds natively (checked once per table).
fn hardware_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For each input coordinate along one axis: the `(output coordinate, corner)` pairs it feeds.
type AxisFan = Vec<Vec<(u32, u8)>>;

impl SplatTable {
    /// Builds the table for `spec`. When the sensor and model input sizes match, the table is the
    /// identity whatever the mode (torch copies in that case too).
    pub fn new(spec: &FrameSpec) -> Result<Self, BinnerError> {
        spec.validate()?;
        let (sw, sh) = (
            usize::from(spec.sensor_width),
            usize::from(spec.sensor_height),
        );
        let shape = spec.shape();
        let (ow, oh) = (shape.width, shape.height);
        let mode = if sw == ow && sh == oh {
            ResizeMode::Nearest
        } else {
            spec.resize
        };
        let slot_shift = if mode == ResizeMode::Bilinear { 2 } else { 0 };
        let rows = axis_fan(mode, sh, oh);
        let cols = axis_fan(mode, sw, ow);

        let row_fan: u64 = rows.iter().map(|r| r.len() as u64).sum();
        let col_fan: u64 = cols.iter().map(|c| c.len() as u64).sum();
        let total = row_fan * col_fan;
        if total > u64::from(u32::MAX) {
            return Err(BinnerError::TooLarge {
                what: "splat table",
                values: usize::try_from(total).unwrap_or(usize::MAX),
                limit: u32::MAX as usize,
            });
        }
        let mut starts = Vec::with_capacity(sw * sh + 1);
        let mut targets = Vec::with_capacity(total as usize);
        starts.push(0);
        for row in &rows {
            for col in &cols {
                for &(oy, cy) in row {
                    for &(ox, cx) in col {
                        let output = oy as usize * ow + ox as usize;
                        let slot = (output << slot_shift) | usize::from(cy * 2 + cx);
                        // Fits: slots per channel <= MAX_FRAME_VALUES << 2 < 2^32.
                        targets.push(slot as u32);
                    }
                }
                starts.push(targets.len() as u32);
            }
        }

        let channel_slots = (oh * ow) << slot_shift;
        let (gather_starts, gather_sources) = if sw == ow && sh == oh {
            (Vec::new(), Vec::new())
        } else {
            transpose(&starts, &targets, channel_slots)
        };

        let weights = match mode {
            ResizeMode::Nearest => OutputWeights::Count,
            ResizeMode::Area => {
                let kh: Vec<f32> = (0..oh)
                    .map(|o| {
                        let (a, b) = area_window(o, sh, oh);
                        (b - a) as f32
                    })
                    .collect();
                let kw: Vec<f32> = (0..ow)
                    .map(|o| {
                        let (a, b) = area_window(o, sw, ow);
                        (b - a) as f32
                    })
                    .collect();
                OutputWeights::Area(
                    kh.iter()
                        .flat_map(|&h| kw.iter().map(move |&w| [h, w]))
                        .collect(),
                )
            }
            ResizeMode::Bilinear => {
                let ly: Vec<(f32, f32)> = (0..oh)
                    .map(|o| {
                        let (_, _, l0, l1) = bilinear_taps(o, sh, oh);
                        (l0, l1)
                    })
                    .collect();
                let lx: Vec<(f32, f32)> = (0..ow)
                    .map(|o| {
                        let (_, _, l0, l1) = bilinear_taps(o, sw, ow);
                        (l0, l1)
                    })
                    .collect();
                OutputWeights::Bilinear(
                    ly.iter()
                        .flat_map(|&(y0, y1)| {
                            lx.iter()
                                .map(move |&(x0, x1)| [y0 * x0, y0 * x1, y1 * x0, y1 * x1])
                        })
                        .collect(),
                )
            }
        };

        Ok(Self {
            sensor_width: sw,
            sensor_height: sh,
            shape,
            mode,
            slot_shift,
            channel_slots,
            starts,
            targets,
            gather_starts,
            gather_sources,
            weights,
            hardware_fma: hardware_fma(),
        })
    }

    /// Slots per frame (both channels) that [`SplatTable::new`] would give `spec`, computed
    /// without building the table.
    pub fn slots_for(spec: &FrameSpec) -> usize {
        let resized = spec.width != spec.sensor_width || spec.height != spec.sensor_height;
        let per_output = if resized && spec.resize == ResizeMode::Bilinear {
            4
        } else {
            1
        };
        spec.shape().len() * per_output
    }

    /// Sensor width in pixels.
    pub fn sensor_width(&self) -> usize {
        self.sensor_width
    }

    /// Sensor height in pixels.
    pub fn sensor_height(&self) -> usize {
        self.sensor_height
    }

    /// The output frame shape, `[2][height][width]`.
    pub fn shape(&self) -> FrameShape {
        self.shape
    }

    /// The mode in effect: `Nearest` (identity) whenever the sizes match.
    pub fn mode(&self) -> ResizeMode {
        self.mode
    }

    /// Whether sensor and model input have the same size, so that pixel `q` is output `q`.
    pub fn is_identity(&self) -> bool {
        self.sensor_width == self.shape.width && self.sensor_height == self.shape.height
    }

    /// Number of (pixel, slot) entries for one channel: the table's size, and the splat work of a
    /// window in which every sensor pixel fired.
    pub fn entries(&self) -> usize {
        self.targets.len()
    }

    /// The outputs that an event at `(x, y)` with `polarity` contributes to, with the effective
    /// weight of one event: flat `[C][H][W]` output index and weight, ascending by index. Empty
    /// for pixels that `nearest` skips and for coordinates off the sensor. This is for
    /// inspection: binning applies the weights per output, once per window (see module docs).
    pub fn contributions(&self, x: usize, y: usize, polarity: bool) -> Vec<(usize, f32)> {
        if x >= self.sensor_width || y >= self.sensor_height {
            return Vec::new();
        }
        let plane = self.shape.height * self.shape.width;
        let channel_base = usize::from(polarity) * plane;
        let mut out: Vec<(usize, f32)> = Vec::new();
        for &slot in self.pixel_targets(y * self.sensor_width + x) {
            let slot = slot as usize;
            let position = slot >> self.slot_shift;
            let weight = match &self.weights {
                OutputWeights::Count => 1.0,
                OutputWeights::Area(div) => 1.0 / (div[position][0] * div[position][1]),
                OutputWeights::Bilinear(w) => w[position][slot & 3],
            };
            let index = channel_base + position;
            match out.last_mut() {
                Some((last, sum)) if *last == index => *sum += weight,
                _ => out.push((index, weight)),
            }
        }
        out
    }

    /// The slots of sensor pixel `q = y · width + x` within one channel.
    #[inline]
    pub(crate) fn pixel_targets(&self, q: usize) -> &[u32] {
        let start = self.starts[q] as usize;
        let end = self.starts[q + 1] as usize;
        &self.targets[start..end]
    }

    /// Per-pixel offsets into [`Self::targets`], `sensor pixels + 1` long.
    pub(crate) fn starts(&self) -> &[u32] {
        &self.starts
    }

    /// Per-slot offsets into [`Self::gather_sources`], `slots per channel + 1` long (empty for
    /// an identity table).
    pub(crate) fn gather_starts(&self) -> &[u32] {
        &self.gather_starts
    }

    /// The source pixels of every slot, grouped by [`Self::gather_starts`].
    pub(crate) fn gather_sources(&self) -> &[u32] {
        &self.gather_sources
    }

    /// All slot targets, grouped per pixel by [`Self::starts`].
    pub(crate) fn targets(&self) -> &[u32] {
        &self.targets
    }

    /// log2 of the number of slots per output.
    pub(crate) fn slot_shift(&self) -> u32 {
        self.slot_shift
    }

    /// Slots per polarity channel.
    pub(crate) fn channel_slots(&self) -> usize {
        self.channel_slots
    }

    /// Total slots over both channels.
    pub(crate) fn total_slots(&self) -> usize {
        self.channel_slots * POLARITY_CHANNELS
    }

    /// Calls `emit(output index, value)` for each output in `[first, end)` (at most 64 outputs)
    /// whose slots are not all zero, in ascending order. `slots` holds those outputs' slots.
    #[inline]
    pub(crate) fn output_values(
        &self,
        first: usize,
        end: usize,
        slots: &[u32],
        mut emit: impl FnMut(usize, f32),
    ) {
        debug_assert!(end - first <= 64 && slots.len() == (end - first) << self.slot_shift);
        let plane = self.shape.height * self.shape.width;
        // `(first + i) % plane` without a division: outputs span just two channels.
        let position = |i: usize| {
            let mut p = first + i;
            while p >= plane {
                p -= plane;
            }
            p
        };
        match &self.weights {
            OutputWeights::Count => {
                let mut nonzero = nonzero_mask(slots.iter().map(|&c| c != 0));
                while nonzero != 0 {
                    let i = nonzero.trailing_zeros() as usize;
                    nonzero &= nonzero - 1;
                    emit(first + i, slots[i] as f32);
                }
            }
            OutputWeights::Area(div) => {
                let mut nonzero = nonzero_mask(slots.iter().map(|&c| c != 0));
                while nonzero != 0 {
                    let i = nonzero.trailing_zeros() as usize;
                    nonzero &= nonzero - 1;
                    let [kh, kw] = div[position(i)];
                    emit(first + i, slots[i] as f32 / kh / kw);
                }
            }
            OutputWeights::Bilinear(weights) => {
                #[cfg(target_arch = "x86_64")]
                if self.hardware_fma {
                    // SAFETY: `hardware_fma` is set only when the CPU reports FMA support.
                    unsafe { bilinear_values_fma(first, slots, weights, &position, emit) };
                    return;
                }
                bilinear_values(first, slots, weights, &position, emit, fused_mul_add);
            }
        }
    }
}

/// Bilinear output values from corner slot counts, in torch's order of operations with `fma`
/// as the fused multiply-add. `position(i)` is output `first + i`'s place in its channel.
#[inline(always)]
fn bilinear_values(
    first: usize,
    slots: &[u32],
    weights: &[[f32; 4]],
    position: &impl Fn(usize) -> usize,
    mut emit: impl FnMut(usize, f32),
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let mut nonzero = nonzero_mask(
        slots
            .chunks_exact(4)
            .map(|c| (c[0] | c[1] | c[2] | c[3]) != 0),
    );
    while nonzero != 0 {
        let i = nonzero.trailing_zeros() as usize;
        nonzero &= nonzero - 1;
        let w = weights[position(i)];
        let c = &slots[4 * i..4 * i + 4];
        let c = [c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32];
        // torch: i00*w00 + i01*w01 + i10*w10 + i11*w11, contracted to FMAs.
        let v = fma(c[0], w[0], c[1] * w[1]);
        let v = fma(c[2], w[2], v);
        emit(first + i, fma(c[3], w[3], v));
    }
}

/// [`bilinear_values`] compiled for FMA, where `f32::mul_add` is one instruction. It computes
/// the same correctly rounded values as [`fused_mul_add`] at about a third of the cost.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn bilinear_values_fma(
    first: usize,
    slots: &[u32],
    weights: &[[f32; 4]],
    position: &impl Fn(usize) -> usize,
    emit: impl FnMut(usize, f32),
) {
    bilinear_values(first, slots, weights, position, emit, f32::mul_add);
}

/// The splat table transposed: for each slot, the pixels that feed it (a counting sort, so each
/// slot's pixels stay in ascending order).
fn transpose(starts: &[u32], targets: &[u32], slots: usize) -> (Vec<u32>, Vec<u32>) {
    let mut gather_starts = vec![0u32; slots + 1];
    for &slot in targets {
        gather_starts[slot as usize + 1] += 1;
    }
    for s in 0..slots {
        gather_starts[s + 1] += gather_starts[s];
    }
    let mut next = gather_starts.clone();
    let mut sources = vec![0u32; targets.len()];
    for (pixel, range) in starts.windows(2).enumerate() {
        for &slot in &targets[range[0] as usize..range[1] as usize] {
            let at = &mut next[slot as usize];
            sources[*at as usize] = pixel as u32;
            *at += 1;
        }
    }
    (gather_starts, sources)
}

/// Which outputs each input coordinate feeds along one axis, and through which corner.
fn axis_fan(mode: ResizeMode, n_in: usize, n_out: usize) -> AxisFan {
    let mut fan: AxisFan = vec![Vec::new(); n_in];
    for o in 0..n_out {
        let o32 = o as u32;
        match mode {
            ResizeMode::Nearest => fan[nearest_source(o, n_in, n_out)].push((o32, 0)),
            ResizeMode::Area => {
                let (start, end) = area_window(o, n_in, n_out);
                for entry in &mut fan[start..end] {
                    entry.push((o32, 0));
                }
            }
            ResizeMode::Bilinear => {
                let (i0, i1, l0, l1) = bilinear_taps(o, n_in, n_out);
                // A zero weight contributes nothing; leaving its slot at zero is the same value.
                if l0 != 0.0 {
                    fan[i0].push((o32, 0));
                }
                if l1 != 0.0 {
                    fan[i1].push((o32, 1));
                }
            }
        }
    }
    fan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(sw: u16, sh: u16, w: u16, h: u16, resize: ResizeMode) -> FrameSpec {
        FrameSpec {
            sensor_width: sw,
            sensor_height: sh,
            width: w,
            height: h,
            resize,
            normalization: Default::default(),
        }
    }

    proptest! {
        #[test]
        fn fused_mul_add_is_correctly_rounded(a in -1e6f32..1e6, b in -1e3f32..1e3, c in -1e9f32..1e9) {
            prop_assert_eq!(fused_mul_add(a, b, c).to_bits(), a.mul_add(b, c).to_bits());
        }

        #[test]
        fn fused_mul_add_on_counts_and_weights(count in 0u32..100_000, w in 0f32..1.0, acc in 0f32..1e5) {
            let a = count as f32;
            prop_assert_eq!(fused_mul_add(a, w, acc).to_bits(), a.mul_add(w, acc).to_bits());
        }
    }

    #[test]
    fn fused_mul_add_halfway_cases() {
        // (a, b, c) bits where the f64 sum lands exactly halfway between two f32 values: twice
        // inexactly (naive double rounding is wrong) and once exactly (ties to even).
        let cases = [
            (0x33d6_1480u32, 0x3fe5_98a9u32, 0x3fd2_a142u32, true),
            (0x33d6_1480, 0x3fe5_98a9, 0x3fbb_7c78, true),
            (0x3380_0000, 0x3f80_0000, 0x3fd9_bdbb, false),
        ];
        for (a, b, c, naive_wrong) in cases {
            let (a, b, c) = (f32::from_bits(a), f32::from_bits(b), f32::from_bits(c));
            let naive = (f64::from(a) * f64::from(b) + f64::from(c)) as f32;
            assert_eq!(naive != a.mul_add(b, c), naive_wrong);
            assert_eq!(fused_mul_add(a, b, c).to_bits(), a.mul_add(b, c).to_bits());
        }
    }

    #[test]
    fn bilinear_hardware_and_software_fma_agree() {
        let table = SplatTable::new(&spec(37, 23, 11, 6, ResizeMode::Bilinear)).unwrap();
        let OutputWeights::Bilinear(weights) = &table.weights else {
            panic!("bilinear table without bilinear weights");
        };
        let plane = 66;
        let mut seed = 12345u32;
        let slots: Vec<u32> = (0..64 * 4)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 20) % 7 * (seed >> 8 & 1)
            })
            .collect();
        let first = 40;
        let position = |i: usize| (first + i) % plane;
        let (mut software, mut library, mut dispatched) = (Vec::new(), Vec::new(), Vec::new());
        fn collect(out: &mut Vec<(usize, u32)>) -> impl FnMut(usize, f32) + '_ {
            move |i, v| out.push((i, v.to_bits()))
        }
        bilinear_values(
            first,
            &slots,
            weights,
            &position,
            collect(&mut software),
            fused_mul_add,
        );
        bilinear_values(
            first,
            &slots,
            weights,
            &position,
            collect(&mut library),
            f32::mul_add,
        );
        table.output_values(first, first + 64, &slots, collect(&mut dispatched));
        assert!(software.len() > 20);
        assert_eq!(software, library);
        assert_eq!(software, dispatched);
    }

    #[test]
    fn torch_nearest_indices() {
        // torch: floor(o * float(in/out)); 128 -> 48 uses scale 2.6666667f.
        let got: Vec<usize> = (0..6).map(|o| nearest_source(o, 16, 6)).collect();
        assert_eq!(got, [0, 2, 5, 8, 10, 13]);
        assert_eq!(nearest_source(47, 128, 48), 125);
        assert_eq!(nearest_source(5, 3, 6), 2);
    }

    #[test]
    fn area_windows_overlap_when_sizes_do_not_divide() {
        assert_eq!(area_window(0, 16, 6), (0, 3));
        assert_eq!(area_window(1, 16, 6), (2, 6));
        assert_eq!(area_window(5, 16, 6), (13, 16));
        assert_eq!(area_window(2, 3, 7), (0, 2));
    }

    #[test]
    fn bilinear_taps_clamp_and_edge() {
        // Upsampling: the first output's source is clamped to 0, the last repeats the edge.
        let (i0, i1, l0, l1) = bilinear_taps(0, 5, 13);
        assert_eq!((i0, i1, l0, l1), (0, 1, 1.0, 0.0));
        let (i0, i1, _, _) = bilinear_taps(12, 5, 13);
        assert_eq!((i0, i1), (4, 4));
    }

    #[test]
    fn identity_when_sizes_match() {
        for mode in [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area] {
            let table = SplatTable::new(&spec(7, 5, 7, 5, mode)).unwrap();
            assert_eq!(table.mode(), ResizeMode::Nearest);
            assert_eq!(table.contributions(3, 2, true), vec![(35 + 2 * 7 + 3, 1.0)]);
        }
    }

    #[test]
    fn contributions_sum_to_the_resize_of_a_single_event() {
        // The weights one pixel spreads, summed over all pixels, are each output's total weight:
        // 1 for bilinear and area (they are averages), and for nearest, one source per output.
        for mode in [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area] {
            let table = SplatTable::new(&spec(16, 12, 6, 5, mode)).unwrap();
            let mut total = [0f32; 30];
            for y in 0..12 {
                for x in 0..16 {
                    for (i, w) in table.contributions(x, y, false) {
                        total[i] += w;
                    }
                }
            }
            for t in total {
                assert!((t - 1.0).abs() < 1e-5, "{mode:?}: {t}");
            }
        }
    }

    #[test]
    fn slots_for_agrees_with_the_table() {
        for (sensor, out) in [((16, 12), (6, 5)), ((8, 8), (8, 8)), ((8, 8), (8, 3))] {
            for mode in [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area] {
                let spec = spec(sensor.0, sensor.1, out.0, out.1, mode);
                let table = SplatTable::new(&spec).unwrap();
                assert_eq!(SplatTable::slots_for(&spec), table.total_slots());
            }
        }
    }

    #[test]
    fn rejects_empty_and_huge() {
        assert!(matches!(
            SplatTable::new(&spec(0, 5, 3, 3, ResizeMode::Area)),
            Err(BinnerError::EmptySize { .. })
        ));
        assert!(matches!(
            SplatTable::new(&spec(5, 5, 0, 3, ResizeMode::Area)),
            Err(BinnerError::EmptySize { .. })
        ));
        assert!(matches!(
            SplatTable::new(&spec(u16::MAX, u16::MAX, 8, 8, ResizeMode::Area)),
            Err(BinnerError::TooLarge { .. })
        ));
    }
}
