//! Access control and hostile input: every route's scope (no key, a key
//! without the scope, the right key), offer tokens, rate limits, the
//! concurrency cap, deadlines, the fallback answer, erasure and reloads.

use offer_engine::auth::{generate_key, KeySpec, Scope, Scopes};
use offer_engine::config::{Secret, Settings};
use offer_engine::tokens::OwnedTerms;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A key holding exactly `scopes`.
fn key_with(scopes: &[Scope]) -> (String, KeySpec) {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    generate_key(Scopes::parse(&names).unwrap())
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> reqwest::Response {
    let mut b = app.client.request(method, format!("{}{path}", app.address));
    if let Some(k) = key {
        b = b.bearer_auth(k);
    }
    if let Some((ct, bytes)) = body {
        b = b.header("content-type", ct).body(bytes);
    }
    b.send().await.expect("request sent")
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(&v).unwrap()))
}

/// One protected route: method, path, body, scope, status with the right key.
struct Case {
    method: Method,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    scope: Scope,
    ok: u16,
}

#[tokio::test]
async fn every_route_refuses_no_key_and_the_wrong_scope_and_serves_the_right_one() {
    // For each scope: a key with only that scope, and one with every other scope.
    let mut settings = settings_with_master_key();
    let mut only = std::collections::HashMap::new();
    let mut all_but = std::collections::HashMap::new();
    for s in Scope::ALL {
        let (k, spec) = key_with(&[s]);
        settings.security.keys.push(spec);
        only.insert(s, k);
        let others: Vec<Scope> = Scope::ALL.into_iter().filter(|x| *x != s).collect();
        let (k, spec) = key_with(&others);
        settings.security.keys.push(spec);
        all_but.insert(s, k);
    }
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    // A real decision to send an event about (made with the master key).
    let d: Value = app
        .post_offers(&offer_request("M00000001"))
        .await
        .json()
        .await
        .unwrap();
    let offer = &d["offers"][0];
    let impression = json!({"decision_id": d["decision_id"], "offer_id": offer["offer_id"], "type": "impression"});
    let member = json!({"member_id": "SEC-PUT", "tier": "gold", "points": 1200, "qualifying_spend_12m": 52000.5,
           "flights_12m": 12, "last_flight": "2026-10-01", "joined": "2019-04-02",
           "home_airport": "PEK", "birth_month": 7,
           "consent": {"email": true, "sms": false, "app": true}, "tags": ["business"]});
    let mut bulk = serde_json::to_vec(
        &json!({"member_id": "SEC-BULK", "tier": "base", "points": 0, "qualifying_spend_12m": 0.0,
           "flights_12m": 0, "last_flight": null, "joined": "2020-01-01",
           "home_airport": "PEK", "birth_month": 1,
           "consent": {"email": false, "sms": false, "app": false}, "tags": []}),
    )
    .unwrap();
    bulk.push(b'\n');
    let cases = [
        Case {
            method: Method::POST,
            path: "/v1/offers".into(),
            body: json_body(offer_request("M00000002")),
            scope: Scope::Offers,
            ok: 200,
        },
        Case {
            method: Method::POST,
            path: "/v1/events".into(),
            body: json_body(impression),
            scope: Scope::Events,
            ok: 202,
        },
        Case {
            method: Method::GET,
            path: "/v1/members/M00000003".into(),
            body: None,
            scope: Scope::MembersRead,
            ok: 200,
        },
        Case {
            method: Method::PUT,
            path: "/v1/members/SEC-PUT".into(),
            body: json_body(member),
            scope: Scope::MembersWrite,
            ok: 201,
        },
        Case {
            method: Method::DELETE,
            path: "/v1/members/M00000004".into(),
            body: None,
            scope: Scope::MembersWrite,
            ok: 200,
        },
        Case {
            method: Method::POST,
            path: "/v1/members".into(),
            body: Some(("application/x-ndjson", bulk)),
            scope: Scope::MembersWrite,
            ok: 200,
        },
        Case {
            method: Method::POST,
            path: "/v1/member-events".into(),
            body: json_body(
                json!({"member_id": "M00000005", "type": "points_earned", "points": 10}),
            ),
            scope: Scope::MembersWrite,
            ok: 202,
        },
        Case {
            method: Method::POST,
            path: "/v1/campaigns".into(),
            body: json_body(json!({"channel": "email", "offers": 1, "limit": 5})),
            scope: Scope::Campaigns,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/campaigns/runs".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/offers/plots/offers.svg".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/offers/stats".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/experiments".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 200,
        },
        Case {
            method: Method::GET,
            // The test server runs no experiments: the route answers 404 for any id.
            path: "/v1/experiments/none/report".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 404,
        },
        Case {
            method: Method::GET,
            path: "/v1/experiments/none/plots/forest.svg".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 404,
        },
        Case {
            method: Method::GET,
            path: "/v1/experiments/none/plots/timeseries.svg".into(),
            body: None,
            scope: Scope::ExperimentsRead,
            ok: 404,
        },
        Case {
            method: Method::POST,
            path: "/v1/admin/reload".into(),
            body: None,
            scope: Scope::Admin,
            ok: 200,
        },
        Case {
            method: Method::POST,
            path: "/v1/admin/snapshot".into(),
            body: None,
            scope: Scope::Admin,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/admin/keys".into(),
            body: None,
            scope: Scope::Admin,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/v1/admin/state".into(),
            body: None,
            scope: Scope::Admin,
            ok: 200,
        },
        Case {
            method: Method::GET,
            path: "/metrics".into(),
            body: None,
            scope: Scope::Admin,
            ok: 200,
        },
    ];
    for c in &cases {
        let what = format!("{} {}", c.method, c.path);
        let r = send(&app, c.method.clone(), &c.path, None, c.body.clone()).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{what}");
        let p = assert_problem(r, 401, None).await;
        assert_eq!(p["type"], "/problems/unauthorized", "{what}");
        let r = send(
            &app,
            c.method.clone(),
            &c.path,
            Some("oek_000000000000_not-a-key"),
            c.body.clone(),
        )
        .await;
        assert_problem(r, 401, None).await;
        let r = send(
            &app,
            c.method.clone(),
            &c.path,
            Some(&all_but[&c.scope]),
            c.body.clone(),
        )
        .await;
        let p = assert_problem(r, 403, None).await;
        assert!(
            p["detail"].as_str().unwrap().contains(c.scope.as_str()),
            "{what}: {p}"
        );
        let r = send(
            &app,
            c.method.clone(),
            &c.path,
            Some(&only[&c.scope]),
            c.body.clone(),
        )
        .await;
        assert_eq!(r.status().as_u16(), c.ok, "{what} with its scope");
    }
    // The master key holds every scope.
    let r = send(
        &app,
        Method::GET,
        "/v1/admin/keys",
        Some(TEST_MASTER_KEY),
        None,
    )
    .await;
    let keys: Value = r.json().await.unwrap();
    assert_eq!(keys["development_mode"], false);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 15);
    assert_eq!(keys["keys"][0]["id"], "master");
    let text = keys.to_string();
    for k in only.values().chain(all_but.values()) {
        assert!(!text.contains(k.as_str()), "a key leaked");
    }
    // Probes are open in every mode.
    for p in ["/healthz", "/readyz"] {
        assert_eq!(
            send(&app, Method::GET, p, None, None).await.status(),
            200,
            "{p}"
        );
    }
    // Unknown routes are 404 whether or not a key is sent.
    assert_eq!(
        send(&app, Method::GET, "/v1/nope", None, None)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn development_mode_serves_without_keys_on_loopback_only() {
    let app = spawn_app().await;
    let r = send(&app, Method::GET, "/v1/admin/keys", None, None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["development_mode"], true);
    let mut s = test_settings();
    s.server.addr = "0.0.0.0:0".into();
    let err = offer_engine::startup::check_development_mode(&s).unwrap_err();
    assert!(err.to_string().contains("development mode"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    s.durability.data_dir = dir.path().display().to_string();
    assert!(offer_engine::startup::Application::build(s.clone()).is_err());
    s.server.addr = "127.0.0.1:0".into();
    s.server.metrics_addr = "0.0.0.0:0".into();
    assert!(offer_engine::startup::check_development_mode(&s).is_err());
    s.server.metrics_addr = String::new();
    for ok in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
        s.server.addr = ok.into();
        offer_engine::startup::check_development_mode(&s).unwrap();
    }
    // A weak master key is refused at start.
    let mut s = test_settings();
    s.security.master_key = Secret("short".into());
    s.durability.data_dir = dir.path().display().to_string();
    let Err(err) = offer_engine::startup::Application::build(s) else {
        panic!("a 5-character master key was accepted");
    };
    assert!(format!("{err:#}").contains("at least 16"), "{err:#}");
}

#[tokio::test]
async fn metrics_can_be_served_without_a_key_on_a_separate_address() {
    let mut s = settings_with_master_key();
    s.server.metrics_addr = "127.0.0.1:0".into();
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let r = send(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status(), 401);
    let url = format!("{}/metrics", app.metrics_address.as_ref().unwrap());
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("offer_engine_http_requests_total"));
    // Nothing else is served there.
    let r = reqwest::get(url.replace("/metrics", "/v1/experiments"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Makes a decision for a member and returns it.
async fn decide(app: &TestApp, member: &str) -> Value {
    let r = app.post_offers(&offer_request(member)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn accept(d: &Value, o: &Value, token: &Value) -> Value {
    let mut e = json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"], "type": "accept", "token": token});
    if o["price"].is_object() {
        e["revenue"] = o["price"].clone();
    }
    e
}

/// The same v1 token with changed terms and the original signature.
fn forge(token: &str, change: impl FnOnce(&mut OwnedTerms)) -> String {
    let mut t = OwnedTerms::from_token(token).expect("a token");
    change(&mut t);
    format!("{}.{}", t.encode_body(), token.split_once('.').unwrap().1)
}

#[tokio::test]
async fn accepts_need_the_offers_own_untampered_token() {
    let app = spawn_protected_app().await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Silver);
    let d = decide(&app, &member).await;
    let offers = d["offers"].as_array().unwrap();
    assert!(offers.len() >= 2, "{d}");
    assert!(offers.iter().all(|o| o["token"].is_string()), "{d}");
    assert_eq!(d["fallback"], false);
    let (o, other) = (&offers[0], &offers[1]);
    let token = o["token"].as_str().unwrap();
    // Compact (v3, keyed BLAKE3) tokens: the MAC alone, the terms stay on
    // the server.
    assert_eq!(token.len(), 23, "{token}");
    assert!(token.starts_with('3'), "{token}");
    // A v1 token (the form issued before) for the same terms, signed by the
    // server's key: old tokens keep verifying, and forging one still fails.
    let price = o["price"].is_object().then(|| {
        serde_json::from_value::<offer_engine::domain::Money>(o["price"].clone()).unwrap()
    });
    let expires_ms = chrono::DateTime::parse_from_rfc3339(o["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let v1 = app
        .state
        .security()
        .tokens
        .sign_v1(&offer_engine::tokens::Terms {
            decision_id: d["decision_id"].as_str().unwrap(),
            member_id: &member,
            offer_id: o["offer_id"].as_str().unwrap(),
            price: price.as_ref(),
            points_price: o["points_price"].as_u64(),
            expires_ms,
        });
    let terms = OwnedTerms::from_token(&v1).unwrap();
    assert_eq!(terms.decision_id, d["decision_id"].as_str().unwrap());
    assert_eq!(terms.member_id, member);
    let token_v1 = v1.as_str();
    // A v2 token (HMAC-SHA256, issued before v3) for the same terms.
    let v2 = app
        .state
        .security()
        .tokens
        .sign_v2(&offer_engine::tokens::Terms {
            decision_id: d["decision_id"].as_str().unwrap(),
            member_id: &member,
            offer_id: o["offer_id"].as_str().unwrap(),
            price: price.as_ref(),
            points_price: o["points_price"].as_u64(),
            expires_ms,
        });
    assert!(v2.starts_with('2') && v2.len() == 23, "{v2}");
    // No token.
    let mut e = accept(&d, o, &Value::Null);
    e.as_object_mut().unwrap().remove("token");
    assert_problem(app.post_json("/v1/events", &e).await, 422, Some("token")).await;
    // Changed terms under the original signature: price, expiry, member, offer.
    let other_id = other["offer_id"].as_str().unwrap().to_string();
    let flip_in = |token: &str, i: usize| {
        let mut b = token.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let flip = |i: usize| flip_in(token, i);
    let forged = [
        forge(token_v1, |t| t.price = Some((1, "CNY".into()))),
        forge(token_v1, |t| t.expires_ms += 86_400_000),
        forge(token_v1, |t| t.member_id = "M00000001".into()),
        forge(token_v1, |t| t.offer_id = other_id.clone()),
        forge(token_v1, |t| t.points_price = Some(1)),
        format!("{}x", token_v1),
        format!("{}x", token),
        flip(1),
        flip(12),
        flip(22),
        flip_in(&v2, 1),
        flip_in(&v2, 22),
        // The v3 tag under the v2 prefix, and the v2 tag under v3's.
        format!("2{}", &token[1..]),
        format!("3{}", &v2[1..]),
        "not-a-token".into(),
    ];
    for f in &forged {
        let p = assert_problem(
            app.post_json("/v1/events", &accept(&d, o, &json!(f))).await,
            422,
            Some("token"),
        )
        .await;
        assert!(!p["detail"].as_str().unwrap().contains("internal"), "{p}");
    }
    // A genuine token of another offer, of the same decision.
    let p = assert_problem(
        app.post_json("/v1/events", &accept(&d, o, &other["token"]))
            .await,
        422,
        Some("token"),
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("offer"), "{p}");
    // A genuine token of the same offer in another member's decision.
    let d2 = decide(&app, &member.replace('M', "X")).await;
    if let Some(o2) = d2["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["offer_id"] == o["offer_id"])
    {
        assert_problem(
            app.post_json("/v1/events", &accept(&d, o, &o2["token"]))
                .await,
            422,
            Some("token"),
        )
        .await;
    }
    // In a batch the field names its event.
    let batch = json!([
        accept(&d, other, &other["token"]),
        accept(&d, o, &json!("x.y"))
    ]);
    assert_problem(
        app.post_json("/v1/events", &batch).await,
        422,
        Some("[1].token"),
    )
    .await;
    // Nothing was accepted: the genuine token still works, once.
    let r = app
        .post_json("/v1/events", &accept(&d, o, &o["token"]))
        .await;
    assert_eq!(r.status(), 202);
    assert_problem(
        app.post_json("/v1/events", &accept(&d, o, &o["token"]))
            .await,
        409,
        Some("offer_id"),
    )
    .await;
    // A genuine v1 token (issued before the compact form) is accepted.
    let d3 = decide(&app, &member).await;
    let o3 = &d3["offers"][0];
    let price = o3["price"].is_object().then(|| {
        serde_json::from_value::<offer_engine::domain::Money>(o3["price"].clone()).unwrap()
    });
    let v1 = app
        .state
        .security()
        .tokens
        .sign_v1(&offer_engine::tokens::Terms {
            decision_id: d3["decision_id"].as_str().unwrap(),
            member_id: &member,
            offer_id: o3["offer_id"].as_str().unwrap(),
            price: price.as_ref(),
            points_price: o3["points_price"].as_u64(),
            expires_ms: chrono::DateTime::parse_from_rfc3339(o3["expires_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
        });
    assert!(v1.contains('.') && v1.len() > 150, "{v1}");
    let r = app
        .post_json("/v1/events", &accept(&d3, o3, &json!(v1)))
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // A genuine v2 token (issued before v3) is accepted.
    let d4 = decide(&app, &member).await;
    let o4 = &d4["offers"][0];
    let price = o4["price"].is_object().then(|| {
        serde_json::from_value::<offer_engine::domain::Money>(o4["price"].clone()).unwrap()
    });
    let v2 = app
        .state
        .security()
        .tokens
        .sign_v2(&offer_engine::tokens::Terms {
            decision_id: d4["decision_id"].as_str().unwrap(),
            member_id: &member,
            offer_id: o4["offer_id"].as_str().unwrap(),
            price: price.as_ref(),
            points_price: o4["points_price"].as_u64(),
            expires_ms: chrono::DateTime::parse_from_rfc3339(o4["expires_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
        });
    assert!(v2.starts_with('2'), "{v2}");
    let r = app
        .post_json("/v1/events", &accept(&d4, o4, &json!(v2)))
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

fn with_token_key(k: &str) -> Settings {
    let mut s = test_settings();
    s.security.token_key = Secret(k.into());
    s
}

#[tokio::test]
async fn tokens_stay_valid_after_a_restart_with_the_same_key_only() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(with_token_key("token-key-one-0123456789"), dir.clone()).await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Base);
    let d = decide(&app, &member).await;
    let o = &d["offers"][0];
    // An acknowledged event is durable, and the log is in order: so is the decision before it.
    let imp =
        json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"], "type": "impression"});
    assert_eq!(app.post_json("/v1/events", &imp).await.status(), 202);
    let same = copy_dir(dir.path());
    let other = copy_dir(dir.path());
    let restarted = spawn_with(with_token_key("token-key-one-0123456789"), same).await;
    let r = restarted
        .post_json("/v1/events", &accept(&d, o, &o["token"]))
        .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let rekeyed = spawn_with(with_token_key("token-key-two-0123456789"), other).await;
    let p = assert_problem(
        rekeyed
            .post_json("/v1/events", &accept(&d, o, &o["token"]))
            .await,
        422,
        Some("token"),
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("signature"), "{p}");
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let mut s = settings_with_master_key();
    let (slow, mut spec) = key_with(&[Scope::ExperimentsRead]);
    // A rate so low no token comes back during the test: the burst is all there is.
    spec.requests_per_second = Some(0.001);
    spec.burst = Some(2.0);
    s.security.keys.push(spec);
    let (other, spec) = key_with(&[Scope::ExperimentsRead]);
    s.security.keys.push(spec);
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    for _ in 0..2 {
        let r = send(&app, Method::GET, "/v1/experiments", Some(&slow), None).await;
        assert_eq!(r.status(), 200);
    }
    let r = send(&app, Method::GET, "/v1/experiments", Some(&slow), None).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert_problem(r, 429, None).await;
    // Per key: another key is not affected.
    let r = send(&app, Method::GET, "/v1/experiments", Some(&other), None).await;
    assert_eq!(r.status(), 200);
}

/// Starts a POST whose body never completes, holding one request slot.
async fn hold_a_slot(app: &TestApp) -> tokio::net::TcpStream {
    let addr = app.address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /v1/offers HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"member_id\":";
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Waits (bounded) until the limiter shows `n` free slots.
async fn until_available(app: &TestApp, n: usize) {
    for _ in 0..500 {
        if app.limits.available() == Some(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the limiter never reached {n} free slots");
}

#[tokio::test]
async fn over_the_concurrency_cap_new_requests_get_503_at_once() {
    let mut s = test_settings();
    s.limits.max_concurrent_requests = 1;
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    until_available(&app, 1).await;
    let held = hold_a_slot(&app).await;
    until_available(&app, 0).await;
    let r = app.post_offers(&offer_request("M00000001")).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let p = assert_problem(r, 503, None).await;
    assert_eq!(p["type"], "/problems/overloaded");
    // Probes still answer.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    drop(held);
    until_available(&app, 1).await;
    assert_eq!(
        app.post_offers(&offer_request("M00000001")).await.status(),
        200
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_503() {
    let mut s = test_settings();
    s.limits.request_timeout_ms = 300;
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let mut held = hold_a_slot(&app).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("\r\n\r\n{") {
        let n = held.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

#[tokio::test]
async fn the_fallback_answers_by_business_priority_and_says_so() {
    let mut s = test_settings();
    // Every request counts as late: the fallback path, deterministically.
    s.limits.fallback_after_ms = 0;
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let member = app.find_member(|m| m.tier == offer_engine::domain::Tier::Silver);
    let d = decide(&app, &member).await;
    assert_eq!(d["fallback"], true, "{d}");
    let offers = d["offers"].as_array().unwrap();
    assert!(!offers.is_empty(), "{d}");
    let engine = app.state.engine();
    let priority = |id: &Value| {
        engine
            .catalog
            .offers
            .iter()
            .find(|o| *o.id == *id.as_str().unwrap())
            .unwrap()
            .priority
    };
    let p: Vec<_> = offers.iter().map(|o| priority(&o["offer_id"])).collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    for o in offers {
        let r = o["reasons"].as_array().unwrap();
        assert_eq!(r.last().unwrap()["code"], "business_priority", "{o}");
        assert!(o["token"].is_string());
    }
    // A fallback offer is a real offer: it can be accepted.
    let r = app
        .post_json("/v1/events", &accept(&d, &offers[0], &offers[0]["token"]))
        .await;
    assert_eq!(r.status(), 202);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("offer_engine_decision_fallbacks_total{reason=\"deadline\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_erased_member_is_gone_after_replay_and_from_snapshots() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = spawn_with(settings_with_default_experiments(), dir.clone()).await;
    // A member the experiment does not hold out (a holdout member gets no offers).
    let engine = app.state.engine();
    let id = (1..100)
        .map(|i| format!("ERASE-ME-{i}"))
        .find(|id| !engine.variant_policy(id, 3).holdout)
        .unwrap();
    let id = id.as_str();
    let record = json!({"member_id": id, "tier": "silver", "points": 1200, "qualifying_spend_12m": 12000.0,
           "flights_12m": 4, "last_flight": "2026-10-01", "joined": "2019-04-02",
           "home_airport": "PEK", "birth_month": 7,
           "consent": {"email": true, "sms": false, "app": true}, "tags": ["leisure"]});
    let r = app
        .request(Method::PUT, &format!("/v1/members/{id}"))
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let d = decide(&app, id).await;
    let o = &d["offers"][0];
    let decline =
        json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"], "type": "decline"});
    assert_eq!(app.post_json("/v1/events", &decline).await.status(), 202);
    let exposed = |app: &TestApp| app.state.state().experiments().is_exposed(id);
    let exposures = |app: &TestApp| -> usize { app.state.state().experiments().exposures() };
    assert!(exposed(&app));
    let before = exposures(&app);
    let r = app
        .request(Method::DELETE, &format!("/v1/members/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["erased"], true);
    // Gone at once, everywhere the live state keeps it.
    assert_problem(
        app.get(&format!("/v1/members/{id}")).await,
        404,
        Some("member_id"),
    )
    .await;
    assert_problem(
        app.post_json("/v1/events", &accept(&d, o, &o["token"]))
            .await,
        404,
        Some("decision_id"),
    )
    .await;
    assert!(!app.state.state().ledger().holds_member(id));
    assert!(!exposed(&app));
    assert_eq!(exposures(&app), before, "the statistics keep the exposure");
    // Replay of the log (no snapshot since): the erase record wins.
    let replayed = copy_dir(dir.path());
    // A snapshot now holds nothing about the member.
    let r = app.post_json("/v1/admin/snapshot", &json!({})).await;
    assert_eq!(r.status(), 200);
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "snap") {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "{} holds the erased member",
                p.display()
            );
        }
    }
    let snapshotted = copy_dir(dir.path());
    for copy in [replayed, snapshotted] {
        let again = spawn_with(settings_with_default_experiments(), copy).await;
        assert!(again.state.state().members().get(id).is_none());
        assert!(again
            .state
            .state()
            .ledger()
            .decision(d["decision_id"].as_str().unwrap(), i64::MIN)
            .is_none());
        assert!(!again.state.state().ledger().holds_member(id));
        assert!(!exposed(&again));
        assert_eq!(again.get(&format!("/v1/members/{id}")).await.status(), 404);
    }
}

#[tokio::test]
async fn a_reload_swaps_valid_files_and_refuses_invalid_ones() {
    let files = tempfile::tempdir().unwrap();
    let catalog = files.path().join("catalog.toml");
    let original = std::fs::read_to_string("config/catalog.toml").unwrap();
    std::fs::write(&catalog, &original).unwrap();
    let mut s = test_settings();
    s.catalog.file = catalog.display().to_string();
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let version = |app: &TestApp| app.state.engine().catalog.version.clone();
    assert_eq!(version(&app), "2026.11-default");
    // A file that does not parse: refused, naming the file; the running version stays.
    std::fs::write(&catalog, "version = \"broken\"\n[[offer]]\nid = ").unwrap();
    let p = assert_problem(
        app.post_json("/v1/admin/reload", &json!({})).await,
        422,
        Some(catalog.to_str().unwrap()),
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("catalog.toml"),
        "{p}"
    );
    assert_eq!(version(&app), "2026.11-default");
    assert_eq!(
        app.post_offers(&offer_request("M00000001")).await.status(),
        200
    );
    // A valid file: swapped in.
    std::fs::write(
        &catalog,
        original.replace(
            "version = \"2026.11-default\"",
            "version = \"2026.12-test\"",
        ),
    )
    .unwrap();
    let r = app.post_json("/v1/admin/reload", &json!({})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["catalog_version"], "2026.12-test");
    assert_eq!(version(&app), "2026.12-test");
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["catalog_version"], "2026.12-test");
}

#[tokio::test]
async fn the_file_watch_reloads_a_changed_file_and_refuses_a_broken_one() {
    let files = tempfile::tempdir().unwrap();
    let catalog = files.path().join("catalog.toml");
    let original = std::fs::read_to_string("config/catalog.toml").unwrap();
    std::fs::write(&catalog, &original).unwrap();
    let mut s = test_settings();
    s.catalog.file = catalog.display().to_string();
    s.reload.watch_secs = 1;
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let version = |app: &TestApp| app.state.engine().catalog.version.clone();
    let wait_for = |app: &TestApp, want: &str| {
        let want = want.to_string();
        let state = app.state.clone();
        async move {
            for _ in 0..100 {
                if state.engine().catalog.version == want {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            false
        }
    };
    // Let the watch take its first look at the file as it is.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    std::fs::write(
        &catalog,
        original.replace(
            "version = \"2026.11-default\"",
            "version = \"2026.12-watch\"",
        ),
    )
    .unwrap();
    assert!(
        wait_for(&app, "2026.12-watch").await,
        "the watch swapped the new catalog in"
    );
    // A broken file: refused and counted; the running version stays in service.
    std::fs::write(&catalog, "version = \"broken\"\n[[offer]]\nid = ").unwrap();
    let refused = || {
        app.state
            .metrics()
            .reloads
            .with_label_values(&["watch", "refused"])
            .get()
    };
    for _ in 0..100 {
        if refused() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refused(), 1);
    assert_eq!(version(&app), "2026.12-watch");
    assert_eq!(
        app.post_offers(&offer_request("M00000001")).await.status(),
        200
    );
}

#[tokio::test]
async fn batches_over_the_limit_are_refused() {
    let mut s = test_settings();
    s.limits.max_batch_events = 2;
    let app = spawn_with(s, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let d = decide(&app, "M00000001").await;
    let o = &d["offers"][0];
    let imp =
        json!({"decision_id": d["decision_id"], "offer_id": o["offer_id"], "type": "impression"});
    let p = assert_problem(
        app.post_json("/v1/events", &json!([imp, imp, imp])).await,
        422,
        Some("body"),
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("1 to 2"), "{p}");
    assert_eq!(
        app.post_json("/v1/events", &json!([imp, imp]))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn withdrawn_consent_removes_a_member_from_campaigns_at_once() {
    let app = spawn_app().await;
    let body = json!({"channel": "email", "offers": 1, "date": chrono::Utc::now().date_naive().to_string()});
    let ids = |text: String| -> Vec<String> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["member_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let r = app.post_json("/v1/campaigns", &body).await;
    assert_eq!(r.status(), 200);
    let before = ids(r.text().await.unwrap());
    let member = before
        .first()
        .expect("someone in the email segment")
        .clone();
    let r = app
        .post_json(
            "/v1/member-events",
            &json!({"member_id": member, "type": "consent_changed", "channel": "email", "granted": false}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = app.post_json("/v1/campaigns", &body).await;
    let after = ids(r.text().await.unwrap());
    assert!(
        !after.contains(&member),
        "{member} still in the email campaign"
    );
    assert!(!after.is_empty());
}
