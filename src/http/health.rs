//! Liveness, readiness and the Prometheus endpoint.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::service::SharedState;

/// The body of `GET /healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Always `ok`.
    pub status: &'static str,
}

/// The body of `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ready<'a> {
    /// Always `ready`.
    pub status: &'static str,
    /// Members loaded.
    pub members: usize,
    /// Catalog version.
    pub catalog_version: &'a str,
    /// Offers in the catalog.
    pub offers: usize,
    /// Model version.
    pub model_version: &'a str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "the process is up", body = Status)),
)]
/// `GET /healthz`: the process is up. Deliberately does nothing else; it is
/// also the load tests' baseline for the most this stack can serve.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// `GET /readyz`: members, catalog and model are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "still starting", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn readyz(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable("still starting".into()));
    }
    let engine = state.engine();
    Ok(HttpResponse::Ok().json(Ready {
        status: "ready",
        members: state.state().members().len(),
        catalog_version: &engine.catalog.version,
        offers: engine.catalog.offers.len(),
        model_version: &engine.table.version,
    }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")),
)]
pub async fn metrics(state: web::Data<SharedState>) -> HttpResponse {
    state
        .metrics()
        .members
        .set(state.state().members().len() as i64);
    let engine = state.engine();
    let reports: Vec<_> = engine
        .experiments
        .iter()
        .map(|e| state.state().experiments().report_without_loyalty(e))
        .collect();
    state.metrics().observe_reports(&reports);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics().render())
}
