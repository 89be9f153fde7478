//! The rolling 12-month window: qualifying spend and flights are kept by
//! month and age out by log time; tier, features and lifetime value follow,
//! and downgrades follow the programme's configured rule. Thirteen months of
//! monthly member events are applied to a fresh state, and the member's
//! tier and features are compared month by month with a brute-force model of
//! the rules.

use chrono::{NaiveDate, TimeZone, Utc};
use offer_engine::domain::{
    month_of, Day, DowngradeRule, MemberRecord, Month, Tier, TierThresholds,
};
use offer_engine::events::MemberChange;
use offer_engine::features;
use offer_engine::state::{LogRecord, MemberWireV2, State, StateSettings};

/// A diamond member who joined in April and spent 10,000 CNY (two flights)
/// in each of the 12 months to December 2025.
fn member() -> MemberRecord {
    let monthly: Vec<_> = (1..=12)
        .map(|m| {
            serde_json::json!({"month": format!("2025-{m:02}"), "qualifying_spend": 10000.0, "flights": 2})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "member_id": "M00000001", "tier": "diamond", "points": 50000,
        "qualifying_spend_12m": 120000.0, "flights_12m": 24,
        "last_flight": "2025-12-20", "joined": "2019-04-02", "home_airport": "PEK",
        "birth_month": 7, "consent": {"email": true, "sms": false, "app": true},
        "tags": ["business"], "monthly": monthly
    }))
    .unwrap()
}

fn month(y: i32, m: u32) -> Month {
    month_of(Day::from_date(NaiveDate::from_ymd_opt(y, m, 1).unwrap()))
}

/// Brute force: the spend of each month, the tier after each month start.
struct Model {
    spend: std::collections::BTreeMap<Month, f64>,
    flights: std::collections::BTreeMap<Month, u16>,
    tier: Tier,
    short: u8,
}

impl Model {
    fn window(&self, newest: Month) -> (f64, u16) {
        let months = newest - 11..=newest;
        (
            self.spend.range(months.clone()).map(|(_, v)| v).sum(),
            self.flights.range(months).map(|(_, v)| v).sum(),
        )
    }
    fn start(&mut self, into: Month, th: &TierThresholds, joined: Month) {
        let earned = th.tier_for(self.window(into - 1).0);
        if earned >= self.tier {
            self.short = 0;
            return;
        }
        match th.downgrade {
            DowngradeRule::Anniversary if into % 12 == joined % 12 => self.tier = earned,
            DowngradeRule::Anniversary => {}
            DowngradeRule::Grace => {
                self.short += 1;
                if self.short > th.grace_months {
                    self.tier = earned;
                    self.short = 0;
                }
            }
        }
    }
}

/// Applies 13 monthly flights (2,000 CNY each, January 2026 to January
/// 2027) and checks tier and features after each; returns the tiers seen.
fn thirteen_months(th: TierThresholds) -> Vec<Tier> {
    let state = State::new(StateSettings {
        max_decisions: 1000,
        thresholds: th,
        learning: Default::default(),
    });
    let rec = member();
    let m = rec.to_member().unwrap();
    state.apply(
        &LogRecord::MembersV2(vec![(rec.member_id.clone(), MemberWireV2::from(&m))]),
        1,
        false,
    );
    let mut model = Model {
        spend: (1..=12).map(|k| (month(2025, k), 10_000.0)).collect(),
        flights: (1..=12).map(|k| (month(2025, k), 2)).collect(),
        tier: Tier::Diamond,
        short: 0,
    };
    let joined = month(2019, 4);
    let mut tiers = Vec::new();
    let mut last_clv = f64::INFINITY;
    for k in 0..13u32 {
        let (y, mo) = (2026 + (k / 12) as i32, k % 12 + 1);
        let day = NaiveDate::from_ymd_opt(y, mo, 15).unwrap();
        let at = Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap());
        let this = month(y, mo);
        if k > 0 {
            model.start(this, &th, joined);
        }
        state.apply(
            &LogRecord::MemberChange {
                member_id: rec.member_id.clone(),
                at_ms: at.timestamp_millis(),
                change: MemberChange::FlightFlown {
                    day: Day::from_date(day).0,
                    spend: 2_000.0,
                    points: 1_000,
                },
            },
            2 + k as u64,
            false,
        );
        *model.spend.entry(this).or_default() += 2_000.0;
        *model.flights.entry(this).or_default() += 1;
        let (spend, flights) = model.window(this);
        // Events earn at once (none here: spend only falls).
        model.tier = model.tier.max(th.tier_for(spend));
        let got = state.members().get(&rec.member_id).unwrap();
        assert_eq!(got.tier, model.tier, "{y}-{mo:02}");
        assert_eq!(got.qualifying_spend_12m as f64, spend, "{y}-{mo:02}");
        assert_eq!(got.flights_12m(), flights, "{y}-{mo:02}");
        // Features and lifetime value follow the window.
        let today = Day::from_date(day);
        let s = features::segment(&got, today);
        assert_eq!((s.monetary, s.frequency), (spend, flights));
        let x = features::build(
            Some(&got),
            &features::DecisionContext {
                itinerary: None,
                channel: offer_engine::domain::Channel::Email,
                now: at,
            },
            &th,
        );
        assert_eq!(x[1], (flights as f64).ln_1p() as f32);
        assert_eq!(x[2], spend.ln_1p() as f32 / 10.0);
        let tier_feature = match got.tier {
            Tier::Base => None,
            t => Some(t as usize + 3),
        };
        for (j, v) in x.iter().enumerate().take(8).skip(4) {
            assert_eq!(*v == 1.0, Some(j) == tier_feature, "{y}-{mo:02}: x[{j}]");
        }
        assert!(s.clv <= last_clv, "{y}-{mo:02}: lifetime value rose");
        last_clv = s.clv;
        tiers.push(got.tier);
    }
    tiers
}

#[test]
fn grace_rule_moves_a_member_down_a_tier_at_a_time_after_the_grace() {
    let th = TierThresholds {
        downgrade: DowngradeRule::Grace,
        grace_months: 2,
        ..TierThresholds::default()
    };
    let tiers = thirteen_months(th);
    use Tier::*;
    // The 12 months before: 112k (Feb), 104k (Mar), 96k (Apr: short),
    // 88k, 80k (June: third month short: platinum), ... 24k by January.
    assert_eq!(
        tiers,
        [
            Diamond, Diamond, Diamond, Diamond, Diamond, Platinum, Platinum, Platinum, Gold, Gold,
            Gold, Silver, Silver
        ]
    );
}

#[test]
fn anniversary_rule_moves_a_member_down_at_the_anniversary_month() {
    let tiers = thirteen_months(TierThresholds::default());
    use Tier::*;
    // Joined in April: judged at the start of April 2026 on 96k (platinum);
    // the next anniversary is after the 13 months.
    assert_eq!(
        tiers,
        [
            Diamond, Diamond, Diamond, Platinum, Platinum, Platinum, Platinum, Platinum, Platinum,
            Platinum, Platinum, Platinum, Platinum
        ]
    );
}

#[test]
fn a_record_with_totals_only_is_spread_and_ages_out() {
    let th = TierThresholds {
        downgrade: DowngradeRule::Grace,
        grace_months: 0,
        ..TierThresholds::default()
    };
    let state = State::new(StateSettings {
        max_decisions: 1000,
        thresholds: th,
        learning: Default::default(),
    });
    let mut rec = member();
    rec.monthly = None;
    let m = rec.to_member().unwrap();
    assert!(!m.history.is_dated());
    state.apply(
        &LogRecord::MembersV2(vec![(rec.member_id.clone(), MemberWireV2::from(&m))]),
        1,
        false,
    );
    // A decision-free record in each month moves the log time on.
    let mut spends = Vec::new();
    for k in 0..14u32 {
        let (y, mo) = (2026 + (k / 12) as i32, k % 12 + 1);
        let at = Utc.with_ymd_and_hms(y, mo, 2, 0, 0, 0).unwrap();
        state.apply(
            &LogRecord::MemberChange {
                member_id: "nobody".into(),
                at_ms: at.timestamp_millis(),
                change: MemberChange::PointsEarned(1),
            },
            2 + k as u64,
            false,
        );
        spends.push(
            state
                .members()
                .get(&rec.member_id)
                .unwrap()
                .qualifying_spend_12m,
        );
    }
    // Undated until the first month start (February 2026): then the 12
    // months before it hold 10,000 each, and one ages out a month.
    assert_eq!(spends[0], 120_000.0);
    for (k, s) in spends.iter().enumerate().skip(1).take(12) {
        assert_eq!(*s as f64, 120_000.0 - 10_000.0 * k as f64, "month {k}");
    }
    assert_eq!(spends[13], 0.0);
    let got = state.members().get(&rec.member_id).unwrap();
    assert_eq!((got.tier, got.flights_12m()), (Tier::Base, 0));
}

mod props {
    use offer_engine::domain::{Month, MonthlyHistory};
    use proptest::prelude::*;

    proptest! {
        /// Against a brute-force window: spend by month added in any order
        /// (months moving on by 0 to 14 at a time, some older than the
        /// window) gives the window's flights exactly and its spend to a
        /// unit and a half a month.
        #[test]
        fn the_window_is_the_sum_of_its_months(
            steps in proptest::collection::vec((0u16..15, 0u16..14, 0.0f64..200_000.0, 0u8..5), 1..60)
        ) {
            let start: Month = 680;
            let mut h = MonthlyHistory::from_months(&[(start, 0.0, 0)]);
            let mut now = start;
            let mut all: Vec<(Month, f64, u8)> = Vec::new();
            let mut unit: f64 = 0.0;
            for (forward, back, spend, flights) in steps {
                now += forward;
                let month = now.saturating_sub(back);
                h.roll_to(now);
                let kept = h.add(month, spend, flights);
                // Each month is off by at most a unit and a half of the
                // coarsest unit it was kept in.
                unit = unit.max(h.unit_cny());
                prop_assert_eq!(kept, month + 11 >= now);
                if kept {
                    all.push((month, spend, flights));
                }
                let window: Vec<_> = all.iter().filter(|e| e.0 + 11 >= now).collect();
                let spend: f64 = window.iter().map(|e| e.1).sum();
                let flights: u16 = window.iter().map(|e| e.2 as u16).sum();
                prop_assert_eq!(h.month(), Some(now));
                prop_assert_eq!(h.flights(), flights);
                let tolerance = 1.5 * unit * 12.0 + 1e-6;
                prop_assert!((h.spend() - spend).abs() <= tolerance, "{} {}", h.spend(), spend);
            }
        }
    }
}

/// Resident bytes a member of the member store, with the monthly history:
/// `cargo test --test rolling_window -- --ignored --nocapture` (Linux; 10
/// million members unless `MEMBERS` says otherwise). The members are copies
/// of one synthetic member under ids `M00000000` and up, put into an empty
/// store as a members file or a bulk load does (the map grows as it fills).
#[test]
#[ignore]
fn member_store_bytes_per_member() {
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    let n: u32 = std::env::var("MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let m = offer_engine::synth::member_monthly(1, 1, d, &TierThresholds::default());
    let store = offer_engine::state::members::MemberStore::new();
    let before = resident();
    for i in 0..n {
        let mut x = m;
        x.points = i;
        store.upsert(&format!("M{i:08}"), x);
    }
    let after = resident();
    assert_eq!(store.len(), n as usize);
    println!(
        "{n} members: {} resident bytes a member in the store (record {} bytes)",
        (after - before) / n as u64,
        std::mem::size_of::<offer_engine::domain::Member>()
    );
    // One month start over the whole store (what the first record of a
    // month costs the log's writer thread).
    let th = TierThresholds::default();
    let next = m.history.month().unwrap() + 1;
    let t = std::time::Instant::now();
    store.update_all(|x| offer_engine::events::start_month(x, next, &th));
    println!(
        "one month start over {n} members: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(store.get("M00000000").unwrap().history.month(), Some(next));
}
