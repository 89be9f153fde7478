//! `POST /v1/offers`: the checkout decision.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;

use super::error::ApiError;
use crate::experiments::Assignment;
use crate::parse::parse_offer_request;
use crate::reasons::Lang;
use crate::render::OfferOut;
use crate::service::idempotency::Route;
use crate::service::SharedState;

/// The response body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OffersResponse<'a> {
    /// Id to quote in outcome events.
    pub decision_id: String,
    /// The member asked about.
    pub member_id: &'a str,
    /// True when the member is unknown.
    pub cold_start: bool,
    /// Model version that scored.
    pub model_version: &'a str,
    /// Experiment assignments of the member.
    pub experiments: Vec<Assignment>,
    /// Ranked offers.
    pub offers: Vec<OfferOut<'a>>,
    /// True when the offers are the fallback (business priority, no model
    /// scoring) because scoring failed or the request's deadline was near.
    pub fallback: bool,
}

pub use crate::render::rfc3339;

/// `POST /v1/offers`.
#[utoipa::path(
    post,
    path = "/v1/offers",
    tag = "offers",
    request_body = crate::parse::OfferRequestDto,
    params(
        ("explain" = Option<bool>, Query, description = "adds `text` to each reason (as `\"explain\": true` in the body does)"),
        ("Accept-Language" = Option<String>, Header, description = "language of the reasons' `text`: Simplified Chinese when `zh` is preferred, English otherwise"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key and request within `idempotency.ttl_secs` (default 600) gets the first answer again, with no second decision (answered with `Idempotent-Replayed: true`)"),
    ),
    responses(
        (status = 200, description = "ranked offers", body = OffersResponse),
        (status = 400, description = "malformed JSON, or a malformed `Idempotency-Key` (`field` names the header)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "fields are invalid: the first named in `field`, every one in `errors`; or the `Idempotency-Key` was used with a different request", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_offers", skip_all)]
pub async fn post_offers(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = std::time::Instant::now();
    let max = state.settings().server.max_body_bytes;
    let body = super::read_json_body(&req, payload, max).await?;
    super::idempotency::keyed(&req, &state, Route::Offers, &body, || async {
        offers(&req, &body, &state, arrived).await
    })
    .await
}

/// `?explain=` as given: `true` or `false`.
fn explain_query(req: &HttpRequest) -> Result<Option<bool>, ApiError> {
    let q = req.query_string();
    if q.is_empty() {
        return Ok(None);
    }
    match q
        .split('&')
        .filter_map(|kv| kv.strip_prefix("explain="))
        .next_back()
    {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::InvalidField(crate::domain::FieldError::new(
            "explain",
            "must be true or false",
        ))),
    }
}

async fn offers(
    req: &HttpRequest,
    body: &[u8],
    state: &SharedState,
    arrived: std::time::Instant,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let query = explain_query(req)?;
    let request = parse_offer_request(body, now)?;
    let explain = (query.unwrap_or(false) || request.explain).then(|| {
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map_or(Lang::En, Lang::from_accept_language)
    });
    let mut c = state.checkout(request, now, arrived);
    if let Some(logged) = c.logged.take() {
        logged.await?;
    }
    let offers: Vec<OfferOut<'_>> = c
        .decision
        .offers
        .into_iter()
        .zip(c.tokens)
        .map(|(o, token)| {
            let mut out = OfferOut::new(&c.engine.catalog.offers[o.index], o);
            out.token = Some(token);
            out.reasons.explain = explain;
            out
        })
        .collect();
    // About 450 bytes an offer (a token, three reasons) and 250 around
    // them; sentences add about 150 an offer.
    let capacity = 256 + 640 * offers.len();
    let body = OffersResponse {
        decision_id: c.decision_id,
        member_id: &c.member_id,
        cold_start: c.decision.cold_start,
        model_version: &c.model.version,
        experiments: c.experiments,
        offers,
        fallback: c.fallback.is_some(),
    };
    super::json_ok(&body, capacity)
}
