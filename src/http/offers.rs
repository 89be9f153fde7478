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

impl OffersResponse<'_> {
    /// Appends the answer as JSON, byte for byte what `serde_json` writes
    /// from its `Serialize` implementation, without serde_json's escape scan
    /// of every key and string (see [`crate::render::json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        use crate::render::json::{raw, str, value};
        raw(out, "{\"decision_id\":");
        str(out, &self.decision_id)?;
        raw(out, ",\"member_id\":");
        str(out, self.member_id)?;
        raw(out, ",\"cold_start\":");
        raw(out, if self.cold_start { "true" } else { "false" });
        raw(out, ",\"model_version\":");
        str(out, self.model_version)?;
        raw(out, ",\"experiments\":");
        value(out, &self.experiments)?;
        raw(out, ",\"offers\":[");
        for (i, o) in self.offers.iter().enumerate() {
            if i > 0 {
                raw(out, ",");
            }
            o.write_json(out)?;
        }
        raw(out, "],\"fallback\":");
        raw(out, if self.fallback { "true" } else { "false" });
        raw(out, "}");
        Ok(())
    }
}

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
    let mut buf = Vec::with_capacity(capacity);
    body.write_json(&mut buf)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("serializing a response")))?;
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasons::{Reason, Reasons};

    /// The hand-written answer is what serde_json writes (the offers' own
    /// writer has a property test in the core crate).
    #[test]
    fn written_as_serde_writes_it() {
        for (member_id, version, experiments) in [
            ("M0000001", "v1", vec![]),
            (
                "quote\"back\\slash\ncontrol\u{1}中文",
                "model \"7\"",
                vec![Assignment {
                    experiment: "exp\t1".into(),
                    variant: "treatment".into(),
                }],
            ),
        ] {
            let offer = |token: Option<&str>| crate::render::OfferOut {
                offer_id: "UPG-1",
                category: "seat_upgrade",
                title: "Upgrade \"now\"",
                price: None,
                points_price: Some(1200),
                score: 0.25,
                expected_value: 90.5,
                reasons: Reasons::plain(vec![Reason::Growing]),
                expires_at: "2026-12-01T10:00:00.000Z".into(),
                token: token.map(String::from),
                propensity: 1.0,
            };
            for fallback in [false, true] {
                let body = OffersResponse {
                    decision_id: "d-1".into(),
                    member_id,
                    cold_start: fallback,
                    model_version: version,
                    experiments: experiments.clone(),
                    offers: vec![offer(None), offer(Some("2abc"))],
                    fallback,
                };
                let mut mine = Vec::new();
                body.write_json(&mut mine).unwrap();
                assert_eq!(
                    String::from_utf8(mine).unwrap(),
                    serde_json::to_string(&body).unwrap()
                );
            }
        }
    }
}

/// `GET /v1/offers/stats`: per offer and channel what the applied records
/// say (the console's Offers page).
#[utoipa::path(
    get,
    path = "/v1/offers/stats",
    tag = "offers",
    responses((status = 200, description = "per offer and channel: shown, accepts, accept rate, value and value per shown offer (CNY), refunds, declines, suppressions, explored shows; per offer: capped units taken on the current log day against the cap, and the adaptive model's evidence (examples, accepts). Counted when records are applied, so every replica answers alike", body = crate::service::offer_stats::OfferStatsReport)),
)]
pub async fn offer_stats(state: web::Data<SharedState>) -> HttpResponse {
    HttpResponse::Ok().json(state.offer_stats())
}

/// `GET /v1/offers/plots/offers.svg`: the accept rate and the share shown
/// by exploration per offer and channel, from `GET /v1/offers/stats`.
#[utoipa::path(
    get,
    path = "/v1/offers/plots/offers.svg",
    tag = "offers",
    responses((status = 200, description = "SVG: per offer and channel shown at least once, the accept rate (%) as a bar and the share shown by exploration (%) as a dot (the figures of `GET /v1/offers/stats`)", content_type = "image/svg+xml", body = String)),
)]
pub async fn offers_plot(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let value =
        serde_json::to_value(state.offer_stats()).map_err(|e| ApiError::Internal(e.into()))?;
    let body =
        super::plots::offers_svg(&value).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}
