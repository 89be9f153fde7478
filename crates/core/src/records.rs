//! The records the engine commits about its promises: decisions as issued
//! (member, offers, prices, expiries, inventory keys) and where an accepted
//! unit of inventory is counted. Plain data, shared by the state that applies
//! them, the log that stores them and the tools that read the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Day, Money};

/// Where an accepted unit of inventory is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InventoryKey {
    /// A flight: origin, destination, departure (minutes since the epoch).
    Flight {
        /// Origin IATA code.
        origin: [u8; 3],
        /// Destination IATA code.
        destination: [u8; 3],
        /// Departure, minutes since 1970.
        departure_min: i64,
    },
    /// An airport on a day (lounge capacity).
    AirportDay {
        /// Airport IATA code.
        airport: [u8; 3],
        /// Day.
        day: i32,
    },
}

/// One offer as issued in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedOffer {
    /// Offer id.
    pub offer_id: String,
    /// Cash price quoted for the party.
    pub price: Option<Money>,
    /// Points price quoted.
    pub points_price: Option<u64>,
    /// Expiry, ms since the epoch.
    pub expires_ms: i64,
    /// Inventory the accept takes from, if the offer is capped.
    pub inventory: Option<(InventoryKey, u32)>,
    /// Days a decline suppresses this offer for the member.
    pub suppress_days: u32,
    /// Probability with which the exploration policy put this offer in this
    /// slot, given the slots before it (1 for greedy); for off-policy evaluation.
    pub propensity: f64,
}

/// A decision as remembered for attribution (and logged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Decision id.
    pub id: String,
    /// Member id.
    pub member_id: String,
    /// Channel.
    pub channel: Channel,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
    /// Offers shown.
    pub offers: Vec<IssuedOffer>,
    /// Experiment assignments of the member at the time.
    pub experiments: Vec<crate::experiments::Assignment>,
    /// The member's qualifying spend at the time (CUPED covariate).
    pub covariate: f32,
    /// The feature vector the decision was scored on (empty: not learned
    /// from), kept so an accept days later still teaches the adaptive models.
    pub features: Vec<f32>,
}

impl DecisionRecord {
    /// A copy without the feature vector (what the ledger keeps; the
    /// learner's memory holds the features), made without copying them.
    pub fn without_features(&self) -> DecisionRecord {
        DecisionRecord {
            id: self.id.clone(),
            member_id: self.member_id.clone(),
            channel: self.channel,
            created_ms: self.created_ms,
            offers: self.offers.clone(),
            experiments: self.experiments.clone(),
            covariate: self.covariate,
            features: Vec::new(),
        }
    }

    /// The latest expiry of its offers.
    pub fn last_expiry_ms(&self) -> i64 {
        self.offers
            .iter()
            .map(|o| o.expires_ms)
            .max()
            .unwrap_or(self.created_ms)
    }
}

/// The inventory an accept of `offer` on this trip takes from, with the cap.
pub fn inventory_key(
    offer: &crate::catalog::Offer,
    it: &crate::domain::Itinerary,
) -> Option<(InventoryKey, u32)> {
    let inv = offer.inventory?;
    let code = |c: crate::domain::Iata| {
        let b = c.as_str().as_bytes();
        [b[0], b[1], b[2]]
    };
    let key = match inv.scope {
        crate::catalog::InventoryScope::PerFlight => InventoryKey::Flight {
            origin: code(it.origin),
            destination: code(it.destination),
            departure_min: it.departure.timestamp().div_euclid(60),
        },
        crate::catalog::InventoryScope::PerAirportDay => InventoryKey::AirportDay {
            airport: code(it.origin),
            day: Day::of(it.departure).0,
        },
    };
    Some((key, inv.cap))
}

/// Milliseconds since the epoch of an instant.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
