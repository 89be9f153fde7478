//! Features: a member and the request context become a fixed-length vector
//! of `f32` that the propensity model scores, plus the marketers'
//! segmentation (RFM, customer lifetime value, value segment, business or
//! leisure).
//!
//! The order of [`FEATURE_NAMES`] is the contract with model files: a model
//! names the features it was trained on and is refused if they differ.

use chrono::{DateTime, Datelike, Utc};

use crate::domain::{Cabin, Channel, Day, Itinerary, Member, Tier, TierThresholds};

/// Number of features.
pub const N_FEATURES: usize = 26;

/// Feature names, in vector order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "recency_years",
    "frequency_log",
    "monetary_log",
    "clv_log",
    "tier_silver",
    "tier_gold",
    "tier_platinum",
    "tier_diamond",
    "next_tier_gap",
    "points_log",
    "tenure_years",
    "tag_business",
    "tag_leisure",
    "tag_family",
    "days_to_departure_log",
    "international",
    "distance_1000km",
    "cabin_premium_economy",
    "cabin_business_or_first",
    "party_extra",
    "fare_log",
    "channel_app",
    "channel_email",
    "channel_kiosk_or_sms",
    "cold_start",
    "birthday_month",
];

/// A feature vector.
pub type FeatureVector = [f32; N_FEATURES];

/// Recency, frequency, monetary value and lifetime value of a member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segmentation {
    /// Days since the last flight (None: never flown).
    pub recency_days: Option<i32>,
    /// Flights in 12 months.
    pub frequency: u16,
    /// Qualifying spend in 12 months, CNY.
    pub monetary: f64,
    /// Customer lifetime value, CNY: average spend per flight x flights a
    /// year x expected remaining years, less marketing cost over those years.
    pub clv: f64,
    /// Value segment from the CLV.
    pub value: ValueSegment,
    /// Business or leisure traveller.
    pub business: bool,
}

/// Marketers' value segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ValueSegment {
    /// CLV of 100,000 CNY or more.
    HighValue,
    /// CLV of 15,000 CNY or more.
    Potential,
    /// Below.
    LowValue,
}

impl ValueSegment {
    /// Name for reasons and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueSegment::HighValue => "high-value",
            ValueSegment::Potential => "potential",
            ValueSegment::LowValue => "low-value",
        }
    }
}

/// Yearly marketing cost per member assumed by the CLV, CNY.
pub const MARKETING_COST_PER_YEAR: f64 = 60.0;

/// Segments a member at `today`.
pub fn segment(m: &Member, today: Day) -> Segmentation {
    let recency_days = m.last_flight.map(|d| (today.0 - d.0).max(0));
    let freq = m.flights_12m() as f64;
    let monetary = m.qualifying_spend_12m as f64;
    // Expected remaining years from a yearly retention that falls with recency
    // and rises with tier: r in [0.3, 0.95], years = r / (1 - r).
    let rec = recency_days.map(|d| d as f64).unwrap_or(1000.0);
    let tier_bonus = m.tier as u8 as f64 * 0.04;
    let retention = (0.88 + tier_bonus - rec / 365.0 * 0.25).clamp(0.3, 0.95);
    let years = retention / (1.0 - retention);
    let avg_spend = if freq > 0.0 { monetary / freq } else { 0.0 };
    let clv = avg_spend * freq * years - MARKETING_COST_PER_YEAR * years;
    let value = if clv >= 100_000.0 {
        ValueSegment::HighValue
    } else if clv >= 15_000.0 {
        ValueSegment::Potential
    } else {
        ValueSegment::LowValue
    };
    let business = m.tags.has("business")
        || m.tags.has("corporate")
        || (!m.tags.has("leisure") && freq >= 12.0);
    Segmentation {
        recency_days,
        frequency: m.flights_12m(),
        monetary,
        clv,
        value,
        business,
    }
}

/// Qualifying spend still needed for the next tier, None at the top.
pub fn spend_to_next_tier(m: &Member, th: &TierThresholds) -> Option<f64> {
    m.tier
        .next()
        .map(|next| (th.of(next) - m.qualifying_spend_12m as f64).max(0.0))
}

/// The gap to the next tier in whole CNY, as a member reads it: the
/// threshold less the spend rounded to whole CNY, so that the figures shown
/// add up (2,666 of 10,000 is 7,334 from the next tier, not the 7,335 that
/// rounding the fractional gap up would say); at least 1 while the tier is
/// not reached, 0 once it is.
pub fn whole_cny_gap(spend: f64, gap: f64) -> u64 {
    if gap <= 0.0 {
        return 0;
    }
    let threshold = (spend + gap).round();
    (threshold - spend.round()).max(1.0) as u64
}

/// Context of a decision beyond the member.
#[derive(Debug, Clone, Copy)]
pub struct DecisionContext<'a> {
    /// Itinerary being booked (None for campaigns without a trip).
    pub itinerary: Option<&'a Itinerary>,
    /// Channel.
    pub channel: Channel,
    /// Decision instant.
    pub now: DateTime<Utc>,
}

fn ln1p(x: f64) -> f32 {
    x.max(0.0).ln_1p() as f32
}

/// Builds the feature vector. `member` None means cold start: member
/// features sit at neutral values and `cold_start` is 1.
pub fn build(
    member: Option<&Member>,
    ctx: &DecisionContext<'_>,
    th: &TierThresholds,
) -> FeatureVector {
    let mut x = [0f32; N_FEATURES];
    let today = Day::of(ctx.now);
    if let Some(m) = member {
        let s = segment(m, today);
        x[0] = s
            .recency_days
            .map(|d| d as f32 / 365.0)
            .unwrap_or(3.0)
            .min(3.0);
        x[1] = ln1p(m.flights_12m() as f64);
        x[2] = ln1p(m.qualifying_spend_12m as f64) / 10.0;
        x[3] = ln1p(s.clv) / 10.0;
        match m.tier {
            Tier::Base => {}
            Tier::Silver => x[4] = 1.0,
            Tier::Gold => x[5] = 1.0,
            Tier::Platinum => x[6] = 1.0,
            Tier::Diamond => x[7] = 1.0,
        }
        // Closeness to the next tier: 1 at the threshold, 0 far away or at the top.
        x[8] = spend_to_next_tier(m, th)
            .map(|gap| (1.0 - gap / 20_000.0).max(0.0) as f32)
            .unwrap_or(0.0);
        x[9] = ln1p(m.points as f64) / 10.0;
        x[10] = ((today.0 - m.joined.0).max(0) as f32 / 365.0).min(30.0) / 10.0;
        x[11] = m.tags.has("business") as u8 as f32;
        x[12] = m.tags.has("leisure") as u8 as f32;
        x[13] = m.tags.has("family") as u8 as f32;
        x[25] = (ctx.now.month() as u8 == m.birth_month) as u8 as f32;
    } else {
        x[0] = 1.0;
        x[24] = 1.0;
    }
    if let Some(it) = ctx.itinerary {
        x[14] = ln1p(it.days_to_departure(ctx.now) as f64) / 3.0;
        x[15] = (!it.is_domestic()) as u8 as f32;
        x[16] = (it.distance_km() / 1000.0) as f32;
        match it.cabin {
            Cabin::Economy => {}
            Cabin::PremiumEconomy => x[17] = 1.0,
            Cabin::Business | Cabin::First => x[18] = 1.0,
        }
        x[19] = it.passengers.saturating_sub(1) as f32;
        x[20] = ln1p(it.fare.amount / it.passengers.max(1) as f64) / 10.0;
    }
    match ctx.channel {
        Channel::Checkout => {}
        Channel::App => x[21] = 1.0,
        Channel::Email => x[22] = 1.0,
        Channel::Kiosk | Channel::Sms => x[23] = 1.0,
    }
    x
}

/// The feature vector of a checkout: `member` (None: cold start) booking
/// `itinerary` at `now`.
pub fn for_checkout(
    member: Option<&Member>,
    itinerary: &Itinerary,
    now: DateTime<Utc>,
    th: &TierThresholds,
) -> FeatureVector {
    let ctx = DecisionContext {
        itinerary: Some(itinerary),
        channel: Channel::Checkout,
        now,
    };
    build(member, &ctx, th)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Consent, Iata, Tags};

    fn member(tier: Tier, spend: f32) -> Member {
        Member {
            qualifying_spend_12m: spend,
            points: 12_000,
            last_flight: Day::parse("2026-10-01"),
            joined: Day::parse("2015-03-01").unwrap(),
            history: crate::domain::MonthlyHistory::spread(spend as f64, 14),
            tags: Tags::parse(&["business"]).unwrap(),
            home_airport: Iata::parse("PEK").unwrap(),
            tier,
            birth_month: 11,
            consent: Consent::new(true, false, true),
        }
    }

    #[test]
    fn segmentation_is_sensible() {
        let today = Day::parse("2026-11-23").unwrap();
        let rich = segment(&member(Tier::Diamond, 150_000.0), today);
        let poor = segment(&member(Tier::Base, 2_000.0), today);
        assert_eq!(rich.value, ValueSegment::HighValue);
        assert_eq!(poor.value, ValueSegment::LowValue);
        assert!(rich.clv > poor.clv);
        assert!(rich.business);
    }

    #[test]
    fn whole_cny_gap_adds_up() {
        // 2,665.6 reads as 2,666; 2,666 + 7,334 = 10,000.
        assert_eq!(whole_cny_gap(2_665.6, 10_000.0 - 2_665.6), 7_334);
        assert_eq!(whole_cny_gap(2_666.0, 7_334.0), 7_334);
        // 2,665.4 reads as 2,665; 2,665 + 7,335 = 10,000.
        assert_eq!(whole_cny_gap(2_665.4, 10_000.0 - 2_665.4), 7_335);
        // Not reached yet is never "0 from".
        assert_eq!(whole_cny_gap(9_999.7, 0.3), 1);
        assert_eq!(whole_cny_gap(10_000.0, 0.0), 0);
    }

    #[test]
    fn next_tier_gap() {
        let th = TierThresholds::default();
        assert_eq!(
            spend_to_next_tier(&member(Tier::Gold, 79_000.0), &th),
            Some(1_000.0)
        );
        assert_eq!(spend_to_next_tier(&member(Tier::Diamond, 1.0), &th), None);
    }
}
