//! The offer catalog: what can be offered, at what price, to whom, where and
//! how often, loaded from TOML (`config/catalog.toml` is compiled in as the
//! default) and checked as a whole before it is used.
//!
//! [`Offer::eligible`] is the single eligibility rule used by checkout,
//! campaigns and simulations, so that no path can show an offer another path
//! would refuse.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::domain::{
    Benefit, Cabin, Category, Channel, Day, FieldError, Itinerary, Member, Money, Tags, Tier,
};

/// Errors loading a catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The TOML did not parse into the catalog schema.
    #[error("catalog does not parse: {0}")]
    Parse(String),
    /// An offer breaks a rule.
    #[error("catalog offer {offer:?}: {error}")]
    Invalid {
        /// Offer id (or index when the id itself is bad).
        offer: String,
        /// What is wrong.
        error: FieldError,
    },
}

/// Route restriction of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Any route.
    #[default]
    Any,
    /// Both airports in one country.
    Domestic,
    /// Airports in different countries.
    International,
}

/// How inventory is counted for an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryScope {
    /// Per flight: origin, destination and departure instant.
    PerFlight,
    /// Per origin airport and departure day (e.g. lounge capacity).
    PerAirportDay,
}

/// Which outcome is an offer's reward for the adaptive models.
///
/// Most offers are worth what they are worth when the member says yes. Some
/// are worth something only when delivered: a cabin upgrade bought at
/// checkout is revenue when it is flown (weeks later; a cancelled trip refunds
/// it), a hotel bundle when the stay happens. Those learn from the
/// `fulfilled` event, attributed to the decision by id within the learning
/// attribution window, and not from the accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardOn {
    /// The accept is the reward (the default).
    #[default]
    Accept,
    /// The `fulfilled` event after an accept is the reward.
    Fulfilment,
}

/// An inventory cap.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// What a unit of inventory is counted against.
    pub scope: InventoryScope,
    /// Units available per scope key.
    pub cap: u32,
    /// The last units of the cap, kept for chosen tiers or value segments.
    #[serde(default)]
    pub reserve: Option<Reserve>,
}

/// The last `units` of an inventory cap, sold only to members of `tiers` or
/// of `segments` (value segments): once the cap less `units` is taken, only
/// they may take the rest. Decided in log order where accepts are applied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    /// Units kept back.
    pub units: u32,
    /// Tiers that may take them.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Value segments that may take them (`high-value`, `potential`, `low-value`).
    #[serde(default, deserialize_with = "value_segments")]
    pub segments: Vec<crate::features::ValueSegment>,
}

fn value_segments<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::features::ValueSegment>, D::Error> {
    use crate::features::ValueSegment as V;
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| {
            [V::HighValue, V::Potential, V::LowValue]
                .into_iter()
                .find(|v| v.as_str() == n)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown value segment {n:?}: expected high-value, potential or low-value"
                    ))
                })
        })
        .collect()
}

/// Who may see an offer and in which context.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EligibilitySpec {
    /// Tiers allowed (empty: all).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Booked cabins allowed (empty: all).
    #[serde(default)]
    pub cabins: Vec<Cabin>,
    /// Route restriction.
    #[serde(default)]
    pub route: RouteKind,
    /// Earliest booking: at least this many days before departure.
    #[serde(default)]
    pub min_days_before_departure: Option<u32>,
    /// Latest: at most this many days before departure.
    #[serde(default)]
    pub max_days_before_departure: Option<u32>,
    /// Minimum points balance.
    #[serde(default)]
    pub min_points: Option<u32>,
    /// Minimum route length, km.
    #[serde(default)]
    pub min_distance_km: Option<f64>,
    /// Member must have every one of these tags.
    #[serde(default)]
    pub require_tags: Vec<String>,
    /// Member must have none of these tags.
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    /// Only members whose qualifying spend is at most this far below the
    /// next tier's threshold (tier fast-track).
    #[serde(default)]
    pub max_spend_to_next_tier: Option<f64>,
    /// Only members who have not flown for at least this many days (retention).
    #[serde(default)]
    pub min_days_since_last_flight: Option<u32>,
    /// Minimum qualifying spend over 12 months (retention of high value).
    #[serde(default)]
    pub min_qualifying_spend: Option<f64>,
    /// Minimum party size.
    #[serde(default)]
    pub min_passengers: Option<u8>,
}

/// Per-member contact limits of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContactSpec {
    /// Days the offer stays hidden from a member after they declined it
    /// (overrides the global default when set).
    #[serde(default)]
    pub suppress_days_after_decline: Option<u32>,
}

/// Catalog TOML form of an offer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferSpec {
    id: String,
    category: Category,
    title: String,
    #[serde(default)]
    price: Option<Money>,
    #[serde(default)]
    points_price: Option<u32>,
    #[serde(default)]
    points_awarded: u32,
    #[serde(default)]
    per_passenger: bool,
    margin: f64,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default = "one")]
    lever: f64,
    valid_from: toml::value::Datetime,
    valid_to: toml::value::Datetime,
    #[serde(default)]
    validity_minutes: Option<ValiditySpec>,
    channels: Vec<Channel>,
    #[serde(default)]
    provides: Vec<Benefit>,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    eligibility: EligibilitySpec,
    #[serde(default)]
    contact: ContactSpec,
    #[serde(default)]
    inventory: Option<Inventory>,
    #[serde(default)]
    reward_on: RewardOn,
    #[serde(default)]
    uses_voucher: bool,
}

fn one() -> f64 {
    1.0
}

/// An offer's `validity_minutes`: one number (how long the offer stays
/// acceptable when shown at checkout or a kiosk, the in-session channels
/// whose hold the number always described) or a table by channel
/// (`{ email = 1440, checkout = 20 }`). Channels it leaves out take the
/// catalog's `[validity_minutes]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
enum ValiditySpec {
    InSession(u32),
    ByChannel(ValidityTable),
}

/// Minutes by channel, each optional (TOML `[validity_minutes]` table).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidityTable {
    #[serde(default)]
    checkout: Option<u32>,
    #[serde(default)]
    app: Option<u32>,
    #[serde(default)]
    email: Option<u32>,
    #[serde(default)]
    kiosk: Option<u32>,
    #[serde(default)]
    sms: Option<u32>,
}

impl ValidityTable {
    fn get(&self, ch: Channel) -> Option<u32> {
        match ch {
            Channel::Checkout => self.checkout,
            Channel::App => self.app,
            Channel::Email => self.email,
            Channel::Kiosk => self.kiosk,
            Channel::Sms => self.sms,
        }
    }
}

/// Longest validity a catalog may set, minutes (60 days).
pub const MAX_VALIDITY_MINUTES: u32 = 60 * 24 * 60;

/// How long a shown offer stays acceptable, minutes, per channel (indexed by
/// [`Channel::index`]). It is counted from the decision (for a campaign, from
/// its send time) and never runs past the offer's window or the departure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity(pub [u32; 5]);

impl Validity {
    /// The catalog-wide defaults when a catalog sets none: 30 minutes at
    /// checkout and kiosk (the member is buying now), 3 days in the app and
    /// by sms, 7 days by email (read when the member opens it).
    pub const DEFAULT: Validity = Validity([30, 3 * 1440, 7 * 1440, 30, 3 * 1440]);

    /// Minutes on a channel.
    pub fn minutes(&self, ch: Channel) -> u32 {
        self.0[ch.index()]
    }

    /// The defaults with a table's entries put over them; `field` names the
    /// table in errors.
    fn over(self, t: &ValidityTable, field: &str) -> Result<Validity, FieldError> {
        let mut v = self;
        for ch in Channel::ALL {
            if let Some(m) = t.get(ch) {
                if m == 0 || m > MAX_VALIDITY_MINUTES {
                    return Err(FieldError::new(
                        format!("{field}.{}", ch.as_str()),
                        "must be from 1 to 86400 minutes (60 days)",
                    ));
                }
                v.0[ch.index()] = m;
            }
        }
        Ok(v)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: String,
    #[serde(default)]
    points_cost_cny: f64,
    /// Catalog-wide validity by channel, minutes.
    #[serde(default)]
    validity_minutes: ValidityTable,
    #[serde(rename = "offer")]
    offers: Vec<OfferSpec>,
}

/// A validated offer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Stable id, used in metrics labels and events.
    pub id: String,
    /// Category.
    pub category: Category,
    /// Title shown to the member.
    pub title: String,
    /// Cash price per unit (per passenger when `per_passenger`).
    pub price: Option<Money>,
    /// Points price per unit.
    pub points_price: Option<u32>,
    /// Points the airline gives the member on an accept, per unit (bonus
    /// miles); expected value counts them at the catalog's cost per point.
    pub points_awarded: u32,
    /// Whether the price is multiplied by the party size.
    pub per_passenger: bool,
    /// Margin the airline makes on an accept, CNY (per unit).
    pub margin: f64,
    /// What an accept of an offer without a cash price (retention, co-brand)
    /// is worth to the airline, CNY per unit (`value`; when absent the
    /// margin stands for it). Only such offers may set it.
    pub value: Option<f64>,
    /// Business lever multiplying expected value (1 = neutral).
    pub lever: f64,
    /// First day the offer may be shown.
    pub valid_from: Day,
    /// Last day the offer may be shown.
    pub valid_to: Day,
    /// How long a shown offer stays acceptable, per channel: the catalog's
    /// `[validity_minutes]` with the offer's own setting over it.
    pub validity: Validity,
    /// Channels it may be shown on.
    pub channels: Vec<Channel>,
    /// Tier benefits it sells; never sold to a tier that includes them.
    pub provides: Vec<Benefit>,
    /// Fixed business priority (higher first) for policies that rank without a model.
    pub priority: u32,
    /// Eligibility rules.
    pub eligibility: EligibilitySpec,
    /// Parsed `require_tags`.
    pub require_tags: Tags,
    /// Parsed `exclude_tags`.
    pub exclude_tags: Tags,
    /// Contact limits.
    pub contact: ContactSpec,
    /// Inventory cap, if the offer is perishable.
    pub inventory: Option<Inventory>,
    /// Which outcome teaches the adaptive models (`reward_on`, default `accept`).
    pub reward_on: RewardOn,
    /// The offer is the use of the member's tier upgrade voucher
    /// (`uses_voucher`): only for tiers whose benefits include one, shown
    /// instead of the paid upgrades, and its accept consumes the voucher.
    pub uses_voucher: bool,
}

/// Why an offer is not eligible; used by tests and debugging endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Outside its validity window.
    OutOfWindow,
    /// Not offered on this channel.
    Channel,
    /// Member lacks consent for the channel.
    Consent,
    /// Tier not allowed.
    Tier,
    /// Tier already includes what the offer sells.
    TierBenefit,
    /// Cabin not allowed.
    Cabin,
    /// Route kind not allowed.
    Route,
    /// Too close to or too far from departure.
    DaysToDeparture,
    /// Too few points: below `min_points`, or short of the party's points price.
    Points,
    /// Route too short.
    Distance,
    /// Tag rules.
    Tags,
    /// Not close enough to the next tier.
    NextTier,
    /// Flew too recently for a retention offer.
    Recency,
    /// Spend too low.
    Spend,
    /// Party too small.
    Passengers,
    /// Needs member data the request does not have (cold start).
    NeedsMember,
    /// The flight has already left: nothing can be sold for it.
    Departed,
}

/// The context eligibility is judged in.
#[derive(Debug, Clone, Copy)]
pub struct EligibilityContext<'a> {
    /// The member, or None for a cold start.
    pub member: Option<&'a Member>,
    /// The itinerary, or None for a campaign without one.
    pub itinerary: Option<&'a Itinerary>,
    /// Channel of the decision.
    pub channel: Channel,
    /// Decision instant.
    pub now: DateTime<Utc>,
    /// Spend to next tier (precomputed from the thresholds), None at the top tier.
    pub spend_to_next_tier: Option<f64>,
    /// The trip's route facts, computed once: (domestic, distance in km).
    pub route: Option<(bool, f64)>,
    /// The day of `now`, computed once.
    pub today: Day,
    /// Whole days from `now` to the trip's departure, computed once.
    pub days_to_departure: Option<i64>,
}

impl<'a> EligibilityContext<'a> {
    /// A context, with the route and date facts every offer's rules need computed once.
    pub fn new(
        member: Option<&'a Member>,
        itinerary: Option<&'a Itinerary>,
        channel: Channel,
        now: DateTime<Utc>,
        spend_to_next_tier: Option<f64>,
    ) -> Self {
        EligibilityContext {
            member,
            itinerary,
            channel,
            now,
            spend_to_next_tier,
            route: itinerary.map(|it| (it.is_domestic(), it.distance_km())),
            today: Day::of(now),
            days_to_departure: itinerary.map(|it| it.days_to_departure(now)),
        }
    }
}

impl Offer {
    /// Whether an eligibility rule is about a trip (cabin, route, days to
    /// departure, distance, party size): such an offer needs an itinerary.
    pub fn needs_trip(&self) -> bool {
        let e = &self.eligibility;
        !e.cabins.is_empty()
            || e.route != RouteKind::Any
            || e.min_days_before_departure.is_some()
            || e.max_days_before_departure.is_some()
            || e.min_distance_km.is_some()
            || e.min_passengers.is_some()
    }

    /// Whether the offer may be shown in `ctx`; the first failed rule otherwise.
    pub fn eligible(&self, ctx: &EligibilityContext<'_>) -> Result<(), Ineligible> {
        let e = &self.eligibility;
        let today = ctx.today;
        if today < self.valid_from || today > self.valid_to {
            return Err(Ineligible::OutOfWindow);
        }
        if !self.channels.contains(&ctx.channel) {
            return Err(Ineligible::Channel);
        }
        if let Some(need) = ctx.channel.required_consent() {
            match ctx.member {
                Some(m) if m.consent.granted(need) => {}
                _ => return Err(Ineligible::Consent),
            }
        }
        let tier = ctx.member.map(|m| m.tier).unwrap_or(Tier::Base);
        if !e.tiers.is_empty() && !e.tiers.contains(&tier) {
            return Err(Ineligible::Tier);
        }
        let benefits = tier.benefits();
        if self.provides.iter().any(|b| benefits.contains(*b)) {
            return Err(Ineligible::TierBenefit);
        }
        if self.uses_voucher && !benefits.contains(Benefit::UpgradeVoucher) {
            return Err(Ineligible::Tier);
        }
        if let Some(it) = ctx.itinerary {
            if it.departure <= ctx.now {
                return Err(Ineligible::Departed);
            }
            if !e.cabins.is_empty() && !e.cabins.contains(&it.cabin) {
                return Err(Ineligible::Cabin);
            }
            let (domestic, distance) = ctx
                .route
                .unwrap_or_else(|| (it.is_domestic(), it.distance_km()));
            match e.route {
                RouteKind::Any => {}
                RouteKind::Domestic if !domestic => return Err(Ineligible::Route),
                RouteKind::International if domestic => return Err(Ineligible::Route),
                _ => {}
            }
            let days = ctx
                .days_to_departure
                .unwrap_or_else(|| it.days_to_departure(ctx.now));
            if e.min_days_before_departure.is_some_and(|d| days < d as i64)
                || e.max_days_before_departure.is_some_and(|d| days > d as i64)
            {
                return Err(Ineligible::DaysToDeparture);
            }
            if e.min_distance_km.is_some_and(|d| distance < d) {
                return Err(Ineligible::Distance);
            }
            if e.min_passengers.is_some_and(|p| it.passengers < p) {
                return Err(Ineligible::Passengers);
            }
        } else if self.needs_trip() {
            // Rules about a trip cannot hold without one.
            return Err(Ineligible::Route);
        }
        // A points price is paid from the member's balance: the party's
        // price must be covered (a cold start has no balance to pay from).
        let points_due = self
            .points_price_for(ctx.itinerary.map(|i| i.passengers).unwrap_or(1))
            .filter(|p| *p > 0);
        let needs_member = e.min_points.is_some()
            || points_due.is_some()
            || self.uses_voucher
            || e.require_tags != Vec::<String>::new()
            || e.max_spend_to_next_tier.is_some()
            || e.min_days_since_last_flight.is_some()
            || e.min_qualifying_spend.is_some();
        let Some(m) = ctx.member else {
            return if needs_member {
                Err(Ineligible::NeedsMember)
            } else {
                Ok(())
            };
        };
        if e.min_points.is_some_and(|p| m.points < p)
            || points_due.is_some_and(|p| (m.points as u64) < p)
        {
            return Err(Ineligible::Points);
        }
        if !m.tags.contains_all(self.require_tags) || m.tags.intersects(self.exclude_tags) {
            return Err(Ineligible::Tags);
        }
        if let Some(max) = e.max_spend_to_next_tier {
            match ctx.spend_to_next_tier {
                Some(gap) if gap <= max => {}
                _ => return Err(Ineligible::NextTier),
            }
        }
        if let Some(min_days) = e.min_days_since_last_flight {
            let lapsed = match m.last_flight {
                None => true,
                Some(d) => (today.0 - d.0) >= min_days as i32,
            };
            if !lapsed {
                return Err(Ineligible::Recency);
            }
        }
        if e.min_qualifying_spend
            .is_some_and(|s| (m.qualifying_spend_12m as f64) < s)
        {
            return Err(Ineligible::Spend);
        }
        Ok(())
    }

    /// Cash price for a party, if the offer has one.
    pub fn cash_price(&self, passengers: u8) -> Option<Money> {
        self.price.as_ref().map(|p| Money {
            amount: crate::domain::round2(p.amount * self.units(passengers)),
            currency: p.currency.clone(),
        })
    }

    /// Points price for a party, if any.
    pub fn points_price_for(&self, passengers: u8) -> Option<u64> {
        self.points_price
            .map(|p| (p as f64 * self.units(passengers)) as u64)
    }

    /// The part of an inventory `cap` `member` may take on `day`: all of it,
    /// or, when the offer keeps its last units for tiers or value segments
    /// the member is not in (a cold start is in none), the cap less those.
    pub fn cap_for(&self, cap: u32, member: Option<&Member>, day: Day) -> u32 {
        let Some(r) = self.inventory.as_ref().and_then(|i| i.reserve.as_ref()) else {
            return cap;
        };
        let entitled = member.is_some_and(|m| {
            r.tiers.contains(&m.tier)
                || (!r.segments.is_empty()
                    && r.segments.contains(&crate::features::segment(m, day).value))
        });
        if entitled {
            cap
        } else {
            cap.saturating_sub(r.units)
        }
    }

    /// Units sold: the party size for per-passenger offers, else one.
    pub fn units(&self, passengers: u8) -> f64 {
        if self.per_passenger {
            passengers.max(1) as f64
        } else {
            1.0
        }
    }
}

/// A validated catalog. Offers keep the file's order; `index` is their
/// position, used as a dense id by the model and the counters.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Catalog version string from the file.
    pub version: String,
    /// Offers in file order.
    pub offers: Vec<Offer>,
    /// What a point given away costs the airline, CNY (`points_cost_cny`):
    /// expected value subtracts it for points an offer awards, so a policy
    /// cannot win by giving away miles.
    pub cost_per_point: f64,
}

impl Offer {
    /// What one unit of an accept earns the airline before points given
    /// away: the configured `value` of an offer without a cash price, else
    /// the margin.
    #[inline]
    pub fn unit_value(&self) -> f64 {
        self.value.unwrap_or(self.margin)
    }

    /// An accept's value to the airline for `units` units: [`Offer::unit_value`]
    /// less the cost of the points awarded, per unit. This is what an accept
    /// records as `value` and what the ranking maximises (times the
    /// propensity and the business lever, which steers and is no money).
    #[inline]
    pub fn net_value(&self, units: f64, cost_per_point: f64) -> f64 {
        (self.unit_value() - self.points_awarded as f64 * cost_per_point) * units
    }

    /// What the points an accept of `units` units gives away cost the airline, CNY.
    #[inline]
    pub fn points_cost(&self, units: f64, cost_per_point: f64) -> f64 {
        self.points_awarded as f64 * cost_per_point * units
    }

    /// Net value of one accept for the party, weighted by the business
    /// lever: [`Offer::net_value`] × lever (what the ranking maximises).
    #[inline]
    pub fn accept_value(&self, passengers: u8, cost_per_point: f64) -> f64 {
        self.net_value(self.units(passengers), cost_per_point) * self.lever
    }

    /// The units an issued quote was for, read back from its price (a
    /// per-passenger offer's quote is the unit price times the party size):
    /// the cash price when the offer has a positive one, else the points
    /// price, else one.
    pub fn units_quoted(&self, cash: Option<f64>, points: Option<u64>) -> f64 {
        if !self.per_passenger {
            return 1.0;
        }
        let ratio = match (self.price.as_ref(), cash, self.points_price, points) {
            (Some(p), Some(c), _, _) if p.amount > 0.0 => c / p.amount,
            (_, _, Some(pp), Some(q)) if pp > 0 => q as f64 / pp as f64,
            _ => 1.0,
        };
        if ratio.is_finite() {
            ratio.round().clamp(1.0, 255.0)
        } else {
            1.0
        }
    }
}

/// The default catalog, compiled in.
pub const DEFAULT_CATALOG: &str = include_str!("../../../config/catalog.toml");

impl Catalog {
    /// Parses and validates a catalog from TOML text.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let validity = Validity::DEFAULT
            .over(&file.validity_minutes, "validity_minutes")
            .map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut seen = HashSet::new();
        let mut offers = Vec::with_capacity(file.offers.len());
        for (i, spec) in file.offers.into_iter().enumerate() {
            let id = spec.id.clone();
            let invalid = |error: FieldError| CatalogError::Invalid {
                offer: if id.is_empty() {
                    format!("#{i}")
                } else {
                    id.clone()
                },
                error,
            };
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(FieldError::new(
                    "id",
                    "must be 1-64 letters, digits, '-' or '_'",
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(invalid(FieldError::new("id", "duplicate offer id")));
            }
            if let Some(p) = &spec.price {
                p.validate("price").map_err(invalid)?;
            }
            if spec.price.is_none()
                && spec.points_price.is_none()
                && spec.category != Category::CobrandCard
                && spec.category != Category::TierFastTrack
                && spec.category != Category::Retention
            {
                return Err(invalid(FieldError::new(
                    "price",
                    "an offer needs a cash price or a points price",
                )));
            }
            if !spec.margin.is_finite() || spec.margin < 0.0 {
                return Err(invalid(FieldError::new(
                    "margin",
                    "must be a non-negative number",
                )));
            }
            if let Some(v) = spec.value {
                if !v.is_finite() || v < 0.0 {
                    return Err(invalid(FieldError::new(
                        "value",
                        "must be a non-negative number",
                    )));
                }
                if spec.price.as_ref().is_some_and(|p| p.amount > 0.0) {
                    return Err(invalid(FieldError::new(
                        "value",
                        "only an offer without a cash price sets a value (a priced offer's value is its margin)",
                    )));
                }
            }
            if !spec.lever.is_finite() || spec.lever < 0.0 {
                return Err(invalid(FieldError::new(
                    "lever",
                    "must be a non-negative number",
                )));
            }
            let date = |d: &toml::value::Datetime,
                        field: &str|
             -> Result<NaiveDate, CatalogError> {
                match (d.date, d.time) {
                    (Some(dt), None) => {
                        NaiveDate::from_ymd_opt(dt.year as i32, dt.month as u32, dt.day as u32)
                            .ok_or_else(|| invalid(FieldError::new(field, "is not a valid date")))
                    }
                    _ => Err(invalid(FieldError::new(
                        field,
                        "must be a date such as 2026-01-01",
                    ))),
                }
            };
            let valid_from = date(&spec.valid_from, "valid_from")?;
            let valid_to = date(&spec.valid_to, "valid_to")?;
            if valid_to < valid_from {
                return Err(invalid(FieldError::new("valid_to", "is before valid_from")));
            }
            let offer_validity = match spec.validity_minutes {
                None => validity,
                Some(ValiditySpec::InSession(m)) => validity
                    .over(
                        &ValidityTable {
                            checkout: Some(m),
                            kiosk: Some(m),
                            ..Default::default()
                        },
                        "validity_minutes",
                    )
                    .map_err(|_| {
                        invalid(FieldError::new(
                            "validity_minutes",
                            "must be from 1 to 86400 (60 days)",
                        ))
                    })?,
                Some(ValiditySpec::ByChannel(t)) => {
                    validity.over(&t, "validity_minutes").map_err(invalid)?
                }
            };
            if spec.channels.is_empty() {
                return Err(invalid(FieldError::new(
                    "channels",
                    "must name at least one channel",
                )));
            }
            if spec.title.trim().is_empty() {
                return Err(invalid(FieldError::new("title", "must not be empty")));
            }
            let require_tags = Tags::parse(&spec.eligibility.require_tags).map_err(|e| {
                invalid(FieldError::new(
                    format!("eligibility.require_{}", e.field),
                    e.message,
                ))
            })?;
            let exclude_tags = Tags::parse(&spec.eligibility.exclude_tags).map_err(|e| {
                invalid(FieldError::new(
                    format!("eligibility.exclude_{}", e.field),
                    e.message,
                ))
            })?;
            if let Some(inv) = &spec.inventory {
                if inv.cap == 0 {
                    return Err(invalid(FieldError::new(
                        "inventory.cap",
                        "must be at least 1",
                    )));
                }
                if let Some(r) = &inv.reserve {
                    if r.units == 0 || r.units > inv.cap {
                        return Err(invalid(FieldError::new(
                            "inventory.reserve.units",
                            "must be from 1 to the cap",
                        )));
                    }
                    if r.tiers.is_empty() && r.segments.is_empty() {
                        return Err(invalid(FieldError::new(
                            "inventory.reserve",
                            "must name the tiers or value segments the units are kept for",
                        )));
                    }
                }
            }
            offers.push(Offer {
                id: spec.id,
                category: spec.category,
                title: spec.title,
                price: spec.price,
                points_price: spec.points_price,
                points_awarded: spec.points_awarded,
                per_passenger: spec.per_passenger,
                margin: spec.margin,
                value: spec.value,
                lever: spec.lever,
                valid_from: Day::from_date(valid_from),
                valid_to: Day::from_date(valid_to),
                validity: offer_validity,
                channels: spec.channels,
                provides: spec.provides,
                priority: spec.priority,
                eligibility: spec.eligibility,
                require_tags,
                exclude_tags,
                contact: spec.contact,
                inventory: spec.inventory,
                reward_on: spec.reward_on,
                uses_voucher: spec.uses_voucher,
            });
        }
        if offers.is_empty() {
            return Err(CatalogError::Parse("catalog has no offers".into()));
        }
        if !(file.points_cost_cny.is_finite() && (0.0..=10.0).contains(&file.points_cost_cny)) {
            return Err(CatalogError::Parse(
                "points_cost_cny must be from 0 to 10 CNY per point".into(),
            ));
        }
        Ok(Catalog {
            version: file.version,
            cost_per_point: file.points_cost_cny,
            offers,
        })
    }

    /// The compiled-in default catalog.
    pub fn default_catalog() -> Catalog {
        // The default catalog is checked by a unit test; failing here is a build defect.
        Catalog::from_toml(DEFAULT_CATALOG).expect("default catalog parses (tested)")
    }

    /// Finds an offer by id.
    pub fn get(&self, id: &str) -> Option<(usize, &Offer)> {
        self.offers.iter().enumerate().find(|(_, o)| o.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_given_away_cost_expected_value() {
        let c = Catalog::default_catalog();
        assert!(c.cost_per_point > 0.0);
        let booster = c
            .offers
            .iter()
            .find(|o| o.id == "miles-double-trip")
            .unwrap();
        assert!(booster.points_awarded > 0);
        let gross = booster.margin * booster.units(2) * booster.lever;
        let net = booster.accept_value(2, c.cost_per_point);
        let cost = booster.points_awarded as f64 * c.cost_per_point * booster.units(2);
        assert!((gross - net - cost).abs() < 1e-9, "{gross} {net} {cost}");
        // Points at no cost leave the margin as it was.
        assert_eq!(booster.accept_value(2, 0.0), gross);
        let bad = DEFAULT_CATALOG.replace("points_cost_cny = 0.04", "points_cost_cny = -1.0");
        assert!(matches!(
            Catalog::from_toml(&bad),
            Err(CatalogError::Parse(_))
        ));
    }

    #[test]
    fn a_points_price_is_paid_from_the_balance_for_the_whole_party() {
        use crate::domain::{Cabin, Iata, TierThresholds};
        let c = Catalog::default_catalog();
        let (_, o) = c.get("upg-biz-dom-points").unwrap();
        assert!(o.per_passenger);
        let price = o.points_price.unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let now = day.and_hms_opt(9, 0, 0).unwrap().and_utc();
        let mut m = crate::synth::member(1, 1, day, &TierThresholds::default());
        let mut it = Itinerary {
            origin: Iata::from_bytes(*b"PEK"),
            destination: Iata::from_bytes(*b"DLC"),
            departure: now + chrono::Duration::days(5),
            cabin: Cabin::PremiumEconomy,
            fare: Money {
                amount: 900.0,
                currency: "CNY".into(),
            },
            passengers: 1,
        };
        let judge = |m: &Member, it: &Itinerary| {
            o.eligible(&EligibilityContext::new(
                Some(m),
                Some(it),
                Channel::Checkout,
                now,
                None,
            ))
        };
        m.points = price;
        assert_eq!(judge(&m, &it), Ok(()));
        m.points = price - 1;
        assert_eq!(judge(&m, &it), Err(Ineligible::Points));
        // A party of two pays twice the price: min_points alone would let it through.
        it.passengers = 2;
        m.points = price * 2 - 1;
        assert_eq!(judge(&m, &it), Err(Ineligible::Points));
        m.points = price * 2;
        assert_eq!(judge(&m, &it), Ok(()));
        // A cold start has no balance to pay from.
        let cold = EligibilityContext::new(None, Some(&it), Channel::Checkout, now, None);
        assert_eq!(o.eligible(&cold), Err(Ineligible::NeedsMember));
    }

    #[test]
    fn extra_baggage_is_never_sold_to_the_tiers_that_include_it() {
        use crate::domain::{Benefit, Cabin, Iata, TierThresholds};
        let c = Catalog::default_catalog();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let now = day.and_hms_opt(9, 0, 0).unwrap().and_utc();
        let mut m = crate::synth::member(1, 1, day, &TierThresholds::default());
        m.points = 100_000;
        let it = Itinerary {
            origin: Iata::from_bytes(*b"PEK"),
            destination: Iata::from_bytes(*b"SHA"),
            departure: now + chrono::Duration::days(5),
            cabin: Cabin::Economy,
            fare: Money {
                amount: 900.0,
                currency: "CNY".into(),
            },
            passengers: 1,
        };
        let bags: Vec<&Offer> = c
            .offers
            .iter()
            .filter(|o| o.provides.contains(&Benefit::ExtraBaggage))
            .collect();
        assert!(bags.iter().any(|o| o.id == "bag-extra-23kg-dom"));
        for tier in Tier::ALL {
            m.tier = tier;
            let ctx = EligibilityContext::new(Some(&m), Some(&it), Channel::Checkout, now, None);
            let (_, dom) = c.get("bag-extra-23kg-dom").unwrap();
            let includes = tier.benefits().contains(Benefit::ExtraBaggage);
            assert_eq!(includes, tier >= Tier::Gold);
            assert_eq!(
                dom.eligible(&ctx),
                if includes {
                    Err(Ineligible::TierBenefit)
                } else {
                    Ok(())
                },
                "{tier}"
            );
        }
    }

    #[test]
    fn the_last_units_of_a_cap_are_kept_for_the_tiers_or_segments_named() {
        use crate::domain::TierThresholds;
        use crate::features::ValueSegment;
        let c = Catalog::default_catalog();
        let (_, o) = c.get("upg-biz-intl-cash").unwrap();
        let r = o.inventory.as_ref().unwrap().reserve.as_ref().unwrap();
        assert_eq!((o.inventory.as_ref().unwrap().cap, r.units), (4, 2));
        let day = Day::from_date(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        let mut m = crate::synth::member(1, 1, day.to_date(), &TierThresholds::default());
        for tier in Tier::ALL {
            m.tier = tier;
            let want = if r.tiers.contains(&tier) { 4 } else { 2 };
            assert_eq!(o.cap_for(4, Some(&m), day), want, "{tier}");
        }
        assert_eq!(o.cap_for(4, None, day), 2, "a cold start is in no tier");
        // An offer without a reserve: the whole cap for everyone.
        let (_, plain) = c.get("upg-first-intl-cash").unwrap();
        assert_eq!(plain.cap_for(2, None, day), 2);
        // Value segments, and bad reserves refused with the field.
        let seg = DEFAULT_CATALOG.replace(
            "reserve = { units = 2, tiers = [\"platinum\", \"diamond\"] }",
            "reserve = { units = 1, segments = [\"high-value\"] }",
        );
        let c2 = Catalog::from_toml(&seg).unwrap();
        let (_, o2) = c2.get("upg-biz-intl-cash").unwrap();
        m.tier = Tier::Diamond;
        let high = crate::features::segment(&m, day).value == ValueSegment::HighValue;
        assert_eq!(o2.cap_for(4, Some(&m), day), if high { 4 } else { 3 });
        for (bad, field) in [
            (
                "reserve = { units = 5, tiers = [\"gold\"] }",
                "inventory.reserve.units",
            ),
            ("reserve = { units = 1 }", "inventory.reserve"),
        ] {
            let text = DEFAULT_CATALOG.replace(
                "reserve = { units = 2, tiers = [\"platinum\", \"diamond\"] }",
                bad,
            );
            let e = Catalog::from_toml(&text).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let unknown = DEFAULT_CATALOG.replace(
            "tiers = [\"platinum\", \"diamond\"] }",
            "segments = [\"vip\"] }",
        );
        assert!(Catalog::from_toml(&unknown).is_err());
    }

    #[test]
    fn value_is_the_margin_net_of_points_or_the_configured_value() {
        let c = Catalog::default_catalog();
        let (_, seat) = c.get("seat-extra-legroom").unwrap();
        assert_eq!(seat.net_value(2.0, c.cost_per_point), seat.margin * 2.0);
        let (_, booster) = c.get("miles-double-trip").unwrap();
        let units = booster.units(3);
        assert!(
            (booster.net_value(units, c.cost_per_point)
                - (booster.margin - booster.points_awarded as f64 * c.cost_per_point) * units)
                .abs()
                < 1e-9
        );
        assert_eq!(
            booster.units_quoted(Some(booster.price.as_ref().unwrap().amount * 3.0), None),
            if booster.per_passenger { 3.0 } else { 1.0 }
        );
        // A configured value replaces the margin of an offer without a cash price...
        let text =
            DEFAULT_CATALOG.replacen("margin = 1200.0\n", "margin = 1200.0\nvalue = 1500.0\n", 1);
        assert_ne!(text, DEFAULT_CATALOG);
        let with_value = Catalog::from_toml(&text).unwrap();
        let (_, card) = with_value.get("cobrand-platinum").unwrap();
        assert_eq!(card.unit_value(), 1500.0);
        assert_eq!(
            card.net_value(1.0, with_value.cost_per_point),
            1500.0 - card.points_awarded as f64 * with_value.cost_per_point
        );
        // ...and is refused on a priced offer.
        let priced =
            DEFAULT_CATALOG.replacen("margin = 300.0\n", "margin = 300.0\nvalue = 10.0\n", 1);
        let e = Catalog::from_toml(&priced).unwrap_err();
        assert!(e.to_string().contains("value"), "{e}");
    }

    #[test]
    fn default_catalog_parses_and_covers_every_category() {
        let c = Catalog::default_catalog();
        assert!((30..=60).contains(&c.offers.len()), "{}", c.offers.len());
        for cat in Category::ALL {
            assert!(
                c.offers.iter().any(|o| o.category == cat),
                "no offer of category {cat:?}"
            );
        }
    }

    #[test]
    fn validity_is_set_per_channel_with_per_offer_overrides() {
        let c = Catalog::default_catalog();
        // An offer without a setting of its own takes the catalog's table.
        let head = &DEFAULT_CATALOG[..DEFAULT_CATALOG.find("\n[[offer]]").unwrap()];
        let one = |offer: &str| {
            Catalog::from_toml(&format!(
                "{head}\n[[offer]]\nid = \"x\"\ncategory = \"wifi\"\ntitle = \"Wi-Fi\"\n\
                 price = {{ amount = 30.0, currency = \"CNY\" }}\nmargin = 20.0\n\
                 valid_from = 2025-01-01\nvalid_to = 2030-12-31\n\
                 channels = [\"checkout\", \"app\", \"email\"]\n{offer}"
            ))
        };
        let plain = one("").unwrap();
        assert_eq!(
            plain.offers[0].validity,
            Validity([30, 4320, 10080, 30, 4320])
        );
        // One number: the in-session channels (checkout, kiosk) only.
        let n = one("validity_minutes = 90\n").unwrap();
        assert_eq!(n.offers[0].validity, Validity([90, 4320, 10080, 90, 4320]));
        // A table: the channels it names.
        let t = one("validity_minutes = { email = 1440, checkout = 20 }\n").unwrap();
        assert_eq!(t.offers[0].validity, Validity([20, 4320, 1440, 30, 4320]));
        // Out of range or unknown channels are refused, naming the field.
        let e = one("validity_minutes = { email = 0 }\n").unwrap_err();
        assert!(e.to_string().contains("validity_minutes"), "{e}");
        assert!(one("validity_minutes = 0\n").is_err());
        assert!(one("validity_minutes = { fax = 10 }\n").is_err());
        let e = Catalog::from_toml(&DEFAULT_CATALOG.replace("email = 10080\n", "email = 90000\n"))
            .unwrap_err();
        assert!(e.to_string().contains("validity_minutes.email"), "{e}");
        // Without a catalog table the built-in defaults hold.
        let start = DEFAULT_CATALOG.find("[validity_minutes]").unwrap();
        let end = start + DEFAULT_CATALOG[start..].find("\n\n").unwrap();
        let bare = format!("{}{}", &DEFAULT_CATALOG[..start], &DEFAULT_CATALOG[end..]);
        let bare = Catalog::from_toml(&bare).unwrap();
        for o in &bare.offers {
            for ch in [Channel::App, Channel::Email, Channel::Sms] {
                assert_eq!(o.validity.minutes(ch), Validity::DEFAULT.minutes(ch));
            }
        }
        // The default catalog's table is the built-in default, written out.
        assert_eq!(Validity::DEFAULT, plain.offers[0].validity);
        assert!(c
            .offers
            .iter()
            .all(|o| o.validity.minutes(Channel::Email) == 10080));
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_field() {
        let e = Catalog::from_toml("version = \"x\"\n[[offer]]\nid = \"a\"\n").unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
        let dup = DEFAULT_CATALOG.to_string()
            + "\n"
            + &DEFAULT_CATALOG[DEFAULT_CATALOG.find("\n[[offer]]").unwrap()..];
        let e = Catalog::from_toml(&dup).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }
}
