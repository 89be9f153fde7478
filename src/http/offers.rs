//! `POST /v1/offers`: the checkout decision.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;

use super::error::ApiError;
use crate::catalog::Offer;
use crate::decision::{self, Constraints, DecisionInput};
use crate::domain::{Category, Day, Itinerary};
use crate::durable::LogRecord;
use crate::experiments::Assignment;
use crate::ledger::{self, DecisionRecord, IssuedOffer, Ledger};
use crate::parse::parse_offer_request;
use crate::render::OfferOut;
use crate::state::SharedState;

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

/// Contact policy and inventory as seen by one decision.
struct LedgerConstraints<'a> {
    ledger: &'a Ledger,
    /// Offers this member declined recently.
    suppressed: Vec<Arc<str>>,
    itinerary: &'a Itinerary,
    remaining: usize,
    /// Catalog subset of the member's experiment variant, if any.
    categories: Option<&'a [Category]>,
}

impl Constraints for LedgerConstraints<'_> {
    fn allowed(&self, _index: usize, offer: &Offer) -> bool {
        if self
            .categories
            .is_some_and(|c| !c.contains(&offer.category))
        {
            return false;
        }
        if self.suppressed.iter().any(|s| **s == *offer.id) {
            return false;
        }
        match ledger::inventory_key(offer, self.itinerary) {
            Some((key, cap)) => self.ledger.in_stock(&offer.id, &key, cap),
            None => true,
        }
    }
    fn remaining_contacts(&self) -> usize {
        self.remaining
    }
}

/// `POST /v1/offers`.
#[utoipa::path(
    post,
    path = "/v1/offers",
    tag = "offers",
    request_body = crate::parse::OfferRequestDto,
    responses(
        (status = 200, description = "ranked offers", body = OffersResponse),
        (status = 400, description = "malformed JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "fields are invalid: the first named in `field`, every one in `errors`", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_offers", skip_all)]
pub async fn post_offers(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = std::time::Instant::now();
    let body = super::read_json_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let now = Utc::now();
    let request = parse_offer_request(&body, now)?;
    let started = std::time::Instant::now();
    let engine = state.engine.load();
    let core = &state.core;
    let member = core.members.get(&request.member_id);
    let now_ms = ledger::ms(now);
    let cap = state
        .settings
        .contact
        .max_offers_per_day
        .of(request.channel) as usize;
    let shown = core
        .ledger
        .shown(&request.member_id, Day::of(now), request.channel) as usize;
    // Experiments: sticky assignment; the variant chooses the policy.
    let policy = engine.variant_policy(&request.member_id, request.max_offers);
    let (holdout, ranking, max_offers, categories) = (
        policy.holdout,
        policy.ranking,
        policy.max_offers,
        policy.categories,
    );
    let assignments = policy.assignments;
    let constraints = LedgerConstraints {
        ledger: &core.ledger,
        suppressed: core
            .ledger
            .suppressions
            .get(request.member_id.as_str())
            .map(|v| {
                v.iter()
                    .filter(|(_, until)| *until > now_ms)
                    .map(|(o, _)| o.clone())
                    .collect()
            })
            .unwrap_or_default(),
        itinerary: &request.itinerary,
        remaining: if holdout {
            0
        } else {
            cap.saturating_sub(shown)
        },
        categories,
    };
    let mut input = DecisionInput {
        member: member.as_ref(),
        itinerary: Some(&request.itinerary),
        channel: request.channel,
        now,
        max_offers,
        ranking,
    };
    // The variant's model (or the engine's) scores.
    let table = policy.table;
    let x = crate::features::build(
        member.as_ref(),
        &crate::features::DecisionContext {
            itinerary: Some(&request.itinerary),
            channel: request.channel,
            now,
        },
        &engine.thresholds,
    );
    // Adaptive models score once an offer has enough evidence (not for a
    // variant with a model file of its own); the variant's policy explores.
    let learner = &core.learner;
    let adaptive = learner.settings().enabled && !policy.own_model;
    let slots = adaptive.then(|| learner.slots(&engine.catalog));
    let decision_id = uuid::Uuid::new_v4().to_string();
    let moments = |i: usize| match &slots {
        Some(s) => s[i]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .logit_moments(&x),
        None => ((table.propensity(i, &x) as f64).ln(), 0.0),
    };
    let explore = decision::Explore {
        policy: policy.exploration,
        seed: crate::online::seed_of(&decision_id),
        draws: learner.settings().thompson_draws,
        moments: &moments,
    };
    // Degradation: a request that has already used its time budget (a slow
    // body), or whose scoring fails, gets the fallback at once.
    let fallback_after = std::time::Duration::from_millis(state.settings.limits.fallback_after_ms);
    let mut fallback = None;
    let scored = if arrived.elapsed() >= fallback_after {
        fallback = Some("deadline");
        None
    } else {
        let failed = std::cell::Cell::new(false);
        let d = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decision::decide_explored(
                &engine,
                &input,
                &constraints,
                None,
                |i| {
                    let shipped = table.propensity(i, &x);
                    let p = match &slots {
                        Some(s) => learner.score(&s[i], &x, shipped),
                        None => shipped,
                    };
                    if !p.is_finite() {
                        failed.set(true);
                    }
                    p
                },
                Some(&explore),
            )
        }));
        match d {
            Ok(d) if !failed.get() => Some(d),
            _ => {
                fallback = Some("scoring_failed");
                None
            }
        }
    };
    let decision = match scored {
        Some(d) => d,
        None => {
            input.ranking = decision::Ranking::Priority;
            let mut d = decision::decide_scored(&engine, &input, &constraints, None, |_| 0.0);
            for o in &mut d.offers {
                o.reasons.pop();
                o.reasons
                    .push("chosen by business priority (fallback: no model score)".into());
            }
            d
        }
    };
    let m = &state.metrics;
    if let Some(reason) = fallback {
        m.fallbacks.with_label_values(&[reason]).inc();
    }
    m.decision_duration
        .with_label_values(&[request.channel.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.decisions
        .with_label_values(&[
            request.channel.as_str(),
            if decision.cold_start { "true" } else { "false" },
        ])
        .inc();
    let suppress_default = state.settings.contact.suppress_days_after_decline;
    let mut issued = Vec::with_capacity(decision.offers.len());
    let offers: Vec<OfferOut<'_>> = decision
        .offers
        .into_iter()
        .map(|o| {
            let offer = &engine.catalog.offers[o.index];
            m.offers_served
                .with_label_values(&[&offer.id, offer.category.as_str()])
                .inc();
            issued.push(IssuedOffer {
                offer_id: offer.id.clone(),
                price: o.price.clone(),
                points_price: o.points_price,
                expires_ms: ledger::ms(o.expires_at),
                inventory: ledger::inventory_key(offer, &request.itinerary),
                suppress_days: offer
                    .contact
                    .suppress_days_after_decline
                    .unwrap_or(suppress_default),
                propensity: o.slot_propensity,
            });
            OfferOut::new_signed(
                offer,
                o,
                &state.security.tokens,
                &decision_id,
                &request.member_id,
            )
        })
        .collect();
    if !issued.is_empty() || !assignments.is_empty() {
        record_decision(
            &state,
            DecisionRecord {
                id: decision_id.clone(),
                member_id: request.member_id.clone(),
                channel: request.channel,
                created_ms: now_ms,
                offers: issued,
                experiments: assignments.clone(),
                covariate: member.map(|m| m.qualifying_spend_12m).unwrap_or(0.0),
                features: if adaptive { x.to_vec() } else { Vec::new() },
            },
        );
    }
    tracing::debug!(%decision_id, offers = offers.len(), cold_start = decision.cold_start, "decided");
    // About 650 bytes an offer (a token, three reasons) and 250 around them.
    let capacity = 256 + 768 * offers.len();
    super::json_ok(
        &OffersResponse {
            decision_id,
            member_id: &request.member_id,
            cold_start: decision.cold_start,
            model_version: &table.version,
            experiments: assignments,
            offers,
            fallback: fallback.is_some(),
        },
        capacity,
    )
}

/// Remembers a decision at once (an accept may follow immediately) and logs
/// it without waiting: checkout never waits for the disk. The record joins the
/// log's next batch (within [`crate::wal::WalOptions::deferred_linger`], or
/// sooner with any waiting write, and always before a later accept); one lost
/// in a crash inside that window can no longer be attributed (its accept gets
/// 404), nothing else is lost.
pub fn record_decision(state: &SharedState, mut record: DecisionRecord) {
    let payload = LogRecord::encode_decision(&record);
    // The features go to the learner's memory once logged; the ledger's copy
    // (kept until the offers expire) does not need them.
    let features = std::mem::take(&mut record.features);
    let live = state.core.ledger.remember(record);
    let core = state.core.clone();
    let metrics = state.metrics.clone();
    let queued = state
        .wal
        .append_deferred(payload, move |result| match result {
            Ok(_) => {
                let applied = core.apply_decision_record(&live.record, &features, true);
                metrics.observe_applied(&applied);
            }
            Err(e) => decision_not_logged(&metrics, &e),
        });
    if let Err(e) = queued {
        decision_not_logged(&state.metrics, &e);
    }
}

fn decision_not_logged(metrics: &crate::metrics::Metrics, e: &crate::wal::WalError) {
    metrics.log_errors.with_label_values(&["decision"]).inc();
    tracing::warn!(error = %e, "decision not logged; its outcomes cannot be attributed after a restart");
}
