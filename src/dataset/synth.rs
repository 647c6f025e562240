//! The DVS emulator: a simulated DVS128 (128 × 128) watching a still image move on a monitor,
//! the way CIFAR10-DVS was recorded, producing polarity events.
//!
//! # The pixel model
//!
//! This follows the ESIM (Rebecq et al., 2018) / v2e (Hu, Liu & Delbruck, 2021) line of
//! emulators: each pixel is an idealised DVS change detector working on log intensity.
//!
//! - **Log intensity.** A pixel sees luminance `L` (relative, white = 1) and works on
//!   `log(L + ε)`. The small offset `ε` ([`PixelParams::log_eps`], default 10⁻³) keeps the
//!   log finite on black; it plays the role of v2e's linear segment near zero.
//! - **Memory and thresholds.** Each pixel memorises the log intensity at its last event. When
//!   the present value exceeds the memory by its ON threshold `C_on` it emits an ON event and
//!   the memory moves up by exactly `C_on`; when it falls below by `C_off`, an OFF event and
//!   the memory moves down by `C_off`. A change of several thresholds between two rendered
//!   frames emits **several events**, one per crossing (a step of 3.4·C gives 3 events), as in
//!   ESIM and v2e. Moving the memory by whole thresholds, rather than resetting it to the
//!   present value, keeps the quantisation error from accumulating.
//! - **Mismatch.** `C_on` and `C_off` differ per pixel: each is drawn once per simulated
//!   sensor from a Gaussian with mean [`PixelParams::threshold_on`] /
//!   [`PixelParams::threshold_off`] and standard deviation [`PixelParams::threshold_sigma`]
//!   (v2e's defaults: 0.2, 0.2, σ 0.03), clamped to at least [`MIN_THRESHOLD`] = 0.01 as v2e
//!   does. The mismatch map is drawn from the master seed alone, so every recording of a
//!   dataset comes from the same sensor, as every CIFAR10-DVS recording did.
//! - **Timestamps.** Frames are rendered at [`SceneParams::render_hz`] (default 1 kHz). Between
//!   two frames a pixel's log intensity is taken to change linearly, and each threshold
//!   crossing is timestamped where that line crosses the threshold (ESIM's linear
//!   interpolation; v2e instead spreads a frame's events evenly over the interval), then
//!   rounded to the microsecond. With the default motion an image moves at most 0.06 sensor
//!   pixels per frame, so the linear assumption is close.
//! - **Refractory period.** After an event a pixel cannot emit another for
//!   [`PixelParams::refractory_us`] (default 100 µs). A crossing inside that window is dropped
//!   and the memory still moves past it. That is what the hardware does: during its
//!   refractory period the pixel's change amplifier is held in reset, so the memory follows
//!   the input and the change is lost. Fast changes therefore saturate the output instead of
//!   being replayed late. (v2e keeps a dropped crossing in the memory, so it fires later.)
//! - **Leak events.** Junction leakage in the reset switch slowly lowers the memorised level,
//!   so a pixel watching a static scene emits ON events at roughly
//!   [`PixelParams::leak_hz`] (default 0.1 Hz, v2e's default). The memory drifts down by
//!   `leak_hz · C_on` per second; each pixel's rate is spread log-normally by
//!   [`LEAK_RATE_SPREAD_DECADES`] (0.1 decade, v2e's default).
//! - **Initial state.** A recording starts from a sensor that has been running: each pixel's
//!   memory sits at a uniformly random point between the two thresholds around the first
//!   frame ([`Emulator::start_random`]). Starting from a reset (memory = input) would make the
//!   first movement of every recording different from the rest, and would fire every
//!   pixel's leak events in lockstep.
//! - **Shot noise.** Temporal noise events are a Poisson process per pixel and polarity at
//!   [`PixelParams::shot_noise_hz`] (default 0.05 Hz ON and 0.05 Hz OFF per pixel). They are
//!   added to the output and, unlike in v2e, leave the pixel's memory and refractory state
//!   untouched; at these rates (one noise event per pixel every 10 s) that simplification is
//!   not visible in the output. v2e also scales shot noise with darkness; here it is uniform.
//! - Not modelled: the photoreceptor's intensity-dependent bandwidth (v2e's low-pass filter),
//!   event readout delays, and hot pixels.
//!
//! # The scene
//!
//! CIFAR10-DVS (Li et al., 2017, *Front. Neurosci.* 11:309) was recorded by showing each image
//! on an LCD monitor in front of a DVS128 and moving it with a "repeated closed-loop smooth"
//! (RCLS) movement: small movements along a closed path, repeated, so every edge keeps
//! generating events and the image returns to where it started. The paper's abstract is all
//! that could be checked here; the path below and its parameters are this emulator's choice,
//! made to the same principles:
//!
//! - **Monitor.** The image is upsampled with bicubic (Catmull-Rom) interpolation to
//!   [`SceneParams::monitor_oversample`] (default 4) monitor pixels per sensor pixel, and
//!   its longer side spans [`SceneParams::image_size`] sensor pixels (default 64, half the
//!   sensor). Pixel values are display codes: the monitor shows code `v` as luminance
//!   `black + (1 − black) · v^γ` with γ = [`SceneParams::gamma`] (2.2, sRGB-like) and
//!   `black` = [`SceneParams::black_level`] (0.05: an LCD's black plus room light seen by the
//!   camera). Around the image the monitor shows code [`SceneParams::background`] (0, black).
//! - **Optics.** Each sensor pixel integrates the luminance over its own square on the
//!   monitor. Since the monitor is a grid of constant-luminance pixels, this area average of
//!   a shifted image is exactly a bilinear interpolation of the box-filtered monitor image,
//!   which is precomputed once per recording.
//! - **Motion.** The image's offset follows a closed triangle: right by `A`, then diagonally
//!   down-left by `A·√2`, then up by `A` back to the start, with `A` =
//!   [`SceneParams::amplitude`] (default 2 sensor pixels). The three strokes cover
//!   horizontal, vertical and diagonal motion, so edges of every orientation fire. Each
//!   stroke takes a third of the loop and follows a raised-cosine profile (position and
//!   velocity continuous, velocity zero at the corners), which is the "smooth" of RCLS. One loop lasts
//!   [`SceneParams::loop_ms`] (default 250 ms), repeated for [`SceneParams::duration_ms`]
//!   (default 1000 ms, four loops). The triangle's centroid sits at the sensor centre.
//!
//! Everything random (mismatch, leak phases, shot noise) comes from ChaCha8 streams: stream 0
//! of the master seed for the sensor, stream `i + 1` for recording `i`, so a recording's
//! events depend only on the master seed, its index and the parameters, never on which
//! thread simulated it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::images::GrayImage;
use crate::event::Event;

/// The simulated sensor's width (DVS128).
pub const SENSOR_WIDTH: usize = 128;
/// The simulated sensor's height (DVS128).
pub const SENSOR_HEIGHT: usize = 128;
/// The smallest contrast threshold a pixel may draw (v2e's clamp).
pub const MIN_THRESHOLD: f32 = 0.01;
/// Spread of per-pixel leak rates: log-normal, this many decades standard deviation.
pub const LEAK_RATE_SPREAD_DECADES: f64 = 0.1;
/// At most this many threshold crossings per pixel per rendered frame; the rest wait for the
/// next frame. Bounds the work per frame whatever the input; real scenes stay far below it
/// (the whole log range of a monitor, ln((1 + ε)/ε) ≈ 6.9 at ε = 10⁻³, is 35 thresholds of 0.2).
pub const MAX_CROSSINGS_PER_FRAME: u32 = 1024;

/// Parameters of the DVS pixel (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelParams {
    /// Mean ON contrast threshold, in log-intensity units.
    pub threshold_on: f32,
    /// Mean OFF contrast threshold, in log-intensity units.
    pub threshold_off: f32,
    /// Standard deviation of the per-pixel thresholds (mismatch).
    pub threshold_sigma: f32,
    /// Refractory period after an event, µs.
    pub refractory_us: f64,
    /// Shot-noise rate per pixel and polarity, Hz.
    pub shot_noise_hz: f64,
    /// Leak-event rate per pixel, Hz.
    pub leak_hz: f64,
    /// Offset added to luminance before the log.
    pub log_eps: f32,
}

impl Default for PixelParams {
    fn default() -> Self {
        Self {
            threshold_on: 0.2,
            threshold_off: 0.2,
            threshold_sigma: 0.03,
            refractory_us: 100.0,
            shot_noise_hz: 0.05,
            leak_hz: 0.1,
            log_eps: 1e-3,
        }
    }
}

impl PixelParams {
    /// A noiseless, mismatch-free pixel: the ideal change detector (for tests and teaching).
    pub fn ideal() -> Self {
        Self {
            threshold_sigma: 0.0,
            refractory_us: 0.0,
            shot_noise_hz: 0.0,
            leak_hz: 0.0,
            ..Self::default()
        }
    }
}

/// Parameters of the monitor, the motion and the rendering (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SceneParams {
    /// Sensor pixels spanned by the image's longer side.
    pub image_size: f32,
    /// Monitor pixels per sensor pixel (the bicubic upsampling factor onto the monitor).
    pub monitor_oversample: usize,
    /// Monitor gamma: code `v` shows as `v^gamma`.
    pub gamma: f32,
    /// Luminance of code 0 relative to code 1.
    pub black_level: f32,
    /// Code shown around the image, in `[0, 1]`.
    pub background: f32,
    /// Size of the triangular loop, sensor pixels.
    pub amplitude: f32,
    /// Duration of one loop, ms.
    pub loop_ms: f64,
    /// Recording duration, ms.
    pub duration_ms: f64,
    /// Rendering rate, Hz.
    pub render_hz: f64,
}

impl Default for SceneParams {
    fn default() -> Self {
        Self {
            image_size: 64.0,
            monitor_oversample: 4,
            gamma: 2.2,
            black_level: 0.05,
            background: 0.0,
            amplitude: 2.0,
            loop_ms: 250.0,
            duration_ms: 1000.0,
            render_hz: 1000.0,
        }
    }
}

/// All emulator parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SynthParams {
    /// The pixel.
    pub pixel: PixelParams,
    /// The scene.
    pub scene: SceneParams,
}

/// Why a parameter set or an image cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("synth parameter {name} = {value}: expected {expected}")]
pub struct ParamError {
    /// The parameter.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// The accepted range.
    pub expected: &'static str,
}

impl SynthParams {
    /// Checks every parameter's range, so the simulation never meets NaN, zero divisors or
    /// unbounded work.
    pub fn validate(&self) -> Result<(), ParamError> {
        fn check(
            name: &'static str,
            value: f64,
            ok: bool,
            expected: &'static str,
        ) -> Result<(), ParamError> {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(ParamError {
                    name,
                    value: value.to_string(),
                    expected,
                })
            }
        }
        let p = &self.pixel;
        let s = &self.scene;
        let on = f64::from(p.threshold_on);
        let off = f64::from(p.threshold_off);
        check(
            "threshold-on",
            on,
            on >= f64::from(MIN_THRESHOLD) && on <= 10.0,
            "0.01 to 10",
        )?;
        check(
            "threshold-off",
            off,
            off >= f64::from(MIN_THRESHOLD) && off <= 10.0,
            "0.01 to 10",
        )?;
        let sigma = f64::from(p.threshold_sigma);
        check(
            "threshold-sigma",
            sigma,
            (0.0..=1.0).contains(&sigma),
            "0 to 1",
        )?;
        check(
            "refractory-us",
            p.refractory_us,
            (0.0..=1e6).contains(&p.refractory_us),
            "0 to 1e6",
        )?;
        check(
            "shot-noise-hz",
            p.shot_noise_hz,
            (0.0..=100.0).contains(&p.shot_noise_hz),
            "0 to 100",
        )?;
        check(
            "leak-hz",
            p.leak_hz,
            (0.0..=100.0).contains(&p.leak_hz),
            "0 to 100",
        )?;
        let eps = f64::from(p.log_eps);
        check(
            "log-eps",
            eps,
            eps > 0.0 && eps <= 1.0,
            "above 0, at most 1",
        )?;
        let size = f64::from(s.image_size);
        check(
            "image-size",
            size,
            (1.0..=1024.0).contains(&size),
            "1 to 1024 sensor pixels",
        )?;
        let k = s.monitor_oversample as f64;
        check(
            "monitor-oversample",
            k,
            (1.0..=16.0).contains(&k),
            "1 to 16",
        )?;
        let gamma = f64::from(s.gamma);
        check("gamma", gamma, (0.1..=10.0).contains(&gamma), "0.1 to 10")?;
        let black = f64::from(s.black_level);
        check(
            "black-level",
            black,
            (0.0..1.0).contains(&black),
            "0 to below 1",
        )?;
        let bg = f64::from(s.background);
        check("background", bg, (0.0..=1.0).contains(&bg), "0 to 1")?;
        let amp = f64::from(s.amplitude);
        check(
            "amplitude",
            amp,
            (0.0..=64.0).contains(&amp),
            "0 to 64 sensor pixels",
        )?;
        check(
            "loop-ms",
            s.loop_ms,
            (1.0..=1e6).contains(&s.loop_ms),
            "1 to 1e6",
        )?;
        check(
            "duration-ms",
            s.duration_ms,
            s.duration_ms > 0.0 && s.duration_ms <= 600_000.0,
            "above 0, at most 600000 (10 min)",
        )?;
        check(
            "render-hz",
            s.render_hz,
            (10.0..=100_000.0).contains(&s.render_hz),
            "10 to 100000",
        )?;
        let frames = s.duration_ms * 1e-3 * s.render_hz;
        check(
            "duration-ms × render-hz",
            frames,
            (1.0..=1e7).contains(&frames),
            "1 to 1e7 frames",
        )?;
        Ok(())
    }
}

/// A uniform draw in `[0, 1)` with 53 random bits.
#[inline]
fn uniform(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Box–Muller; one of the pair is discarded for simplicity).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - uniform(rng); // in (0, 1], so the log is finite
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The random generator of recording `index` under `seed` (stream `index + 1`; stream 0 is the
/// sensor's mismatch).
pub fn recording_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index.wrapping_add(1));
    rng
}

/// One simulated sensor: the per-pixel thresholds and leak rates, fixed for its lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    width: usize,
    height: usize,
    threshold_on: Vec<f32>,
    threshold_off: Vec<f32>,
    /// Memory drift, log units per µs (`leak_hz · C_on · spread / 1e6`).
    leak_per_us: Vec<f32>,
}

impl Sensor {
    /// Draws a `width`×`height` sensor's mismatch from stream 0 of `seed`.
    pub fn new(width: usize, height: usize, params: &PixelParams, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        let n = width * height;
        let mut draw = |mean: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let c = f64::from(mean) + f64::from(params.threshold_sigma) * normal(&mut rng);
                    (c as f32).max(MIN_THRESHOLD)
                })
                .collect()
        };
        let threshold_on = draw(params.threshold_on);
        let threshold_off = draw(params.threshold_off);
        let leak_per_us = threshold_on
            .iter()
            .map(|&c_on| {
                let spread = 10f64.powf(LEAK_RATE_SPREAD_DECADES * normal(&mut rng));
                (params.leak_hz * f64::from(c_on) * spread * 1e-6) as f32
            })
            .collect();
        Self {
            width,
            height,
            threshold_on,
            threshold_off,
            leak_per_us,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The ON threshold of pixel `(x, y)`.
    pub fn threshold_on(&self, x: usize, y: usize) -> Option<f32> {
        self.threshold_on.get(y * self.width + x).copied()
    }

    /// The OFF threshold of pixel `(x, y)`.
    pub fn threshold_off(&self, x: usize, y: usize) -> Option<f32> {
        self.threshold_off.get(y * self.width + x).copied()
    }
}

/// What an emulator did, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmulatorStats {
    /// ON events from the change detectors (signal and leak).
    pub on: u64,
    /// OFF events from the change detectors.
    pub off: u64,
    /// Crossings dropped by the refractory period.
    pub refractory_dropped: u64,
    /// Crossings deferred to the next frame by [`MAX_CROSSINGS_PER_FRAME`].
    pub deferred: u64,
}

/// The change detectors of every pixel of a sensor, fed log-intensity frames.
#[derive(Debug, Clone)]
pub struct Emulator {
    sensor: Sensor,
    refractory_us: f64,
    /// Memorised log intensity per pixel.
    memory: Vec<f32>,
    /// Log intensity at the previous frame.
    previous: Vec<f32>,
    /// Time of each pixel's last emitted event, µs.
    last_event: Vec<f64>,
    /// Time of the previous frame, µs; `None` before the first frame.
    t_previous: Option<f64>,
    stats: EmulatorStats,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// The frame has the wrong number of pixels.
    #[error("frame of {found} pixels for a {width}x{height} sensor")]
    Size {
        /// Pixels given.
        found: usize,
        /// Sensor width.
        width: usize,
        /// Sensor height.
        height: usize,
    },
    /// The frame's time is not after the previous frame's.
    #[error("frame time {t} µs is not after the previous frame's {previous} µs")]
    Time {
        /// This frame.
        t: f64,
        /// The previous frame.
        previous: f64,
    },
    /// [`Emulator::step`] before [`Emulator::start_reset`] or [`Emulator::start_random`].
    #[error("step before start")]
    NotStarted,
}

impl Emulator {
    /// An emulator for `sensor` with a refractory period in µs.
    pub fn new(sensor: Sensor, refractory_us: f64) -> Self {
        let n = sensor.width * sensor.height;
        Self {
            sensor,
            refractory_us,
            memory: vec![0.0; n],
            previous: vec![0.0; n],
            last_event: vec![f64::NEG_INFINITY; n],
            t_previous: None,
            stats: EmulatorStats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> EmulatorStats {
        self.stats
    }

    /// Starts from a freshly reset sensor: every pixel's memory equals the first frame
    /// `log_frame` at time `t_us`, so nothing fires until the input moves by a threshold.
    pub fn start_reset(&mut self, t_us: f64, log_frame: &[f32]) -> Result<(), FrameError> {
        self.check_size(log_frame)?;
        for (p, &l) in log_frame.iter().enumerate() {
            let l = if l.is_finite() { l } else { 0.0 };
            self.previous[p] = l;
            self.memory[p] = l;
            self.last_event[p] = f64::NEG_INFINITY;
        }
        self.t_previous = Some(t_us);
        Ok(())
    }

    /// Starts from a sensor that has been running: each pixel's memory sits at a uniformly
    /// random point strictly between one OFF threshold above and one ON threshold below the
    /// first frame, drawn from `rng`. A recording rarely begins right after a reset, and with
    /// a reset start every pixel would need a full threshold to fire in either direction, so
    /// the first movement of a recording would look different from the later ones. It also
    /// spreads the leak events' phases. A static scene still gives no events without leak.
    pub fn start_random(
        &mut self,
        t_us: f64,
        log_frame: &[f32],
        rng: &mut impl Rng,
    ) -> Result<(), FrameError> {
        self.start_reset(t_us, log_frame)?;
        for p in 0..self.memory.len() {
            let (c_on, c_off) = (self.sensor.threshold_on[p], self.sensor.threshold_off[p]);
            let l = self.previous[p];
            let offset = -c_off + (uniform(rng) as f32) * (c_on + c_off);
            let memory = l - offset;
            // Rounding may land the difference on a threshold, which would fire at once.
            let d = l - memory;
            if d > -c_off && d < c_on {
                self.memory[p] = memory;
            }
        }
        Ok(())
    }

    fn check_size(&self, frame: &[f32]) -> Result<(), FrameError> {
        if frame.len() == self.sensor.width * self.sensor.height {
            Ok(())
        } else {
            Err(FrameError::Size {
                found: frame.len(),
                width: self.sensor.width,
                height: self.sensor.height,
            })
        }
    }

    /// Advances to the frame `log_frame` at time `t_us`, appending the events of the interval
    /// since the previous frame to `out`, sorted by time (then row, then column). A
    /// non-finite pixel value is treated as unchanged.
    pub fn step(
        &mut self,
        t_us: f64,
        log_frame: &[f32],
        out: &mut Vec<Event>,
    ) -> Result<(), FrameError> {
        self.check_size(log_frame)?;
        let t0 = self.t_previous.ok_or(FrameError::NotStarted)?;
        // Comparing with partial_cmp also refuses NaN.
        if t_us.partial_cmp(&t0) != Some(std::cmp::Ordering::Greater) {
            return Err(FrameError::Time {
                t: t_us,
                previous: t0,
            });
        }
        let dt = t_us - t0;
        let first_new = out.len();
        let width = self.sensor.width;
        for (p, &l1) in log_frame.iter().enumerate() {
            let l0 = self.previous[p];
            let l1 = if l1.is_finite() { l1 } else { l0 };
            let drift = self.sensor.leak_per_us[p] * dt as f32;
            let m0 = self.memory[p];
            // d(t) = log intensity − memory, linear over the interval (input linear, leak
            // linear); events fire where it crosses +C_on or −C_off.
            let d0 = l0 - m0;
            let d1 = l1 - m0 + drift;
            let mut memory = m0 - drift;
            let (c, polarity, span) = if d1 >= self.sensor.threshold_on[p] {
                (self.sensor.threshold_on[p], true, d1 - d0)
            } else if d1 <= -self.sensor.threshold_off[p] {
                (self.sensor.threshold_off[p], false, d0 - d1)
            } else {
                self.memory[p] = memory;
                self.previous[p] = l1;
                continue;
            };
            // Distance from the start of the interval to the first crossing, along the
            // direction of change.
            let start = if polarity { d0 } else { -d0 };
            let total = if polarity { d1 } else { -d1 };
            // total >= c > 0, so the ratio is at least 1 and the cast cannot be 0.
            let wanted = (total / c) as u32;
            let n = wanted.min(MAX_CROSSINGS_PER_FRAME);
            self.stats.deferred += u64::from(wanted - n);
            for k in 1..=n {
                let level = k as f32 * c;
                let frac = if span > 0.0 {
                    ((level - start) / span).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                let t = t0 + f64::from(frac) * dt;
                if t - self.last_event[p] < self.refractory_us {
                    self.stats.refractory_dropped += 1;
                    continue;
                }
                self.last_event[p] = t;
                out.push(Event::new(
                    t.round() as i64,
                    (p % width) as u16,
                    (p / width) as u16,
                    polarity,
                ));
                if polarity {
                    self.stats.on += 1;
                } else {
                    self.stats.off += 1;
                }
            }
            let moved = n as f32 * c;
            memory += if polarity { moved } else { -moved };
            self.memory[p] = memory;
            self.previous[p] = l1;
        }
        // Each pixel's events are in time order already; one sort interleaves the pixels. Two
        // events with equal keys are identical, so the unstable sort is deterministic.
        out[first_new..].sort_unstable_by_key(|e| (e.t, e.y, e.x));
        self.t_previous = Some(t_us);
        Ok(())
    }
}

/// `log(L + ε)`, the quantity the pixel works on.
#[inline]
pub fn log_intensity(luminance: f32, eps: f32) -> f32 {
    (luminance + eps).ln()
}

/// Catmull-Rom (Keys, a = −0.5) weights for the four taps around a sample at fraction `f`.
#[inline]
fn cubic_weights(f: f32) -> [f32; 4] {
    let f2 = f * f;
    let f3 = f2 * f;
    [
        -0.5 * f3 + f2 - 0.5 * f,
        1.5 * f3 - 2.5 * f2 + 1.0,
        -1.5 * f3 + 2.0 * f2 + 0.5 * f,
        0.5 * f3 - 0.5 * f2,
    ]
}

/// Bicubic resampling of `image` to `out_w`×`out_h`, sampling pixel centres, edges clamped,
/// results clamped to `[0, 1]` (Catmull-Rom overshoots near sharp edges).
pub fn resize_bicubic(image: &GrayImage, out_w: usize, out_h: usize) -> Vec<f32> {
    let sx = image.width as f32 / out_w as f32;
    let sy = image.height as f32 / out_h as f32;
    // Horizontal pass: image.height rows of out_w.
    let mut rows = vec![0.0f32; out_w * image.height];
    for i in 0..out_w {
        let u = (i as f32 + 0.5) * sx - 0.5;
        let u0 = u.floor();
        let w = cubic_weights(u - u0);
        let u0 = u0 as isize;
        for y in 0..image.height {
            let mut acc = 0.0;
            for (k, wk) in w.iter().enumerate() {
                acc += wk * image.at_clamped(u0 - 1 + k as isize, y as isize);
            }
            rows[y * out_w + i] = acc;
        }
    }
    let mut out = vec![0.0f32; out_w * out_h];
    for j in 0..out_h {
        let v = (j as f32 + 0.5) * sy - 0.5;
        let v0 = v.floor();
        let w = cubic_weights(v - v0);
        let v0 = v0 as isize;
        for i in 0..out_w {
            let mut acc = 0.0;
            for (k, wk) in w.iter().enumerate() {
                let y = (v0 - 1 + k as isize).clamp(0, image.height as isize - 1) as usize;
                acc += wk * rows[y * out_w + i];
            }
            out[j * out_w + i] = acc.clamp(0.0, 1.0);
        }
    }
    out
}

/// An image on the monitor, as the sensor's pixels see it: the luminance averaged over one
/// sensor pixel's footprint, tabulated at every monitor-pixel offset (a box filter of the
/// monitor image), so any sub-pixel position is a bilinear lookup.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// Box-filtered luminance for monitor offsets `-k-1 ..= w_m+1` (columns) and likewise rows.
    aperture: Vec<f32>,
    /// Table columns.
    cols: usize,
    /// Table rows.
    rows: usize,
    /// Monitor pixels per sensor pixel.
    k: usize,
    /// Image width on the sensor, sensor pixels.
    width: f32,
    /// Image height on the sensor, sensor pixels.
    height: f32,
}

impl Monitor {
    /// Puts `image` on the monitor as `scene` describes.
    pub fn new(image: &GrayImage, scene: &SceneParams) -> Self {
        let k = scene.monitor_oversample.max(1);
        let longer = image.width.max(image.height).max(1) as f32;
        let scale = scene.image_size / longer;
        let w_m = ((image.width as f32 * scale * k as f32).round() as usize).max(1);
        let h_m = ((image.height as f32 * scale * k as f32).round() as usize).max(1);
        let codes = resize_bicubic(image, w_m, h_m);
        let lum =
            |code: f32| scene.black_level + (1.0 - scene.black_level) * code.powf(scene.gamma);
        let background = lum(scene.background);
        // Monitor luminance padded with k + 1 background pixels on every side, so that every
        // window of the table lies inside the padded image.
        let pad = k + 1;
        let pw = w_m + 2 * pad;
        let ph = h_m + 2 * pad;
        let mut padded = vec![background; pw * ph];
        for j in 0..h_m {
            for i in 0..w_m {
                padded[(j + pad) * pw + i + pad] = lum(codes[j * w_m + i]);
            }
        }
        // Table column c holds the window of k monitor pixels starting at monitor offset
        // c - pad, which is padded columns c .. c + k (rows likewise). The table spans offsets
        // -pad ..= w_m + 1: every window further out is pure background, so lookups clamp.
        let cols = w_m + k + 3;
        let rows = h_m + k + 3;
        let mut horizontal = vec![0.0f32; cols * ph];
        for y in 0..ph {
            for c in 0..cols {
                horizontal[y * cols + c] = padded[y * pw + c..y * pw + c + k].iter().sum();
            }
        }
        let norm = 1.0 / (k * k) as f32;
        let mut aperture = vec![0.0f32; cols * rows];
        for r in 0..rows {
            for c in 0..cols {
                let acc: f32 = (r..r + k).map(|y| horizontal[y * cols + c]).sum();
                aperture[r * cols + c] = acc * norm;
            }
        }
        Self {
            aperture,
            cols,
            rows,
            k,
            width: w_m as f32 / k as f32,
            height: h_m as f32 / k as f32,
        }
    }

    /// Image width on the sensor, in sensor pixels.
    pub fn width(&self) -> f32 {
        self.width
    }

    /// Image height on the sensor, in sensor pixels.
    pub fn height(&self) -> f32 {
        self.height
    }

    /// Table index for a monitor offset (monitor pixels from the image's left/top edge to the
    /// start of a sensor pixel's footprint), clamped into the background margin.
    #[inline]
    fn cell(offset: isize, k: usize, len: usize) -> usize {
        // Column c holds the window starting at monitor offset c - (k + 1).
        (offset + k as isize + 1).clamp(0, len as isize - 1) as usize
    }

    /// Renders the sensor's view into `luminance` (row-major, `sensor_w` columns) with the
    /// image's top-left corner at sensor position (`ox`, `oy`), only for columns `xs` and rows
    /// `ys`, clipped to the buffer (the rest is left untouched). `taps` is scratch space
    /// reused between frames, so rendering does not allocate once it has grown.
    #[allow(clippy::too_many_arguments)]
    pub fn render(
        &self,
        ox: f32,
        oy: f32,
        xs: std::ops::Range<usize>,
        ys: std::ops::Range<usize>,
        sensor_w: usize,
        luminance: &mut [f32],
        taps: &mut Vec<(usize, usize, f32)>,
    ) {
        let k = self.k as f32;
        let xs = xs.start.min(sensor_w)..xs.end.min(sensor_w);
        taps.clear();
        taps.extend(xs.clone().map(|x| {
            let u = (x as f32 - ox) * k;
            let u0 = u.floor();
            let c = Self::cell(u0 as isize, self.k, self.cols);
            let c1 = Self::cell(u0 as isize + 1, self.k, self.cols);
            (c, c1, u - u0)
        }));
        let rows = luminance.chunks_exact_mut(sensor_w.max(1));
        for (y, row_out) in rows.enumerate().skip(ys.start).take(ys.len()) {
            let v = (y as f32 - oy) * k;
            let v0 = v.floor();
            let fy = v - v0;
            let r = Self::cell(v0 as isize, self.k, self.rows) * self.cols;
            let r1 = Self::cell(v0 as isize + 1, self.k, self.rows) * self.cols;
            // `cell` keeps r, r1 below rows·cols and c, c1 below cols.
            let a = &self.aperture;
            for (out, &(c, c1, fx)) in row_out[xs.clone()].iter_mut().zip(taps.iter()) {
                let top = a[r + c] + fx * (a[r + c1] - a[r + c]);
                let bottom = a[r1 + c] + fx * (a[r1 + c1] - a[r1 + c]);
                *out = top + fy * (bottom - top);
            }
        }
    }
}

/// The image offset along the closed triangular loop at time `t_us`, relative to the loop's
/// start, in sensor pixels: right by `A`, diagonally down-left, up, each stroke a third of
/// the loop with a raised-cosine profile.
pub fn loop_offset(t_us: f64, scene: &SceneParams) -> (f32, f32) {
    let period = scene.loop_ms * 1e3;
    let phase = (t_us / period).rem_euclid(1.0) * 3.0;
    let stroke = (phase.floor() as usize).min(2);
    let tau = phase - stroke as f64;
    let ease = (0.5 - 0.5 * (std::f64::consts::PI * tau).cos()) as f32;
    let a = scene.amplitude;
    let vertices = [(0.0, 0.0), (a, 0.0), (0.0, a), (0.0, 0.0)];
    let (x0, y0) = vertices[stroke];
    let (x1, y1) = vertices[stroke + 1];
    (x0 + ease * (x1 - x0), y0 + ease * (y1 - y0))
}

/// One emulated recording: its events (sorted by time) and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRecording {
    /// The events, time-sorted, timestamps in µs from the first frame.
    pub events: Vec<Event>,
    /// Change-detector counts.
    pub stats: EmulatorStats,
    /// Shot-noise events added.
    pub shot_noise: u64,
}

/// Emulates `sensor` watching `image` move on the monitor for one recording. `rng` is the
/// recording's own stream ([`recording_rng`]). `params` must have passed
/// [`SynthParams::validate`].
pub fn simulate(
    image: &GrayImage,
    params: &SynthParams,
    sensor: &Sensor,
    rng: &mut impl Rng,
) -> SynthRecording {
    debug_assert!(params.validate().is_ok());
    let scene = &params.scene;
    let (w, h) = (sensor.width, sensor.height);
    let monitor = Monitor::new(image, scene);
    let eps = params.pixel.log_eps;
    // Place the loop's centroid (A/3, A/3) at the sensor centre.
    let a = scene.amplitude;
    let base_x = w as f32 / 2.0 - monitor.width() / 2.0 - a / 3.0;
    let base_y = h as f32 / 2.0 - monitor.height() / 2.0 - a / 3.0;
    // Only pixels the image can reach change; one pixel of margin covers the bilinear tap.
    let span = |base: f32, size: f32, limit: usize| {
        let lo = (base.floor() - 1.0).max(0.0) as usize;
        let hi = ((base + a + size).ceil() + 1.0).clamp(0.0, limit as f32) as usize;
        lo.min(limit)..hi.max(lo.min(limit))
    };
    let xs = span(base_x, monitor.width(), w);
    let ys = span(base_y, monitor.height(), h);

    let background =
        scene.black_level + (1.0 - scene.black_level) * scene.background.powf(scene.gamma);
    let mut luminance = vec![background; w * h];
    let mut log_frame = vec![log_intensity(background, eps); w * h];
    let mut taps = Vec::with_capacity(xs.len());
    let mut render = |t_us: f64, luminance: &mut [f32], log_frame: &mut [f32]| {
        let (dx, dy) = loop_offset(t_us, scene);
        monitor.render(
            base_x + dx,
            base_y + dy,
            xs.clone(),
            ys.clone(),
            w,
            luminance,
            &mut taps,
        );
        for y in ys.clone() {
            let row = y * w;
            for x in xs.clone() {
                log_frame[row + x] = log_intensity(luminance[row + x], eps);
            }
        }
    };

    let mut emulator = Emulator::new(sensor.clone(), params.pixel.refractory_us);
    let duration_us = scene.duration_ms * 1e3;
    let frames = (duration_us * scene.render_hz * 1e-6).round().max(1.0) as u64;
    let frame_us = 1e6 / scene.render_hz;
    render(0.0, &mut luminance, &mut log_frame);
    let mut events = Vec::new();
    // The sizes match by construction, so `start` and `step` cannot fail here.
    if emulator.start_random(0.0, &log_frame, rng).is_ok() {
        for f in 1..=frames {
            let t = f as f64 * frame_us;
            render(t, &mut luminance, &mut log_frame);
            if emulator.step(t, &log_frame, &mut events).is_err() {
                break;
            }
        }
    }
    let noise = shot_noise(
        w,
        h,
        params.pixel.shot_noise_hz,
        frames as f64 * frame_us,
        rng,
    );
    let shot = noise.len() as u64;
    SynthRecording {
        events: merge_sorted(events, noise),
        stats: emulator.stats(),
        shot_noise: shot,
    }
}

/// Shot-noise events over `(0, duration_us]`: for each polarity an independent Poisson process
/// at `rate_hz` per pixel, generated as one sensor-wide process (rate `2 · rate_hz · pixels`)
/// with a uniformly chosen pixel and polarity per event. Sorted by time.
pub fn shot_noise(
    width: usize,
    height: usize,
    rate_hz: f64,
    duration_us: f64,
    rng: &mut impl Rng,
) -> Vec<Event> {
    let pixels = (width * height) as u64;
    let total_per_us = 2.0 * rate_hz * pixels as f64 * 1e-6;
    let mut out = Vec::new();
    if total_per_us <= 0.0 || pixels == 0 {
        return out;
    }
    let mut t = 0.0;
    loop {
        t += -(1.0 - uniform(rng)).ln() / total_per_us;
        if t > duration_us {
            break;
        }
        let draw = rng.next_u64();
        // The low bit picks the polarity, the rest the pixel; `pixels` is far below 2^63, so
        // the modulo bias is below 2^-40.
        let p = (draw >> 1) % pixels;
        out.push(Event::new(
            (t.round() as i64).max(1),
            (p % width as u64) as u16,
            (p / width as u64) as u16,
            draw & 1 == 1,
        ));
    }
    out
}

/// Merges two time-sorted event lists; on equal times `a`'s event comes first.
fn merge_sorted(a: Vec<Event>, b: Vec<Event>) -> Vec<Event> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j].t < a[i].t {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: usize, h: usize, v: f32) -> GrayImage {
        GrayImage::new(w, h, vec![v; w * h]).unwrap()
    }

    #[test]
    fn bicubic_keeps_constants_and_interpolates_smoothly() {
        let img = flat(3, 2, 0.25);
        assert!(
            resize_bicubic(&img, 7, 5)
                .iter()
                .all(|&v| (v - 0.25).abs() < 1e-6)
        );
        let ramp = GrayImage::new(4, 1, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]).unwrap();
        let up = resize_bicubic(&ramp, 16, 1);
        // Catmull-Rom reproduces linear ramps away from the clamped borders.
        for pair in up[2..14].windows(2) {
            assert!(pair[1] > pair[0], "{up:?}");
        }
    }

    #[test]
    fn monitor_area_average_of_a_uniform_image_is_uniform() {
        let scene = SceneParams {
            background: 1.0,
            ..SceneParams::default()
        };
        let m = Monitor::new(&flat(8, 8, 1.0), &scene);
        let mut lum = vec![0.0; 16 * 16];
        m.render(-3.3, 2.7, 0..16, 0..16, 16, &mut lum, &mut Vec::new());
        assert!(lum.iter().all(|&v| (v - 1.0).abs() < 1e-5), "{lum:?}");
    }

    /// A white square on black: a sensor pixel straddling the edge sees the covered fraction.
    #[test]
    fn monitor_edge_pixel_sees_the_covered_fraction() {
        let scene = SceneParams {
            image_size: 4.0,
            black_level: 0.0,
            gamma: 1.0,
            monitor_oversample: 4,
            ..SceneParams::default()
        };
        let m = Monitor::new(&flat(2, 2, 1.0), &scene);
        assert_eq!((m.width(), m.height()), (4.0, 4.0));
        let mut lum = vec![0.0; 10 * 10];
        // Image spans sensor x in [2.25, 6.25), y in [3, 7).
        m.render(2.25, 3.0, 0..10, 0..10, 10, &mut lum, &mut Vec::new());
        // Ranges past the buffer are clipped, not a panic.
        m.render(
            2.25,
            3.0,
            0..99,
            5..99,
            10,
            &mut lum.clone(),
            &mut Vec::new(),
        );
        let at = |x: usize, y: usize| lum[y * 10 + x];
        assert!((at(2, 4) - 0.75).abs() < 1e-5, "{}", at(2, 4));
        assert!((at(3, 4) - 1.0).abs() < 1e-5);
        assert!((at(6, 4) - 0.25).abs() < 1e-5, "{}", at(6, 4));
        assert!(at(7, 4).abs() < 1e-6 && at(4, 2).abs() < 1e-6 && at(4, 7).abs() < 1e-6);
    }

    /// The reference twin of [`Monitor::render`]: the exact area integral of the
    /// piecewise-constant monitor image over one sensor pixel.
    fn area_average(
        image: &GrayImage,
        scene: &SceneParams,
        ox: f64,
        oy: f64,
        x: usize,
        y: usize,
    ) -> f64 {
        let k = scene.monitor_oversample;
        let longer = image.width.max(image.height) as f32;
        let scale = scene.image_size / longer;
        let w_m = ((image.width as f32 * scale * k as f32).round() as usize).max(1);
        let h_m = ((image.height as f32 * scale * k as f32).round() as usize).max(1);
        let codes = resize_bicubic(image, w_m, h_m);
        let lum =
            |c: f32| f64::from(scene.black_level + (1.0 - scene.black_level) * c.powf(scene.gamma));
        let overlap = |a0: f64, a1: f64, b0: f64, b1: f64| (a1.min(b1) - a0.max(b0)).max(0.0);
        let pitch = 1.0 / k as f64;
        let mut covered = 0.0;
        let mut sum = 0.0;
        for j in 0..h_m {
            let y0 = oy + j as f64 * pitch;
            let wy = overlap(y0, y0 + pitch, y as f64, y as f64 + 1.0);
            if wy == 0.0 {
                continue;
            }
            for i in 0..w_m {
                let x0 = ox + i as f64 * pitch;
                let wx = overlap(x0, x0 + pitch, x as f64, x as f64 + 1.0);
                sum += wx * wy * lum(codes[j * w_m + i]);
                covered += wx * wy;
            }
        }
        sum + (1.0 - covered) * lum(scene.background)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn render_equals_the_exact_area_average(
            pixels in proptest::collection::vec(0.0f32..=1.0, 12),
            size in 3.0f32..12.0,
            k in 1usize..6,
            ox in -4.0f32..10.0,
            oy in -4.0f32..10.0,
            background in 0.0f32..=1.0,
        ) {
            let image = GrayImage::new(4, 3, pixels).unwrap();
            let scene = SceneParams {
                image_size: size,
                monitor_oversample: k,
                background,
                ..SceneParams::default()
            };
            let m = Monitor::new(&image, &scene);
            let mut lum = vec![0.0f32; 16 * 16];
            m.render(ox, oy, 0..16, 0..16, 16, &mut lum, &mut Vec::new());
            for y in 0..16 {
                for x in 0..16 {
                    let exact = area_average(&image, &scene, f64::from(ox), f64::from(oy), x, y);
                    let got = f64::from(lum[y * 16 + x]);
                    proptest::prop_assert!((got - exact).abs() < 1e-4, "({x},{y}): {got} vs {exact}");
                }
            }
        }
    }

    #[test]
    fn loop_is_closed_and_continuous() {
        let scene = SceneParams::default();
        let (x, y) = loop_offset(0.0, &scene);
        assert_eq!((x, y), (0.0, 0.0));
        let end = loop_offset(scene.loop_ms * 1e3 - 1e-6, &scene);
        assert!(end.0.abs() < 1e-4 && end.1.abs() < 1e-4, "{end:?}");
        let corner = loop_offset(scene.loop_ms * 1e3 / 3.0, &scene);
        assert!((corner.0 - scene.amplitude).abs() < 1e-4 && corner.1.abs() < 1e-4);
        let mut prev = loop_offset(0.0, &scene);
        for i in 1..=2500 {
            let p = loop_offset(f64::from(i) * 100.0, &scene);
            assert!((p.0 - prev.0).abs() < 0.01 && (p.1 - prev.1).abs() < 0.01);
            prev = p;
        }
    }

    #[test]
    fn refractory_drops_crossings_but_moves_memory() {
        let params = PixelParams {
            refractory_us: 1000.0,
            ..PixelParams::ideal()
        };
        let sensor = Sensor::new(1, 1, &params, 1);
        let mut emu = Emulator::new(sensor, params.refractory_us);
        let mut out = Vec::new();
        emu.start_reset(0.0, &[0.0]).unwrap();
        // 5 thresholds in 100 µs: only the first passes the 1 ms refractory period.
        emu.step(100.0, &[1.0 + 1e-4], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(emu.stats().refractory_dropped, 4);
        // The memory moved by all five: holding still gives nothing more.
        emu.step(5000.0, &[1.0 + 1e-4], &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn crossings_are_interpolated_in_time() {
        let params = PixelParams::ideal();
        let sensor = Sensor::new(1, 1, &params, 1);
        let mut emu = Emulator::new(sensor, 0.0);
        let mut out = Vec::new();
        emu.start_reset(0.0, &[0.0]).unwrap();
        // A ramp of 1.0 over 1000 µs crosses 0.2, 0.4, 0.6, 0.8, 1.0 at 200, 400 ... 1000 µs.
        emu.step(1000.0, &[1.0001], &mut out).unwrap();
        let times: Vec<i64> = out.iter().map(|e| e.t).collect();
        assert_eq!(times, vec![200, 400, 600, 800, 1000]);
        assert!(out.iter().all(|e| e.polarity));
    }

    #[test]
    fn frames_are_validated() {
        let params = PixelParams::ideal();
        let mut emu = Emulator::new(Sensor::new(2, 2, &params, 0), 0.0);
        let mut out = Vec::new();
        assert_eq!(
            emu.step(1.0, &[0.0; 4], &mut out),
            Err(FrameError::NotStarted)
        );
        emu.start_reset(5.0, &[0.0; 4]).unwrap();
        assert!(matches!(
            emu.step(5.0, &[0.0; 4], &mut out),
            Err(FrameError::Time { .. })
        ));
        assert!(matches!(
            emu.step(f64::NAN, &[0.0; 4], &mut out),
            Err(FrameError::Time { .. })
        ));
        assert!(matches!(
            emu.step(6.0, &[0.0; 3], &mut out),
            Err(FrameError::Size { .. })
        ));
        // Non-finite pixels count as unchanged.
        emu.step(7.0, &[f32::NAN, f32::INFINITY, 0.0, 0.0], &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn validation_rejects_out_of_range_parameters() {
        assert!(SynthParams::default().validate().is_ok());
        let mut p = SynthParams::default();
        p.pixel.threshold_on = 0.0;
        assert_eq!(p.validate().unwrap_err().name, "threshold-on");
        let mut p = SynthParams::default();
        p.scene.render_hz = f64::NAN;
        assert_eq!(p.validate().unwrap_err().name, "render-hz");
        let mut p = SynthParams::default();
        p.scene.duration_ms = 600_000.0;
        p.scene.render_hz = 100_000.0;
        assert!(p.validate().is_err());
    }

    #[test]
    fn shot_noise_rate_and_polarity_balance() {
        // 128 × 128 pixels, 1 Hz per polarity, 2 s: Poisson mean 65 536, σ = 256.
        let events = shot_noise(128, 128, 1.0, 2e6, &mut recording_rng(3, 0));
        let n = events.len() as f64;
        assert!((n - 65_536.0).abs() < 5.0 * 256.0, "{n}");
        let on = events.iter().filter(|e| e.polarity).count() as f64;
        // Binomial(n, 1/2): σ = √n / 2 ≈ 128.
        assert!((on - n / 2.0).abs() < 5.0 * 128.0, "{on} of {n}");
        assert!(events.windows(2).all(|w| w[0].t <= w[1].t));
        assert!(
            events
                .iter()
                .all(|e| e.t >= 1 && e.t <= 2_000_000 && e.x < 128 && e.y < 128)
        );
    }
}
