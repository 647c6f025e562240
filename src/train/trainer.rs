//! One training run's state: the network, the optimiser and the hyper-parameters, with the
//! training step (augment, forward, loss, backward, update) and the evaluation pass.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::train::augment::{self, Transform};
use crate::train::graph::TrainOp;
use crate::train::loss::{Loss, predictions};
use crate::train::net::{Mode, Net, Tape};
use crate::train::optim::{Optimizer, OptimizerKind, Schedule};

/// Every hyper-parameter of a run (all recorded in the exported model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Samples per step.
    pub batch: usize,
    /// Epochs (the cosine schedule's T_max).
    pub epochs: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Coupled L2 weight decay on conv and linear weights.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the initialisation, the order and the augmentation.
    pub seed: u64,
    /// Flip and roll.
    pub augment: bool,
    /// With `augment`, whether the flip is part of it (off for data that is not mirror
    /// symmetric, such as digits). The draws are the same either way; only the flip is
    /// dropped, so the rolls do not change.
    #[serde(default = "yes")]
    pub flip: bool,
    /// Shuffle the training set each epoch.
    pub shuffle: bool,
    /// Loss.
    pub loss: Loss,
    /// Stop each epoch after this many steps.
    pub max_steps: Option<usize>,
}

impl Default for TrainConfig {
    /// The paper's recipe: SGD 0.01 with momentum 0.9, cosine, weight decay 5e-4 (the
    /// InfLoR / TET CIFAR10-DVS code's value), batch 16, augmentation and shuffling on,
    /// cross-entropy on the mean output.
    fn default() -> Self {
        Self {
            batch: 16,
            epochs: 100,
            lr: 0.01,
            optimizer: OptimizerKind::Sgd { momentum: 0.9 },
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            seed: 0,
            augment: true,
            flip: true,
            shuffle: true,
            loss: Loss::Ce,
            max_steps: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The loss.
    pub loss: f64,
    /// Correct top-1 predictions in the batch.
    pub correct: usize,
    /// Samples in the batch.
    pub samples: usize,
    /// Per neuron node: (node index, fraction of outputs that spiked).
    pub firing: Vec<(usize, f64)>,
}

/// A run in progress.
#[derive(Debug, Clone)]
pub struct Trainer {
    /// The network.
    pub net: Net<f32>,
    /// The optimiser (with its state).
    pub optimizer: Optimizer,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Timesteps per sample.
    pub timesteps: usize,
    /// Scratch for the NHWC batch.
    input: Vec<f32>,
}

impl Trainer {
    /// A run of `net` with `config`, `timesteps` frames per sample.
    pub fn new(net: Net<f32>, config: TrainConfig, timesteps: usize) -> Self {
        let optimizer = Optimizer::new(config.optimizer, config.weight_decay, net.params.len());
        Self {
            net,
            optimizer,
            config,
            timesteps,
            input: Vec::new(),
        }
    }

    /// The learning rate of `epoch`.
    pub fn rate(&self, epoch: usize) -> f64 {
        self.config
            .schedule
            .rate(self.config.lr, epoch, self.config.epochs)
    }

    /// The order in which epoch `epoch` visits `n` training samples: 0..n, shuffled
    /// (Fisher–Yates, ChaCha8 seeded with the run seed on stream `epoch + 1`) unless
    /// shuffling is off.
    pub fn order(&self, n: usize, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(epoch as u64 + 1);
            order.shuffle(&mut rng);
        }
        order
    }

    /// The transforms of a batch (none without augmentation).
    pub fn transforms(&self, epoch: usize, step: usize, batch: usize) -> Vec<Transform> {
        if self.config.augment {
            let mut t = augment::draw(self.config.seed, epoch, step, batch);
            if !self.config.flip {
                t.iter_mut().for_each(|t| t.flip = false);
            }
            t
        } else {
            Vec::new()
        }
    }

    fn load(&mut self, frames: &[f32], batch: usize, transforms: &[Transform]) {
        let s = self.net.graph().input_shape();
        let t = self.timesteps;
        self.input.resize(t * batch * s.len(), 0.0);
        augment::to_nhwc(
            frames,
            (t, batch, s.channels, s.height, s.width),
            transforms,
            &mut self.input,
        );
    }

    /// One training step on `frames` (`[T][B][C][H][W]`, the binner's layout) with `labels`,
    /// at learning rate `lr`, each sample moved by its transform.
    pub fn step(
        &mut self,
        frames: &[f32],
        labels: &[usize],
        transforms: &[Transform],
        lr: f64,
    ) -> StepStats {
        let batch = labels.len();
        self.load(frames, batch, transforms);
        let input = std::mem::take(&mut self.input);
        let tape = self.net.forward(&input, self.timesteps, batch, Mode::Train);
        self.input = input;
        let stats = self.measure(&tape, labels);
        let out: Vec<f64> = tape.outputs().iter().map(|&v| f64::from(v)).collect();
        let loss = self.config.loss.evaluate(&out, self.timesteps, labels);
        let grad: Vec<f32> = loss.grad.iter().map(|&v| v as f32).collect();
        self.net.zero_grad();
        self.net.backward(tape, grad);
        let params = self
            .net
            .params
            .iter_mut()
            .map(|p| (&mut p.value[..], &p.grad[..], p.decays));
        self.optimizer.step(lr, params);
        StepStats {
            loss: loss.loss,
            ..stats
        }
    }

    /// The logits (`[B][C]`) of `frames` in evaluation mode (running statistics, no
    /// augmentation), with the step statistics (loss by the run's loss).
    pub fn evaluate(&mut self, frames: &[f32], labels: &[usize]) -> (Vec<f32>, StepStats) {
        let batch = labels.len();
        self.load(frames, batch, &[]);
        let input = std::mem::take(&mut self.input);
        let tape = self.net.forward(&input, self.timesteps, batch, Mode::Eval);
        self.input = input;
        let stats = self.measure(&tape, labels);
        let out: Vec<f64> = tape.outputs().iter().map(|&v| f64::from(v)).collect();
        let loss = self.config.loss.evaluate(&out, self.timesteps, labels);
        let logits = tape.logits();
        self.net.recycle(tape);
        (
            logits,
            StepStats {
                loss: loss.loss,
                ..stats
            },
        )
    }

    fn measure(&self, tape: &Tape<f32>, labels: &[usize]) -> StepStats {
        let logits: Vec<f64> = tape.logits().iter().map(|&v| f64::from(v)).collect();
        let classes = self.net.graph().classes();
        let correct = predictions(&logits, classes)
            .iter()
            .zip(labels)
            .filter(|(p, y)| p == y)
            .count();
        let graph = self.net.graph();
        let frames = self.timesteps * labels.len();
        let firing = graph
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, TrainOp::Neuron(_)))
            .map(|(i, _)| {
                (
                    i,
                    tape.spikes[i] as f64 / (frames * graph.shape(i).len()) as f64,
                )
            })
            .collect();
        StepStats {
            loss: 0.0,
            correct,
            samples: labels.len(),
            firing,
        }
    }
}
