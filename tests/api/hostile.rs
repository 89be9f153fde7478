//! Hostile input, generated: arbitrary bytes, arbitrary JSON, wrong types,
//! huge numbers, deep nesting and invalid UTF-8 sent to every route and
//! method. The server must answer every one with a client error (or, for
//! routes that ignore the body, normally) and never a 5xx; one shared server
//! takes all the cases and must still answer /healthz afterwards.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::*;

/// Every route and method `configure()` registers, plus methods it does not take.
const ROUTES: [(&str, &str); 27] = [
    ("POST", "/v1/offers"),
    ("POST", "/v1/events"),
    ("POST", "/v1/members"),
    ("GET", "/v1/members/M00000001"),
    ("PUT", "/v1/members/M00000001"),
    ("POST", "/v1/member-events"),
    ("POST", "/v1/campaigns"),
    ("GET", "/v1/experiments"),
    ("GET", "/v1/offers/stats"),
    ("GET", "/v1/offers/plots/offers.svg"),
    ("GET", "/v1/campaigns/runs"),
    ("GET", "/v1/experiments/x/report"),
    ("GET", "/v1/experiments/x/timeseries"),
    ("GET", "/v1/experiments/x/plots/forest.svg"),
    ("GET", "/v1/experiments/x/plots/timeseries.svg"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/console"),
    ("DELETE", "/v1/members/M00000002"),
    ("POST", "/v1/admin/reload"),
    ("POST", "/v1/admin/snapshot"),
    ("GET", "/v1/admin/keys"),
    ("DELETE", "/v1/offers"),
    ("PATCH", "/v1/members/M00000001"),
    ("PUT", "/v1/events"),
    ("POST", "/nope"),
];

/// Routes whose body is parsed as one JSON document: nothing random is valid there.
fn parses_json(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("POST", "/v1/offers")
            | ("POST", "/v1/events")
            | ("PUT", "/v1/members/M00000001")
            | ("POST", "/v1/member-events")
            | ("POST", "/v1/campaigns")
    )
}

struct Shared {
    rt: tokio::runtime::Runtime,
    app: TestApp,
}

/// One server for every case (spawning one per case would dominate the run).
fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(spawn_app());
        Shared { rt, app }
    })
}

fn send(route: usize, body: Vec<u8>, content_type: &str) -> Result<(), TestCaseError> {
    let s = shared();
    let (method, path) = ROUTES[route];
    let (status, text) = s.rt.block_on(async {
        let r = s
            .app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", s.app.address),
            )
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the server answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    });
    prop_assert!(status < 500, "{method} {path} -> {status}: {text}");
    if parses_json(method, path) && content_type == "application/json" {
        prop_assert!(
            (400..500).contains(&status),
            "{method} {path} -> {status}: {text}"
        );
    }
    if status >= 400 {
        let problem: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{method} {path}: not JSON: {e}: {text}")))?;
        prop_assert_eq!(problem["status"].as_u64(), Some(status as u64));
        prop_assert_ne!(
            problem["type"].as_str(),
            Some("/problems/internal"),
            "{}",
            text
        );
    }
    Ok(())
}

fn healthz_still_answers() {
    let s = shared();
    let status =
        s.rt.block_on(async { s.app.get("/healthz").await.status().as_u16() });
    assert_eq!(status, 200);
}

/// Any JSON value, including wrong types for every field and numbers far out of range.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("member_id"),
            Just("channel"),
            Just("itinerary"),
            Just("checkout"),
            Just("decision_id"),
            Just("type"),
            Just("accept"),
            Just("email"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("member_id".to_string()),
                    Just("channel".to_string()),
                    Just("itinerary".to_string()),
                    Just("max_offers".to_string()),
                    Just("type".to_string()),
                    Just("points".to_string()),
                    Just("decision_id".to_string()),
                    Just("offer_id".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that is hard on a JSON parser: deep nesting, huge or odd numbers.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..20_000).prop_map(|d| "[".repeat(d) + &"]".repeat(d)),
        (1usize..20_000).prop_map(|d| "{\"a\":".repeat(d) + "1" + &"}".repeat(d)),
        (1usize..5_000).prop_map(|d| "[".repeat(d)),
        "-?[0-9]{20,400}(\\.[0-9]{1,50})?(e[+-]?[0-9]{1,6})?",
        Just("1e999999".to_string()),
        Just("-0".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("{\"member_id\":\"\\u0000\",\"channel\":1e400}".to_string()),
        (0usize..9).prop_map(|n| {
            format!(
                "{{\"member_id\":\"M00000001\",\"channel\":\"checkout\",\"itinerary\":{{\"origin\":\"PEK\",\"destination\":\"SHA\",\"departure\":\"{}\",\"cabin\":\"economy\",\"fare\":{{\"amount\":{},\"currency\":\"CNY\"}},\"passengers\":{}}}}}",
                ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-13-45T99:99:99Z", "", "+275760-09-13T00:00:00Z"][n % 5],
                ["1e308", "-1e308", "18446744073709551616", "0.0000001", "1e-400"][n % 5],
                ["9223372036854775807", "-9223372036854775808", "1e3", "256", "1.5"][n % 5],
            )
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48 * 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_cleanly(route in 0..ROUTES.len(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        send(route, body, "application/json")?;
    }

    #[test]
    fn arbitrary_json_is_refused_cleanly(route in 0..ROUTES.len(), v in json_value()) {
        send(route, serde_json::to_vec(&v).unwrap(), "application/json")?;
    }

    #[test]
    fn nasty_json_text_is_refused_cleanly(route in 0..ROUTES.len(), text in nasty_text()) {
        send(route, text.into_bytes(), "application/json")?;
    }

    #[test]
    fn invalid_utf8_is_refused_cleanly(
        route in 0..ROUTES.len(),
        prefix in "[{\\[\"a-z:,]{0,20}",
        bad in prop::collection::vec(0x80u8..=0xff, 1..8),
        ndjson in any::<bool>(),
    ) {
        let mut body = prefix.into_bytes();
        body.extend(bad);
        send(route, body, if ndjson { "application/x-ndjson" } else { "application/json" })?;
    }
}

#[test]
fn healthz_answers_after_the_hostile_cases() {
    // Runs in the same binary as the property tests, possibly concurrently;
    // it sends hostile bodies of its own first so it never passes vacuously.
    for route in 0..ROUTES.len() {
        send(route, b"[".repeat(100_000), "application/json").unwrap();
        send(route, vec![0xff; 64], "application/json").unwrap();
    }
    healthz_still_answers();
}
