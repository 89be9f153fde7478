//! Off-policy evaluation: how would a candidate policy have done on traffic
//! that another (logging) policy served? Pure estimators over plain data; the
//! `evaluate` command ([`crate::evaluate_cli`]) parses logs into
//! [`RoundTerms`] and prints the [`Evaluation`].
//!
//! # Estimators
//! Each logged round `i` showed action `a_i` at a position, drawn by the
//! logging policy with probability `p_i = π_b(a_i | x_i)`, and observed
//! reward `r_i`. The candidate (target) policy would have shown it with
//! probability `π_e(a_i | x_i)`; the importance weight is
//! `w_i = π_e(a_i | x_i) / p_i`. With a reward model `q̂(x, a)`:
//! - IPS: `V = mean(w_i r_i)`;
//! - SNIPS: `V = Σ w_i r_i / Σ w_i` (self-normalised: bounded by the rewards,
//!   slightly biased, usually far less variable when weights are large);
//! - DR: `V = mean(q̂(x_i, π_e) + w_i (r_i − q̂(x_i, a_i)))`, where
//!   `q̂(x, π_e) = Σ_a π_e(a|x) q̂(x, a) / Σ_a π_e(a|x)`. Unbiased when either
//!   the propensities or the reward model are right; narrower than IPS when
//!   `q̂` explains part of the reward. With no reward model (`q̂ = 0`) it is IPS.
//!
//! These are the definitions of Open Bandit Pipeline 0.4 (`obp.ope`
//! `InverseProbabilityWeighting`, `SelfNormalizedInverseProbabilityWeighting`,
//! `DoublyRobust`, no clipping); `tests/ope_fixtures.rs` checks agreement to
//! 1e-6. Positions are treated as OBP does: each (round, position) is one
//! logged round and the target distribution is the one at that position.
//!
//! # Intervals
//! IPS and DR are means of independent per-round terms, so their interval is
//! the normal one, `V ± z·s/√n` with `s` the sample standard deviation
//! (n − 1). SNIPS is a ratio of two means; its interval comes from the delta
//! method: the linearised term `ψ_i = (w_i r_i − V w_i) / mean(w)` has mean
//! zero and `se = sd(ψ)/√n`. (OBP's own intervals are bootstrap resamples
//! and are not compared.) `tests/ope_simulation.rs` checks the coverage of all
//! three against the synthetic world's ground truth.
//!
//! # Diagnostics
//! The effective sample size `ESS = (Σw)² / Σw²` says how many rounds the
//! estimate is really worth. The report warns when the candidate puts weight
//! where the logging policy rarely went: any weight above
//! [`EvaluateOptions::weight_threshold`] (default 50, i.e. the logging
//! policy showed that action at most 1/50 as often as the candidate would),
//! or `ESS / rounds` below [`EvaluateOptions::min_ess_ratio`] (default 0.1).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Errors of off-policy evaluation (all about the input: estimators on valid
/// input cannot fail).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpeError {
    /// No logged rounds.
    #[error("no logged rounds to evaluate")]
    NoRounds,
    /// A logging propensity outside (0, 1].
    #[error("propensity must be in (0, 1], got {0}")]
    Propensity(f64),
    /// A target probability outside [0, 1].
    #[error("target probability of {action:?} must be in [0, 1], got {prob}")]
    TargetProbability {
        /// The action.
        action: String,
        /// Its probability.
        prob: f64,
    },
    /// Target probabilities that do not sum to 1.
    #[error("target probabilities must sum to 1 (within 1e-6), they sum to {0}")]
    TargetSum(f64),
    /// A reward or reward estimate that is not a finite number.
    #[error("{0} must be a finite number")]
    NotFinite(&'static str),
    /// A confidence level outside (0, 1).
    #[error("confidence must be in (0, 1), got {0}")]
    Confidence(f64),
}

/// What the estimators need from one logged round (one action at one
/// position), reduced from the full distributions when the log is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTerms {
    /// Observed reward `r_i`.
    pub reward: f64,
    /// Logging policy's probability of the logged action, `π_b(a_i|x_i)`.
    pub propensity: f64,
    /// Target policy's probability of the logged action, `π_e(a_i|x_i)`.
    pub target_prob: f64,
    /// Reward model at the logged action, `q̂(x_i, a_i)` (0 without a model).
    pub estimate_logged: f64,
    /// Reward model averaged over the target policy, `q̂(x_i, π_e)`.
    pub estimate_target: f64,
}

impl RoundTerms {
    /// Reduces one logged round: `target` is the candidate's distribution over
    /// actions at this position (must sum to 1), `estimate(action)` the reward
    /// model (None: no model, taken as 0 so that DR is IPS for this round).
    pub fn from_distribution<'a>(
        action: &str,
        reward: f64,
        propensity: f64,
        target: impl IntoIterator<Item = (&'a str, f64)>,
        estimate: Option<&dyn Fn(&str) -> f64>,
    ) -> Result<RoundTerms, OpeError> {
        if !reward.is_finite() {
            return Err(OpeError::NotFinite("reward"));
        }
        // `!(x > 0)` also rejects NaN.
        if !(propensity > 0.0 && propensity <= 1.0) {
            return Err(OpeError::Propensity(propensity));
        }
        let mut sum = 0.0;
        let mut target_prob = 0.0;
        let mut weighted = 0.0;
        let mut estimate_logged = 0.0;
        if let Some(q) = estimate {
            estimate_logged = q(action);
        }
        for (a, p) in target {
            if !(0.0..=1.0).contains(&p) {
                return Err(OpeError::TargetProbability {
                    action: a.to_string(),
                    prob: p,
                });
            }
            sum += p;
            if a == action {
                target_prob += p;
            }
            if let Some(q) = estimate {
                weighted += p * q(a);
            }
        }
        if (sum - 1.0).abs() > 1e-6 {
            return Err(OpeError::TargetSum(sum));
        }
        let estimate_target = weighted / sum;
        if !estimate_logged.is_finite() || !estimate_target.is_finite() {
            return Err(OpeError::NotFinite("reward estimate"));
        }
        Ok(RoundTerms {
            reward,
            propensity,
            target_prob,
            estimate_logged,
            estimate_target,
        })
    }

    /// Importance weight `π_e / π_b`.
    #[inline]
    pub fn weight(&self) -> f64 {
        self.target_prob / self.propensity
    }
}

/// Knobs of [`evaluate`]. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluateOptions {
    /// Two-sided confidence of the intervals. By default 0.95.
    pub confidence: f64,
    /// Warn when any importance weight exceeds this. By default 50.
    pub weight_threshold: f64,
    /// Warn when ESS / rounds falls below this. By default 0.1.
    pub min_ess_ratio: f64,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        EvaluateOptions {
            confidence: 0.95,
            weight_threshold: 50.0,
            min_ess_ratio: 0.1,
        }
    }
}

/// A point estimate with its interval. The interval is None with fewer than
/// two rounds (no standard deviation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Estimated value of the target policy (mean reward per logged round).
    pub value: f64,
    /// Standard error.
    pub std_error: Option<f64>,
    /// Lower end of the interval.
    pub ci_low: Option<f64>,
    /// Upper end of the interval.
    pub ci_high: Option<f64>,
}

/// A diagnostic the reader should see before trusting the figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    /// Stable identifier: `large_importance_weights`, `low_effective_sample_size`,
    /// `no_target_support`, `no_reward_estimates`.
    pub code: &'static str,
    /// What it means, with the figures.
    pub message: String,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Logged rounds (action-position pairs).
    pub rounds: u64,
    /// `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
    /// Mean importance weight; near 1 when the logging policy covers the
    /// candidate, well below 1 when the candidate goes where the log never did.
    pub mean_importance_weight: f64,
    /// Largest importance weight.
    pub max_importance_weight: f64,
    /// Rounds whose weight exceeds the threshold.
    pub rounds_above_weight_threshold: u64,
    /// Confidence of the intervals.
    pub confidence: f64,
    /// Inverse propensity scoring.
    pub ips: Estimate,
    /// Self-normalised IPS (None when no logged action has target weight).
    pub snips: Option<Estimate>,
    /// Doubly robust.
    pub dr: Estimate,
    /// Diagnostics, see [`Warning`].
    pub warnings: Vec<Warning>,
}

/// Mean and standard error (sample sd with n − 1, over √n) of `terms`.
fn mean_se(terms: impl Iterator<Item = f64> + Clone, n: usize) -> (f64, Option<f64>) {
    let nf = n as f64;
    let mean = terms.clone().sum::<f64>() / nf;
    if n < 2 {
        return (mean, None);
    }
    // Two passes: the one-pass Σx² − n·mean² loses digits when the terms are
    // large importance-weighted rewards with a small mean.
    let ss: f64 = terms.map(|t| (t - mean) * (t - mean)).sum();
    (mean, Some((ss / (nf - 1.0) / nf).sqrt()))
}

fn interval(value: f64, se: Option<f64>, z: f64) -> Estimate {
    Estimate {
        value,
        std_error: se,
        ci_low: se.map(|s| value - z * s),
        ci_high: se.map(|s| value + z * s),
    }
}

/// Estimates the target policy's value from logged rounds with IPS, SNIPS and
/// DR, their intervals and the diagnostics.
pub fn evaluate(rounds: &[RoundTerms], opts: &EvaluateOptions) -> Result<Evaluation, OpeError> {
    let n = rounds.len();
    if n == 0 {
        return Err(OpeError::NoRounds);
    }
    if !(opts.confidence > 0.0 && opts.confidence < 1.0) {
        return Err(OpeError::Confidence(opts.confidence));
    }
    let z = Normal::new(0.0, 1.0)
        .map(|d| d.inverse_cdf(0.5 + opts.confidence / 2.0))
        .map_err(|_| OpeError::Confidence(opts.confidence))?;
    let nf = n as f64;

    let (mut sum_w, mut sum_w2, mut max_w, mut above) = (0.0f64, 0.0f64, 0.0f64, 0u64);
    for r in rounds {
        let w = r.weight();
        sum_w += w;
        sum_w2 += w * w;
        max_w = max_w.max(w);
        above += (w > opts.weight_threshold) as u64;
    }
    let ess = if sum_w2 > 0.0 {
        sum_w * sum_w / sum_w2
    } else {
        0.0
    };

    let (ips_v, ips_se) = mean_se(rounds.iter().map(|r| r.weight() * r.reward), n);
    let ips = interval(ips_v, ips_se, z);

    let (dr_v, dr_se) = mean_se(
        rounds
            .iter()
            .map(|r| r.estimate_target + r.weight() * (r.reward - r.estimate_logged)),
        n,
    );
    let dr = interval(dr_v, dr_se, z);

    let snips = (sum_w > 0.0).then(|| {
        let v = rounds.iter().map(|r| r.weight() * r.reward).sum::<f64>() / sum_w;
        let mean_w = sum_w / nf;
        // ψ sums to exactly zero by construction, so its sd is √(Σψ²/(n−1)).
        let se = (n >= 2).then(|| {
            let ss: f64 = rounds
                .iter()
                .map(|r| {
                    let psi = r.weight() * (r.reward - v) / mean_w;
                    psi * psi
                })
                .sum();
            (ss / (nf - 1.0) / nf).sqrt()
        });
        interval(v, se, z)
    });

    let mut warnings = Vec::new();
    if above > 0 {
        warnings.push(Warning {
            code: "large_importance_weights",
            message: format!(
                "{above} of {n} rounds have an importance weight above {} (max {max_w:.1}): \
                 the candidate favours actions the logging policy rarely showed there; \
                 IPS and DR rest on few rounds, prefer SNIPS and read the intervals with care",
                opts.weight_threshold
            ),
        });
    }
    if sum_w == 0.0 {
        warnings.push(Warning {
            code: "no_target_support",
            message: "the candidate gives probability 0 to every logged action: \
                      the log says nothing about it (IPS is 0, SNIPS undefined, DR is the model's guess)"
                .to_string(),
        });
    } else if ess / nf < opts.min_ess_ratio {
        warnings.push(Warning {
            code: "low_effective_sample_size",
            message: format!(
                "effective sample size {ess:.1} is {:.1}% of {n} rounds (threshold {}%): \
                 the estimates are worth far fewer rounds than were logged",
                100.0 * ess / nf,
                100.0 * opts.min_ess_ratio
            ),
        });
    }
    if rounds
        .iter()
        .all(|r| r.estimate_logged == 0.0 && r.estimate_target == 0.0)
    {
        warnings.push(Warning {
            code: "no_reward_estimates",
            message: "no reward estimates were given: DR equals IPS".to_string(),
        });
    }

    Ok(Evaluation {
        rounds: n as u64,
        effective_sample_size: ess,
        mean_importance_weight: sum_w / nf,
        max_importance_weight: max_w,
        rounds_above_weight_threshold: above,
        confidence: opts.confidence,
        ips,
        snips,
        dr,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(reward: f64, propensity: f64, target_prob: f64) -> RoundTerms {
        RoundTerms {
            reward,
            propensity,
            target_prob,
            estimate_logged: 0.0,
            estimate_target: 0.0,
        }
    }

    #[test]
    fn on_policy_evaluation_is_the_sample_mean() {
        // Target = logging policy: every weight is 1, all three estimators give mean reward.
        let rs: Vec<_> = [1.0, 0.0, 0.0, 1.0]
            .iter()
            .map(|r| round(*r, 0.25, 0.25))
            .collect();
        let e = evaluate(&rs, &EvaluateOptions::default()).unwrap();
        assert_eq!(e.ips.value, 0.5);
        assert_eq!(e.snips.unwrap().value, 0.5);
        assert_eq!(e.dr.value, 0.5);
        assert_eq!(e.effective_sample_size, 4.0);
        // sd of [1,0,0,1] with n−1 is √(1/3); se = √(1/12).
        let se = (1.0f64 / 12.0).sqrt();
        assert!((e.ips.std_error.unwrap() - se).abs() < 1e-15);
        assert!((e.ips.ci_high.unwrap() - (0.5 + 1.959963984540054 * se)).abs() < 1e-12);
        // With identical weights, SNIPS's delta-method se equals IPS's.
        assert!((e.snips.unwrap().std_error.unwrap() - se).abs() < 1e-15);
        assert!(e.warnings.iter().any(|w| w.code == "no_reward_estimates"));
    }

    #[test]
    fn snips_se_is_the_delta_method() {
        let rs = [
            round(1.0, 0.5, 1.0),
            round(0.0, 0.1, 1.0),
            round(1.0, 0.25, 0.0),
        ];
        let e = evaluate(&rs, &EvaluateOptions::default()).unwrap();
        // w = [2, 10, 0]; Σwr = 2, Σw = 12 → V = 1/6; mean w = 4.
        let v = 1.0 / 6.0;
        let psi = [2.0 * (1.0 - v) / 4.0, 10.0 * (0.0 - v) / 4.0, 0.0];
        let se = (psi.iter().map(|p| p * p).sum::<f64>() / 2.0 / 3.0).sqrt();
        let s = e.snips.unwrap();
        assert!((s.value - v).abs() < 1e-15);
        assert!((s.std_error.unwrap() - se).abs() < 1e-15);
        assert_eq!(e.max_importance_weight, 10.0);
        assert!((e.effective_sample_size - 144.0 / 104.0).abs() < 1e-12);
    }

    #[test]
    fn dr_with_a_perfect_model_has_no_variance_from_rewards_it_explains() {
        // Reward equals the model's estimate: DR is the model's value exactly.
        let rs: Vec<_> = (0..10)
            .map(|i| RoundTerms {
                reward: 0.3,
                propensity: 0.2 + 0.05 * i as f64,
                target_prob: 0.5,
                estimate_logged: 0.3,
                estimate_target: 0.3,
            })
            .collect();
        let e = evaluate(&rs, &EvaluateOptions::default()).unwrap();
        assert!((e.dr.value - 0.3).abs() < 1e-15);
        assert!(e.dr.std_error.unwrap() < 1e-15);
        assert!(e.ips.std_error.unwrap() > 0.01);
    }

    #[test]
    fn warnings_name_their_threshold() {
        let mut rs = vec![round(0.0, 0.9, 0.0); 99];
        rs.push(round(1.0, 0.01, 1.0));
        let e = evaluate(&rs, &EvaluateOptions::default()).unwrap();
        let codes: Vec<_> = e.warnings.iter().map(|w| w.code).collect();
        assert!(codes.contains(&"large_importance_weights"));
        assert!(codes.contains(&"low_effective_sample_size"));
        assert_eq!(e.rounds_above_weight_threshold, 1);
        let none = [round(1.0, 0.5, 0.0), round(0.0, 0.5, 0.0)];
        let e = evaluate(&none, &EvaluateOptions::default()).unwrap();
        assert!(e.snips.is_none());
        assert!(e.warnings.iter().any(|w| w.code == "no_target_support"));
    }

    #[test]
    fn bad_input_is_refused() {
        let d = [("a", 0.5), ("b", 0.5)];
        assert_eq!(
            RoundTerms::from_distribution("a", 1.0, 0.0, d, None),
            Err(OpeError::Propensity(0.0))
        );
        assert!(RoundTerms::from_distribution("a", 1.0, f64::NAN, d, None).is_err());
        assert_eq!(
            RoundTerms::from_distribution("a", 1.0, 0.5, [("a", 0.5)], None),
            Err(OpeError::TargetSum(0.5))
        );
        assert!(RoundTerms::from_distribution("a", f64::INFINITY, 0.5, d, None).is_err());
        assert!(
            RoundTerms::from_distribution("a", 1.0, 0.5, [("a", 1.5), ("b", -0.5)], None).is_err()
        );
        assert_eq!(
            evaluate(&[], &EvaluateOptions::default()),
            Err(OpeError::NoRounds)
        );
        let one = [round(1.0, 0.5, 0.5)];
        let bad = EvaluateOptions {
            confidence: 1.0,
            ..Default::default()
        };
        assert!(evaluate(&one, &bad).is_err());
        // One round: a value, no interval.
        let e = evaluate(&one, &EvaluateOptions::default()).unwrap();
        assert_eq!(e.ips.value, 1.0);
        assert!(e.ips.ci_low.is_none());
    }

    #[test]
    fn reduction_reads_the_logged_action_and_averages_the_model() {
        let q = |a: &str| if a == "a" { 0.2 } else { 0.6 };
        let t = RoundTerms::from_distribution("a", 1.0, 0.4, [("a", 0.25), ("b", 0.75)], Some(&q))
            .unwrap();
        assert_eq!(t.target_prob, 0.25);
        assert_eq!(t.estimate_logged, 0.2);
        assert!((t.estimate_target - (0.05 + 0.45)).abs() < 1e-15);
        // An action the target never shows has weight 0.
        let t = RoundTerms::from_distribution("c", 1.0, 0.4, [("a", 1.0)], None).unwrap();
        assert_eq!(t.weight(), 0.0);
    }
}
