use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["members"], TEST_MEMBERS);
    assert!(body["model_version"].is_string());
}

#[tokio::test]
async fn metrics_use_route_templates_and_never_member_ids() {
    let app = spawn_app().await;
    let member = app.find_member(|_| true);
    for _ in 0..3 {
        assert_eq!(app.post_offers(&offer_request(&member)).await.status(), 200);
    }
    assert_eq!(app.get("/no/such/path/M00000001").await.status(), 404);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"offer_engine_http_requests_total{method="POST",route="/v1/offers",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#));
    assert!(text.contains(
        "offer_engine_decision_duration_seconds_bucket{channel=\"checkout\",le=\"0.00001\"}"
    ));
    assert!(text.contains("offer_engine_offers_served_total{category="));
    assert!(!text.contains(&member), "a member id leaked into /metrics");
    assert!(!text.contains("M00000001"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/v2/nothing").await, 404, None).await;
    assert_problem(app.get("/v1/offers").await, 405, None).await;
}
