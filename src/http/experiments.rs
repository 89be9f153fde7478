//! `GET /v1/experiments` and `GET /v1/experiments/{id}/report`.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::service::SharedState;

/// `GET /v1/experiments`: ids, variants, weights, control.
#[utoipa::path(
    get,
    path = "/v1/experiments",
    tag = "experiments",
    responses((status = 200, description = "`{\"experiments\": [...]}`: each with id, traffic, control and variants", body = serde_json::Value)),
)]
pub async fn list(state: web::Data<SharedState>) -> HttpResponse {
    let engine = state.engine();
    let out: Vec<serde_json::Value> = engine
        .experiments
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "traffic": e.traffic,
                "control": e.variants[e.control()].name,
                "variants": e.variants.iter().map(|v| serde_json::json!({
                    "name": v.name,
                    "weight": v.weight,
                    "control": v.control,
                    "holdout": v.holdout,
                    "ranking": v.ranking,
                    "max_offers": v.max_offers,
                    "categories": v.categories,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({"experiments": out}))
}

/// `GET /v1/experiments/{id}/report`.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}/report",
    tag = "experiments",
    params(("id" = String, Path, description = "experiment id")),
    responses(
        (status = 200, description = "per-variant exposure, conversion, revenue and tests", body = serde_json::Value),
        (status = 404, description = "no such experiment", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn report(
    path: web::Path<String>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let engine = state.engine();
    let spec = engine
        .experiments
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::UnknownResource {
            field: "id".into(),
            detail: "no such experiment".into(),
        })?;
    let report = state.state().experiments().report(spec);
    state
        .metrics()
        .observe_reports(std::slice::from_ref(&report));
    Ok(HttpResponse::Ok().json(report))
}
