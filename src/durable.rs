//! Durability: what goes into the event log, what a snapshot holds, and the
//! one `apply` function used both live (after a record is durable) and on
//! replay at start, so the state after a restart is exactly the state before.
//!
//! Records and snapshots are bincode; the log frames them with checksums
//! ([`offer_engine_wal`]). Decisions are logged without waiting (checkout never
//! waits for a disk); everything a writer is told is accepted (202) was
//! durable and applied first.

use std::path::Path;

use offer_engine_wal::{RecoveryReport, ReplayItem, Wal, WalError, WalOptions};
use serde::{Deserialize, Serialize};

use crate::domain::{Consent, Day, Iata, Member, Tags, Tier, TierThresholds};
use crate::events::{MemberChange, OutcomeKind, OutcomeRecord};
use crate::experiments::{Assignment, ExperimentBook, ExperimentSnapshot};
use crate::ledger::{ContactDay, DecisionRecord, InventoryKey, Ledger, ACCEPTED};
use crate::store::MemberStore;

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
            flights: m.flights_12m,
            tags: m.tags.bits(),
            home: [h[0], h[1], h[2]],
            tier: m.tier,
            birth_month: m.birth_month,
            consent: m.consent.bits(),
        }
    }
}

impl From<&MemberWire> for Member {
    fn from(w: &MemberWire) -> Self {
        Member {
            qualifying_spend_12m: w.spend,
            points: w.points,
            last_flight: w.last_flight.map(Day),
            joined: Day(w.joined),
            flights_12m: w.flights,
            tags: Tags::from_bits(w.tags),
            home_airport: Iata::from_bytes(w.home),
            tier: w.tier,
            birth_month: w.birth_month,
            consent: Consent::from_bits(w.consent),
        }
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

/// Snapshot format version.
const SNAPSHOT_FORMAT: u32 = 3;

/// Everything the state holds, committed parts only.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    members: Vec<(String, MemberWire)>,
    decisions: Vec<(DecisionRecord, Vec<u8>)>,
    suppressions: Vec<(String, Vec<(String, i64)>)>,
    contacts: Vec<(String, ContactDay)>,
    inventory: Vec<(String, InventoryKey, u32)>,
    experiments: Vec<ExperimentSnapshot>,
    learner: crate::online::LearnerSnapshot,
}

/// The state that the log makes durable. Cloning is shallow.
#[derive(Clone)]
pub struct Core {
    /// Members.
    pub members: MemberStore,
    /// Decisions, suppressions, contacts, inventory.
    pub ledger: Ledger,
    /// Tier thresholds (member changes re-tier on spend).
    pub thresholds: TierThresholds,
    /// Experiment exposures and conversions.
    pub experiments: ExperimentBook,
    /// Adaptive models, fed by decisions and accepts.
    pub learner: crate::online::OnlineLearner,
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
}

impl Core {
    /// Applies a durable record. `live` says the record was produced by this
    /// process (its accepts were reserved in phase one); replay passes false.
    pub fn apply(&self, rec: &LogRecord, live: bool) -> Applied {
        let mut applied = Applied::default();
        match rec {
            LogRecord::Decision(d) => self.apply_decision(d, &d.features, live, &mut applied),
            LogRecord::Decisions(list) => {
                for d in list {
                    self.apply_decision(d, &d.features, live, &mut applied);
                }
            }
            LogRecord::Outcomes(events) => {
                for e in events {
                    match e.kind {
                        OutcomeKind::Accept => {
                            self.learner
                                .accepted(&e.decision_id, &e.offer_id, e.at_ms, e.learn);
                            match self.ledger.decision(&e.decision_id) {
                                Some(d) if (e.offer_pos as usize) < d.status.len() => {
                                    self.ledger.commit_accept(&d, e.offer_pos as usize, live)
                                }
                                // The decision expired from memory: its inventory still counts.
                                _ => self.commit_inventory(e),
                            }
                            for a in &e.experiments {
                                let c = self.experiments.convert(a, &e.member_id, e.revenue);
                                applied
                                    .converted
                                    .push((a.clone(), c.new_conversion, e.revenue));
                            }
                        }
                        OutcomeKind::Decline => {
                            let until = e.at_ms + e.suppress_days as i64 * 86_400_000;
                            self.ledger
                                .suppress(&e.member_id, &e.offer_id, until, e.at_ms);
                        }
                        OutcomeKind::Fulfilled => {
                            // Checked at the edge; a duplicate that raced
                            // past the check is refused here and counts once.
                            let _ = self.learner.fulfilled(
                                &e.decision_id,
                                &e.offer_id,
                                e.at_ms,
                                e.learn,
                            );
                        }
                        OutcomeKind::Impression | OutcomeKind::Click => {}
                    }
                }
            }
            LogRecord::Members(list) => {
                for (id, w) in list {
                    self.members.upsert(id, Member::from(w));
                }
            }
            LogRecord::MemberChange {
                member_id, change, ..
            } => {
                let th = self.thresholds;
                if self
                    .members
                    .update(member_id, |m| change.apply(m, &th))
                    .is_none()
                {
                    applied.skipped += 1;
                }
            }
            LogRecord::MemberErased { member_id, .. } => self.erase_member(member_id),
        }
        applied
    }

    /// Applies one durable decision (what [`Core::apply`] does for
    /// `LogRecord::Decision`), borrowing the record; `features` are the ones
    /// it was logged with (the live path keeps them out of the ledger's copy).
    pub fn apply_decision_record(
        &self,
        d: &DecisionRecord,
        features: &[f32],
        live: bool,
    ) -> Applied {
        let mut applied = Applied::default();
        self.apply_decision(d, features, live, &mut applied);
        applied
    }

    /// Removes everything held about a member: the record, suppressions,
    /// contact counts and remembered decisions; experiment exposures are
    /// kept anonymously (see [`ExperimentBook::erase_member`]). Inventory
    /// counts hold no member data and stay. Erasure is rare, so walking the
    /// decision cache is acceptable.
    pub fn erase_member(&self, member_id: &str) {
        self.members.remove(member_id);
        self.ledger.suppressions.remove(member_id);
        self.ledger.contacts.remove(member_id);
        self.ledger
            .decisions
            .remove_where(|d| d.record.member_id == member_id);
        self.experiments.erase_member(member_id);
        self.learner.forget_member(member_id);
    }

    fn apply_decision(
        &self,
        d: &DecisionRecord,
        features: &[f32],
        live: bool,
        applied: &mut Applied,
    ) {
        if !features.is_empty() {
            let offers: Vec<&str> = d.offers.iter().map(|o| o.offer_id.as_str()).collect();
            self.learner
                .decided(&d.id, &d.member_id, d.created_ms, features, &offers);
        }
        let shown = d.offers.len().min(u16::MAX as usize) as u16;
        self.ledger
            .count_shown(&d.member_id, Day(day_of_ms(d.created_ms)), d.channel, shown);
        for a in &d.experiments {
            let c = self.experiments.expose(a, &d.member_id, d.covariate);
            applied.exposed.push((a.clone(), c.new_member));
        }
        if !live && d.last_expiry_ms() + 60_000 > chrono::Utc::now().timestamp_millis() {
            // The features live on in the learner's memory, not twice.
            self.ledger.remember(d.without_features());
        }
    }

    fn commit_inventory(&self, e: &OutcomeRecord) {
        if let Some((key, _)) = &e.inventory {
            let mut u = self
                .ledger
                .inventory
                .entry((e.offer_id.as_str().into(), key.clone()))
                .or_default();
            u.committed += 1;
        }
    }

    /// Serializes the committed state.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut members = Vec::with_capacity(self.members.len());
        self.members
            .for_each(|id, m| members.push((id.to_string(), MemberWire::from(m))));
        let mut decisions = Vec::with_capacity(self.ledger.decisions.len());
        self.ledger
            .decisions
            .for_each(chrono::Utc::now().timestamp_millis(), |d| {
                decisions.push((d.record.clone(), d.committed_status()))
            });
        let suppressions = self
            .ledger
            .suppressions
            .iter()
            .map(|e| {
                (
                    e.key().to_string(),
                    e.value().iter().map(|(o, u)| (o.to_string(), *u)).collect(),
                )
            })
            .collect();
        let contacts = self
            .ledger
            .contacts
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect();
        let inventory = self
            .ledger
            .inventory
            .iter()
            .filter(|e| e.value().committed > 0)
            .map(|e| {
                (
                    e.key().0.to_string(),
                    e.key().1.clone(),
                    e.value().committed,
                )
            })
            .collect();
        let snap = Snapshot {
            format: SNAPSHOT_FORMAT,
            members,
            decisions,
            suppressions,
            contacts,
            inventory,
            experiments: self.experiments.to_snapshot(),
            learner: self
                .learner
                .to_snapshot(chrono::Utc::now().timestamp_millis()),
        };
        bincode::serialize(&snap).unwrap_or_default()
    }

    /// Restores state from a snapshot (into empty stores).
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let snap: Snapshot =
            decode_bounded(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
        if snap.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "snapshot format {} is not {SNAPSHOT_FORMAT}",
                snap.format
            ));
        }
        for (id, w) in &snap.members {
            self.members.upsert(id, Member::from(w));
        }
        let now = chrono::Utc::now().timestamp_millis();
        for (rec, status) in snap.decisions {
            if rec.last_expiry_ms() + 60_000 <= now {
                continue;
            }
            let d = self.ledger.remember(rec);
            for (s, v) in d.status.iter().zip(status) {
                if v == ACCEPTED {
                    s.store(ACCEPTED, std::sync::atomic::Ordering::Release);
                }
            }
        }
        for (m, list) in snap.suppressions {
            for (o, until) in list {
                self.ledger.suppress(&m, &o, until, now);
            }
        }
        for (m, c) in snap.contacts {
            self.ledger.contacts.insert(m.into(), c);
        }
        for (o, key, committed) in snap.inventory {
            self.ledger
                .inventory
                .entry((o.into(), key))
                .or_default()
                .committed = committed;
        }
        self.experiments.restore(snap.experiments);
        self.learner.restore(snap.learner);
        Ok(())
    }
}

/// Day of a ms timestamp.
pub fn day_of_ms(ms: i64) -> i32 {
    ms.div_euclid(86_400_000) as i32
}

/// Opens the log in `dir`, restoring the newest snapshot and replaying every
/// later record into `core`.
pub fn open(dir: &Path, opts: WalOptions, core: &Core) -> Result<(Wal, RecoveryReport), WalError> {
    let started = std::time::Instant::now();
    let result = Wal::open(dir, opts, |item| match item {
        ReplayItem::Snapshot { data, .. } => core.restore(data),
        ReplayItem::Record { data, lsn } => {
            let rec = LogRecord::decode(data).map_err(|e| format!("record {lsn}: {e}"))?;
            core.apply(&rec, false);
            Ok(())
        }
    })?;
    let r = &result.1;
    tracing::info!(
        dir = %dir.display(),
        snapshot_lsn = ?r.snapshot_lsn,
        records = r.records_replayed,
        last_lsn = r.last_lsn,
        seconds = started.elapsed().as_secs_f64(),
        "event log replayed"
    );
    if r.truncated_bytes > 0 || r.reason.is_some() {
        tracing::warn!(
            truncated_bytes = r.truncated_bytes,
            at = ?r.truncated_at,
            reason = r.reason.as_deref().unwrap_or(""),
            "event log had a torn or corrupt tail; it was cut off and the service starts from the last good record"
        );
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_decision_encoding_is_the_owned_one() {
        let d = DecisionRecord {
            id: "d-1".into(),
            member_id: "M00000001".into(),
            channel: crate::domain::Channel::Checkout,
            created_ms: 1_790_000_000_000,
            offers: vec![crate::ledger::IssuedOffer {
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
        let core = Core {
            members: MemberStore::new(),
            ledger: Ledger::new(10),
            thresholds: TierThresholds::default(),
            experiments: ExperimentBook::default(),
            learner: Default::default(),
        };
        let mut snap = 2u32.to_le_bytes().to_vec();
        snap.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(core.restore(&snap).is_err());
    }

    #[test]
    fn member_wire_round_trips() {
        let th = TierThresholds::default();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        for i in 0..200 {
            let m = crate::synth::member(5, i, d, &th);
            assert_eq!(Member::from(&MemberWire::from(&m)), m);
        }
    }

    #[test]
    fn snapshot_round_trips_committed_state() {
        let core = Core {
            members: MemberStore::new(),
            ledger: Ledger::new(1000),
            thresholds: TierThresholds::default(),
            experiments: ExperimentBook::default(),
            learner: Default::default(),
        };
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        core.members
            .upsert("M1", crate::synth::member(1, 1, d, &core.thresholds));
        core.ledger.suppress("M1", "o1", i64::MAX / 2, 0);
        let bytes = core.snapshot_bytes();
        let other = Core {
            members: MemberStore::new(),
            ledger: Ledger::new(1000),
            thresholds: TierThresholds::default(),
            experiments: ExperimentBook::default(),
            learner: Default::default(),
        };
        other.restore(&bytes).unwrap();
        assert_eq!(other.members.get("M1"), core.members.get("M1"));
        assert!(other.ledger.suppressed("M1", "o1", 1));
        assert!(other.restore(b"garbage").is_err());
    }
}

#[cfg(test)]
mod learning_tests {
    use super::*;
    use crate::events::OutcomeRecord;
    use crate::ledger::IssuedOffer;

    fn core() -> Core {
        Core {
            members: MemberStore::new(),
            ledger: Ledger::new(1000),
            thresholds: TierThresholds::default(),
            experiments: ExperimentBook::default(),
            learner: Default::default(),
        }
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
            live.apply(r, true);
        }
        let p = live.learner.posterior("seat-extra-legroom").unwrap();
        assert_eq!((p.examples, p.accepts), (300 + 43, 43));
        assert_eq!(live.learner.posterior("lounge-dom").unwrap().accepts, 0);

        let replayed = core();
        for r in &log {
            replayed.apply(&LogRecord::decode(&r.encode()).unwrap(), false);
        }
        let snap = |c: &Core| bincode::serialize(&c.learner.to_snapshot(now)).unwrap();
        assert_eq!(snap(&replayed), snap(&live));

        let restored = core();
        restored.restore(&live.snapshot_bytes()).unwrap();
        assert_eq!(snap(&restored), snap(&live));
        // A delayed accept after the restart is still attributed.
        restored.apply(&accept(1, now + 86_400_000), false);
        live.apply(&accept(1, now + 86_400_000), true);
        assert_eq!(snap(&restored), snap(&live));
        assert_eq!(
            restored
                .learner
                .posterior("seat-extra-legroom")
                .unwrap()
                .accepts,
            44
        );
    }
}
