//! `offer-engine train --data-dir`: a model learned from the engine's own
//! decision and outcome logs. The log is written here the way the server
//! writes it (decision records with features and propensities, accept
//! outcomes), from the synthetic world whose hidden ground truth draws the
//! accepts; the command must recover a model that ranks well on held-out
//! decisions, write it versioned with its card, and refuse misuse.

use chrono::{NaiveDate, TimeZone, Utc};
use offer_engine::catalog::Catalog;
use offer_engine::domain::TierThresholds;
use offer_engine::events::{OutcomeKind, OutcomeRecord};
use offer_engine::model::ModelFile;
use offer_engine::state::ledger::{DecisionRecord, IssuedOffer};
use offer_engine::state::LogRecord;
use offer_engine::synth::{self, GroundTruth};
use offer_engine_wal::{Wal, WalOptions};
use rand::Rng;

/// Writes `n` logged checkout decisions (up to 3 offers each, picked at
/// random among the eligible ones) and their accepts; returns accepts written.
fn write_log(dir: &std::path::Path, n: u64) -> usize {
    let th = TierThresholds::default();
    let catalog = Catalog::default_catalog();
    let truth = GroundTruth::new(42);
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let members: Vec<_> = (0..3_000)
        .map(|i| synth::member(42, i, as_of, &th))
        .collect();
    let mut rng = synth::stream_rng(7, 1);
    let start = Utc.from_utc_datetime(&as_of.and_hms_opt(6, 0, 0).unwrap());
    let opts = WalOptions {
        fsync: false,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir, opts, |_| Ok(())).unwrap();
    let mut accepts = 0;
    for k in 0..n {
        let c = synth::Checkout::draw(&mut rng, &members, start, 60 * 24 * 20, &th);
        let (m, it, channel, now, x) = (c.member, &c.itinerary, c.channel, c.now, c.x);
        let ectx = c.eligibility(&th);
        let eligible: Vec<usize> = (0..catalog.offers.len())
            .filter(|i| catalog.offers[*i].eligible(&ectx).is_ok())
            .collect();
        let shown: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.3))
            .take(3)
            .collect();
        if shown.is_empty() {
            continue;
        }
        let id = format!("d-{k:07}");
        let member_id = format!("M{k:08}");
        let offers = shown
            .iter()
            .map(|i| IssuedOffer {
                offer_id: catalog.offers[*i].id.clone(),
                price: None,
                points_price: None,
                expires_ms: now.timestamp_millis() + 3_600_000,
                inventory: None,
                suppress_days: 30,
                propensity: 0.3,
            })
            .collect();
        let d = DecisionRecord {
            id: id.clone(),
            member_id: member_id.clone(),
            channel,
            created_ms: now.timestamp_millis(),
            offers,
            experiments: Vec::new(),
            covariate: 0.0,
            features: x.to_vec(),
        };
        wal.append_blocking(LogRecord::Decision(d).encode(), |_| ())
            .unwrap();
        let mut outcomes = Vec::new();
        for (pos, i) in shown.iter().enumerate() {
            let offer = &catalog.offers[*i];
            let p = truth.probability(offer, Some(m), Some(it), channel, now, &th);
            if rng.gen_bool(p) {
                outcomes.push(OutcomeRecord {
                    decision_id: id.clone(),
                    offer_pos: pos as u8,
                    offer_id: offer.id.clone(),
                    member_id: member_id.clone(),
                    kind: OutcomeKind::Accept,
                    revenue: 100.0,
                    at_ms: now.timestamp_millis() + 60_000,
                    client_at_ms: None,
                    inventory: None,
                    suppress_days: 30,
                    experiments: Vec::new(),
                    learn: true,
                });
            }
        }
        if !outcomes.is_empty() {
            accepts += outcomes.len();
            wal.append_blocking(LogRecord::Outcomes(outcomes).encode(), |_| ())
                .unwrap();
        }
    }
    wal.close();
    accepts
}

fn train(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_offer-engine"))
        .arg("train")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_model_trained_from_the_engines_logs_ranks_held_out_decisions() {
    let data = tempfile::tempdir().unwrap();
    let accepts = write_log(data.path(), 40_000);
    assert!(accepts > 1_000, "{accepts} accepts");
    let out_dir = tempfile::tempdir().unwrap();
    let model = out_dir.path().join("propensity-lr-test.json");
    let card = out_dir.path().join("propensity-lr-test.md");
    let o = train(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--version",
        "propensity-lr-test",
        "--out",
        model.to_str().unwrap(),
        "--card",
        card.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&model).unwrap();
    let m = ModelFile::from_json(&text).expect("the engine loads the new model");
    assert_eq!(m.version, "propensity-lr-test");
    let t = &m.training;
    assert_eq!(t["source"], "engine logs");
    assert_eq!(t["accepts"].as_u64().unwrap() as usize, accepts);
    // Held-out AUC against the accepts the hidden ground truth drew; the
    // shipped model reaches about 0.69 on uniformly logged data.
    let auc = t["heldout_auc"].as_f64().unwrap();
    assert!(auc > 0.64, "held-out AUC {auc}");
    assert!(t["heldout_truth_auc"].is_null(), "no ground truth in logs");
    let card = std::fs::read_to_string(&card).unwrap();
    assert!(card.contains("engine's own decision and outcome logs"));
    assert!(card.contains("| n/a |"));
    assert!(card.contains("## Calibration"));
}

#[test]
fn training_from_logs_refuses_the_shipped_version_and_a_log_without_features() {
    let data = tempfile::tempdir().unwrap();
    write_log(data.path(), 50);
    let o = train(&["--data-dir", data.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--version"));

    // A log whose decisions carry no features (campaign decisions) has nothing to learn from.
    let empty = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(empty.path(), WalOptions::default(), |_| Ok(())).unwrap();
    let d = DecisionRecord {
        id: "d-1".into(),
        member_id: "M00000001".into(),
        channel: offer_engine::domain::Channel::Email,
        created_ms: 0,
        offers: Vec::new(),
        experiments: Vec::new(),
        covariate: 0.0,
        features: Vec::new(),
    };
    wal.append_blocking(LogRecord::Decision(d).encode(), |_| ())
        .unwrap();
    wal.close();
    drop(wal);
    let out = tempfile::tempdir().unwrap();
    let o = train(&[
        "--data-dir",
        empty.path().to_str().unwrap(),
        "--version",
        "propensity-lr-test",
        "--out",
        out.path().join("m.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no usable examples"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
