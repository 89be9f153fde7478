//! The one commit path: every durable change (a decision, outcomes, member
//! writes and events, an erasure) is a [`LogRecord`] that is appended to the
//! log and, once the log holds it, applied to the [`State`] in log order
//! ([`Durable::commit`]). Nothing else changes durable state.
//!
//! The log sits behind the small [`EventLog`] trait, so a second log (a
//! shared stream for replicas) can be added without touching a use case.
//! [`LocalLog`] is the embedded write-ahead log ([`offer_engine_wal`]).
//! On start, [`open`] replays the newest snapshot and every later record
//! through the same [`State::apply`].

pub mod cluster;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use offer_engine_wal::{RecoveryReport, ReplayItem, Wal, WalError, WalOptions};

use crate::records::DecisionRecord;
use crate::state::{Applied, LogRecord, State};

/// A log write on its way: resolves to the record's position once durable.
pub type Pending = Pin<Box<dyn Future<Output = Result<u64, LogError>> + Send>>;

/// A log write on its way: resolves to the record's position and what
/// applying it did, once durable and applied.
pub type PendingApplied = Pin<Box<dyn Future<Output = Result<(u64, Applied), LogError>> + Send>>;

/// Why the log did not take a record. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log cannot store the record now (full disk, I/O error, closed).
    #[error("the event log cannot take writes: {0}")]
    Unavailable(String),
    /// The record is larger than the log accepts.
    #[error("the record is too large for the event log: {0}")]
    TooLarge(String),
}

impl From<WalError> for LogError {
    fn from(e: WalError) -> LogError {
        match e {
            WalError::RecordTooLarge { .. } => LogError::TooLarge(e.to_string()),
            other => LogError::Unavailable(other.to_string()),
        }
    }
}

/// What a commit path needs from a log. Callbacks run on the log's own
/// thread, once the record is durable, in log order: that is where records
/// are applied, so every state applies them in the same order.
pub trait EventLog: Send + Sync {
    /// Appends; `after_durable(position)` runs once the record is durable.
    fn append(&self, payload: Vec<u8>, after_durable: Box<dyn FnOnce(u64) + Send>) -> Pending;
    /// Appends a decision, which must never hold up its caller for long:
    /// resolves with its position once durable and applied, or with 0 when
    /// it is still on its way (cluster mode: NATS slow or lost; the record
    /// waits in an outbox and `after_durable` runs when it is applied).
    fn append_decision(
        &self,
        payload: Vec<u8>,
        after_durable: Box<dyn FnOnce(u64) + Send>,
    ) -> Pending {
        self.append(payload, after_durable)
    }
    /// Appends without waiting (joins the next batch); `done` runs with the
    /// record's position once durable, or with the error.
    fn append_deferred(
        &self,
        payload: Vec<u8>,
        done: Box<dyn FnOnce(Result<u64, LogError>) + Send>,
    ) -> Result<(), LogError>;
    /// Writes a snapshot made by `make` between two records; returns the
    /// position it reflects.
    fn snapshot(&self, make: Box<dyn FnOnce() -> Vec<u8> + Send>) -> Pending;
    /// The same, blocking the calling thread (start-up, tools).
    fn snapshot_blocking(&self, make: Box<dyn FnOnce() -> Vec<u8> + Send>)
        -> Result<u64, LogError>;
    /// Whether the log takes writes.
    fn is_healthy(&self) -> bool;
    /// Stops the log after the writes queued so far.
    fn close(&self);
    /// Makes the next `n` writes fail as a full disk would (tests).
    #[doc(hidden)]
    fn inject_failures(&self, _n: usize) {}
    /// The shared stream's and this replica's positions (cluster mode).
    fn cluster_status(&self) -> Option<Arc<cluster::ClusterStatus>> {
        None
    }
    /// Resolves once this process applied every record the log held when
    /// called (a shared log may hold other writers' records); the local log
    /// applies its records before acknowledging them, so it is at once.
    fn sync(&self) -> Pending {
        Box::pin(async { Ok(0) })
    }
}

/// The embedded write-ahead log in the data directory.
pub struct LocalLog(pub Wal);

impl EventLog for LocalLog {
    fn append(&self, payload: Vec<u8>, after_durable: Box<dyn FnOnce(u64) + Send>) -> Pending {
        let f = self.0.append(payload, after_durable);
        Box::pin(async move { f.await.map_err(LogError::from) })
    }
    fn append_deferred(
        &self,
        payload: Vec<u8>,
        done: Box<dyn FnOnce(Result<u64, LogError>) + Send>,
    ) -> Result<(), LogError> {
        self.0
            .append_deferred(payload, move |r| done(r.map_err(LogError::from)))
            .map_err(LogError::from)
    }
    fn snapshot(&self, make: Box<dyn FnOnce() -> Vec<u8> + Send>) -> Pending {
        let wal = self.0.clone();
        Box::pin(async move { wal.snapshot(make).await.map_err(LogError::from) })
    }
    fn snapshot_blocking(
        &self,
        make: Box<dyn FnOnce() -> Vec<u8> + Send>,
    ) -> Result<u64, LogError> {
        self.0.snapshot_blocking(make).map_err(LogError::from)
    }
    fn is_healthy(&self) -> bool {
        self.0.is_healthy()
    }
    fn close(&self) {
        self.0.close()
    }
    fn inject_failures(&self, n: usize) {
        self.0.inject_failures(n)
    }
}

/// The kind of a record as an [`Observer`] names it (`decision`,
/// `outcomes`, `put`/`bulk` as `members`, a member event's type, `erase`).
pub fn record_kind(rec: &LogRecord) -> &'static str {
    match rec {
        LogRecord::Decision(_) | LogRecord::Decisions(_) => "decision",
        LogRecord::Outcomes(_) | LogRecord::OutcomesV2(_) => "outcomes",
        LogRecord::Members(_) | LogRecord::MembersV2(_) => "bulk",
        LogRecord::MemberChange { change, .. } => change.kind(),
        LogRecord::MemberErased { .. } => "erase",
        LogRecord::CampaignRun(_) => "campaign_run",
    }
}

/// Who hears about applied records (metrics, on the live path).
pub trait Observer: Send + Sync {
    /// A record was applied live; `what` names its kind (`decision`,
    /// `outcomes`, `put`, `bulk`, a member event's type, `erase`).
    fn applied(&self, what: &'static str, rec: &LogRecord, applied: &Applied);
    /// A record was not logged (so not applied); `what` names its kind.
    fn not_logged(&self, what: &'static str, e: &LogError);
    /// Cluster mode: a publish was acknowledged after `seconds`.
    fn published(&self, _seconds: f64) {}
    /// Cluster mode: `state` was restored from a snapshot before any record
    /// is applied (counters start from what it holds; every later record
    /// reaches [`Observer::applied`]).
    fn restored(&self, _state: &State) {}
}

/// An observer that hears nothing (tools, benches).
pub struct Silent;
impl Observer for Silent {
    fn applied(&self, _: &'static str, _: &LogRecord, _: &Applied) {}
    fn not_logged(&self, _: &'static str, _: &LogError) {}
}

/// The commit path: the log, the state it makes durable, and who observes
/// applied records. Cloning is shallow.
#[derive(Clone)]
pub struct Durable {
    log: Arc<dyn EventLog>,
    state: State,
    observer: Arc<dyn Observer>,
}

impl Durable {
    /// A commit path over `log` into `state`.
    pub fn new(log: Arc<dyn EventLog>, state: State, observer: Arc<dyn Observer>) -> Durable {
        Durable {
            log,
            state,
            observer,
        }
    }

    /// The state records are applied to.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the log takes writes.
    pub fn is_healthy(&self) -> bool {
        self.log.is_healthy()
    }

    /// Commits a record: appends it and, once durable, applies it (live).
    /// Resolves with its position after it was applied. `what` names the
    /// kind of record for the observer.
    pub fn commit(&self, rec: LogRecord, what: &'static str) -> Pending {
        let payload = rec.encode();
        let state = self.state.clone();
        let observer = self.observer.clone();
        let pending = self.log.append(
            payload,
            Box::new(move |lsn| {
                let applied = state.apply(&rec, lsn, true);
                observer.applied(what, &rec, &applied);
            }),
        );
        let observer = self.observer.clone();
        Box::pin(async move { pending.await.inspect_err(|e| observer.not_logged(what, e)) })
    }

    /// [`Durable::commit`], resolving also with what applying the record
    /// did (an outcome batch can be refused at apply, in log order).
    pub fn commit_applied(&self, rec: LogRecord, what: &'static str) -> PendingApplied {
        let payload = rec.encode();
        let state = self.state.clone();
        let observer = self.observer.clone();
        let slot: Arc<std::sync::Mutex<Option<Applied>>> = Arc::default();
        let filled = slot.clone();
        let pending = self.log.append(
            payload,
            Box::new(move |lsn| {
                let applied = state.apply(&rec, lsn, true);
                observer.applied(what, &rec, &applied);
                *filled
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(applied);
            }),
        );
        let observer = self.observer.clone();
        Box::pin(async move {
            let lsn = pending
                .await
                .inspect_err(|e| observer.not_logged(what, e))?;
            let applied = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            Ok((lsn, applied))
        })
    }

    /// Commits a block of decisions made here (campaigns): each is
    /// remembered at once, so an accept may follow before the log has them.
    ///
    /// With a shared log (cluster mode) they go the way of a checkout
    /// decision instead ([`Durable::commit_decision`]): remembered when
    /// applied, on every replica alike, and published through the outbox
    /// when NATS is lost (an event about one of them on this replica waits
    /// for the outbox, [`Durable::sync`]).
    pub fn commit_decisions(&self, records: Vec<DecisionRecord>, now_ms: i64) -> Pending {
        if self.log.cluster_status().is_some() {
            return self.commit_decision_applied(LogRecord::Decisions(records));
        }
        for r in &records {
            self.state.remember_decision(r.without_features(), now_ms);
        }
        self.commit(LogRecord::Decisions(records), "decision")
    }

    /// Commits a checkout decision. With the local log it does not wait:
    /// it is remembered at once (an accept may follow immediately) and
    /// joins the log's next batch; checkout never waits for the disk. One
    /// lost in a crash before that batch can no longer be attributed (its
    /// accept gets 404); nothing acknowledged to a writer is lost.
    ///
    /// With a shared log (cluster mode) it returns the write to wait for
    /// before answering: an accept sent to another replica after the
    /// answer then finds the decision in the stream. The wait is bounded
    /// by `[cluster] checkout_publish_budget_ms`: when NATS is slow or lost
    /// the decision waits in the outbox and the checkout answers anyway.
    pub fn commit_decision(&self, mut record: DecisionRecord, now_ms: i64) -> Option<Pending> {
        if self.log.cluster_status().is_some() {
            return Some(self.commit_decision_applied(LogRecord::Decision(record)));
        }
        let payload = LogRecord::encode_decision(&record);
        // The features go to the learner's memory once logged; the ledger's
        // copy (kept until the offers expire) does not need them.
        let features = std::mem::take(&mut record.features);
        let live = self.state.remember_decision(record, now_ms);
        let state = self.state.clone();
        let observer = self.observer.clone();
        let queued = self.log.append_deferred(
            payload,
            Box::new(move |result| match result {
                Ok(lsn) => {
                    let applied = state.apply_decision_record(&live.record, &features, lsn, true);
                    // The record was borrowed for the apply; what the
                    // observer needs of a decision is in `applied`.
                    observer.applied("decision", &LogRecord::Decisions(Vec::new()), &applied);
                }
                Err(e) => observer.not_logged("decision", &e),
            }),
        );
        if let Err(e) = queued {
            self.observer.not_logged("decision", &e);
        }
        None
    }

    /// Cluster mode: publishes decisions and remembers them when applied,
    /// as on every other replica (a decision whose publication fails is
    /// then held by none, and a snapshot never holds one the stream lacks).
    /// Never fails its caller for the log: a checkout answers whether or
    /// not the decision could be published (a decision not logged is
    /// counted by the observer; its accepts then find no decision).
    fn commit_decision_applied(&self, rec: LogRecord) -> Pending {
        let state = self.state.clone();
        let observer = self.observer.clone();
        let pending = self.log.append_decision(
            rec.encode(),
            Box::new(move |lsn| {
                let applied = state.apply(&rec, lsn, false);
                observer.applied("decision", &rec, &applied);
            }),
        );
        let observer = self.observer.clone();
        Box::pin(async move {
            Ok(pending
                .await
                .inspect_err(|e| observer.not_logged("decision", e))
                .unwrap_or(0))
        })
    }

    /// Writes a snapshot of the state between two records.
    pub fn snapshot(&self) -> Pending {
        let state = self.state.clone();
        self.log.snapshot(Box::new(move || state.snapshot_bytes()))
    }

    /// The same, blocking (start-up, tools).
    pub fn snapshot_blocking(&self) -> Result<u64, LogError> {
        let state = self.state.clone();
        self.log
            .snapshot_blocking(Box::new(move || state.snapshot_bytes()))
    }

    /// Stops the log after the writes queued so far.
    pub fn close(&self) {
        self.log.close()
    }

    /// The shared stream's and this replica's positions (cluster mode).
    pub fn cluster_status(&self) -> Option<Arc<cluster::ClusterStatus>> {
        self.log.cluster_status()
    }

    /// Resolves once this process applied every record the log held when
    /// called (cluster mode: other replicas' records included).
    pub fn sync(&self) -> Pending {
        self.log.sync()
    }

    /// Makes the next `n` writes fail as a full disk would (tests).
    #[doc(hidden)]
    pub fn inject_failures(&self, n: usize) {
        self.log.inject_failures(n)
    }
}

/// Opens the local log in `dir`, restoring the newest snapshot and
/// replaying every later record into `state`.
pub fn open(
    dir: &Path,
    opts: WalOptions,
    state: &State,
) -> Result<(Wal, RecoveryReport), WalError> {
    let started = std::time::Instant::now();
    let result = Wal::open(dir, opts, |item| match item {
        ReplayItem::Snapshot { data, lsn } => state.restore(data, lsn),
        ReplayItem::Record { data, lsn } => {
            let rec = LogRecord::decode(data).map_err(|e| format!("record {lsn}: {e}"))?;
            state.apply(&rec, lsn, false);
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

/// Holds the data directory's LOCK file while it lives: one process at a
/// time may open an event log, since opening repairs a torn tail.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] std::fs::File);

impl DirLock {
    /// Takes the lock of `dir`, or says which process holds it.
    pub fn take(dir: &Path) -> anyhow::Result<DirLock> {
        use anyhow::Context;
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .with_context(|| format!("opening the lock file in {}", dir.display()))?;
        if lock_file.try_lock().is_err() {
            anyhow::bail!(
                "data dir {} is in use by another offer-engine process (its LOCK file is held); stop it first",
                dir.display()
            );
        }
        Ok(DirLock(lock_file))
    }
}
