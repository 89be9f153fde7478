//! Middleware: every request to a protected route must carry `Authorization:
//! Bearer KEY` with a key holding the route's scope ([`crate::auth::required`]);
//! then the key's rate limit applies. Missing or unknown key: 401; wrong
//! scope: 403; rate used up: 429 with `Retry-After`. All problem+json.
//! In development mode (no master key) every request passes.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use super::error::ApiError;
use crate::auth::{bearer, required, Access};
use crate::service::SharedState;

/// What the check decided.
fn check(state: &SharedState, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(keys) = &state.security().keys else {
        return Ok(());
    };
    let scope = match required(req.method().as_str(), req.match_pattern().as_deref()) {
        Access::Open | Access::Unrouted => return Ok(()),
        Access::Needs(s) => s,
    };
    let principal = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .and_then(|k| keys.authenticate(k))
        .ok_or(ApiError::Unauthorized)?;
    // The key's id scopes idempotency keys (one caller never sees
    // another's answers).
    req.extensions_mut()
        .insert(super::idempotency::Caller(principal.id().into()));
    if !principal.allows(scope) {
        tracing::debug!(
            key = principal.id(),
            scope = scope.as_str(),
            "scope refused"
        );
        return Err(ApiError::Forbidden {
            scope: scope.as_str(),
        });
    }
    principal
        .take(std::time::Instant::now())
        .map_err(|wait| ApiError::RateLimited {
            key: principal.id().to_string(),
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        })
}

/// The access-control middleware (`middleware::from_fn`).
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<SharedState>>() {
        Some(state) => check(state, &req),
        None => Ok(()),
    };
    match verdict {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
    }
}
