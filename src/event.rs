//! The event model: one address-event, what a stream says about itself, and running counts
//! over a stream. Imports nothing else from the crate.

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
    /// The time origin the header declares (Prophesee `% t0`, µs), which the decoder has
    /// added to every timestamp; `None` when the header has none.
    pub t0: Option<i64>,
    /// How raw addresses were mapped to pixels, for formats that offer a choice (AEDAT 2.0),
    /// in words; `None` otherwise.
    pub orientation: Option<String>,
}

impl StreamInfo {
    /// A stream of `width`×`height` pixels in the container format named `format`, with no
    /// source name, time origin or orientation.
    pub fn new(width: u16, height: u16, format: impl Into<String>) -> Self {
        Self {
            width,
            height,
            source: None,
            format: format.into(),
            t0: None,
            orientation: None,
        }
    }

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
    /// OFF events seen.
    pub off: u64,
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
        let n = events.len() as u64;
        // A branch-free count: the compiler vectorises a sum of bools.
        let on = events.iter().map(|e| u64::from(e.polarity)).sum::<u64>();
        self.events += n;
        self.on += on;
        self.off += n - on;
    }

    /// Last minus first timestamp, in µs (0 for fewer than two events), saturated to the
    /// `i64` range (events at `i64::MIN` and `i64::MAX` are `i64::MAX` apart, not −1).
    pub fn duration_us(&self) -> i64 {
        match (self.first_t, self.last_t) {
            (Some(a), Some(b)) => {
                let span = i128::from(b) - i128::from(a);
                span.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
            }
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
        assert_eq!((s.events, s.on, s.off), (3, 2, 1));
        assert_eq!((s.first_t, s.last_t), (Some(10), Some(5)));
        assert_eq!(s.duration_us(), -5);
        assert_eq!(s.mean_rate(), None);
    }

    #[test]
    fn summary_durations_saturate_at_the_extremes() {
        let mut s = EventSummary::default();
        s.add(&[
            Event::new(i64::MIN, 0, 0, true),
            Event::new(i64::MAX, 0, 0, false),
        ]);
        assert_eq!(s.duration_us(), i64::MAX);
        assert!(s.mean_rate().is_some_and(|r| r > 0.0));
        let mut back = EventSummary::default();
        back.add(&[
            Event::new(i64::MAX, 0, 0, true),
            Event::new(i64::MIN, 0, 0, false),
        ]);
        assert_eq!(back.duration_us(), i64::MIN);
    }
}
