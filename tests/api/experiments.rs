use offer_engine::experiments::ExperimentSpec;
use serde_json::{json, Value};

use crate::helpers::*;

async fn app_with_experiments() -> TestApp {
    spawn_with(
        settings_with_default_experiments(),
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
    )
    .await
}

#[tokio::test]
async fn experiments_are_listed() {
    let app = app_with_experiments().await;
    let body: Value = app.get("/v1/experiments").await.json().await.unwrap();
    let e = &body["experiments"][0];
    assert_eq!(e["id"], "nbo-model-vs-priority");
    assert_eq!(e["control"], "control");
    let weights: Vec<u64> = e["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, vec![45, 45, 10]);
    assert_problem(
        app.get("/v1/experiments/nope/report").await,
        404,
        Some("id"),
    )
    .await;
}

#[tokio::test]
async fn decisions_carry_sticky_assignments_and_holdout_gets_nothing() {
    let app = app_with_experiments().await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    let mut seen_holdout = false;
    for i in 1..=200 {
        let id = format!("M{i:08}");
        let expected = &spec.variants[spec.assign(&id).unwrap()].name;
        for _ in 0..2 {
            let body: Value = app
                .post_offers(&offer_request(&id))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(
                body["experiments"],
                json!([{"experiment": spec.id, "variant": expected}])
            );
            if expected == "holdout" {
                seen_holdout = true;
                assert!(body["offers"].as_array().unwrap().is_empty());
            }
        }
    }
    assert!(seen_holdout);
}

#[tokio::test]
async fn report_counts_members_exposures_and_conversions() {
    let app = app_with_experiments().await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    let mut expected_members = std::collections::HashMap::<String, u64>::new();
    let mut expected_conversions = std::collections::HashMap::<String, u64>::new();
    let mut expected_revenue = std::collections::HashMap::<String, f64>::new();
    for i in 1..=300 {
        let id = format!("M{i:08}");
        let variant = spec.variants[spec.assign(&id).unwrap()].name.clone();
        *expected_members.entry(variant.clone()).or_default() += 1;
        let body: Value = app
            .post_offers(&offer_request(&id))
            .await
            .json()
            .await
            .unwrap();
        // Every third member accepts their first offer (if they got one).
        if i % 3 == 0 {
            if let Some(o) = body["offers"].as_array().unwrap().first() {
                let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                e["token"] = o["token"].clone();
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
                *expected_conversions.entry(variant.clone()).or_default() += 1;
                *expected_revenue.entry(variant.clone()).or_default() +=
                    o["price"]["amount"].as_f64().unwrap_or(0.0);
            }
        }
    }
    // Exposures are applied once the decisions are durable (one group commit).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r: Value = app
        .get(&format!("/v1/experiments/{}/report", spec.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["experiment"], spec.id);
    assert_eq!(r["control"], "control");
    assert!(r["srm_p_value"].as_f64().unwrap() > 0.0);
    for v in r["variants"].as_array().unwrap() {
        let name = v["variant"].as_str().unwrap();
        assert_eq!(v["members"], expected_members[name], "{v}");
        assert_eq!(v["exposures"], expected_members[name], "{v}");
        assert_eq!(
            v["conversions"],
            expected_conversions.get(name).copied().unwrap_or(0),
            "{v}"
        );
        let members = expected_members[name] as f64;
        let mean = expected_revenue.get(name).copied().unwrap_or(0.0) / members;
        assert!(
            (v["revenue_per_member"]["mean"].as_f64().unwrap() - mean).abs() < 1e-6,
            "{v}"
        );
        if name == "control" {
            assert!(v["conversion_lift"].is_null() && v["chance_to_beat_control"].is_null());
        } else {
            let l = &v["conversion_lift"];
            for k in ["absolute", "relative", "ci_low", "ci_high", "p_value"] {
                assert!(l[k].is_number(), "{k} missing in {v}");
            }
            assert!(v["sequential_p_value"].is_number());
            assert!(v["revenue_lift"].is_object() && v["cuped_revenue_lift"].is_object());
            let verdict = v["verdict"].as_str().unwrap();
            assert!(verdict.contains("always-valid p"), "{verdict}");
            assert!(v["sample_size_needed"].as_u64().unwrap() > 0, "{v}");
            assert!(l.get("p_value_corrected").is_none(), "{v}");
        }
    }
    // Holdout members converted nothing: they were shown nothing.
    let holdout = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "holdout")
        .unwrap();
    assert_eq!(holdout["conversions"], 0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("offer_engine_experiment_members_total{experiment=\"nbo-model-vs-priority\",variant=\"model\"}"));
    assert!(metrics
        .contains("offer_engine_experiment_srm_p_value{experiment=\"nbo-model-vs-priority\"}"));
}

#[tokio::test]
async fn the_report_survives_a_restart() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(settings_with_default_experiments(), dir.clone()).await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    for i in 1..=100 {
        let body: Value = app
            .post_offers(&offer_request(&format!("M{i:08}")))
            .await
            .json()
            .await
            .unwrap();
        if let Some(o) = body["offers"].as_array().unwrap().first() {
            let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
            if o["price"].is_object() {
                e["revenue"] = o["price"].clone();
            }
            e["token"] = o["token"].clone();
            assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before: Value = app
        .get(&format!("/v1/experiments/{}/report", spec.id))
        .await
        .json()
        .await
        .unwrap();
    let before_by_tier: Value = app
        .get(&format!("/v1/experiments/{}/report?by=tier", spec.id))
        .await
        .json()
        .await
        .unwrap();
    // The data dir is locked by the running server: a second one is refused.
    let mut same = settings_with_default_experiments();
    same.durability.data_dir = dir.path().display().to_string();
    let Err(err) = offer_engine::startup::open_state(
        &same,
        std::sync::Arc::new(offer_engine::durable::Silent),
    ) else {
        panic!("a second process opened a data dir in use");
    };
    assert!(err.to_string().contains("in use"), "{err}");
    // A copy of the (idle) data dir, as a restart would find it, replays to the same report.
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
    }
    let mut s = settings_with_default_experiments();
    s.durability.data_dir = copy.path().display().to_string();
    let durable =
        offer_engine::startup::open_state(&s, std::sync::Arc::new(offer_engine::durable::Silent))
            .unwrap()
            .0;
    let after = serde_json::to_value(
        durable
            .state()
            .experiments()
            .report(&spec, durable.state().log_time_ms()),
    )
    .unwrap();
    // Segments were recorded at first exposure and come back from the log.
    let after_by_tier = serde_json::to_value(durable.state().experiments().segmented_report(
        &spec,
        offer_engine::experiments::SegmentBy::Tier,
        offer_engine::stats::Correction::Holm,
        durable.state().log_time_ms(),
    ))
    .unwrap();
    // Counts exactly (sums of revenue may differ in the last bit with the
    // order the exposures are scanned in).
    // Per segment: its name and each variant's (members, exposures, conversions).
    type Counts = Vec<(String, Vec<(u64, u64, u64)>)>;
    let counts = |r: &Value| -> Counts {
        r["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let rows = s["variants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        (
                            v["members"].as_u64().unwrap(),
                            v["exposures"].as_u64().unwrap(),
                            v["conversions"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                (s["segment"].as_str().unwrap().to_string(), rows)
            })
            .collect()
    };
    assert_eq!(counts(&before_by_tier), counts(&after_by_tier));
    assert!(!counts(&before_by_tier).is_empty());
    for (b, a) in before["variants"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["variants"].as_array().unwrap())
    {
        for k in ["members", "exposures", "conversions"] {
            assert_eq!(b[k], a[k], "{k}: {b} vs {a}");
        }
        assert!(
            (b["revenue_per_member"]["mean"].as_f64().unwrap()
                - a["revenue_per_member"]["mean"].as_f64().unwrap())
            .abs()
                < 1e-9
        );
    }
}

#[tokio::test]
async fn a_variant_can_score_with_its_own_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: Value = serde_json::from_str(offer_engine::model::DEFAULT_MODEL).unwrap();
    model["version"] = json!("challenger-v2");
    let model_path = dir.path().join("challenger.json");
    std::fs::write(&model_path, model.to_string()).unwrap();
    let exp_path = dir.path().join("experiments.toml");
    std::fs::write(
        &exp_path,
        format!(
            "[[experiment]]\nid = \"models\"\nsalt = \"m1\"\ntraffic = 1.0\n\
             [[experiment.variant]]\nname = \"champion\"\ncontrol = true\nweight = 1\n\
             [[experiment.variant]]\nname = \"challenger\"\nweight = 1\nmodel = {:?}\n",
            model_path.display().to_string()
        ),
    )
    .unwrap();
    let mut settings = test_settings();
    settings.experiments.file = exp_path.display().to_string();
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let mut seen = std::collections::HashSet::new();
    for i in 1..=40 {
        let body: Value = app
            .post_offers(&offer_request(&format!("M{i:08}")))
            .await
            .json()
            .await
            .unwrap();
        let variant = body["experiments"][0]["variant"]
            .as_str()
            .unwrap()
            .to_string();
        let expected = if variant == "challenger" {
            "challenger-v2"
        } else {
            "propensity-lr-v1"
        };
        assert_eq!(body["model_version"], expected, "{body}");
        seen.insert(variant);
    }
    assert_eq!(seen.len(), 2);
}

/// `?by=` splits every figure by the member's segment at first exposure,
/// with p-values corrected across segments beside the uncorrected ones.
#[tokio::test]
async fn the_report_by_segment_corrects_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let exp_path = dir.path().join("experiments.toml");
    std::fs::write(
        &exp_path,
        "[[experiment]]\nid = \"seg\"\nsalt = \"s1\"\ntraffic = 1.0\nsegment_min_members = 8\n\
         [[experiment.guardrail]]\nmetric = \"conversion_rate\"\nmargin = 0.05\n\
         [[experiment.guardrail]]\nmetric = \"decline_rate\"\nmargin = 0.05\n\
         [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
         [[experiment.variant]]\nname = \"model\"\nweight = 1\nranking = \"model\"\n",
    )
    .unwrap();
    let mut settings = test_settings();
    settings.experiments.file = exp_path.display().to_string();
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    let mut tier_of = std::collections::HashMap::new();
    // Per variant: members, members who declined.
    let mut declined = std::collections::HashMap::<String, (f64, f64)>::new();
    for i in 1..=240 {
        let id = format!("M{i:08}");
        let tier = app
            .state
            .state()
            .members()
            .get(&id)
            .map(|m| m.tier.as_str());
        tier_of.insert(id.clone(), tier.unwrap_or("unknown"));
        let body: Value = app
            .post_offers(&offer_request(&id))
            .await
            .json()
            .await
            .unwrap();
        let variant = spec.variants[spec.assign(&id).unwrap()].name.clone();
        declined.entry(variant.clone()).or_default().0 += 1.0;
        if i % 2 == 0 {
            if let Some(o) = body["offers"].as_array().unwrap().first() {
                let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                e["token"] = o["token"].clone();
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
            }
        } else if i % 3 == 0 {
            if let Some(o) = body["offers"].as_array().unwrap().last() {
                let e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "decline"});
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
                declined.entry(variant).or_default().1 += 1.0;
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let whole: Value = app
        .get("/v1/experiments/seg/report")
        .await
        .json()
        .await
        .unwrap();
    // Guardrails: one per metric for the one variant that shows offers.
    let guardrails = whole["guardrails"].as_array().unwrap();
    assert_eq!(guardrails.len(), 2, "{whole}");
    let rate = |v: &str| declined[v].1 / declined[v].0;
    let decline = guardrails
        .iter()
        .find(|g| g["metric"] == "decline_rate")
        .unwrap();
    assert_eq!(decline["variant"], "model");
    let harm = decline["harm"].as_f64().unwrap();
    assert!(
        (harm - (rate("model") - rate("control"))).abs() < 1e-12,
        "{decline}"
    );
    for g in guardrails {
        assert!(["ok", "warning", "failing"].contains(&g["status"].as_str().unwrap()));
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("offer_engine_experiment_guardrail_status{")
                && l.contains("experiment=\"seg\"")
                && l.contains("metric=\"decline_rate\"")
        })
        .expect("guardrail gauge exported");
    let status = ["ok", "warning", "failing"]
        .iter()
        .position(|s| *s == decline["status"])
        .unwrap();
    assert!(line.ends_with(&format!(" {status}")), "{line}");
    for correction in ["holm", "bh"] {
        let r: Value = app
            .get(&format!(
                "/v1/experiments/seg/report?by=tier&correction={correction}"
            ))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["experiment"], "seg");
        assert_eq!(r["by"], "tier");
        assert_eq!(r["correction"], correction);
        assert_eq!(r["min_members"], 8);
        let segments = r["segments"].as_array().unwrap();
        // Members add up to the whole report's, segment by segment to the tiers.
        for (k, whole_row) in whole["variants"].as_array().unwrap().iter().enumerate() {
            let sum: u64 = segments
                .iter()
                .map(|s| s["variants"][k]["members"].as_u64().unwrap())
                .sum();
            assert_eq!(sum, whole_row["members"].as_u64().unwrap());
        }
        let mut tiers: Vec<&str> = tier_of.values().copied().collect();
        tiers.sort();
        tiers.dedup();
        let names: Vec<&str> = segments
            .iter()
            .map(|s| s["segment"].as_str().unwrap())
            .collect();
        for n in &names {
            assert!(tiers.contains(n), "{n} not in {tiers:?}");
        }
        let mut family = Vec::new();
        for s in segments {
            let model = &s["variants"][1];
            let control = &s["variants"][0];
            let small =
                model["members"].as_u64().unwrap() < 8 || control["members"].as_u64().unwrap() < 8;
            if small {
                assert!(model["conversion_lift"].is_null(), "{s}");
                assert!(
                    model["verdict"].as_str().unwrap().contains("too few"),
                    "{s}"
                );
            } else if let Some(l) = model["conversion_lift"].as_object() {
                let (p, q) = (
                    l["p_value"].as_f64().unwrap(),
                    l["p_value_corrected"].as_f64().unwrap(),
                );
                assert!(q >= p - 1e-15 && q <= 1.0, "{s}");
                family.push((p, q));
                let verdict = model["verdict"].as_str().unwrap();
                assert!(
                    verdict.contains(&format!("{correction}-corrected p")),
                    "{verdict}"
                );
            }
        }
        assert!(!family.is_empty(), "no segment was large enough: {r}");
        let p: Vec<f64> = family.iter().map(|f| f.0).collect();
        let want = if correction == "holm" {
            offer_engine::stats::holm_adjusted(&p)
        } else {
            offer_engine::stats::bh_adjusted(&p)
        };
        for ((_, q), w) in family.iter().zip(want) {
            assert!((q - w).abs() < 1e-12);
        }
    }
    for by in ["value_segment", "traveller", "home_airport", "channel"] {
        let r: Value = app
            .get(&format!("/v1/experiments/seg/report?by={by}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r["correction"], "holm");
        assert!(!r["segments"].as_array().unwrap().is_empty(), "{by}: {r}");
    }
    let r: Value = app
        .get("/v1/experiments/seg/report?by=traveller")
        .await
        .json()
        .await
        .unwrap();
    for s in r["segments"].as_array().unwrap() {
        assert!(["business", "leisure"].contains(&s["segment"].as_str().unwrap()));
    }
    assert_problem(
        app.get("/v1/experiments/seg/report?by=postcode").await,
        422,
        Some("by"),
    )
    .await;
    assert_problem(
        app.get("/v1/experiments/seg/report?by=tier&correction=bonferroni")
            .await,
        422,
        Some("correction"),
    )
    .await;
}

/// Offers to members `from..to`; every second one accepts its first offer
/// and every third flies (a member event inside the loyalty window).
async fn traffic(app: &TestApp, from: u32, to: u32) {
    for i in from..to {
        let id = format!("M{i:08}");
        let body: Value = app
            .post_offers(&offer_request(&id))
            .await
            .json()
            .await
            .unwrap();
        if i % 2 == 0 {
            if let Some(o) = body["offers"].as_array().unwrap().first() {
                let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                e["token"] = o["token"].clone();
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
            }
        }
        if i % 3 == 0 {
            let r = app
                .post_json(
                    "/v1/member-events",
                    &json!({"member_id": id, "type": "flight_flown", "qualifying_spend": 1500}),
                )
                .await;
            assert_eq!(r.status(), 202);
        }
    }
    // Applied once durable (group commit).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_time_series_and_loyalty_outcomes_survive_a_restart() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(settings_with_default_experiments(), dir.clone()).await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    let path = format!("/v1/experiments/{}/timeseries", spec.id);
    let empty: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(empty, json!({"experiment": spec.id, "days": []}));
    // Half the traffic before a snapshot, half after: a restart restores
    // the snapshot and replays the rest of the log.
    traffic(&app, 1, 61).await;
    assert_eq!(
        app.post_json("/v1/admin/snapshot", &json!({}))
            .await
            .status(),
        200
    );
    traffic(&app, 61, 121).await;
    let before: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(before["experiment"], spec.id);
    let days = before["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "one log day: {before}");
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(days[0]["day"], today);
    let variants = days[0]["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["control", "model", "holdout"]);
    let members: u64 = variants
        .iter()
        .map(|v| v["members"].as_u64().unwrap())
        .sum();
    assert_eq!(members, 120);
    for v in variants {
        for k in ["members", "conversions", "value"] {
            assert!(v[k].is_number(), "{k} in {v}");
        }
        if v["variant"] == "control" {
            assert!(v["conversion_lift"].is_null() && v["sequential_p_value"].is_null());
        } else {
            assert!(v["sequential_p_value"].is_number(), "{v}");
        }
    }
    let model = &variants[1];
    assert!(model["conversions"].as_u64().unwrap() > 0, "{model}");
    assert!(model["conversion_lift"]["ci_low"].is_number(), "{model}");
    let report: Value = app
        .get(&format!("/v1/experiments/{}/report", spec.id))
        .await
        .json()
        .await
        .unwrap();
    let loyalty = |r: &Value| -> Vec<Value> {
        r["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                json!([
                    v["loyalty_members"],
                    v["flights_per_member"],
                    v["spend_per_member"],
                    v["tier_up_rate"],
                    v["lapse_members"]
                ])
            })
            .collect()
    };
    let flown: f64 = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["flights_per_member"]["mean"].as_f64().unwrap()
                * v["loyalty_members"].as_f64().unwrap()
        })
        .sum();
    assert!(
        (flown - 40.0).abs() < 1e-9,
        "40 flights inside the windows: {report}"
    );
    // The windows (90 days) have not ended: no lapse is judged yet.
    assert!(report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["lapse_members"] == 0 && v["lapse_lift"].is_null()));
    let restarted = spawn_with(settings_with_default_experiments(), copy_dir(dir.path())).await;
    let after: Value = restarted.get(&path).await.json().await.unwrap();
    assert_eq!(after, before);
    let report_after: Value = restarted
        .get(&format!("/v1/experiments/{}/report", spec.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(loyalty(&report_after), loyalty(&report));
    assert_problem(
        app.get("/v1/experiments/nope/timeseries").await,
        404,
        Some("id"),
    )
    .await;
}
