//! The records the engine commits: every durable change is one
//! [`LogRecord`] (decisions as issued, outcomes, member writes and events,
//! erasures), each carrying the time it needs, so applying a record reads no
//! clock. Plain data and its bincode form, shared by the state that applies
//! records, the logs that store them and the tools that read a log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ConsentChannel;
use crate::domain::{Channel, Consent, Day, Iata, Member, Money, MonthlyHistory, Tags, Tier};

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

impl IssuedOffer {
    /// The terms its token signs, in decision `decision_id` for `member_id`.
    pub fn terms<'a>(
        &'a self,
        decision_id: &'a str,
        member_id: &'a str,
    ) -> crate::tokens::Terms<'a> {
        crate::tokens::Terms {
            decision_id,
            member_id,
            offer_id: &self.offer_id,
            price: self.price.as_ref(),
            points_price: self.points_price,
            expires_ms: self.expires_ms,
        }
    }
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
    let inv = offer.inventory.as_ref()?;
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

/// Compact member form for logs and snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemberWire {
    spend: f32,
    points: u32,
    last_flight: Option<i32>,
    joined: i32,
    flights: u16,
    tags: u16,
    home: [u8; 3],
    tier: Tier,
    birth_month: u8,
    consent: u8,
}

impl From<&Member> for MemberWire {
    fn from(m: &Member) -> Self {
        let h = m.home_airport.as_str().as_bytes();
        MemberWire {
            spend: m.qualifying_spend_12m,
            points: m.points,
            last_flight: m.last_flight.map(|d| d.0),
            joined: m.joined.0,
            flights: m.flights_12m(),
            tags: m.tags.bits(),
            home: [h[0], h[1], h[2]],
            tier: m.tier,
            birth_month: m.birth_month,
            consent: m.consent.bits(),
        }
    }
}

/// A record of the first form (12-month totals only) is an undated spread
/// of its totals (see [`MonthlyHistory`]).
impl From<&MemberWire> for Member {
    fn from(w: &MemberWire) -> Self {
        Member {
            qualifying_spend_12m: w.spend,
            points: w.points,
            last_flight: w.last_flight.map(Day),
            joined: Day(w.joined),
            history: MonthlyHistory::spread(w.spend as f64, w.flights),
            tags: Tags::from_bits(w.tags),
            home_airport: Iata::from_bytes(w.home),
            tier: w.tier,
            birth_month: w.birth_month,
            consent: Consent::from_bits(w.consent),
        }
    }
}

/// Compact member form with the monthly history (logs and snapshots from
/// snapshot format 7): the first form, then the history's raw parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemberWireV2 {
    base: MemberWire,
    spend: [u16; 12],
    flights: [u8; 12],
    month: u16,
    exp: u8,
    short: u8,
}

impl From<&Member> for MemberWireV2 {
    fn from(m: &Member) -> Self {
        let (spend, flights, month, exp, short) = m.history.to_raw();
        MemberWireV2 {
            base: MemberWire::from(m),
            spend,
            flights,
            month,
            exp,
            short,
        }
    }
}

impl From<&MemberWireV2> for Member {
    fn from(w: &MemberWireV2) -> Self {
        let mut m = Member::from(&w.base);
        m.history = MonthlyHistory::from_raw(w.spend, w.flights, w.month, w.exp, w.short);
        m.refresh_totals();
        m
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogRecord {
    /// A decision was issued.
    Decision(DecisionRecord),
    /// A block of campaign decisions (logged together for throughput).
    Decisions(Vec<DecisionRecord>),
    /// A batch of outcome events (applied all together).
    Outcomes(Vec<OutcomeRecord>),
    /// Members created or replaced.
    Members(Vec<(String, MemberWire)>),
    /// A member event.
    MemberChange {
        /// Member id.
        member_id: String,
        /// Server time, ms.
        at_ms: i64,
        /// The change.
        change: MemberChange,
    },
    /// A member erased (`DELETE /v1/members/{id}`): the record and every
    /// piece of state keyed by the id go; replay after the earlier records
    /// about the member removes them again.
    MemberErased {
        /// Member id.
        member_id: String,
        /// Server time, ms.
        at_ms: i64,
    },
    /// Members created or replaced, with their monthly history (what
    /// `Members` records, still read, became).
    MembersV2(Vec<(String, MemberWireV2)>),
    /// A batch of outcome events with what each moves besides revenue
    /// (value, points); what the engine writes since refunds and points
    /// redemption. [`LogRecord::Outcomes`] stays readable: its accepts
    /// carried no value and redeemed no points.
    OutcomesV2(Vec<OutcomeRecordV2>),
    /// A campaign run's summary, logged once its decisions are durable (the
    /// console's Campaigns page lists the runs).
    CampaignRun(CampaignRunRecord),
}

/// What a campaign run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRunRecord {
    /// Campaign id (its decisions' ids are `cmp-{campaign_id}-{member_id}`).
    pub campaign_id: String,
    /// Channel.
    pub channel: Channel,
    /// The segment filter as the caller gave it (JSON).
    pub segment: String,
    /// When it started, ms since the epoch.
    pub started_ms: i64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// Members in the store.
    pub members_scanned: u64,
    /// Members in the segment (filter matched, consent given): the members scored.
    pub members_matched: u64,
    /// Members written (with at least one offer).
    pub members_written: u64,
    /// Members in an experiment holdout (recorded as exposed, not written).
    pub held_out: u64,
    /// Decisions recorded.
    pub decisions_recorded: u64,
}

impl LogRecord {
    /// Encodes for the log.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        bincode::serialize(self).unwrap_or_default()
    }
    /// Encodes `LogRecord::Decision(d)` without cloning the record (the checkout hot path).
    pub fn encode_decision(d: &DecisionRecord) -> Vec<u8> {
        /// Same variant index as [`LogRecord::Decision`] (bincode writes only the index).
        #[derive(Serialize)]
        enum Borrowed<'a> {
            Decision(&'a DecisionRecord),
        }
        bincode::serialize(&Borrowed::Decision(d)).unwrap_or_default()
    }
    /// Decodes a log payload.
    pub fn decode(b: &[u8]) -> Result<LogRecord, String> {
        decode_bounded(b).map_err(|e| format!("undecodable log record: {e}"))
    }
}

/// Decodes bincode written by `bincode::serialize` (fixint, little-endian,
/// trailing bytes allowed: the same format, byte for byte), but never reads or
/// reserves more than the input holds: a corrupt or hostile length prefix is
/// an error, not a huge allocation. A valid encoding of `b.len()` bytes reads
/// exactly `b.len()` bytes, so the limit refuses nothing that was written.
pub fn decode_bounded<'a, T: Deserialize<'a>>(b: &'a [u8]) -> bincode::Result<T> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_little_endian()
        .with_limit(b.len() as u64)
        .deserialize(b)
}

/// Kind of outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The offer was displayed.
    Impression,
    /// The member clicked it.
    Click,
    /// The member bought it.
    Accept,
    /// The member said no.
    Decline,
    /// The accepted offer was delivered: the upgraded flight flown, the
    /// lounge visited, the bag carried. It may come weeks after the decision,
    /// long after the offer itself expired, and counts while the decision is
    /// inside the learning attribution window (`learning.attribution_window_days`).
    /// It needs an earlier accept of the same offer in the same decision and
    /// counts once. For offers rewarded on fulfilment (`reward_on =
    /// "fulfilment"` in the catalog) it is what teaches the adaptive models.
    Fulfilled,
    /// An accepted offer was refunded: the accept's revenue, value,
    /// inventory unit and points are given back, once, while the decision
    /// is inside the attribution window. Carries the decision, offer and
    /// token, like the accept.
    Refunded,
}

impl OutcomeKind {
    /// snake_case name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Impression => "impression",
            OutcomeKind::Click => "click",
            OutcomeKind::Accept => "accept",
            OutcomeKind::Decline => "decline",
            OutcomeKind::Fulfilled => "fulfilled",
            OutcomeKind::Refunded => "refunded",
        }
    }
}

/// An outcome as logged: everything its effect needs, so replay does not
/// depend on the decision still being remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// Decision id.
    pub decision_id: String,
    /// Position of the offer in the decision.
    pub offer_pos: u8,
    /// Offer id.
    pub offer_id: String,
    /// Member the decision was for.
    pub member_id: String,
    /// What happened.
    pub kind: OutcomeKind,
    /// Revenue attributed (accepts), in the quoted currency.
    pub revenue: f64,
    /// Server receive time, ms since the epoch.
    pub at_ms: i64,
    /// Client-reported time, ms since the epoch, if given.
    pub client_at_ms: Option<i64>,
    /// Inventory the accept takes from.
    pub inventory: Option<(InventoryKey, u32)>,
    /// Days a decline suppresses the offer.
    pub suppress_days: u32,
    /// Experiments the decision carried (accepts convert the member there).
    pub experiments: Vec<crate::experiments::Assignment>,
    /// Whether this outcome is the offer's reward for the adaptive models:
    /// an accept of an offer rewarded on accept, or a fulfilment of one
    /// rewarded on fulfilment (the catalog's `reward_on` when the event
    /// arrived, fixed here so that replay learns exactly what was learned live).
    pub learn: bool,
}

/// An outcome with what it moves besides revenue (record version 2).
///
/// For an accept: `value` is its value to the airline (the offer's net
/// value for the units quoted, see `Offer::net_value`), `points` the points
/// price it redeems from the member's balance, `points_cost` what the points
/// it gives away cost the airline. A refund carries the figures of the
/// accept it reverses (and the accept's revenue in `outcome.revenue`), as
/// positive numbers. Other kinds carry zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecordV2 {
    /// The outcome as in version 1.
    pub outcome: OutcomeRecord,
    /// Value to the airline, CNY.
    pub value: f64,
    /// Points redeemed (accept) or given back (refund).
    pub points: u64,
    /// Cost of the points given away, CNY.
    pub points_cost: f64,
    /// The accept uses the member's upgrade voucher of the calendar year of
    /// `outcome.at_ms` (a refund: gives back the one its accept used).
    pub voucher: bool,
}

impl From<OutcomeRecord> for OutcomeRecordV2 {
    /// A version-1 outcome: no value, no points, no voucher.
    fn from(outcome: OutcomeRecord) -> Self {
        OutcomeRecordV2 {
            outcome,
            value: 0.0,
            points: 0,
            points_cost: 0.0,
            voucher: false,
        }
    }
}

/// The calendar year (UTC) of a time in ms: an upgrade voucher's period.
pub fn voucher_year(at_ms: i64) -> i32 {
    use chrono::Datelike;
    DateTime::<Utc>::from_timestamp_millis(at_ms)
        .map(|t| t.year())
        .unwrap_or(1970)
}

/// A checked member change, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A flight on `day` with spend and points.
    FlightFlown {
        /// Day flown.
        day: i32,
        /// Qualifying spend added.
        spend: f64,
        /// Points added.
        points: u32,
    },
    /// Points added.
    PointsEarned(u32),
    /// Points removed (saturating at zero).
    PointsRedeemed(u32),
    /// Tier set.
    TierChanged(Tier),
    /// Consent set.
    ConsentChanged(ConsentChannel, bool),
    /// Qualifying spend added.
    Purchase {
        /// Amount added to qualifying spend (0 when not qualifying).
        qualifying_amount: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TierThresholds;

    #[test]
    fn borrowed_decision_encoding_is_the_owned_one() {
        let d = DecisionRecord {
            id: "d-1".into(),
            member_id: "M00000001".into(),
            channel: Channel::Checkout,
            created_ms: 1_790_000_000_000,
            offers: vec![IssuedOffer {
                offer_id: "lounge-pass".into(),
                price: None,
                points_price: Some(4000),
                expires_ms: 1_790_000_900_000,
                inventory: None,
                suppress_days: 30,
                propensity: 0.25,
            }],
            experiments: vec![],
            covariate: 1234.5,
            features: vec![0.5; 26],
        };
        let bytes = LogRecord::encode_decision(&d);
        assert_eq!(bytes, LogRecord::Decision(d.clone()).encode());
        assert_eq!(LogRecord::decode(&bytes), Ok(LogRecord::Decision(d)));
    }

    #[test]
    fn bounded_decoding_reads_the_bytes_bincode_serialize_wrote() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let rec = LogRecord::Members(
            (0..20)
                .map(|i| {
                    let m = crate::synth::member(3, i, d, &th);
                    (format!("M{i:08}"), MemberWire::from(&m))
                })
                .collect(),
        );
        // The bytes as every earlier release wrote them.
        let old: Vec<u8> = bincode::serialize(&rec).unwrap();
        assert_eq!(rec.encode(), old);
        assert_eq!(LogRecord::decode(&old), Ok(rec.clone()));
        let unbounded: LogRecord = bincode::deserialize(&old).unwrap();
        assert_eq!(decode_bounded::<LogRecord>(&old).unwrap(), unbounded);
        // Trailing bytes were always allowed; still are.
        let mut padded = old.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(LogRecord::decode(&padded), Ok(rec));
    }

    #[test]
    fn a_hostile_length_prefix_is_an_error_not_an_allocation() {
        // Variant 3 (Members), then a vector length of 2^62.
        let mut b = 3u32.to_le_bytes().to_vec();
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert!(LogRecord::decode(&b).is_err());
        // Variant 4 (MemberChange): a member id claiming 2^40 bytes.
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(LogRecord::decode(&b).is_err());
    }

    #[test]
    fn member_wire_round_trips() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        for i in 0..200 {
            let mut m = crate::synth::member(5, i, d, &th);
            // Undated (totals only): both forms keep it exactly.
            assert_eq!(Member::from(&MemberWire::from(&m)), m);
            assert_eq!(Member::from(&MemberWireV2::from(&m)), m);
            // Dated, with months aged and a grace count: the second form keeps it.
            m.history.date(680);
            m.history.add(675, 1234.5, 2);
            m.history.roll_to(683);
            m.history.set_months_short(2);
            m.refresh_totals();
            assert_eq!(Member::from(&MemberWireV2::from(&m)), m);
        }
    }

    #[test]
    fn members_v2_is_a_new_variant_after_the_old_ones() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let m = crate::synth::member(5, 1, d, &th);
        let rec = LogRecord::MembersV2(vec![("M1".into(), MemberWireV2::from(&m))]);
        let b = rec.encode();
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 6);
        assert_eq!(LogRecord::decode(&b), Ok(rec));
    }
}
