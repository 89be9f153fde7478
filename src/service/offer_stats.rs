//! The Offers page's figures: per offer and channel what the applied
//! records say (shown, accepts, value, declines, suppressions; see
//! [`crate::state::offer_stats`]), the capped units taken on the current
//! log day, and the adaptive models' evidence per offer. Read from the
//! state, never counted here.

use serde::Serialize;

use super::Service;
use crate::state::day_of_ms;

/// One offer on one channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfferChannelStats {
    /// Offer id.
    pub offer_id: String,
    /// Channel (`unknown` for outcomes whose decision had left memory).
    pub channel: String,
    /// Times shown.
    pub shown: u64,
    /// Accepts.
    pub accepts: u64,
    /// Accepts per offer shown (null when never shown).
    pub accept_rate: Option<f64>,
    /// Value to the airline of the accepts, less refunds, CNY.
    pub value: f64,
    /// Value per offer shown, CNY (null when never shown).
    pub value_per_shown: Option<f64>,
    /// Accepts refunded.
    pub refunds: u64,
    /// Declines.
    pub declines: u64,
    /// Declines that suppress the offer for the member.
    pub suppressions: u64,
    /// Times shown in a slot the exploration policy filled with a
    /// probability below 1.
    pub explored: u64,
    /// `explored` per offer shown (null when never shown).
    pub explored_share: Option<f64>,
}

/// One offer's capped units and model evidence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfferSummary {
    /// Offer id.
    pub offer_id: String,
    /// Capped units taken by accepts applied on the current log day, less
    /// refunds that day (null when none taken today).
    pub inventory_used_today: Option<u32>,
    /// The cap of the flight or airport-day the last of them took from.
    pub inventory_cap: Option<u32>,
    /// Examples the offer's adaptive model folded in (each shown offer
    /// and each accept counts one; null without a model).
    pub model_examples: Option<u64>,
    /// Accepts the offer's adaptive model folded in.
    pub model_accepts: Option<u64>,
}

/// `GET /v1/offers/stats`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfferStatsReport {
    /// The current log day (UTC date), the day `inventory_used_today` counts.
    pub log_day: Option<String>,
    /// Per offer and channel, ordered by offer then channel.
    pub channels: Vec<OfferChannelStats>,
    /// Per offer, ordered by offer.
    pub offers: Vec<OfferSummary>,
}

fn ratio(n: f64, d: u64) -> Option<f64> {
    (d > 0).then(|| n / d as f64)
}

impl Service {
    /// The Offers page's figures, from the applied state.
    pub fn offer_stats(&self) -> OfferStatsReport {
        let state = self.state();
        let now = state.log_time_ms();
        let day = (now != i64::MIN).then(|| day_of_ms(now));
        let counts = state.offer_stats().counts();
        let units = day
            .map(|d| state.offer_stats().units_on(d))
            .unwrap_or_default();
        let channels: Vec<OfferChannelStats> = counts
            .into_iter()
            .map(|(offer_id, channel, c)| OfferChannelStats {
                accept_rate: ratio(c.accepts as f64, c.shown),
                value_per_shown: ratio(c.value, c.shown),
                explored_share: ratio(c.explored as f64, c.shown),
                offer_id,
                channel,
                shown: c.shown,
                accepts: c.accepts,
                value: c.value,
                refunds: c.refunds,
                declines: c.declines,
                suppressions: c.suppressions,
                explored: c.explored,
            })
            .collect();
        let mut ids: Vec<&str> = channels.iter().map(|c| c.offer_id.as_str()).collect();
        ids.dedup();
        let offers = ids
            .into_iter()
            .map(|id| {
                let u = units.get(id);
                let p = state.learner().posterior(id);
                OfferSummary {
                    offer_id: id.to_string(),
                    inventory_used_today: u.map(|u| u.units),
                    inventory_cap: u.map(|u| u.cap),
                    model_examples: p.as_ref().map(|p| p.examples),
                    model_accepts: p.as_ref().map(|p| p.accepts),
                }
            })
            .collect();
        OfferStatsReport {
            log_day: day.map(|d| {
                chrono::DateTime::from_timestamp(d as i64 * 86_400, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            }),
            channels,
            offers,
        }
    }
}
