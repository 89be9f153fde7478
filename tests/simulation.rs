//! Experiment statistics against the synthetic world's hidden ground truth.
//!
//! Each simulated experiment samples members from a synthetic population,
//! assigns them with the real hash (a fresh salt per run), decides their
//! offers with the real decision core under each variant's policy, draws
//! accepts from the hidden ground-truth response model, records exposures
//! and conversions through the real attribution book, and reads the real
//! report. Over many runs:
//! - A/A (both variants run the same policy): the conversion test's false
//!   positive rate at 5% stays between 3% and 7%, and so does the value
//!   test's (`value_lift`: value to the airline per member, net of points
//!   given away);
//! - A/B (business-priority ranking against model ranking): the 95% interval
//!   of the conversion lift covers the true lift, computed from the ground
//!   truth over the whole population, between 93% and 97% of the time, and
//!   so does the interval of the value lift cover the true value lift;
//! - A/A split into 5 segments (members' segment keys recorded at exposure,
//!   read back through the segmented report): with Holm's correction the
//!   family-wise error (any segment "significant" at 5%) is at most 5%,
//!   where the uncorrected p-values make it far larger.
//!
//! Decisions depend only on the member and the policy, so each member's
//! offers are decided once per policy and reused across runs; assignment,
//! outcomes, attribution and statistics run anew in every run.

use chrono::{NaiveDate, TimeZone, Utc};
use offer_engine::decision::{decide, DecisionInput, Engine, Ranking, Unconstrained};
use offer_engine::domain::{Channel, Day, Tier, TierThresholds};
use offer_engine::experiments::{
    parse_experiments, Assignment, ExperimentSpec, SegmentBy, SegmentKeys,
};
use offer_engine::state::experiments::ExperimentBook;
use offer_engine::stats::Correction;
use offer_engine::synth::{self, GroundTruth};
use rand::{Rng, SeedableRng};

const POPULATION: u64 = 40_000;
const MEMBERS_PER_RUN: usize = 2_000;
const RUNS: usize = 3_000;

/// Per member and policy: (true accept probability, revenue, value, points
/// cost) of each offer shown.
type Shown = Vec<(f64, f64, f64, f64)>;

struct World {
    control: Vec<Shown>,
    treatment: Vec<Shown>,
}

fn world() -> &'static World {
    static WORLD: std::sync::OnceLock<World> = std::sync::OnceLock::new();
    WORLD.get_or_init(build_world)
}

fn build_world() -> World {
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
                        let units = offer.units(it.passengers);
                        let cpp = engine.catalog.cost_per_point;
                        (
                            p,
                            o.price.as_ref().map(|p| p.amount).unwrap_or(0.0),
                            offer.net_value(units, cpp),
                            offer.points_cost(units, cpp),
                        )
                    })
                    .collect(),
            );
        }
    }
    World { control, treatment }
}

fn p_convert(shown: &Shown) -> f64 {
    1.0 - shown.iter().map(|(p, ..)| 1.0 - p).product::<f64>()
}

/// Expected value to the airline of a member's offers.
fn expected_value(shown: &Shown) -> f64 {
    shown.iter().map(|(p, _, v, _)| p * v).sum()
}

/// A lift as (absolute, ci_low, ci_high, p).
type LiftFigures = (f64, f64, f64, f64);

fn spec(run: usize) -> ExperimentSpec {
    parse_experiments(&format!(
        "[[experiment]]\nid = \"sim\"\nsalt = \"sim-{run}\"\ntraffic = 1.0\n\
         [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
         [[experiment.variant]]\nname = \"treatment\"\nweight = 1\n"
    ))
    .unwrap()
    .remove(0)
}

/// Runs one experiment; returns the treatment's conversion and value lifts.
fn run_once(world: &World, run: usize, a_a: bool) -> (LiftFigures, LiftFigures) {
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
        book.expose(&a, &member_id, 0.0, 0, || None);
        for (p, price, value, points_cost) in shown {
            if rng.gen_bool(*p) {
                book.convert(&a, &member_id, *price, 0);
                book.add_value(&a, &member_id, *value, *points_cost, 0);
            }
        }
    }
    let r = book.report(&spec, 0);
    let figures =
        |l: &offer_engine::experiments::ReportLift| (l.absolute, l.ci_low, l.ci_high, l.p_value);
    let conversion = r.variants[1]
        .conversion_lift
        .as_ref()
        .expect("both arms have members");
    let value = r.variants[1]
        .value_lift
        .as_ref()
        .expect("both arms have members and value");
    (figures(conversion), figures(value))
}

#[test]
fn aa_false_positives_and_ab_coverage_are_nominal() {
    let world = world();
    let mean = |v: &Vec<Shown>| v.iter().map(p_convert).sum::<f64>() / v.len() as f64;
    let true_lift = mean(&world.treatment) - mean(&world.control);
    let value_mean = |v: &Vec<Shown>| v.iter().map(expected_value).sum::<f64>() / v.len() as f64;
    let true_value_lift = value_mean(&world.treatment) - value_mean(&world.control);
    let (mut false_positives, mut value_false_positives) = (0, 0);
    let (mut covered, mut value_covered) = (0, 0);
    for run in 0..RUNS {
        let ((_, _, _, p), (_, _, _, vp)) = run_once(world, run, true);
        false_positives += (p < 0.05) as usize;
        value_false_positives += (vp < 0.05) as usize;
        let ((_, lo, hi, _), (_, vlo, vhi, _)) = run_once(world, run + RUNS, false);
        covered += (lo <= true_lift && true_lift <= hi) as usize;
        value_covered += (vlo <= true_value_lift && true_value_lift <= vhi) as usize;
    }
    let fpr = false_positives as f64 / RUNS as f64;
    let coverage = covered as f64 / RUNS as f64;
    let value_fpr = value_false_positives as f64 / RUNS as f64;
    let value_coverage = value_covered as f64 / RUNS as f64;
    eprintln!(
        "value per member: control {:.2}, treatment {:.2}, true lift {true_value_lift:.2} CNY; A/A false-positive rate {value_fpr:.3}; A/B coverage {value_coverage:.3}",
        value_mean(&world.control),
        value_mean(&world.treatment)
    );
    assert!(
        (0.03..=0.07).contains(&value_fpr),
        "A/A value false-positive rate {value_fpr}"
    );
    assert!(
        (0.93..=0.97).contains(&value_coverage),
        "A/B value coverage {value_coverage}"
    );
    assert!(
        true_value_lift.abs() > 0.0,
        "the two policies should differ in value"
    );
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

const SEGMENT_RUNS: usize = 4_000;

/// One A/A experiment whose members fall in 5 tiers (round robin, so each
/// segment has about 200 members per arm); returns whether any segment's
/// conversion p-value is below 5%, Holm-corrected and uncorrected.
fn run_segmented_aa(world: &World, run: usize) -> (bool, bool) {
    let spec = spec(run + 10 * RUNS);
    let book = ExperimentBook::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(run as u64 * 104_729 + 17);
    let th = TierThresholds::default();
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    for k in 0..MEMBERS_PER_RUN {
        let idx = rng.gen_range(0..POPULATION as usize);
        let member_id = format!("seg{run}-m{k}");
        let v = spec.assign(&member_id).expect("traffic is 100%");
        let a = Assignment {
            experiment: "sim".into(),
            variant: spec.variants[v].name.clone(),
        };
        let mut m = synth::member(42, idx as u64, as_of, &th);
        m.tier = Tier::ALL[k % Tier::ALL.len()];
        let keys = SegmentKeys::of(&m, Channel::Checkout, Day(20_000));
        book.expose(&a, &member_id, 0.0, 0, || Some((keys, 0)));
        for (p, price, ..) in &world.control[idx] {
            if rng.gen_bool(*p) {
                book.convert(&a, &member_id, *price, 0);
            }
        }
    }
    let r = book.segmented_report(&spec, SegmentBy::Tier, Correction::Holm, 0);
    assert_eq!(r.segments.len(), 5);
    let lifts: Vec<_> = r
        .segments
        .iter()
        .filter_map(|s| s.variants[1].conversion_lift.clone())
        .collect();
    assert_eq!(lifts.len(), 5, "every segment is large enough to compare");
    let corrected = lifts
        .iter()
        .any(|l| l.p_value_corrected.expect("corrected") < 0.05);
    let uncorrected = lifts.iter().any(|l| l.p_value < 0.05);
    (corrected, uncorrected)
}

#[test]
fn holm_keeps_the_family_wise_error_across_five_segments() {
    let world = world();
    let (mut corrected, mut uncorrected) = (0, 0);
    for run in 0..SEGMENT_RUNS {
        let (c, u) = run_segmented_aa(world, run);
        corrected += c as usize;
        uncorrected += u as usize;
    }
    let n = SEGMENT_RUNS as f64;
    let (fwer, raw) = (corrected as f64 / n, uncorrected as f64 / n);
    eprintln!(
        "A/A over 5 segments, {SEGMENT_RUNS} runs: family-wise error {fwer:.3} with Holm, {raw:.3} uncorrected"
    );
    // "At most 5%" up to the simulation's own noise: the observed rate may
    // exceed 0.05 by at most 1.645 binomial standard errors (a one-sided
    // 95% check that the true rate is not above 5%).
    let noise = 1.645 * (0.05 * 0.95 / n).sqrt();
    assert!(fwer <= 0.05 + noise, "family-wise error {fwer} with Holm");
    // Five looks without a correction: about 1 - 0.95^5 = 23%.
    assert!(raw >= 0.15, "uncorrected family-wise error {raw}");
}
