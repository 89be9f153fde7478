//! Per offer and channel counts for the console's Offers page: offers
//! shown, accepts and their value, refunds, declines and the suppressions
//! they start, and the capped units taken on the current log day. Counted
//! in [`super::State::apply`] from the records only (never on the request
//! path, never from the Prometheus counters), so every replica and every
//! restart holds the same figures; the labels are offer ids × channels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// What the records say about one offer on one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfferCounts {
    /// Times shown (each offer of each decision).
    pub shown: u64,
    /// Times shown in a slot the exploration policy filled with a
    /// probability below 1 (a choice it might not have made).
    pub explored: u64,
    /// Accepts applied.
    pub accepts: u64,
    /// Value to the airline of those accepts, CNY (less refunds).
    pub value: f64,
    /// Accepts refunded.
    pub refunds: u64,
    /// Declines.
    pub declines: u64,
    /// Declines that suppress the offer for the member (suppression days above 0).
    pub suppressions: u64,
}

/// Capped units an offer's accepts took on one log day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferDay {
    /// Day (days since the epoch, UTC, log time).
    pub day: i32,
    /// Units taken by accepts applied that day, less refunds that day.
    pub units: u32,
    /// The cap of the inventory key the last of them took from.
    pub cap: u32,
}

/// The counts, keyed by (offer id, channel name); shared by clones.
#[derive(Debug, Clone, Default)]
pub struct OfferStats {
    counts: Arc<Mutex<BTreeMap<(String, String), OfferCounts>>>,
    days: Arc<Mutex<BTreeMap<String, OfferDay>>>,
}

/// The snapshot form: counts per (offer, channel), and units per offer.
pub type OfferStatsSnapshot = (Vec<(String, String, OfferCounts)>, Vec<(String, OfferDay)>);

impl OfferStats {
    fn with(&self, offer: &str, channel: &str, f: impl FnOnce(&mut OfferCounts)) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        f(m.entry((offer.to_string(), channel.to_string()))
            .or_default());
    }

    /// An offer shown; `propensity` is the chance its slot had of it.
    pub fn shown(&self, offer: &str, channel: &str, propensity: f64) {
        self.with(offer, channel, |c| {
            c.shown += 1;
            if propensity < 1.0 {
                c.explored += 1;
            }
        });
    }

    /// An accept worth `value`; `cap` when it took a capped unit on `day`.
    pub fn accepted(&self, offer: &str, channel: &str, value: f64, cap: Option<u32>, day: i32) {
        self.with(offer, channel, |c| {
            c.accepts += 1;
            c.value += value;
        });
        if let Some(cap) = cap {
            let mut m = self.days.lock().unwrap_or_else(PoisonError::into_inner);
            let d = m.entry(offer.to_string()).or_default();
            if d.day != day {
                *d = OfferDay { day, units: 0, cap };
            }
            d.units = d.units.saturating_add(1);
            d.cap = cap;
        }
    }

    /// A refund of an accept worth `value`; `capped` when it gave a unit back on `day`.
    pub fn refunded(&self, offer: &str, channel: &str, value: f64, capped: bool, day: i32) {
        self.with(offer, channel, |c| {
            c.refunds += 1;
            c.value -= value;
        });
        if capped {
            let mut m = self.days.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(d) = m.get_mut(offer) {
                if d.day == day {
                    d.units = d.units.saturating_sub(1);
                }
            }
        }
    }

    /// A decline; `suppresses` when it suppresses the offer for the member.
    pub fn declined(&self, offer: &str, channel: &str, suppresses: bool) {
        self.with(offer, channel, |c| {
            c.declines += 1;
            if suppresses {
                c.suppressions += 1;
            }
        });
    }

    /// Every (offer, channel) with its counts, in order.
    pub fn counts(&self) -> Vec<(String, String, OfferCounts)> {
        let m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter()
            .map(|((o, ch), c)| (o.clone(), ch.clone(), c.clone()))
            .collect()
    }

    /// Units taken on `day` and the cap, per offer (offers with none that day left out).
    pub fn units_on(&self, day: i32) -> BTreeMap<String, OfferDay> {
        let m = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter()
            .filter(|(_, d)| d.day == day)
            .map(|(o, d)| (o.clone(), *d))
            .collect()
    }

    /// The snapshot form.
    pub fn to_snapshot(&self) -> OfferStatsSnapshot {
        let days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        (
            self.counts(),
            days.iter().map(|(o, d)| (o.clone(), *d)).collect(),
        )
    }

    /// Restores from the snapshot form (into empty counts).
    pub fn restore(&self, snap: OfferStatsSnapshot) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for (o, ch, c) in snap.0 {
            m.insert((o, ch), c);
        }
        let mut d = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        d.extend(snap.1);
    }
}
