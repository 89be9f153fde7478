//! `POST /v1/events`: outcome events (impression, click, accept, decline,
//! fulfilled), one or a batch. A batch is all-or-nothing: every event is
//! checked, accepts reserve their offer and inventory, the batch is logged as
//! one record, and only once it is durable is it applied and answered 202.
//!
//! A fulfilment (the accepted upgrade flown, weeks later) is checked against
//! the adaptive models' memory of the decision, which lasts the attribution
//! window, not against the live decision, which lasts as long as its offers.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::error::ApiError;
use crate::catalog::RewardOn;
use crate::domain::FieldError;
use crate::durable::LogRecord;
use crate::events::{OutcomeBody, OutcomeKind, OutcomeRecord};
use crate::ledger::{self, LiveDecision, ReserveError};
use crate::online::FulfilmentError;
use crate::parse::{from_json, parse_instant};
use crate::state::SharedState;
use crate::tokens::Terms;

/// The answer to an accepted batch.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventsAccepted {
    /// Events in the batch.
    pub accepted: usize,
    /// Log sequence number of the batch's record.
    pub lsn: u64,
}

/// Undoes phase-one reservations if the batch fails.
struct Reservations {
    ledger: crate::ledger::Ledger,
    held: Vec<(Arc<LiveDecision>, usize)>,
}

impl Drop for Reservations {
    fn drop(&mut self) {
        for (d, pos) in self.held.drain(..) {
            self.ledger.release_accept(&d, pos);
        }
    }
}

/// `POST /v1/events`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = crate::events::OutcomeBody,
    responses(
        (status = 202, description = "the events are durable and applied", body = EventsAccepted),
        (status = 400, description = "malformed JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (named in `field`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown decision", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "already accepted or sold out; a fulfilment without an accept, or a second one", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "the offer expired (a fulfilment: the attribution window closed)", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_events", skip_all)]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let body = super::read_json_body(&req, payload, state.settings.server.max_bulk_bytes).await?;
    let (events, batch) = match from_json::<OutcomeBody>(&body) {
        Ok(OutcomeBody::Many(v)) => (v, true),
        Ok(OutcomeBody::One(e)) => (vec![e], false),
        // Untagged enums lose the field path; parse again event by event for
        // precise errors (every event at fault in a batch).
        Err(_) => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                let items = from_json::<Vec<serde_json::Value>>(&body)?;
                let mut errs = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    let one = serde_json::to_vec(v).unwrap_or_default();
                    if let Err(mut e) = from_json::<crate::events::OutcomeEventDto>(&one) {
                        e.field = if e.field == "body" {
                            format!("[{i}]")
                        } else {
                            format!("[{i}].{}", e.field)
                        };
                        errs.push(e);
                    }
                }
                if !errs.is_empty() {
                    return Err(errs.into());
                }
            } else {
                from_json::<crate::events::OutcomeEventDto>(&body)?;
            }
            return Err(ApiError::InvalidField(crate::domain::FieldError::new(
                "body",
                "must be an event object or an array of them",
            )));
        }
    };
    let max_batch = state.settings.limits.max_batch_events;
    if events.is_empty() || events.len() > max_batch {
        return Err(ApiError::InvalidField(crate::domain::FieldError::new(
            "body",
            format!("a batch holds 1 to {max_batch} events"),
        )));
    }
    let now = Utc::now();
    let now_ms = ledger::ms(now);
    let ledger = &state.core.ledger;
    let catalog = state.engine.load().catalog.clone();
    let reward_on = |offer_id: &str| {
        catalog
            .get(offer_id)
            .map(|(_, o)| o.reward_on)
            .unwrap_or_default()
    };
    let mut reservations = Reservations {
        ledger: ledger.clone(),
        held: Vec::new(),
    };
    let mut records = Vec::with_capacity(events.len());
    // Every 422 of the batch is reported at once; a 404, 409 or 410 stops
    // the check there (answered with the 422s found so far, if any).
    let mut invalid: Vec<FieldError> = Vec::new();
    let stop = |invalid: &mut Vec<FieldError>, err: ApiError| -> ApiError {
        if invalid.is_empty() {
            err
        } else {
            std::mem::take(invalid).into()
        }
    };
    for (i, e) in events.into_iter().enumerate() {
        let field = |name: &str| {
            if batch {
                format!("[{i}].{name}")
            } else {
                name.to_string()
            }
        };
        let before = invalid.len();
        let client_at_ms = match &e.at {
            None => None,
            Some(s) => match parse_instant(s, &field("at")) {
                Ok(t) => Some(ledger::ms(t)),
                Err(fe) => {
                    invalid.push(fe);
                    None
                }
            },
        };
        if e.kind == OutcomeKind::Fulfilled {
            let learn = reward_on(&e.offer_id) == RewardOn::Fulfilment;
            let record = match fulfilment(&state, e, &field, now_ms, client_at_ms, learn) {
                Ok(r) => r,
                Err(ApiError::InvalidField(fe)) => {
                    invalid.push(fe);
                    continue;
                }
                Err(err) => return Err(stop(&mut invalid, err)),
            };
            if invalid.len() > before {
                continue;
            }
            if records.iter().any(|r: &OutcomeRecord| {
                r.kind == OutcomeKind::Fulfilled
                    && r.decision_id == record.decision_id
                    && r.offer_id == record.offer_id
            }) {
                return Err(stop(
                    &mut invalid,
                    ApiError::Conflict {
                        field: field("offer_id"),
                        detail: "fulfilled twice in this batch".into(),
                    },
                ));
            }
            records.push(record);
            continue;
        }
        let Some(d) = ledger.decision(&e.decision_id) else {
            return Err(stop(
                &mut invalid,
                ApiError::UnknownResource {
                    field: field("decision_id"),
                    detail: "no such decision (unknown, or its offers expired long ago)".into(),
                },
            ));
        };
        let Some(pos) = d
            .record
            .offers
            .iter()
            .position(|o| o.offer_id == e.offer_id)
        else {
            invalid.push(FieldError::new(
                field("offer_id"),
                "this offer was not in that decision",
            ));
            continue;
        };
        let issued = &d.record.offers[pos];
        // The signed terms must be exactly those issued: no changed price or
        // expiry, no offer moved to another member or decision.
        match &e.token {
            Some(t) => match verify_token(&state, t, &d, pos, &field("token")) {
                Ok(()) => {}
                Err(ApiError::InvalidField(fe)) => invalid.push(fe),
                Err(err) => return Err(stop(&mut invalid, err)),
            },
            None if e.kind == OutcomeKind::Accept => invalid.push(FieldError::new(
                field("token"),
                "an accept must carry the offer's token from the decision",
            )),
            None => {}
        }
        if now_ms > issued.expires_ms {
            return Err(stop(
                &mut invalid,
                ApiError::Expired {
                    field: field("offer_id"),
                    detail: format!(
                        "the offer expired at {}",
                        super::offers::rfc3339(
                            chrono::DateTime::from_timestamp_millis(issued.expires_ms)
                                .unwrap_or(now)
                        )
                    ),
                },
            ));
        }
        let mut revenue = 0.0;
        if e.kind == OutcomeKind::Accept {
            let quoted = issued.price.as_ref();
            check_revenue(quoted, e.revenue.as_ref(), &field, &mut invalid);
            revenue = quoted.map(|q| q.amount).unwrap_or(0.0);
            // Nothing is reserved for a batch that will be refused.
            if invalid.is_empty() {
                match ledger.reserve_accept(&d, pos) {
                    Ok(()) => reservations.held.push((d.clone(), pos)),
                    Err(ReserveError::AlreadyAccepted) => {
                        return Err(ApiError::Conflict {
                            field: field("offer_id"),
                            detail: "already accepted in this decision".into(),
                        })
                    }
                    Err(ReserveError::SoldOut) => {
                        return Err(ApiError::Conflict {
                            field: field("offer_id"),
                            detail: "sold out".into(),
                        })
                    }
                }
            }
        } else if e.revenue.is_some() {
            invalid.push(FieldError::new(
                field("revenue"),
                "only an accept carries revenue",
            ));
        }
        if invalid.len() > before {
            continue;
        }
        records.push(OutcomeRecord {
            decision_id: e.decision_id,
            offer_pos: pos as u8,
            offer_id: e.offer_id,
            member_id: d.record.member_id.clone(),
            kind: e.kind,
            revenue,
            at_ms: now_ms,
            client_at_ms,
            inventory: issued.inventory.clone(),
            suppress_days: issued.suppress_days,
            experiments: d.record.experiments.clone(),
            learn: e.kind == OutcomeKind::Accept
                && reward_on(&d.record.offers[pos].offer_id) == RewardOn::Accept,
        });
    }
    if !invalid.is_empty() {
        return Err(invalid.into());
    }
    let n = records.len();
    let rec = LogRecord::Outcomes(records);
    let payload = rec.encode();
    let core = state.core.clone();
    let metrics = state.metrics.clone();
    let pending = state.wal.append(payload, move |_| {
        core.apply(&rec, true);
        if let LogRecord::Outcomes(list) = &rec {
            for e in list {
                metrics
                    .outcome_events
                    .with_label_values(&[&e.offer_id, e.kind.as_str()])
                    .inc();
                if e.kind == OutcomeKind::Accept {
                    metrics
                        .accepted_revenue
                        .with_label_values(&[&e.offer_id])
                        .inc_by(e.revenue);
                }
            }
        }
    });
    // The write is queued. Its outcome is awaited in a task of its own, which
    // also owns the reservations: if the client goes away the write still
    // completes, and the reservations are released only if it failed (never
    // after a commit, which would free a unit twice).
    let outcome = tokio::spawn(async move {
        let result = pending.await;
        if result.is_ok() {
            reservations.held.clear();
        }
        result
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("event write task failed: {e}")))?;
    let lsn = outcome.map_err(|e| {
        state
            .metrics
            .log_errors
            .with_label_values(&["outcomes"])
            .inc();
        ApiError::Storage(e)
    })?;
    Ok(HttpResponse::Accepted().json(EventsAccepted { accepted: n, lsn }))
}

/// The revenue rule of an accept. An offer with a cash price needs
/// `revenue` equal to it, in its currency (`revenue` missing: 422 naming
/// `revenue`; another currency: `revenue.currency`; another amount:
/// `revenue.amount`). A points-only offer takes no revenue, or 0.
fn check_revenue(
    quoted: Option<&crate::domain::Money>,
    given: Option<&crate::domain::Money>,
    field: &dyn Fn(&str) -> String,
    invalid: &mut Vec<FieldError>,
) {
    match (quoted, given) {
        (Some(q), None) => invalid.push(FieldError::new(
            field("revenue"),
            format!(
                "is required on an accept of a priced offer: the quoted price {} {}",
                q.amount, q.currency
            ),
        )),
        (Some(q), Some(r)) => {
            if r.currency != q.currency {
                invalid.push(FieldError::new(
                    field("revenue.currency"),
                    format!("must be {}, the quoted price's currency", q.currency),
                ));
            }
            // Amounts from JSON are finite, so this is the complement of "equal".
            if (r.amount - q.amount).abs() >= 0.005 {
                invalid.push(FieldError::new(
                    field("revenue.amount"),
                    format!("must equal the quoted price {} {}", q.amount, q.currency),
                ));
            }
        }
        (None, Some(r)) if r.amount != 0.0 => invalid.push(FieldError::new(
            field("revenue.amount"),
            "this offer was quoted in points only; revenue must be 0 or absent",
        )),
        (None, _) => {}
    }
}

/// Checks a `fulfilled` event and makes its record. The decision must be
/// remembered by the adaptive models (it lasts the attribution window), the
/// offer accepted there and not fulfilled yet. A token is checked when given
/// and the decision's terms are still live; none is needed, since a
/// fulfilment moves no money and needs an accept that carried one.
fn fulfilment(
    state: &SharedState,
    e: crate::events::OutcomeEventDto,
    field: &dyn Fn(&str) -> String,
    now_ms: i64,
    client_at_ms: Option<i64>,
    learn: bool,
) -> Result<OutcomeRecord, ApiError> {
    if e.revenue.is_some() {
        return Err(ApiError::InvalidField(crate::domain::FieldError::new(
            field("revenue"),
            "only an accept carries revenue",
        )));
    }
    let crate::online::Fulfilment { remembered, pos } = state
        .core
        .learner
        .check_fulfilment(&e.decision_id, &e.offer_id, now_ms)
        .map_err(|err| match err {
            FulfilmentError::Unknown => ApiError::UnknownResource {
                field: field("decision_id"),
                detail: err.to_string(),
            },
            FulfilmentError::NotShown => ApiError::InvalidField(crate::domain::FieldError::new(
                field("offer_id"),
                err.to_string(),
            )),
            FulfilmentError::WindowClosed => ApiError::Expired {
                field: field("decision_id"),
                detail: err.to_string(),
            },
            FulfilmentError::NotAccepted | FulfilmentError::AlreadyFulfilled => {
                ApiError::Conflict {
                    field: field("offer_id"),
                    detail: err.to_string(),
                }
            }
        })?;
    let live = state.core.ledger.decision(&e.decision_id);
    if let (Some(t), Some(d)) = (&e.token, &live) {
        if pos < d.record.offers.len() {
            verify_token(state, t, d, pos, &field("token"))?;
        }
    }
    Ok(OutcomeRecord {
        decision_id: e.decision_id,
        offer_pos: pos as u8,
        offer_id: e.offer_id,
        member_id: remembered.member_id.clone(),
        kind: OutcomeKind::Fulfilled,
        revenue: 0.0,
        at_ms: now_ms,
        client_at_ms,
        inventory: None,
        suppress_days: 0,
        experiments: Vec::new(),
        learn,
    })
}

/// Checks `token` against the terms issued for offer `pos` of decision `d`:
/// no changed price or expiry, no offer moved to another member or decision.
fn verify_token(
    state: &SharedState,
    token: &str,
    d: &LiveDecision,
    pos: usize,
    field: &str,
) -> Result<(), ApiError> {
    let issued = &d.record.offers[pos];
    state
        .security
        .tokens
        .verify(
            token,
            &Terms {
                decision_id: &d.record.id,
                member_id: &d.record.member_id,
                offer_id: &issued.offer_id,
                price: issued.price.as_ref(),
                points_price: issued.points_price,
                expires_ms: issued.expires_ms,
            },
        )
        .map_err(|err| {
            ApiError::InvalidField(crate::domain::FieldError::new(field, err.to_string()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;

    fn cny(amount: f64) -> Money {
        Money {
            amount,
            currency: "CNY".into(),
        }
    }

    fn fields(quoted: Option<&Money>, given: Option<&Money>) -> Vec<String> {
        let mut v = Vec::new();
        check_revenue(quoted, given, &|n: &str| n.to_string(), &mut v);
        v.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_revenue_rule_of_an_accept() {
        let q = cny(240.0);
        assert!(fields(Some(&q), Some(&cny(240.0))).is_empty());
        assert!(fields(Some(&q), Some(&cny(240.004))).is_empty());
        assert_eq!(fields(Some(&q), None), ["revenue"]);
        assert_eq!(fields(Some(&q), Some(&cny(1.0))), ["revenue.amount"]);
        let usd = Money {
            amount: 240.0,
            currency: "USD".into(),
        };
        assert_eq!(fields(Some(&q), Some(&usd)), ["revenue.currency"]);
        // A points-only offer: no revenue, or 0.
        assert!(fields(None, None).is_empty());
        assert!(fields(None, Some(&cny(0.0))).is_empty());
        assert_eq!(fields(None, Some(&cny(5.0))), ["revenue.amount"]);
    }
}
