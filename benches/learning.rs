//! Learning from outcomes: how many online updates per second one offer's
//! model takes (the Laplace step with its rank-one covariance update), what
//! the log's apply path pays per decision (three shown offers plus the
//! memory kept for delayed accepts), and the cost of a Thompson-sampling
//! decision against a greedy one.
//!
//! `cargo bench --bench learning`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use offer_engine::catalog::Catalog;
use offer_engine::decision::{
    decide_explored, DecisionInput, Engine, Explore, Ranking, Unconstrained,
};
use offer_engine::domain::{Channel, TierThresholds};
use offer_engine::features::{self, FeatureVector, N_FEATURES};
use offer_engine::state::learner::{Exploration, OnlineLearner, Posterior};
use offer_engine::synth;

fn features(n: usize) -> Vec<FeatureVector> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..n)
        .map(|_| {
            let mut x = [0f32; N_FEATURES];
            for v in x.iter_mut() {
                *v = if rng.gen_bool(0.5) {
                    rng.gen_range(0.0..2.0)
                } else {
                    0.0
                };
            }
            x
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let xs = features(1024);
    let mut g = c.benchmark_group("online");
    g.throughput(Throughput::Elements(1));
    g.bench_function("posterior_update", |b| {
        let mut p = Posterior::flat(1.0);
        let mut k = 0usize;
        b.iter(|| {
            k = (k + 1) & 1023;
            p.update(black_box(&xs[k]), k.is_multiple_of(17));
        })
    });
    g.bench_function("learner_decided_3_offers", |b| {
        let l = OnlineLearner::default();
        let offers = ["seat-extra-legroom", "lounge-dom", "wifi-flight-pass"];
        let mut k = 0u64;
        b.iter(|| {
            k += 1;
            let x = &xs[(k & 1023) as usize];
            l.decided(&format!("d{k}"), "M00000001", 0, black_box(x), &offers);
        })
    });
    g.finish();

    let engine = Engine::embedded_default();
    let th = TierThresholds::default();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
        .unwrap()
        .to_utc();
    let m = synth::member(42, 3, as_of, &th);
    let mut rng = synth::stream_rng(9, 9);
    let it = synth::itinerary(&mut rng, Some(&m), now);
    let x = features::for_checkout(Some(&m), &it, now, &th);
    let learner = OnlineLearner::default();
    learner.set_prior(engine.catalog.clone(), engine.table.clone());
    let catalog: std::sync::Arc<Catalog> = engine.catalog.clone();
    let mut g = c.benchmark_group("decide_with_exploration");
    for policy in [
        Exploration::Greedy,
        Exploration::EpsilonGreedy { epsilon: 0.05 },
        Exploration::Thompson,
    ] {
        g.bench_function(format!("{policy:?}"), |b| {
            let mut seed = 0u64;
            b.iter(|| {
                seed += 1;
                let slots = learner.slots(&catalog);
                let moments = |i: usize| slots[i].read().unwrap().logit_moments(&x);
                let explore = Explore {
                    policy,
                    seed,
                    draws: 64,
                    moments: &moments,
                };
                decide_explored(
                    &engine,
                    &DecisionInput {
                        member: Some(&m),
                        itinerary: Some(&it),
                        channel: Channel::Checkout,
                        now,
                        max_offers: 3,
                        ranking: Ranking::Model,
                    },
                    &Unconstrained,
                    None,
                    |i| learner.score(&slots[i], &x, engine.table.propensity(i, &x)),
                    Some(&explore),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(learning, benches);
criterion_main!(learning);
