//! Test support shared by the unit tests, the integration tests, the benches and the fuzz
//! harness (cargo feature `testkit`, which they enable): decoding helpers that drive a
//! [`Decoder`] the way a source does while checking its contract, and the seeded event
//! generators. Not part of the runtime.

use crate::event::{Event, StreamInfo};
use crate::format::{
    DecodeError, DecodeOptions, DecodeStats, Decoder, EncodeError, Fed, Format, JaerOrientation,
    MIN_EVENTS_PER_FEED,
};

/// Everything that decoding one input gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The events, in order (those before an error included).
    pub events: Vec<Event>,
    /// Ok, or the error that stopped decoding.
    pub result: Result<(), DecodeError>,
    /// The decoder's counts at the end.
    pub stats: DecodeStats,
    /// What the stream said about itself at the end.
    pub info: Option<StreamInfo>,
}

impl Decoded {
    /// The events, the outcome and the counts, for tests that destructure them.
    pub fn into_parts(self) -> (Vec<Event>, Result<(), DecodeError>, DecodeStats) {
        (self.events, self.result, self.stats)
    }
}

/// Decodes `input` fed in one chunk.
pub fn decode(format: Format, input: &[u8], options: &DecodeOptions) -> Decoded {
    decode_split(format, input, options, &[usize::MAX])
}

/// Decodes `input` fed in chunks of the given sizes (cycled; 0 counts as 1), see [`drive`].
pub fn decode_split(
    format: Format,
    input: &[u8],
    options: &DecodeOptions,
    sizes: &[usize],
) -> Decoded {
    let mut decoder = format.decoder(options);
    drive(&mut *decoder, input, options, sizes)
}

/// Feeds `input` to `decoder` in chunks of the given sizes (cycled; 0 counts as 1) as a
/// source does: each chunk is fed until `feed` reports `more == false`, then `finish`. Stops
/// at the first error. Every call is checked against the [`Decoder`] contract with
/// [`check_fed`], so a decoder that breaks the event bound fails the test that drives it.
pub fn drive(
    decoder: &mut dyn Decoder,
    input: &[u8],
    options: &DecodeOptions,
    sizes: &[usize],
) -> Decoded {
    let mut events = Vec::new();
    let result = feed_chunks(decoder, input, options, sizes, &mut events)
        .and_then(|()| decoder.finish(&mut events));
    Decoded {
        events,
        result,
        stats: decoder.stats().clone(),
        info: decoder.info().cloned(),
    }
}

fn feed_chunks(
    decoder: &mut dyn Decoder,
    input: &[u8],
    options: &DecodeOptions,
    sizes: &[usize],
    events: &mut Vec<Event>,
) -> Result<(), DecodeError> {
    let bound = options.max_events_per_feed.max(MIN_EVENTS_PER_FEED);
    let mut position = 0;
    for &size in sizes.iter().cycle() {
        let Some(rest) = input.get(position..).filter(|rest| !rest.is_empty()) else {
            return Ok(());
        };
        let mut chunk = rest.get(..size.max(1)).unwrap_or(rest);
        position += chunk.len();
        loop {
            let before = events.len();
            let fed = decoder.feed(chunk, events)?;
            check_fed(&fed, chunk.len(), events.len() - before, bound);
            chunk = chunk.get(fed.consumed..).unwrap_or_default();
            if !fed.more {
                break;
            }
        }
    }
    Ok(())
}

/// The [`Decoder::feed`] contract, for one call on `len` input bytes that appended
/// `appended` events under an event bound of `bound`: no more events than the bound, no more
/// bytes than given, all bytes consumed unless the call stopped at the bound, and progress
/// whenever it did. Panics with what was broken.
pub fn check_fed(fed: &Fed, len: usize, appended: usize, bound: usize) {
    assert!(
        appended <= bound,
        "one feed appended {appended} events, more than the bound of {bound}"
    );
    assert!(
        fed.consumed <= len,
        "feed consumed {} bytes of {len}",
        fed.consumed
    );
    assert!(
        fed.more || fed.consumed == len,
        "feed stopped at byte {} of {len} without reaching the bound",
        fed.consumed
    );
    assert!(
        !fed.more || appended > 0,
        "feed stopped at the bound without appending an event"
    );
}

/// Encodes `events` as a complete file of `format` for the stream `info` describes, with the
/// format's default encoder settings.
pub fn encode(format: Format, info: &StreamInfo, events: &[Event]) -> Result<Vec<u8>, EncodeError> {
    let mut encoder = format.encoder(info, JaerOrientation::default());
    let mut bytes = Vec::new();
    encoder.begin(info, &mut bytes)?;
    encoder.encode(events, &mut bytes)?;
    encoder.end(&mut bytes)?;
    Ok(bytes)
}

/// SplitMix64, the generator `scripts/bench_spikingjelly_binning.py` also implements (same
/// constants), so Python twins see the same events.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// 16 edges doing a random walk on a `width`×`height` sensor: each event moves one walker by
/// at most a pixel, sometimes flips its polarity, and advances time by 0–3 µs (about 670 k
/// events/s). The Python twin is `scripts/bench_spikingjelly_binning.py`.
pub fn random_walk(n: usize, width: u16, height: u16, seed: u64) -> Vec<Event> {
    let mut rng = SplitMix64(seed);
    let (w, h) = (i64::from(width), i64::from(height));
    let mut walkers: Vec<(i64, i64, bool)> = (0..16)
        .map(|_| {
            let v = rng.next_u64();
            (
                ((v & 0xFFFF) as i64) % w,
                (((v >> 16) & 0xFFFF) as i64) % h,
                (v >> 32) & 1 == 1,
            )
        })
        .collect();
    let mut t = 0i64;
    (0..n)
        .map(|_| {
            let v = rng.next_u64();
            let walker = &mut walkers[(v % 16) as usize];
            walker.0 = (walker.0 + ((v >> 8) % 3) as i64 - 1).clamp(0, w - 1);
            walker.1 = (walker.1 + ((v >> 16) % 3) as i64 - 1).clamp(0, h - 1);
            if (v >> 24) & 15 == 0 {
                walker.2 = !walker.2;
            }
            t += ((v >> 32) & 3) as i64;
            Event::new(t, walker.0 as u16, walker.1 as u16, walker.2)
        })
        .collect()
}

/// A seeded, sensor-like recording for the decode benchmarks: a blob of activity drifting
/// across a `width`×`height` array plus uniform background noise (1 event in 16), with
/// inter-event gaps of 0–3 µs (a busy 1 Mev/s scene).
pub fn drifting_blob(n: usize, width: u16, height: u16, seed: u64) -> Vec<Event> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (w, h) = (f64::from(width), f64::from(height));
    let mut events = Vec::with_capacity(n);
    let mut t = 0i64;
    for i in 0..n {
        let r = next();
        t += i64::from((r & 3) as u8);
        let phase = i as f64 / n as f64 * std::f64::consts::TAU * 3.0;
        let (cx, cy) = (
            w * (0.5 + 0.35 * phase.cos()),
            h * (0.5 + 0.35 * phase.sin()),
        );
        let (x, y) = if r >> 60 == 0 {
            (
                ((r >> 8) % u64::from(width)) as f64,
                ((r >> 24) % u64::from(height)) as f64,
            )
        } else {
            let dx = ((r >> 8) & 31) as f64 - 15.5;
            let dy = ((r >> 16) & 31) as f64 - 15.5;
            ((cx + dx).clamp(0.0, w - 1.0), (cy + dy).clamp(0.0, h - 1.0))
        };
        events.push(Event::new(t, x as u16, y as u16, (r >> 40) & 1 == 1));
    }
    events
}
