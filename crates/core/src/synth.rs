//! The synthetic world: a realistic member population, itineraries and a
//! hidden ground-truth response model per offer.
//!
//! Everything is deterministic for a seed. Member `i` is drawn from its own
//! RNG stream (seed, i), so the first N members of a population of 10 million
//! are the same as a population of N. The ground truth is what simulations
//! and the model card measure against; the engine itself never reads it.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{LogNormal, Poisson};

use crate::catalog::Offer;
use crate::domain::airports::AIRPORTS;
use crate::domain::{
    Cabin, Category, Channel, Consent, Day, Iata, Itinerary, Member, MemberRecord, Money, Tags,
    Tier, TierThresholds, TAGS,
};

/// Id of member number `i` (0-based): `M00000001` and up.
pub fn member_id(i: u64) -> String {
    format!("M{:08}", i + 1)
}

/// Per-stream RNG: a seed and a stream number give an independent generator.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Tier shares of the population (base, silver, gold, platinum, diamond).
pub const TIER_SHARES: [f64; 5] = [0.70, 0.16, 0.09, 0.035, 0.015];

/// Generates member `i` of the population of `seed` as of day `as_of`.
pub fn member(seed: u64, i: u64, as_of: NaiveDate, th: &TierThresholds) -> Member {
    let mut rng = stream_rng(seed, i);
    let tier_dist = WeightedIndex::new(TIER_SHARES).expect("static weights");
    let tier = Tier::ALL[tier_dist.sample(&mut rng)];
    // Qualifying spend: within the tier's band, heavy-tailed above diamond;
    // 12% hold a tier their spend no longer earns (status kept from last year).
    let lo = th.of(tier);
    let hi = tier.next().map(|n| th.of(n)).unwrap_or(lo * 4.0);
    let mut spend = match tier {
        Tier::Base => {
            let s: f64 = LogNormal::new(7.6, 1.1).expect("valid").sample(&mut rng);
            s.min(hi - 1.0)
        }
        Tier::Diamond => lo + LogNormal::new(10.3, 0.9).expect("valid").sample(&mut rng),
        _ => lo + (hi - lo) * rng.gen::<f64>().powf(1.4),
    };
    if tier != Tier::Base && rng.gen_bool(0.12) {
        spend = lo * rng.gen_range(0.55..0.98);
    }
    let avg_fare = rng.gen_range(700.0..2600.0) * (1.0 + tier as u8 as f64 * 0.25);
    let mean_flights = (spend / avg_fare).max(0.05);
    let flights_12m = Poisson::new(mean_flights)
        .map(|p| p.sample(&mut rng) as u16)
        .unwrap_or(0)
        .min(400);
    let as_of_day = Day::from_date(as_of);
    let last_flight = if flights_12m > 0 {
        let mean_gap = 365.0 / flights_12m as f64;
        let gap = (-(rng.gen::<f64>().max(1e-9)).ln() * mean_gap).min(364.0);
        Some(Day(as_of_day.0 - gap as i32))
    } else if rng.gen_bool(0.85) {
        Some(Day(as_of_day.0 - rng.gen_range(366..1500)))
    } else {
        None
    };
    let tenure_days = rng.gen_range(30..(22 * 365));
    let mut joined = Day(as_of_day.0 - tenure_days);
    if let Some(lf) = last_flight {
        joined = joined.min(Day(lf.0 - 1));
    }
    let points = (spend * rng.gen_range(0.4..2.2) * (1.0 + tier as u8 as f64 * 0.3)
        + LogNormal::new(6.5, 1.5).expect("valid").sample(&mut rng))
    .min(4_000_000.0) as u32;
    let weights: Vec<f64> = AIRPORTS.iter().map(|a| a.member_weight).collect();
    let home = AIRPORTS[WeightedIndex::new(&weights)
        .expect("weights")
        .sample(&mut rng)]
    .code;
    let email = rng.gen_bool(0.68);
    let sms = rng.gen_bool(if email { 0.5 } else { 0.2 });
    let app = rng.gen_bool(if email { 0.6 } else { 0.35 });
    let mut tags = Tags::default();
    let p_business = (0.08 + flights_12m as f64 / 40.0 + tier as u8 as f64 * 0.08).min(0.85);
    let tag_ix = |name: &str| TAGS.iter().position(|t| *t == name).unwrap_or(0);
    if rng.gen_bool(p_business) {
        tags.insert(tag_ix("business"));
        if rng.gen_bool(0.3) {
            tags.insert(tag_ix("corporate"));
        }
    } else {
        tags.insert(tag_ix("leisure"));
    }
    for (name, p) in [
        ("family", 0.25),
        ("student", 0.05),
        ("senior", 0.08),
        ("luxury", 0.04 + tier as u8 as f64 * 0.03),
        ("budget", 0.12),
        ("frequent_international", 0.06 + tier as u8 as f64 * 0.05),
        ("golfer", 0.03 + tier as u8 as f64 * 0.02),
        ("foodie", 0.10),
        ("cobrand_holder", 0.07 + tier as u8 as f64 * 0.06),
    ] {
        if rng.gen_bool(p.min(0.95)) {
            tags.insert(tag_ix(name));
        }
    }
    Member {
        qualifying_spend_12m: spend as f32,
        history: crate::domain::MonthlyHistory::spread(spend as f32 as f64, flights_12m),
        points,
        last_flight,
        joined,
        tags,
        home_airport: home,
        tier,
        birth_month: rng.gen_range(1..=12),
        consent: Consent::new(email, sms, app),
    }
}

/// Member `i` as an NDJSON record.
pub fn member_record(seed: u64, i: u64, as_of: NaiveDate, th: &TierThresholds) -> MemberRecord {
    MemberRecord::from_member(&member_id(i), &member(seed, i, as_of, th))
}

/// Member `i` with a dated monthly history over the 12 months ending with
/// the month of `as_of`: the same member as [`member`] (its 12-month totals,
/// to the history's unit) with spend and flights spread unevenly over the
/// months, the month of the last flight holding at least one flight when it
/// is in the window. Drawn from a stream of its own, so [`member`] is
/// unchanged.
pub fn member_monthly(seed: u64, i: u64, as_of: NaiveDate, th: &TierThresholds) -> Member {
    let mut m = member(seed, i, as_of, th);
    let mut rng = stream_rng(seed ^ 0x6d6f_6e74_686c_7921, i);
    let now = crate::domain::month_of(Day::from_date(as_of));
    let oldest = now.saturating_sub(11);
    let weights: Vec<f64> = (0..12).map(|_| rng.gen_range(0.2..1.8)).collect();
    let dist = WeightedIndex::new(&weights).expect("positive weights");
    let mut flights = [0u32; 12];
    let total_flights = m.flights_12m() as u32;
    let last = m
        .last_flight
        .map(crate::domain::month_of)
        .filter(|lm| (oldest..=now).contains(lm));
    let mut left = total_flights;
    if let (Some(lm), true) = (last, left > 0) {
        flights[(lm - oldest) as usize] += 1;
        left -= 1;
    }
    for _ in 0..left {
        flights[dist.sample(&mut rng)] += 1;
    }
    let sum_w: f64 = weights.iter().sum();
    let spend = m.qualifying_spend_12m as f64;
    let entries: Vec<_> = (0..12u16)
        .map(|k| {
            let share = weights[k as usize] / sum_w;
            (
                oldest + k,
                spend * share,
                flights[k as usize].min(255) as u8,
            )
        })
        .collect();
    m.history = crate::domain::MonthlyHistory::from_months(&entries);
    m.refresh_totals();
    m
}

/// A plausible itinerary for a member, departing after `now`.
pub fn itinerary<R: Rng>(rng: &mut R, m: Option<&Member>, now: DateTime<Utc>) -> Itinerary {
    let cn: Vec<&crate::domain::airports::Airport> =
        AIRPORTS.iter().filter(|a| a.country == "CN").collect();
    let origin = match m {
        Some(m) if rng.gen_bool(0.8) => m.home_airport,
        _ => cn[rng.gen_range(0..cn.len())].code,
    };
    let business = m.is_some_and(|m| m.tags.has("business"));
    let intl_p = if m.is_some_and(|m| m.tags.has("frequent_international")) {
        0.6
    } else {
        0.22
    };
    let destination = loop {
        let pool: Vec<&crate::domain::airports::Airport> = if rng.gen_bool(intl_p) {
            AIRPORTS.iter().filter(|a| a.country != "CN").collect()
        } else {
            cn.clone()
        };
        let d = pool[rng.gen_range(0..pool.len())].code;
        if d != origin {
            break d;
        }
    };
    let days = (-(rng.gen::<f64>().max(1e-9)).ln() * if business { 6.0 } else { 21.0 }).min(300.0);
    let departure = now + Duration::minutes((days * 1440.0) as i64 + rng.gen_range(90..720));
    let tier = m.map(|m| m.tier as u8).unwrap_or(0) as f64;
    let r: f64 = rng.gen();
    let cabin = if r < 0.02 + tier * 0.01 {
        Cabin::First
    } else if r < 0.10 + tier * 0.05 + business as u8 as f64 * 0.05 {
        Cabin::Business
    } else if r < 0.18 + tier * 0.06 {
        Cabin::PremiumEconomy
    } else {
        Cabin::Economy
    };
    let family = m.is_some_and(|m| m.tags.has("family"));
    let passengers: u8 = if family && rng.gen_bool(0.6) {
        rng.gen_range(2..=5)
    } else if rng.gen_bool(0.15) {
        2
    } else {
        1
    };
    let dist = crate::domain::airports::distance_km(origin, destination).unwrap_or(1000.0);
    let cabin_mult = match cabin {
        Cabin::Economy => 1.0,
        Cabin::PremiumEconomy => 1.7,
        Cabin::Business => 3.5,
        Cabin::First => 6.0,
    };
    let fare = (300.0 + dist * 0.75) * cabin_mult * rng.gen_range(0.7..1.4) * passengers as f64;
    Itinerary {
        origin,
        destination,
        departure,
        cabin,
        fare: Money {
            amount: crate::domain::round2(fare),
            currency: "CNY".into(),
        },
        passengers,
    }
}

/// A channel drawn with checkout traffic dominating.
/// One simulated checkout, as training and the simulations draw it: a
/// member from `members`, a time within `minutes` after `start`, an
/// itinerary and a channel (drawn from `rng` in that order, which the
/// shipped model's reproducibility relies on), and the features the engine
/// builds for it.
pub struct Checkout<'m> {
    /// The member.
    pub member: &'m Member,
    /// When.
    pub now: DateTime<Utc>,
    /// The trip.
    pub itinerary: crate::domain::Itinerary,
    /// Where the decision is asked for.
    pub channel: Channel,
    /// The features of member and context.
    pub x: crate::features::FeatureVector,
}

impl<'m> Checkout<'m> {
    /// Draws one checkout.
    pub fn draw<R: Rng>(
        rng: &mut R,
        members: &'m [Member],
        start: DateTime<Utc>,
        minutes: i64,
        th: &TierThresholds,
    ) -> Checkout<'m> {
        let member = &members[rng.gen_range(0..members.len())];
        let now = start + Duration::minutes(rng.gen_range(0..minutes));
        let itinerary = itinerary(rng, Some(member), now);
        let channel = channel(rng);
        let ctx = crate::features::DecisionContext {
            itinerary: Some(&itinerary),
            channel,
            now,
        };
        let x = crate::features::build(Some(member), &ctx, th);
        Checkout {
            member,
            now,
            itinerary,
            channel,
            x,
        }
    }

    /// The eligibility context of this checkout.
    pub fn eligibility(&self, th: &TierThresholds) -> crate::catalog::EligibilityContext<'_> {
        crate::catalog::EligibilityContext::new(
            Some(self.member),
            Some(&self.itinerary),
            self.channel,
            self.now,
            crate::features::spend_to_next_tier(self.member, th),
        )
    }
}

pub fn channel<R: Rng>(rng: &mut R) -> Channel {
    let r: f64 = rng.gen();
    if r < 0.70 {
        Channel::Checkout
    } else if r < 0.85 {
        Channel::App
    } else if r < 0.95 {
        Channel::Email
    } else {
        Channel::Kiosk
    }
}

/// The hidden ground-truth response model: the true probability that a
/// member accepts an offer in a context. Deliberately not a logistic
/// regression on the engine's features (thresholds, interactions), so a
/// learned model can be measured against it honestly.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    seed: u64,
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl GroundTruth {
    /// The ground truth of a synthetic world.
    pub fn new(seed: u64) -> GroundTruth {
        GroundTruth { seed }
    }

    /// Per-offer taste shift, fixed for (seed, offer id), in about [-0.5, 0.5].
    fn offer_shift(&self, id: &str) -> f64 {
        let h = fnv1a(id) ^ self.seed.wrapping_mul(0x9E3779B97F4A7C15);
        ((h >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    /// True accept probability.
    pub fn probability(
        &self,
        offer: &Offer,
        m: Option<&Member>,
        it: Option<&Itinerary>,
        channel: Channel,
        now: DateTime<Utc>,
        th: &TierThresholds,
    ) -> f64 {
        let today = Day::of(now);
        let business = m.is_some_and(|m| m.tags.has("business"));
        let leisure = m.is_some_and(|m| m.tags.has("leisure"));
        let family = m.is_some_and(|m| m.tags.has("family"));
        let tier = m.map(|m| m.tier as u8 as f64).unwrap_or(0.0);
        let spend = m.map(|m| m.qualifying_spend_12m as f64).unwrap_or(0.0);
        let lspend = (spend + 1.0).ln();
        let points = m.map(|m| m.points as f64).unwrap_or(0.0);
        let recency = m
            .and_then(|m| m.last_flight)
            .map(|d| (today.0 - d.0) as f64)
            .unwrap_or(900.0);
        let intl = it.is_some_and(|i| !i.is_domestic());
        let dist = it.map(|i| i.distance_km()).unwrap_or(0.0);
        let days = it.map(|i| i.days_to_departure(now) as f64).unwrap_or(30.0);
        let pax = it.map(|i| i.passengers as f64).unwrap_or(1.0);
        let cabin = it.map(|i| i.cabin).unwrap_or(Cabin::Economy);
        let gap = m
            .and_then(|m| crate::features::spend_to_next_tier(m, th))
            .unwrap_or(1e9);
        let mut z = self.offer_shift(&offer.id);
        z += match offer.category {
            Category::Upgrade => {
                let mut u = -3.3
                    + 0.9 * business as u8 as f64
                    + 0.45 * (dist / 1000.0 + 1.0).ln()
                    + 0.12 * (lspend - 8.0).max(0.0);
                if cabin == Cabin::PremiumEconomy {
                    u += 0.5;
                }
                if days < 3.0 {
                    u += 0.45;
                }
                if business && intl {
                    u += 0.4;
                }
                if offer.points_price.is_some() {
                    u += 0.5 * ((points + 1.0) / 60_000.0).ln().clamp(-1.0, 1.5);
                }
                u - 0.25 * (pax - 1.0)
            }
            Category::Lounge => {
                -2.9 + 0.9 * intl as u8 as f64
                    + 0.6 * business as u8 as f64
                    + if days <= 1.0 { 0.5 } else { 0.0 }
                    + 0.3 * (tier == 1.0) as u8 as f64
                    + 0.4 * family as u8 as f64 * (pax >= 3.0) as u8 as f64
            }
            Category::PartnerBundle => {
                -3.4 + 0.7 * leisure as u8 as f64
                    + 0.7 * family as u8 as f64
                    + 0.3 * intl as u8 as f64
                    + 0.15 * (days / 7.0).min(3.0)
            }
            Category::Baggage => {
                -2.7 + 0.5 * family as u8 as f64
                    + 0.3 * (pax - 1.0).min(3.0)
                    + 0.7 * intl as u8 as f64
                    - 0.5 * business as u8 as f64
            }
            Category::Seat => {
                -2.5 + if dist > 2000.0 { 0.5 } else { 0.0 }
                    + 0.5 * business as u8 as f64
                    + 0.9 * family as u8 as f64 * (pax >= 2.0) as u8 as f64
            }
            Category::Wifi => -3.0 + 1.0 * business as u8 as f64 + 0.25 * (dist / 1000.0).min(8.0),
            Category::MilesBooster => {
                -3.3 + if gap < 10_000.0 { 0.8 } else { 0.0 }
                    + 0.2 * ((points + 1.0).ln() - 8.0).max(0.0)
            }
            Category::TierFastTrack => -2.4 + 2.2 * (1.0 - gap / 10_000.0).clamp(0.0, 1.0),
            Category::Retention => {
                -2.6 + 0.35 * (lspend - 9.0).max(0.0) - 0.5 * (recency / 365.0 - 0.5).max(0.0)
                    + 0.2 * tier
            }
            Category::CobrandCard => {
                -4.1 + 0.25 * (lspend - 8.0).max(0.0)
                    + 0.3 * business as u8 as f64
                    + if m.is_some_and(|m| (today.0 - m.joined.0) > 3 * 365) {
                        0.4
                    } else {
                        0.0
                    }
            }
        };
        z += match channel {
            Channel::Checkout => 0.0,
            Channel::App => -0.3,
            Channel::Email => -0.8,
            Channel::Kiosk => -0.2,
            Channel::Sms => -1.2,
        };
        if let Some(m) = m {
            if m.birth_month as u32 == chrono::Datelike::month(&now) {
                z += 0.3;
            }
        }
        1.0 / (1.0 + (-z).exp())
    }
}

/// The hidden loyalty response: how much an accepted retention or tier
/// fast-track offer raises a member's chance to fly again within the loyalty
/// window, in probability (0.15 = 15 points). The engine never reads it;
/// simulations check that the experiment report finds it.
pub const LOYALTY_RESPONSE: f64 = 0.15;

/// Whether accepting an offer of this category moves the hidden loyalty
/// response (retention and tier fast-track offers do).
pub fn moves_loyalty(category: Category) -> bool {
    matches!(category, Category::Retention | Category::TierFastTrack)
}

/// A member's hidden flying behaviour over a window after a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlyAgain {
    /// True chance to fly at least once in the window.
    pub probability: f64,
    /// Expected flights beyond the first, given at least one.
    pub extra_flights: f64,
    /// Qualifying spend per flight.
    pub spend_per_flight: f64,
}

impl FlyAgain {
    /// Expected flights in the window.
    pub fn expected_flights(&self) -> f64 {
        self.probability * (1.0 + self.extra_flights)
    }

    /// Draws the flights flown in the window: none with probability
    /// `1 − probability`, else one plus a Poisson count of mean
    /// `extra_flights`.
    pub fn draw<R: Rng>(&self, rng: &mut R) -> u16 {
        if !rng.gen_bool(self.probability.clamp(0.0, 1.0)) {
            return 0;
        }
        let extra = Poisson::new(self.extra_flights.max(1e-9))
            .map(|p| p.sample(rng))
            .unwrap_or(0.0);
        1 + extra.min(1_000.0) as u16
    }
}

impl GroundTruth {
    /// The member's true flying behaviour over `window_days` days after
    /// `today`, having accepted a retention or fast-track offer (`moved`)
    /// or not: the chance to fly again rises with the member's flights of
    /// the last 12 months and falls with the time since the last flight (at
    /// most 0.8), and an accepted offer adds [`LOYALTY_RESPONSE`] to it.
    pub fn fly_again(&self, m: &Member, today: Day, window_days: u32, moved: bool) -> FlyAgain {
        let rate = m.flights_12m() as f64 / 365.0 * window_days as f64;
        let idle = m
            .last_flight
            .map(|d| (today.0 - d.0).max(0) as f64)
            .unwrap_or(900.0);
        let base = 0.8 * (1.0 - (-0.3 - rate).exp()) * (-idle / 730.0).exp();
        let probability = base + if moved { LOYALTY_RESPONSE } else { 0.0 };
        FlyAgain {
            probability,
            extra_flights: 0.5 * rate,
            spend_per_flight: m.qualifying_spend_12m as f64 / m.flights_12m().max(1) as f64,
        }
    }
}

/// Iterator over the NDJSON lines of a population, for `gen-members`.
pub fn population_lines(
    seed: u64,
    count: u64,
    as_of: NaiveDate,
    th: TierThresholds,
) -> impl Iterator<Item = String> {
    (0..count).map(move |i| {
        serde_json::to_string(&member_record(seed, i, as_of, &th)).unwrap_or_default()
    })
}

/// The population as NDJSON with each member's `monthly` history
/// ([`member_monthly`]).
pub fn population_lines_monthly(
    seed: u64,
    count: u64,
    as_of: NaiveDate,
    th: TierThresholds,
) -> impl Iterator<Item = String> {
    (0..count).map(move |i| {
        let m = member_monthly(seed, i, as_of, &th);
        serde_json::to_string(&MemberRecord::from_member(&member_id(i), &m)).unwrap_or_default()
    })
}

/// Parses the `--as-of` style date, defaulting to `today` (the caller's clock).
pub fn as_of_or_today(s: Option<&str>, today: NaiveDate) -> Result<NaiveDate, String> {
    match s {
        None => Ok(today),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| format!("--as-of {s:?} is not YYYY-MM-DD")),
    }
}

/// An `Iata` that is never in a population (for tests of foreign airports).
pub fn any_foreign_airport() -> Iata {
    AIRPORTS
        .iter()
        .find(|a| a.country != "CN")
        .map(|a| a.code)
        .unwrap_or(AIRPORTS[0].code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_prefix_stable() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let th = TierThresholds::default();
        assert_eq!(member(7, 42, d, &th), member(7, 42, d, &th));
        assert_ne!(member(7, 42, d, &th), member(8, 42, d, &th));
        let a: Vec<String> = population_lines(1, 50, d, th).collect();
        let b: Vec<String> = population_lines(1, 10, d, th).collect();
        assert_eq!(&a[..10], &b[..]);
    }

    #[test]
    fn monthly_members_keep_the_totals_and_parse_back() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let th = TierThresholds::default();
        let now = crate::domain::month_of(Day::from_date(d));
        for (i, line) in population_lines_monthly(3, 2_000, d, th).enumerate() {
            let plain = member(3, i as u64, d, &th);
            let m = member_monthly(3, i as u64, d, &th);
            assert_eq!(m.history.month(), Some(now));
            assert_eq!(m.flights_12m(), plain.flights_12m());
            let unit = m.history.unit_cny();
            let (a, b) = (
                m.qualifying_spend_12m as f64,
                plain.qualifying_spend_12m as f64,
            );
            assert!((a - b).abs() <= 12.0 * unit, "{a} {b}");
            assert_eq!((m.tier, m.points), (plain.tier, plain.points));
            if let Some(lm) = plain.last_flight.map(crate::domain::month_of) {
                if lm + 11 >= now {
                    assert!(m
                        .history
                        .months()
                        .iter()
                        .any(|(k, _, f)| *k == lm && *f > 0));
                }
            }
            let r: MemberRecord = crate::parse::from_json(line.as_bytes()).unwrap();
            assert_eq!(r.to_member().unwrap(), m, "{line}");
        }
    }

    #[test]
    fn tier_shares_and_records_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let th = TierThresholds::default();
        let n = 20_000;
        let mut counts = [0usize; 5];
        for i in 0..n {
            let r = member_record(3, i, d, &th);
            let m = r.to_member().expect("generated records are valid");
            counts[m.tier as usize] += 1;
        }
        for (c, share) in counts.iter().zip(TIER_SHARES) {
            let got = *c as f64 / n as f64;
            assert!((got - share).abs() < 0.02, "{counts:?}");
        }
    }
}
