//! Losses on the per-timestep outputs `[T][B][C]`, with their gradients.
//!
//! - Cross-entropy on the logits, the mean over T of the outputs (the default):
//!   `L = mean_b CE(mean_t out[t][b], y_b)`.
//! - TET (Deng et al. 2022, the authors' `TET_loss`):
//!   `L = (1 − λ)·mean_t mean_b CE(out[t][b], y_b) + λ·mean_{t,b,c} (out[t][b][c] − 1)²`,
//!   λ = 10⁻³, where out[t] is the output of timestep t, not its running sum.

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loss {
    /// Cross-entropy on the mean over T.
    Ce,
    /// TET with MSE weight `lambda`.
    Tet {
        /// Weight of the MSE term (10⁻³ by default).
        lambda: f64,
    },
}

/// TET's default λ.
pub const TET_LAMBDA: f64 = 1e-3;

/// Softmax cross-entropy of one row of logits; writes softmax − onehot·1 into `grad` scaled
/// by `scale`, returns the loss.
fn ce_row(logits: &[f64], label: usize, scale: f64, grad: &mut [f64]) -> f64 {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
    let log_sum = sum.ln() + max;
    for (c, (g, v)) in grad.iter_mut().zip(logits).enumerate() {
        let p = (v - log_sum).exp();
        *g += scale * (p - if c == label { 1.0 } else { 0.0 });
    }
    log_sum - logits[label]
}

/// The loss of a batch and its gradient with respect to each per-timestep output.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The loss.
    pub loss: f64,
    /// dL/d out, `[T][B][C]`.
    pub grad: Vec<f64>,
    /// The logits (mean over T), `[B][C]`.
    pub logits: Vec<f64>,
}

impl Loss {
    /// Evaluates the loss on `out` (`[T][B][C]`) with `labels` (`[B]`).
    pub fn evaluate(self, out: &[f64], timesteps: usize, labels: &[usize]) -> LossOutput {
        let b = labels.len();
        let c = out.len() / (timesteps * b);
        let mut logits = vec![0.0; b * c];
        for t in 0..timesteps {
            for (l, v) in logits.iter_mut().zip(&out[t * b * c..][..b * c]) {
                *l += v / timesteps as f64;
            }
        }
        let mut grad = vec![0.0; out.len()];
        let loss = match self {
            Loss::Ce => {
                let mut g = vec![0.0; b * c];
                let mut loss = 0.0;
                for (i, &y) in labels.iter().enumerate() {
                    loss += ce_row(
                        &logits[i * c..][..c],
                        y,
                        1.0 / b as f64,
                        &mut g[i * c..][..c],
                    );
                }
                for t in 0..timesteps {
                    for (dst, src) in grad[t * b * c..][..b * c].iter_mut().zip(&g) {
                        *dst = src / timesteps as f64;
                    }
                }
                loss / b as f64
            }
            Loss::Tet { lambda } => {
                let n = (timesteps * b) as f64;
                let mut ce = 0.0;
                for t in 0..timesteps {
                    for (i, &y) in labels.iter().enumerate() {
                        let at = (t * b + i) * c;
                        ce += ce_row(&out[at..][..c], y, (1.0 - lambda) / n, &mut grad[at..][..c]);
                    }
                }
                let m = out.len() as f64;
                let mut mse = 0.0;
                for (g, v) in grad.iter_mut().zip(out) {
                    mse += (v - 1.0) * (v - 1.0);
                    *g += lambda * 2.0 * (v - 1.0) / m;
                }
                (1.0 - lambda) * ce / n + lambda * mse / m
            }
        };
        LossOutput { loss, grad, logits }
    }
}

/// The predicted class of each row of `[B][C]` logits (the first maximum).
pub fn predictions(logits: &[f64], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(loss: Loss) {
        let (t, b, c) = (3, 2, 4);
        let out: Vec<f64> = (0..t * b * c)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.3)
            .collect();
        let labels = [1, 3];
        let base = loss.evaluate(&out, t, &labels);
        for i in 0..out.len() {
            let eps = 1e-6;
            let mut p = out.clone();
            p[i] += eps;
            let mut m = out.clone();
            m[i] -= eps;
            let fd = (loss.evaluate(&p, t, &labels).loss - loss.evaluate(&m, t, &labels).loss)
                / (2.0 * eps);
            assert!(
                (fd - base.grad[i]).abs() < 1e-8,
                "{loss:?} {i}: {fd} vs {}",
                base.grad[i]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(Loss::Ce);
        check(Loss::Tet { lambda: TET_LAMBDA });
        check(Loss::Tet { lambda: 0.3 });
    }

    #[test]
    fn tet_without_mse_is_the_mean_of_per_step_ce() {
        let out = vec![0.0, 1.0, 2.0, 1.0];
        let tet = Loss::Tet { lambda: 0.0 }.evaluate(&out, 2, &[0]).loss;
        let ce = |a: f64, b: f64| (a.exp() + b.exp()).ln() - a;
        assert!((tet - (ce(0.0, 1.0) + ce(2.0, 1.0)) / 2.0).abs() < 1e-12);
        assert_eq!(predictions(&[0.1, 0.5, 0.5, -1.0, 2.0, 0.0], 3), vec![1, 1]);
    }
}
