//! Property tests of the decision core and the request parser.
//!
//! What they prove, over thousands of generated members, trips, channels and
//! decision instants (2024 to 2031, so offers' validity windows open and
//! close):
//! - every offer `decide` returns obeys the catalog's rules, as judged by an
//!   independent re-implementation of those rules written here from the
//!   catalog fields (not by calling `Offer::eligible`), and `decide` drops no
//!   eligible offer: its eligible count and the number of categories it fills
//!   match the re-implementation;
//! - the arbitration invariants hold: at most `max_offers`, one offer per
//!   category, ranked by expected value (or priority), expiry after now and
//!   never after departure or the offer's window, non-negative prices;
//! - a trip departing now, or up to an hour ago (the parser admits those),
//!   is shown no offer that has already expired;
//! - a member without consent for email, app or sms is never sent an offer
//!   there, and neither is an unknown (cold-start) member;
//! - gold and above (whose tiers include an upgrade voucher) are offered its
//!   use and no paid upgrade; nobody else is offered the voucher;
//! - no points-priced offer is returned whose points price for the party
//!   exceeds the member's balance (none to a cold start), and no reason
//!   claims more points than the member has;
//! - the JSON request parser never panics on arbitrary bytes or on mutated
//!   valid requests, and every error names a field.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use offer_engine::airports::{Airport, AIRPORTS};
use offer_engine::catalog::{Offer, RouteKind};
use offer_engine::decision::{decide, DecisionInput, Engine, Ranking, Unconstrained};
use offer_engine::domain::{
    Benefit, Cabin, Channel, Consent, ConsentChannel, Day, Itinerary, Member, Money, Tags, Tier,
    TAGS,
};
use offer_engine::parse::{from_json, parse_offer_request, OfferRequestDto};

/// Cases for the main eligibility property.
const MAIN_CASES: u32 = 10_000;
/// Cases for the smaller properties.
const SMALL_CASES: u32 = 2_000;

fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(Engine::embedded_default)
}

// ------------------------------------------------------------------ generators

/// A member relative to the decision day (last flight and join date are
/// "days ago", so they stay in the past whatever the decision instant).
#[derive(Debug, Clone)]
struct MemberSpec {
    tier: Tier,
    spend: f32,
    points: u32,
    last_flight_days_ago: Option<i32>,
    joined_days_ago: i32,
    flights_12m: u16,
    tag_mask: u16,
    consent: (bool, bool, bool),
    home: usize,
    birth_month: u8,
}

impl MemberSpec {
    fn build(&self, now: DateTime<Utc>) -> Member {
        let today = Day::of(now);
        let joined_ago = self
            .joined_days_ago
            .max(self.last_flight_days_ago.unwrap_or(0) + 1);
        Member {
            qualifying_spend_12m: self.spend,
            points: self.points,
            last_flight: self.last_flight_days_ago.map(|d| Day(today.0 - d)),
            joined: Day(today.0 - joined_ago),
            history: offer_engine::domain::MonthlyHistory::spread(
                self.spend as f64,
                self.flights_12m,
            ),
            tags: Tags::from_bits(self.tag_mask),
            home_airport: AIRPORTS[self.home].code,
            tier: self.tier,
            birth_month: self.birth_month,
            consent: Consent::new(self.consent.0, self.consent.1, self.consent.2),
        }
    }

    /// Tag names, from the generated mask (not from `Tags`).
    fn tag_names(&self) -> Vec<&'static str> {
        TAGS.iter()
            .enumerate()
            .filter(|(i, _)| self.tag_mask & (1 << i) != 0)
            .map(|(_, t)| *t)
            .collect()
    }
}

/// Tier thresholds written out here (the engine's defaults), for the fast-track rule.
const THRESHOLDS: [(Tier, f64); 4] = [
    (Tier::Silver, 10_000.0),
    (Tier::Gold, 50_000.0),
    (Tier::Platinum, 80_000.0),
    (Tier::Diamond, 100_000.0),
];

fn arb_tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

fn arb_member() -> impl Strategy<Value = MemberSpec> {
    let spend = prop_oneof![
        3 => 0f32..300_000.0,
        // Just under (or at) a tier threshold: exercises tier fast-track.
        2 => (0usize..4, 0f32..12_000.0).prop_map(|(t, d)| (THRESHOLDS[t].1 as f32 - d).max(0.0)),
        1 => prop::sample::select(vec![0.0f32, 7_999.0, 8_000.0, 14_999.0, 15_000.0, 39_999.0, 40_000.0]),
    ];
    let points = prop_oneof![
        3 => 0u32..200_000,
        1 => prop::sample::select(vec![
            0u32, 2_999, 3_000, 3_999, 4_000, 14_999, 15_000, 24_999, 25_000, 59_999, 60_000,
        ]),
    ];
    let last_flight = prop_oneof![
        1 => Just(None),
        2 => (0i32..120).prop_map(Some),
        2 => (120i32..1_500).prop_map(Some),
        1 => prop::sample::select(vec![119i32, 120, 179, 180, 239, 240]).prop_map(Some),
    ];
    (
        arb_tier(),
        spend,
        points,
        last_flight,
        0i32..8_000,
        0u16..300,
        0u16..(1 << TAGS.len()),
        any::<(bool, bool, bool)>(),
        0..AIRPORTS.len(),
        1u8..=12,
    )
        .prop_map(
            |(tier, spend, points, last, joined, flights, tags, consent, home, bm)| MemberSpec {
                tier,
                spend,
                points,
                last_flight_days_ago: last,
                joined_days_ago: joined,
                flights_12m: flights,
                tag_mask: tags,
                consent,
                home,
                birth_month: bm,
            },
        )
}

/// A trip relative to the decision instant.
#[derive(Debug, Clone)]
struct TripSpec {
    origin: usize,
    destination: usize,
    minutes_ahead: i64,
    cabin: Cabin,
    passengers: u8,
    fare: f64,
}

impl TripSpec {
    fn build(&self, now: DateTime<Utc>) -> Itinerary {
        Itinerary {
            origin: AIRPORTS[self.origin].code,
            destination: AIRPORTS[self.destination].code,
            departure: now + Duration::minutes(self.minutes_ahead),
            cabin: self.cabin,
            fare: Money {
                amount: self.fare,
                currency: "CNY".into(),
            },
            passengers: self.passengers,
        }
    }
}

fn arb_trip() -> impl Strategy<Value = TripSpec> {
    // Departures strictly after now; departing now or in the last hour is
    // the subject of `no_offer_is_dead_on_arrival`.
    let minutes = prop_oneof![
        3 => 1i64..=300 * 1440,
        // The first days, where the days-before-departure rules bite.
        2 => 1i64..=5 * 1440,
        // Departing within the hour (at the gate, at the kiosk).
        1 => 1i64..=60,
    ];
    arb_trip_departing(minutes)
}

fn arb_trip_departing(
    minutes: impl Strategy<Value = i64> + 'static,
) -> impl Strategy<Value = TripSpec> {
    let n = AIRPORTS.len();
    (
        0..n,
        1..n,
        minutes,
        prop::sample::select(Cabin::ALL.to_vec()),
        1u8..=9,
        0f64..100_000.0,
    )
        .prop_map(move |(o, k, minutes, cabin, pax, fare)| TripSpec {
            origin: o,
            destination: (o + k) % n,
            minutes_ahead: minutes,
            cabin,
            passengers: pax,
            fare: (fare * 100.0).round() / 100.0,
        })
}

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

/// Decision instants from 2024 to 2031, with extra weight a few days either
/// side of the catalog's window edges (2025-01-01, 2030-12-31 and the
/// seasonal 2027-01-10..2027-02-20).
fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
    let start = utc(2024, 1, 1).timestamp();
    let end = utc(2032, 1, 1).timestamp();
    let edges = vec![
        utc(2025, 1, 1),
        utc(2031, 1, 1),
        utc(2027, 1, 10),
        utc(2027, 2, 21),
    ];
    prop_oneof![
        3 => (start..end).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        2 => (prop::sample::select(edges), -3 * 86_400i64..3 * 86_400)
            .prop_map(|(e, s)| e + Duration::seconds(s)),
        1 => (utc(2027, 1, 1).timestamp()..utc(2027, 3, 1).timestamp())
            .prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    member: Option<MemberSpec>,
    trip: Option<TripSpec>,
    channel: Channel,
    now: DateTime<Utc>,
    max_offers: usize,
    ranking: Ranking,
}

fn arb_case() -> impl Strategy<Value = Case> {
    arb_case_with(prop::option::weighted(0.9, arb_trip()))
}

fn arb_case_with(
    trip: impl Strategy<Value = Option<TripSpec>> + 'static,
) -> impl Strategy<Value = Case> {
    (
        prop::option::weighted(0.85, arb_member()),
        trip,
        prop::sample::select(Channel::ALL.to_vec()),
        arb_now(),
        1usize..=10,
        prop::sample::select(vec![Ranking::Model, Ranking::Priority]),
    )
        .prop_map(|(member, trip, channel, now, max_offers, ranking)| Case {
            member,
            trip,
            channel,
            now,
            max_offers,
            ranking,
        })
}

// ------------------------------------------- the rules, written independently

fn airport(code: offer_engine::domain::Iata) -> &'static Airport {
    AIRPORTS
        .iter()
        .find(|a| a.code == code)
        .expect("generated airports come from the table")
}

fn haversine_km(a: &Airport, b: &Airport) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Whether a tier's own benefits include `b` (the programme's rules, restated).
fn tier_includes(tier: Tier, b: Benefit) -> bool {
    let rank = match tier {
        Tier::Base => 0,
        Tier::Silver => 1,
        Tier::Gold => 2,
        Tier::Platinum => 3,
        Tier::Diamond => 4,
    };
    match b {
        Benefit::PriorityBoarding => rank >= 1,
        Benefit::LoungeAccess | Benefit::UpgradeVoucher | Benefit::ExtraBaggage => rank >= 2,
        Benefit::GroundTransport => rank >= 4,
    }
}

/// Whole days from `now` to departure, counting from 0 when departing within 24 h.
fn whole_days(now: DateTime<Utc>, departure: DateTime<Utc>) -> i64 {
    let secs = (departure - now).num_seconds();
    if secs <= 0 {
        0
    } else {
        secs / 86_400
    }
}

/// The first rule `offer` breaks in this context, or None when it may be shown.
fn broken_rule(
    offer: &Offer,
    member: Option<(&Member, &MemberSpec)>,
    trip: Option<&Itinerary>,
    channel: Channel,
    now: DateTime<Utc>,
) -> Option<&'static str> {
    let e = &offer.eligibility;
    let today: NaiveDate = now.date_naive();
    if today < offer.valid_from.to_date() || today > offer.valid_to.to_date() {
        return Some("validity window");
    }
    if !offer.channels.contains(&channel) {
        return Some("channel");
    }
    let consent = match (channel, member) {
        (Channel::Checkout | Channel::Kiosk, _) => true,
        (_, None) => false,
        (Channel::Email, Some((_, s))) => s.consent.0,
        (Channel::Sms, Some((_, s))) => s.consent.1,
        (Channel::App, Some((_, s))) => s.consent.2,
    };
    if !consent {
        return Some("marketing consent");
    }
    let tier = member.map(|(m, _)| m.tier).unwrap_or(Tier::Base);
    if !e.tiers.is_empty() && !e.tiers.contains(&tier) {
        return Some("tier");
    }
    if offer.provides.iter().any(|b| tier_includes(tier, *b)) {
        return Some("tier benefit re-sold");
    }
    if offer.uses_voucher && !tier_includes(tier, Benefit::UpgradeVoucher) {
        return Some("upgrade voucher without the tier benefit");
    }
    match trip {
        Some(it) => {
            // Every offer expires at departure at the latest, so once the
            // trip has left nothing shown could still be accepted.
            if it.departure <= now {
                return Some("departed trip");
            }
            if !e.cabins.is_empty() && !e.cabins.contains(&it.cabin) {
                return Some("cabin");
            }
            let (o, d) = (airport(it.origin), airport(it.destination));
            let domestic = o.country == d.country;
            match e.route {
                RouteKind::Domestic if !domestic => return Some("route (domestic only)"),
                RouteKind::International if domestic => return Some("route (international only)"),
                _ => {}
            }
            let days = whole_days(now, it.departure);
            if let Some(min) = e.min_days_before_departure {
                if days < min as i64 {
                    return Some("min days before departure");
                }
            }
            if let Some(max) = e.max_days_before_departure {
                if days > max as i64 {
                    return Some("max days before departure");
                }
            }
            if let Some(min) = e.min_distance_km {
                if haversine_km(o, d) < min {
                    return Some("min distance");
                }
            }
            if let Some(min) = e.min_passengers {
                if it.passengers < min {
                    return Some("min passengers");
                }
            }
        }
        None => {
            let trip_rules = !e.cabins.is_empty()
                || e.route != RouteKind::Any
                || e.min_days_before_departure.is_some()
                || e.max_days_before_departure.is_some()
                || e.min_distance_km.is_some()
                || e.min_passengers.is_some();
            if trip_rules {
                return Some("trip rule without a trip");
            }
        }
    }
    // The party's points price, written out here: per passenger when the
    // offer is, else one unit.
    let party = trip.map(|it| it.passengers.max(1)).unwrap_or(1) as u64;
    let points_due = offer
        .points_price
        .map(|p| p as u64 * if offer.per_passenger { party } else { 1 })
        .filter(|p| *p > 0);
    let Some((m, spec)) = member else {
        // An unknown member has no points, tags, spend or history.
        if e.min_points.is_some() {
            return Some("min points (cold start)");
        }
        if points_due.is_some() {
            return Some("points price (cold start)");
        }
        if offer.uses_voucher {
            return Some("upgrade voucher (cold start)");
        }
        if !e.require_tags.is_empty() {
            return Some("required tags (cold start)");
        }
        if e.max_spend_to_next_tier.is_some() {
            return Some("fast-track (cold start)");
        }
        if e.min_days_since_last_flight.is_some() || e.min_qualifying_spend.is_some() {
            return Some("retention (cold start)");
        }
        return None;
    };
    if let Some(min) = e.min_points {
        if m.points < min {
            return Some("min points");
        }
    }
    if points_due.is_some_and(|p| p > m.points as u64) {
        return Some("points price above the balance");
    }
    let tags = spec.tag_names();
    if !e.require_tags.iter().all(|t| tags.contains(&t.as_str())) {
        return Some("required tags");
    }
    if e.exclude_tags.iter().any(|t| tags.contains(&t.as_str())) {
        return Some("excluded tags");
    }
    if let Some(max_gap) = e.max_spend_to_next_tier {
        let next = match m.tier {
            Tier::Base => Some(THRESHOLDS[0].1),
            Tier::Silver => Some(THRESHOLDS[1].1),
            Tier::Gold => Some(THRESHOLDS[2].1),
            Tier::Platinum => Some(THRESHOLDS[3].1),
            Tier::Diamond => None,
        };
        match next {
            Some(th) if (th - m.qualifying_spend_12m as f64).max(0.0) <= max_gap => {}
            _ => return Some("fast-track closeness"),
        }
    }
    if let Some(min_days) = e.min_days_since_last_flight {
        if let Some(d) = spec.last_flight_days_ago {
            if d < min_days as i32 {
                return Some("retention recency");
            }
        }
    }
    if let Some(min) = e.min_qualifying_spend {
        if (m.qualifying_spend_12m as f64) < min {
            return Some("retention spend");
        }
    }
    None
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let eng = engine();
    let offers = &eng.catalog.offers;
    let member = c.member.as_ref().map(|s| s.build(c.now));
    let trip = c.trip.as_ref().map(|t| t.build(c.now));
    let input = DecisionInput {
        member: member.as_ref(),
        itinerary: trip.as_ref(),
        channel: c.channel,
        now: c.now,
        max_offers: c.max_offers,
        ranking: c.ranking,
    };
    let d = decide(eng, &input, &Unconstrained);
    let who = member.as_ref().zip(c.member.as_ref());

    prop_assert_eq!(d.cold_start, member.is_none());
    prop_assert!(d.offers.len() <= c.max_offers);

    // Every returned offer obeys every rule.
    let mut seen_idx = std::collections::HashSet::new();
    let mut seen_cat = std::collections::HashSet::new();
    for r in &d.offers {
        prop_assert!(r.index < offers.len());
        let o = &offers[r.index];
        prop_assert!(seen_idx.insert(r.index), "offer {} returned twice", o.id);
        prop_assert!(
            seen_cat.insert(o.category),
            "two offers of category {:?} (second: {})",
            o.category,
            o.id
        );
        if let Some(rule) = broken_rule(o, who, trip.as_ref(), c.channel, c.now) {
            return Err(TestCaseError::fail(format!(
                "offer {} was shown but breaks the {rule} rule",
                o.id
            )));
        }
        prop_assert!(
            r.expires_at > c.now,
            "offer {} expires at {} which is not after now {}",
            o.id,
            r.expires_at,
            c.now
        );
        prop_assert!(
            r.expires_at <= c.now + Duration::minutes(o.validity.minutes(c.channel) as i64)
        );
        if let Some(it) = &trip {
            prop_assert!(
                r.expires_at <= it.departure,
                "offer {} expires at {} after departure {}",
                o.id,
                r.expires_at,
                it.departure
            );
        }
        let window_end = (o.valid_to.to_date() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        prop_assert!(
            r.expires_at <= window_end,
            "offer {} outlives its window",
            o.id
        );
        if let Some(p) = &r.price {
            prop_assert!(p.amount.is_finite() && p.amount >= 0.0, "price {:?}", p);
        }
        // Points: the party's price is covered by the balance, and the
        // reasons claim no more points than the member has.
        if let Some(pp) = r.points_price.filter(|p| *p > 0) {
            let balance = member.as_ref().map(|m| m.points as u64);
            prop_assert!(
                balance.is_some_and(|b| pp <= b),
                "offer {} costs {} points, the balance is {:?}",
                o.id,
                pp,
                balance
            );
            let claim = offer_engine::reasons::Reason::PointsBalance {
                points: balance.unwrap_or(0),
            };
            prop_assert!(
                r.reasons.iter().any(|t| t == &claim),
                "offer {}: reasons {:?} do not say {:?}",
                o.id,
                r.reasons,
                claim
            );
        }
        prop_assert!(r.expected_value.is_finite() && r.expected_value >= 0.0);
        prop_assert!((0.0..=1.0).contains(&r.propensity));
        prop_assert!(!r.reasons.is_empty());
    }

    // Ranking.
    for w in d.offers.windows(2) {
        match c.ranking {
            Ranking::Model => prop_assert!(
                w[0].expected_value >= w[1].expected_value,
                "not sorted by expected value: {} then {}",
                w[0].expected_value,
                w[1].expected_value
            ),
            Ranking::Priority => {
                prop_assert!(offers[w[0].index].priority >= offers[w[1].index].priority)
            }
        }
    }

    // Nothing eligible is lost: the engine's eligible count matches ours, and
    // arbitration fills as many categories as it may.
    let eligible: Vec<&Offer> = offers
        .iter()
        .filter(|o| broken_rule(o, who, trip.as_ref(), c.channel, c.now).is_none())
        .collect();
    prop_assert_eq!(
        d.eligible,
        eligible.len(),
        "engine found {} eligible, the rules say {:?}",
        d.eligible,
        eligible.iter().map(|o| o.id.as_str()).collect::<Vec<_>>()
    );
    // An unused upgrade voucher (always, without constraints) comes before
    // a paid upgrade.
    if eligible.iter().any(|o| o.uses_voucher) {
        for r in &d.offers {
            let o = &offers[r.index];
            prop_assert!(
                o.category != offer_engine::domain::Category::Upgrade || o.uses_voucher,
                "paid upgrade {} shown to a member with a voucher",
                o.id
            );
        }
    }
    let mut cats: Vec<_> = eligible.iter().map(|o| o.category).collect();
    cats.sort();
    cats.dedup();
    prop_assert_eq!(d.offers.len(), cats.len().min(c.max_offers));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MAIN_CASES))]

    /// Every offer shown obeys the catalog's rules; none eligible is lost.
    #[test]
    fn decisions_obey_every_rule(c in arb_case()) {
        run_case(&c)?;
    }

    /// A trip departing now, or up to an hour ago (the request parser admits
    /// those, for clock skew), gets no offer that has already expired when
    /// it is shown; every other rule holds as well.
    #[test]
    fn no_offer_is_dead_on_arrival(
        c in arb_case_with(
            arb_trip_departing(prop_oneof![1 => Just(0i64), 2 => -60i64..=0]).prop_map(Some),
        ),
    ) {
        run_case(&c)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SMALL_CASES))]

    /// Balances right around the party's points price of a points offer:
    /// the offer is shown only when the balance covers the price for the
    /// whole party (every other rule checked as in the main property).
    #[test]
    fn points_offers_need_the_party_price_in_the_balance(
        c in arb_case_with(arb_trip().prop_map(Some)),
        pick in 0usize..64,
        delta in prop::sample::select(vec![-500i64, -1, 0, 1, 500]),
    ) {
        let eng = engine();
        let points_offers: Vec<&Offer> = eng
            .catalog
            .offers
            .iter()
            .filter(|o| o.points_price.is_some_and(|p| p > 0))
            .collect();
        prop_assume!(!points_offers.is_empty());
        let o = points_offers[pick % points_offers.len()];
        let party = c.trip.as_ref().map(|t| t.passengers.max(1)).unwrap_or(1) as i64;
        let units = if o.per_passenger { party } else { 1 };
        let due = o.points_price.unwrap_or(0) as i64 * units;
        let mut c = c;
        if let Some(m) = c.member.as_mut() {
            m.points = (due + delta).clamp(0, u32::MAX as i64) as u32;
        }
        run_case(&c)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SMALL_CASES))]

    /// Withdrawn consent (or no member at all) means nothing on that channel.
    #[test]
    fn no_consent_no_marketing(
        spec in prop::option::weighted(0.8, arb_member()),
        trip in prop::option::of(arb_trip()),
        channel in prop::sample::select(vec![Channel::Email, Channel::App, Channel::Sms]),
        now in arb_now(),
        max_offers in 1usize..=10,
        ranking in prop::sample::select(vec![Ranking::Model, Ranking::Priority]),
    ) {
        let mut member = spec.as_ref().map(|s| s.build(now));
        if let Some(m) = member.as_mut() {
            let ch = match channel {
                Channel::Email => ConsentChannel::Email,
                Channel::App => ConsentChannel::App,
                _ => ConsentChannel::Sms,
            };
            m.consent.set(ch, false);
        }
        let trip = trip.map(|t| t.build(now));
        let input = DecisionInput {
            member: member.as_ref(),
            itinerary: trip.as_ref(),
            channel,
            now,
            max_offers,
            ranking,
        };
        let d = decide(engine(), &input, &Unconstrained);
        prop_assert!(
            d.offers.is_empty() && d.eligible == 0,
            "{} offer(s) on {:?} without consent: {:?}",
            d.offers.len(),
            channel,
            d.offers.iter().map(|o| engine().catalog.offers[o.index].id.as_str()).collect::<Vec<_>>()
        );
    }
}

// ----------------------------------------------------------------- the parser

const VALID: &str = r#"{"member_id":"M00000001","channel":"checkout","itinerary":{"origin":"PEK","destination":"SHA","departure":"2026-12-01T08:30:00+08:00","cabin":"economy","fare":{"amount":1280,"currency":"CNY"},"passengers":1},"max_offers":3}"#;

/// Every key path of the valid request, and whether it is required.
const PATHS: [(&[&str], bool); 12] = [
    (&["member_id"], true),
    (&["channel"], true),
    (&["itinerary"], true),
    (&["itinerary", "origin"], true),
    (&["itinerary", "destination"], true),
    (&["itinerary", "departure"], true),
    (&["itinerary", "cabin"], true),
    (&["itinerary", "fare"], true),
    (&["itinerary", "fare", "amount"], true),
    (&["itinerary", "fare", "currency"], true),
    (&["itinerary", "passengers"], true),
    (&["max_offers"], false),
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            "PEK",
            "SHA",
            "pek",
            "ZZZ",
            "checkout",
            "sms",
            "fax",
            "economy",
            "first",
            "CNY",
            "yuan",
            "2026-12-01T08:30:00+08:00",
            "2020-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "tomorrow",
            "M1",
            "M 1",
            "\u{0}",
            "é",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Replace(usize, Value),
    AddKey(usize, String, Value),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..PATHS.len()).prop_map(Mutation::Remove),
        (0..PATHS.len(), arb_json()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        (0..PATHS.len(), "[a-z_]{1,10}", arb_json())
            .prop_map(|(p, k, v)| Mutation::AddKey(p, k, v)),
    ]
}

fn slot<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut v = root;
    for k in path {
        v = v.as_object_mut()?.get_mut(*k)?;
    }
    Some(v)
}

fn apply(root: &mut Value, m: &Mutation) {
    match m {
        Mutation::Remove(p) => {
            let (path, last) = PATHS[*p].0.split_at(PATHS[*p].0.len() - 1);
            if let Some(Value::Object(o)) = slot(root, path) {
                o.remove(last[0]);
            }
        }
        Mutation::Replace(p, v) => {
            if let Some(s) = slot(root, PATHS[*p].0) {
                *s = v.clone();
            }
        }
        Mutation::AddKey(p, k, v) => {
            // Adds a key next to the path's value (unknown keys are refused
            // except inside `fare`, which is open).
            let path = &PATHS[*p].0[..PATHS[*p].0.len() - 1];
            if let Some(Value::Object(o)) = slot(root, path) {
                o.insert(k.clone(), v.clone());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
    Overwrite(usize, u8),
}

fn arb_byte_edit() -> impl Strategy<Value = ByteEdit> {
    let b = prop_oneof![
        prop::sample::select(b"{}[]\",:0-.e\\ ntfu\xff".to_vec()),
        any::<u8>()
    ];
    prop_oneof![
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), b.clone()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<usize>().prop_map(ByteEdit::Delete),
        (any::<usize>(), b).prop_map(|(i, b)| ByteEdit::Overwrite(i, b)),
    ]
}

fn edit(bytes: &mut Vec<u8>, e: &ByteEdit) {
    let n = bytes.len();
    match *e {
        ByteEdit::Truncate(i) => bytes.truncate(i % (n + 1)),
        ByteEdit::Insert(i, b) => bytes.insert(i % (n + 1), b),
        ByteEdit::Delete(i) if n > 0 => {
            bytes.remove(i % n);
        }
        ByteEdit::Overwrite(i, b) if n > 0 => bytes[i % n] = b,
        _ => {}
    }
}

/// Parses `body` as a request; an error must name a field, and a request
/// that parses is then checked into domain types, under the same rule.
fn check_parse(body: &[u8]) -> Result<(), TestCaseError> {
    // The handler's parse reports every field at fault, each named; its
    // first is the one the typed parse names, and it accepts what that accepts.
    let all = parse_offer_request(body, utc(2026, 11, 23));
    if let Err(errs) = &all {
        prop_assert!(!errs.is_empty());
        for e in errs {
            prop_assert!(!e.field.is_empty(), "error names no field: {e:?}");
        }
    }
    let typed = from_json::<OfferRequestDto>(body).and_then(|d| d.into_domain(utc(2026, 11, 23)));
    match (&all, &typed) {
        (Ok(_), Ok(_)) => {}
        (Err(errs), Err(first)) => prop_assert_eq!(&errs[0], first),
        _ => prop_assert!(false, "the two parses disagree: {all:?} / {typed:?}"),
    }
    match from_json::<OfferRequestDto>(body) {
        Err(e) => prop_assert!(!e.field.is_empty(), "error names no field: {e:?}"),
        Ok(dto) => {
            let now = utc(2026, 11, 23);
            match dto.into_domain(now) {
                Err(e) => prop_assert!(!e.field.is_empty(), "error names no field: {e:?}"),
                Ok(r) => {
                    prop_assert!((1..=9).contains(&r.itinerary.passengers));
                    prop_assert!((1..=10).contains(&r.max_offers));
                    prop_assert!(r.itinerary.origin != r.itinerary.destination);
                    prop_assert!(r.itinerary.fare.amount >= 0.0);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SMALL_CASES))]

    /// Arbitrary bytes never panic the parser; errors name a field.
    #[test]
    fn parser_survives_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..400)) {
        check_parse(&body)?;
    }

    /// Structural mutations of a valid request, then byte edits of its text.
    #[test]
    fn parser_survives_mutated_requests(
        muts in prop::collection::vec(arb_mutation(), 0..4),
        edits in prop::collection::vec(arb_byte_edit(), 0..3),
    ) {
        let mut v: Value = serde_json::from_str(VALID).unwrap();
        for m in &muts {
            apply(&mut v, m);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        check_parse(&bytes)?;
        for e in &edits {
            edit(&mut bytes, e);
        }
        check_parse(&bytes)?;
    }

}

/// Removing one field is refused, by that field's dotted path, exactly when
/// the field is required (all twelve paths, exhaustively).
#[test]
fn a_missing_field_is_named() {
    for (p, (path, required)) in PATHS.iter().enumerate() {
        let mut v: Value = serde_json::from_str(VALID).unwrap();
        apply(&mut v, &Mutation::Remove(p));
        let body = serde_json::to_vec(&v).unwrap();
        match from_json::<OfferRequestDto>(&body) {
            Err(e) => {
                assert!(required, "optional {path:?} refused: {e:?}");
                assert_eq!(e.field, path.join("."));
            }
            Ok(_) => assert!(!required, "request without {path:?} accepted"),
        }
    }
}

#[test]
fn the_valid_request_parses() {
    let r = from_json::<OfferRequestDto>(VALID.as_bytes())
        .unwrap()
        .into_domain(utc(2026, 11, 23))
        .unwrap();
    assert_eq!(r.max_offers, 3);
}
