//! Experiment statistics against the synthetic world's hidden ground truth.
//!
//! Each simulated experiment samples members from a synthetic population,
//! assigns them with the real hash (a fresh salt per run), decides their
//! offers with the real decision core under each variant's policy, draws
//! accepts from the hidden ground-truth response model, records exposures
//! and conversions through the real attribution book, and reads the real
//! report. Over many runs:
//! - A/A (both variants run the same policy): the conversion test's false
//!   positive rate at 5% stays between 3% and 7%;
//! - A/B (business-priority ranking against model ranking): the 95% interval
//!   of the conversion lift covers the true lift, computed from the ground
//!   truth over the whole population, between 93% and 97% of the time.
//!
//! Decisions depend only on the member and the policy, so each member's
//! offers are decided once per policy and reused across runs; assignment,
//! outcomes, attribution and statistics run anew in every run.

use chrono::{NaiveDate, TimeZone, Utc};
use offer_engine::decision::{decide, DecisionInput, Engine, Ranking, Unconstrained};
use offer_engine::domain::{Channel, TierThresholds};
use offer_engine::experiments::{parse_experiments, Assignment, ExperimentSpec};
use offer_engine::state::experiments::ExperimentBook;
use offer_engine::synth::{self, GroundTruth};
use rand::{Rng, SeedableRng};

const POPULATION: u64 = 40_000;
const MEMBERS_PER_RUN: usize = 2_000;
const RUNS: usize = 3_000;

/// Per member and policy: (true accept probability, revenue) of each offer shown.
type Shown = Vec<(f64, f64)>;

struct World {
    control: Vec<Shown>,
    treatment: Vec<Shown>,
}

fn world() -> World {
    let th = TierThresholds::default();
    let engine = Engine::embedded_default();
    let truth = GroundTruth::new(42);
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let mut control = Vec::new();
    let mut treatment = Vec::new();
    for i in 0..POPULATION {
        let m = synth::member(42, i, as_of, &th);
        let mut rng = synth::stream_rng(4242, i);
        let it = synth::itinerary(&mut rng, Some(&m), now);
        for (ranking, out) in [
            (Ranking::Priority, &mut control),
            (Ranking::Model, &mut treatment),
        ] {
            let d = decide(
                &engine,
                &DecisionInput {
                    member: Some(&m),
                    itinerary: Some(&it),
                    channel: Channel::Checkout,
                    now,
                    max_offers: 3,
                    ranking,
                },
                &Unconstrained,
            );
            out.push(
                d.offers
                    .iter()
                    .map(|o| {
                        let offer = &engine.catalog.offers[o.index];
                        let p = truth.probability(
                            offer,
                            Some(&m),
                            Some(&it),
                            Channel::Checkout,
                            now,
                            &th,
                        );
                        (p, o.price.as_ref().map(|p| p.amount).unwrap_or(0.0))
                    })
                    .collect(),
            );
        }
    }
    World { control, treatment }
}

fn p_convert(shown: &Shown) -> f64 {
    1.0 - shown.iter().map(|(p, _)| 1.0 - p).product::<f64>()
}

fn spec(run: usize) -> ExperimentSpec {
    parse_experiments(&format!(
        "[[experiment]]\nid = \"sim\"\nsalt = \"sim-{run}\"\ntraffic = 1.0\n\
         [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
         [[experiment.variant]]\nname = \"treatment\"\nweight = 1\n"
    ))
    .unwrap()
    .remove(0)
}

/// Runs one experiment; returns the treatment's conversion lift (absolute, ci_low, ci_high, p).
fn run_once(world: &World, run: usize, a_a: bool) -> (f64, f64, f64, f64) {
    let spec = spec(run);
    let book = ExperimentBook::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(run as u64 * 7919 + a_a as u64);
    for k in 0..MEMBERS_PER_RUN {
        let idx = rng.gen_range(0..POPULATION as usize);
        let member_id = format!("run{run}-m{k}");
        let v = spec.assign(&member_id).expect("traffic is 100%");
        let variant = &spec.variants[v].name;
        let shown = if v == 0 || a_a {
            &world.control[idx]
        } else {
            &world.treatment[idx]
        };
        let a = Assignment {
            experiment: "sim".into(),
            variant: variant.clone(),
        };
        book.expose(&a, &member_id, 0.0);
        for (p, price) in shown {
            if rng.gen_bool(*p) {
                book.convert(&a, &member_id, *price);
            }
        }
    }
    let r = book.report(&spec);
    let l = r.variants[1]
        .conversion_lift
        .clone()
        .expect("both arms have members");
    (l.absolute, l.ci_low, l.ci_high, l.p_value)
}

#[test]
fn aa_false_positives_and_ab_coverage_are_nominal() {
    let world = world();
    let mean = |v: &Vec<Shown>| v.iter().map(p_convert).sum::<f64>() / v.len() as f64;
    let true_lift = mean(&world.treatment) - mean(&world.control);
    let mut false_positives = 0;
    let mut covered = 0;
    for run in 0..RUNS {
        let (_, _, _, p) = run_once(&world, run, true);
        if p < 0.05 {
            false_positives += 1;
        }
        let (_, lo, hi, _) = run_once(&world, run + RUNS, false);
        if lo <= true_lift && true_lift <= hi {
            covered += 1;
        }
    }
    let fpr = false_positives as f64 / RUNS as f64;
    let coverage = covered as f64 / RUNS as f64;
    eprintln!(
        "control conversion {:.4}, treatment {:.4}, true lift {true_lift:.4}; A/A false-positive rate {fpr:.3}; A/B coverage {coverage:.3} ({RUNS} runs of {MEMBERS_PER_RUN} members)",
        mean(&world.control),
        mean(&world.treatment)
    );
    assert!(
        (0.03..=0.07).contains(&fpr),
        "A/A false-positive rate {fpr}"
    );
    assert!((0.93..=0.97).contains(&coverage), "A/B coverage {coverage}");
    assert!(true_lift.abs() > 0.0, "the two policies should differ");
}
