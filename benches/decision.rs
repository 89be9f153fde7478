//! Latency of the in-process decision, from member lookup to ranked offers,
//! with the compiled-in catalog and model over a store of 100,000 synthetic
//! members and a pool of 1,000 realistic itineraries.
//!
//! - `decision/checkout_service`: the real checkout use case
//!   (`Service::checkout`): member lookup, the member's variant policy,
//!   suppressions, daily cap and inventory, the adaptive models, exploration,
//!   three signed tokens, metrics and the decision committed to the log (a
//!   data dir in a temporary directory, fsync on, as served);
//! - `decision/checkout_known_member`: `store.get` + `decide`, the core alone;
//! - `decision/cold_start`: `decide` for an unknown member;
//! - `decision/features_build`: the feature vector alone;
//! - `decision/eligibility_and_scoring`: eligibility, propensity and expected
//!   value over the whole catalog for a prepared feature vector.
//!
//! Run: `cargo bench --bench decision -- --warm-up-time 2 --measurement-time 5`;
//! `cargo bench --bench decision -- --test` runs each once as a smoke test.

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use offer_engine::catalog::EligibilityContext;
use offer_engine::config::Settings;
use offer_engine::decision::{decide, DecisionInput, Engine, Ranking, Unconstrained};
use offer_engine::domain::{Channel, Itinerary, Member, OfferRequest, DEFAULT_MAX_OFFERS};
use offer_engine::features;
use offer_engine::startup::populate_synthetic;
use offer_engine::state::members::MemberStore;
use offer_engine::synth;

const MEMBERS: u64 = 100_000;
const SEED: u64 = 42;
/// Member ids looked up, in a shuffled order, cycled through.
const LOOKUPS: usize = 16_384;
/// Itineraries in the pool, cycled through.
const ITINERARIES: usize = 1_000;

struct World {
    engine: Engine,
    store: MemberStore,
    ids: Vec<String>,
    members: Vec<Member>,
    itineraries: Vec<Itinerary>,
    now: DateTime<Utc>,
}

fn world() -> World {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let engine = Engine::embedded_default();
    let store = MemberStore::with_capacity(MEMBERS as usize);
    populate_synthetic(&store, SEED, MEMBERS, as_of, &engine.thresholds);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut all: Vec<u64> = (0..MEMBERS).collect();
    all.shuffle(&mut rng);
    let ids: Vec<String> = all[..LOOKUPS]
        .iter()
        .map(|i| synth::member_id(*i))
        .collect();
    let members: Vec<Member> = ids
        .iter()
        .map(|id| store.get(id).expect("populated"))
        .collect();
    // Each itinerary is drawn for the member it will be decided with.
    let itineraries = (0..ITINERARIES)
        .map(|k| synth::itinerary(&mut rng, Some(&members[k]), now))
        .collect();
    World {
        engine,
        store,
        ids,
        members,
        itineraries,
        now,
    }
}

/// A checkout decision input for the `k`th itinerary of the pool.
fn checkout<'a>(w: &'a World, member: Option<&'a Member>, k: usize) -> DecisionInput<'a> {
    DecisionInput {
        member,
        itinerary: Some(&w.itineraries[k % ITINERARIES]),
        channel: Channel::Checkout,
        now: w.now,
        max_offers: DEFAULT_MAX_OFFERS,
        ranking: Ranking::Model,
    }
}

fn benches(c: &mut Criterion) {
    let w = world();
    let mut g = c.benchmark_group("decision");

    // The service as `serve` builds it, on its own synthetic population.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::load(None, std::iter::empty()).expect("defaults");
    settings.durability.data_dir = dir.path().display().to_string();
    settings.members.synthetic_count = MEMBERS;
    settings.members.synthetic_seed = SEED;
    let service = offer_engine::startup::build_service(&settings).expect("service");
    let now = Utc::now();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let requests: Vec<OfferRequest> = w.ids[..ITINERARIES]
        .iter()
        .map(|id| {
            let m = service.member(id).expect("populated");
            OfferRequest {
                member_id: id.clone(),
                channel: Channel::Checkout,
                itinerary: synth::itinerary(&mut rng, Some(&m), now),
                max_offers: DEFAULT_MAX_OFFERS,
                explain: false,
            }
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("checkout_service", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let req = requests[k % ITINERARIES].clone();
            black_box(service.checkout(req, Utc::now(), Instant::now()))
        })
    });

    let mut k = 0usize;
    g.bench_function("checkout_known_member", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let id = &w.ids[k % LOOKUPS];
            let member = w.store.get(black_box(id));
            let input = checkout(&w, member.as_ref(), k);
            black_box(decide(&w.engine, black_box(&input), &Unconstrained))
        })
    });

    let mut k = 0usize;
    g.bench_function("cold_start", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let input = checkout(&w, None, k);
            black_box(decide(&w.engine, black_box(&input), &Unconstrained))
        })
    });

    let mut k = 0usize;
    g.bench_function("features_build", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            black_box(features::for_checkout(
                Some(black_box(&w.members[k % LOOKUPS])),
                &w.itineraries[k % ITINERARIES],
                w.now,
                &w.engine.thresholds,
            ))
        })
    });

    // Prepared inputs, so that only eligibility and scoring are timed.
    let prepared: Vec<_> = (0..ITINERARIES)
        .map(|k| {
            let m = &w.members[k];
            let it = &w.itineraries[k];
            let x = features::for_checkout(Some(m), it, w.now, &w.engine.thresholds);
            let gap = features::spend_to_next_tier(m, &w.engine.thresholds);
            (x, gap)
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("eligibility_and_scoring", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let j = k % ITINERARIES;
            let (x, gap) = &prepared[j];
            let it = &w.itineraries[j];
            let ectx = EligibilityContext::new(
                Some(&w.members[j]),
                Some(it),
                Channel::Checkout,
                w.now,
                *gap,
            );
            let mut best = 0.0f64;
            let mut eligible = 0usize;
            for (i, offer) in w.engine.catalog.offers.iter().enumerate() {
                if offer.eligible(black_box(&ectx)).is_err() {
                    continue;
                }
                let p = w.engine.table.propensity(i, x);
                let ev = p as f64 * offer.margin * offer.units(it.passengers) * offer.lever;
                best = best.max(ev);
                eligible += 1;
            }
            black_box((best, eligible))
        })
    });

    g.finish();
}

criterion_group!(decision, benches);
criterion_main!(decision);
