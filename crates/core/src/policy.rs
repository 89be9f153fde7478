//! Policy: how the offers of a decision are ranked and picked.
//!
//! [`Ranking`] says what orders the candidates (the model's expected value or
//! the catalog's fixed business priority). [`select`] picks the offers of a
//! decision slot by slot (one per category, as the greedy arbitration does)
//! under an [`Exploration`] policy and returns, for each pick, the
//! probability that the policy put that offer in that slot given the slots
//! before it. Randomness comes from a seed the caller derives (the decision
//! id), so the core stays pure.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How offers are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// By expected value from the model.
    #[default]
    Model,
    /// By the catalog's fixed business priority.
    Priority,
}

/// The exploration policy of an experiment variant.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Exploration {
    /// Best expected value in every slot (propensity 1).
    #[default]
    Greedy,
    /// In each slot: the best remaining offer with probability 1 − ε, else
    /// one of the remaining allowed offers uniformly.
    EpsilonGreedy {
        /// Share of exploratory picks, 0 to 1.
        epsilon: f64,
    },
    /// In each slot: offer c with probability ∝ exp(EV_c / temperature).
    Softmax {
        /// Temperature, CNY of expected value (higher explores more).
        temperature: f64,
    },
    /// Rank by expected value under one draw from the adaptive models'
    /// posteriors; propensities estimated by Monte Carlo.
    Thompson,
}

impl Exploration {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Exploration::EpsilonGreedy { epsilon } if !(0.0..=1.0).contains(&epsilon) => {
                Err("epsilon must be from 0 to 1".into())
            }
            Exploration::Softmax { temperature }
                if !(temperature.is_finite() && temperature > 0.0) =>
            {
                Err("temperature must be a positive number".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether decisions need the adaptive models' posteriors.
    pub fn samples(&self) -> bool {
        matches!(self, Exploration::Thompson)
    }
}

/// One eligible offer as [`select`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Catalog index.
    pub index: usize,
    /// Category bit (one offer per category per decision).
    pub category: u32,
    /// Expected value under the point estimate, CNY.
    pub ev: f64,
}

/// Picks up to `limit` offers, one per category, slot by slot. Returns
/// (position in `cands`, propensity) per slot. `candidates` must be sorted
/// best first (ties broken as the greedy arbitration breaks them).
/// `sample_ev(pos, rng)` draws the expected value of candidate `pos` for
/// Thompson sampling; `draws` bounds its Monte Carlo estimate.
pub fn select(
    cands: &[Candidate],
    limit: usize,
    policy: Exploration,
    seed: u64,
    draws: usize,
    sample_ev: &dyn Fn(usize, &mut ChaCha8Rng) -> f64,
) -> Vec<(usize, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut used: u32 = 0;
    let mut taken = vec![false; cands.len()];
    let mut out = Vec::with_capacity(limit.min(8));
    // Thompson: one posterior draw ranks the offers (that is the policy).
    let sampled: Vec<f64> = if policy.samples() {
        (0..cands.len()).map(|i| sample_ev(i, &mut rng)).collect()
    } else {
        Vec::new()
    };
    let n = cands.len();
    // Thompson: `draws` fresh draws of every candidate, row by row.
    let mut fresh: Vec<f64> = Vec::new();
    let mut remaining: Vec<usize> = Vec::with_capacity(cands.len());
    while out.len() < limit {
        remaining.clear();
        remaining.extend(
            (0..cands.len()).filter(|&i| !taken[i] && used & (1 << cands[i].category) == 0),
        );
        if remaining.is_empty() {
            break;
        }
        let (pick, prob) = match policy {
            Exploration::Greedy => (remaining[0], 1.0),
            Exploration::EpsilonGreedy { epsilon } => {
                let n = remaining.len() as f64;
                let pick = if rng.gen::<f64>() < epsilon {
                    remaining[rng.gen_range(0..remaining.len())]
                } else {
                    remaining[0]
                };
                let greedy = if pick == remaining[0] {
                    1.0 - epsilon
                } else {
                    0.0
                };
                (pick, greedy + epsilon / n)
            }
            Exploration::Softmax { temperature } => {
                let w = softmax_weights(cands, &remaining, temperature);
                let total: f64 = w.iter().sum();
                let mut r = rng.gen::<f64>() * total;
                let mut k = w.len() - 1;
                for (j, wj) in w.iter().enumerate() {
                    if r < *wj {
                        k = j;
                        break;
                    }
                    r -= wj;
                }
                (remaining[k], w[k] / total)
            }
            Exploration::Thompson => {
                let pick = *remaining
                    .iter()
                    .max_by(|a, b| sampled[**a].total_cmp(&sampled[**b]).then(b.cmp(a)))
                    .unwrap_or(&remaining[0]);
                // P(pick is the best remaining under a fresh draw), estimated
                // from `draws` fresh draws plus the draw actually used (so
                // the estimate is never 0 for an offer that was shown). The
                // fresh draws are made once per decision and shared by its
                // slots: each slot's estimate is still over independent draws.
                if fresh.is_empty() && draws > 0 {
                    fresh = (0..draws * n).map(|k| sample_ev(k % n, &mut rng)).collect();
                }
                let wins = 1 + fresh
                    .chunks_exact(n)
                    .filter(|draw| {
                        remaining
                            .iter()
                            .max_by(|a, b| draw[**a].total_cmp(&draw[**b]).then(b.cmp(a)))
                            == Some(&pick)
                    })
                    .count();
                (pick, wins as f64 / (draws + 1) as f64)
            }
        };
        taken[pick] = true;
        used |= 1 << cands[pick].category;
        out.push((pick, prob));
    }
    out
}

/// Softmax weights of `remaining` (shifted by the maximum for stability).
pub fn softmax_weights(cands: &[Candidate], remaining: &[usize], temperature: f64) -> Vec<f64> {
    let max = remaining
        .iter()
        .map(|&i| cands[i].ev)
        .fold(f64::NEG_INFINITY, f64::max);
    remaining
        .iter()
        .map(|&i| ((cands[i].ev - max) / temperature).exp())
        .collect()
}

/// A seed from a decision id (FNV-1a), so a decision's draws are reproducible.
pub fn seed_of(id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
