//! The binner: turns events into frames. Owns window policies, polarity channels, resizing by
//! per-pixel splat tables, normalisation and sparse frames. Imports only `event`.
//!
//! # Conventions
//!
//! - **Channels.** A frame is `[2][H][W]`; the channel index is the polarity, `0` = OFF and
//!   `1` = ON. This is SpikingJelly's layout: its frames are `[T, 2, H, W]` indexed by `p`, with
//!   `p = 1` for ON events.
//! - **Values.** Before normalisation a value is the number of events at that pixel in that
//!   window, resized to the model input exactly as `torch.nn.functional.interpolate` resizes the
//!   count frame (see [`resize`]).
//! - **Windows.** Whole recordings split into `T` bins by SpikingJelly's rules
//!   ([`RecordingWindows`]); live streams use causal windows of fixed duration or fixed event count,
//!   tumbling or sliding ([`StreamWindows`]). Streaming a recording in any batches gives the same
//!   frames as pushing it whole.
//!
//! # How events become frames
//!
//! The hot loop counts events per sensor pixel in a reused `u32` buffer (module `counts`): one
//! increment per event. Once per window, the counts go through the precomputed [`SplatTable`]
//! into per-output slots. A sparse window splats each touched pixel's count into the slots it
//! feeds. A dense window pulls each slot's sum through the transposed table instead. Then each
//! output's value is computed from its slots with the interpolation weights. All accumulation is
//! in integers, so the result does not depend on event order, batching, window overlap or path.
//! It matches torch bit for bit for `nearest` and `area`, and for `bilinear` where torch uses its
//! small-output kernel (see [`resize`]). Counting per pixel and splatting once per window
//! measured 3.7–7× faster than splatting every event (`BENCHMARKS.md`, Binning).

mod counts;
pub mod frame;
mod input;
pub mod normalize;
pub mod npy;
mod recording;
pub mod resize;
mod stream;
pub mod window;

use serde::{Deserialize, Serialize};

pub use frame::{FrameShape, SparseFrame};
pub use input::{InputSpec, SplitBy, WindowPolicy};
pub use normalize::Normalization;
pub use recording::{BinStats, FrameBinner};
pub use resize::{ResizeMode, SplatTable};
pub use stream::{DEFAULT_MAX_IDLE_WINDOWS, MAX_WINDOW_MEMORY, StreamBinner, StreamStats, Window};
pub use window::{RecordingWindows, StreamWindows};

/// Number of channels in every frame: OFF (0) and ON (1).
pub const POLARITY_CHANNELS: usize = 2;

/// Largest sensor accepted, in pixels per polarity channel (4096 × 4096). The per-pixel counter
/// is sized from the sensor, and the sensor size can come from a file header, so it is bounded.
pub const MAX_SENSOR_PIXELS: usize = 1 << 24;

/// Largest model input accepted, in values per frame (both channels).
pub const MAX_FRAME_VALUES: usize = 1 << 24;

/// What a frame is made from: the sensor geometry, the model input it is resized to, and how
/// values are normalised. The model file declares one of these as its input spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Sensor width in pixels (events have `x < sensor_width`).
    pub sensor_width: u16,
    /// Sensor height in pixels (events have `y < sensor_height`).
    pub sensor_height: u16,
    /// Model input width.
    pub width: u16,
    /// Model input height.
    pub height: u16,
    /// How the count frame is resized from sensor to model input. Irrelevant when the sizes match.
    pub resize: ResizeMode,
    /// How each frame's values are normalised after resizing.
    #[serde(default)]
    pub normalization: Normalization,
}

impl FrameSpec {
    /// A spec that keeps the sensor resolution (no resize) and raw counts.
    pub fn native(sensor_width: u16, sensor_height: u16) -> Self {
        Self {
            sensor_width,
            sensor_height,
            width: sensor_width,
            height: sensor_height,
            resize: ResizeMode::Nearest,
            normalization: Normalization::None,
        }
    }

    /// The shape of the frames this spec produces: `[2][height][width]`.
    pub fn shape(&self) -> FrameShape {
        FrameShape {
            channels: POLARITY_CHANNELS,
            height: usize::from(self.height),
            width: usize::from(self.width),
        }
    }

    /// Checks the sizes: non-empty and within [`MAX_SENSOR_PIXELS`] and [`MAX_FRAME_VALUES`].
    pub fn validate(&self) -> Result<(), BinnerError> {
        if self.sensor_width == 0 || self.sensor_height == 0 {
            return Err(BinnerError::EmptySize {
                what: "sensor",
                width: self.sensor_width,
                height: self.sensor_height,
            });
        }
        if self.width == 0 || self.height == 0 {
            return Err(BinnerError::EmptySize {
                what: "model input",
                width: self.width,
                height: self.height,
            });
        }
        let sensor = usize::from(self.sensor_width) * usize::from(self.sensor_height);
        if sensor > MAX_SENSOR_PIXELS {
            return Err(BinnerError::TooLarge {
                what: "sensor",
                values: sensor,
                limit: MAX_SENSOR_PIXELS,
            });
        }
        let frame = self.shape().len();
        if frame > MAX_FRAME_VALUES {
            return Err(BinnerError::TooLarge {
                what: "model input frame",
                values: frame,
                limit: MAX_FRAME_VALUES,
            });
        }
        Ok(())
    }
}

/// Why a binner could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinnerError {
    /// A width or height is zero.
    #[error("{what} size {width}x{height} is empty")]
    EmptySize {
        /// "sensor" or "model input".
        what: &'static str,
        /// The width given.
        width: u16,
        /// The height given.
        height: u16,
    },
    /// A size is beyond what the binner accepts.
    #[error("{what} has {values} values, more than the limit of {limit}")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its number of values.
        values: usize,
        /// The limit.
        limit: usize,
    },
    /// A window policy parameter is out of range.
    #[error("invalid window policy: {0}")]
    InvalidWindows(String),
}
