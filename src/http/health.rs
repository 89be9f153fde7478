//! Liveness, readiness and the Prometheus endpoint.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::state::SharedState;

/// `GET /healthz`: the process is up. Deliberately does nothing else; it is
/// also the load tests' baseline for the most this stack can serve.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// `GET /readyz`: members, catalog and model are loaded.
pub async fn readyz(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("still starting".into()));
    }
    let engine = state.engine.load();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "members": state.core.members.len(),
        "catalog_version": engine.catalog.version,
        "offers": engine.catalog.offers.len(),
        "model_version": engine.table.version,
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<SharedState>) -> HttpResponse {
    state.metrics.members.set(state.core.members.len() as i64);
    let engine = state.engine.load();
    let reports: Vec<_> = engine
        .experiments
        .iter()
        .map(|e| state.core.experiments.report(e))
        .collect();
    state.metrics.observe_reports(&reports);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
