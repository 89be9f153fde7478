//! `POST /v1/offers`: the checkout decision.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::error::ApiError;
use crate::decision::{self, DecisionInput, Ranking, Unconstrained};
use crate::domain::Money;
use crate::parse::{from_json, OfferRequestDto};
use crate::state::SharedState;

/// One offer in the response.
#[derive(Debug, Serialize)]
pub struct OfferOut<'a> {
    /// Offer id.
    pub offer_id: &'a str,
    /// Category (snake_case).
    pub category: &'static str,
    /// Title.
    pub title: &'a str,
    /// Cash price for the party, or null.
    pub price: Option<Money>,
    /// Points price for the party, or null.
    pub points_price: Option<u64>,
    /// Model propensity.
    pub score: f32,
    /// Expected value, CNY.
    pub expected_value: f64,
    /// Why this offer.
    pub reasons: Vec<String>,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// The response body.
#[derive(Debug, Serialize)]
pub struct OffersResponse<'a> {
    /// Id to quote in outcome events.
    pub decision_id: String,
    /// The member asked about.
    pub member_id: &'a str,
    /// True when the member is unknown.
    pub cold_start: bool,
    /// Model version that scored.
    pub model_version: &'a str,
    /// Ranked offers.
    pub offers: Vec<OfferOut<'a>>,
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `POST /v1/offers`.
#[tracing::instrument(name = "post_offers", skip_all)]
pub async fn post_offers(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let body = super::read_json_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let now = Utc::now();
    let request = from_json::<OfferRequestDto>(&body)?.into_domain(now)?;
    let started = std::time::Instant::now();
    let engine = state.engine.load();
    let member = state.members.get(&request.member_id);
    let decision = decision::decide(
        &engine,
        &DecisionInput {
            member: member.as_ref(),
            itinerary: Some(&request.itinerary),
            channel: request.channel,
            now,
            max_offers: request.max_offers,
            ranking: Ranking::Model,
        },
        &Unconstrained,
    );
    let m = &state.metrics;
    m.decision_duration
        .with_label_values(&[request.channel.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.decisions
        .with_label_values(&[
            request.channel.as_str(),
            if decision.cold_start { "true" } else { "false" },
        ])
        .inc();
    let offers: Vec<OfferOut<'_>> = decision
        .offers
        .into_iter()
        .map(|o| {
            let offer = &engine.catalog.offers[o.index];
            m.offers_served
                .with_label_values(&[&offer.id, offer.category.as_str()])
                .inc();
            OfferOut {
                offer_id: &offer.id,
                category: offer.category.as_str(),
                title: &offer.title,
                price: o.price,
                points_price: o.points_price,
                score: o.propensity,
                expected_value: o.expected_value,
                reasons: o.reasons,
                expires_at: rfc3339(o.expires_at),
            }
        })
        .collect();
    let decision_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(%decision_id, offers = offers.len(), cold_start = decision.cold_start, "decided");
    Ok(HttpResponse::Ok().json(OffersResponse {
        decision_id,
        member_id: &request.member_id,
        cold_start: decision.cold_start,
        model_version: &engine.table.version,
        offers,
    }))
}
