//! Per-request cost of access control and offer tokens:
//!
//! - `security/authenticate_scoped_key`: lookup by the id in the key, HMAC,
//!   constant-time compare (every protected request pays this once);
//! - `security/sign_token`: a one-offer decision's token (v2: the
//!   decision's blocks and the offer's);
//! - `security/sign_token_per_offer`: each further offer of a decision
//!   (v2, the decision's blocks already hashed);
//! - `security/verify_token`: an accept's token check (v2);
//! - `security/sign_token_v1`, `security/verify_token_v1`: the former form,
//!   for comparison (v1 tokens still verify).
//!
//! Run: `cargo bench --bench security -- --warm-up-time 2 --measurement-time 5`;
//! `cargo bench --bench security -- --test` runs each once as a smoke test.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use offer_engine::auth::{generate_key, KeyStore, RateDefaults, Scopes};
use offer_engine::domain::Money;
use offer_engine::tokens::{Terms, TokenKey};

fn bench(c: &mut Criterion) {
    let mut specs = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..100 {
        let (k, s) = generate_key(Scopes::parse(&["offers", "events"]).unwrap());
        keys.push(k);
        specs.push(s);
    }
    let store = KeyStore::new(
        "benchmark-master-key-0123456789",
        &specs,
        RateDefaults {
            requests_per_second: 0.0,
            burst: 0.0,
        },
    )
    .unwrap();
    let mut g = c.benchmark_group("security");
    let mut i = 0;
    g.bench_function("authenticate_scoped_key", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.authenticate(black_box(&keys[i])).is_some())
        })
    });
    let key = TokenKey::derive(b"benchmark token secret", "offer-engine offer token v1");
    let price = Money {
        amount: 2560.0,
        currency: "CNY".into(),
    };
    let terms = Terms {
        decision_id: "00eb8817-1af3-410c-a64c-e140da04435c",
        member_id: "M00000042",
        offer_id: "upg-biz-dom-cash",
        price: Some(&price),
        points_price: None,
        expires_ms: 1_795_000_000_000,
    };
    g.bench_function("sign_token", |b| {
        b.iter(|| black_box(key.sign(black_box(&terms))))
    });
    let signer = key.for_decision(terms.decision_id, terms.member_id);
    g.bench_function("sign_token_per_offer", |b| {
        b.iter(|| black_box(signer.sign(black_box(&terms))))
    });
    let token = key.sign(&terms);
    g.bench_function("verify_token", |b| {
        b.iter(|| black_box(key.verify(black_box(&token), &terms).is_ok()))
    });
    // v2 (HMAC-SHA256, issued before the v3 tokens above): still verified.
    g.bench_function("sign_token_v2", |b| {
        b.iter(|| black_box(key.sign_v2(black_box(&terms))))
    });
    let token_v2 = key.sign_v2(&terms);
    g.bench_function("verify_token_v2", |b| {
        b.iter(|| black_box(key.verify(black_box(&token_v2), &terms).is_ok()))
    });
    g.bench_function("sign_token_v1", |b| {
        b.iter(|| black_box(key.sign_v1(black_box(&terms))))
    });
    let token_v1 = key.sign_v1(&terms);
    g.bench_function("verify_token_v1", |b| {
        b.iter(|| black_box(key.verify(black_box(&token_v1), &terms).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
