//! Checkout: one member, one itinerary → ranked offers with signed terms.
//!
//! The member's audience ([`super::audience`]) says what they may be shown;
//! the adaptive models (when on, and the variant has no model of its own)
//! score; the variant's exploration policy picks; the decision is committed
//! without waiting for the disk. A request that already used its time
//! budget, or whose scoring fails, gets offers by business priority instead
//! (`fallback`), never an error: checkout is never blocked.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::audience::{issued_offer, Ask, Audience};
use super::Service;
use crate::decision::{self, Decision, DecisionInput, Engine};
use crate::domain::OfferRequest;
use crate::experiments::Assignment;
use crate::model::ScoringTable;
use crate::records::DecisionRecord;

/// The answer to a checkout: the decision and what it needs to be rendered.
pub struct Checkout {
    /// The engine that decided (its catalog names the offers).
    pub engine: Arc<Engine>,
    /// Id to quote in outcome events.
    pub decision_id: String,
    /// The member asked about.
    pub member_id: String,
    /// The model that scored (its version is answered).
    pub model: Arc<ScoringTable>,
    /// The member's experiment assignments.
    pub experiments: Vec<Assignment>,
    /// The ranked offers (catalog indexes, prices, reasons).
    pub decision: Decision,
    /// Each offer's signed token, in the same order.
    pub tokens: Vec<String>,
    /// Why the offers are the fallback, if they are (`deadline`, `scoring_failed`).
    pub fallback: Option<&'static str>,
    /// Cluster mode: the decision's publication, to await before answering.
    pub logged: Option<crate::durable::Pending>,
}

impl Service {
    /// Decides the offers for a checkout request at `now`; `arrived` is
    /// when the request arrived (for the fallback deadline).
    ///
    /// No span of its own: the adapter's (`post_offers`) covers it, and a
    /// second span costs about 700 instructions a checkout (callgrind).
    pub fn checkout(
        &self,
        request: OfferRequest,
        now: DateTime<Utc>,
        arrived: Instant,
    ) -> Checkout {
        let started = Instant::now();
        let engine = self.engine.load_full();
        let state = self.state();
        let member = state.members().get(&request.member_id);
        let now_ms = now.timestamp_millis();
        let settings = self.settings();
        let mut audience = Audience::of(
            &engine,
            Some(state.ledger()),
            Ask {
                member_id: &request.member_id,
                channel: request.channel,
                itinerary: Some(&request.itinerary),
                max_offers: request.max_offers,
                daily_cap: settings.contact.max_offers_per_day.of(request.channel) as usize,
                now_ms,
            },
        )
        .for_member(member.as_ref());
        let policy = &audience.policy;
        let table = policy.table.clone();
        let mut input = DecisionInput {
            member: member.as_ref(),
            itinerary: Some(&request.itinerary),
            channel: request.channel,
            now,
            max_offers: policy.max_offers,
            ranking: policy.ranking,
        };
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
        let learner = state.learner();
        let adaptive = learner.settings().enabled && !policy.own_model;
        let slots = adaptive.then(|| learner.slots(&engine.catalog));
        let decision_id = decision_id(now);
        let moments = |i: usize| match &slots {
            Some(s) => s[i]
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .logit_moments(&x),
            None => ((table.propensity(i, &x) as f64).ln(), 0.0),
        };
        let explore = decision::Explore {
            policy: policy.exploration,
            seed: crate::policy::seed_of(&decision_id),
            draws: learner.settings().thompson_draws,
            moments: &moments,
        };
        let fallback_after = std::time::Duration::from_millis(settings.limits.fallback_after_ms);
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
                    &audience,
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
                let mut d = decision::decide_scored(&engine, &input, &audience, None, |_| 0.0);
                for o in &mut d.offers {
                    o.reasons.pop();
                    o.reasons.push(crate::reasons::Reason::BusinessPriority);
                }
                d
            }
        };
        let m = self.metrics();
        m.observe_decision(request.channel, decision.cold_start, fallback, started);
        let suppress_default = settings.contact.suppress_days_after_decline;
        let mut issued = Vec::with_capacity(decision.offers.len());
        let mut tokens = Vec::with_capacity(decision.offers.len());
        let signer = (!decision.offers.is_empty()).then(|| {
            self.security()
                .tokens
                .for_decision(&decision_id, &request.member_id)
        });
        for o in &decision.offers {
            let offer = &engine.catalog.offers[o.index];
            m.offer_served(&engine.catalog, o.index);
            let i = issued_offer(offer, o, Some(&request.itinerary), suppress_default);
            if let Some(s) = &signer {
                tokens.push(s.sign(&i.terms(&decision_id, &request.member_id)));
            }
            issued.push(i);
        }
        let assignments = std::mem::take(&mut audience.policy.assignments);
        let mut logged = None;
        if !issued.is_empty() || !assignments.is_empty() {
            logged = self.durable().commit_decision(
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
                now_ms,
            );
        }
        tracing::debug!(%decision_id, offers = decision.offers.len(), cold_start = decision.cold_start, "decided");
        drop(audience);
        Checkout {
            engine,
            decision_id,
            member_id: request.member_id,
            model: table,
            experiments: assignments,
            decision,
            tokens,
            fallback,
            logged,
        }
    }
}

/// A new decision id: a UUIDv7 (the request's time in its first 48 bits,
/// then random bits), so a replica asked about a decision it does not hold
/// can tell one made moments ago, maybe still on its way through another
/// replica's outbox, from one unknown ([`made_at_ms`]).
pub fn decision_id(now: DateTime<Utc>) -> String {
    let secs = now.timestamp().max(0) as u64;
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, now.timestamp_subsec_nanos());
    uuid::Uuid::new_v7(ts).to_string()
}

/// When decision `id` was made (milliseconds since the Unix epoch), if it
/// is a UUIDv7 as checkout makes them; anything else is None.
pub fn made_at_ms(id: &str) -> Option<i64> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    i64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_carry_their_time() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T14:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = decision_id(now);
        let b = decision_id(now);
        assert_ne!(a, b, "random bits differ");
        assert_eq!(made_at_ms(&a), Some(now.timestamp_millis()));
        assert_eq!(made_at_ms(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(made_at_ms("not-a-uuid"), None);
    }
}
