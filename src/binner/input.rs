//! A model's input, in the binner's vocabulary: the frame size, T, how events are grouped into
//! the T frames of one classification, the resize and the normalisation. The model file stores
//! one of these; a stream's sensor size completes it into a [`FrameSpec`].

use serde::{Deserialize, Serialize};

use super::frame::FrameShape;
use super::normalize::Normalization;
use super::resize::ResizeMode;
use super::window::{RecordingWindows, StreamWindows};
use super::{BinnerError, FrameSpec, POLARITY_CHANNELS};

/// How events become the T frames of one classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowPolicy {
    /// The whole recording is one classification, split into T bins (the training convention
    /// of CIFAR10-DVS and similar datasets).
    Recording {
        /// SpikingJelly's `split_by`: equal event counts or equal durations.
        split_by: SplitBy,
    },
    /// A stream: consecutive bins of `bin_us` microseconds, one bin per timestep.
    Duration {
        /// Length of one bin (one timestep) in microseconds.
        bin_us: u64,
    },
    /// A stream: consecutive bins of `bin_events` events, one bin per timestep.
    Count {
        /// Events in one bin (one timestep).
        bin_events: u64,
    },
}

/// How a whole recording is split into T bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitBy {
    /// Equal numbers of events (SpikingJelly `split_by='number'`).
    EqualCount,
    /// Equal durations (SpikingJelly `split_by='time'`).
    EqualDuration,
}

impl WindowPolicy {
    /// The per-recording binning of `bins` frames, for [`WindowPolicy::Recording`].
    pub fn recording_windows(&self, bins: usize) -> Option<RecordingWindows> {
        match *self {
            Self::Recording {
                split_by: SplitBy::EqualCount,
            } => Some(RecordingWindows::EqualCount { bins }),
            Self::Recording {
                split_by: SplitBy::EqualDuration,
            } => Some(RecordingWindows::EqualDuration { bins }),
            _ => None,
        }
    }

    /// The causal bins of a stream (one bin per timestep, tumbling), for the stream policies.
    pub fn stream_bins(&self) -> Option<StreamWindows> {
        match *self {
            Self::Recording { .. } => None,
            Self::Duration { bin_us } => Some(StreamWindows::tumbling_duration(bin_us)),
            Self::Count { bin_events } => Some(StreamWindows::tumbling_count(bin_events)),
        }
    }

    /// Whether a classification needs the whole recording before it can run.
    pub fn is_per_recording(&self) -> bool {
        matches!(self, Self::Recording { .. })
    }
}

/// The frames a model takes: `[2][height][width]` per timestep, `timesteps` of them per
/// classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Frame rows after resizing.
    pub height: u16,
    /// Frame columns after resizing.
    pub width: u16,
    /// Frames per classification (T).
    pub timesteps: usize,
    /// How events are grouped into the T frames of one classification.
    pub window: WindowPolicy,
    /// How the sensor's count frame is resized to height × width.
    pub resize: ResizeMode,
    /// How each frame's values are normalised after resizing.
    pub normalization: Normalization,
}

impl InputSpec {
    /// The frame shape: `[2][height][width]`.
    pub fn shape(&self) -> FrameShape {
        FrameShape {
            channels: POLARITY_CHANNELS,
            height: usize::from(self.height),
            width: usize::from(self.width),
        }
    }

    /// The frame spec for a sensor of `width × height` pixels.
    pub fn frame_spec(
        &self,
        sensor_width: u16,
        sensor_height: u16,
    ) -> Result<FrameSpec, BinnerError> {
        let spec = FrameSpec {
            sensor_width,
            sensor_height,
            width: self.width,
            height: self.height,
            resize: self.resize,
            normalization: self.normalization,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks T ≥ 1, non-empty bins and a non-empty frame size.
    pub fn validate(&self) -> Result<(), BinnerError> {
        if self.timesteps == 0 {
            return Err(BinnerError::InvalidWindows(
                "timesteps (T) must be at least 1".into(),
            ));
        }
        if self.width == 0 || self.height == 0 {
            return Err(BinnerError::EmptySize {
                what: "model input",
                width: self.width,
                height: self.height,
            });
        }
        if let Some(bins) = self.window.stream_bins() {
            bins.validate()?;
        }
        Ok(())
    }
}

/// Why a window policy could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "window policy {0:?} is not one of equal-count, equal-duration, duration:<µs per bin>, count:<events per bin>"
)]
pub struct ParseWindowPolicyError(pub String);

impl std::str::FromStr for WindowPolicy {
    type Err = ParseWindowPolicyError;

    /// `equal-count`, `equal-duration` (a whole recording in T bins), `duration:US` or
    /// `count:N` (a stream in bins of US microseconds or N events).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseWindowPolicyError(s.to_owned());
        let positive = |v: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(bad)
        };
        match s.split_once(':') {
            None => match s {
                "equal-count" => Ok(Self::Recording {
                    split_by: SplitBy::EqualCount,
                }),
                "equal-duration" => Ok(Self::Recording {
                    split_by: SplitBy::EqualDuration,
                }),
                _ => Err(bad()),
            },
            Some(("duration", v)) => Ok(Self::Duration {
                bin_us: positive(v)?,
            }),
            Some(("count", v)) => Ok(Self::Count {
                bin_events: positive(v)?,
            }),
            Some(_) => Err(bad()),
        }
    }
}

impl std::fmt::Display for WindowPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Recording {
                split_by: SplitBy::EqualCount,
            } => f.write_str("equal-count"),
            Self::Recording {
                split_by: SplitBy::EqualDuration,
            } => f.write_str("equal-duration"),
            Self::Duration { bin_us } => write!(f, "duration:{bin_us}"),
            Self::Count { bin_events } => write!(f, "count:{bin_events}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_policies_parse_and_print() {
        for text in [
            "equal-count",
            "equal-duration",
            "duration:50000",
            "count:2000",
        ] {
            let p: WindowPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        for bad in ["", "equal", "duration:", "duration:0", "count:-1", "time:5"] {
            assert!(bad.parse::<WindowPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_form_is_tagged() {
        let p = WindowPolicy::Count { bin_events: 7 };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"kind":"count","bin_events":7}"#
        );
    }
}
