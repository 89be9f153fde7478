//! The answer contract: structured reasons (every code documented, `explain`
//! in English and Simplified Chinese) and idempotent retries
//! (`Idempotency-Key`). Token tampering is in security.rs.

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, copy_dir, offer_request, spawn_app, spawn_protected_app, spawn_with,
    test_settings, TestApp,
};
use offer_engine::reasons::CODES;

#[tokio::test]
async fn every_reason_code_is_documented_in_the_openapi_description() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let reason = &schemas["Reason"];
    let variants = reason["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{reason}"));
    let text = reason.to_string();
    for code in CODES {
        // Each code is an enum value of a variant's `code`, with a description.
        let v = variants
            .iter()
            .find(|v| {
                let s = v.to_string();
                s.contains(&format!("\"{code}\""))
            })
            .unwrap_or_else(|| panic!("{code} is not in the Reason schema: {text}"));
        assert!(
            v["description"].as_str().is_some_and(|d| d.contains(code)),
            "{code} has no description: {v}"
        );
    }
    assert_eq!(variants.len(), CODES.len(), "{text}");
    // The offer's `reasons` refers to it.
    let offer = &schemas["OfferOut"]["properties"]["reasons"];
    assert!(offer.to_string().contains("Reason"), "{offer}");
}

/// A member within 20,000 CNY of the next tier: the pre-upgrade nudge.
fn near_tier_member(app: &TestApp) -> String {
    let th = offer_engine::domain::TierThresholds::default();
    app.find_member(|m| {
        offer_engine::features::spend_to_next_tier(m, &th).is_some_and(|g| g > 1.0 && g <= 20_000.0)
    })
}

async fn offers_with(app: &TestApp, path: &str, body: &Value, lang: Option<&str>) -> Value {
    let mut r = app.request(reqwest::Method::POST, path).json(body);
    if let Some(l) = lang {
        r = r.header("accept-language", l);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn explain_adds_text_in_english_or_simplified_chinese() {
    let app = spawn_app().await;
    let member = near_tier_member(&app);
    let mut body = offer_request(&member);
    // No explain: codes and figures only.
    let plain = offers_with(&app, "/v1/offers", &body, Some("zh-CN")).await;
    let first = &plain["offers"][0]["reasons"][0];
    assert_eq!(first["code"], "near_next_tier", "{plain}");
    assert!(first.get("text").is_none(), "{first}");
    let short = first["spend_short"].as_u64().unwrap();
    let next = first["tier"].as_str().unwrap().to_string();
    let zh_tier = match next.as_str() {
        "silver" => "银卡",
        "gold" => "金卡",
        "platinum" => "白金卡",
        "diamond" => "钻石卡",
        t => panic!("unexpected next tier {t}"),
    };
    let thousands = offer_engine::decision::thousands(short);
    // `"explain": true` in the body; English by default.
    body["explain"] = json!(true);
    let en = offers_with(&app, "/v1/offers", &body, None).await;
    for o in en["offers"].as_array().unwrap() {
        for r in o["reasons"].as_array().unwrap() {
            assert!(CODES.contains(&r["code"].as_str().unwrap()), "{r}");
            assert!(r["text"].as_str().is_some_and(|t| t.is_ascii()), "{r}");
        }
    }
    let r0 = &en["offers"][0]["reasons"][0];
    assert_eq!(
        r0["text"],
        format!(
            "{} member, {thousands} CNY qualifying spend from {next}",
            first["current_tier"].as_str().unwrap()
        ),
        "{r0}"
    );
    // `?explain=true` with Chinese preferred.
    body.as_object_mut().unwrap().remove("explain");
    let zh = offers_with(
        &app,
        "/v1/offers?explain=true",
        &body,
        Some("zh-CN,zh;q=0.9,en;q=0.8"),
    )
    .await;
    let r0 = &zh["offers"][0]["reasons"][0];
    assert_eq!(
        r0["text"],
        format!("还差{thousands}元定级消费升级{zh_tier}"),
        "{r0}"
    );
    assert_eq!(r0["spend_short"], short);
    for o in zh["offers"].as_array().unwrap() {
        let last = o["reasons"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["code"], "propensity");
        assert!(
            last["text"].as_str().unwrap().starts_with("接受概率"),
            "{last}"
        );
    }
    // English preferred over Chinese.
    let en2 = offers_with(
        &app,
        "/v1/offers?explain=true",
        &body,
        Some("en-GB,zh;q=0.5"),
    )
    .await;
    assert!(en2["offers"][0]["reasons"][0]["text"]
        .as_str()
        .unwrap()
        .contains("qualifying spend"));
    // A bad explain is named.
    let r = app
        .request(reqwest::Method::POST, "/v1/offers?explain=maybe")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, Some("explain")).await;
    body["explain"] = json!("yes");
    assert_problem(app.post_offers(&body).await, 422, Some("explain")).await;
}

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::POST, path)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The last log position applied (decisions join the log within a few ms).
async fn applied(app: &TestApp) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.state.state_digest().applied
}

#[tokio::test]
async fn a_retried_checkout_gets_the_first_answer_without_a_second_decision() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Gold);
    let body = offer_request(&member);
    let r = post_keyed(&app, "/v1/offers", "checkout-1", &body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let first: Value = r.json().await.unwrap();
    assert!(!first["offers"].as_array().unwrap().is_empty(), "{first}");
    let before = applied(&app).await;
    let r = post_keyed(&app, "/v1/offers", "checkout-1", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    // Same decision id, offers and tokens.
    assert_eq!(again, first);
    assert_eq!(applied(&app).await, before, "no second decision was logged");
    // Without the key, a new decision.
    let fresh: Value = app.post_offers(&body).await.json().await.unwrap();
    assert_ne!(fresh["decision_id"], first["decision_id"]);
    // The same key with another body: 422 naming the header.
    let mut other = body.clone();
    other["max_offers"] = json!(1);
    let p = assert_problem(
        post_keyed(&app, "/v1/offers", "checkout-1", &other).await,
        422,
        Some("Idempotency-Key"),
    )
    .await;
    assert_eq!(p["type"], "/problems/idempotency-key-reused");
    // The same key on another route is another key.
    let e = json!({"decision_id": first["decision_id"], "offer_id": first["offers"][0]["offer_id"], "type": "impression"});
    assert_eq!(
        post_keyed(&app, "/v1/events", "checkout-1", &e)
            .await
            .status(),
        202
    );
    // Bad keys: 400 naming the header.
    for bad in ["", &"k".repeat(256), "two words"] {
        let p = assert_problem(
            post_keyed(&app, "/v1/offers", bad, &body).await,
            400,
            Some("Idempotency-Key"),
        )
        .await;
        assert_eq!(p["type"], "/problems/invalid-header");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            "offer_engine_idempotent_requests_total{outcome=\"replayed\",route=\"/v1/offers\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn concurrent_retries_of_one_key_make_one_decision() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Silver);
    let body = offer_request(&member);
    let before = applied(&app).await;
    let sends = (0..8).map(|_| post_keyed(&app, "/v1/offers", "burst-1", &body));
    let answers = futures_util::future::join_all(sends).await;
    let mut ids = std::collections::HashSet::new();
    for r in answers {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["decision_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(applied(&app).await, before + 1, "one decision logged");
}

#[tokio::test]
async fn a_retried_accept_gets_the_first_answer_instead_of_409() {
    let app = spawn_protected_app().await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Silver);
    let d: Value = app
        .post_offers(&offer_request(&member))
        .await
        .json()
        .await
        .unwrap();
    let o = &d["offers"][0];
    let mut e = json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"], "type": "accept", "token": o["token"]});
    if o["price"].is_object() {
        e["revenue"] = o["price"].clone();
    }
    let r = post_keyed(&app, "/v1/events", "accept-1", &e).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let r = post_keyed(&app, "/v1/events", "accept-1", &e).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    // Without the key (or with a new one), the accept is a conflict as before.
    assert_problem(
        post_keyed(&app, "/v1/events", "accept-2", &e).await,
        409,
        Some("offer_id"),
    )
    .await;
    // A failure is not kept: the same key runs again (and fails again).
    assert_problem(
        post_keyed(&app, "/v1/events", "accept-2", &e).await,
        409,
        Some("offer_id"),
    )
    .await;
}

#[tokio::test]
async fn keys_are_per_api_key() {
    // A second API key with the offers scope.
    let (second, spec) =
        offer_engine::auth::generate_key(offer_engine::auth::Scopes::parse(&["offers"]).unwrap());
    let mut settings = crate::helpers::settings_with_master_key();
    settings.security.keys.push(spec);
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app2 = spawn_with(settings, dir).await;
    let member = app2.find_member(|m| m.tier == offer_engine::domain::Tier::Gold);
    let body = offer_request(&member);
    let a: Value = post_keyed(&app2, "/v1/offers", "shared-key", &body)
        .await
        .json()
        .await
        .unwrap();
    let r = app2
        .client
        .post(format!("{}/v1/offers", app2.address))
        .bearer_auth(&second)
        .header("idempotency-key", "shared-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let b: Value = r.json().await.unwrap();
    assert_ne!(
        a["decision_id"], b["decision_id"],
        "callers never share answers"
    );
}

#[tokio::test]
async fn after_a_restart_a_retry_is_a_new_request() {
    // The cache is memory only (as documented): a crash between the
    // decision and the retry loses the key; the retry decides again, and
    // the first decision's offers stay valid.
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(test_settings(), dir.clone()).await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Gold);
    let body = offer_request(&member);
    let first: Value = post_keyed(&app, "/v1/offers", "crash-1", &body)
        .await
        .json()
        .await
        .unwrap();
    applied(&app).await;
    let restarted = spawn_with(test_settings(), copy_dir(dir.path())).await;
    let r = post_keyed(&restarted, "/v1/offers", "crash-1", &body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let second: Value = r.json().await.unwrap();
    assert_ne!(second["decision_id"], first["decision_id"]);
    // The first decision survived the restart: its offer can be accepted.
    let o = &first["offers"][0];
    let mut e = json!({"decision_id": first["decision_id"], "offer_id": o["offer_id"], "type": "accept", "token": o["token"]});
    if o["price"].is_object() {
        e["revenue"] = o["price"].clone();
    }
    let r = restarted.post_json("/v1/events", &e).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}
