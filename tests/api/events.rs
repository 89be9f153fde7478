use offer_engine::domain::Tier;
use serde_json::{json, Value};

use crate::helpers::error_fields;
use crate::helpers::*;

/// Makes a decision and returns (decision_id, offers).
async fn decide(app: &TestApp, req: &Value) -> (String, Vec<Value>) {
    let body: Value = app.post_offers(req).await.json().await.unwrap();
    (
        body["decision_id"].as_str().unwrap().to_string(),
        body["offers"].as_array().unwrap().clone(),
    )
}

fn event(decision: &str, offer: &Value, kind: &str) -> Value {
    let mut e = json!({"decision_id": decision, "offer_id": offer["offer_id"], "type": kind});
    if kind == "accept" && offer["price"].is_object() {
        e["revenue"] = offer["price"].clone();
    }
    if kind == "accept" {
        e["token"] = offer["token"].clone();
    }
    e
}

#[tokio::test]
async fn accept_is_acknowledged_once_and_counted() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "impression"))
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert!(body["lsn"].as_u64().unwrap() > 0);
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_problem(r, 409, Some("offer_id")).await;
    let id = offers[0]["offer_id"].as_str().unwrap();
    assert_outcomes_counted(&app, id, "accept", 1).await;
}

/// `/metrics` counts `n` outcomes of `kind` for `offer_id`.
async fn assert_outcomes_counted(app: &TestApp, offer_id: &str, kind: &str, n: u64) {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line =
        format!("offer_engine_outcome_events_total{{offer_id=\"{offer_id}\",type=\"{kind}\"}} {n}");
    assert!(metrics.contains(&line), "no `{line}` in {metrics}");
}

#[tokio::test]
async fn bad_events_are_refused_and_nothing_is_applied() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Silver);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    assert!(offers.len() >= 2);
    let unknown =
        json!({"decision_id": "nope", "offer_id": offers[0]["offer_id"], "type": "click"});
    assert_problem(
        app.post_json("/v1/events", &unknown).await,
        404,
        Some("decision_id"),
    )
    .await;
    let wrong_offer = json!({"decision_id": d, "offer_id": "wifi-monthly-x", "type": "click"});
    assert_problem(
        app.post_json("/v1/events", &wrong_offer).await,
        422,
        Some("offer_id"),
    )
    .await;
    let mut cheap = event(&d, &offers[0], "accept");
    cheap["revenue"] = json!({"amount": 0.01, "currency": "CNY"});
    assert_problem(
        app.post_json("/v1/events", &cheap).await,
        422,
        Some("revenue.amount"),
    )
    .await;
    let mut rev_on_click = event(&d, &offers[0], "click");
    rev_on_click["revenue"] = json!({"amount": 1, "currency": "CNY"});
    assert_problem(
        app.post_json("/v1/events", &rev_on_click).await,
        422,
        Some("revenue"),
    )
    .await;
    let bad_type = json!({"decision_id": d, "offer_id": offers[0]["offer_id"], "type": "purchase"});
    assert_problem(
        app.post_json("/v1/events", &bad_type).await,
        422,
        Some("type"),
    )
    .await;
    // A batch with one bad event applies nothing: the good decline does not suppress.
    let batch = json!([
        event(&d, &offers[1], "decline"),
        event(&d, &offers[0], "accept"),
        unknown
    ]);
    assert_problem(
        app.post_json("/v1/events", &batch).await,
        404,
        Some("[2].decision_id"),
    )
    .await;
    let (_, again) = decide(&app, &offer_request(&member)).await;
    assert!(
        again.iter().any(|o| o["offer_id"] == offers[1]["offer_id"]),
        "decline was applied"
    );
    // ... and the accept's reservation was released: it can be accepted now.
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn a_declined_offer_is_not_shown_again() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let req = offer_request(&member);
    let (d, offers) = decide(&app, &req).await;
    let declined = offers[0]["offer_id"].clone();
    let batch = json!([
        event(&d, &offers[0], "impression"),
        event(&d, &offers[0], "decline")
    ]);
    let r = app.post_json("/v1/events", &batch).await;
    assert_eq!(r.status(), 202);
    for _ in 0..3 {
        let (_, again) = decide(&app, &req).await;
        assert!(!again.is_empty());
        assert!(again.iter().all(|o| o["offer_id"] != declined), "{again:?}");
    }
}

#[tokio::test]
async fn an_expired_offer_cannot_be_accepted() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let mut req = offer_request(&member);
    // Offers expire at departure at the latest.
    req["itinerary"]["departure"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339());
    let (d, offers) = decide(&app, &req).await;
    assert!(!offers.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_problem(r, 410, Some("offer_id")).await;
}

#[tokio::test]
async fn the_daily_contact_cap_holds() {
    let mut settings = test_settings();
    settings.contact.max_offers_per_day.checkout = 4;
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let req = offer_request(&member);
    let mut total = 0;
    for _ in 0..4 {
        let (_, offers) = decide(&app, &req).await;
        total += offers.len();
        // Shown offers are counted once the decision is logged (one group commit).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(total, 4, "the cap of 4 offers a day was not honoured");
}

#[tokio::test]
async fn capped_inventory_is_never_oversold_under_concurrency() {
    let app = spawn_app().await;
    // First-class upgrades: 2 seats per flight in the default catalog.
    let departure = departure_in(5);
    let mut members = Vec::new();
    app.state.state().members().for_each(|id, _| {
        if members.len() < 60 {
            members.push(id.to_string());
        }
    });
    let mut accepts = Vec::new();
    for m in &members {
        let req = json!({"member_id": m, "channel": "checkout", "max_offers": 10, "itinerary": {
            "origin": "PEK", "destination": "LHR", "departure": departure, "cabin": "business",
            "fare": {"amount": 21000, "currency": "CNY"}, "passengers": 1}});
        let (d, offers) = decide(&app, &req).await;
        let o = offers
            .iter()
            .find(|o| o["offer_id"] == "upg-first-intl-cash")
            .expect("offered");
        accepts.push(event(&d, o, "accept"));
    }
    let mut tasks = Vec::new();
    for e in accepts {
        let client = app.client.clone();
        let url = format!("{}/v1/events", app.address);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&e)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 2, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 409).count(),
        members.len() - 2,
        "{codes:?}"
    );
    // Sold out: no longer offered on that flight.
    let req = json!({"member_id": members[0], "channel": "checkout", "max_offers": 10, "itinerary": {
        "origin": "PEK", "destination": "LHR", "departure": departure, "cabin": "business",
        "fare": {"amount": 21000, "currency": "CNY"}, "passengers": 1}});
    let (_, offers) = decide(&app, &req).await;
    assert!(offers
        .iter()
        .all(|o| o["offer_id"] != "upg-first-intl-cash"));
}

#[tokio::test]
async fn a_failing_disk_gives_503_and_applies_nothing() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    // Let the decision itself reach the log first.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.state.durable().inject_failures(1);
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    let p = assert_problem(r, 503, None).await;
    assert!(
        !p["detail"].as_str().unwrap().contains("os error"),
        "internal text leaked: {p}"
    );
    // Not applied: the same accept goes through once the disk is back.
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_eq!(r.status(), 202);
}

/// Posts `body` to `/v1/events` and expects a problem with `status` naming `field`.
async fn assert_events_refused(app: &TestApp, body: &Value, status: u16, field: &str) {
    assert_problem(app.post_json("/v1/events", body).await, status, Some(field)).await;
}

/// The learner's (examples, accepts) for an offer.
fn learned(app: &TestApp, offer_id: &str) -> (u64, u64) {
    let p = app
        .state
        .state()
        .learner()
        .posterior(offer_id)
        .expect("the offer has a posterior");
    (p.examples, p.accepts)
}

#[tokio::test]
async fn a_fulfilment_needs_an_accept_counts_once_and_carries_no_revenue() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Gold);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    let id = offers[0]["offer_id"].as_str().unwrap();
    // Any write makes the deferred decision record durable first.
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "impression"))
        .await;
    assert_eq!(r.status(), 202);
    assert_events_refused(&app, &event(&d, &offers[0], "fulfilled"), 409, "offer_id").await;
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_eq!(r.status(), 202);
    // Rewarded on accept (the default catalog): the accept taught the model.
    let after_accept = learned(&app, id);
    assert_eq!(after_accept.1, 1);
    let mut paid = event(&d, &offers[0], "fulfilled");
    paid["revenue"] = json!({"amount": 1, "currency": "CNY"});
    assert_events_refused(&app, &paid, 422, "revenue").await;
    let twice = json!([
        event(&d, &offers[0], "fulfilled"),
        event(&d, &offers[0], "fulfilled")
    ]);
    assert_events_refused(&app, &twice, 409, "[1].offer_id").await;
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "fulfilled"))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        learned(&app, id),
        after_accept,
        "not the reward of this offer"
    );
    assert_events_refused(&app, &event(&d, &offers[0], "fulfilled"), 409, "offer_id").await;
    let unknown = json!({"decision_id": "nope", "offer_id": id, "type": "fulfilled"});
    assert_events_refused(&app, &unknown, 404, "decision_id").await;
    assert_outcomes_counted(&app, id, "fulfilled", 1).await;
}

#[tokio::test]
async fn an_offer_rewarded_on_fulfilment_learns_from_the_fulfilment_after_a_restart() {
    // Every offer of the default catalog, rewarded on fulfilment.
    let files = tempfile::tempdir().unwrap();
    let catalog = files.path().join("catalog.toml");
    let original = std::fs::read_to_string("config/catalog.toml").unwrap();
    std::fs::write(
        &catalog,
        original.replace("[[offer]]\n", "[[offer]]\nreward_on = \"fulfilment\"\n"),
    )
    .unwrap();
    let mut s = test_settings();
    s.catalog.file = catalog.display().to_string();
    let data = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(s.clone(), data.clone()).await;
    let member = app.find_member(|m| m.tier == Tier::Silver);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    let id = offers[0]["offer_id"].as_str().unwrap().to_string();
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "accept"))
        .await;
    assert_eq!(r.status(), 202);
    let after_accept = learned(&app, &id);
    assert_eq!(after_accept.1, 0, "an accept is not this offer's reward");
    // A restart before the flight (a copy of the data dir, as a restart finds
    // it): the log brings the decision and the accept back.
    let app = spawn_with(s, copy_dir(data.path())).await;
    assert_eq!(learned(&app, &id), after_accept, "replayed");
    let r = app
        .post_json("/v1/events", &event(&d, &offers[0], "fulfilled"))
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert_eq!(learned(&app, &id), (after_accept.0 + 1, 1));
}

/// An accept of a priced offer must bring the quoted price as `revenue`, in
/// its currency; each departure is named by its own field.
#[tokio::test]
async fn an_accept_needs_the_quoted_revenue_in_the_quoted_currency() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    let o = offers
        .iter()
        .find(|o| o["price"].is_object() && o["price"]["amount"].as_f64() > Some(0.0))
        .expect("a priced offer");
    let mut no_revenue = event(&d, o, "accept");
    no_revenue.as_object_mut().unwrap().remove("revenue");
    let p = assert_problem(
        app.post_json("/v1/events", &no_revenue).await,
        422,
        Some("revenue"),
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("required"), "{p}");
    let mut usd = event(&d, o, "accept");
    usd["revenue"]["currency"] = json!("USD");
    let p = assert_problem(
        app.post_json("/v1/events", &usd).await,
        422,
        Some("revenue.currency"),
    )
    .await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
    // Wrong currency and amount: both named.
    usd["revenue"]["amount"] = json!(1);
    let p = assert_problem(
        app.post_json("/v1/events", &usd).await,
        422,
        Some("revenue.currency"),
    )
    .await;
    assert_eq!(p["errors"][1]["field"], "revenue.amount", "{p}");
    // Nothing was applied: the right accept goes through.
    let r = app.post_json("/v1/events", &event(&d, o, "accept")).await;
    assert_eq!(r.status(), 202);
}

/// Every 422 of a batch is reported at once, each by its event's index.
#[tokio::test]
async fn every_bad_event_of_a_batch_is_reported_at_once() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Silver);
    let (d, offers) = decide(&app, &offer_request(&member)).await;
    let mut no_token = event(&d, &offers[0], "accept");
    no_token.as_object_mut().unwrap().remove("token");
    let mut rev_on_click = event(&d, &offers[1], "click");
    rev_on_click["revenue"] = json!({"amount": 1, "currency": "CNY"});
    let batch = json!([
        event(&d, &offers[1], "impression"),
        no_token,
        rev_on_click,
        {"decision_id": d, "offer_id": "wifi-monthly-x", "type": "click"},
    ]);
    let p = assert_problem(
        app.post_json("/v1/events", &batch).await,
        422,
        Some("[1].token"),
    )
    .await;
    let fields = error_fields(&p);
    assert_eq!(fields, ["[1].token", "[2].revenue", "[3].offer_id"], "{p}");
    // Mistyped events of a batch: each named by index.
    let batch = json!([
        {"decision_id": d, "offer_id": offers[0]["offer_id"], "type": "purchase"},
        event(&d, &offers[1], "impression"),
        {"decision_id": d, "type": "click"},
    ]);
    let p = assert_problem(
        app.post_json("/v1/events", &batch).await,
        422,
        Some("[0].type"),
    )
    .await;
    assert_eq!(p["errors"][1]["field"], "[2].offer_id", "{p}");
}

/// Sets a member's balance to `points` through member events.
async fn set_points(app: &TestApp, member: &str, points: i64) {
    let have = app.state.state().members().get(member).unwrap().points as i64;
    if have > 0 {
        let e = json!({"member_id": member, "type": "points_redeemed", "points": have});
        assert_eq!(app.post_json("/v1/member-events", &e).await.status(), 202);
    }
    let e = json!({"member_id": member, "type": "points_earned", "points": points});
    assert_eq!(app.post_json("/v1/member-events", &e).await.status(), 202);
}

fn balance(app: &TestApp, member: &str) -> u32 {
    app.state.state().members().get(member).unwrap().points
}

/// A short domestic premium-economy trip: the points upgrade to business is
/// the only upgrade it can be offered.
fn short_trip(member: &str) -> Value {
    json!({"member_id": member, "channel": "checkout", "max_offers": 10, "itinerary": {
        "origin": "PEK", "destination": "DLC", "departure": departure_in(6),
        "cabin": "premium_economy", "fare": {"amount": 900, "currency": "CNY"}, "passengers": 1}})
}

/// Points hold: an accept redeems the quoted points in its own record, so
/// the balance and the next decision see it at once; of concurrent accepts
/// in several decisions only as many as the balance covers succeed (409 for
/// the rest, decided in log order); a refund gives the points, the unit and
/// the value back once.
#[tokio::test]
async fn points_are_redeemed_once_and_refunds_give_them_back_once() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    set_points(&app, &member, 30_000).await;
    let mut shown = Vec::new();
    for _ in 0..3 {
        let (d, offers) = decide(&app, &short_trip(&member)).await;
        let o = offers
            .iter()
            .find(|o| o["offer_id"] == "upg-biz-dom-points")
            .expect("the points upgrade is offered to a member with 30,000 points")
            .clone();
        assert_eq!(o["points_price"], 25_000);
        shown.push((d, o));
    }
    let mut tasks = Vec::new();
    for (d, o) in &shown {
        let client = app.client.clone();
        let url = format!("{}/v1/events", app.address);
        let e = event(d, o, "accept");
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&e).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 2, "{codes:?}");
    assert_eq!(balance(&app, &member), 5_000);
    // The next decision sees the balance: no points upgrade any more (and
    // still offers, so the daily contact cap is not what hides it).
    let (_, offers) = decide(&app, &short_trip(&member)).await;
    assert!(!offers.is_empty());
    assert!(offers.iter().all(|o| o["offer_id"] != "upg-biz-dom-points"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("offer_engine_accepted_value_total{offer_id=\"upg-biz-dom-points\"} 450"),
        "{metrics}"
    );

    let won = codes.iter().position(|c| *c == 202).unwrap();
    let lost = (won + 1) % shown.len();
    let refund = |i: usize| {
        let mut e = event(&shown[i].0, &shown[i].1, "refunded");
        e["token"] = shown[i].1["token"].clone();
        e
    };
    // A refund needs the token, and an accept to reverse.
    let mut no_token = refund(won);
    no_token.as_object_mut().unwrap().remove("token");
    assert_events_refused(&app, &no_token, 422, "token").await;
    assert_events_refused(&app, &refund(lost), 409, "offer_id").await;
    let r = app.post_json("/v1/events", &refund(won)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(balance(&app, &member), 30_000);
    assert_events_refused(&app, &refund(won), 409, "offer_id").await;
    assert_eq!(balance(&app, &member), 30_000);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("offer_engine_refunded_value_total{offer_id=\"upg-biz-dom-points\"} 450"),
        "{metrics}"
    );
    // The seat is back on that flight.
    let state = app.state.state();
    let live = state.ledger().decision(&shown[won].0, i64::MIN).unwrap();
    let (key, _) = live
        .record
        .offers
        .iter()
        .find(|o| o.offer_id == "upg-biz-dom-points")
        .and_then(|o| o.inventory.clone())
        .expect("the points upgrade is capped per flight");
    assert_eq!(
        state.ledger().units("upg-biz-dom-points", &key).committed,
        0
    );
}

/// A gold member's upgrade voucher over HTTP: offered instead of a paid
/// upgrade, accepted once (a second decision's voucher offer is then 409),
/// after which the paid upgrade is offered; a refund gives it back.
#[tokio::test]
async fn an_upgrade_voucher_is_used_once_and_comes_back_with_a_refund() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Gold);
    let trip = || {
        json!({"member_id": member, "channel": "checkout", "max_offers": 10, "itinerary": {
            "origin": "PEK", "destination": "SHA", "departure": departure_in(8),
            "cabin": "economy", "fare": {"amount": 1280, "currency": "CNY"}, "passengers": 1}})
    };
    let upgrade = |offers: &[Value]| {
        offers
            .iter()
            .find(|o| o["category"] == "upgrade")
            .cloned()
            .expect("an upgrade is offered")
    };
    let (d1, o1) = decide(&app, &trip()).await;
    let (d2, o2) = decide(&app, &trip()).await;
    let (v1, v2) = (upgrade(&o1), upgrade(&o2));
    assert_eq!(v1["offer_id"], "upg-voucher-biz");
    assert_eq!(v1["price"]["amount"], 0.0);
    assert_eq!(v2["offer_id"], "upg-voucher-biz");
    let r = app
        .post_json("/v1/events", &event(&d1, &v1, "accept"))
        .await;
    assert_eq!(r.status(), 202);
    assert_events_refused(&app, &event(&d2, &v2, "accept"), 409, "offer_id").await;
    let (_, o3) = decide(&app, &trip()).await;
    assert_ne!(upgrade(&o3)["offer_id"], "upg-voucher-biz");
    let mut refund = event(&d1, &v1, "refunded");
    refund["token"] = v1["token"].clone();
    assert_eq!(app.post_json("/v1/events", &refund).await.status(), 202);
    let (_, o4) = decide(&app, &trip()).await;
    assert_eq!(upgrade(&o4)["offer_id"], "upg-voucher-biz");
}
