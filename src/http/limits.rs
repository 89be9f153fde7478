//! Middleware: a cap on requests in flight (503 with `Retry-After` at once
//! when it is reached, rather than queueing: a checkout must not wait) and a
//! deadline per request (503 with `Retry-After`). Probes are exempt, so an
//! overloaded instance still answers `/healthz` and `/readyz`.
//!
//! A request cut at its deadline is dropped where it stands. Outcome events
//! and decisions are written by tasks of their own, which complete anyway;
//! a member write may or may not have been applied (the 503 says so), as
//! with any timeout seen by a client.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::config::LimitSettings;

/// Concurrency cap and deadline.
#[derive(Debug)]
pub struct Limits {
    /// Permits for requests in flight; None = unlimited.
    permits: Option<Arc<Semaphore>>,
    /// Per-request deadline.
    timeout: Duration,
}

impl Limits {
    /// From the settings.
    pub fn new(s: &LimitSettings) -> Limits {
        Limits {
            permits: (s.max_concurrent_requests > 0)
                .then(|| Arc::new(Semaphore::new(s.max_concurrent_requests))),
            timeout: Duration::from_millis(s.request_timeout_ms.max(1)),
        }
    }

    /// Requests that may still start now (None = unlimited).
    pub fn available(&self) -> Option<usize> {
        self.permits.as_ref().map(|p| p.available_permits())
    }
}

/// The limits middleware (`middleware::from_fn`).
pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(limits) = req.app_data::<web::Data<Limits>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if matches!(req.path(), "/healthz" | "/readyz") {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let _permit = match &limits.permits {
        None => None,
        Some(p) => match p.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return Ok(req
                    .into_response(ApiError::Overloaded.error_response())
                    .map_into_right_body())
            }
        },
    };
    // The request cannot be kept for building the answer (routing needs it
    // unshared), so a timeout returns the error and actix renders it with
    // the same problem+json mapping.
    match tokio::time::timeout(limits.timeout, next.call(req)).await {
        Ok(res) => res.map(ServiceResponse::map_into_left_body),
        Err(_) => {
            tracing::warn!("request timed out");
            Err(ApiError::Timeout.into())
        }
    }
}
