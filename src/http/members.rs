//! Member updates: `PUT /v1/members/{id}` (whole record), `GET
//! /v1/members/{id}`, bulk `POST /v1/members` (NDJSON) and `POST
//! /v1/member-events`. Every write is durable and applied before it is
//! answered; the next decision for that member sees it.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::error::ApiError;
use crate::domain::{FieldError, MemberRecord};
use crate::events::MemberEventDto;
use crate::parse::from_json;
use crate::service::SharedState;
use crate::state::members::LoadReport;

pub use crate::service::members::{Erased, MemberEventAccepted};

/// `GET /v1/members/{id}`.
#[utoipa::path(
    get,
    path = "/v1/members/{id}",
    tag = "members",
    params(("id" = String, Path, description = "member id")),
    responses(
        (status = 200, description = "the member", body = MemberRecord),
        (status = 404, description = "no such member", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_member(
    path: web::Path<String>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    match state.member(&id) {
        Some(m) => Ok(HttpResponse::Ok().json(MemberRecord::from_member(&id, &m))),
        None => Err(crate::service::members::MemberError::Unknown.into()),
    }
}

/// `PUT /v1/members/{id}`: creates or replaces the whole record.
#[utoipa::path(
    put,
    path = "/v1/members/{id}",
    tag = "members",
    params(("id" = String, Path, description = "member id")),
    request_body = MemberRecord,
    responses(
        (status = 200, description = "replaced", body = MemberRecord),
        (status = 201, description = "created", body = MemberRecord),
        (status = 400, description = "malformed JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (named in `field`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "put_member", skip_all)]
pub async fn put_member(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings().server.max_body_bytes;
    let body = super::read_json_body(&req, payload, max).await?;
    let id = path.into_inner();
    let rec: MemberRecord = from_json(&body)?;
    if rec.member_id != id {
        return Err(FieldError::new("member_id", "must equal the id in the path").into());
    }
    let m = rec.to_member_all()?;
    let written = state.put_member(&id, &m).await?;
    let out = MemberRecord::from_member(&id, &m);
    Ok(if written.existed {
        HttpResponse::Ok().json(out)
    } else {
        HttpResponse::Created().json(out)
    })
}

/// `DELETE /v1/members/{id}`: erases a member and everything held under
/// the id (durably: a log record that replay applies after the member's
/// earlier records). Idempotent: erasing an unknown id still clears
/// decisions and suppressions a cold-start member may have left.
#[utoipa::path(
    delete,
    path = "/v1/members/{id}",
    tag = "members",
    params(("id" = String, Path, description = "member id")),
    responses(
        (status = 200, description = "erased (durable); `erased` says whether a record existed", body = Erased),
        (status = 422, description = "the id is invalid", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "delete_member", skip_all)]
pub async fn delete_member(
    path: web::Path<String>,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let erased = state.erase_member(&path.into_inner(), Utc::now()).await?;
    Ok(HttpResponse::Ok().json(erased))
}

/// `POST /v1/members`: NDJSON, one member a line. Good lines are applied (as
/// one durable record); bad lines are reported by number and field.
#[utoipa::path(
    post,
    path = "/v1/members",
    tag = "members",
    request_body(
        description = "one member record (JSON, the `PUT` body) a line",
        content(
            (String = "application/x-ndjson"),
            (String = "text/plain"),
        ),
    ),
    responses(
        (status = 200, description = "lines loaded and rejected", body = LoadReport),
        (status = 400, description = "body is not UTF-8", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not NDJSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_members", skip_all)]
pub async fn post_members(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(ct) = req.headers().get(actix_web::http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let ndjson = [
            "application/x-ndjson",
            "application/jsonl",
            "application/json",
            "text/plain",
        ];
        if !ndjson.iter().any(|t| ct.starts_with(t)) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let body = super::read_body(payload, state.settings().server.max_bulk_bytes, &req).await?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::MalformedJson(FieldError::new(
            "body",
            format!(
                "malformed JSON: body is not UTF-8 (byte {})",
                e.valid_up_to()
            ),
        ))
    })?;
    let report: LoadReport = state.load_members(text).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `POST /v1/member-events`.
#[utoipa::path(
    post,
    path = "/v1/member-events",
    tag = "members",
    request_body = crate::events::MemberEventDto,
    responses(
        (status = 202, description = "durable and applied", body = MemberEventAccepted),
        (status = 400, description = "malformed JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (named in `field`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such member", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "more points than the balance", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_member_events", skip_all)]
pub async fn post_member_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings().server.max_body_bytes;
    let body = super::read_json_body(&req, payload, max).await?;
    let ev: MemberEventDto = from_json(&body)?;
    let accepted = state.member_event(ev, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(accepted))
}
