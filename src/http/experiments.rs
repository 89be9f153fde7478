//! `GET /v1/experiments`, `GET /v1/experiments/{id}/report` and
//! `GET /v1/experiments/{id}/timeseries`.

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
                "loyalty_window_days": e.loyalty_window_days,
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
        let report = state.state().experiments().segmented_report(
            spec,
            by,
            correction,
            state.state().log_time_ms(),
        );
        return Ok(HttpResponse::Ok().json(report));
    }
    let report = state
        .state()
        .experiments()
        .report(spec, state.state().log_time_ms());
    state
        .metrics()
        .observe_reports(std::slice::from_ref(&report));
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/experiments/{id}/timeseries`: results over time.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}/timeseries",
    tag = "experiments",
    params(("id" = String, Path, description = "experiment id")),
    responses(
        (status = 200, description = "`{\"experiment\", \"days\": [{\"day\": \"YYYY-MM-DD\", \"variants\": [{\"variant\", \"members\", \"conversions\", \"value\", \"conversion_lift\", \"value_lift\", \"sequential_p_value\"}]}]}`: per log day with activity (UTC, oldest first, at most 400 days kept), each variant's cumulative members, conversions and value of conversions at the day's end, the conversion and value-per-member lifts against the control as of that day (shaped as the report's lifts, with 95% intervals; null for the control or without data) and the always-valid p-value as of that day", body = serde_json::Value),
        (status = 404, description = "no such experiment", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn timeseries(
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
    Ok(HttpResponse::Ok().json(state.state().experiments().timeseries(spec)))
}

fn find_spec<'a>(
    engine: &'a crate::decision::Engine,
    id: &str,
) -> Result<&'a crate::experiments::ExperimentSpec, ApiError> {
    engine
        .experiments
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ApiError::UnknownResource {
            field: "id".into(),
            detail: "no such experiment".into(),
        })
}

fn svg(body: Result<String, String>) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

/// `GET /v1/experiments/{id}/plots/forest.svg`: the report's lifts as a
/// forest plot.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}/plots/forest.svg",
    tag = "experiments",
    params(("id" = String, Path, description = "experiment id")),
    responses(
        (status = 200, description = "SVG: every `*_lift` of every variant row of the report (relative lift in %, with its 95% interval), one row per variant and metric", content_type = "image/svg+xml", body = String),
        (status = 404, description = "no such experiment", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn forest_plot(
    path: web::Path<String>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine();
    let spec = find_spec(&engine, &path)?;
    let report = state
        .state()
        .experiments()
        .report(spec, state.state().log_time_ms());
    let value = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.into()))?;
    svg(super::plots::forest_svg(&value))
}

/// `GET /v1/experiments/{id}/plots/timeseries.svg`: results over time.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}/plots/timeseries.svg",
    tag = "experiments",
    params(("id" = String, Path, description = "experiment id")),
    responses(
        (status = 200, description = "SVG: per variant the cumulative relative conversion lift (%) with its 95% interval band, and the always-valid p-value, per log day (the time series' figures)", content_type = "image/svg+xml", body = String),
        (status = 404, description = "no such experiment", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn timeseries_plot(
    path: web::Path<String>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine();
    let spec = find_spec(&engine, &path)?;
    let ts = state.state().experiments().timeseries(spec);
    let value = serde_json::to_value(&ts).map_err(|e| ApiError::Internal(e.into()))?;
    svg(super::plots::timeseries_svg(&value))
}
