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

/// Every email offer of a campaign stays acceptable (its token verifies and
/// the accept is taken) for the email validity counted from the send time,
/// and none past that or the offer's window: checked at one minute before
/// and one second after each offer's expiry, with the service's clock set.
#[tokio::test]
async fn email_offers_are_acceptable_for_the_email_validity_after_the_send_time() {
    use chrono::{DateTime, Duration, NaiveTime, Utc};
    use offer_engine::domain::{Channel, Day};
    use offer_engine::events::OutcomeEventDto;
    use offer_engine::service::outcomes::OutcomeError;

    let app = spawn_app().await;
    let tomorrow = (Utc::now() + Duration::days(1)).date_naive();
    let cases = [
        // A send time tomorrow morning: 7 days of email validity from it.
        tomorrow.and_hms_opt(8, 0, 0).unwrap().and_utc(),
        // A send time a day before the offers' window ends (2030-12-31):
        // the window cuts the validity short.
        chrono::NaiveDate::from_ymd_opt(2030, 12, 30)
            .unwrap()
            .and_hms_opt(20, 0, 0)
            .unwrap()
            .and_utc(),
    ];
    let catalog = app.state.engine().catalog.clone();
    for send_at in cases {
        let (status, text) = campaign(
            &app,
            &json!({"channel": "email", "offers": 3, "limit": 25, "send_at": send_at.to_rfc3339()}),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let lines = parse(&text);
        assert_eq!(lines.len(), 25);
        let mut accepted = 0;
        for l in &lines {
            // The fields a template needs beside the offers.
            let m = &l["member"];
            assert!(m["tier"].is_string() && m["points"].is_u64(), "{l}");
            assert!(m["value_segment"].is_string(), "{l}");
            assert_eq!(m["next_tier"].is_null(), m["tier"] == "diamond", "{l}");
            assert_eq!(
                m["next_tier"].is_null(),
                m["spend_to_next_tier_cny"].is_null()
            );
            for o in l["offers"].as_array().unwrap() {
                let (_, offer) = catalog.get(o["offer_id"].as_str().unwrap()).unwrap();
                let expires: DateTime<Utc> = o["expires_at"].as_str().unwrap().parse().unwrap();
                let window_end = Day(offer.valid_to.0 + 1)
                    .to_date()
                    .and_time(NaiveTime::MIN)
                    .and_utc();
                let validity = Duration::minutes(offer.validity.minutes(Channel::Email) as i64);
                assert_eq!(expires, (send_at + validity).min(window_end), "{o}");
                assert!(expires <= window_end && expires > send_at, "{o}");
                let mut e = json!({
                    "decision_id": l["decision_id"], "offer_id": o["offer_id"],
                    "type": "accept", "token": o["token"],
                });
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                let e: OutcomeEventDto = serde_json::from_value(e).unwrap();
                let late = app
                    .state
                    .record_outcomes(vec![e.clone()], false, expires + Duration::seconds(1))
                    .await;
                assert!(
                    matches!(late, Err(OutcomeError::Expired { .. })),
                    "{late:?}"
                );
                let in_time = expires - Duration::minutes(1);
                assert!(in_time >= send_at);
                let r = app.state.record_outcomes(vec![e], false, in_time).await;
                assert!(r.is_ok(), "{o}: {r:?}");
                accepted += 1;
            }
        }
        assert!(accepted >= 25, "{accepted}");
    }
}

#[tokio::test]
async fn a_send_time_must_be_on_the_campaign_date_and_not_past() {
    let app = spawn_app().await;
    for (body, field) in [
        (
            json!({"channel": "email", "send_at": "tomorrow"}),
            "send_at",
        ),
        (
            json!({"channel": "email", "send_at": "2020-01-01T08:00:00Z"}),
            "date",
        ),
        (
            json!({"channel": "email", "date": "2030-12-30", "send_at": "2030-12-29T08:00:00Z"}),
            "send_at",
        ),
    ] {
        let r = app.post_json("/v1/campaigns", &body).await;
        let p = assert_problem(r, 422, None).await;
        assert!(error_fields(&p).contains(&field), "{body}: {p}");
    }
}
