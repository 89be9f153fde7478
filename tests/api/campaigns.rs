use serde_json::{json, Value};

use crate::helpers::error_fields;
use crate::helpers::*;

async fn campaign(app: &TestApp, body: &Value) -> (u16, String) {
    let r = app.post_json("/v1/campaigns", body).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn campaigns_stream_ndjson_and_their_accepts_count_in_the_experiment() {
    let app = spawn_with(
        settings_with_default_experiments(),
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
    )
    .await;
    let (status, text) = campaign(
        &app,
        &json!({"channel": "email", "tiers": ["gold", "platinum", "diamond"], "offers": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let lines = parse(&text);
    assert!(lines.len() > 20, "{}", lines.len());
    for l in &lines {
        assert!(l["decision_id"].as_str().unwrap().starts_with("cmp-"));
        assert_eq!(l["experiments"][0]["experiment"], "nbo-model-vs-priority");
        assert_ne!(l["experiments"][0]["variant"], "holdout");
        let offers = l["offers"].as_array().unwrap();
        assert!(!offers.is_empty() && offers.len() <= 2);
        for k in [
            "offer_id",
            "category",
            "title",
            "score",
            "expected_value",
            "reasons",
            "expires_at",
        ] {
            assert!(!offers[0][k].is_null(), "{k} missing: {l}");
        }
        // The same structured reasons as checkout: documented codes, no text.
        for o in offers {
            for r in o["reasons"].as_array().unwrap() {
                let code = r["code"].as_str().unwrap_or_else(|| panic!("{r}"));
                assert!(offer_engine::reasons::CODES.contains(&code), "{r}");
                assert!(r.get("text").is_none(), "{r}");
            }
        }
    }
    // Accept the first offer of the first line, as the email's landing page would.
    let l = &lines[0];
    let o = &l["offers"][0];
    let mut e =
        json!({"decision_id": l["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
    if o["price"].is_object() {
        e["revenue"] = o["price"].clone();
    }
    e["token"] = o["token"].clone();
    // Campaign decisions are remembered before their line is streamed.
    assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r: Value = app
        .get("/v1/experiments/nbo-model-vs-priority/report")
        .await
        .json()
        .await
        .unwrap();
    let variant = l["experiments"][0]["variant"].as_str().unwrap();
    let v = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == variant)
        .unwrap();
    assert_eq!(v["conversions"], 1, "{r}");
    let holdout = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "holdout")
        .unwrap();
    assert!(
        holdout["members"].as_u64().unwrap() > 0,
        "holdout members are recorded as exposed: {r}"
    );
}

#[tokio::test]
async fn a_declined_campaign_offer_is_not_sent_again() {
    let app = spawn_app().await;
    let body = json!({"channel": "app", "limit": 5, "offers": 1});
    let (_, text) = campaign(&app, &body).await;
    let first = parse(&text);
    let l = &first[0];
    let e = json!({"decision_id": l["decision_id"], "offer_id": l["offers"][0]["offer_id"], "type": "decline"});
    assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
    let mut body = body.clone();
    body["campaign_id"] = json!("second-wave");
    let (_, text) = campaign(&app, &body).await;
    let again = parse(&text);
    let same = again.iter().find(|x| x["member_id"] == l["member_id"]);
    if let Some(same) = same {
        assert_ne!(same["offers"][0]["offer_id"], l["offers"][0]["offer_id"]);
    }
}

#[tokio::test]
async fn bad_filters_are_refused_before_scoring() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"channel": "checkout"}), "channel"),
        (
            json!({"channel": "email", "tiers": ["gold", "bronze"]}),
            "tiers[1]",
        ),
        (
            json!({"channel": "email", "home_airports": ["XXX"]}),
            "home_airports[0]",
        ),
        (
            json!({"channel": "email", "min_points": 5000, "max_points": 10}),
            "min_points",
        ),
        (json!({"channel": "email", "birth_month": 0}), "birth_month"),
        (json!({"channel": "email", "date": "2001-01-01"}), "date"),
        (json!({"channel": "email", "segment": "vip"}), "segment"),
    ] {
        assert_problem(
            app.post_json("/v1/campaigns", &body).await,
            422,
            Some(field),
        )
        .await;
    }
}

#[tokio::test]
async fn every_bad_campaign_field_is_reported_at_once() {
    let app = spawn_app().await;
    let body = serde_json::json!({"channel": "email", "tiers": ["gold", "tin"], "birth_month": 13, "offers": 11});
    let p = assert_problem(
        app.post_json("/v1/campaigns", &body).await,
        422,
        Some("tiers[1]"),
    )
    .await;
    let fields = error_fields(&p);
    assert_eq!(fields, ["tiers[1]", "birth_month", "offers"], "{p}");
}
