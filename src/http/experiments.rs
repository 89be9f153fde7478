//! `GET /v1/experiments` and `GET /v1/experiments/{id}/report`.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::domain::FieldError;
use crate::experiments::SegmentBy;
use crate::service::SharedState;
use crate::stats::Correction;

/// `GET /v1/experiments`: ids, variants, weights, control.
#[utoipa::path(
    get,
    path = "/v1/experiments",
    tag = "experiments",
    responses((status = 200, description = "`{\"experiments\": [...]}`: each with id, traffic, mde, segment_min_members, guardrails, control and variants", body = serde_json::Value)),
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
                "mde": e.mde,
                "segment_min_members": e.segment_min_members,
                "guardrails": e.guardrails,
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

/// `GET /v1/experiments/{id}/report`, optionally `?by=` a segment
/// dimension and `&correction=holm|bh`.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}/report",
    tag = "experiments",
    params(
        ("id" = String, Path, description = "experiment id"),
        ("by" = Option<String>, Query, description = "split by segment at first exposure: `tier`, `value_segment`, `traveller` (business/leisure), `home_airport` or `channel`; the answer is then `{\"experiment\", \"by\", \"correction\", \"min_members\", \"segments\": [{\"segment\", \"variants\": [rows as in the report, each lift with `p_value_corrected`]}]}`; a segment with fewer than the experiment's `segment_min_members` in the variant or the control gets counts and no comparison"),
        ("correction" = Option<String>, Query, description = "with `by`: `holm` (default; family-wise error) or `bh` (Benjamini-Hochberg; false discovery rate), across segments per variant and metric"),
    ),
    responses(
        (status = 200, description = "per-variant exposure, conversion, revenue, tests, verdict and sample size still needed, and `guardrails: [{variant, metric, margin, harm, harm_ci_low, harm_ci_high, status: ok|warning|failing}]` (per segment with `by`, without guardrails)", body = serde_json::Value),
        (status = 404, description = "no such experiment", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`by` or `correction` is not one of the values listed", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn report(
    path: web::Path<String>,
    query: web::Query<std::collections::HashMap<String, String>>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let by = query
        .get("by")
        .map(|b| {
            SegmentBy::parse(b).ok_or_else(|| {
                ApiError::InvalidField(FieldError::new(
                    "by",
                    "must be tier, value_segment, traveller, home_airport or channel",
                ))
            })
        })
        .transpose()?;
    let correction = query
        .get("correction")
        .map(|c| {
            Correction::parse(c).ok_or_else(|| {
                ApiError::InvalidField(FieldError::new("correction", "must be holm or bh"))
            })
        })
        .transpose()?
        .unwrap_or_default();
    let engine = state.engine();
    let spec = engine
        .experiments
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::UnknownResource {
            field: "id".into(),
            detail: "no such experiment".into(),
        })?;
    if let Some(by) = by {
        let report = state
            .state()
            .experiments()
            .segmented_report(spec, by, correction);
        return Ok(HttpResponse::Ok().json(report));
    }
    let report = state.state().experiments().report(spec);
    state
        .metrics()
        .observe_reports(std::slice::from_ref(&report));
    Ok(HttpResponse::Ok().json(report))
}
