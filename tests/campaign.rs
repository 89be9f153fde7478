//! Campaign generation through the library: consent, filters against a
//! brute-force filter (property test), holdout, determinism.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use chrono::{TimeZone, Utc};
use offer_engine::decision::Engine;
use offer_engine::domain::{ConsentChannel, Day, TierThresholds};
use offer_engine::experiments::parse_experiments;
use offer_engine::service::campaigns::{
    self as campaign, CampaignDto, CampaignSink, Format, Recorder,
};
use offer_engine::state::ledger::DecisionRecord;
use offer_engine::state::members::MemberStore;
use proptest::prelude::*;

#[derive(Default)]
struct Capture {
    out: Vec<u8>,
    records: Vec<DecisionRecord>,
}

impl CampaignSink for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

#[derive(Default)]
struct Records(Vec<DecisionRecord>);

impl Recorder for Records {
    fn record(&mut self, records: Vec<DecisionRecord>) -> std::io::Result<()> {
        self.0.extend(records);
        Ok(())
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

fn store(n: u64) -> MemberStore {
    let s = MemberStore::new();
    let lines: String =
        offer_engine::synth::population_lines(42, n, now().date_naive(), TierThresholds::default())
            .map(|l| l + "\n")
            .collect();
    s.load_ndjson(lines.as_bytes()).unwrap();
    s
}

fn engine() -> Engine {
    Engine::embedded_default().with_experiments(
        parse_experiments(offer_engine::experiments::DEFAULT_EXPERIMENTS).unwrap(),
    )
}

fn run(engine: &Engine, store: &MemberStore, dto: CampaignDto, format: Format) -> Capture {
    let c = dto.into_campaign(now()).unwrap();
    let mut sink = Capture::default();
    let mut records = Records::default();
    let opts = campaign::RunOptions {
        daily_cap: usize::MAX,
        suppress_days_default: 30,
        record: true,
        format,
        threads: 2,
        tokens: None,
    };
    campaign::run(
        engine,
        &c,
        store,
        None,
        opts,
        &mut sink,
        Some(&mut records),
        &AtomicBool::new(false),
    )
    .unwrap();
    sink.records = records.0;
    sink
}

fn lines(c: &Capture) -> Vec<serde_json::Value> {
    String::from_utf8(c.out.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn opted_out_members_never_appear() {
    let s = store(6_000);
    let e = engine();
    for (ch, consent) in [
        ("email", ConsentChannel::Email),
        ("sms", ConsentChannel::Sms),
        ("app", ConsentChannel::App),
    ] {
        let out = run(
            &e,
            &s,
            CampaignDto {
                channel: ch.into(),
                ..Default::default()
            },
            Format::Ndjson,
        );
        let ls = lines(&out);
        assert!(ls.len() > 100, "{ch}: {}", ls.len());
        for l in ls {
            let m = s.get(l["member_id"].as_str().unwrap()).unwrap();
            assert!(m.consent.granted(consent), "{ch}: {l}");
            assert!(!l["offers"].as_array().unwrap().is_empty());
        }
    }
}

#[test]
fn holdout_members_are_recorded_but_not_written() {
    let s = store(4_000);
    let e = engine();
    let out = run(
        &e,
        &s,
        CampaignDto {
            channel: "email".into(),
            ..Default::default()
        },
        Format::Ndjson,
    );
    let written: BTreeSet<String> = lines(&out)
        .iter()
        .map(|l| l["member_id"].as_str().unwrap().to_string())
        .collect();
    let holdout: Vec<&DecisionRecord> = out
        .records
        .iter()
        .filter(|r| r.experiments.iter().any(|a| a.variant == "holdout"))
        .collect();
    assert!(holdout.len() > 50);
    for r in holdout {
        assert!(r.offers.is_empty());
        assert!(
            !written.contains(&r.member_id),
            "holdout member {} was written",
            r.member_id
        );
    }
    // Every written line has a recorded decision with the same id and offers.
    for l in lines(&out) {
        let r = out
            .records
            .iter()
            .find(|r| r.id == l["decision_id"])
            .expect("recorded");
        let ids: Vec<&str> = r.offers.iter().map(|o| o.offer_id.as_str()).collect();
        let shown: Vec<&str> = l["offers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["offer_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, shown);
    }
}

#[test]
fn same_state_same_file() {
    let e = engine();
    let dto = CampaignDto {
        channel: "email".into(),
        tiers: Some(vec!["silver".into(), "gold".into()]),
        ..Default::default()
    };
    let a = run(&e, &store(5_000), dto.clone(), Format::Ndjson);
    let b = run(&e, &store(5_000), dto.clone(), Format::Ndjson);
    assert!(!a.out.is_empty());
    assert_eq!(a.out, b.out);
    let a = run(&e, &store(5_000), dto.clone(), Format::Csv);
    let b = run(&e, &store(5_000), dto, Format::Csv);
    assert_eq!(a.out, b.out);
    // CSV keeps a readable reasons column: the English sentences, joined.
    let text = String::from_utf8(a.out).unwrap();
    let row = text.lines().nth(1).expect("a row");
    assert!(row.contains(" | propensity "), "{row}");
    assert!(row.contains("member"), "{row}");
}

#[test]
fn limit_cuts_exactly() {
    let e = engine();
    let s = store(3_000);
    let out = run(
        &e,
        &s,
        CampaignDto {
            channel: "email".into(),
            limit: Some(7),
            ..Default::default()
        },
        Format::Ndjson,
    );
    assert_eq!(lines(&out).len(), 7);
    let out = run(
        &e,
        &s,
        CampaignDto {
            channel: "email".into(),
            limit: Some(7),
            ..Default::default()
        },
        Format::Csv,
    );
    assert_eq!(
        String::from_utf8(out.out).unwrap().lines().count(),
        8,
        "header + 7 rows"
    );
}

fn arb_dto() -> impl Strategy<Value = CampaignDto> {
    let tiers =
        proptest::sample::subsequence(vec!["base", "silver", "gold", "platinum", "diamond"], 1..=5);
    let airports = proptest::sample::subsequence(
        vec!["PEK", "PKX", "PVG", "SHA", "CAN", "SZX", "CTU", "HKG"],
        1..=4,
    );
    let tags =
        proptest::sample::subsequence(vec!["business", "leisure", "family", "golfer"], 0..=2);
    (
        proptest::option::of(tiers),
        proptest::option::of(airports),
        proptest::option::of(0u32..800),
        proptest::option::of(0u32..800),
        proptest::option::of(1u8..=12),
        proptest::option::of(0u32..100_000),
        proptest::option::of(0u32..400_000),
        proptest::option::of(0f64..30_000.0),
        proptest::option::of(tags),
    )
        .prop_filter("non-empty ranges", |(_, _, a, b, _, c, d, _, _)| {
            !(matches!((a, b), (Some(a), Some(b)) if a > b)
                || matches!((c, d), (Some(c), Some(d)) if c > d))
        })
        .prop_map(
            |(t, h, mind, maxd, bm, minp, maxp, gap, tags)| CampaignDto {
                channel: "app".into(),
                tiers: t.map(|v| v.into_iter().map(String::from).collect()),
                home_airports: h.map(|v| v.into_iter().map(String::from).collect()),
                min_days_since_flight: mind,
                max_days_since_flight: maxd,
                birth_month: bm,
                min_points: minp,
                max_points: maxp,
                max_distance_to_next_tier: gap,
                tags: tags.map(|v| v.into_iter().map(String::from).collect()),
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every member of the segment is decided for (the default experiment
    /// covers all members, so each gets a recorded decision) and no one else:
    /// the campaign's segment equals a brute-force filter written here from
    /// the field definitions, plus consent for the channel.
    #[test]
    fn filters_select_exactly_the_members_they_describe(dto in arb_dto()) {
        static STORE: std::sync::OnceLock<MemberStore> = std::sync::OnceLock::new();
        let s = STORE.get_or_init(|| store(3_000));
        let e = engine();
        let out = run(&e, s, dto.clone(), Format::Ndjson);
        let got: BTreeSet<String> = out.records.iter().map(|r| r.member_id.clone()).collect();
        let th = TierThresholds::default();
        let today = Day::of(now());
        let mut want = BTreeSet::new();
        s.for_each(|id, m| {
            let days = m.last_flight.map(|d| today.0 - d.0);
            let gap = m.tier.next().map(|n| (th.of(n) - m.qualifying_spend_12m as f64).max(0.0));
            let ok = m.consent.granted(ConsentChannel::App)
                && dto.tiers.as_ref().is_none_or(|t| t.iter().any(|t| t == m.tier.as_str()))
                && dto.home_airports.as_ref().is_none_or(|a| a.iter().any(|a| a == m.home_airport.as_str()))
                && dto.min_days_since_flight.is_none_or(|min| days.is_none_or(|d| d >= min as i32))
                && dto.max_days_since_flight.is_none_or(|max| days.is_some_and(|d| d <= max as i32))
                && dto.birth_month.is_none_or(|b| b == m.birth_month)
                && dto.min_points.is_none_or(|p| m.points >= p)
                && dto.max_points.is_none_or(|p| m.points <= p)
                && dto.max_distance_to_next_tier.is_none_or(|g| gap.is_some_and(|x| x <= g))
                && dto.tags.as_ref().is_none_or(|t| t.iter().all(|t| m.tags.has(t)));
            if ok {
                want.insert(id.to_string());
            }
        });
        prop_assert_eq!(got, want);
    }
}

/// Runs `dto` with a ledger and a daily cap, returning the summary.
fn summary(
    engine: &Engine,
    store: &MemberStore,
    dto: CampaignDto,
    ledger: &offer_engine::state::ledger::Ledger,
    daily_cap: usize,
) -> campaign::CampaignSummary {
    let c = dto.into_campaign(now()).unwrap();
    let opts = campaign::RunOptions {
        daily_cap,
        suppress_days_default: 30,
        record: true,
        format: Format::Ndjson,
        threads: 2,
        tokens: None,
    };
    campaign::run(
        engine,
        &c,
        store,
        Some(ledger),
        opts,
        &mut Capture::default(),
        None,
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// The summary says why members matching the filter got no line: no
/// consent, holdout, the daily cap, every offer suppressed, nothing eligible;
/// the reasons and the lines written account for every member.
#[test]
fn the_summary_counts_members_left_out_by_reason() {
    let s = store(3_000);
    let e = engine();
    let dto = || CampaignDto {
        channel: "email".into(),
        ..Default::default()
    };
    let mut matching = 0u64;
    let mut without_consent = 0u64;
    s.for_each(|_, m| {
        matching += 1;
        if !m.consent.granted(ConsentChannel::Email) {
            without_consent += 1;
        }
    });
    let ledger = offer_engine::state::ledger::Ledger::new(1_000_000);
    let open = summary(&e, &s, dto(), &ledger, usize::MAX);
    let l = &open.left_out;
    assert_eq!(l.no_consent, without_consent);
    assert_eq!(open.members_matched, matching - without_consent);
    assert!(l.holdout > 100, "{open:?}");
    assert_eq!(l.daily_cap, 0);
    assert_eq!(l.suppressed, 0);
    assert_eq!(
        open.members_written + l.holdout + l.no_eligible_offer,
        open.members_matched,
        "{open:?}"
    );
    // The daily cap used up: nobody outside the holdout gets a line.
    let capped = summary(&e, &s, dto(), &ledger, 0);
    assert_eq!(capped.members_written, 0);
    assert_eq!(capped.left_out.holdout, l.holdout);
    assert_eq!(
        capped.left_out.daily_cap,
        open.members_matched - l.holdout,
        "{capped:?}"
    );
    // Every offer suppressed for the members who got a line.
    let until = now().timestamp_millis() + 86_400_000;
    let all: Vec<std::sync::Arc<str>> = e
        .catalog
        .offers
        .iter()
        .map(|o| std::sync::Arc::<str>::from(&*o.id))
        .collect();
    s.for_each(|id, _| {
        for o in &all {
            ledger.suppress(id, o, until, 0);
        }
    });
    let suppressed = summary(&e, &s, dto(), &ledger, usize::MAX);
    assert_eq!(suppressed.members_written, 0);
    assert_eq!(suppressed.left_out.suppressed, open.members_written);
    assert_eq!(
        suppressed.left_out.no_eligible_offer, l.no_eligible_offer,
        "{suppressed:?}"
    );
}

/// Each line carries the member facts a message template needs, in NDJSON
/// and as CSV columns after `experiments`, matching the member's record.
#[test]
fn lines_carry_the_template_fields_of_the_member() {
    let e = engine();
    let s = store(2_000);
    let th = TierThresholds::default();
    let dto = CampaignDto {
        channel: "email".into(),
        limit: Some(50),
        ..Default::default()
    };
    let out = run(&e, &s, dto.clone(), Format::Ndjson);
    let today = Day::from_date(now().date_naive());
    for l in lines(&out) {
        let m = s.get(l["member_id"].as_str().unwrap()).unwrap();
        let f = &l["member"];
        assert_eq!(f["tier"], m.tier.as_str());
        assert_eq!(f["points"], m.points);
        assert_eq!(
            f["next_tier"],
            serde_json::json!(m.tier.next().map(|t| t.as_str()))
        );
        let gap = offer_engine::features::spend_to_next_tier(&m, &th)
            .map(|g| offer_engine::features::whole_cny_gap(m.qualifying_spend_12m as f64, g));
        assert_eq!(f["spend_to_next_tier_cny"], serde_json::json!(gap));
        assert_eq!(
            f["value_segment"],
            offer_engine::features::segment(&m, today).value.as_str()
        );
    }
    let csv = String::from_utf8(run(&e, &s, dto, Format::Csv).out).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..8],
        [
            "member_id",
            "decision_id",
            "experiments",
            "tier",
            "points",
            "next_tier",
            "spend_to_next_tier_cny",
            "value_segment"
        ]
    );
    for row in rows {
        let cols: Vec<&str> = row.split(',').collect();
        let m = s.get(cols[0]).unwrap();
        assert_eq!(
            (cols[3], cols[4]),
            (m.tier.as_str(), &*m.points.to_string())
        );
    }
}
