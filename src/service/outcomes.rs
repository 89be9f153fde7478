//! Outcomes: impressions, clicks, accepts, declines, fulfilments and
//! refunds, one or a batch. A batch is all-or-nothing: every event is
//! checked, accepts reserve their offer and inventory, the batch is
//! committed as one record, and only once it is applied is it answered.
//!
//! An accept of a points-priced offer redeems the quoted points in the same
//! record. The balance is checked here, but decided at apply, in log order:
//! of two accepts that both passed the check, the one applied second is
//! refused there if the balance no longer covers it (409), and nothing of its
//! batch is applied. A refund is decided there the same way (once).
//!
//! A fulfilment (the accepted upgrade flown, weeks later) is checked against
//! the adaptive models' memory of the decision, which lasts the attribution
//! window, not against the live decision, which lasts as long as its offers.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Service;
use crate::catalog::RewardOn;
use crate::domain::{FieldError, Money};
use crate::durable::LogError;
use crate::events::{OutcomeEventDto, OutcomeKind, OutcomeRecord};
use crate::parse::parse_instant;
use crate::records::OutcomeRecordV2;
use crate::state::learner::{Fulfilment, FulfilmentError};
use crate::state::ledger::{taken_key, Ledger, LiveDecision, ReserveError};
use crate::state::{LogRecord, Refusal};

/// Why a batch of outcomes was refused. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// Fields are missing, malformed or inconsistent with the decision:
    /// every one found in the batch (never empty).
    #[error("invalid fields {0:?}")]
    Invalid(Vec<FieldError>),
    /// The decision is unknown (or forgotten).
    #[error("{field}: {detail}")]
    UnknownDecision {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// Already accepted, sold out, points no longer covered, fulfilled or
    /// refunded twice, or never accepted.
    #[error("{field}: {detail}")]
    Conflict {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// The offer expired (a fulfilment: the attribution window closed).
    #[error("{field}: {detail}")]
    Expired {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// The log did not take the batch.
    #[error(transparent)]
    Log(#[from] LogError),
}

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
    ledger: Ledger,
    held: Vec<(Arc<LiveDecision>, usize)>,
}

impl Drop for Reservations {
    fn drop(&mut self) {
        for (d, pos) in self.held.drain(..) {
            self.ledger.release_accept(&d, pos);
        }
    }
}

impl From<FieldError> for OutcomeError {
    fn from(e: FieldError) -> OutcomeError {
        OutcomeError::Invalid(vec![e])
    }
}

impl Service {
    /// Records a batch of outcome events received at `now`. `batch` says
    /// whether they came as an array (field paths then name the event:
    /// `[2].decision_id`).
    #[tracing::instrument(name = "record_outcomes", skip_all, fields(events = events.len()))]
    pub async fn record_outcomes(
        &self,
        events: Vec<OutcomeEventDto>,
        batch: bool,
        now: DateTime<Utc>,
    ) -> Result<EventsAccepted, OutcomeError> {
        let max_batch = self.settings().limits.max_batch_events;
        if events.is_empty() || events.len() > max_batch {
            return Err(
                FieldError::new("body", format!("a batch holds 1 to {max_batch} events")).into(),
            );
        }
        let now_ms = now.timestamp_millis();
        let ledger = self.state().ledger();
        // Cluster mode: a decision made on another replica may not be
        // applied here yet; catch up with the stream before judging it.
        if self.durable().cluster_status().is_some()
            && events
                .iter()
                .any(|e| ledger.decision(&e.decision_id, i64::MIN).is_none())
        {
            self.durable().sync().await?;
        }
        let catalog = self.engine().catalog.clone();
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
        let mut records: Vec<OutcomeRecordV2> = Vec::with_capacity(events.len());
        // Points each member's accepts in this batch redeem (checked
        // against the balance here; decided at apply, in log order).
        let mut points_due: std::collections::HashMap<String, u64> = Default::default();
        // Every 422 of the batch is reported at once; a 404, 409 or 410
        // stops the check there (answered with the 422s found so far, if any).
        let mut invalid: Vec<FieldError> = Vec::new();
        let stop = |invalid: &mut Vec<FieldError>, err: OutcomeError| -> OutcomeError {
            if invalid.is_empty() {
                err
            } else {
                OutcomeError::Invalid(std::mem::take(invalid))
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
                    Ok(t) => Some(t.timestamp_millis()),
                    Err(fe) => {
                        invalid.push(fe);
                        None
                    }
                },
            };
            if e.kind == OutcomeKind::Fulfilled {
                let learn = reward_on(&e.offer_id) == RewardOn::Fulfilment;
                let record = match self.fulfilment(e, &field, now_ms, client_at_ms, learn) {
                    Ok(r) => r,
                    Err(OutcomeError::Invalid(v)) => {
                        invalid.extend(v);
                        continue;
                    }
                    Err(err) => return Err(stop(&mut invalid, err)),
                };
                if invalid.len() > before {
                    continue;
                }
                if records.iter().any(|r| {
                    r.outcome.kind == OutcomeKind::Fulfilled
                        && r.outcome.decision_id == record.decision_id
                        && r.outcome.offer_id == record.offer_id
                }) {
                    let twice = OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: "fulfilled twice in this batch".into(),
                    };
                    return Err(stop(&mut invalid, twice));
                }
                records.push(record.into());
                continue;
            }
            if e.kind == OutcomeKind::Refunded {
                let record = match self.refund(e, &field, now_ms, client_at_ms) {
                    Ok(r) => r,
                    Err(OutcomeError::Invalid(v)) => {
                        invalid.extend(v);
                        continue;
                    }
                    Err(err) => return Err(stop(&mut invalid, err)),
                };
                if invalid.len() > before {
                    continue;
                }
                if records.iter().any(|r| {
                    r.outcome.kind == OutcomeKind::Refunded
                        && r.outcome.decision_id == record.outcome.decision_id
                        && r.outcome.offer_id == record.outcome.offer_id
                }) {
                    let twice = OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: "refunded twice in this batch".into(),
                    };
                    return Err(stop(&mut invalid, twice));
                }
                records.push(record);
                continue;
            }
            let Some(d) = ledger.decision(&e.decision_id, now_ms) else {
                if let Some(e) = self.maybe_unpublished(&e.decision_id, now_ms) {
                    return Err(stop(&mut invalid, e));
                }
                let unknown = OutcomeError::UnknownDecision {
                    field: field("decision_id"),
                    detail: "no such decision (unknown, or its offers expired long ago)".into(),
                };
                return Err(stop(&mut invalid, unknown));
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
                Some(t) => {
                    if let Err(fe) = self.verify_token(t, &d, pos, &field("token")) {
                        invalid.push(fe);
                    }
                }
                None if e.kind == OutcomeKind::Accept => invalid.push(FieldError::new(
                    field("token"),
                    "an accept must carry the offer's token from the decision",
                )),
                None => {}
            }
            if now_ms > issued.expires_ms {
                let expired = OutcomeError::Expired {
                    field: field("offer_id"),
                    detail: format!(
                        "the offer expired at {}",
                        crate::render::rfc3339(
                            DateTime::from_timestamp_millis(issued.expires_ms).unwrap_or(now)
                        )
                    ),
                };
                return Err(stop(&mut invalid, expired));
            }
            let mut revenue = 0.0;
            let (mut value, mut points, mut points_cost) = (0.0, 0u64, 0.0);
            let mut inventory = issued.inventory.clone();
            let mut voucher = false;
            if e.kind == OutcomeKind::Accept {
                let quoted = issued.price.as_ref();
                check_revenue(quoted, e.revenue.as_ref(), &field, &mut invalid);
                revenue = quoted.map(|q| q.amount).unwrap_or(0.0);
                if let Some((_, offer)) = catalog.get(&issued.offer_id) {
                    voucher = offer.uses_voucher;
                    let units = offer.units_quoted(quoted.map(|q| q.amount), issued.points_price);
                    value = offer.net_value(units, catalog.cost_per_point);
                    points_cost = offer.points_cost(units, catalog.cost_per_point);
                }
                let year = crate::records::voucher_year(now_ms);
                if voucher
                    && invalid.is_empty()
                    && (ledger.voucher_used(&d.record.member_id, year)
                        || records
                            .iter()
                            .any(|r| r.voucher && r.outcome.member_id == d.record.member_id))
                {
                    return Err(OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: format!("the member's upgrade voucher for {year} is used"),
                    });
                }
                points = issued.points_price.unwrap_or(0);
                if points > 0 && invalid.is_empty() {
                    let balance = self
                        .state()
                        .members()
                        .get(&d.record.member_id)
                        .map(|m| m.points as u64)
                        .unwrap_or(0);
                    let due = points_due.entry(d.record.member_id.clone()).or_insert(0);
                    if balance < *due + points {
                        return Err(OutcomeError::Conflict {
                            field: field("offer_id"),
                            detail: format!(
                                "the member's {} points no longer cover the {} points price",
                                balance.saturating_sub(*due),
                                points
                            ),
                        });
                    }
                    *due += points;
                }
                // The part of the cap this member may take (less units kept
                // for tiers or segments they are not in); the record carries
                // it, and apply decides against it in log order.
                if let Some((key, cap)) = &issued.inventory {
                    let member = self.state().members().get(&d.record.member_id);
                    let day = crate::domain::Day::of(now);
                    let cap = catalog
                        .get(&issued.offer_id)
                        .map(|(_, o)| o.cap_for(*cap, member.as_ref(), day))
                        .unwrap_or(*cap);
                    inventory = Some((key.clone(), cap));
                }
                // Nothing is reserved for a batch that will be refused.
                if invalid.is_empty() {
                    let cap = inventory.as_ref().map(|(_, c)| *c).unwrap_or(0);
                    match ledger.reserve_accept_within(&d, pos, cap) {
                        Ok(()) => reservations.held.push((d.clone(), pos)),
                        Err(ReserveError::AlreadyAccepted) => {
                            return Err(OutcomeError::Conflict {
                                field: field("offer_id"),
                                detail: "already accepted in this decision".into(),
                            })
                        }
                        Err(ReserveError::SoldOut) => {
                            return Err(OutcomeError::Conflict {
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
            records.push(OutcomeRecordV2 {
                outcome: OutcomeRecord {
                    decision_id: e.decision_id,
                    offer_pos: pos as u8,
                    offer_id: e.offer_id,
                    member_id: d.record.member_id.clone(),
                    kind: e.kind,
                    revenue,
                    at_ms: now_ms,
                    client_at_ms,
                    inventory,
                    suppress_days: issued.suppress_days,
                    experiments: d.record.experiments.clone(),
                    learn: e.kind == OutcomeKind::Accept
                        && reward_on(&d.record.offers[pos].offer_id) == RewardOn::Accept,
                },
                value,
                points,
                points_cost,
                voucher,
            });
        }
        if !invalid.is_empty() {
            return Err(OutcomeError::Invalid(invalid));
        }
        let n = records.len();
        let pending = self
            .durable()
            .commit_applied(LogRecord::OutcomesV2(records), "outcomes");
        // The write is queued. Its outcome is awaited in a task of its own,
        // which also owns the reservations: if the client goes away the write
        // still completes, and the reservations are released only if it
        // failed or was refused at apply (never after a commit, which would
        // free a unit twice).
        let outcome = tokio::spawn(async move {
            let result = pending.await;
            if matches!(&result, Ok((_, applied)) if applied.refused.is_none()) {
                reservations.held.clear();
            }
            result
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("event write task failed: {e}")))?;
        let (lsn, applied) = outcome?;
        if let Some((i, why)) = applied.refused {
            let field = if batch {
                format!("[{i}].offer_id")
            } else {
                "offer_id".to_string()
            };
            return Err(refusal_error(field, why));
        }
        Ok(EventsAccepted { accepted: n, lsn })
    }

    /// Checks a `refunded` event and makes its record: the offer must have
    /// a durable accept held (through the attribution window), not refunded
    /// yet, the window open, and the token the accept's. The record carries
    /// what the accept took; apply gives it back (and decides, in log
    /// order, between two refunds that raced past this check).
    fn refund(
        &self,
        e: OutcomeEventDto,
        field: &dyn Fn(&str) -> String,
        now_ms: i64,
        client_at_ms: Option<i64>,
    ) -> Result<OutcomeRecordV2, OutcomeError> {
        let mut invalid = Vec::new();
        if e.revenue.is_some() {
            invalid.push(FieldError::new(
                field("revenue"),
                "only an accept carries revenue (a refund gives back the accept's)",
            ));
        }
        let state = self.state();
        let Some(t) = state
            .ledger()
            .taken(&taken_key(&e.decision_id, &e.offer_id))
        else {
            return Err(match state.ledger().decision(&e.decision_id, i64::MIN) {
                Some(d) if d.record.offers.iter().any(|o| o.offer_id == e.offer_id) => {
                    OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: "this offer was not accepted in that decision".into(),
                    }
                }
                Some(_) => {
                    FieldError::new(field("offer_id"), "this offer was not in that decision").into()
                }
                None => OutcomeError::UnknownDecision {
                    field: field("decision_id"),
                    detail: "no accept of this offer is held for that decision (unknown, or past the attribution window)".into(),
                },
            });
        };
        match (&e.token, &t.issued) {
            (None, _) => invalid.push(FieldError::new(
                field("token"),
                "a refund must carry the offer's token from the decision",
            )),
            (Some(token), Some(issued)) => {
                if let Err(err) = self
                    .security()
                    .tokens
                    .verify(token, &issued.terms(&e.decision_id, &t.member_id))
                {
                    invalid.push(FieldError::new(field("token"), err.to_string()));
                }
            }
            (Some(_), None) => invalid.push(FieldError::new(
                field("token"),
                "cannot be checked: the decision's terms were no longer held when it was accepted",
            )),
        }
        if !invalid.is_empty() {
            return Err(OutcomeError::Invalid(invalid));
        }
        if t.refunded {
            return Err(OutcomeError::Conflict {
                field: field("offer_id"),
                detail: "already refunded".into(),
            });
        }
        let closes = t.decision_created_ms + state.refund_window_ms();
        if now_ms > closes {
            return Err(OutcomeError::Expired {
                field: field("decision_id"),
                detail: format!(
                    "the attribution window for refunds closed at {}",
                    crate::render::rfc3339(
                        DateTime::from_timestamp_millis(closes).unwrap_or_default()
                    )
                ),
            });
        }
        Ok(OutcomeRecordV2 {
            outcome: OutcomeRecord {
                decision_id: e.decision_id,
                offer_pos: t.offer_pos,
                offer_id: e.offer_id,
                member_id: t.member_id.clone(),
                kind: OutcomeKind::Refunded,
                revenue: t.revenue,
                at_ms: now_ms,
                client_at_ms,
                inventory: t.inventory.clone(),
                suppress_days: 0,
                experiments: t.experiments.clone(),
                learn: false,
            },
            value: t.value,
            points: t.points,
            points_cost: t.points_cost,
            voucher: t.voucher_year.is_some(),
        })
    }

    /// Checks a `fulfilled` event and makes its record. The decision must
    /// be remembered by the adaptive models (it lasts the attribution
    /// window), the offer accepted there and not fulfilled yet. A token is
    /// checked when given and the decision's terms are still live; none is
    /// needed, since a fulfilment moves no money and needs an accept that
    /// carried one.
    fn fulfilment(
        &self,
        e: OutcomeEventDto,
        field: &dyn Fn(&str) -> String,
        now_ms: i64,
        client_at_ms: Option<i64>,
        learn: bool,
    ) -> Result<OutcomeRecord, OutcomeError> {
        if e.revenue.is_some() {
            return Err(FieldError::new(field("revenue"), "only an accept carries revenue").into());
        }
        let Fulfilment { remembered, pos } = self
            .state()
            .learner()
            .check_fulfilment(&e.decision_id, &e.offer_id, now_ms)
            .map_err(|err| match err {
                FulfilmentError::Unknown => OutcomeError::UnknownDecision {
                    field: field("decision_id"),
                    detail: err.to_string(),
                },
                FulfilmentError::NotShown => {
                    FieldError::new(field("offer_id"), err.to_string()).into()
                }
                FulfilmentError::WindowClosed => OutcomeError::Expired {
                    field: field("decision_id"),
                    detail: err.to_string(),
                },
                FulfilmentError::NotAccepted | FulfilmentError::AlreadyFulfilled => {
                    OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: err.to_string(),
                    }
                }
            })?;
        let live = self.state().ledger().decision(&e.decision_id, now_ms);
        if let (Some(t), Some(d)) = (&e.token, &live) {
            if pos < d.record.offers.len() {
                self.verify_token(t, d, pos, &field("token"))?;
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

    /// Cluster mode: a decision this replica does not hold after catching
    /// up, made less than `max_stale_secs` ago, may still wait in the
    /// outbox of the replica that made it (NATS lost or slow there): a 503
    /// to retry, not a 404. Older, or not an id checkout makes: None.
    fn maybe_unpublished(&self, decision_id: &str, now_ms: i64) -> Option<OutcomeError> {
        self.durable().cluster_status()?;
        let made = super::checkout::made_at_ms(decision_id)?;
        let window = i64::try_from(self.settings().cluster.max_stale_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let age = now_ms.saturating_sub(made);
        (age < window).then(|| {
            OutcomeError::Log(LogError::Unavailable(format!(
                "decision {decision_id} was made {:.1} s ago and is not in the stream yet (the replica that made it may not have published it yet); retry",
                age.max(0) as f64 / 1000.0
            )))
        })
    }

    /// Checks `token` against the terms issued for offer `pos` of decision
    /// `d`: no changed price or expiry, no offer moved to another member or
    /// decision.
    fn verify_token(
        &self,
        token: &str,
        d: &LiveDecision,
        pos: usize,
        field: &str,
    ) -> Result<(), FieldError> {
        let issued = &d.record.offers[pos];
        self.security()
            .tokens
            .verify(token, &issued.terms(&d.record.id, &d.record.member_id))
            .map_err(|err| FieldError::new(field, err.to_string()))
    }
}

/// The answer to a batch refused at apply: what was checked before logging
/// no longer held in log order.
fn refusal_error(field: String, why: Refusal) -> OutcomeError {
    match why {
        Refusal::Points { balance, due } => OutcomeError::Conflict {
            field,
            detail: format!("the member's {balance} points no longer cover the {due} points price"),
        },
        Refusal::AlreadyAccepted => OutcomeError::Conflict {
            field,
            detail: "already accepted in this decision".into(),
        },
        Refusal::NotAccepted => OutcomeError::Conflict {
            field,
            detail: "this offer was not accepted in that decision".into(),
        },
        Refusal::AlreadyRefunded => OutcomeError::Conflict {
            field,
            detail: "already refunded".into(),
        },
        Refusal::VoucherUsed => OutcomeError::Conflict {
            field,
            detail: "the member's upgrade voucher for the year is used".into(),
        },
        Refusal::SoldOut => OutcomeError::Conflict {
            field,
            detail: "sold out".into(),
        },
        Refusal::WindowClosed => OutcomeError::Expired {
            field,
            detail: "the attribution window for refunds closed".into(),
        },
    }
}

/// The revenue rule of an accept. An offer with a cash price needs
/// `revenue` equal to it, in its currency (`revenue` missing: 422 naming
/// `revenue`; another currency: `revenue.currency`; another amount:
/// `revenue.amount`). A points-only offer takes no revenue, or 0.
fn check_revenue(
    quoted: Option<&Money>,
    given: Option<&Money>,
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
