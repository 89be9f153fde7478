//! `POST /v1/events`: outcome events (impression, click, accept, decline,
//! fulfilled, refunded), one or a batch. A batch is all-or-nothing: every event is
//! checked, accepts reserve their offer and inventory, the batch is logged as
//! one record, and only once it is durable is it applied and answered 202.
//!
//! A fulfilment (the accepted upgrade flown, weeks later) is checked against
//! the adaptive models' memory of the decision, which lasts the attribution
//! window, not against the live decision, which lasts as long as its offers.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::error::ApiError;
use crate::events::parse_outcome_body;
use crate::service::idempotency::Route;
use crate::service::SharedState;

pub use crate::service::outcomes::EventsAccepted;

/// `POST /v1/events`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = crate::events::OutcomeBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key and body within `idempotency.ttl_secs` (default 600) gets the first answer again (202, not 409), with `Idempotent-Replayed: true`"),
    ),
    responses(
        (status = 202, description = "the events are durable and applied", body = EventsAccepted),
        (status = 400, description = "malformed JSON, or a malformed `Idempotency-Key` (`field` names the header)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (named in `field`), or the `Idempotency-Key` was used with a different request", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown decision", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "already accepted, sold out, or the member's points no longer cover the points price; a fulfilment or refund without an accept, or a second one", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "the offer expired (a fulfilment or refund: the attribution window closed)", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_events", skip_all)]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings().server.max_bulk_bytes;
    let body = super::read_json_body(&req, payload, max).await?;
    super::idempotency::keyed(&req, &state, Route::Events, &body, || async {
        let (events, batch) = parse_outcome_body(&body)?;
        let accepted = state.record_outcomes(events, batch, Utc::now()).await?;
        Ok(HttpResponse::Accepted().json(accepted))
    })
    .await
}
