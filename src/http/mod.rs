//! HTTP adapter (actix-web). Handlers only translate: read the body, parse
//! it into domain types, call one use case of the service layer
//! ([`crate::service`]), render the answer. Routes
//! are grouped by resource; every error goes through [`error::ApiError`].

mod admin;
pub mod auth;
mod campaigns;
mod console;
pub mod error;
mod events;
mod experiments;
mod health;
pub mod idempotency;
pub mod limits;
mod members;
pub mod offers;
pub mod openapi;
pub mod plots;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use crate::service::SharedState;
use error::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/offers")
            .route(web::post().to(offers::post_offers))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/offers/plots/offers.svg")
            .route(web::get().to(offers::offers_plot))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/offers/stats")
            .route(web::get().to(offers::offer_stats))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/campaigns/runs")
            .route(web::get().to(campaigns::runs))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/events")
            .route(web::post().to(events::post_events))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/members")
            .route(web::post().to(members::post_members))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/members/{id}")
            .route(web::get().to(members::get_member))
            .route(web::put().to(members::put_member))
            .route(web::delete().to(members::delete_member))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/member-events")
            .route(web::post().to(members::post_member_events))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/campaigns")
            .route(web::post().to(campaigns::post_campaigns))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments")
            .route(web::get().to(experiments::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{id}/report")
            .route(web::get().to(experiments::report))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{id}/timeseries")
            .route(web::get().to(experiments::timeseries))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{id}/plots/forest.svg")
            .route(web::get().to(experiments::forest_plot))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/experiments/{id}/plots/timeseries.svg")
            .route(web::get().to(experiments::timeseries_plot))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/console")
            .route(web::get().to(console::index))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/console/console.js")
            .route(web::get().to(console::script))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/console/console.css")
            .route(web::get().to(console::style))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/reload")
            .route(web::post().to(admin::reload))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/snapshot")
            .route(web::post().to(admin::snapshot))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/state")
            .route(web::get().to(admin::state))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/keys")
            .route(web::get().to(admin::keys))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(health::metrics))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi::openapi_json))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

/// `GET /metrics` for the separate metrics listener.
pub async fn metrics_endpoint(state: web::Data<SharedState>) -> actix_web::HttpResponse {
    health::metrics(state).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &HttpRequest) -> actix_web::HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

/// Reads a JSON body up to `limit` bytes. The content type must be JSON
/// (`application/json` or `*/*+json`, parameters allowed): a missing or other
/// one is 415, before the body is read.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !(essence == "application/json" || essence.ends_with("+json")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_body(payload, limit, req).await
}

/// Reads a body of any type up to `limit` bytes.
pub async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    req: &HttpRequest,
) -> Result<web::Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    // A body that arrives in one chunk (nearly every checkout) is kept as
    // it came, without a copy.
    let mut only: Option<web::Bytes> = None;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::MalformedJson(crate::domain::FieldError::new(
                "body",
                format!("malformed JSON: could not read the body: {e}"),
            ))
        })?;
        let held = only.as_ref().map_or(0, |b| b.len()) + body.len();
        if held + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if held == 0 {
            only = Some(chunk);
        } else {
            if let Some(first) = only.take() {
                body.extend_from_slice(&first);
            }
            body.extend_from_slice(&chunk);
        }
    }
    Ok(match only {
        Some(b) => b,
        None => body.freeze(),
    })
}

/// A 200 JSON response serialized into a buffer of `capacity` bytes up
/// front (actix's `.json()` starts at 128 and reallocates as it grows).
pub fn json_ok<T: serde::Serialize>(
    value: &T,
    capacity: usize,
) -> Result<actix_web::HttpResponse, ApiError> {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, value)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("serializing a response")))?;
    Ok(actix_web::HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(buf))
}

/// Middleware: until the service is ready (a cluster replica catching up
/// with the stream at start), and while a cluster replica is stopped at a
/// gap in the stream, every route but `/healthz`, `/readyz` and `/metrics`
/// answers 503 with `Retry-After`: the state is not the stream's.
pub async fn ready_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let not_ready = match req.app_data::<web::Data<SharedState>>() {
        Some(state) if !crate::http::health::serving(state.get_ref()) => {
            Some(crate::http::health::not_ready_reason(state.get_ref()))
        }
        _ => None,
    };
    match not_ready {
        Some(why) if !matches!(req.path(), "/healthz" | "/readyz" | "/metrics") => {
            use actix_web::ResponseError;
            Ok(req
                .into_response(error::ApiError::Unavailable(why).error_response())
                .map_into_right_body())
        }
        _ => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

/// Middleware: counts requests and times them by route template.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = std::time::Instant::now();
    let state = req.app_data::<web::Data<SharedState>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await?;
    if let Some(state) = state {
        let r = res.request();
        state.metrics().http_request(
            r.path(),
            || r.match_pattern(),
            method.as_str(),
            res.status().as_u16(),
            start.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}
