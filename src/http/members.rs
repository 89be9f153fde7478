//! Member updates: `PUT /v1/members/{id}` (whole record), `GET
//! /v1/members/{id}`, bulk `POST /v1/members` (NDJSON) and `POST
//! /v1/member-events`. Every write is durable and applied before it is
//! answered; the next decision for that member sees it.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::error::ApiError;
use crate::domain::{Day, FieldError, MemberRecord};
use crate::durable::{LogRecord, MemberWire};
use crate::events::{MemberChange, MemberEventDto};
use crate::parse::from_json;
use crate::state::SharedState;
use crate::store::{parse_member_line, LineError, LoadReport, MAX_REPORTED_ERRORS};

/// The answer to an accepted member event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemberEventAccepted {
    /// Log sequence number of the change.
    pub lsn: u64,
    /// The member after the change.
    pub member: Option<MemberRecord>,
}

/// Logs a record and applies it once durable; 503 if the log refuses it.
async fn write(state: &SharedState, rec: LogRecord, kind: &'static str) -> Result<u64, ApiError> {
    let payload = rec.encode();
    let core = state.core.clone();
    let metrics = state.metrics.clone();
    state
        .wal
        .append(payload, move |_| {
            core.apply(&rec, true);
            metrics.member_updates.with_label_values(&[kind]).inc();
        })
        .await
        .map_err(|e| {
            state.metrics.log_errors.with_label_values(&[kind]).inc();
            ApiError::Storage(e)
        })
}

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
    match state.core.members.get(&id) {
        Some(m) => Ok(HttpResponse::Ok().json(MemberRecord::from_member(&id, &m))),
        None => Err(ApiError::UnknownResource {
            field: "member_id".into(),
            detail: "no such member".into(),
        }),
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
    let body = super::read_json_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let id = path.into_inner();
    let rec: MemberRecord = from_json(&body)?;
    if rec.member_id != id {
        return Err(ApiError::InvalidField(FieldError::new(
            "member_id",
            "must equal the id in the path",
        )));
    }
    let m = rec.to_member_all()?;
    let existed = state.core.members.get(&id).is_some();
    write(
        &state,
        LogRecord::Members(vec![(id.clone(), MemberWire::from(&m))]),
        "put",
    )
    .await?;
    let out = MemberRecord::from_member(&id, &m);
    Ok(if existed {
        HttpResponse::Ok().json(out)
    } else {
        HttpResponse::Created().json(out)
    })
}

/// The answer to an erasure.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Whether a member record existed.
    pub erased: bool,
    /// Log sequence number of the erasure record.
    pub lsn: u64,
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
    let id = path.into_inner();
    crate::domain::validate_member_id(&id, "member_id")?;
    let existed = state.core.members.get(&id).is_some();
    let lsn = write(
        &state,
        LogRecord::MemberErased {
            member_id: id.clone(),
            at_ms: Utc::now().timestamp_millis(),
        },
        "erase",
    )
    .await?;
    tracing::info!(
        member = %state.security.pseudonyms.of(&id),
        existed,
        lsn,
        "member erased"
    );
    Ok(HttpResponse::Ok().json(Erased {
        erased: existed,
        lsn,
    }))
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
        if !(ct.starts_with("application/x-ndjson")
            || ct.starts_with("application/jsonl")
            || ct.starts_with("application/json")
            || ct.starts_with("text/plain"))
        {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let body = super::read_body(payload, state.settings.server.max_bulk_bytes, &req).await?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::MalformedJson(FieldError::new(
            "body",
            format!(
                "malformed JSON: body is not UTF-8 (byte {})",
                e.valid_up_to()
            ),
        ))
    })?;
    let mut report = LoadReport::default();
    let mut good = Vec::new();
    for line in text.lines() {
        report.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_member_line(line) {
            Ok((id, m)) => good.push((id, MemberWire::from(&m))),
            Err(e) => {
                report.rejected += 1;
                if report.errors.len() < MAX_REPORTED_ERRORS {
                    report.errors.push(LineError {
                        line: report.lines,
                        field: (!e.field.is_empty()).then_some(e.field),
                        message: e.message,
                    });
                }
            }
        }
    }
    report.loaded = good.len() as u64;
    if !good.is_empty() {
        write(&state, LogRecord::Members(good), "bulk").await?;
    }
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
    let body = super::read_json_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let ev: MemberEventDto = from_json(&body)?;
    let member_id = ev.member_id().to_string();
    crate::domain::validate_member_id(&member_id, "member_id")?;
    let now = Utc::now();
    let change = ev.into_change(Day::of(now))?;
    let Some(current) = state.core.members.get(&member_id) else {
        return Err(ApiError::UnknownResource {
            field: "member_id".into(),
            detail: "no such member".into(),
        });
    };
    if let MemberChange::PointsRedeemed(p) = change {
        if p > current.points {
            return Err(ApiError::Conflict {
                field: "points".into(),
                detail: format!("the balance is {} points", current.points),
            });
        }
    }
    let kind = match &change {
        MemberChange::FlightFlown { .. } => "flight_flown",
        MemberChange::PointsEarned(_) => "points_earned",
        MemberChange::PointsRedeemed(_) => "points_redeemed",
        MemberChange::TierChanged(_) => "tier_changed",
        MemberChange::ConsentChanged(..) => "consent_changed",
        MemberChange::Purchase { .. } => "purchase",
    };
    let lsn = write(
        &state,
        LogRecord::MemberChange {
            member_id: member_id.clone(),
            at_ms: now.timestamp_millis(),
            change,
        },
        kind,
    )
    .await?;
    let member = state
        .core
        .members
        .get(&member_id)
        .map(|m| MemberRecord::from_member(&member_id, &m));
    Ok(HttpResponse::Accepted().json(MemberEventAccepted { lsn, member }))
}
