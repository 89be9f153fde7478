//! `GET /v1/admin/state`: the position of the last record applied and the
//! digest of the state. A server restarted on a copy of the data dir replays
//! the same records and reports the same digest as the live one (live
//! apply and replay are the same function).

use serde_json::{json, Value};

use crate::helpers::{
    copy_dir, offer_request, settings_with_default_experiments, spawn_with, TestApp,
};

async fn state(app: &TestApp) -> Value {
    let r = app.get("/v1/admin/state").await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_restart_reaches_the_digest_the_live_server_reported() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(settings_with_default_experiments(), dir.clone()).await;
    let first = state(&app).await;
    let digest = first["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64, "{first}");
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");

    // Decisions, an accept, a decline, a member event and an erasure.
    let members: Vec<String> = (0..40).map(|i| format!("M{:08}", i * 7 + 1)).collect();
    let mut accepted = false;
    for (i, m) in members.iter().enumerate() {
        let r = app.post_offers(&offer_request(m)).await;
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.unwrap();
        let Some(o) = d["offers"].as_array().and_then(|a| a.first()).cloned() else {
            continue;
        };
        let kind = if !accepted {
            "accept"
        } else if i % 3 == 0 {
            "decline"
        } else {
            "impression"
        };
        let mut ev = json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"],
                            "type": kind, "token": o["token"]});
        if kind == "accept" {
            ev["revenue"] = o["price"].clone();
            if o["price"].is_null() {
                ev["revenue"] = json!({"amount": 0, "currency": "CNY"});
            }
        }
        let r = app.post_json("/v1/events", &ev).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        accepted = true;
    }
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": members[1], "type": "points_earned", "points": 500}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .client
        .delete(format!("{}/v1/members/{}", app.address, members[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Checkout decisions join the log within a few milliseconds.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let live = state(&app).await;
    assert!(live["applied"].as_u64().unwrap() > first["applied"].as_u64().unwrap());
    assert_ne!(live["digest"], first["digest"]);

    let restarted = spawn_with(settings_with_default_experiments(), copy_dir(dir.path())).await;
    assert_eq!(state(&restarted).await, live);
}
