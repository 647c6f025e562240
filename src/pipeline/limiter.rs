//! The per-stream event-rate limiter: at most a configured number of events per second of
//! stream time, by uniform decimation (Prophesee users cap bursty sensors this way).
//!
//! Stream time is cut into slots of 10 ms. The share of events kept in a slot is the limit
//! divided by the rate measured in the slot before, applied with a fractional accumulator so
//! the kept events are spread evenly (every k-th, k fractional) rather than taken from the
//! start of a burst. A hard cap per slot guarantees the limit even when the rate jumps.

use crate::event::Event;

/// Slot length, µs.
const SLOT_US: i64 = 10_000;

/// Keeps at most `limit` events per second of stream time.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Events allowed per slot.
    per_slot: f64,
    slot: Option<i64>,
    in_slot: u64,
    kept_in_slot: u64,
    /// Share of events to keep, from the previous slot's rate.
    ratio: f64,
    accumulator: f64,
}

impl RateLimiter {
    /// A limiter of `limit` events per second.
    pub fn new(limit: u64) -> Self {
        Self {
            per_slot: limit as f64 * SLOT_US as f64 / 1e6,
            slot: None,
            in_slot: 0,
            kept_in_slot: 0,
            ratio: 1.0,
            accumulator: 0.0,
        }
    }

    /// Appends the kept events of `events` to `kept`; returns how many were removed.
    pub fn keep(&mut self, events: &[Event], kept: &mut Vec<Event>) -> u64 {
        let before = kept.len();
        for e in events {
            let slot = e.t.div_euclid(SLOT_US);
            if self.slot != Some(slot) {
                if self.slot.is_some() {
                    self.ratio = if self.in_slot as f64 > self.per_slot {
                        self.per_slot / self.in_slot as f64
                    } else {
                        1.0
                    };
                }
                self.slot = Some(slot);
                self.in_slot = 0;
                self.kept_in_slot = 0;
            }
            self.in_slot += 1;
            self.accumulator += self.ratio;
            if self.accumulator >= 1.0 {
                // An event the cap refuses still uses its turn, so credit cannot pile up in
                // a burst and flush unthinned into the next slot.
                self.accumulator -= 1.0;
                if (self.kept_in_slot as f64) < self.per_slot {
                    self.kept_in_slot += 1;
                    kept.push(*e);
                }
            }
        }
        (events.len() - (kept.len() - before)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(rate_per_s: u64, seconds: u64) -> Vec<Event> {
        let n = rate_per_s * seconds;
        (0..n)
            .map(|i| Event {
                t: (i * 1_000_000 / rate_per_s) as i64,
                x: 0,
                y: 0,
                polarity: true,
            })
            .collect()
    }

    #[test]
    fn below_the_limit_everything_passes() {
        let mut l = RateLimiter::new(10_000);
        let ev = events(5_000, 2);
        let mut kept = Vec::new();
        assert_eq!(l.keep(&ev, &mut kept), 0);
        assert_eq!(kept, ev);
    }

    #[test]
    fn above_the_limit_the_rate_is_capped_evenly() {
        let mut l = RateLimiter::new(100_000);
        let ev = events(1_000_000, 2);
        let mut kept = Vec::new();
        let removed = l.keep(&ev, &mut kept);
        assert_eq!(removed as usize + kept.len(), ev.len());
        // The cap holds in every second, and after the first slot the decimation is uniform.
        for s in 0..2 {
            let n = kept.iter().filter(|e| e.t / 1_000_000 == s).count();
            assert!(n <= 100_000 && n > 90_000, "second {s}: {n}");
        }
        let gaps: Vec<i64> = kept[2000..2100]
            .windows(2)
            .map(|w| w[1].t - w[0].t)
            .collect();
        assert!(gaps.iter().all(|&g| (9..=11).contains(&g)), "{gaps:?}");
        // Batch splits do not matter.
        let mut again = RateLimiter::new(100_000);
        let mut kept2 = Vec::new();
        for chunk in ev.chunks(777) {
            again.keep(chunk, &mut kept2);
        }
        assert_eq!(kept2, kept);
    }
}
