//! Apply is a deterministic function of the records: the same records give
//! the same state, whenever and wherever they are applied. Thousands of
//! records of every kind (checkout and campaign decisions, impressions,
//! clicks, accepts, declines, fulfilments weeks later, points accepts (some
//! refused at apply) and refunds (some twice), member writes and
//! events, members with monthly histories that age out at month starts,
//! erasures) are applied to two fresh states at different wall-clock
//! times; their snapshots must be byte-identical and their digests equal. A
//! third state restored from a snapshot taken half-way, then fed the rest,
//! must reach the same digest (the digest does not depend on the order the
//! maps were filled in).

use chrono::NaiveDate;
use offer_engine::domain::{Channel, ConsentChannel, Tier, TierThresholds};
use offer_engine::events::{MemberChange, OutcomeKind, OutcomeRecord};
use offer_engine::experiments::Assignment;
use offer_engine::features::N_FEATURES;
use offer_engine::records::{DecisionRecord, InventoryKey, IssuedOffer, OutcomeRecordV2};
use offer_engine::state::{LogRecord, MemberWire, State, StateSettings};

const MEMBERS: u64 = 300;
const DECISIONS: u64 = 3_000;
const BASE_MS: i64 = 1_795_000_000_000;
const DAY_MS: i64 = 86_400_000;

fn state() -> State {
    State::new(StateSettings {
        max_decisions: 100_000,
        thresholds: TierThresholds::default(),
        learning: Default::default(),
    })
}

fn member_id(i: u64) -> String {
    offer_engine::synth::member_id(i % MEMBERS)
}

fn assignment(i: u64) -> Vec<Assignment> {
    vec![Assignment {
        experiment: "nbo-model-vs-priority".into(),
        variant: ["control", "model", "holdout"][(i % 3) as usize].into(),
    }]
}

fn decision(i: u64, at_ms: i64) -> DecisionRecord {
    let offers = ["upg-biz-dom-cash", "lounge-dom", "seat-extra-legroom"];
    DecisionRecord {
        id: format!("d{i}"),
        member_id: member_id(i),
        channel: Channel::Checkout,
        created_ms: at_ms,
        offers: offers
            .iter()
            .enumerate()
            .map(|(k, o)| IssuedOffer {
                offer_id: o.to_string(),
                price: None,
                points_price: None,
                expires_ms: at_ms + 3_600_000,
                inventory: (k == 0).then_some((
                    InventoryKey::Flight {
                        origin: *b"PEK",
                        destination: *b"SHA",
                        departure_min: (at_ms / 60_000) + 10_000,
                    },
                    2,
                )),
                suppress_days: 30,
                propensity: 0.5,
            })
            .collect(),
        experiments: assignment(i),
        covariate: (i % 97) as f32 * 100.0,
        features: (0..N_FEATURES)
            .map(|j| ((i as usize * 7 + j) % 5) as f32 / 4.0)
            .collect(),
    }
}

fn outcome(d: &DecisionRecord, pos: usize, kind: OutcomeKind, at_ms: i64) -> LogRecord {
    let o = &d.offers[pos];
    LogRecord::Outcomes(vec![OutcomeRecord {
        decision_id: d.id.clone(),
        offer_pos: pos as u8,
        offer_id: o.offer_id.clone(),
        member_id: d.member_id.clone(),
        kind,
        revenue: if kind == OutcomeKind::Accept {
            120.0
        } else {
            0.0
        },
        at_ms,
        client_at_ms: None,
        inventory: if kind == OutcomeKind::Accept {
            o.inventory.clone()
        } else {
            None
        },
        suppress_days: o.suppress_days,
        experiments: if kind == OutcomeKind::Accept {
            d.experiments.clone()
        } else {
            Vec::new()
        },
        learn: matches!(kind, OutcomeKind::Accept | OutcomeKind::Fulfilled),
    }])
}

/// The same outcome as a version-2 record redeeming `points` (accepts) or
/// giving an accept back (refunds).
fn valued(d: &DecisionRecord, pos: usize, kind: OutcomeKind, at_ms: i64, points: u64) -> LogRecord {
    let LogRecord::Outcomes(mut v) = outcome(d, pos, kind, at_ms) else {
        unreachable!("outcome makes outcome records")
    };
    v[0].inventory = d.offers[pos].inventory.clone();
    v[0].experiments = d.experiments.clone();
    LogRecord::OutcomesV2(
        v.into_iter()
            .map(|o| OutcomeRecordV2 {
                outcome: o,
                value: 95.5,
                points,
                points_cost: 4.0,
                // Accepts without points use the member's upgrade voucher
                // (a second in the year is refused at apply).
                voucher: points == 0,
            })
            .collect(),
    )
}

/// A log of every kind of record, in time order.
fn history() -> Vec<LogRecord> {
    let th = TierThresholds::default();
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut timed: Vec<(i64, u64, LogRecord)> = Vec::new();
    let mut seq = 0u64;
    let mut push = |at: i64, r: LogRecord| {
        seq += 1;
        timed.push((at, seq, r));
    };
    push(
        BASE_MS - 1,
        LogRecord::Members(
            (0..MEMBERS)
                .map(|i| {
                    let m = offer_engine::synth::member(7, i, as_of, &th);
                    (member_id(i), MemberWire::from(&m))
                })
                .collect(),
        ),
    );
    for i in 0..DECISIONS {
        // One decision every 20 minutes: the log spans about six weeks.
        let at = BASE_MS + i as i64 * 1_200_000;
        let d = decision(i, at);
        match i % 11 {
            0 => push(
                at + 60_000,
                outcome(&d, 1, OutcomeKind::Decline, at + 60_000),
            ),
            1 | 2 => {
                push(
                    at + 1_000,
                    outcome(&d, 0, OutcomeKind::Impression, at + 1_000),
                );
                push(at + 2_000, outcome(&d, 0, OutcomeKind::Click, at + 2_000));
                push(at + 3_000, outcome(&d, 0, OutcomeKind::Accept, at + 3_000));
                // Flown three weeks later, long after the offer expired.
                push(
                    at + 21 * DAY_MS,
                    outcome(&d, 0, OutcomeKind::Fulfilled, at + 21 * DAY_MS),
                );
            }
            3 => push(at + 5_000, outcome(&d, 2, OutcomeKind::Accept, at + 5_000)),
            // Points accepts (some members cannot pay: refused at apply),
            // some refunded days later, some refunded twice.
            4 | 5 => {
                push(
                    at + 4_000,
                    valued(&d, 0, OutcomeKind::Accept, at + 4_000, 3_000 * (i % 5)),
                );
                if i % 11 == 5 {
                    for k in 0..1 + (i % 2) as i64 {
                        let t = at + 2 * DAY_MS + k;
                        push(t, valued(&d, 0, OutcomeKind::Refunded, t, 0));
                    }
                }
            }
            _ => {}
        }
        push(at, LogRecord::Decision(d));
        if i % 100 == 50 {
            // A campaign block: decisions without features.
            let block = (0..20)
                .map(|k| {
                    let mut c = decision(DECISIONS + i * 20 + k, at);
                    c.id = format!("cmp-c{i}-{}", c.member_id);
                    c.channel = Channel::Email;
                    c.features.clear();
                    c
                })
                .collect();
            push(at, LogRecord::Decisions(block));
        }
        if i % 500 == 250 {
            // A member replaced with a dated monthly history (the current record form).
            let k = i % MEMBERS;
            let mut m = offer_engine::synth::member(7, k, as_of, &th);
            let month =
                offer_engine::domain::month_of(offer_engine::domain::Day((at / DAY_MS) as i32));
            m.history = offer_engine::domain::MonthlyHistory::from_months(&[
                (month, 3_000.0, 2),
                (month - 3, 45_000.0, 5),
            ]);
            m.refresh_totals();
            push(
                at,
                LogRecord::MembersV2(vec![(
                    member_id(k),
                    offer_engine::state::MemberWireV2::from(&m),
                )]),
            );
        }
        let change = match i % 13 {
            0 => Some(MemberChange::FlightFlown {
                day: (at / DAY_MS) as i32,
                spend: 2_500.0,
                points: 1_200,
            }),
            1 => Some(MemberChange::PointsEarned(500)),
            2 => Some(MemberChange::PointsRedeemed(300)),
            3 => Some(MemberChange::TierChanged(Tier::Gold)),
            4 => Some(MemberChange::ConsentChanged(
                ConsentChannel::Email,
                i % 2 == 0,
            )),
            5 => Some(MemberChange::Purchase {
                qualifying_amount: 800.0,
            }),
            _ => None,
        };
        if let Some(change) = change {
            push(
                at + 30_000,
                LogRecord::MemberChange {
                    member_id: member_id(i + 5),
                    at_ms: at + 30_000,
                    change,
                },
            );
        }
        if i % 401 == 400 {
            push(
                at + 40_000,
                LogRecord::MemberErased {
                    member_id: member_id(i),
                    at_ms: at + 40_000,
                },
            );
        }
    }
    timed.sort_by_key(|(at, seq, _)| (*at, *seq));
    timed.into_iter().map(|(_, _, r)| r).collect()
}

fn apply_all(state: &State, records: &[LogRecord], first_lsn: u64) {
    for (k, r) in records.iter().enumerate() {
        // Through the bytes, as replay reads them.
        let r = LogRecord::decode(&r.encode()).expect("decodes");
        state.apply(&r, first_lsn + k as u64, false);
    }
}

#[test]
fn the_same_records_give_the_same_state() {
    let log = history();
    assert!(log.len() > 5_000, "{} records", log.len());
    let a = state();
    apply_all(&a, &log, 1);
    // Later on the wall clock, in another state.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let b = state();
    apply_all(&b, &log, 1);
    let (sa, sb) = (a.snapshot_bytes(), b.snapshot_bytes());
    assert!(
        sa == sb,
        "snapshots differ ({} and {} bytes)",
        sa.len(),
        sb.len()
    );
    let (da, db) = (a.digest(), b.digest());
    assert_eq!(da, db);
    assert_eq!(da.applied, log.len() as u64);

    // The state says what the records did: accepts counted once per unit,
    // fulfilments learned, erased members gone.
    assert!(a.members().get(&member_id(400)).is_none());
    let p = a.learner().posterior("upg-biz-dom-cash").expect("learned");
    assert!(p.accepts > 0);

    // A snapshot half-way plus the rest reaches the same digest, though its
    // maps were filled in another order.
    let half = log.len() / 2;
    let first = state();
    apply_all(&first, &log[..half], 1);
    let restored = state();
    restored
        .restore(&first.snapshot_bytes(), half as u64)
        .expect("restores");
    apply_all(&restored, &log[half..], half as u64 + 1);
    assert_eq!(restored.digest(), da);

    // A different history gives a different digest.
    let c = state();
    apply_all(&c, &log[..log.len() - 1], 1);
    assert_ne!(c.digest().digest, da.digest);
}
