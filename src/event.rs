//! The event model: one address-event, batches of them, and what a stream says about itself.
//! Imports nothing else from the crate.

use serde::Serialize;

/// One polarity event from a DVS-style sensor.
///
/// Coordinates have their origin at the top-left of the sensor, x to the right and y down.
/// `t` is in microseconds; its epoch is whatever the source uses (the recording's clock).
/// The layout is `repr(C)` and 16 bytes so that a batch is one dense array that decoders
/// write sequentially and binners read sequentially (see `BENCHMARKS.md`, batch layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[repr(C)]
pub struct Event {
    /// Timestamp in microseconds.
    pub t: i64,
    /// Column, 0 at the left.
    pub x: u16,
    /// Row, 0 at the top.
    pub y: u16,
    /// `true` for ON (brightness increase), `false` for OFF.
    pub polarity: bool,
}

impl Event {
    /// Builds an event.
    #[inline]
    pub const fn new(t: i64, x: u16, y: u16, polarity: bool) -> Self {
        Self { t, x, y, polarity }
    }
}

/// A batch of events in time order as the source delivered them (timestamps may regress in
/// real recordings; decoders keep such events and count them).
///
/// Array-of-structs: decoders append whole events and binners read them front to back, so one
/// contiguous stream beats four parallel ones for both (measured in `benches/decode.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBatch {
    /// The events.
    pub events: Vec<Event>,
    /// `true` when the source dropped data just before this batch (live overflow).
    pub after_gap: bool,
}

/// What a stream says about itself, from its header or from options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Sensor width in pixels.
    pub width: u16,
    /// Sensor height in pixels.
    pub height: u16,
    /// The sensor or source name (chip class, camera serial, plugin name), if known.
    pub source: Option<String>,
    /// The container format's display name, e.g. "AEDAT 2.0".
    pub format: String,
}

impl StreamInfo {
    /// Whether `(x, y)` lies on the sensor.
    #[inline]
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= 0 && y >= 0 && x < i64::from(self.width) && y < i64::from(self.height)
    }
}

/// Running counts over a stream of events, for reports (`inspect`, `dataset info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    /// Events seen.
    pub events: u64,
    /// ON events seen.
    pub on: u64,
    /// First event's timestamp (µs).
    pub first_t: Option<i64>,
    /// Last event's timestamp (µs).
    pub last_t: Option<i64>,
}

impl EventSummary {
    /// Adds a batch.
    pub fn add(&mut self, events: &[Event]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        self.first_t.get_or_insert(first.t);
        self.last_t = Some(last.t);
        self.events += events.len() as u64;
        // A branch-free count: the compiler vectorises a sum of bools.
        self.on += events.iter().map(|e| u64::from(e.polarity)).sum::<u64>();
    }

    /// OFF events seen.
    pub fn off(&self) -> u64 {
        self.events - self.on
    }

    /// Last minus first timestamp, in µs (0 for fewer than two events).
    pub fn duration_us(&self) -> i64 {
        match (self.first_t, self.last_t) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    /// Mean event rate over the duration, in events per second.
    pub fn mean_rate(&self) -> Option<f64> {
        let d = self.duration_us();
        (d > 0).then(|| self.events as f64 * 1e6 / d as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Event>(), 16);
    }

    #[test]
    fn summary_counts_batches_in_order() {
        let mut s = EventSummary::default();
        s.add(&[Event::new(10, 0, 0, true), Event::new(20, 1, 1, false)]);
        s.add(&[]);
        s.add(&[Event::new(5, 0, 0, true)]);
        assert_eq!((s.events, s.on, s.off()), (3, 2, 1));
        assert_eq!((s.first_t, s.last_t), (Some(10), Some(5)));
        assert_eq!(s.duration_us(), -5);
        assert_eq!(s.mean_rate(), None);
    }
}
