use offer_engine::domain::{Channel, ConsentChannel, Tier};
use serde_json::{json, Value};

use crate::helpers::*;

const CATEGORIES: [&str; 10] = [
    "upgrade",
    "lounge",
    "partner_bundle",
    "baggage",
    "seat",
    "wifi",
    "miles_booster",
    "tier_fast_track",
    "retention",
    "cobrand_card",
];

#[tokio::test]
async fn known_member_gets_ranked_offers_with_every_field() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Silver);
    let resp = app.post_offers(&offer_request(&member)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["member_id"], member.as_str());
    assert_eq!(body["cold_start"], false);
    assert!(!body["decision_id"].as_str().unwrap().is_empty());
    assert_eq!(body["model_version"], "propensity-lr-v1");
    let offers = body["offers"].as_array().unwrap();
    assert!(!offers.is_empty() && offers.len() <= 3, "{body}");
    let mut last_ev = f64::INFINITY;
    let mut cats = std::collections::HashSet::new();
    for o in offers {
        assert!(CATEGORIES.contains(&o["category"].as_str().unwrap()), "{o}");
        assert!(
            cats.insert(o["category"].as_str().unwrap().to_string()),
            "one offer per category"
        );
        assert!(o["offer_id"].is_string() && o["title"].is_string());
        assert!(o["price"].is_object() || o["points_price"].is_u64(), "{o}");
        let score = o["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(o["propensity"], 1.0, "greedy when no variant explores: {o}");
        let ev = o["expected_value"].as_f64().unwrap();
        assert!(ev <= last_ev, "ranked by expected value: {body}");
        last_ev = ev;
        assert!(!o["reasons"].as_array().unwrap().is_empty());
        let exp = chrono::DateTime::parse_from_rfc3339(o["expires_at"].as_str().unwrap()).unwrap();
        assert!(exp > chrono::Utc::now());
    }
    // Structured reasons: codes and figures, no sentences unless asked for.
    let reasons = offers[0]["reasons"].as_array().unwrap();
    let tier = &reasons[0];
    assert!(
        (tier["code"] == "tier" && tier["tier"] == "silver")
            || (tier["code"] == "near_next_tier" && tier["current_tier"] == "silver"),
        "{tier}"
    );
    assert!(
        reasons.iter().all(|r| r.get("text").is_none()),
        "{reasons:?}"
    );
    let last = reasons.last().unwrap();
    assert_eq!(last["code"], "propensity", "{last}");
    assert!(
        last["p"].is_f64() && last["expected_value"].is_number(),
        "{last}"
    );
}

#[tokio::test]
async fn unknown_member_is_a_cold_start_with_context_only_offers() {
    let app = spawn_app().await;
    let resp = app.post_offers(&offer_request("NOBODY-123")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["cold_start"], true);
    let offers = body["offers"].as_array().unwrap();
    assert!(!offers.is_empty());
    for o in offers {
        // Offers that need member data (points, tier closeness, lapsed spend) are not made.
        assert!(o["points_price"].is_null(), "{o}");
        assert_ne!(o["category"], "tier_fast_track");
        assert_ne!(o["category"], "retention");
    }
}

#[tokio::test]
async fn gold_members_are_never_sold_a_lounge_pass() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    app.state.state().members().for_each(|id, m| {
        if m.tier >= Tier::Gold && ids.len() < 40 {
            ids.push(id.to_string());
        }
    });
    assert!(ids.len() >= 20);
    for id in ids {
        let mut req = offer_request(&id);
        req["max_offers"] = json!(10);
        req["itinerary"]["destination"] = json!("LHR");
        let body: Value = app.post_offers(&req).await.json().await.unwrap();
        for o in body["offers"].as_array().unwrap() {
            assert_ne!(o["category"], "lounge", "{id}: {o}");
        }
    }
}

#[tokio::test]
async fn marketing_channels_respect_consent() {
    let app = spawn_app().await;
    let opted_out = app.find_member(|m| !m.consent.granted(ConsentChannel::Email));
    let mut req = offer_request(&opted_out);
    req["channel"] = json!(Channel::Email.as_str());
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert_eq!(body["offers"].as_array().unwrap().len(), 0, "{body}");
    let opted_in = app.find_member(|m| m.consent.granted(ConsentChannel::Email));
    let mut req = offer_request(&opted_in);
    req["channel"] = json!("email");
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert!(!body["offers"].as_array().unwrap().is_empty(), "{body}");
}

#[tokio::test]
async fn max_offers_is_honoured() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Base);
    let mut req = offer_request(&member);
    req["max_offers"] = json!(1);
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert_eq!(body["offers"].as_array().unwrap().len(), 1);
    req["max_offers"] = json!(10);
    req["itinerary"]["destination"] = json!("NRT");
    let body: Value = app.post_offers(&req).await.json().await.unwrap();
    assert!(body["offers"].as_array().unwrap().len() > 3, "{body}");
}

#[tokio::test]
async fn bad_inputs_get_problem_json_naming_the_field() {
    let app = spawn_app().await;
    let good = offer_request("M00000001");
    let with = |path: &[&str], v: Value| {
        let mut b = good.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b
    };
    let without = |path: &[&str]| {
        let mut b = good.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur.as_object_mut().unwrap().remove(path[path.len() - 1]);
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (without(&["itinerary", "cabin"]), 422, "itinerary.cabin"),
        (without(&["member_id"]), 422, "member_id"),
        (with(&["member_id"], json!(42)), 422, "member_id"),
        (with(&["channel"], json!("fax")), 422, "channel"),
        (
            with(&["itinerary", "cabin"], json!("deluxe")),
            422,
            "itinerary.cabin",
        ),
        (
            with(&["itinerary", "origin"], json!("PEKING")),
            422,
            "itinerary.origin",
        ),
        (
            with(&["itinerary", "destination"], json!("ZZZ")),
            422,
            "itinerary.destination",
        ),
        (
            with(&["itinerary", "fare", "amount"], json!(-1.0)),
            422,
            "itinerary.fare.amount",
        ),
        (
            with(&["itinerary", "passengers"], json!(0)),
            422,
            "itinerary.passengers",
        ),
        (
            with(&["itinerary", "passengers"], json!(50)),
            422,
            "itinerary.passengers",
        ),
        (
            with(&["itinerary", "departure"], json!("next week")),
            422,
            "itinerary.departure",
        ),
        (with(&["max_offers"], json!(0)), 422, "max_offers"),
        (with(&["max_offers"], json!(11)), 422, "max_offers"),
        (with(&["surprise"], json!(true)), 422, "surprise"),
    ];
    for (body, status, field) in cases {
        let resp = app.post_offers(&body).await;
        let problem = assert_problem(resp, status, Some(field)).await;
        assert!(problem["detail"].as_str().unwrap().len() > 5);
    }
    let resp = app
        .post_raw(
            "/v1/offers",
            b"{\"member_id\": ".to_vec(),
            "application/json",
        )
        .await;
    assert_problem(resp, 400, Some("body")).await;
    let resp = app
        .post_raw("/v1/offers", b"".to_vec(), "application/json")
        .await;
    assert_problem(resp, 400, Some("body")).await;
    let resp = app
        .post_raw("/v1/offers", b"<xml/>".to_vec(), "text/xml")
        .await;
    assert_problem(resp, 415, None).await;
    let huge = vec![b' '; 200_000];
    let resp = app.post_raw("/v1/offers", huge, "application/json").await;
    assert_problem(resp, 413, Some("body")).await;
}

#[tokio::test]
async fn arbitrary_bytes_never_give_a_5xx() {
    let app = spawn_app().await;
    let good = serde_json::to_vec(&offer_request("M00000001")).unwrap();
    let mut seed: u64 = 0x5eed;
    for i in 0..300 {
        let mut b = good.clone();
        for _ in 0..(1 + i % 8) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pos = (seed >> 33) as usize % b.len();
            b[pos] = (seed >> 20) as u8;
        }
        if i % 5 == 0 {
            b.truncate((seed >> 40) as usize % b.len());
        }
        let resp = app
            .post_raw("/v1/offers", b.clone(), "application/json")
            .await;
        let s = resp.status().as_u16();
        assert!(
            s == 200 || (400..500).contains(&s),
            "{s} for {:?}",
            String::from_utf8_lossy(&b)
        );
    }
}

#[tokio::test]
async fn an_exploring_variant_returns_and_logs_slot_propensities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("experiments.toml");
    std::fs::write(
        &path,
        "[[experiment]]\nid = \"explore\"\nsalt = \"s\"\ntraffic = 1.0\n\
         [[experiment.variant]]\nname = \"a\"\ncontrol = true\nweight = 1\n\
         exploration = { policy = \"epsilon_greedy\", epsilon = 0.5 }\n\
         [[experiment.variant]]\nname = \"b\"\nweight = 1\n\
         exploration = { policy = \"softmax\", temperature = 50.0 }\n",
    )
    .unwrap();
    let mut settings = test_settings();
    settings.experiments.file = path.display().to_string();
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    let mut explored = 0;
    for k in 0..20 {
        let member = app.find_member(|m| m.tier as u8 == (k % 3) as u8);
        let body: Value = app
            .post_offers(&offer_request(&member))
            .await
            .json()
            .await
            .unwrap();
        let id = body["decision_id"].as_str().unwrap();
        let rec = app
            .state
            .state()
            .ledger()
            .decision(id, chrono::Utc::now().timestamp_millis())
            .expect("remembered");
        // The features it was scored on are logged and kept once, by the
        // learner, when the log has applied the decision.
        assert!(rec.record.features.is_empty(), "not kept twice");
        let mut learned = None;
        for _ in 0..500 {
            learned = app.state.state().learner().remembered(id);
            if learned.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            learned.expect("remembered by the learner").features.len(),
            offer_engine::features::N_FEATURES
        );
        for (o, issued) in body["offers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&rec.record.offers)
        {
            let p = o["propensity"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{o}");
            // JSON numbers round-trip to within an ulp or so.
            assert!(
                (p - issued.propensity).abs() < 1e-12,
                "the response and the record agree: {p} vs {}",
                issued.propensity
            );
            explored += (p < 1.0) as u32;
        }
    }
    assert!(explored > 0, "some slot had a real choice");
}

/// Sends `body` to `POST /v1/offers` over a raw connection in `pieces`
/// chunks of chunked transfer encoding, each its own write; returns the
/// status and the answer's body.
async fn post_offers_in_chunks(app: &TestApp, body: &[u8], pieces: usize) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let auth = app
        .key
        .as_ref()
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/offers HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(pieces)) {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(piece);
        c.extend_from_slice(b"\r\n");
        s.write_all(&c).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The server may answer (413) and close before the last chunk is sent.
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let at = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(answer.len());
    (status, answer[at..].to_vec())
}

#[tokio::test]
async fn a_body_in_several_chunks_is_read_whole_and_still_limited() {
    let app = spawn_app().await;
    let member = app.find_member(|m| m.tier == Tier::Gold);
    // Whole in three pieces: the same answer as in one.
    let (status, body) =
        post_offers_in_chunks(&app, offer_request(&member).to_string().as_bytes(), 3).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let d: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(d["member_id"], member.as_str());
    assert!(!d["offers"].as_array().unwrap().is_empty(), "{d}");
    // Over the limit only once the pieces are added up: refused.
    let limit = app.state.settings().server.max_body_bytes;
    let mut big = format!("{{\"member_id\":\"{member}\",\"pad\":\"").into_bytes();
    big.resize(limit + 10, b'x');
    let (status, body) = post_offers_in_chunks(&app, &big, 4).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn a_json_route_without_a_json_content_type_is_415() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&offer_request("M00000001")).unwrap();
    for (method, path) in [
        (reqwest::Method::POST, "/v1/offers"),
        (reqwest::Method::POST, "/v1/events"),
        (reqwest::Method::POST, "/v1/member-events"),
        (reqwest::Method::POST, "/v1/campaigns"),
        (reqwest::Method::PUT, "/v1/members/M00000001"),
    ] {
        // No Content-Type at all: not read as JSON.
        let resp = app
            .request(method.clone(), path)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_problem(resp, 415, None).await;
        for ct in ["text/plain", "application/x-www-form-urlencoded"] {
            let resp = app
                .request(method.clone(), path)
                .header("content-type", ct)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_problem(resp, 415, None).await;
        }
    }
    // JSON with parameters, and a +json type, are JSON.
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let resp = app.post_raw("/v1/offers", body.clone(), ct).await;
        assert_eq!(resp.status(), 200, "{ct}");
    }
}

#[tokio::test]
async fn a_fare_in_a_currency_the_engine_does_not_price_in_is_refused() {
    let app = spawn_app().await;
    for currency in ["USD", "XXX", "EUR"] {
        let mut body = offer_request("M00000001");
        body["itinerary"]["fare"]["currency"] = json!(currency);
        let problem = assert_problem(
            app.post_offers(&body).await,
            422,
            Some("itinerary.fare.currency"),
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains("CNY"),
            "{problem}"
        );
    }
    let mut body = offer_request("M00000001");
    body["itinerary"]["fare"]["currency"] = json!("yuan");
    assert_problem(
        app.post_offers(&body).await,
        422,
        Some("itinerary.fare.currency"),
    )
    .await;
}

#[tokio::test]
async fn every_bad_field_of_a_request_is_reported_at_once() {
    let app = spawn_app().await;
    // Semantic errors only: all found by the checks.
    let mut body = offer_request("M00000001");
    body["itinerary"]["origin"] = json!("XXX");
    body["itinerary"]["fare"]["currency"] = json!("USD");
    body["itinerary"]["passengers"] = json!(50);
    body["max_offers"] = json!(11);
    let problem = assert_problem(app.post_offers(&body).await, 422, Some("itinerary.origin")).await;
    let fields = error_fields(&problem);
    assert_eq!(
        fields,
        [
            "itinerary.origin",
            "itinerary.fare.currency",
            "itinerary.passengers",
            "max_offers"
        ],
        "{problem}"
    );
    for e in problem["errors"].as_array().unwrap() {
        assert!(e["detail"].as_str().unwrap().len() > 5, "{e}");
    }
    // A missing field, a mistyped one and an unknown one with a bad value:
    // the first is what a typed parse names, the rest follow.
    let mut body = offer_request("M00000001");
    body["itinerary"]
        .as_object_mut()
        .unwrap()
        .remove("cabin")
        .unwrap();
    body["channel"] = json!("fax");
    body["itinerary"]["passengers"] = json!(0);
    body["surprise"] = json!(true);
    let problem = assert_problem(app.post_offers(&body).await, 422, None).await;
    let mut fields = error_fields(&problem);
    assert_eq!(problem["field"], fields[0], "{problem}");
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "channel",
            "itinerary.cabin",
            "itinerary.passengers",
            "surprise"
        ],
        "{problem}"
    );
    // One bad field: `errors` holds just it.
    let mut body = offer_request("M00000001");
    body["itinerary"]["passengers"] = json!(50);
    let problem = assert_problem(
        app.post_offers(&body).await,
        422,
        Some("itinerary.passengers"),
    )
    .await;
    assert_eq!(
        problem["errors"],
        json!([{"field": "itinerary.passengers", "detail": "must be from 1 to 9"}])
    );
    assert_eq!(
        problem["detail"],
        "itinerary.passengers: must be from 1 to 9"
    );
}
