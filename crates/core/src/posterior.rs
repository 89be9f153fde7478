//! Posterior maths of the adaptive models: one Bayesian logistic regression
//! per offer with a Gaussian posterior, folded one example at a time.
//!
//! # The model
//! One Bayesian logistic regression per offer over the features of
//! [`crate::features`] (plus an intercept), with a Gaussian posterior
//! N(m, Σ). Each labelled example is folded in with the Laplace update of
//! Chapelle & Li (2011, "An Empirical Evaluation of Thompson Sampling",
//! algorithm 3) applied to one example at a time: the new mean is the mode
//! of prior × likelihood, which for a single example lies on the line
//! m + α·Σ·x, so the mode is a one-dimensional Newton solve (exact, no step
//! size); the precision then adds the curvature at the mode, p(1 − p)·x·xᵀ.
//! Chapelle & Li keep Σ diagonal; here it is full (see [`Posterior`] for why).
//!
//! # Delayed rewards without timers
//! An accept can come days after a decision. Waiting for the attribution
//! window to close before counting a non-accept as a negative would leave the
//! model fed with positives only for weeks. Instead every offer shown counts
//! as a negative at once, and an accept adds a positive copy of the same
//! example later ("fake negatives", Ktena et al. 2019). The model then learns
//! p_b = p / (1 + p), whose log-odds are exactly ln p, so the accept
//! probability is read back as p = e^z (capped at 1). For small p, ln p is
//! close to the log-odds of p, so the shipped model's coefficients are used
//! as the prior mean unchanged. Everything is driven by log records alone, so
//! replay rebuilds the same posteriors.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::features::{FeatureVector, N_FEATURES};

/// Parameters per offer model: intercept + features.
pub const DIM: usize = N_FEATURES + 1;

/// Logistic function in f64.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The posterior of one offer's model: N(mean, cov) over the intercept and
/// the feature weights.
///
/// The covariance is full rather than diagonal: the features are correlated
/// and on different scales (tier flags, log spend, distance), and with a
/// diagonal posterior the simulation in `tests/learning_simulation.rs`
/// plateaued well below the offline model's AUC. A single example changes
/// the precision by a rank-one term, so the covariance update is a
/// Sherman–Morrison step: O(DIM²) = 729 multiply-adds per example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Posterior {
    /// Mean: intercept first, then one weight per feature.
    pub mean: [f64; DIM],
    /// Covariance, row-major DIM × DIM.
    pub cov: Vec<f64>,
    /// Examples folded in (each shown offer and each accept counts one).
    pub examples: u64,
    /// Accepts folded in.
    pub accepts: u64,
}

/// a·b with four partial sums (independent chains the CPU overlaps).
#[inline(always)]
fn dot(a: &[f64; DIM], b: &[f64; DIM]) -> f64 {
    let mut acc = [0.0; 4];
    let (ha, ta) = a.split_at(DIM / 4 * 4);
    let (hb, tb) = b.split_at(DIM / 4 * 4);
    for (ca, cb) in ha.chunks_exact(4).zip(hb.chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let tail: f64 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `[1, x...]`: the intercept's input, then the features.
#[inline(always)]
fn augmented(x: &FeatureVector) -> [f64; DIM] {
    let mut a = [1.0; DIM];
    for (v, f) in a[1..].iter_mut().zip(x) {
        *v = *f as f64;
    }
    a
}

impl Posterior {
    /// A prior with mean `bias`/`weights` and variance `variance` on every
    /// parameter, independent a priori.
    pub fn prior(bias: f64, weights: &[f64], variance: f64) -> Posterior {
        let mut mean = [0.0; DIM];
        mean[0] = bias;
        for (m, w) in mean[1..].iter_mut().zip(weights) {
            *m = *w;
        }
        let mut cov = vec![0.0; DIM * DIM];
        for i in 0..DIM {
            cov[i * DIM + i] = variance.max(1e-9);
        }
        Posterior {
            mean,
            cov,
            examples: 0,
            accepts: 0,
        }
    }

    /// A flat prior: accept probability about 1%, no feature effects.
    pub fn flat(variance: f64) -> Posterior {
        Posterior::prior(-4.6, &[], variance)
    }

    /// Mean of the log-odds for `x`.
    #[inline]
    pub fn mean_logit(&self, x: &FeatureVector) -> f64 {
        dot(&self.mean, &augmented(x))
    }

    /// Σ·a for the augmented input `a`. Σ is symmetric (kept exactly so by
    /// [`Posterior::update`]), so Σ·a is the sum of Σ's rows scaled by `a`:
    /// element-wise work the compiler vectorizes, where 27 dot products are
    /// 27 serial chains of additions (0.58 against 0.49 µs an update,
    /// `cargo bench --bench learning`, side by side).
    #[inline(always)]
    fn cov_times(&self, a: &[f64; DIM]) -> [f64; DIM] {
        let mut v = [0.0; DIM];
        for (row, aj) in self.cov.chunks_exact(DIM).zip(a) {
            for (vi, c) in v.iter_mut().zip(row) {
                *vi += c * aj;
            }
        }
        v
    }

    /// Variance of the log-odds for `x`.
    #[inline]
    pub fn var_logit(&self, x: &FeatureVector) -> f64 {
        let a = augmented(x);
        let v = self.cov_times(&a);
        dot(&v, &a).max(0.0)
    }

    /// Mean and standard deviation of the log-odds for `x` (what a
    /// Thompson draw needs; computed once per offer and decision).
    #[inline]
    pub fn logit_moments(&self, x: &FeatureVector) -> (f64, f64) {
        (self.mean_logit(x), self.var_logit(x).sqrt())
    }

    /// Folds in one example: `accepted` is the label.
    ///
    /// Where the CPU has AVX2 the same code runs compiled for it: the two
    /// DIM × DIM passes (Σ·a and the rank-one downdate) are element-wise
    /// multiplies and adds, four lanes at a time instead of two, about half
    /// the instructions (callgrind). The numbers are the same bit for bit:
    /// each element sees the same operations in the same order (Rust never
    /// reorders float arithmetic nor fuses a multiply and an add unless
    /// asked), so replicas with and without AVX2 rebuild the same
    /// posteriors (`update_is_the_same_with_and_without_avx2`).
    pub fn update(&mut self, x: &FeatureVector, accepted: bool) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present, checked just above.
            unsafe { self.update_avx2(x, accepted) };
            return;
        }
        self.update_portable(x, accepted);
    }

    /// [`Posterior::update`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn update_avx2(&mut self, x: &FeatureVector, accepted: bool) {
        self.update_portable(x, accepted);
    }

    /// [`Posterior::update`] for any CPU (inlined into the AVX2 build).
    #[inline(always)]
    fn update_portable(&mut self, x: &FeatureVector, accepted: bool) {
        if self.cov.len() != DIM * DIM {
            return;
        }
        let y = accepted as u8 as f64;
        let a = augmented(x);
        let z0 = dot(&self.mean, &a);
        let v = self.cov_times(&a);
        let s = dot(&v, &a).max(0.0);
        // The mode of prior × likelihood is m + α·Σ·a with α solving
        // α = y − σ(z0 + α s); g(α) = α − y + σ(z0 + α s) is increasing, so
        // Newton converges.
        let mut alpha = 0.0;
        for _ in 0..50 {
            let p = sigmoid(z0 + alpha * s);
            let step = (alpha - y + p) / (1.0 + s * p * (1.0 - p));
            alpha -= step;
            if step.abs() < 1e-12 {
                break;
            }
        }
        if !alpha.is_finite() {
            return;
        }
        let p = sigmoid(z0 + alpha * s);
        let c = p * (1.0 - p);
        for (m, vi) in self.mean.iter_mut().zip(&v) {
            *m += alpha * vi;
        }
        // Precision + c·a·aᵀ, i.e. Σ − (c / (1 + c s))·v·vᵀ = Σ − w·wᵀ with
        // w = √(c / (1 + c s))·v: w_i·w_j and w_j·w_i are the same product,
        // so Σ stays exactly symmetric.
        let r = (c / (1.0 + c * s)).sqrt();
        let w = v.map(|vi| r * vi);
        for (row, wi) in self.cov.chunks_exact_mut(DIM).zip(&w) {
            for (c, wj) in row.iter_mut().zip(&w) {
                *c -= wi * wj;
            }
        }
        self.examples += 1;
        self.accepts += accepted as u64;
    }

    /// Accept probability at the posterior mean (see the module notes on
    /// fake negatives: p = e^z, capped).
    #[inline]
    pub fn mean_probability(&self, x: &FeatureVector) -> f64 {
        self.mean_logit(x).exp().min(1.0)
    }

    /// One Thompson draw of the accept probability: the log-odds of one
    /// offer are Gaussian under the posterior, so drawing them directly is
    /// the same as drawing the weights and scoring.
    #[inline]
    pub fn sample_probability<R: Rng>(&self, x: &FeatureVector, rng: &mut R) -> f64 {
        let (mu, sd) = self.logit_moments(x);
        draw_probability(mu, sd, rng)
    }
}

/// A draw of p = e^z (capped at 1) with z ~ N(mu, sd²).
#[inline]
pub fn draw_probability<R: Rng>(mu: f64, sd: f64, rng: &mut R) -> f64 {
    (mu + sd * standard_normal(rng)).exp().min(1.0)
}

/// A standard normal draw (Box–Muller; avoids a distribution object per call).
#[inline]
pub fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Learning settings (`[learning]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnSettings {
    /// Whether outcomes update the adaptive models.
    pub enabled: bool,
    /// Examples an offer's model needs before its own estimate is trusted;
    /// until then the shipped model scores (Thompson samples the prior,
    /// which is centred on the shipped model).
    pub min_evidence: u64,
    /// Prior variance of every parameter around the shipped coefficients.
    pub prior_variance: f64,
    /// Days after a decision within which an accept still teaches the model.
    pub attribution_window_days: u32,
    /// Most decisions remembered for delayed rewards.
    pub max_remembered: u64,
    /// Monte Carlo draws for Thompson propensities.
    pub thompson_draws: usize,
}

impl Default for LearnSettings {
    fn default() -> Self {
        LearnSettings {
            enabled: true,
            min_evidence: 200,
            prior_variance: 0.25,
            attribution_window_days: 30,
            max_remembered: 2_000_000,
            thompson_draws: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(p: &Posterior) -> (Vec<u64>, Vec<u64>, u64, u64) {
        (
            p.mean.iter().map(|v| v.to_bits()).collect(),
            p.cov.iter().map(|v| v.to_bits()).collect(),
            p.examples,
            p.accepts,
        )
    }

    proptest! {
        /// The AVX2 build of the update gives the portable build's numbers
        /// bit for bit, over sequences of examples (features on the scales
        /// the model sees: flags, log spend, distances).
        #[test]
        fn update_is_the_same_with_and_without_avx2(
            bias in -8.0f64..2.0,
            weights in proptest::collection::vec(-2.0f64..2.0, N_FEATURES),
            variance in 0.001f64..4.0,
            examples in proptest::collection::vec(
                (proptest::collection::vec(-50.0f32..5000.0, N_FEATURES), any::<bool>()),
                1..40,
            ),
        ) {
            #[cfg(target_arch = "x86_64")]
            {
                if !std::arch::is_x86_feature_detected!("avx2") {
                    return Ok(());
                }
                let mut portable = Posterior::prior(bias, &weights, variance);
                let mut avx2 = portable.clone();
                for (x, y) in &examples {
                    let mut f = [0f32; N_FEATURES];
                    f.copy_from_slice(x);
                    portable.update_portable(&f, *y);
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2.update_avx2(&f, *y) };
                    prop_assert_eq!(bits(&portable), bits(&avx2));
                }
                // And `update` (which picks the AVX2 build here) agrees.
                let mut picked = Posterior::prior(bias, &weights, variance);
                for (x, y) in &examples {
                    let mut f = [0f32; N_FEATURES];
                    f.copy_from_slice(x);
                    picked.update(&f, *y);
                }
                prop_assert_eq!(bits(&picked), bits(&portable));
            }
        }
    }
}
