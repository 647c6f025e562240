//! Sessions: one stream from events to classifications. A session owns the stream's
//! windowing ([`windows`]: the streaming binner and the grouping into T bins) and its
//! executor state against a shared plan, and produces one [`Output`] record per window
//! ([`output`]). `infer`, `eval`, `replay` and the daemon all run streams through it. Imports
//! `model`, `exec`, `binner` and `event`.

pub mod output;
pub mod windows;

pub use output::{Latency, LayerStats, Output, Score, SpikeStats};
pub use windows::{DEFAULT_MAX_RECORDING_EVENTS, WindowError, WindowFrames, Windowing};
