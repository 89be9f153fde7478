use serde_json::{json, Value};

use crate::helpers::error_fields;
use crate::helpers::*;

fn record(id: &str) -> Value {
    json!({"member_id": id, "tier": "gold", "points": 1200, "qualifying_spend_12m": 52000.5,
           "flights_12m": 12, "last_flight": "2026-10-01", "joined": "2019-04-02",
           "home_airport": "PEK", "birth_month": 7,
           "consent": {"email": true, "sms": false, "app": true}, "tags": ["business"]})
}

async fn put(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::PUT, &format!("/v1/members/{id}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn put_then_get_round_trips() {
    let app = spawn_app().await;
    assert_eq!(put(&app, "NEW-1", &record("NEW-1")).await.status(), 201);
    let got: Value = app.get("/v1/members/NEW-1").await.json().await.unwrap();
    assert_eq!(got, record("NEW-1"));
    let mut changed = record("NEW-1");
    changed["points"] = json!(99);
    assert_eq!(put(&app, "NEW-1", &changed).await.status(), 200);
    let got: Value = app.get("/v1/members/NEW-1").await.json().await.unwrap();
    assert_eq!(got["points"], 99);
    assert_problem(
        put(&app, "OTHER", &record("NEW-1")).await,
        422,
        Some("member_id"),
    )
    .await;
    let mut bad = record("NEW-1");
    bad["tier"] = json!("bronze");
    assert_problem(put(&app, "NEW-1", &bad).await, 422, Some("tier")).await;
    assert_problem(app.get("/v1/members/NOBODY").await, 404, Some("member_id")).await;
}

#[tokio::test]
async fn member_events_change_features_at_once() {
    let app = spawn_app().await;
    put(&app, "EV-1", &record("EV-1")).await;
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "EV-1", "type": "points_earned", "points": 500}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["member"]["points"], 1700);
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "EV-1", "type": "points_redeemed", "points": 5000}),
        )
        .await;
    assert_problem(r, 409, Some("points")).await;
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "NOBODY", "type": "points_earned", "points": 5}),
        )
        .await;
    assert_problem(r, 404, Some("member_id")).await;
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "EV-1", "type": "tier_changed", "tier": "mythic"}),
        )
        .await;
    assert_problem(r, 422, Some("tier")).await;
    // Email consent withdrawn: email offers stop at once.
    let mut req = offer_request("EV-1");
    req["channel"] = json!("email");
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert!(!body["offers"].as_array().unwrap().is_empty());
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "EV-1", "type": "consent_changed", "channel": "email", "granted": false}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert!(body["offers"].as_array().unwrap().is_empty(), "{body}");
    // A flight lifts spend past platinum: the next decision sees a platinum member.
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": "EV-1", "type": "flight_flown", "qualifying_spend": 30000, "points": 3000}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = app
        .post_offers(&offer_request("EV-1"))
        .await
        .json()
        .await
        .unwrap();
    let tier = &body["offers"][0]["reasons"][0];
    assert!(
        tier["code"] == "tier" && tier["tier"] == "platinum"
            || tier["code"] == "near_next_tier" && tier["current_tier"] == "platinum",
        "{body}"
    );
}

#[tokio::test]
async fn bulk_ndjson_applies_good_lines_and_reports_bad_ones() {
    let app = spawn_app().await;
    let mut bad = record("B-2");
    bad["home_airport"] = json!("XXX");
    let body = format!(
        "{}\n{}\nnot json\n\n{}\n",
        record("B-1"),
        bad,
        record("B-3")
    );
    let r = app
        .post_raw("/v1/members", body.into_bytes(), "application/x-ndjson")
        .await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["loaded"], 2);
    assert_eq!(report["rejected"], 2);
    assert_eq!(report["errors"][0]["line"], 2);
    assert_eq!(report["errors"][0]["field"], "home_airport");
    assert_eq!(report["errors"][1]["line"], 3);
    assert_eq!(app.get("/v1/members/B-3").await.status(), 200);
    assert_eq!(app.get("/v1/members/B-2").await.status(), 404);
}

#[tokio::test]
async fn every_bad_field_of_a_member_is_reported_at_once() {
    let app = spawn_app().await;
    let mut bad = record("NEW-2");
    bad["tier"] = json!("mythic");
    bad["birth_month"] = json!(13);
    bad["home_airport"] = json!("ZZZ");
    let p = assert_problem(put(&app, "NEW-2", &bad).await, 422, Some("tier")).await;
    let fields = error_fields(&p);
    assert_eq!(fields, ["tier", "home_airport", "birth_month"], "{p}");
    // Nothing was written.
    assert_eq!(app.get("/v1/members/NEW-2").await.status(), 404);
}
