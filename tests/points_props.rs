//! Property tests of points redemption, capped inventory and refunds, at
//! the state: what the request path checks before logging is only a first
//! look; what holds is decided where records are applied, in log order.
//!
//! Each case builds one member with a generated balance and a set of
//! decisions, each offering a points-priced, capped offer on the same
//! flight. Accepts are "concurrent": each reserves through the ledger as the
//! request path does and is built against the state as it was before any of
//! them was applied, so every one of them passed the balance check. They
//! and refunds (some duplicated, some of offers never accepted) are then
//! applied in a generated log order. Properties:
//! - the member's balance never goes below zero and always equals the
//!   starting balance less the points of the accepts applied and not refunded;
//! - committed units never exceed the cap, and equal the accepts applied and
//!   not refunded;
//! - a refund gives back exactly what its accept took (points, unit,
//!   experiment revenue and value), once: a second refund of the same accept
//!   is refused and changes nothing;
//! - a refused batch changes nothing at all (state digest unchanged).

use proptest::prelude::*;

use offer_engine::domain::{Channel, Tier, TierThresholds};
use offer_engine::events::{OutcomeKind, OutcomeRecord};
use offer_engine::experiments::{parse_experiments, Assignment, DEFAULT_EXPERIMENTS};
use offer_engine::records::{DecisionRecord, InventoryKey, IssuedOffer, OutcomeRecordV2};
use offer_engine::state::{LogRecord, MemberWire, Refusal, State, StateSettings};

const BASE_MS: i64 = 1_795_000_000_000;
const MEMBER: &str = "M00000001";
const OFFER: &str = "upg-biz-dom-points";

fn state() -> State {
    State::new(StateSettings {
        max_decisions: 10_000,
        thresholds: TierThresholds::default(),
        learning: Default::default(),
    })
}

fn key() -> InventoryKey {
    InventoryKey::Flight {
        origin: *b"PEK",
        destination: *b"CAN",
        departure_min: BASE_MS / 60_000 + 5_000,
    }
}

fn assignment() -> Assignment {
    let spec = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
    Assignment {
        experiment: spec.id.clone(),
        variant: spec.variants[spec.control()].name.clone(),
    }
}

fn decision(i: usize, points: u64, cap: u32) -> DecisionRecord {
    DecisionRecord {
        id: format!("d{i}"),
        member_id: MEMBER.into(),
        channel: Channel::Checkout,
        created_ms: BASE_MS + i as i64,
        offers: vec![IssuedOffer {
            offer_id: OFFER.into(),
            price: None,
            points_price: Some(points),
            expires_ms: BASE_MS + 3_600_000,
            inventory: Some((key(), cap)),
            suppress_days: 30,
            propensity: 1.0,
        }],
        experiments: vec![assignment()],
        covariate: 100.0,
        features: Vec::new(),
    }
}

fn record(d: &DecisionRecord, kind: OutcomeKind, at_ms: i64) -> OutcomeRecordV2 {
    let o = &d.offers[0];
    let points = o.points_price.unwrap_or(0);
    let accept = kind == OutcomeKind::Accept;
    OutcomeRecordV2 {
        outcome: OutcomeRecord {
            decision_id: d.id.clone(),
            offer_pos: 0,
            offer_id: o.offer_id.clone(),
            member_id: d.member_id.clone(),
            kind,
            revenue: 0.0,
            at_ms,
            client_at_ms: None,
            inventory: o.inventory.clone(),
            suppress_days: 30,
            experiments: d.experiments.clone(),
            learn: accept,
        },
        // Value and points as the request path computes them; a refund's
        // are taken from the accept it reverses whatever the record says.
        value: 450.0 + points as f64 / 1000.0,
        points,
        points_cost: 0.0,
        voucher: false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Accept(usize),
    Refund(usize),
}

fn committed_units(s: &State) -> u32 {
    s.ledger().units(OFFER, &key()).committed
}

fn balance(s: &State) -> u64 {
    s.members()
        .get(MEMBER)
        .map(|m| m.points as u64)
        .unwrap_or(0)
}

fn control_value(s: &State) -> (f64, f64) {
    let spec = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
    let r = s.experiments().report(spec, s.log_time_ms());
    let row = &r.variants[spec.control()];
    (
        row.revenue_per_member.mean,
        row.value_per_member.as_ref().map(|v| v.mean).unwrap_or(0.0),
    )
}

fn arb_case() -> impl Strategy<Value = (u32, u32, Vec<u64>, Vec<Op>)> {
    (
        0u32..120_000,
        1u32..6,
        prop::collection::vec(
            prop::sample::select(vec![0u64, 4_000, 25_000, 25_000, 60_000]),
            1..10,
        ),
    )
        .prop_flat_map(|(balance, cap, prices)| {
            let n = prices.len();
            let op = prop_oneof![
                3 => (0..n).prop_map(Op::Accept),
                2 => (0..n).prop_map(Op::Refund),
            ];
            (
                Just(balance),
                Just(cap),
                Just(prices),
                prop::collection::vec(op, 1..25),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn accepts_never_overspend_and_refunds_give_back_once(
        (start, cap, prices, ops) in arb_case(),
    ) {
        let s = state();
        let th = TierThresholds::default();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let mut m = offer_engine::synth::member(1, 1, day, &th);
        m.points = start;
        m.tier = Tier::Gold;
        s.apply(&LogRecord::Members(vec![(MEMBER.into(), MemberWire::from(&m))]), 1, false);
        let decisions: Vec<DecisionRecord> = prices
            .iter()
            .enumerate()
            .map(|(i, p)| decision(i, *p, cap))
            .collect();
        for (i, d) in decisions.iter().enumerate() {
            s.apply(&LogRecord::Decision(d.clone()), 2 + i as u64, false);
        }
        // Every accept passes the request path's balance check against the
        // state as it is now (they are concurrent) and reserves its unit.
        let mut reserved = vec![false; decisions.len()];
        for op in &ops {
            if let Op::Accept(i) = op {
                if reserved[*i] {
                    continue;
                }
                let live = s.ledger().decision(&decisions[*i].id, i64::MIN).unwrap();
                if s.ledger().reserve_accept(&live, 0).is_ok() {
                    reserved[*i] = true;
                }
            }
        }
        let mut accepted = vec![false; decisions.len()];
        let mut refunded = vec![false; decisions.len()];
        let mut lsn = 100;
        for (k, op) in ops.iter().enumerate() {
            let at = BASE_MS + 60_000 + k as i64;
            let (i, rec) = match op {
                Op::Accept(i) if reserved[*i] && !accepted[*i] => {
                    (*i, record(&decisions[*i], OutcomeKind::Accept, at))
                }
                Op::Accept(_) => continue,
                Op::Refund(i) => (*i, record(&decisions[*i], OutcomeKind::Refunded, at)),
            };
            let before = (s.digest().parts, balance(&s), committed_units(&s), control_value(&s));
            lsn += 1;
            let applied = s.apply(&LogRecord::OutcomesV2(vec![rec.clone()]), lsn, true);
            match (op, applied.refused) {
                (Op::Accept(_), None) => {
                    prop_assert!(before.1 >= rec.points, "an accept spent points the member lacked");
                    prop_assert_eq!(balance(&s), before.1 - rec.points);
                    accepted[i] = true;
                }
                (Op::Accept(_), Some((0, Refusal::Points { balance: b, due }))) => {
                    prop_assert!(b < due && b == before.1 && due == rec.points);
                    // The request path releases the reservation of a refused batch.
                    let live = s.ledger().decision(&decisions[i].id, i64::MIN).unwrap();
                    s.ledger().release_accept(&live, 0);
                    reserved[i] = false;
                }
                (Op::Refund(_), None) => {
                    prop_assert!(accepted[i] && !refunded[i], "a refund without an open accept applied");
                    prop_assert_eq!(balance(&s), before.1 + rec.points, "points given back");
                    prop_assert_eq!(committed_units(&s), before.2 - 1, "the unit given back");
                    refunded[i] = true;
                }
                (Op::Refund(_), Some((0, why))) => {
                    let expected = if accepted[i] { Refusal::AlreadyRefunded } else { Refusal::NotAccepted };
                    prop_assert_eq!(why, expected);
                }
                (_, other) => prop_assert!(false, "unexpected refusal {:?}", other),
            }
            if applied.refused.is_some() {
                let after = (s.digest().parts, balance(&s), committed_units(&s), control_value(&s));
                prop_assert_eq!(&after.0, &before.0, "a refused batch changed the state");
            }
            // The invariants after every record.
            let held: u64 = (0..decisions.len())
                .filter(|j| accepted[*j] && !refunded[*j])
                .map(|j| prices[j])
                .sum();
            prop_assert!(held <= start as u64);
            prop_assert_eq!(balance(&s), start as u64 - held);
            let units = (0..decisions.len()).filter(|j| accepted[*j] && !refunded[*j]).count() as u32;
            prop_assert!(committed_units(&s) <= cap);
            prop_assert_eq!(committed_units(&s), units);
        }
        // Every accept refunded: revenue and value are back where they started.
        for (i, d) in decisions.iter().enumerate() {
            if accepted[i] && !refunded[i] {
                lsn += 1;
                let r = s.apply(
                    &LogRecord::OutcomesV2(vec![record(d, OutcomeKind::Refunded, BASE_MS + 120_000)]),
                    lsn,
                    true,
                );
                prop_assert!(r.refused.is_none());
            }
        }
        let (revenue, value) = control_value(&s);
        prop_assert!(revenue.abs() < 1e-9 && value.abs() < 1e-6, "revenue {} value {}", revenue, value);
        prop_assert_eq!(balance(&s), start as u64);
        prop_assert_eq!(committed_units(&s), 0);
    }
}

/// Two accepts of one member in one batch share the balance: the batch is
/// refused as a whole when together they exceed it, and nothing of it applies.
#[test]
fn a_batch_is_refused_whole_when_its_accepts_together_overspend() {
    let s = state();
    let th = TierThresholds::default();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut m = offer_engine::synth::member(1, 1, day, &th);
    m.points = 40_000;
    s.apply(
        &LogRecord::Members(vec![(MEMBER.into(), MemberWire::from(&m))]),
        1,
        false,
    );
    let (a, b) = (decision(0, 25_000, 5), decision(1, 25_000, 5));
    s.apply(&LogRecord::Decisions(vec![a.clone(), b.clone()]), 2, false);
    let before = s.digest().parts;
    let r = s.apply(
        &LogRecord::OutcomesV2(vec![
            record(&a, OutcomeKind::Accept, BASE_MS + 1_000),
            record(&b, OutcomeKind::Accept, BASE_MS + 1_000),
        ]),
        3,
        false,
    );
    assert_eq!(
        r.refused,
        Some((
            1,
            Refusal::Points {
                balance: 15_000,
                due: 25_000
            }
        ))
    );
    assert_eq!(s.digest().parts, before);
    assert_eq!(balance(&s), 40_000);
}

/// A refund after the attribution window closes is refused; one inside it
/// is applied, survives a snapshot, and a second is refused after the restore.
#[test]
fn refunds_close_with_the_window_and_survive_snapshots() {
    let s = state();
    let th = TierThresholds::default();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut m = offer_engine::synth::member(1, 1, day, &th);
    m.points = 70_000;
    s.apply(
        &LogRecord::Members(vec![(MEMBER.into(), MemberWire::from(&m))]),
        1,
        false,
    );
    let (a, b) = (decision(0, 25_000, 5), decision(1, 4_000, 5));
    s.apply(&LogRecord::Decisions(vec![a.clone(), b.clone()]), 2, false);
    s.apply(
        &LogRecord::OutcomesV2(vec![
            record(&a, OutcomeKind::Accept, BASE_MS + 1_000),
            record(&b, OutcomeKind::Accept, BASE_MS + 1_000),
        ]),
        3,
        false,
    );
    assert_eq!(balance(&s), 41_000);
    let window = s.refund_window_ms();
    let late = s.apply(
        &LogRecord::OutcomesV2(vec![record(
            &a,
            OutcomeKind::Refunded,
            a.created_ms + window + 1,
        )]),
        4,
        false,
    );
    assert_eq!(late.refused, Some((0, Refusal::WindowClosed)));
    let ok = s.apply(
        &LogRecord::OutcomesV2(vec![record(
            &b,
            OutcomeKind::Refunded,
            b.created_ms + window,
        )]),
        5,
        false,
    );
    assert_eq!(ok.refused, None);
    assert_eq!(balance(&s), 45_000);
    let restored = state();
    restored.restore(&s.snapshot_bytes(), 5).unwrap();
    assert_eq!(restored.digest().digest, s.digest().digest);
    let again = restored.apply(
        &LogRecord::OutcomesV2(vec![record(
            &b,
            OutcomeKind::Refunded,
            b.created_ms + window,
        )]),
        6,
        false,
    );
    assert_eq!(again.refused, Some((0, Refusal::AlreadyRefunded)));
}

/// Members of generated tiers accept the business upgrade whose last 2 of 4
/// seats per flight the default catalog keeps for platinum and diamond.
/// Each reserves within the part of the cap it may take, as the request path
/// does, and the records are applied in a generated log order (another
/// order than the reservations': they are concurrent).
fn reserve_case() -> impl Strategy<Value = (Vec<Tier>, Vec<usize>)> {
    prop::collection::vec(prop::sample::select(Tier::ALL.to_vec()), 1..12).prop_flat_map(|tiers| {
        let order: Vec<usize> = (0..tiers.len()).collect();
        (Just(tiers), Just(order).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn reserved_units_go_only_to_the_tiers_they_are_kept_for((tiers, order) in reserve_case()) {
        const SEATS: &str = "upg-biz-intl-cash";
        let engine = offer_engine::decision::Engine::embedded_default();
        let (_, offer) = engine.catalog.get(SEATS).unwrap();
        let inv = offer.inventory.clone().unwrap();
        let reserve = inv.reserve.clone().unwrap();
        let s = state();
        let th = TierThresholds::default();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let members: Vec<(String, offer_engine::domain::Member)> = tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut m = offer_engine::synth::member(3, i as u64, day, &th);
                m.tier = *t;
                (format!("R{i:08}"), m)
            })
            .collect();
        s.apply(
            &LogRecord::Members(members.iter().map(|(id, m)| (id.clone(), MemberWire::from(m))).collect()),
            1,
            false,
        );
        let today = offer_engine::domain::Day::of(chrono::DateTime::from_timestamp_millis(BASE_MS).unwrap());
        let mut records = Vec::new();
        for (i, (id, m)) in members.iter().enumerate() {
            let mut d = decision(i, 0, inv.cap);
            d.id = format!("r{i}");
            d.member_id = id.clone();
            d.offers[0].offer_id = SEATS.into();
            d.offers[0].points_price = None;
            s.apply(&LogRecord::Decision(d.clone()), 2 + i as u64, false);
            let cap = offer.cap_for(inv.cap, Some(m), today);
            let may_take = if reserve.tiers.contains(&m.tier) { inv.cap } else { inv.cap - reserve.units };
            prop_assert_eq!(cap, may_take);
            let live = s.ledger().decision(&d.id, i64::MIN).unwrap();
            if s.ledger().reserve_accept_within(&live, 0, cap).is_ok() {
                let mut r = record(&d, OutcomeKind::Accept, BASE_MS + 1_000 + i as i64);
                r.points = 0;
                r.outcome.inventory = Some((key(), cap));
                records.push((i, r));
            }
        }
        prop_assert!(records.len() as u32 <= inv.cap);
        let mut lsn = 100;
        for k in &order {
            let Some((i, r)) = records.iter().find(|(i, _)| i == k) else { continue };
            let entitled = reserve.tiers.contains(&members[*i].1.tier);
            let before = s.ledger().units(SEATS, &key()).committed;
            lsn += 1;
            let applied = s.apply(&LogRecord::OutcomesV2(vec![r.clone()]), lsn, true);
            let after = s.ledger().units(SEATS, &key()).committed;
            match applied.refused {
                None => {
                    prop_assert_eq!(after, before + 1);
                    if !entitled {
                        prop_assert!(after <= inv.cap - reserve.units, "a kept seat went to a {:?} member", members[*i].1.tier);
                    }
                }
                Some((0, Refusal::SoldOut)) => {
                    prop_assert_eq!(after, before);
                    let limit = if entitled { inv.cap } else { inv.cap - reserve.units };
                    prop_assert!(before >= limit);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            prop_assert!(after <= inv.cap);
        }
    }
}

/// A gold member's upgrade voucher: offered instead of the paid upgrades
/// while unused; of two concurrent accepts of it (two decisions) the second
/// in log order is refused; once used, the paid upgrades are offered again;
/// a refund gives it back; a base member never sees it.
#[test]
fn an_upgrade_voucher_is_offered_first_used_once_and_given_back_by_a_refund() {
    use offer_engine::decision::{decide, Constraints, DecisionInput, Engine, Ranking};
    use offer_engine::domain::{Cabin, Iata, Itinerary, Money};
    struct Voucher(bool);
    impl Constraints for Voucher {
        fn voucher_unused(&self) -> bool {
            self.0
        }
    }
    let engine = Engine::embedded_default();
    let th = TierThresholds::default();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let now = chrono::DateTime::from_timestamp_millis(BASE_MS).unwrap();
    let mut m = offer_engine::synth::member(1, 1, day, &th);
    m.tier = Tier::Gold;
    let it = Itinerary {
        origin: Iata::from_bytes(*b"PEK"),
        destination: Iata::from_bytes(*b"SHA"),
        departure: now + chrono::Duration::days(5),
        cabin: Cabin::Economy,
        fare: Money {
            amount: 1280.0,
            currency: "CNY".into(),
        },
        passengers: 1,
    };
    let upgrades = |member: &offer_engine::domain::Member, unused: bool| -> Vec<String> {
        let d = decide(
            &engine,
            &DecisionInput {
                member: Some(member),
                itinerary: Some(&it),
                channel: Channel::Checkout,
                now,
                max_offers: 10,
                ranking: Ranking::Model,
            },
            &Voucher(unused),
        );
        d.offers
            .iter()
            .map(|o| &engine.catalog.offers[o.index])
            .filter(|o| o.category == offer_engine::domain::Category::Upgrade)
            .map(|o| o.id.clone())
            .collect()
    };
    assert_eq!(upgrades(&m, true), vec!["upg-voucher-biz".to_string()]);
    let paid = upgrades(&m, false);
    assert!(paid.len() == 1 && paid[0] != "upg-voucher-biz", "{paid:?}");
    let mut base = m;
    base.tier = Tier::Base;
    assert!(!upgrades(&base, true).contains(&"upg-voucher-biz".to_string()));

    let s = state();
    s.apply(
        &LogRecord::Members(vec![(MEMBER.into(), MemberWire::from(&m))]),
        1,
        false,
    );
    let (a, b) = (decision(0, 0, 4), decision(1, 0, 4));
    s.apply(&LogRecord::Decisions(vec![a.clone(), b.clone()]), 2, false);
    let voucher = |d: &DecisionRecord, kind: OutcomeKind, at: i64| {
        let mut r = record(d, kind, at);
        r.points = 0;
        r.voucher = true;
        LogRecord::OutcomesV2(vec![r])
    };
    let year = offer_engine::records::voucher_year(BASE_MS + 1_000);
    assert!(s
        .apply(&voucher(&a, OutcomeKind::Accept, BASE_MS + 1_000), 3, true)
        .refused
        .is_none());
    assert!(s.ledger().voucher_used(MEMBER, year));
    assert_eq!(
        s.apply(&voucher(&b, OutcomeKind::Accept, BASE_MS + 1_001), 4, true)
            .refused,
        Some((0, Refusal::VoucherUsed))
    );
    // Survives a snapshot.
    let restored = state();
    restored.restore(&s.snapshot_bytes(), 4).unwrap();
    assert!(restored.ledger().voucher_used(MEMBER, year));
    assert!(s
        .apply(
            &voucher(&a, OutcomeKind::Refunded, BASE_MS + 2_000),
            5,
            true
        )
        .refused
        .is_none());
    assert!(!s.ledger().voucher_used(MEMBER, year));
    assert!(s
        .apply(&voucher(&b, OutcomeKind::Accept, BASE_MS + 3_000), 6, true)
        .refused
        .is_none());
    // A new year, a new voucher.
    assert!(!s.ledger().voucher_used(MEMBER, year + 1));
}

/// Two accepts of one offer of one decision (two replicas' request paths
/// both passed before either was applied) are decided at apply: the first in
/// log order is applied, the second is refused and changes nothing, whether
/// it comes in a later record, in the same batch, or after a snapshot.
#[test]
fn a_second_accept_of_one_offer_is_refused_at_apply() {
    let s = state();
    let th = TierThresholds::default();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut m = offer_engine::synth::member(1, 1, day, &th);
    m.points = 70_000;
    s.apply(
        &LogRecord::Members(vec![(MEMBER.into(), MemberWire::from(&m))]),
        1,
        false,
    );
    let (a, b) = (decision(0, 25_000, 5), decision(1, 4_000, 5));
    s.apply(&LogRecord::Decisions(vec![a.clone(), b.clone()]), 2, false);
    let first = s.apply(
        &LogRecord::OutcomesV2(vec![record(&a, OutcomeKind::Accept, BASE_MS + 1_000)]),
        3,
        false,
    );
    assert_eq!(first.refused, None);
    assert_eq!((balance(&s), committed_units(&s)), (45_000, 1));
    let before = s.digest().parts;
    let again = s.apply(
        &LogRecord::OutcomesV2(vec![record(&a, OutcomeKind::Accept, BASE_MS + 1_500)]),
        4,
        false,
    );
    assert_eq!(again.refused, Some((0, Refusal::AlreadyAccepted)));
    assert_eq!((balance(&s), committed_units(&s)), (45_000, 1));
    assert_eq!(s.digest().parts, before);
    // Twice in one batch: the batch is refused as a whole at the repeat.
    let twice = s.apply(
        &LogRecord::OutcomesV2(vec![
            record(&b, OutcomeKind::Accept, BASE_MS + 2_000),
            record(&b, OutcomeKind::Accept, BASE_MS + 2_000),
        ]),
        5,
        false,
    );
    assert_eq!(twice.refused, Some((1, Refusal::AlreadyAccepted)));
    assert_eq!((balance(&s), committed_units(&s)), (45_000, 1));
    // The accept held survives a snapshot: a repeat after a restore is refused too.
    let restored = state();
    restored.restore(&s.snapshot_bytes(), 5).unwrap();
    let after = restored.apply(
        &LogRecord::OutcomesV2(vec![record(&a, OutcomeKind::Accept, BASE_MS + 3_000)]),
        6,
        false,
    );
    assert_eq!(after.refused, Some((0, Refusal::AlreadyAccepted)));
}
