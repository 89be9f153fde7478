//! The state the log makes durable, and the one deterministic `apply`.
//!
//! [`State`] holds the mutable maps (members, the ledger of promises, the
//! adaptive models' learner, experiment attribution) behind intent-named
//! methods; no field is public. Every durable change arrives as a
//! [`LogRecord`] and goes through [`State::apply`], live (after the record is
//! durable, on the log's writer thread) and on replay alike. Apply reads no
//! clock and draws no random number: the time it needs is in the record, and
//! the state's own notion of "now" is the log time ([`State::log_time_ms`]),
//! the latest record time applied. The same records therefore give the same
//! state on every replica and after every restart; [`State::digest`] makes
//! that checkable.
//!
//! Layout: [`members`] (the member store and NDJSON reader), [`ledger`]
//! (decisions as issued, suppressions, contact counts, inventory),
//! [`learner`] (adaptive models and their decision memory), [`experiments`]
//! (exposures, conversions, per-variant statistics), [`expiring`] (the
//! bounded, time-evicted map the ledger and learner share).

pub mod campaign_runs;
pub mod experiments;
pub mod expiring;
pub mod learner;
pub mod ledger;
pub mod members;
pub mod offer_stats;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::domain::{Day, Member, TierThresholds};
use crate::events::OutcomeKind;
use crate::experiments::{
    Assignment, ExperimentSnapshot, ExperimentSnapshotV4, ExperimentSnapshotV5, SegmentKeys,
};
use crate::records::MemberChange;
pub use crate::records::{decode_bounded, LogRecord, MemberWire, MemberWireV2, OutcomeRecordV2};
use crate::state::ledger::{ContactDay, DecisionRecord, InventoryKey, ACCEPTED};
use campaign_runs::{CampaignRuns, CampaignRunsSnapshot};
use experiments::ExperimentBook;
use learner::{LearnSettings, LearnerSnapshot, OnlineLearner};
use ledger::Ledger;
use members::MemberStore;
use offer_stats::{OfferStats, OfferStatsSnapshot};

/// Snapshot format version. 4 adds the log time the snapshot reflects, so a
/// restore filters outlived decisions by log time, not by the wall clock.
/// 5 adds to each experiment exposure the member's decisions and segments at
/// first exposure. 6 adds to each exposure its first-exposure time and
/// loyalty outcomes, and to each experiment its daily history (the time
/// series). 7 keeps each member's monthly history (the rolling 12 months),
/// the accepts held for refunds, each exposed member's value and points cost,
/// and the upgrade vouchers used. Formats 3 to 6 are still read (their log
/// time, for 3, is the latest time they hold; their exposures have unknown
/// segments before 5, unknown first-exposure times and so no loyalty
/// outcomes before 6, and their time series starts empty; their members'
/// 12-month totals become undated spreads, see
/// [`crate::domain::MonthlyHistory`]; before 7 no accept can be refunded and
/// exposures carry no value). 8 adds the per offer and channel counts of
/// the Offers page and the campaign runs with their accepts; format 7 is
/// still read (its counts and runs start empty).
const SNAPSHOT_FORMAT: u32 = 8;

/// Everything the state holds, committed parts only.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    members: Vec<(String, MemberWireV2)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshot>,
    learner: LearnerSnapshot,
    /// Log time, ms: the latest record time applied.
    log_time_ms: i64,
    /// Accepts held for refunds.
    accepts: Vec<(String, ledger::Taken)>,
    /// Value and points cost per experiment and exposed member.
    experiment_values: Vec<experiments::ValueSnapshot>,
    /// Upgrade vouchers used: member and year.
    vouchers: Vec<(String, i32)>,
    /// Per offer and channel counts, and capped units per offer and day.
    offer_stats: OfferStatsSnapshot,
    /// Campaign runs and accepts per campaign.
    campaign_runs: CampaignRunsSnapshot,
}

/// Format 7: without the per offer and channel counts.
#[derive(Debug, Deserialize)]
struct SnapshotV7 {
    format: u32,
    members: Vec<(String, MemberWireV2)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshot>,
    learner: LearnerSnapshot,
    log_time_ms: i64,
    accepts: Vec<(String, ledger::Taken)>,
    experiment_values: Vec<experiments::ValueSnapshot>,
    vouchers: Vec<(String, i32)>,
}

/// Format 6: members without their monthly history.
#[derive(Debug, Deserialize)]
struct SnapshotV6 {
    format: u32,
    members: Vec<(String, MemberWire)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshot>,
    learner: LearnerSnapshot,
    log_time_ms: i64,
}

/// Format 5: as format 6 with exposures without loyalty outcomes and
/// experiments without days.
#[derive(Debug, Deserialize)]
struct SnapshotV5 {
    format: u32,
    members: Vec<(String, MemberWire)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshotV5>,
    learner: LearnerSnapshot,
    log_time_ms: i64,
}

/// Members of a snapshot before format 7, in the current form.
fn members_v1(list: Vec<(String, MemberWire)>) -> Vec<(String, MemberWireV2)> {
    list.into_iter()
        .map(|(id, w)| (id, MemberWireV2::from(&Member::from(&w))))
        .collect()
}

/// Format 4: exposures without decisions and segments.
#[derive(Debug, Deserialize)]
struct SnapshotV4 {
    format: u32,
    members: Vec<(String, MemberWire)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshotV4>,
    learner: LearnerSnapshot,
    log_time_ms: i64,
}

/// Format 3: as format 4 without the log time.
#[derive(Debug, Deserialize)]
struct SnapshotV3 {
    format: u32,
    members: Vec<(String, MemberWire)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshotV4>,
    learner: LearnerSnapshot,
}

/// What the state is built with.
#[derive(Debug, Clone, Copy)]
pub struct StateSettings {
    /// Most decisions remembered for attribution.
    pub max_decisions: u64,
    /// Tier thresholds (member changes re-tier on spend).
    pub thresholds: TierThresholds,
    /// The adaptive models' settings.
    pub learning: LearnSettings,
}

/// The state the log makes durable. Cloning is shallow.
#[derive(Clone)]
pub struct State {
    /// Members.
    members: MemberStore,
    /// Decisions, suppressions, contacts, inventory.
    ledger: Ledger,
    /// Tier thresholds (member changes re-tier on spend).
    thresholds: TierThresholds,
    /// Experiment exposures and conversions.
    experiments: ExperimentBook,
    /// Adaptive models, fed by decisions and accepts.
    learner: OnlineLearner,
    /// Per offer and channel counts (the console's Offers page).
    offer_stats: OfferStats,
    /// Campaign runs and their accepts (the console's Campaigns page).
    campaign_runs: CampaignRuns,
    /// The latest record time applied, ms (the state's "now").
    log_time: Arc<AtomicI64>,
    /// Position of the last record applied (its log sequence number).
    applied: Arc<AtomicU64>,
    /// Held while a record is applied and while the digest is taken, so a
    /// digest reflects exactly the records up to [`State::applied`].
    apply_lock: Arc<Mutex<()>>,
    /// How long after its decision an accept may be refunded, ms (the
    /// learning attribution window).
    refund_window_ms: i64,
}

/// Result of applying a record (for metrics on the live path).
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// Member events whose member no longer exists.
    pub skipped: u32,
    /// Experiment exposures: (assignment, first exposure of the member).
    pub exposed: Vec<(Assignment, bool)>,
    /// Experiment conversions: (assignment, first conversion of the member, revenue).
    pub converted: Vec<(Assignment, bool, f64)>,
    /// An outcome batch refused at apply (nothing of it applied): the
    /// position of the first event at fault and why.
    pub refused: Option<(usize, Refusal)>,
}

/// Why an outcome batch was refused at apply, in log order: what the
/// request path checked before logging no longer held when its record came
/// to be applied (a concurrent accept spent the points, a concurrent refund
/// came first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The member's balance (less what earlier accepts of the batch redeem)
    /// no longer covers the points price.
    Points {
        /// Points left to pay from.
        balance: u64,
        /// Points the accept redeems.
        due: u64,
    },
    /// An accept of an offer already accepted in that decision (an earlier
    /// record, or an earlier event of the batch): with replicas, two accepts
    /// of one offer can pass two request paths before either is applied.
    AlreadyAccepted,
    /// A refund of an offer not accepted (or whose accept is no longer held).
    NotAccepted,
    /// A refund of an accept refunded already.
    AlreadyRefunded,
    /// A refund after the attribution window closed.
    WindowClosed,
    /// The member's upgrade voucher of the year is used already.
    VoucherUsed,
    /// No unit of the part of the cap the accept may take is left (the
    /// last units kept for other tiers or segments, or taken first in log
    /// order).
    SoldOut,
}

/// A refund stays answerable ("too late", not "unknown") this long after its window closes.
const REFUND_GRACE_MS: i64 = 86_400_000;

/// The digest of the applied state and the position it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StateDigest {
    /// Log sequence number of the last record applied.
    pub applied: u64,
    /// SHA-256 (hex) over the committed state, independent of the order in
    /// which the maps were filled: equal states give equal digests.
    pub digest: String,
    /// The digest of each part (first 16 hex digits), to see where two
    /// states differ: members, decisions, suppressions, contacts,
    /// inventory, experiments, models, memory, accepts, values, vouchers,
    /// offers, offer_days, campaign_runs, campaign_accepts.
    pub parts: std::collections::BTreeMap<String, String>,
}

/// A decision outlives its offers by this long, so that a late accept gets
/// "expired" rather than "unknown".
const DECISION_GRACE_MS: i64 = 60_000;

impl State {
    /// An empty state.
    pub fn new(s: StateSettings) -> State {
        State {
            members: MemberStore::new(),
            ledger: Ledger::new(s.max_decisions),
            thresholds: s.thresholds,
            experiments: ExperimentBook::default(),
            learner: OnlineLearner::new(s.learning),
            offer_stats: OfferStats::default(),
            campaign_runs: CampaignRuns::default(),
            log_time: Arc::new(AtomicI64::new(i64::MIN)),
            applied: Arc::new(AtomicU64::new(0)),
            apply_lock: Arc::new(Mutex::new(())),
            refund_window_ms: s.learning.attribution_window_days as i64 * 86_400_000,
        }
    }

    /// How long after its decision an accept may be refunded, ms.
    pub fn refund_window_ms(&self) -> i64 {
        self.refund_window_ms
    }

    /// The members.
    pub fn members(&self) -> &MemberStore {
        &self.members
    }

    /// Decisions as issued, suppressions, contact counts and inventory.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The adaptive models and their memory of decisions.
    pub fn learner(&self) -> &OnlineLearner {
        &self.learner
    }

    /// Per offer and channel counts, from the records applied.
    pub fn offer_stats(&self) -> &OfferStats {
        &self.offer_stats
    }

    /// Campaign runs and their accepts, from the records applied.
    pub fn campaign_runs(&self) -> &CampaignRuns {
        &self.campaign_runs
    }

    /// Experiment attribution.
    pub fn experiments(&self) -> &ExperimentBook {
        &self.experiments
    }

    /// The tier thresholds member changes re-tier with.
    pub fn thresholds(&self) -> TierThresholds {
        self.thresholds
    }

    /// The latest record time applied, ms since the epoch (`i64::MIN` before any).
    pub fn log_time_ms(&self) -> i64 {
        self.log_time.load(Ordering::Acquire)
    }

    /// Log sequence number of the last record applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Moves the log time on to `at_ms` (never back). When it enters a new
    /// calendar month every member's rolling window moves on and the
    /// downgrade rule is judged ([`crate::events::start_month`]): once per
    /// month start, at the first record of the month, on every replica alike.
    /// (At 10 million members this holds the apply lock for the one pass
    /// over the store, once a month: 0.41 s in a test build, see
    /// `docs/tiers-and-validity.md`.)
    fn advance(&self, at_ms: i64) -> i64 {
        let prev = self.log_time.fetch_max(at_ms, Ordering::AcqRel);
        let now = prev.max(at_ms);
        // A month starts only on a new day (the cheap test first: this runs
        // for every record).
        if prev != i64::MIN && day_of_ms(prev) != day_of_ms(now) {
            let month = |ms: i64| crate::domain::month_of(Day(day_of_ms(ms)));
            let (from, to) = (month(prev), month(now));
            if to > from {
                // Month starts further back than the window changes nothing
                // more than the last 36 do.
                let first = (from + 1).max(to.saturating_sub(35));
                let th = self.thresholds;
                self.members.update_all(|m| {
                    for k in first..=to {
                        crate::events::start_month(m, k, &th);
                    }
                });
            }
        }
        now
    }

    /// Applies a durable record at log position `lsn`. `live` says the
    /// record was produced by this process (its accepts were reserved in
    /// phase one and its decision is remembered already); replay passes
    /// false. The result depends only on the state and the record.
    pub fn apply(&self, rec: &LogRecord, lsn: u64, live: bool) -> Applied {
        let _held = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut applied = Applied::default();
        match rec {
            LogRecord::Decision(d) => self.apply_decision(d, &d.features, live, &mut applied),
            LogRecord::Decisions(list) => {
                for d in list {
                    self.apply_decision(d, &d.features, live, &mut applied);
                }
            }
            LogRecord::Outcomes(events) => {
                // Version-1 records: no value, no points (replay of older logs).
                let events: Vec<OutcomeRecordV2> =
                    events.iter().cloned().map(OutcomeRecordV2::from).collect();
                self.apply_outcomes(&events, live, false, &mut applied)
            }
            LogRecord::OutcomesV2(events) => self.apply_outcomes(events, live, true, &mut applied),
            LogRecord::Members(list) => {
                for (id, w) in list {
                    self.members.upsert(id, Member::from(w));
                }
            }
            LogRecord::MembersV2(list) => {
                for (id, w) in list {
                    self.members.upsert(id, Member::from(w));
                }
            }
            LogRecord::MemberChange {
                member_id,
                change,
                at_ms,
            } => {
                let now = self.advance(*at_ms);
                let th = self.thresholds;
                let on = Day(day_of_ms(*at_ms));
                let mut before = None;
                let after = self.members.update(member_id, |m| {
                    before = Some(m.tier);
                    change.apply(m, &th, on)
                });
                match (before, after) {
                    (Some(before), Some(after)) => {
                        // Loyalty outcomes, by the log time the event is
                        // applied at (never the clock, nor the event's own day).
                        let (flight, spend) = match *change {
                            MemberChange::FlightFlown { spend, .. } => (true, spend),
                            MemberChange::Purchase { qualifying_amount } => {
                                (false, qualifying_amount)
                            }
                            _ => (false, 0.0),
                        };
                        self.experiments
                            .member_event(member_id, now, flight, spend, before, after.tier);
                    }
                    _ => applied.skipped += 1,
                }
            }
            LogRecord::MemberErased { member_id, at_ms } => {
                self.advance(*at_ms);
                self.erase_member(member_id, *at_ms)
            }
            LogRecord::CampaignRun(r) => {
                self.advance(r.started_ms);
                self.campaign_runs.run(r);
            }
        }
        self.applied.fetch_max(lsn, Ordering::AcqRel);
        applied
    }

    /// Whether a batch of outcomes can be applied as a whole, judged in log
    /// order on the state as it is: capped accepts against the units left of
    /// the part of the cap they may take, points accepts against the
    /// balances (less what earlier accepts of the batch take), refunds
    /// against the accepts held.
    /// `caps`: whether accepts are held to the cap their record carries
    /// (version 2; version-1 records were held to it when reserved only).
    fn refusal(&self, events: &[OutcomeRecordV2], caps: bool) -> Option<(usize, Refusal)> {
        let mut debits: std::collections::HashMap<&str, u64> = Default::default();
        let mut taken: std::collections::HashMap<(&str, &InventoryKey), u32> = Default::default();
        let mut refunds: std::collections::HashSet<String> = Default::default();
        let mut vouchers: std::collections::HashSet<&str> = Default::default();
        let mut accepts: std::collections::HashSet<String> = Default::default();
        for (i, e) in events.iter().enumerate() {
            let o = &e.outcome;
            if o.kind == OutcomeKind::Accept {
                let key = ledger::taken_key(&o.decision_id, &o.offer_id);
                if self.ledger.taken(&key).is_some() || !accepts.insert(key) {
                    return Some((i, Refusal::AlreadyAccepted));
                }
            }
            if let (true, OutcomeKind::Accept, Some((key, cap))) = (caps, o.kind, &o.inventory) {
                let before = taken.entry((o.offer_id.as_str(), key)).or_insert(0);
                let committed = self.ledger.units(&o.offer_id, key).committed + *before;
                if committed >= *cap {
                    return Some((i, Refusal::SoldOut));
                }
                *before += 1;
            }
            if o.kind == OutcomeKind::Accept
                && e.voucher
                && (self
                    .ledger
                    .voucher_used(&o.member_id, crate::records::voucher_year(o.at_ms))
                    || !vouchers.insert(o.member_id.as_str()))
            {
                return Some((i, Refusal::VoucherUsed));
            }
            match o.kind {
                OutcomeKind::Accept if e.points > 0 => {
                    let balance = self
                        .members
                        .get(&o.member_id)
                        .map(|m| m.points as u64)
                        .unwrap_or(0);
                    let spent = debits.entry(o.member_id.as_str()).or_insert(0);
                    let left = balance.saturating_sub(*spent);
                    if left < e.points {
                        return Some((
                            i,
                            Refusal::Points {
                                balance: left,
                                due: e.points,
                            },
                        ));
                    }
                    *spent += e.points;
                }
                OutcomeKind::Refunded => {
                    let key = ledger::taken_key(&o.decision_id, &o.offer_id);
                    let Some(t) = self.ledger.taken(&key) else {
                        return Some((i, Refusal::NotAccepted));
                    };
                    if t.refunded || !refunds.insert(key) {
                        return Some((i, Refusal::AlreadyRefunded));
                    }
                    if o.at_ms > t.decision_created_ms + self.refund_window_ms {
                        return Some((i, Refusal::WindowClosed));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Applies a batch of outcomes: all of it, or (refused) none of it.
    fn apply_outcomes(
        &self,
        events: &[OutcomeRecordV2],
        live: bool,
        caps: bool,
        applied: &mut Applied,
    ) {
        for e in events {
            self.advance(e.outcome.at_ms);
        }
        if let Some(r) = self.refusal(events, caps) {
            applied.refused = Some(r);
            return;
        }
        for v2 in events {
            let e = &v2.outcome;
            match e.kind {
                OutcomeKind::Accept => {
                    self.learner
                        .accepted(&e.decision_id, &e.offer_id, e.at_ms, e.learn);
                    // Committed whatever the decision's age: the
                    // record says the unit was taken.
                    let decision = self.ledger.decision(&e.decision_id, i64::MIN);
                    match &decision {
                        Some(d) if (e.offer_pos as usize) < d.status.len() => {
                            self.ledger.commit_accept(d, e.offer_pos as usize, live)
                        }
                        // The decision expired from memory: its inventory still counts.
                        _ => {
                            if let Some((key, _)) = &e.inventory {
                                self.ledger.commit_unit(&e.offer_id, key);
                            }
                        }
                    }
                    if v2.voucher {
                        self.ledger
                            .use_voucher(&e.member_id, crate::records::voucher_year(e.at_ms));
                    }
                    if v2.points > 0 {
                        let due = v2.points.min(u32::MAX as u64) as u32;
                        self.members
                            .update(&e.member_id, |m| m.points = m.points.saturating_sub(due));
                    }
                    self.campaign_runs
                        .outcome(&e.decision_id, &e.member_id, true);
                    self.offer_stats.accepted(
                        &e.offer_id,
                        self.channel_of(&e.decision_id, e.at_ms),
                        v2.value,
                        e.inventory.as_ref().map(|(_, cap)| *cap),
                        day_of_ms(self.log_time_ms()),
                    );
                    let created_ms = decision
                        .as_ref()
                        .map(|d| d.record.created_ms)
                        .unwrap_or(e.at_ms);
                    let issued = decision
                        .as_ref()
                        .and_then(|d| d.record.offers.get(e.offer_pos as usize).cloned());
                    self.ledger.record_taken(
                        &ledger::taken_key(&e.decision_id, &e.offer_id),
                        ledger::Taken {
                            member_id: e.member_id.clone(),
                            offer_id: e.offer_id.clone(),
                            offer_pos: e.offer_pos,
                            decision_created_ms: created_ms,
                            issued,
                            inventory: e.inventory.clone(),
                            revenue: e.revenue,
                            value: v2.value,
                            points: v2.points,
                            points_cost: v2.points_cost,
                            experiments: e.experiments.clone(),
                            refunded: false,
                            voucher_year: v2.voucher.then(|| crate::records::voucher_year(e.at_ms)),
                        },
                        created_ms + self.refund_window_ms + REFUND_GRACE_MS,
                        self.log_time_ms(),
                    );
                    for a in &e.experiments {
                        let c = self.experiments.convert(
                            a,
                            &e.member_id,
                            e.revenue,
                            self.log_time_ms(),
                        );
                        self.experiments.add_value(
                            a,
                            &e.member_id,
                            v2.value,
                            v2.points_cost,
                            self.log_time_ms(),
                        );
                        applied
                            .converted
                            .push((a.clone(), c.new_conversion, e.revenue));
                    }
                }
                OutcomeKind::Refunded => {
                    let key = ledger::taken_key(&e.decision_id, &e.offer_id);
                    // Checked by `refusal` above, under the same apply lock.
                    let Some(t) = self.ledger.taken(&key) else {
                        continue;
                    };
                    self.ledger.mark_refunded(&key, &t);
                    self.campaign_runs
                        .outcome(&e.decision_id, &t.member_id, false);
                    self.offer_stats.refunded(
                        &t.offer_id,
                        self.channel_of(&e.decision_id, e.at_ms),
                        t.value,
                        t.inventory.is_some(),
                        day_of_ms(self.log_time_ms()),
                    );
                    if let Some((inv, _)) = &t.inventory {
                        self.ledger.return_unit(&t.offer_id, inv);
                    }
                    if let Some(year) = t.voucher_year {
                        self.ledger.return_voucher(&t.member_id, year);
                    }
                    if t.points > 0 {
                        let back = t.points.min(u32::MAX as u64) as u32;
                        self.members
                            .update(&t.member_id, |m| m.points = m.points.saturating_add(back));
                    }
                    for a in &t.experiments {
                        self.experiments.refund(
                            a,
                            &t.member_id,
                            t.revenue,
                            t.value,
                            t.points_cost,
                            self.log_time_ms(),
                        );
                    }
                }
                OutcomeKind::Decline => {
                    let until = e.at_ms + e.suppress_days as i64 * 86_400_000;
                    self.ledger
                        .suppress(&e.member_id, &e.offer_id, until, e.at_ms);
                    self.offer_stats.declined(
                        &e.offer_id,
                        self.channel_of(&e.decision_id, e.at_ms),
                        e.suppress_days > 0,
                    );
                    for a in &e.experiments {
                        self.experiments.decline(a, &e.member_id);
                    }
                }
                OutcomeKind::Fulfilled => {
                    // Checked before logging; a duplicate that raced
                    // past the check is refused here and counts once.
                    let _ = self
                        .learner
                        .fulfilled(&e.decision_id, &e.offer_id, e.at_ms, e.learn);
                }
                OutcomeKind::Impression | OutcomeKind::Click => {}
            }
        }
    }

    /// Applies one durable decision at `lsn` (what [`State::apply`] does for
    /// `LogRecord::Decision`), borrowing the record; `features` are the ones
    /// it was logged with (the live path keeps them out of the ledger's copy).
    pub fn apply_decision_record(
        &self,
        d: &DecisionRecord,
        features: &[f32],
        lsn: u64,
        live: bool,
    ) -> Applied {
        let _held = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut applied = Applied::default();
        self.apply_decision(d, features, live, &mut applied);
        self.applied.fetch_max(lsn, Ordering::AcqRel);
        applied
    }

    /// Remembers a decision made here before its record is logged, so an
    /// accept may follow at once; `now_ms` is the request's clock.
    pub fn remember_decision(
        &self,
        record: DecisionRecord,
        now_ms: i64,
    ) -> Arc<crate::state::ledger::LiveDecision> {
        self.ledger.remember(record, now_ms)
    }

    /// The channel of decision `id` for the per offer counts, if it is
    /// held and had not outlived its offers at `at_ms`, the outcome's
    /// record time ("unknown" otherwise). Judged by the record's time, not
    /// by whether the entry happens to be in memory still: when memory is
    /// swept differs between the live process (by the clock) and a replay.
    fn channel_of(&self, id: &str, at_ms: i64) -> &'static str {
        self.ledger
            .decision(id, at_ms)
            .map_or("unknown", |d| d.record.channel.as_str())
    }

    /// Removes everything held about a member: the record, suppressions,
    /// contact counts and remembered decisions; experiment exposures are
    /// kept anonymously (see [`ExperimentBook::erase_member`]). Inventory
    /// counts hold no member data and stay.
    fn erase_member(&self, member_id: &str, at_ms: i64) {
        self.members.remove(member_id);
        self.ledger.erase_member(member_id);
        self.experiments.erase_member(member_id, at_ms);
        self.learner.forget_member(member_id);
    }

    fn apply_decision(
        &self,
        d: &DecisionRecord,
        features: &[f32],
        live: bool,
        applied: &mut Applied,
    ) {
        let now = self.advance(d.created_ms);
        if !features.is_empty() {
            let offers: Vec<&str> = d.offers.iter().map(|o| o.offer_id.as_str()).collect();
            self.learner
                .decided(&d.id, &d.member_id, d.created_ms, features, &offers);
        }
        for o in &d.offers {
            self.offer_stats
                .shown(&o.offer_id, d.channel.as_str(), o.propensity);
        }
        let shown = d.offers.len().min(u16::MAX as usize) as u16;
        self.ledger
            .count_shown(&d.member_id, Day(day_of_ms(d.created_ms)), d.channel, shown);
        for a in &d.experiments {
            // Segments at first exposure, from the member as the log has
            // them when this record is applied: deterministic on replay.
            let first = || {
                let m = self.members.get(&d.member_id)?;
                let keys = SegmentKeys::of(&m, d.channel, Day(day_of_ms(d.created_ms)));
                Some((keys, m.flights_12m()))
            };
            let c = self
                .experiments
                .expose(a, &d.member_id, d.covariate, now, first);
            applied.exposed.push((a.clone(), c.new_member));
        }
        if !live && d.last_expiry_ms() + DECISION_GRACE_MS > now {
            // The features live on in the learner's memory, not twice.
            self.ledger.remember(d.without_features(), now);
        }
    }

    fn to_snapshot(&self) -> Snapshot {
        let now = self.log_time_ms();
        let mut members = Vec::with_capacity(self.members.len());
        self.members
            .for_each(|id, m| members.push((id.to_string(), MemberWireV2::from(m))));
        let (decisions, suppressions, contacts, inventory) = self.ledger.committed(now);
        Snapshot {
            format: SNAPSHOT_FORMAT,
            members,
            decisions,
            suppressions,
            contacts,
            inventory,
            experiments: self.experiments.to_snapshot(),
            learner: self.learner.to_snapshot(now),
            log_time_ms: now,
            accepts: self.ledger.takings(now),
            experiment_values: self.experiments.value_snapshot(),
            vouchers: self.ledger.vouchers_used(),
            offer_stats: self.offer_stats.to_snapshot(),
            campaign_runs: self.campaign_runs.to_snapshot(),
        }
    }

    /// Serializes the committed state. Two states that applied the same
    /// records in the same order serialize to the same bytes.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        bincode::serialize(&self.to_snapshot()).unwrap_or_default()
    }

    /// Restores state from a snapshot that reflects the log up to `lsn`
    /// (into an empty state).
    pub fn restore(&self, bytes: &[u8], lsn: u64) -> Result<(), String> {
        let format = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let snap: Snapshot = match format {
            SNAPSHOT_FORMAT => {
                decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?
            }
            7 => {
                let v7: SnapshotV7 =
                    decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
                Snapshot {
                    format: v7.format,
                    members: v7.members,
                    decisions: v7.decisions,
                    suppressions: v7.suppressions,
                    contacts: v7.contacts,
                    inventory: v7.inventory,
                    experiments: v7.experiments,
                    learner: v7.learner,
                    log_time_ms: v7.log_time_ms,
                    accepts: v7.accepts,
                    experiment_values: v7.experiment_values,
                    vouchers: v7.vouchers,
                    offer_stats: Default::default(),
                    campaign_runs: Default::default(),
                }
            }
            6 => {
                let v6: SnapshotV6 =
                    decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
                Snapshot {
                    format: v6.format,
                    members: members_v1(v6.members),
                    decisions: v6.decisions,
                    suppressions: v6.suppressions,
                    contacts: v6.contacts,
                    inventory: v6.inventory,
                    experiments: v6.experiments,
                    learner: v6.learner,
                    log_time_ms: v6.log_time_ms,
                    accepts: Vec::new(),
                    experiment_values: Vec::new(),
                    vouchers: Vec::new(),
                    offer_stats: Default::default(),
                    campaign_runs: Default::default(),
                }
            }
            5 => {
                let v5: SnapshotV5 =
                    decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
                Snapshot {
                    format: v5.format,
                    members: members_v1(v5.members),
                    decisions: v5.decisions,
                    suppressions: v5.suppressions,
                    contacts: v5.contacts,
                    inventory: v5.inventory,
                    experiments: v5.experiments.into_iter().map(Into::into).collect(),
                    learner: v5.learner,
                    log_time_ms: v5.log_time_ms,
                    accepts: Vec::new(),
                    experiment_values: Vec::new(),
                    vouchers: Vec::new(),
                    offer_stats: Default::default(),
                    campaign_runs: Default::default(),
                }
            }
            4 => {
                let v4: SnapshotV4 =
                    decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
                Snapshot {
                    format: v4.format,
                    members: members_v1(v4.members),
                    decisions: v4.decisions,
                    suppressions: v4.suppressions,
                    contacts: v4.contacts,
                    inventory: v4.inventory,
                    experiments: v4.experiments.into_iter().map(Into::into).collect(),
                    learner: v4.learner,
                    log_time_ms: v4.log_time_ms,
                    accepts: Vec::new(),
                    experiment_values: Vec::new(),
                    vouchers: Vec::new(),
                    offer_stats: Default::default(),
                    campaign_runs: Default::default(),
                }
            }
            3 => {
                let v3: SnapshotV3 =
                    decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
                let log_time_ms = v3
                    .decisions
                    .iter()
                    .map(|(d, _)| d.created_ms)
                    .chain(v3.learner.memory.iter().map(|(_, r)| r.created_ms))
                    .max()
                    .unwrap_or(i64::MIN);
                Snapshot {
                    format: v3.format,
                    members: members_v1(v3.members),
                    decisions: v3.decisions,
                    suppressions: v3.suppressions,
                    contacts: v3.contacts,
                    inventory: v3.inventory,
                    experiments: v3.experiments.into_iter().map(Into::into).collect(),
                    learner: v3.learner,
                    log_time_ms,
                    accepts: Vec::new(),
                    experiment_values: Vec::new(),
                    vouchers: Vec::new(),
                    offer_stats: Default::default(),
                    campaign_runs: Default::default(),
                }
            }
            other => return Err(format!("snapshot format {other} is not {SNAPSHOT_FORMAT}")),
        };
        let _held = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.advance(snap.log_time_ms);
        for (id, w) in &snap.members {
            self.members.upsert(id, Member::from(w));
        }
        for (rec, status) in snap.decisions {
            if rec.last_expiry_ms() + DECISION_GRACE_MS <= now {
                continue;
            }
            let d = self.ledger.remember(rec, now);
            for (s, v) in d.status.iter().zip(status) {
                if v == ACCEPTED {
                    s.store(ACCEPTED, Ordering::Release);
                }
            }
        }
        self.ledger
            .restore(snap.suppressions, snap.contacts, snap.inventory, now);
        self.experiments.restore(snap.experiments);
        self.experiments.restore_values(snap.experiment_values);
        for (member, year) in snap.vouchers {
            self.ledger.use_voucher(&member, year);
        }
        for (key, t) in snap.accepts {
            let keep_until = t.decision_created_ms + self.refund_window_ms + REFUND_GRACE_MS;
            self.ledger.record_taken(&key, t, keep_until, now);
        }
        self.learner.restore(snap.learner);
        self.offer_stats.restore(snap.offer_stats);
        self.campaign_runs.restore(snap.campaign_runs);
        self.applied.fetch_max(lsn, Ordering::AcqRel);
        Ok(())
    }

    /// The digest of the committed state and the position it reflects.
    /// Every part is hashed entry by entry and the entry hashes are summed,
    /// so the digest does not depend on the order the maps were filled in
    /// (a replica restored from a snapshot and one that replayed the whole
    /// log agree). The running minimum of the always-valid p-value is left
    /// out: it is folded in at apply, but snapshots written before it was
    /// carried values that reading a report had set.
    pub fn digest(&self) -> StateDigest {
        let _held = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut snap = self.to_snapshot();
        for e in &mut snap.experiments {
            e.sequential_min.clear();
        }
        let mut experiments = Vec::new();
        for e in &mut snap.experiments {
            let members = std::mem::take(&mut e.members);
            experiments.extend(
                bincode::serialize(&(&e.id, &e.variants, &e.decisions, &e.days))
                    .unwrap_or_default(),
            );
            experiments.extend(multiset(&members));
        }
        let parts = [
            ("members", multiset(&snap.members)),
            ("decisions", multiset(&snap.decisions)),
            ("suppressions", multiset(&snap.suppressions)),
            ("contacts", multiset(&snap.contacts)),
            ("inventory", multiset(&snap.inventory)),
            ("experiments", experiments),
            ("models", multiset(&snap.learner.models)),
            ("memory", multiset(&snap.learner.memory)),
            ("accepts", multiset(&snap.accepts)),
            ("values", multiset(&snap.experiment_values)),
            ("vouchers", multiset(&snap.vouchers)),
            ("offers", multiset(&snap.offer_stats.0)),
            ("offer_days", multiset(&snap.offer_stats.1)),
            ("campaign_runs", multiset(&snap.campaign_runs.0)),
            ("campaign_accepts", multiset(&snap.campaign_runs.1)),
        ];
        let mut out = Sha256::new();
        out.update(b"offer-engine state v1");
        out.update(snap.log_time_ms.to_le_bytes());
        for (_, p) in &parts {
            out.update(p);
        }
        let parts = parts
            .iter()
            .map(|(name, p)| {
                let h = crate::privacy::to_hex(&Sha256::digest(p));
                (name.to_string(), h[..16].to_string())
            })
            .collect();
        StateDigest {
            applied: self.applied(),
            digest: crate::privacy::to_hex(&out.finalize()),
            parts,
        }
    }
}

/// An order-independent hash of a list: the count and the wrapping sum of
/// each entry's SHA-256 (as four 64-bit words).
fn multiset<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut sum = [0u64; 4];
    let mut buf = Vec::new();
    for item in items {
        buf.clear();
        let _ = bincode::serialize_into(&mut buf, item);
        let h = Sha256::digest(&buf);
        for (k, s) in sum.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[k * 8..k * 8 + 8]);
            *s = s.wrapping_add(u64::from_le_bytes(w));
        }
    }
    let mut out = (items.len() as u64).to_le_bytes().to_vec();
    for s in sum {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Day of a ms timestamp.
pub fn day_of_ms(ms: i64) -> i32 {
    ms.div_euclid(86_400_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(StateSettings {
            max_decisions: 1000,
            thresholds: TierThresholds::default(),
            learning: LearnSettings::default(),
        })
    }

    #[test]
    fn a_format_3_snapshot_is_still_read() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let m = crate::synth::member(1, 1, d, &th);
        // Format 3 as earlier releases wrote it: the same fields, no log time.
        let v3 = bincode::serialize(&(
            3u32,
            vec![("M1".to_string(), MemberWire::from(&m))],
            Vec::<(DecisionRecord, Vec<u8>)>::new(),
            vec![("M1".to_string(), vec![("o1".to_string(), i64::MAX / 2)])],
            Vec::<(String, ContactDay)>::new(),
            Vec::<(String, InventoryKey, u32)>::new(),
            Vec::<ExperimentSnapshotV4>::new(),
            LearnerSnapshot {
                models: Vec::new(),
                memory: Vec::new(),
            },
        ))
        .unwrap();
        let restored = state();
        restored.restore(&v3, 7).unwrap();
        assert_eq!(restored.members().get("M1"), Some(m));
        assert!(restored.ledger().suppressed("M1", "o1", 1));
        assert_eq!(restored.applied(), 7);
        // Written back in the current format.
        let again = state();
        again.restore(&restored.snapshot_bytes(), 7).unwrap();
        assert_eq!(again.digest(), restored.digest());
    }

    #[test]
    fn format_5_and_6_snapshots_are_still_read_with_undated_members() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let m = crate::synth::member(1, 1, d, &th);
        let at = 1_795_000_000_000i64;
        for format in [5u32, 6] {
            // Without experiments, formats 5 and 6 differ only in the number.
            let old = bincode::serialize(&(
                format,
                vec![("M1".to_string(), MemberWire::from(&m))],
                Vec::<(DecisionRecord, Vec<u8>)>::new(),
                Vec::<(String, Vec<(String, i64)>)>::new(),
                Vec::<(String, ContactDay)>::new(),
                Vec::<(String, InventoryKey, u32)>::new(),
                Vec::<ExperimentSnapshot>::new(),
                LearnerSnapshot {
                    models: Vec::new(),
                    memory: Vec::new(),
                },
                at,
            ))
            .unwrap();
            let restored = state();
            restored.restore(&old, 4).unwrap();
            let got = restored.members().get("M1").unwrap();
            assert_eq!(got, m);
            assert!(!got.history.is_dated());
            assert_eq!(restored.log_time_ms(), at);
            // Written back in the current format and read again: the same state.
            let bytes = restored.snapshot_bytes();
            assert_eq!(
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                SNAPSHOT_FORMAT
            );
            let again = state();
            again.restore(&bytes, 4).unwrap();
            assert_eq!(again.digest(), restored.digest());
            // The next month's first record dates the spread and ages a month out.
            let next = at + 31 * 86_400_000;
            again.apply(
                &LogRecord::MemberErased {
                    member_id: "nobody".into(),
                    at_ms: next,
                },
                5,
                false,
            );
            let rolled = again.members().get("M1").unwrap();
            assert!(rolled.history.is_dated());
            assert!(rolled.qualifying_spend_12m < m.qualifying_spend_12m);
        }
    }

    #[test]
    fn a_format_4_snapshot_is_still_read_with_unknown_segments() {
        use crate::experiments::{parse_experiments, ExposureV4, SegmentBy, DEFAULT_EXPERIMENTS};
        let exposure = |variant: u8, converted: bool| ExposureV4 {
            variant,
            covariate: 10.0,
            converted,
            revenue: if converted { 50.0 } else { 0.0 },
        };
        let v4 = bincode::serialize(&(
            4u32,
            Vec::<(String, MemberWire)>::new(),
            Vec::<(DecisionRecord, Vec<u8>)>::new(),
            Vec::<(String, Vec<(String, i64)>)>::new(),
            Vec::<(String, ContactDay)>::new(),
            Vec::<(String, InventoryKey, u32)>::new(),
            vec![ExperimentSnapshotV4 {
                id: "nbo-model-vs-priority".into(),
                variants: vec!["control".into(), "model".into()],
                decisions: vec![3, 2],
                sequential_min: vec![1.0, 1.0],
                members: vec![
                    ("M1".into(), exposure(0, true)),
                    ("M2".into(), exposure(0, false)),
                    ("M3".into(), exposure(1, true)),
                ],
            }],
            LearnerSnapshot {
                models: Vec::new(),
                memory: Vec::new(),
            },
            1_000i64,
        ))
        .unwrap();
        let restored = state();
        restored.restore(&v4, 3).unwrap();
        assert_eq!(restored.log_time_ms(), 1_000);
        let spec = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
        let report = restored.experiments().report(spec, restored.log_time_ms());
        assert_eq!(report.variants[0].members, 2);
        assert_eq!(report.variants[0].exposures, 3);
        assert_eq!(report.variants[1].conversions, 1);
        let by_tier = restored.experiments().segmented_report(
            spec,
            SegmentBy::Tier,
            crate::stats::Correction::Holm,
            restored.log_time_ms(),
        );
        assert_eq!(by_tier.segments.len(), 1);
        assert_eq!(by_tier.segments[0].segment, "unknown");
        assert_eq!(by_tier.segments[0].variants[0].members, 2);
        // Written back in the current format and read again to the same state.
        let again = state();
        again.restore(&restored.snapshot_bytes(), 3).unwrap();
        assert_eq!(again.digest(), restored.digest());
    }

    /// The segment is the member's at first exposure: a tier change after
    /// it (which the treatment may have caused) does not move the member.
    #[test]
    fn segments_are_taken_at_first_exposure() {
        use crate::domain::{Channel, Tier};
        use crate::experiments::{parse_experiments, SegmentBy, DEFAULT_EXPERIMENTS};
        let spec = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
        let core = state();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let mut m = crate::synth::member(1, 1, d, &core.thresholds());
        m.tier = Tier::Silver;
        core.apply(
            &LogRecord::Members(vec![("M1".into(), MemberWire::from(&m))]),
            1,
            false,
        );
        let decision = |id: &str, channel: Channel, at: i64| {
            LogRecord::Decision(DecisionRecord {
                id: id.into(),
                member_id: "M1".into(),
                channel,
                created_ms: at,
                offers: Vec::new(),
                experiments: vec![Assignment {
                    experiment: spec.id.clone(),
                    variant: "model".into(),
                }],
                covariate: 0.0,
                features: Vec::new(),
            })
        };
        core.apply(&decision("d1", Channel::App, 1_000), 2, false);
        m.tier = Tier::Gold;
        core.apply(
            &LogRecord::Members(vec![("M1".into(), MemberWire::from(&m))]),
            3,
            false,
        );
        core.apply(&decision("d2", Channel::Email, 2_000), 4, false);
        let book = core.experiments();
        let tiers = book.segmented_report(
            spec,
            SegmentBy::Tier,
            crate::stats::Correction::Holm,
            core.log_time_ms(),
        );
        let names: Vec<&str> = tiers.segments.iter().map(|s| s.segment.as_str()).collect();
        assert_eq!(names, vec!["silver"]);
        let model = &tiers.segments[0].variants[1];
        assert_eq!((model.members, model.exposures), (1, 2));
        let channels = book.segmented_report(
            spec,
            SegmentBy::Channel,
            crate::stats::Correction::Bh,
            core.log_time_ms(),
        );
        assert_eq!(channels.segments[0].segment, "app");
        // A replay of the same records gives the same segments.
        let replayed = state();
        replayed.restore(&core.snapshot_bytes(), 4).unwrap();
        assert_eq!(replayed.digest(), core.digest());
    }

    /// Loyalty outcomes count member events inside the window after first
    /// exposure, by log time; the time series follows the log days; both
    /// come back from a snapshot as they were.
    #[test]
    fn loyalty_outcomes_and_the_time_series_come_from_applied_records() {
        use crate::domain::{Channel, Tier};
        use crate::events::OutcomeRecord;
        use crate::experiments::{parse_experiments, DAY_MS};
        let spec = parse_experiments(
            "[[experiment]]\nid = \"x\"\nsalt = \"s\"\ntraffic = 1.0\nloyalty_window_days = 30\n\
             [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
             [[experiment.variant]]\nname = \"model\"\nweight = 1\n",
        )
        .unwrap()
        .remove(0);
        let core = state();
        core.experiments()
            .set_loyalty_windows(std::slice::from_ref(&spec));
        let d = chrono::NaiveDate::from_ymd_opt(2026, 8, 1).unwrap();
        let mut m = crate::synth::member(1, 1, d, &core.thresholds());
        m.tier = Tier::Silver;
        m.set_totals(m.qualifying_spend_12m as f64, 4);
        let t0 = Day::from_date(d).0 as i64 * DAY_MS + 3_600_000;
        let mut log = vec![LogRecord::Members(
            ["M1", "M2", "M3"]
                .iter()
                .map(|id| (id.to_string(), MemberWire::from(&m)))
                .collect(),
        )];
        let decision = |id: &str, member: &str, variant: &str, at: i64| {
            LogRecord::Decision(DecisionRecord {
                id: id.into(),
                member_id: member.into(),
                channel: Channel::App,
                created_ms: at,
                offers: Vec::new(),
                experiments: vec![Assignment {
                    experiment: "x".into(),
                    variant: variant.into(),
                }],
                covariate: 100.0,
                features: Vec::new(),
            })
        };
        let event = |change: MemberChange, at_ms: i64| LogRecord::MemberChange {
            member_id: "M1".into(),
            at_ms,
            change,
        };
        log.push(decision("d1", "M1", "model", t0));
        log.push(decision("d2", "M2", "control", t0));
        // The accept is worth 10 to the airline (the time series' value).
        log.push(LogRecord::OutcomesV2(vec![OutcomeRecordV2 {
            outcome: OutcomeRecord {
                decision_id: "d1".into(),
                offer_pos: 0,
                offer_id: "o".into(),
                member_id: "M1".into(),
                kind: OutcomeKind::Accept,
                revenue: 10.0,
                at_ms: t0 + 60_000,
                client_at_ms: None,
                inventory: None,
                suppress_days: 30,
                experiments: vec![Assignment {
                    experiment: "x".into(),
                    variant: "model".into(),
                }],
                learn: false,
            },
            value: 10.0,
            points: 0,
            points_cost: 0.0,
            voucher: false,
        }]));
        log.push(event(
            MemberChange::FlightFlown {
                day: 0,
                spend: 100.0,
                points: 10,
            },
            t0 + DAY_MS,
        ));
        log.push(event(
            MemberChange::TierChanged(Tier::Gold),
            t0 + 2 * DAY_MS,
        ));
        log.push(decision("d3", "M3", "control", t0 + 35 * DAY_MS));
        // Outside M1's 30-day window: not counted.
        log.push(event(
            MemberChange::Purchase {
                qualifying_amount: 50.0,
            },
            t0 + 40 * DAY_MS,
        ));
        for (i, r) in log.iter().enumerate() {
            core.apply(r, i as u64 + 1, false);
        }
        let report = core.experiments().report(&spec, core.log_time_ms());
        let (control, model) = (&report.variants[0], &report.variants[1]);
        assert_eq!((model.loyalty_members, model.lapse_members), (1, 1));
        assert_eq!(model.flights_per_member.mean, 1.0);
        assert_eq!(model.spend_per_member.mean, 100.0);
        assert_eq!((model.tier_up_rate, model.lapse_rate), (1.0, 0.0));
        // M2's window has ended without a flight; M3's has not ended.
        assert_eq!((control.loyalty_members, control.lapse_members), (2, 1));
        assert_eq!((control.lapse_rate, control.tier_up_rate), (1.0, 0.0));
        let ts = core.experiments().timeseries(&spec);
        let days: Vec<&str> = ts.days.iter().map(|d| d.day.as_str()).collect();
        assert_eq!(days, vec!["2026-08-01", "2026-09-05"]);
        let first = &ts.days[0].variants;
        assert_eq!(
            (first[1].members, first[1].conversions, first[1].value),
            (1, 1, 10.0)
        );
        assert_eq!(first[0].members, 1);
        assert_eq!(ts.days[1].variants[0].members, 2);
        assert_eq!(ts.days[1].variants[1].value, 10.0);
        // Restored from a snapshot, and replayed from the log, alike.
        let restored = state();
        restored.restore(&core.snapshot_bytes(), 9).unwrap();
        assert_eq!(restored.experiments().timeseries(&spec), ts);
        assert_eq!(
            restored.experiments().report(&spec, restored.log_time_ms()),
            core.experiments().report(&spec, core.log_time_ms())
        );
        assert_eq!(restored.digest().digest, core.digest().digest);
        let replayed = state();
        replayed
            .experiments()
            .set_loyalty_windows(std::slice::from_ref(&spec));
        for (i, r) in log.iter().enumerate() {
            replayed.apply(
                &LogRecord::decode(&r.encode()).unwrap(),
                i as u64 + 1,
                false,
            );
        }
        assert_eq!(replayed.experiments().timeseries(&spec), ts);
        assert_eq!(replayed.digest().digest, core.digest().digest);
    }

    #[test]
    fn a_format_5_snapshot_is_still_read_without_loyalty_outcomes() {
        use crate::experiments::{parse_experiments, ExposureV5, DEFAULT_EXPERIMENTS};
        let exposure = |variant: u8| ExposureV5 {
            variant,
            covariate: 10.0,
            converted: true,
            revenue: 20.0,
            decisions: 2,
            segment: None,
            declined: false,
        };
        let v5 = bincode::serialize(&(
            5u32,
            Vec::<(String, MemberWire)>::new(),
            Vec::<(DecisionRecord, Vec<u8>)>::new(),
            Vec::<(String, Vec<(String, i64)>)>::new(),
            Vec::<(String, ContactDay)>::new(),
            Vec::<(String, InventoryKey, u32)>::new(),
            vec![ExperimentSnapshotV5 {
                id: "nbo-model-vs-priority".into(),
                variants: vec!["control".into(), "model".into()],
                decisions: vec![2, 2],
                sequential_min: vec![1.0, 1.0],
                members: vec![("M1".into(), exposure(0)), ("M2".into(), exposure(1))],
            }],
            LearnerSnapshot {
                models: Vec::new(),
                memory: Vec::new(),
            },
            5_000i64,
        ))
        .unwrap();
        let restored = state();
        restored.restore(&v5, 3).unwrap();
        let spec = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
        let report = restored.experiments().report(spec, i64::MAX);
        assert_eq!(
            (report.variants[1].members, report.variants[1].conversions),
            (1, 1)
        );
        // First exposure unknown: no loyalty outcomes; no days yet.
        assert_eq!(report.variants[1].loyalty_members, 0);
        assert!(restored.experiments().timeseries(spec).days.is_empty());
        let again = state();
        again.restore(&restored.snapshot_bytes(), 3).unwrap();
        assert_eq!(again.digest(), restored.digest());
    }

    #[test]
    fn a_format_5_snapshot_is_still_read_without_accepts_or_values() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let m = crate::synth::member(1, 1, d, &th);
        // Format 5 as the previous release wrote it: format 6 less the
        // accepts held for refunds, the values and the vouchers.
        let v5 = bincode::serialize(&(
            5u32,
            vec![("M1".to_string(), MemberWire::from(&m))],
            Vec::<(DecisionRecord, Vec<u8>)>::new(),
            vec![("M1".to_string(), vec![("o1".to_string(), i64::MAX / 2)])],
            Vec::<(String, ContactDay)>::new(),
            vec![(
                "seat".to_string(),
                InventoryKey::AirportDay {
                    airport: *b"PEK",
                    day: 1,
                },
                3u32,
            )],
            Vec::<ExperimentSnapshot>::new(),
            LearnerSnapshot {
                models: Vec::new(),
                memory: Vec::new(),
            },
            2_000i64,
        ))
        .unwrap();
        let restored = state();
        restored.restore(&v5, 9).unwrap();
        assert_eq!(restored.members().get("M1"), Some(m));
        assert_eq!(restored.log_time_ms(), 2_000);
        let key = InventoryKey::AirportDay {
            airport: *b"PEK",
            day: 1,
        };
        assert_eq!(restored.ledger().units("seat", &key).committed, 3);
        // Written back in format 6 and read again to the same state.
        let again = state();
        again.restore(&restored.snapshot_bytes(), 9).unwrap();
        assert_eq!(again.digest(), restored.digest());
    }

    #[test]
    fn a_hostile_snapshot_is_an_error_not_an_allocation() {
        let state = state();
        let mut snap = 2u32.to_le_bytes().to_vec();
        snap.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(state.restore(&snap, 0).is_err());
    }

    #[test]
    fn snapshot_round_trips_committed_state() {
        let core = state();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        core.members()
            .upsert("M1", crate::synth::member(1, 1, d, &core.thresholds()));
        core.ledger().suppress("M1", "o1", i64::MAX / 2, 0);
        let bytes = core.snapshot_bytes();
        let other = state();
        other.restore(&bytes, 0).unwrap();
        assert_eq!(other.members().get("M1"), core.members().get("M1"));
        assert!(other.ledger().suppressed("M1", "o1", 1));
        assert!(other.restore(b"garbage", 0).is_err());
    }
}

#[cfg(test)]
mod learning_tests {
    use super::*;
    use crate::events::OutcomeRecord;
    use crate::records::IssuedOffer;

    fn core() -> State {
        State::new(StateSettings {
            max_decisions: 1000,
            thresholds: TierThresholds::default(),
            learning: LearnSettings::default(),
        })
    }

    fn decision(i: usize, now: i64) -> LogRecord {
        let features: Vec<f32> = (0..crate::features::N_FEATURES)
            .map(|j| ((i * 7 + j) % 5) as f32 / 4.0)
            .collect();
        LogRecord::Decision(DecisionRecord {
            id: format!("d{i}"),
            member_id: format!("M{i}"),
            channel: crate::domain::Channel::Checkout,
            created_ms: now,
            offers: ["seat-extra-legroom", "lounge-dom"]
                .iter()
                .map(|o| IssuedOffer {
                    offer_id: o.to_string(),
                    price: None,
                    points_price: None,
                    expires_ms: now + 3_600_000,
                    inventory: None,
                    suppress_days: 30,
                    propensity: 0.5,
                })
                .collect(),
            experiments: Vec::new(),
            covariate: 0.0,
            features,
        })
    }

    fn accept(i: usize, at_ms: i64) -> LogRecord {
        LogRecord::Outcomes(vec![OutcomeRecord {
            decision_id: format!("d{i}"),
            offer_pos: 0,
            offer_id: "seat-extra-legroom".into(),
            member_id: format!("M{i}"),
            kind: OutcomeKind::Accept,
            revenue: 0.0,
            at_ms,
            client_at_ms: None,
            inventory: None,
            suppress_days: 30,
            experiments: Vec::new(),
            learn: true,
        }])
    }

    /// The per offer counts and campaign runs come from the records alone:
    /// a replay and a snapshot restore hold the same, the digest covers
    /// them, and a format-7 snapshot (without them) is still read.
    #[test]
    fn offer_counts_and_campaign_runs_are_rebuilt_from_the_records() {
        let now = 1_795_000_000_000i64;
        let mut log: Vec<LogRecord> = (0..6).map(|i| decision(i, now + i as i64)).collect();
        log.extend((0..6).step_by(2).map(|i| accept(i, now + 10)));
        log.push(LogRecord::Outcomes(vec![OutcomeRecord {
            kind: OutcomeKind::Decline,
            offer_id: "lounge-dom".into(),
            offer_pos: 1,
            decision_id: "d1".into(),
            member_id: "M1".into(),
            revenue: 0.0,
            at_ms: now + 20,
            client_at_ms: None,
            inventory: None,
            suppress_days: 30,
            experiments: Vec::new(),
            learn: false,
        }]));
        log.push(LogRecord::CampaignRun(crate::records::CampaignRunRecord {
            campaign_id: "c1".into(),
            channel: crate::domain::Channel::Email,
            segment: "{}".into(),
            started_ms: now + 30,
            duration_ms: 12,
            members_scanned: 9,
            members_matched: 6,
            members_written: 5,
            held_out: 1,
            decisions_recorded: 6,
        }));
        let live = core();
        for (lsn, r) in log.iter().enumerate() {
            live.apply(r, lsn as u64 + 1, false);
        }
        let counts = live.offer_stats().counts();
        let seat = counts
            .iter()
            .find(|(o, ch, _)| o == "seat-extra-legroom" && ch == "checkout")
            .unwrap();
        assert_eq!((seat.2.shown, seat.2.accepts, seat.2.explored), (6, 3, 6));
        let lounge = counts.iter().find(|(o, _, _)| o == "lounge-dom").unwrap();
        assert_eq!(
            (lounge.2.shown, lounge.2.declines, lounge.2.suppressions),
            (6, 1, 1)
        );
        assert_eq!(live.campaign_runs().runs().len(), 1);

        let replayed = core();
        for (lsn, r) in log.iter().enumerate() {
            replayed.apply(
                &LogRecord::decode(&r.encode()).unwrap(),
                lsn as u64 + 1,
                false,
            );
        }
        assert_eq!(replayed.digest(), live.digest());
        let restored = core();
        restored
            .restore(&live.snapshot_bytes(), log.len() as u64)
            .unwrap();
        assert_eq!(restored.digest(), live.digest());
        assert_eq!(restored.offer_stats().counts(), counts);

        // One more show changes the digest's offers part.
        let before = live.digest();
        live.apply(&decision(9, now + 40), 99, false);
        assert_ne!(before.parts["offers"], live.digest().parts["offers"]);

        // Format 7: the same fields without the counts and runs.
        let snap: Snapshot = decode_bounded(&restored.snapshot_bytes()).unwrap();
        let v7 = bincode::serialize(&(
            7u32,
            &snap.members,
            &snap.decisions,
            &snap.suppressions,
            &snap.contacts,
            &snap.inventory,
            &snap.experiments,
            &snap.learner,
            snap.log_time_ms,
            &snap.accepts,
            &snap.experiment_values,
            &snap.vouchers,
        ))
        .unwrap();
        let old = core();
        old.restore(&v7, 3).unwrap();
        assert!(old.offer_stats().counts().is_empty());
        assert!(old.campaign_runs().runs().is_empty());
        assert_eq!(old.members().len(), restored.members().len());
        assert_eq!(old.log_time_ms(), restored.log_time_ms());
    }

    /// What is learned live is what replay and a snapshot restore rebuild,
    /// including an accept that arrives days after its decision.
    #[test]
    fn learned_state_survives_replay_and_snapshots() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut log = Vec::new();
        for i in 0..300 {
            log.push(decision(i, now));
            if i % 7 == 0 {
                // Three days later: past the offer's expiry, inside the window.
                log.push(accept(i, now + 3 * 86_400_000));
            }
        }
        let live = core();
        for r in &log {
            live.apply(r, 0, true);
        }
        let p = live.learner().posterior("seat-extra-legroom").unwrap();
        assert_eq!((p.examples, p.accepts), (300 + 43, 43));
        assert_eq!(live.learner().posterior("lounge-dom").unwrap().accepts, 0);

        let replayed = core();
        for r in &log {
            replayed.apply(&LogRecord::decode(&r.encode()).unwrap(), 0, false);
        }
        let snap = |c: &State| bincode::serialize(&c.learner().to_snapshot(now)).unwrap();
        assert_eq!(snap(&replayed), snap(&live));

        let restored = core();
        restored.restore(&live.snapshot_bytes(), 0).unwrap();
        assert_eq!(snap(&restored), snap(&live));
        // A delayed accept after the restart is still attributed.
        restored.apply(&accept(1, now + 86_400_000), 0, false);
        live.apply(&accept(1, now + 86_400_000), 0, true);
        assert_eq!(snap(&restored), snap(&live));
        assert_eq!(
            restored
                .learner()
                .posterior("seat-extra-legroom")
                .unwrap()
                .accepts,
            44
        );
    }
}
