//! Off-policy estimates against the synthetic world's hidden ground truth.
//!
//! A population of synthetic members, each with a trip at checkout, is the
//! context distribution. The logging policy is epsilon-greedy (ε = 0.3) on
//! the shipped model's expected value over the eligible offers, one slot
//! (position 0): it shows the engine's top offer 70% of the time and a
//! uniformly random eligible offer otherwise, and logs that probability.
//! The candidate (target) is a different policy: a softmax over the same
//! model's expected value with temperature 20 CNY, computed through the
//! `evaluate --model` path (`evaluate_cli::round_terms` on a line whose
//! `context` holds the member's feature vector and eligible offers).
//!
//! Reward = accept (0/1), drawn from the ground truth's accept probability;
//! DR's reward model is the shipped model's propensity, so it is good but
//! not exact. The true value of the candidate is computed exactly from the
//! ground truth: the mean over the population of Σ_a π_e(a|x) q(x, a).
//!
//! Each replication logs `ROUNDS` rounds (members drawn with replacement)
//! with its own seeded stream, so the test is deterministic. Over `REPS`
//! replications the 95% intervals of IPS, SNIPS and DR must each cover the
//! true value between 93% and 97% of the time, and DR's interval must be
//! narrower than IPS's on average.

use chrono::{NaiveDate, TimeZone, Utc};
use offer_engine::catalog::EligibilityContext;
use offer_engine::cli::evaluate::{round_terms, LoggedRound, ModelPolicy, RewardUnit, Target};
use offer_engine::decision::Engine;
use offer_engine::domain::{Channel, TierThresholds};
use offer_engine::features;
use offer_engine::model::ModelFile;
use offer_engine::ope::{evaluate, EvaluateOptions, RoundTerms};
use offer_engine::synth::{self, GroundTruth};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

const POPULATION: u64 = 4_000;
const ROUNDS: usize = 4_000;
const REPS: u64 = 500;
const EPSILON: f64 = 0.3;
const TEMPERATURE: f64 = 20.0;

/// One member's decision problem: per eligible offer, the logging
/// probability, the true accept probability, and the reduced round terms
/// (target probability, reward model) with the reward left to fill in.
struct Context {
    logging: Vec<f64>,
    truth: Vec<f64>,
    terms: Vec<RoundTerms>,
}

fn world() -> (Vec<Context>, f64) {
    let th = TierThresholds::default();
    let engine = Engine::embedded_default();
    let truth = GroundTruth::new(42);
    let target = Target::Model(Box::new(
        ModelPolicy::new(
            &ModelFile::default_model(),
            (*engine.catalog).clone(),
            Some(TEMPERATURE),
            RewardUnit::Accept,
        )
        .unwrap(),
    ));
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let mut contexts = Vec::new();
    let mut true_value = 0.0;
    for i in 0..POPULATION {
        let m = synth::member(42, i, as_of, &th);
        let mut rng = synth::stream_rng(4243, i);
        let it = synth::itinerary(&mut rng, Some(&m), now);
        let gap = features::spend_to_next_tier(&m, &th);
        let ectx = EligibilityContext::new(Some(&m), Some(&it), Channel::Checkout, now, gap);
        let x = features::for_checkout(Some(&m), &it, now, &th);
        let eligible: Vec<usize> = (0..engine.catalog.offers.len())
            .filter(|&k| engine.catalog.offers[k].eligible(&ectx).is_ok())
            .collect();
        if eligible.is_empty() {
            continue;
        }
        let ev = |k: usize| {
            let o = &engine.catalog.offers[k];
            engine.table.propensity(k, &x) as f64 * o.margin * o.units(it.passengers) * o.lever
        };
        // The engine's greedy choice (ties: first in catalog order suffices here).
        let best = eligible
            .iter()
            .copied()
            .max_by(|a, b| ev(*a).total_cmp(&ev(*b)).then(b.cmp(a)))
            .unwrap();
        let n = eligible.len() as f64;
        let ids: Vec<&str> = eligible
            .iter()
            .map(|&k| engine.catalog.offers[k].id.as_str())
            .collect();
        let mut ctx = Context {
            logging: Vec::new(),
            truth: Vec::new(),
            terms: Vec::new(),
        };
        for &k in &eligible {
            let pb = EPSILON / n + if k == best { 1.0 - EPSILON } else { 0.0 };
            let line = serde_json::json!({
                "action": engine.catalog.offers[k].id,
                "reward": 0.0,
                "propensity": pb,
                "context": {"features": x.to_vec(), "eligible": ids, "passengers": it.passengers},
            });
            let line = LoggedRound::deserialize(&line).unwrap();
            let q = truth.probability(
                &engine.catalog.offers[k],
                Some(&m),
                Some(&it),
                Channel::Checkout,
                now,
                &th,
            );
            let t = round_terms(&line, &target).unwrap();
            true_value += t.target_prob * q;
            ctx.logging.push(pb);
            ctx.truth.push(q);
            ctx.terms.push(t);
        }
        let total: f64 = ctx.terms.iter().map(|t| t.target_prob).sum();
        assert!((total - 1.0).abs() < 1e-9, "target sums to {total}");
        contexts.push(ctx);
    }
    let v = true_value / contexts.len() as f64;
    (contexts, v)
}

fn log_once(contexts: &[Context], rep: u64) -> Vec<RoundTerms> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0_bee5 ^ rep.wrapping_mul(7919));
    (0..ROUNDS)
        .map(|_| {
            let c = &contexts[rng.gen_range(0..contexts.len())];
            let u: f64 = rng.gen();
            let mut acc = 0.0;
            let mut a = c.logging.len() - 1;
            for (k, p) in c.logging.iter().enumerate() {
                acc += p;
                if u < acc {
                    a = k;
                    break;
                }
            }
            let accepted = rng.gen_bool(c.truth[a]);
            RoundTerms {
                reward: accepted as u8 as f64,
                ..c.terms[a]
            }
        })
        .collect()
}

#[test]
fn intervals_cover_the_true_value_of_a_candidate_policy() {
    let (contexts, truth) = world();
    assert!(contexts.len() > POPULATION as usize / 2);
    let opts = EvaluateOptions::default();
    let (mut cover, mut width) = ([0u32; 3], [0f64; 3]);
    let mut ess = 0.0;
    for rep in 0..REPS {
        let rounds = log_once(&contexts, rep);
        let e = evaluate(&rounds, &opts).unwrap();
        ess += e.effective_sample_size / REPS as f64;
        let snips = e.snips.expect("the candidate overlaps the log");
        for (j, est) in [e.ips, snips, e.dr].iter().enumerate() {
            let (lo, hi) = (est.ci_low.unwrap(), est.ci_high.unwrap());
            cover[j] += (lo <= truth && truth <= hi) as u32;
            width[j] += (hi - lo) / REPS as f64;
        }
    }
    let rate = cover.map(|c| c as f64 / REPS as f64);
    eprintln!(
        "true value {truth:.5}; coverage ips {:.3} snips {:.3} dr {:.3}; \
         mean width ips {:.5} snips {:.5} dr {:.5}; mean ESS {ess:.0} of {ROUNDS}",
        rate[0], rate[1], rate[2], width[0], width[1], width[2]
    );
    for (name, r) in ["ips", "snips", "dr"].iter().zip(rate) {
        assert!((0.93..=0.97).contains(&r), "{name} covers {r}");
    }
    assert!(width[2] < width[0], "DR {} vs IPS {}", width[2], width[0]);
}
