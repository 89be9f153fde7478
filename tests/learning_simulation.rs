//! Learning from outcomes in the synthetic world (see `src/learnsim.rs`):
//! the real decision core explores with the adaptive models, accepts are
//! drawn from the hidden ground truth of `src/synth.rs` and fed back.
//!
//! - From a cold start (flat prior, no shipped coefficients), Thompson
//!   sampling brings the adaptive models to within 0.02 held-out AUC of the
//!   offline model `models/propensity-lr-v1.json` (trained on 1.8 million
//!   rows of the same world) after 120,000 decisions.
//! - A new offer the shipped model knows nothing about (no coefficients, no
//!   category fallback: a flat 1% prior) but that is truly the best lounge
//!   offer for the travellers who can get it is found by exploration: its
//!   share of their lounge slots rises from near zero to most, while the
//!   greedy policy never tries it.

use offer_engine::catalog::{Catalog, Offer, DEFAULT_CATALOG};
use offer_engine::domain::{Category, Channel, Itinerary, Member, TierThresholds};
use offer_engine::learnsim::{SimConfig, Simulation};
use offer_engine::model::ModelFile;
use offer_engine::state::learner::{Exploration, LearnSettings};
use offer_engine::synth::GroundTruth;

const DECISIONS_TO_MATCH_OFFLINE: u64 = 120_000;

#[test]
fn cold_start_reaches_the_offline_models_auc() {
    let mut sim = Simulation::new(SimConfig::default(), Catalog::default_catalog());
    let start = sim.point();
    assert!(
        start.auc_adaptive < start.auc_offline - 0.05,
        "a cold start knows nothing: {start:?}"
    );
    let curve = sim.run(DECISIONS_TO_MATCH_OFFLINE, 20_000);
    let end = *curve.last().unwrap();
    eprintln!("{curve:#?}");
    assert!(
        end.auc_adaptive >= end.auc_offline - 0.02,
        "after {} decisions: adaptive {:.4}, offline {:.4}",
        end.decisions,
        end.auc_adaptive,
        end.auc_offline
    );
    // Learning pays: later decisions lose less to the oracle than early ones.
    let early = curve[1].cumulative_regret - curve[0].cumulative_regret;
    let late = end.cumulative_regret - curve[curve.len() - 2].cumulative_regret;
    assert!(
        late < early / 2.0,
        "regret per 20k decisions: early {early:.0}, late {late:.0}"
    );
}

/// A copy of `lounge-intl` under another id and title.
fn with_new_lounge(id: &str) -> Catalog {
    let start = DEFAULT_CATALOG.find("id = \"lounge-intl\"").unwrap();
    let end = start + DEFAULT_CATALOG[start..].find("[[offer]]").unwrap();
    let block = DEFAULT_CATALOG[start..end]
        .replace("id = \"lounge-intl\"", &format!("id = \"{id}\""))
        .replace(
            "title = \"International lounge pass\"",
            "title = \"New partner lounge with spa\"",
        );
    Catalog::from_toml(&format!("{DEFAULT_CATALOG}\n[[offer]]\n{block}")).unwrap()
}

#[test]
fn exploration_finds_a_new_offer_that_is_best_for_a_segment() {
    let cfg = SimConfig {
        cold_start: false,
        holdout: 10,
        learn: LearnSettings {
            min_evidence: 0,
            thompson_draws: 0,
            prior_variance: 0.5,
            ..LearnSettings::default()
        },
        ..SimConfig::default()
    };
    let th = TierThresholds::default();
    let truth = GroundTruth::new(cfg.seed);
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
        .unwrap()
        .to_utc();
    // The segment: trips on which the incumbent lounge-intl is shown.
    let mut probe = Simulation::new(cfg.clone(), Catalog::default_catalog());
    let inc = probe
        .engine()
        .catalog
        .offers
        .iter()
        .position(|o| o.id == "lounge-intl")
        .unwrap();
    let mut contexts: Vec<(Member, Itinerary)> = Vec::new();
    while contexts.len() < 300 {
        probe.step();
        let (shown, it, m) = probe.last();
        if shown.contains(&inc) {
            contexts.push((*m.unwrap(), it.unwrap().clone()));
        }
    }
    let mean_truth = |o: &Offer| {
        contexts
            .iter()
            .map(|(m, it)| truth.probability(o, Some(m), Some(it), Channel::Checkout, now, &th))
            .sum::<f64>()
            / contexts.len() as f64
    };
    // The id with the highest hidden taste: truly the better lounge there.
    let incumbent = probe.engine().catalog.offers[inc].clone();
    let (id, truth_new) = (0..200)
        .map(|k| {
            let mut o = incumbent.clone();
            o.id = format!("lounge-partner-{k}");
            let p = mean_truth(&o);
            (o.id, p)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let truth_inc = mean_truth(&incumbent);
    eprintln!("{id}: true accept rate {truth_new:.4} against lounge-intl's {truth_inc:.4}");
    assert!(truth_new > truth_inc * 1.15, "{truth_new} vs {truth_inc}");

    // The shipped model has no lounge fallback: the new offer's prior is flat.
    let mut model = ModelFile::default_model();
    model.categories.remove(&Category::Lounge);
    let catalog = with_new_lounge(&id);
    let share = |policy: Exploration| {
        let mut sim = Simulation::with_model(
            SimConfig {
                policy,
                ..cfg.clone()
            },
            catalog.clone(),
            model.clone(),
        );
        let new = sim.engine().catalog.offers.len() - 1;
        // The first 2,000 decisions against the last 10,000 of 40,000.
        let mut windows = [(0u32, 0u32); 2];
        for k in 0..40_000 {
            sim.step();
            let (shown, _, _) = sim.last();
            let w = match k {
                0..2_000 => 0,
                30_000.. => 1,
                _ => continue,
            };
            if shown.contains(&new) || shown.contains(&inc) {
                windows[w].0 += shown.contains(&new) as u32;
                windows[w].1 += 1;
            }
        }
        windows
            .iter()
            .map(|(n, d)| *n as f64 / (*d).max(1) as f64)
            .collect::<Vec<f64>>()
    };
    let thompson = share(Exploration::Thompson);
    let greedy = share(Exploration::Greedy);
    eprintln!(
        "new offer's share of the segment's lounge slots, first 2k and last 10k \
         decisions: Thompson {thompson:?}, greedy {greedy:?}"
    );
    assert!(
        thompson[1] > thompson[0] + 0.15 && thompson[1] > 0.5,
        "Thompson: {thompson:?}"
    );
    assert!(
        thompson[1] > greedy[1] + 0.3,
        "exploration should find it, greedy should not: {thompson:?} vs {greedy:?}"
    );
}
