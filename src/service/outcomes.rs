//! Outcomes: impressions, clicks, accepts, declines and fulfilments, one or
//! a batch. A batch is all-or-nothing: every event is checked, accepts
//! reserve their offer and inventory, the batch is committed as one record,
//! and only once it is applied is it answered.
//!
//! A fulfilment (the accepted upgrade flown, weeks later) is checked against
//! the adaptive models' memory of the decision, which lasts the attribution
//! window, not against the live decision, which lasts as long as its offers.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Service;
use crate::catalog::RewardOn;
use crate::domain::FieldError;
use crate::durable::LogError;
use crate::events::{OutcomeEventDto, OutcomeKind, OutcomeRecord};
use crate::parse::parse_instant;
use crate::state::learner::{Fulfilment, FulfilmentError};
use crate::state::ledger::{Ledger, LiveDecision, ReserveError};
use crate::state::LogRecord;

/// Why a batch of outcomes was refused. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// A field is missing, malformed or inconsistent with the decision.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The decision is unknown (or forgotten).
    #[error("{field}: {detail}")]
    UnknownDecision {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// Already accepted, sold out, fulfilled twice or never accepted.
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
        let mut records = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let field = |name: &str| {
                if batch {
                    format!("[{i}].{name}")
                } else {
                    name.to_string()
                }
            };
            let client_at_ms = match &e.at {
                None => None,
                Some(s) => Some(parse_instant(s, &field("at"))?.timestamp_millis()),
            };
            if e.kind == OutcomeKind::Fulfilled {
                let learn = reward_on(&e.offer_id) == RewardOn::Fulfilment;
                let record = self.fulfilment(e, &field, now_ms, client_at_ms, learn)?;
                if records.iter().any(|r: &OutcomeRecord| {
                    r.kind == OutcomeKind::Fulfilled
                        && r.decision_id == record.decision_id
                        && r.offer_id == record.offer_id
                }) {
                    return Err(OutcomeError::Conflict {
                        field: field("offer_id"),
                        detail: "fulfilled twice in this batch".into(),
                    });
                }
                records.push(record);
                continue;
            }
            let d = ledger.decision(&e.decision_id, now_ms).ok_or_else(|| {
                OutcomeError::UnknownDecision {
                    field: field("decision_id"),
                    detail: "no such decision (unknown, or its offers expired long ago)".into(),
                }
            })?;
            let pos = d
                .record
                .offers
                .iter()
                .position(|o| o.offer_id == e.offer_id)
                .ok_or_else(|| {
                    FieldError::new(field("offer_id"), "this offer was not in that decision")
                })?;
            let issued = &d.record.offers[pos];
            // The signed terms must be exactly those issued: no changed price or
            // expiry, no offer moved to another member or decision.
            match &e.token {
                Some(t) => self.verify_token(t, &d, pos, &field("token"))?,
                None if e.kind == OutcomeKind::Accept => {
                    return Err(FieldError::new(
                        field("token"),
                        "an accept must carry the offer's token from the decision",
                    )
                    .into())
                }
                None => {}
            }
            if now_ms > issued.expires_ms {
                return Err(OutcomeError::Expired {
                    field: field("offer_id"),
                    detail: format!(
                        "the offer expired at {}",
                        crate::render::rfc3339(
                            DateTime::from_timestamp_millis(issued.expires_ms).unwrap_or(now)
                        )
                    ),
                });
            }
            let mut revenue = 0.0;
            if e.kind == OutcomeKind::Accept {
                let quoted = issued.price.as_ref();
                if let Some(r) = &e.revenue {
                    let ok = match quoted {
                        Some(q) => (r.amount - q.amount).abs() < 0.005 && r.currency == q.currency,
                        None => r.amount == 0.0,
                    };
                    if !ok {
                        return Err(FieldError::new(
                            field("revenue.amount"),
                            match quoted {
                                Some(q) => {
                                    format!(
                                        "must equal the quoted price {} {}",
                                        q.amount, q.currency
                                    )
                                }
                                None => {
                                    "this offer was quoted in points only; revenue must be 0".into()
                                }
                            },
                        )
                        .into());
                    }
                }
                revenue = quoted.map(|q| q.amount).unwrap_or(0.0);
                match ledger.reserve_accept(&d, pos) {
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
            } else if e.revenue.is_some() {
                return Err(
                    FieldError::new(field("revenue"), "only an accept carries revenue").into(),
                );
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
        let n = records.len();
        let pending = self
            .durable()
            .commit(LogRecord::Outcomes(records), "outcomes");
        // The write is queued. Its outcome is awaited in a task of its own,
        // which also owns the reservations: if the client goes away the write
        // still completes, and the reservations are released only if it
        // failed (never after a commit, which would free a unit twice).
        let outcome = tokio::spawn(async move {
            let result = pending.await;
            if result.is_ok() {
                reservations.held.clear();
            }
            result
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("event write task failed: {e}")))?;
        let lsn = outcome?;
        Ok(EventsAccepted { accepted: n, lsn })
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
