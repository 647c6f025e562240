//! Optimisers and learning-rate schedules, matching `torch.optim` step for step.
//!
//! - SGD (`torch.optim.SGD`, dampening 0, not Nesterov): `d = grad + wd·p`;
//!   `buf = d` on the first step, then `buf = μ·buf + d`; `p −= lr·buf`.
//! - Adam (`torch.optim.Adam`, not AMSGrad): `d = grad + wd·p`; `m = β₁m + (1 − β₁)d`;
//!   `v = β₂v + (1 − β₂)d²`; `p −= (lr/(1 − β₁ᵗ))·m/(√v/√(1 − β₂ᵗ) + ε)`.
//! - Weight decay is coupled L2 (added to the gradient), on conv and linear weights only:
//!   never on biases or batch-norm parameters.
//! - Cosine: `CosineAnnealingLR(T_max = epochs, η_min = 0)` stepped once per epoch, in its
//!   closed form `lr_e = lr·(1 + cos(π·e/epochs))/2` for epoch e = 0, 1, …

use serde::{Deserialize, Serialize};

use crate::train::real::Real;

/// Which optimiser, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with momentum.
    Sgd {
        /// Momentum μ (0.9 in the paper).
        momentum: f64,
    },
    /// Adam.
    Adam {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
    },
}

impl OptimizerKind {
    /// Adam with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub const ADAM: Self = OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
}

/// How the learning rate changes over epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine annealing to 0 over the run's epochs.
    Cosine,
    /// The same rate throughout.
    Constant,
}

impl Schedule {
    /// The learning rate of epoch `epoch` (0-based) of `epochs`.
    pub fn rate(self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Cosine => {
                base * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos())
                    / 2.0
            }
            Schedule::Constant => base,
        }
    }
}

/// Per-parameter optimiser state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlotState {
    /// SGD momentum buffer, or Adam's first moment.
    pub first: Vec<f32>,
    /// Adam's second moment.
    pub second: Vec<f32>,
}

/// An optimiser over a list of parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Optimizer {
    /// Which one.
    pub kind: OptimizerKind,
    /// Coupled L2 weight decay on the parameters marked for it.
    pub weight_decay: f64,
    /// Steps taken.
    pub steps: u64,
    /// One slot per parameter.
    pub slots: Vec<SlotState>,
}

impl Optimizer {
    /// A fresh optimiser for `count` parameters.
    pub fn new(kind: OptimizerKind, weight_decay: f64, count: usize) -> Self {
        Self {
            kind,
            weight_decay,
            steps: 0,
            slots: vec![SlotState::default(); count],
        }
    }

    /// One step with learning rate `lr`. `params` yields (value, gradient, decays) per
    /// parameter in the order the optimiser was made for.
    pub fn step<'a, R: Real>(
        &mut self,
        lr: f64,
        params: impl Iterator<Item = (&'a mut [R], &'a [R], bool)>,
    ) {
        self.steps += 1;
        let t = self.steps as i32;
        for ((value, grad, decays), slot) in params.zip(self.slots.iter_mut()) {
            let wd = if decays { self.weight_decay } else { 0.0 };
            match self.kind {
                OptimizerKind::Sgd { momentum } => {
                    let first = slot.first.is_empty();
                    if first {
                        slot.first = vec![0.0; value.len()];
                    }
                    for ((p, g), b) in value.iter_mut().zip(grad).zip(slot.first.iter_mut()) {
                        let pv = p.to_f64();
                        let d = g.to_f64() + wd * pv;
                        // torch: the first step (or no momentum) takes the gradient as is.
                        let buf = if momentum == 0.0 || first {
                            d
                        } else {
                            momentum * f64::from(*b) + d
                        };
                        *b = buf as f32;
                        *p = R::of_f64(pv - lr * buf);
                    }
                }
                OptimizerKind::Adam { beta1, beta2, eps } => {
                    if slot.first.is_empty() {
                        slot.first = vec![0.0; value.len()];
                        slot.second = vec![0.0; value.len()];
                    }
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let step = lr / bc1;
                    let bc2_sqrt = bc2.sqrt();
                    for (((p, g), m), v) in value
                        .iter_mut()
                        .zip(grad)
                        .zip(slot.first.iter_mut())
                        .zip(slot.second.iter_mut())
                    {
                        let pv = p.to_f64();
                        let d = g.to_f64() + wd * pv;
                        let mn = beta1 * f64::from(*m) + (1.0 - beta1) * d;
                        let vn = beta2 * f64::from(*v) + (1.0 - beta2) * d * d;
                        *m = mn as f32;
                        *v = vn as f32;
                        *p = R::of_f64(pv - step * mn / (vn.sqrt() / bc2_sqrt + eps));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_matches_torch_recurrence() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5) on p = 1 with grads
        // 1, 2: buf1 = 1 + 0.5 = 1.5, p = 0.85; buf2 = 0.9·1.5 + (2 + 0.425) = 3.775,
        // p = 0.85 − 0.3775 = 0.4725.
        let mut opt = Optimizer::new(OptimizerKind::Sgd { momentum: 0.9 }, 0.5, 1);
        let mut p = [1.0f64];
        opt.step(0.1, std::iter::once((&mut p[..], &[1.0][..], true)));
        assert!((p[0] - 0.85).abs() < 1e-7);
        opt.step(0.1, std::iter::once((&mut p[..], &[2.0][..], true)));
        assert!((p[0] - 0.4725).abs() < 1e-7);
        // No decay on a parameter that is not marked for it.
        let mut opt = Optimizer::new(OptimizerKind::Sgd { momentum: 0.0 }, 0.5, 1);
        let mut b = [1.0f64];
        opt.step(0.1, std::iter::once((&mut b[..], &[1.0][..], false)));
        assert!((b[0] - 0.9).abs() < 1e-12);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // Adam's first step is lr·g/(|g| + ε·…) ≈ lr·sign(g).
        let mut opt = Optimizer::new(OptimizerKind::ADAM, 0.0, 1);
        let mut p = vec![0.5f64, -0.5];
        opt.step(0.01, std::iter::once((&mut p[..], &[3.0, -0.2][..], true)));
        assert!(
            (p[0] - 0.49).abs() < 1e-6 && (p[1] + 0.49).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn cosine_schedule() {
        assert_eq!(Schedule::Cosine.rate(0.01, 0, 10), 0.01);
        assert!((Schedule::Cosine.rate(0.01, 5, 10) - 0.005).abs() < 1e-12);
        assert!(Schedule::Cosine.rate(0.01, 10, 10).abs() < 1e-12);
        assert_eq!(Schedule::Constant.rate(0.01, 7, 10), 0.01);
    }
}
