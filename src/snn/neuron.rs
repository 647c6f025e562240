//! The single definition of the neuron dynamics (charge, fire, reset), the Membrane Potential
//! Rectifier φ and φ′, and the surrogate gradients. The trainer and both executors call this code.
//!
//! # Dynamics (one neuron, one timestep, threshold `VTH` = 0.5, `U[0]` = 0)
//!
//! | kind | charge `H[t]` | fire `O[t]` | reset `U[t]` |
//! |---|---|---|---|
//! | [`NeuronKind::Srif`] | `U[t−1] + X[t]` | `H ≥ VTH` | `H − O` (soft reset by 1, not by `VTH`) |
//! | [`NeuronKind::IfHard`] | `U[t−1] + X[t]` | `H ≥ VTH` | `H·(1 − O)` |
//! | [`NeuronKind::LifHard`] | `τ·U[t−1] + X[t]` | `H ≥ VTH` | `H·(1 − O)` |
//!
//! SRIF subtracts 1 (the spike value) rather than the threshold, so the membrane keeps the
//! quantization residual `H − O` in `[−0.5, 0.5)` whenever the input stays in range.
//!
//! # MPR
//!
//! φ maps the membrane potential before firing toward the spike values 0 and 1:
//!
//! ```text
//! φ(u) = 1 − (1 − u)^(1/3)                          u < 0
//!        ½ + ½·tanh(3(u − ½)) / tanh(3/2)            0 ≤ u ≤ 1
//!        u^(1/3)                                      u > 1
//! ```
//!
//! The middle branch is `tanh(3(u−½))/(2·tanh(3/2)) + ½` written so that it is exactly 0 at
//! u = 0 and exactly 1 at u = 1 in floating point (x/x = 1). The lower branch is the point
//! reflection of the upper one about (½, ½), so φ(1 − u) = 1 − φ(u). φ is continuous, strictly
//! increasing and φ(½) = ½, so Θ(φ(H) − VTH) = Θ(H − VTH): MPR never changes a spike. It only
//! changes the surrogate gradient, dO/dH = g′(φ(H) − VTH)·φ′(H). φ is evaluated in f64 and the
//! f32 form rounds that result once, which keeps it monotone and firing-invariant for every f32
//! (the tests check this exhaustively over [0.25, 1] and near 0 and 1, and by property over all
//! bit patterns).
//!
//! "Spike-approaching", precisely: let o be the spike value nearest u (o = 0 for u ≤ ½, o = 1
//! for u > ½). Then φ(u) lies between o and u (inclusive): φ moves u toward o without
//! overshooting it, so |φ(u) − o| ≤ |u − o|.

use serde::{Deserialize, Serialize};

/// The firing threshold. The model file records it; the executors assume this value.
pub const VTH: f32 = 0.5;

/// Default membrane decay of [`NeuronKind::LifHard`].
pub const DEFAULT_LIF_TAU: f32 = 0.25;

/// Which spiking neuron a network uses. Serialised as `{"kind": "srif"}`,
/// `{"kind": "if_hard"}` or `{"kind": "lif_hard", "tau": 0.25}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NeuronKind {
    /// Soft-reset integrate-and-fire (InfLoR's SRIF): reset subtracts the spike value 1.
    #[default]
    Srif,
    /// Hard-reset integrate-and-fire: the membrane returns to 0 after a spike.
    IfHard,
    /// Hard-reset leaky integrate-and-fire with decay `tau` applied to the previous membrane.
    LifHard {
        /// Membrane decay factor in (0, 1].
        tau: f32,
    },
}

impl NeuronKind {
    /// Short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Srif => "srif",
            Self::IfHard => "if_hard",
            Self::LifHard { .. } => "lif_hard",
        }
    }

    /// Whether the parameters are usable (`tau` finite and in (0, 1]).
    pub fn is_valid(self) -> bool {
        match self {
            Self::Srif | Self::IfHard => true,
            Self::LifHard { tau } => tau.is_finite() && tau > 0.0 && tau <= 1.0,
        }
    }

    /// The membrane potential before firing, `H[t]`, from `U[t−1]` and the input current.
    #[inline(always)]
    pub fn charge(self, membrane: f32, current: f32) -> f32 {
        match self {
            Self::Srif | Self::IfHard => membrane + current,
            Self::LifHard { tau } => tau * membrane + current,
        }
    }

    /// The membrane after firing, `U[t]`, from `H[t]` and the spike `O[t]` (0 or 1).
    #[inline(always)]
    pub fn reset(self, potential: f32, spike: f32) -> f32 {
        match self {
            Self::Srif => potential - spike,
            Self::IfHard | Self::LifHard { .. } => {
                if spike != 0.0 {
                    0.0
                } else {
                    potential
                }
            }
        }
    }

    /// One timestep: returns the spike (0.0 or 1.0) and the next membrane `U[t]`.
    #[inline(always)]
    pub fn step(self, membrane: f32, current: f32) -> (f32, f32) {
        let potential = self.charge(membrane, current);
        let spike = fire(potential);
        (spike, self.reset(potential, spike))
    }

    /// Steps every neuron of a layer: `membranes` is updated in place, `spikes` receives 0/1.
    /// Returns the number of spikes. The match is hoisted out of the loop so each arm
    /// vectorises; the count is a u32 per run of at most 2^31 neurons because a spike turned
    /// into a usize (a saturating float-to-integer conversion) kept the loop scalar.
    #[inline]
    pub fn step_all(self, membranes: &mut [f32], currents: &[f32], spikes: &mut [f32]) -> usize {
        debug_assert_eq!(membranes.len(), currents.len());
        debug_assert_eq!(membranes.len(), spikes.len());
        const RUN: usize = 1 << 31;
        let mut count = 0usize;
        for ((u, x), o) in membranes
            .chunks_mut(RUN)
            .zip(currents.chunks(RUN))
            .zip(spikes.chunks_mut(RUN))
        {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                count += unsafe { step_run_avx512(self, u, x, o) } as usize;
                continue;
            }
            count += step_kinds(self, u, x, o) as usize;
        }
        count
    }
}

/// [`step_run`] with the kind's match hoisted out of the loop.
#[inline(always)]
fn step_kinds(kind: NeuronKind, u: &mut [f32], x: &[f32], o: &mut [f32]) -> u32 {
    match kind {
        NeuronKind::Srif => step_run(NeuronKind::Srif, u, x, o),
        NeuronKind::IfHard => step_run(NeuronKind::IfHard, u, x, o),
        NeuronKind::LifHard { tau } => step_run(NeuronKind::LifHard { tau }, u, x, o),
    }
}

/// [`step_kinds`] compiled for AVX-512: 16 neurons per instruction instead of the baseline's
/// 4. The same IEEE operations in the same order (Rust never fuses a multiply-add), so the
/// same bits.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn step_run_avx512(kind: NeuronKind, u: &mut [f32], x: &[f32], o: &mut [f32]) -> u32 {
    step_kinds(kind, u, x, o)
}

/// [`NeuronKind::step_all`] on at most 2^31 neurons (so the u32 count cannot overflow), for
/// one kind known at the call site.
#[inline(always)]
fn step_run(kind: NeuronKind, membranes: &mut [f32], currents: &[f32], spikes: &mut [f32]) -> u32 {
    let mut count = 0u32;
    for ((u, &x), o) in membranes.iter_mut().zip(currents).zip(spikes.iter_mut()) {
        let (s, next) = kind.step(*u, x);
        *u = next;
        *o = s;
        count += u32::from(s != 0.0);
    }
    count
}

/// Θ(H − VTH) with Θ(0) = 1: 1.0 when the potential reaches the threshold, else 0.0
/// (NaN never fires).
#[inline(always)]
pub fn fire(potential: f32) -> f32 {
    if potential >= VTH { 1.0 } else { 0.0 }
}

/// The MPR φ in f64 (see the module header).
#[inline]
pub fn phi_f64(u: f64) -> f64 {
    if u < 0.0 {
        1.0 - (1.0 - u).cbrt()
    } else if u <= 1.0 {
        0.5 + 0.5 * ((3.0 * (u - 0.5)).tanh() / 1.5f64.tanh())
    } else {
        // Also the NaN path: cbrt(NaN) = NaN.
        u.cbrt()
    }
}

/// φ′, the derivative of the MPR, in f64. At the joins (0 and 1) the middle branch's value is
/// used; φ is continuous there but its one-sided slopes differ (1/3 outside, ≈ 0.3005 inside).
#[inline]
pub fn phi_prime_f64(u: f64) -> f64 {
    if u < 0.0 {
        (1.0 - u).powf(-2.0 / 3.0) / 3.0
    } else if u <= 1.0 {
        let t = (3.0 * (u - 0.5)).tanh();
        1.5 * (1.0 - t * t) / 1.5f64.tanh()
    } else {
        u.powf(-2.0 / 3.0) / 3.0
    }
}

/// The MPR φ in f32: evaluated in f64 and rounded once, so it is monotone (non-decreasing)
/// over every f32 and keeps Θ(φ(h) − VTH) = Θ(h − VTH).
#[inline]
pub fn phi(u: f32) -> f32 {
    phi_f64(f64::from(u)) as f32
}

/// φ′ in f32 (evaluated in f64).
#[inline]
pub fn phi_prime(u: f32) -> f32 {
    phi_prime_f64(f64::from(u)) as f32
}

/// A surrogate for the spike function Θ(x), x = (potential or φ(potential)) − VTH: a smooth
/// value used to explain the gradient, and its derivative g′ used in backpropagation.
/// Serialised as `{"kind": "dspike", "b": 3.0}` and similar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Surrogate {
    /// Dspike (Li et al., "Differentiable Spike", NeurIPS 2021) with temperature `b` and region
    /// `r`: `g(x) = tanh(b·clamp(x, −r, r)) / (2·tanh(b·r)) + ½`, so 0 below −r and 1 above r;
    /// `g′(x) = b·(1 − tanh²(b·x)) / (2·tanh(b·r))` for |x| ≤ r and 0 outside. The default
    /// b = 3, r = ½ is the InfLoR authors' group's `spike_activation` (temp = 3) on mem/Vth with
    /// Vth = 1, that is the normalised potential in [0, 1] with the threshold at ½; with b = 3
    /// its middle is exactly MPR's middle branch. The region is a parameter because a widely
    /// copied variant uses r = 1. Files without `r` read as r = ½.
    Dspike {
        /// Temperature: larger is sharper. Default 3.
        b: f32,
        /// Half width of the region where the gradient is nonzero. Default ½.
        #[serde(default = "default_dspike_region")]
        r: f32,
    },
    /// Straight-through rectangle: value `clamp(x/width + ½, 0, 1)`, derivative `1/width`
    /// for |x| < width/2.
    Rectangle {
        /// Width of the window around the threshold.
        width: f32,
    },
    /// Triangle (the "ZIF" surrogate): derivative `max(γ − |x|, 0)/γ²`, value its integral
    /// from −∞ (0 below −γ, 1 above γ).
    Triangle {
        /// Half width of the triangle.
        gamma: f32,
    },
    /// Sigmoid: value `σ(α·x)`, derivative `α·σ(α·x)·(1 − σ(α·x))`.
    Sigmoid {
        /// Steepness.
        alpha: f32,
    },
}

/// Dspike's default region, r = ½.
pub const DEFAULT_DSPIKE_REGION: f32 = 0.5;

fn default_dspike_region() -> f32 {
    DEFAULT_DSPIKE_REGION
}

impl Default for Surrogate {
    fn default() -> Self {
        Self::Dspike {
            b: 3.0,
            r: DEFAULT_DSPIKE_REGION,
        }
    }
}

impl Surrogate {
    /// Short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dspike { .. } => "dspike",
            Self::Rectangle { .. } => "rectangle",
            Self::Triangle { .. } => "triangle",
            Self::Sigmoid { .. } => "sigmoid",
        }
    }

    /// Whether the parameters are finite and positive.
    pub fn is_valid(self) -> bool {
        let p = match self {
            Self::Dspike { b, r } => {
                if !(r.is_finite() && r > 0.0) {
                    return false;
                }
                b
            }
            Self::Rectangle { width } => width,
            Self::Triangle { gamma } => gamma,
            Self::Sigmoid { alpha } => alpha,
        };
        p.is_finite() && p > 0.0
    }

    /// The smooth surrogate value at x = potential − VTH, in f64.
    pub fn value_f64(self, x: f64) -> f64 {
        match self {
            Self::Dspike { b, r } => {
                let (b, r) = (f64::from(b), f64::from(r));
                (b * x.clamp(-r, r)).tanh() / (2.0 * (b * r).tanh()) + 0.5
            }
            Self::Rectangle { width } => (x / f64::from(width) + 0.5).clamp(0.0, 1.0),
            Self::Triangle { gamma } => {
                let g = f64::from(gamma);
                if x <= -g {
                    0.0
                } else if x <= 0.0 {
                    (x + g) * (x + g) / (2.0 * g * g)
                } else if x < g {
                    1.0 - (g - x) * (g - x) / (2.0 * g * g)
                } else {
                    1.0
                }
            }
            Self::Sigmoid { alpha } => sigmoid(f64::from(alpha) * x),
        }
    }

    /// The surrogate derivative g′(x), x = potential − VTH, in f64.
    pub fn derivative_f64(self, x: f64) -> f64 {
        match self {
            Self::Dspike { b, r } => {
                let (b, r) = (f64::from(b), f64::from(r));
                if x.abs() > r {
                    0.0
                } else {
                    let t = (b * x).tanh();
                    b * (1.0 - t * t) / (2.0 * (b * r).tanh())
                }
            }
            Self::Rectangle { width } => {
                let w = f64::from(width);
                if x.abs() < w / 2.0 { 1.0 / w } else { 0.0 }
            }
            Self::Triangle { gamma } => {
                let g = f64::from(gamma);
                (g - x.abs()).max(0.0) / (g * g)
            }
            Self::Sigmoid { alpha } => {
                let a = f64::from(alpha);
                let s = sigmoid(a * x);
                a * s * (1.0 - s)
            }
        }
    }

    /// [`Self::value_f64`] in f32.
    #[inline]
    pub fn value(self, x: f32) -> f32 {
        self.value_f64(f64::from(x)) as f32
    }

    /// [`Self::derivative_f64`] in f32.
    #[inline]
    pub fn derivative(self, x: f32) -> f32 {
        self.derivative_f64(f64::from(x)) as f32
    }

    /// dO/dH at potential `h`: `g′(φ(h) − VTH)·φ′(h)` with MPR, `g′(h − VTH)` without.
    pub fn spike_gradient_f64(self, h: f64, mpr: bool) -> f64 {
        let vth = f64::from(VTH);
        if mpr {
            self.derivative_f64(phi_f64(h) - vth) * phi_prime_f64(h)
        } else {
            self.derivative_f64(h - vth)
        }
    }

    /// [`Self::spike_gradient_f64`] in f32.
    #[inline]
    pub fn spike_gradient(self, h: f32, mpr: bool) -> f32 {
        self.spike_gradient_f64(f64::from(h), mpr) as f32
    }
}

/// The arithmetic the neuron dynamics need, for f32 (training and inference) and f64 (the
/// trainer's gradient checks). Implemented for `f32` and `f64` only.
pub trait Potential:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Converts (exactly for f32 and f64).
    fn of_f32(v: f32) -> Self;
}

impl Potential for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        v
    }
}

impl Potential for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        f64::from(v)
    }
}

/// How a training forward pass turns the potential into the neuron's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Firing {
    /// The real spike Θ(H − VTH), as at inference.
    Spike,
    /// The surrogate's own value `g(φ(H) − VTH)` (or `g(H − VTH)` without MPR) instead of the
    /// spike. The surrogate backward pass is then the exact derivative of the forward pass, so
    /// finite differences can check it; nothing else uses this.
    Surrogate,
}

/// BPTT through one neuron layer, per element and timestep. With g = dO/dH[t]
/// ([`Surrogate::spike_gradient`]) and the charge `H[t] = leak·U[t−1] + X[t]`:
///
/// - dL/dH[t] = dL/dO[t]·g + dL/dU[t]·(∂U/∂H + ∂U/∂O·g), where for SRIF (U = H − O)
///   ∂U/∂H = 1, ∂U/∂O = −1, and for the hard resets (U = H·(1 − O)) ∂U/∂H = 1 − O, ∂U/∂O = −H;
/// - with the reset detached (SpikingJelly's `detach_reset`) O is a constant in the reset
///   term only, so ∂U/∂O·g drops out: the factor is 1 for SRIF and 1 − O for the hard resets;
/// - dL/dX[t] = dL/dH[t] and dL/dU[t−1] = leak·dL/dH[t] (leak = τ for LIF, else 1).
impl NeuronKind {
    /// The factor of `U[t−1]` in the charge: τ for [`NeuronKind::LifHard`], else 1.
    #[inline(always)]
    pub fn leak<F: Potential>(self) -> F {
        match self {
            Self::Srif | Self::IfHard => F::ONE,
            Self::LifHard { tau } => F::of_f32(tau),
        }
    }

    /// [`Self::charge`] in any [`Potential`] type: `leak·U[t−1] + X[t]`.
    #[inline(always)]
    pub fn charge_as<F: Potential>(self, membrane: F, current: F) -> F {
        match self {
            Self::Srif | Self::IfHard => membrane + current,
            Self::LifHard { tau } => F::of_f32(tau) * membrane + current,
        }
    }

    /// The reset in its algebraic form, `H − O` (SRIF) or `H·(1 − O)` (hard resets), which is
    /// what the backward pass differentiates. For a spike of 0 or 1 and a finite potential it
    /// equals [`Self::reset`]; it also accepts the non-binary outputs of [`Firing::Surrogate`].
    #[inline(always)]
    pub fn reset_as<F: Potential>(self, potential: F, spike: F) -> F {
        match self {
            Self::Srif => potential - spike,
            Self::IfHard | Self::LifHard { .. } => potential * (F::ONE - spike),
        }
    }

    /// dL/dH[t] for one element (see the `impl` header): `potential` is H[t], `spike` O[t],
    /// `g` = dO/dH[t], `grad_spike` dL/dO[t] from the layers above, `grad_membrane` dL/dU[t]
    /// from timestep t + 1 (0 at the last step).
    #[inline(always)]
    pub fn grad_potential<F: Potential>(
        self,
        detach_reset: bool,
        potential: F,
        spike: F,
        g: F,
        grad_spike: F,
        grad_membrane: F,
    ) -> F {
        let through_reset = match (self, detach_reset) {
            (Self::Srif, false) => F::ONE - g,
            (Self::Srif, true) => F::ONE,
            (Self::IfHard | Self::LifHard { .. }, false) => F::ONE - spike - potential * g,
            (Self::IfHard | Self::LifHard { .. }, true) => F::ONE - spike,
        };
        grad_spike * g + grad_membrane * through_reset
    }
}

impl Surrogate {
    /// The output of [`Firing::Surrogate`] at potential `h`: `g(φ(h) − VTH)` with MPR,
    /// `g(h − VTH)` without.
    pub fn soft_spike_f64(self, h: f64, mpr: bool) -> f64 {
        let vth = f64::from(VTH);
        if mpr {
            self.value_f64(phi_f64(h) - vth)
        } else {
            self.value_f64(h - vth)
        }
    }

    /// [`Self::spike_gradient`] for many potentials at once, in f32, written so the compiler
    /// vectorises it: `g[i] = dO/dH(h[i])`. Dspike, with MPR or without, and the rectangle and
    /// triangle use straight-line arithmetic with a polynomial exp (relative error below 1e-6
    /// against [`Self::spike_gradient_f64`]; the tests bound it); other cases, including MPR
    /// with a surrogate whose support reaches outside φ's middle branch, go through the f64
    /// definition element by element.
    #[inline(always)]
    pub fn spike_gradients(self, mpr: bool, h: &[f32], g: &mut [f32]) {
        debug_assert_eq!(h.len(), g.len());
        let vth = VTH;
        match self {
            // With MPR and r ≤ ½, |φ(h) − ½| ≤ r needs φ(h) ∈ [0, 1], that is h ∈ [0, 1]: the
            // middle branch of φ, where φ and φ′ are tanh expressions.
            Self::Dspike { b, r } if !mpr || r <= 0.5 => {
                let scale = b / (2.0 * (f64::from(b) * f64::from(r)).tanh() as f32);
                if mpr {
                    let k = 1.0 / 1.5f64.tanh() as f32;
                    let (lo, hi) = phi_preimage(vth - r, vth + r);
                    for (gi, &hi_) in g.iter_mut().zip(h) {
                        let inside = hi_ >= lo && hi_ <= hi;
                        let u = hi_.clamp(0.0, 1.0);
                        // φ(u) = ½ + ½·k·tanh(3(u − ½)), φ′(u) = 1.5·k·sech²(3(u − ½)).
                        let (t, sech2) = tanh_sech2(3.0 * (u - 0.5));
                        let x = 0.5 * k * t;
                        let (_, sech2_x) = tanh_sech2(b * x);
                        let v = scale * sech2_x * 1.5 * k * sech2;
                        *gi = if inside { v } else { 0.0 };
                    }
                    if r >= 0.5 {
                        // φ rounds to exactly 0 (or 1) for h within ~1e-16 outside [0, 1],
                        // which the definition counts as inside: take those from it. Such h are
                        // rare, so a branch-free scan (which vectorises) looks for them first.
                        let edge = |x: f32| (x < 0.0) & (x > -1e-6) | (x > 1.0) & (x < 1.0 + 1e-6);
                        if h.iter().fold(false, |any, &x| any | edge(x)) {
                            for (gi, &hi_) in g.iter_mut().zip(h) {
                                if edge(hi_) {
                                    *gi = self.spike_gradient(hi_, mpr);
                                }
                            }
                        }
                    }
                } else {
                    for (gi, &hi_) in g.iter_mut().zip(h) {
                        let x = hi_ - vth;
                        let inside = x.abs() <= r;
                        let (_, sech2) = tanh_sech2(b * x.clamp(-r, r));
                        *gi = if inside { scale * sech2 } else { 0.0 };
                    }
                }
            }
            Self::Rectangle { width } if !mpr => {
                for (gi, &hi_) in g.iter_mut().zip(h) {
                    *gi = if (hi_ - vth).abs() < width / 2.0 {
                        1.0 / width
                    } else {
                        0.0
                    };
                }
            }
            Self::Triangle { gamma } if !mpr => {
                for (gi, &hi_) in g.iter_mut().zip(h) {
                    *gi = (gamma - (hi_ - vth).abs()).max(0.0) / (gamma * gamma);
                }
            }
            _ => {
                for (gi, &hi_) in g.iter_mut().zip(h) {
                    *gi = self.spike_gradient(hi_, mpr);
                }
            }
        }
    }
}

/// The f32 interval [a, b] ⊂ [0, 1] of the h whose φ(h), in f64, lies in [lo, hi]: the
/// support of the fast path, exact at its edges (bisection over the ordered bit patterns of
/// the non-negative f32).
fn phi_preimage(lo: f32, hi: f32) -> (f32, f32) {
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let at = |bits: u32| phi_f64(f64::from(f32::from_bits(bits)));
    let one = 1.0f32.to_bits();
    // Smallest bits with φ ≥ lo.
    let (mut l, mut r) = (0u32, one);
    while l < r {
        let m = l + (r - l) / 2;
        if at(m) >= lo { r = m } else { l = m + 1 }
    }
    let a = f32::from_bits(l);
    // Largest bits with φ ≤ hi.
    let (mut l, mut r) = (0u32, one);
    while l < r {
        let m = l + (r - l).div_ceil(2);
        if at(m) <= hi { l = m } else { r = m - 1 }
    }
    (a, f32::from_bits(l))
}

/// (tanh z, sech² z = 1 − tanh² z) in f32 from one exp, with no cancellation in sech².
#[inline(always)]
fn tanh_sech2(z: f32) -> (f32, f32) {
    // e = exp(−2|z|) ∈ (0, 1]: tanh|z| = (1 − e)/(1 + e), sech² z = 4e/(1 + e)².
    let e = exp_neg(2.0 * z.abs());
    let inv = 1.0 / (1.0 + e);
    let t = (1.0 - e) * inv;
    (if z < 0.0 { -t } else { t }, 4.0 * e * inv * inv)
}

/// exp(−x) for x ≥ 0 in f32, vectorisable: −x = n·ln 2 + f with n an integer (rounded with
/// the 1.5·2²³ trick, which needs no rounding instruction) and |f| ≤ ½·ln 2 (Cody–Waite: ln 2
/// split in a short high part and a low part, so f carries no error from the reduction), then
/// 2ⁿ from the exponent bits and eᶠ from a degree-7 Taylor polynomial (relative error below
/// 1e-6). Inputs past 87 give 0.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³
    // 355/512 exactly: few mantissa bits, so n·LN2_HI is exact for the n that occur.
    #[allow(clippy::excessive_precision)]
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let y = (-x).max(-87.0);
    let n = (y * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let f = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let v = p * scale;
    if x > 87.0 { 0.0 } else { v }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The paper's Figure 2: inputs 1.5, 1.2, 1.5, 0.9, 1.4 × VTH.
    fn figure2(kind: NeuronKind) -> Vec<f32> {
        let mut u = 0.0f32;
        [1.5f32, 1.2, 1.5, 0.9, 1.4]
            .iter()
            .map(|&k| {
                let (o, next) = kind.step(u, k * VTH);
                u = next;
                o
            })
            .collect()
    }

    #[test]
    fn figure2_srif_fires_three_times_and_hard_if_four() {
        assert_eq!(figure2(NeuronKind::Srif), vec![1.0, 0.0, 1.0, 1.0, 0.0]);
        assert_eq!(figure2(NeuronKind::IfHard), vec![1.0, 1.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn srif_keeps_the_residual() {
        let (o, u) = NeuronKind::Srif.step(0.0, 0.75);
        assert_eq!((o, u), (1.0, -0.25));
        let (o, u) = NeuronKind::Srif.step(u, 0.6);
        assert_eq!(o, 0.0);
        assert!((u - 0.35).abs() < 1e-6);
    }

    #[test]
    fn lif_decays_and_hard_resets() {
        let kind = NeuronKind::LifHard { tau: 0.25 };
        let (o, u) = kind.step(0.0, 0.4);
        assert_eq!((o, u), (0.0, 0.4));
        let (o, u) = kind.step(u, 0.3); // 0.1 + 0.3 = 0.4
        assert_eq!(o, 0.0);
        assert!((u - 0.4).abs() < 1e-6);
        let (o, u) = kind.step(u, 0.45); // 0.1 + 0.45
        assert_eq!((o, u), (1.0, 0.0));
    }

    #[test]
    fn step_all_matches_step() {
        let kinds = [
            NeuronKind::Srif,
            NeuronKind::IfHard,
            NeuronKind::LifHard { tau: 0.25 },
        ];
        for kind in kinds {
            let mut membranes = vec![0.0, 0.3, -0.2, 0.49, 1.0];
            let currents = [0.5, 0.2, 0.1, 0.0, -0.6];
            let mut spikes = vec![9.0; 5];
            let expect: Vec<(f32, f32)> = membranes
                .iter()
                .zip(&currents)
                .map(|(&u, &x)| kind.step(u, x))
                .collect();
            let n = kind.step_all(&mut membranes, &currents, &mut spikes);
            for i in 0..5 {
                assert_eq!((spikes[i], membranes[i]), expect[i]);
            }
            assert_eq!(n, expect.iter().filter(|e| e.0 == 1.0).count());
        }
    }

    #[test]
    fn phi_fixed_points_and_joins() {
        assert_eq!(phi_f64(0.0), 0.0);
        assert_eq!(phi_f64(0.5), 0.5);
        assert_eq!(phi_f64(1.0), 1.0);
        assert_eq!(phi(0.5), 0.5);
        assert_eq!(phi_f64(8.0), 2.0);
        assert_eq!(phi_f64(-7.0), -1.0);
        // Symmetry about (½, ½).
        for u in [-3.0, -0.2, 0.1, 0.3, 0.45] {
            assert!((phi_f64(1.0 - u) - (1.0 - phi_f64(u))).abs() < 1e-12);
        }
        assert!(phi_f64(f64::NAN).is_nan());
        assert_eq!(phi_f64(f64::INFINITY), f64::INFINITY);
        assert_eq!(phi_f64(f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn phi_prime_matches_finite_differences() {
        for &u in &[
            -5.0,
            -0.5,
            -1e-3,
            1e-3,
            0.2,
            0.5,
            0.8,
            1.0 - 1e-3,
            1.001,
            4.0,
        ] {
            let h = 1e-6;
            let fd = (phi_f64(u + h) - phi_f64(u - h)) / (2.0 * h);
            assert!(
                (fd - phi_prime_f64(u)).abs() < 1e-6,
                "u={u}: fd {fd} vs {}",
                phi_prime_f64(u)
            );
        }
        // The slope at ½ expands distances: 3/(2 tanh(3/2)).
        assert!((phi_prime_f64(0.5) - 1.657_187).abs() < 1e-5);
    }

    #[test]
    fn surrogate_derivatives_match_finite_differences() {
        let surrogates = [
            Surrogate::default(),
            Surrogate::Dspike { b: 3.0, r: 1.0 },
            Surrogate::Rectangle { width: 1.0 },
            Surrogate::Triangle { gamma: 1.0 },
            Surrogate::Sigmoid { alpha: 4.0 },
        ];
        for s in surrogates {
            for &x in &[-0.45, -0.3, -0.1, 0.05, 0.2, 0.42] {
                let h = 1e-6;
                let fd = (s.value_f64(x + h) - s.value_f64(x - h)) / (2.0 * h);
                assert!(
                    (fd - s.derivative_f64(x)).abs() < 1e-5,
                    "{s:?} at {x}: {fd} vs {}",
                    s.derivative_f64(x)
                );
            }
            assert!((s.value_f64(0.0) - 0.5).abs() < 1e-12, "{s:?}");
            // Each integrates to 1 over the real line.
            let n = 200_000;
            let area: f64 = (0..n)
                .map(|i| {
                    s.derivative_f64(-10.0 + 20.0 * (i as f64 + 0.5) / n as f64) * 20.0 / n as f64
                })
                .sum();
            assert!((area - 1.0).abs() < 1e-3, "{s:?} area {area}");
        }
    }

    #[test]
    fn dspike_b3_middle_is_mpr_middle() {
        let s = Surrogate::default();
        for &u in &[0.0, 0.1, 0.5, 0.77, 1.0] {
            assert!((s.value_f64(u - 0.5) - phi_f64(u)).abs() < 1e-12);
        }
    }

    #[test]
    fn mpr_reshapes_the_gradient() {
        let s = Surrogate::default();
        // At the threshold φ′ > 1 sharpens the gradient; far below, MPR damps it.
        assert!(s.spike_gradient(0.5, true) > s.spike_gradient(0.5, false));
        assert!(s.spike_gradient(0.05, true) < s.spike_gradient(0.05, false));
        assert_eq!(s.spike_gradient(-2.0, true), 0.0);
    }

    #[test]
    fn serde_forms() {
        let json = serde_json::to_string(&NeuronKind::LifHard { tau: 0.25 }).unwrap();
        assert_eq!(json, r#"{"kind":"lif_hard","tau":0.25}"#);
        let back: NeuronKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, NeuronKind::LifHard { tau: 0.25 });
        let srif: NeuronKind = serde_json::from_str(r#"{"kind":"srif"}"#).unwrap();
        assert_eq!(srif, NeuronKind::Srif);
        // Files written before the region existed read as r = ½.
        let s: Surrogate = serde_json::from_str(r#"{"kind":"dspike","b":3.0}"#).unwrap();
        assert_eq!(s, Surrogate::default());
        let wide = Surrogate::Dspike { b: 3.0, r: 1.0 };
        let json = serde_json::to_string(&wide).unwrap();
        assert_eq!(json, r#"{"kind":"dspike","b":3.0,"r":1.0}"#);
        assert_eq!(serde_json::from_str::<Surrogate>(&json).unwrap(), wide);
        assert!(!Surrogate::Dspike { b: 3.0, r: 0.0 }.is_valid());
        assert!(serde_json::from_str::<NeuronKind>(r#"{"kind":"izhikevich"}"#).is_err());
    }

    #[test]
    fn fast_spike_gradients_match_the_definition() {
        let surrogates = [
            Surrogate::default(),
            Surrogate::Dspike { b: 3.0, r: 0.3 },
            Surrogate::Dspike { b: 5.0, r: 1.0 },
            Surrogate::Rectangle { width: 1.0 },
            Surrogate::Triangle { gamma: 0.5 },
            Surrogate::Sigmoid { alpha: 4.0 },
        ];
        // A grid over [−2, 3] plus the exact edges of the supports.
        let mut h: Vec<f32> = (0..=50_000).map(|i| -2.0 + i as f32 * 1e-4).collect();
        h.extend([
            0.0,
            1.0,
            0.5,
            0.2,
            0.8,
            1.5,
            -0.5,
            0.0f32.next_down(),
            1.0f32.next_up(),
        ]);
        let mut g = vec![0.0f32; h.len()];
        for s in surrogates {
            for mpr in [false, true] {
                s.spike_gradients(mpr, &h, &mut g);
                for (&hv, &gv) in h.iter().zip(&g) {
                    let want = s.spike_gradient_f64(f64::from(hv), mpr);
                    let err = (f64::from(gv) - want).abs();
                    assert!(
                        err <= 1e-6 * want.abs().max(1.0),
                        "{s:?} mpr={mpr} h={hv}: {gv} vs {want}"
                    );
                    assert_eq!(gv == 0.0, want == 0.0, "{s:?} mpr={mpr} support at h={hv}");
                }
            }
        }
    }

    #[test]
    fn exp_neg_is_accurate() {
        for i in 0..8_700 {
            let x = i as f32 * 0.01;
            let want = (-f64::from(x)).exp();
            let got = f64::from(exp_neg(x));
            assert!(
                (got - want).abs() <= 1e-6 * want + 1e-38,
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(exp_neg(100.0), 0.0);
        assert_eq!(exp_neg(0.0), 1.0);
    }

    #[test]
    fn algebraic_forms_equal_the_inference_forms() {
        let kinds = [
            NeuronKind::Srif,
            NeuronKind::IfHard,
            NeuronKind::LifHard { tau: 0.25 },
        ];
        for kind in kinds {
            for (u, x) in [(0.0f32, 0.7f32), (0.3, 0.1), (-0.4, 0.2), (0.2, 1.9)] {
                let h = kind.charge(u, x);
                assert_eq!(kind.charge_as(u, x), h);
                let o = fire(h);
                assert_eq!(kind.reset_as(h, o), kind.reset(h, o));
                let h64 = kind.charge_as(f64::from(u), f64::from(x));
                assert!((h64 - f64::from(h)).abs() < 1e-6);
            }
        }
    }

    /// Every f32 from `lo` to `hi` (both finite, same sign), in order.
    fn each_f32(lo: f32, hi: f32, mut f: impl FnMut(f32)) {
        let mut bits = lo.to_bits();
        let end = hi.to_bits();
        loop {
            f(f32::from_bits(bits));
            if bits == end {
                break;
            }
            bits += 1;
        }
    }

    #[test]
    fn phi_f32_is_monotone_and_firing_invariant_exhaustively_near_the_threshold_and_joins() {
        // Every f32 in [0.25, 1] (2^24 values), which holds every h whose φ(h) lands near
        // the threshold, the only place rounding could move it across VTH. The property tests
        // cover all other bit patterns.
        let (lo, hi) = (0.25f32, 1.0f32);
        let mut prev = phi(lo);
        let mut check = |h: f32| {
            let p = phi(h);
            assert_eq!(p >= VTH, h >= VTH, "firing changed at {h}");
            assert!(p >= prev, "φ decreased at {h}");
            prev = p;
        };
        each_f32(lo, hi, &mut check);
        // The 2^18 f32 on each side of the joins at 0 and 1 (in bit order; for 0 that
        // is the tiniest magnitudes, where φ(h) ≈ 0.3·h must not round out of order).
        let around = |centre: f32| {
            let (mut up, mut down) = (centre, centre);
            let (mut above, mut below) = (phi(centre), phi(centre));
            for _ in 0..1 << 18 {
                up = up.next_up();
                down = down.next_down();
                let (pu, pd) = (phi(up), phi(down));
                assert!(above <= pu, "φ decreased at {up}");
                assert!(pd <= below, "φ decreased at {down}");
                (above, below) = (pu, pd);
            }
        };
        around(0.0);
        around(1.0);
    }

    proptest! {
        #[test]
        fn firing_invariance_over_all_f32(bits in any::<u32>()) {
            let h = f32::from_bits(bits);
            prop_assume!(h.is_finite());
            prop_assert_eq!(phi(h) >= VTH, h >= VTH);
            prop_assert_eq!(fire(phi(h)), fire(h));
        }

        #[test]
        fn phi_f32_is_monotone_over_all_f32(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (f32::from_bits(a), f32::from_bits(b));
            prop_assume!(a.is_finite() && b.is_finite());
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(phi(lo) <= phi(hi));
        }

        #[test]
        fn phi_is_strictly_increasing(a in -1e6f64..1e6, d in 1e-9f64..10.0) {
            prop_assert!(phi_f64(a) < phi_f64(a + d), "φ({}) !< φ({})", a, a + d);
            prop_assert!(phi_prime_f64(a) > 0.0);
        }

        #[test]
        fn phi_is_continuous_at_the_joins(e in 1e-12f64..1e-4) {
            // |φ(j ± e) − φ(j)| shrinks with e: the slope is below 1/3 + a margin.
            for j in [0.0f64, 1.0] {
                prop_assert!((phi_f64(j + e) - phi_f64(j)).abs() <= 0.34 * e + 1e-15);
                prop_assert!((phi_f64(j - e) - phi_f64(j)).abs() <= 0.34 * e + 1e-15);
            }
        }

        #[test]
        fn phi_approaches_the_nearest_spike_value(u in -1e6f64..1e6) {
            let o = if u <= 0.5 { 0.0 } else { 1.0 };
            let p = phi_f64(u);
            // Between o and u, inclusive: moved toward o, never past it.
            prop_assert!((p - o) * (u - o) >= 0.0, "overshoot at {}", u);
            prop_assert!((p - o).abs() <= (u - o).abs() + 1e-15, "pushed away at {}", u);
        }

        #[test]
        fn surrogates_are_monotone_and_bounded(x in -3.0f64..3.0, d in 1e-6f64..1.0) {
            for s in [
                Surrogate::default(),
                Surrogate::Rectangle { width: 1.0 },
                Surrogate::Triangle { gamma: 0.5 },
                Surrogate::Sigmoid { alpha: 4.0 },
            ] {
                let (v0, v1) = (s.value_f64(x), s.value_f64(x + d));
                prop_assert!((0.0..=1.0).contains(&v0));
                prop_assert!(v0 <= v1 + 1e-15);
                prop_assert!(s.derivative_f64(x) >= 0.0);
            }
        }
    }
}
