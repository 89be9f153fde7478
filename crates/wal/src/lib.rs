//! Durable event log (write-ahead log) with group commit and snapshots, for offer-engine.
//!
//! Every state-changing request the HTTP service acknowledges with `202 Accepted` is first
//! appended here; the in-memory state is only changed from the `after_durable` callback,
//! which runs on the log's writer thread *after* the record is on stable storage. A restart
//! therefore rebuilds exactly the state that existed before the stop: newest snapshot first,
//! then every later record, in log order.
//!
//! # On-disk format
//!
//! The data directory holds two kinds of files:
//!
//! * **Segments** `wal-{first_lsn:020}.log`: a sequence of records, each
//!   `[u32 LE payload length][u32 LE crc32(lsn LE bytes ‖ payload)][u64 LE lsn][payload]`
//!   (16-byte header). LSNs start at 1 and grow by exactly 1, across segment boundaries; the
//!   first record of a segment carries the LSN in the file name. The writer starts a new
//!   segment before a batch once the current one has reached [`WalOptions::segment_bytes`]
//!   (so a segment may exceed the limit by at most one batch).
//! * **Snapshots** `snapshot-{lsn:020}.snap`: a 32-byte header
//!   `[magic "OENSNAP\0"][u32 LE version = 1][u64 LE lsn][u64 LE data length][u32 LE crc32(lsn LE ‖ data)]`
//!   followed by the opaque state bytes, which reflect exactly records `1..=lsn`. They are
//!   written atomically: `*.snap.tmp`, fsync, rename, fsync of the directory.
//!
//! # Group commit
//!
//! A dedicated OS thread owns the active segment. Appenders send their payload, their
//! callback and a reply channel over an mpsc channel. The writer blocks for the first
//! request, drains everything else already queued (up to [`WalOptions::max_batch`]),
//! encodes the whole batch into one buffer, issues one `write` and one `fdatasync`, and only
//! then, in LSN order, runs each record's `after_durable(lsn)` callback followed by its reply.
//! Thousands of concurrent appenders thus share one fsync, and callbacks observe log order.
//!
//! If the write or the fsync fails (disk full, I/O error) no callback of that batch runs and
//! every appender of the batch gets [`WalError::Io`]. The writer then truncates the segment
//! back to the last durable offset; when that works the log stays usable (a full disk that
//! frees up recovers by itself), otherwise the log is *poisoned* and every later append fails
//! with [`WalError::Poisoned`]. A failure is never a panic and never a silent drop.
//!
//! # Snapshots and segment deletion
//!
//! [`Wal::snapshot`] runs the caller's `make()` on the writer thread between batches, so the
//! state it serialises contains exactly the records up to the last applied LSN `L`, and
//! writes `snapshot-L`. The directory keeps the newest snapshot and one previous one (the
//! fallback); older snapshots are deleted. A segment is deleted only when all its records are
//! `<=` the *previous* snapshot's LSN, so if the newest snapshot turns out to be corrupt the
//! previous snapshot plus the remaining segments still rebuild the full state.
//!
//! # Recovery rules ([`Wal::open`])
//!
//! * Leftover `*.snap.tmp` files are removed.
//! * Snapshots are tried newest first; an unreadable/corrupt one is renamed to `*.corrupt`,
//!   logged with `tracing::error!` and reported, and the next older one is used.
//! * Segments wholly covered by the snapshot are skipped; the rest are replayed in order,
//!   handing records with `lsn > snapshot lsn` to `apply` as borrowed slices.
//! * A torn or corrupt tail (short header, short payload, bad crc, LSN out of sequence) in the
//!   **last** segment is cut off: the file is truncated to the end of the last good record and
//!   fsynced, a `tracing::warn!` names file, offset and bytes cut, and the [`RecoveryReport`]
//!   says so. The service still starts.
//! * The same damage in a **non-last** segment is cut there as well; if records are thereby
//!   lost, the later segments are renamed to `*.corrupt` (they can no longer be applied in
//!   order) and the event is logged with `tracing::error!` and reported.
//! * If the log cannot rebuild a consistent prefix at all (records between the usable
//!   snapshot and the first segment are missing) open fails with [`WalError::Corrupt`]
//!   instead of starting with silently wrong state. An `apply` error fails with
//!   [`WalError::Replay`].
//!
//! # What a `202` may promise
//!
//! When [`Wal::append`] returns `Ok(lsn)` the record is fsynced (with the default
//! [`WalOptions::fsync`] `= true`) and its callback has run, so the change is visible in memory
//! and survives a crash or power loss of the process/host, unless the storage device itself
//! lies about flushes or the files are later damaged. After a crash the damaged tail can only
//! contain records that were never acknowledged. When `append` returns an error, the record
//! is not applied and will not appear after a restart, so the caller must not answer `202`
//! (answer `503`).
//!
//! # Layout
//!
//! * this file: the public API ([`Wal`], [`WalOptions`], [`WalError`], [`ReplayItem`],
//!   [`RecoveryReport`]) and the handle's side of the writer protocol;
//! * `writer`: the writer thread (group commit, deferred records, snapshots between batches,
//!   segment roll, poisoning);
//! * `format`: record framing and crc, file names, snapshot file read and write;
//! * `recovery`: [`Wal::open`]'s scan, cut and move-aside rules, and the garbage collection
//!   of old snapshots and segments.
//!
//! [`Wal::open`] runs `recovery` and hands the segment it chose to `writer`; both read and
//! write files only through `format`, which uses no other module; the writer calls
//! `recovery`'s garbage collection after each snapshot. Between modules only the public
//! types defined here are shared. The crate knows nothing of what the records mean:
//! payloads and snapshots are opaque bytes.

mod format;
mod recovery;
#[cfg(test)]
mod test_support;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle, ThreadId};

use tokio::sync::oneshot;

use crate::writer::{Command, DeferredRecord, Reply, Shared, Writer};

/// Default segment roll size (64 MiB).
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default maximum payload size (16 MiB).
const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;
/// Default maximum number of requests drained into one batch.
const DEFAULT_MAX_BATCH: usize = 8192;

/// Tuning knobs of the event log.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment file once the active one has reached this many bytes (default 64 MiB).
    pub segment_bytes: u64,
    /// Largest accepted payload in bytes (default 16 MiB); larger appends fail with
    /// [`WalError::RecordTooLarge`].
    pub max_record_bytes: usize,
    /// Most append requests written (and fsynced) together as one batch (default 8192).
    pub max_batch: usize,
    /// Whether to fsync data and directories (default `true`). `false` is only for benches and
    /// tests that explicitly accept losing acknowledged writes on power loss.
    pub fsync: bool,
    /// How long the writer waits for more [`Wal::append_deferred`] records before it writes a
    /// batch holding only deferred records (default 5 ms). A waiting [`Wal::append`] never
    /// waits for this: it is written at once, together with every deferred record queued.
    pub deferred_linger: std::time::Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            fsync: true,
            deferred_linger: std::time::Duration::from_millis(5),
        }
    }
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Reading or writing the log failed (for appends: the record was not written and its
    /// callback did not run).
    #[error("event log I/O error: {0}")]
    Io(#[from] io::Error),
    /// The log was closed (or its writer thread is gone); nothing was written.
    #[error("event log is closed")]
    Closed,
    /// The payload exceeds [`WalOptions::max_record_bytes`]; nothing was written.
    #[error("event log record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Size of the rejected payload in bytes.
        size: usize,
        /// Configured maximum payload size in bytes.
        max: usize,
    },
    /// An earlier write failure could not be rolled back; the log refuses further writes
    /// until the process is restarted (which re-runs recovery).
    #[error("event log is poisoned after an unrecoverable write failure; restart required")]
    Poisoned,
    /// The caller's `apply` function rejected a snapshot or record during [`Wal::open`].
    #[error("event log replay failed: {0}")]
    Replay(String),
    /// The log on disk cannot be turned into a consistent state.
    #[error("event log is corrupt: {0}")]
    Corrupt(String),
}

/// One item handed to the `apply` function of [`Wal::open`], in log order.
#[derive(Debug, Clone, Copy)]
pub enum ReplayItem<'a> {
    /// The state serialised by a snapshot; delivered at most once and before any record.
    Snapshot {
        /// LSN of the last record contained in the snapshot.
        lsn: u64,
        /// The bytes returned by the `make()` function of [`Wal::snapshot`].
        data: &'a [u8],
    },
    /// One appended record.
    Record {
        /// The record's log sequence number.
        lsn: u64,
        /// The payload passed to [`Wal::append`].
        data: &'a [u8],
    },
}

/// What [`Wal::open`] found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// LSN of the snapshot that was loaded, if any.
    pub snapshot_lsn: Option<u64>,
    /// Number of segment files read (segments wholly covered by the snapshot are skipped).
    pub segments: usize,
    /// Number of records handed to `apply` (records covered by the snapshot excluded).
    pub records_replayed: u64,
    /// LSN of the last recovered record (or the snapshot LSN); the next append gets this + 1.
    pub last_lsn: u64,
    /// Total bytes cut from segment files because they were torn or corrupt.
    pub truncated_bytes: u64,
    /// The first file that was cut and the offset it was truncated to.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Human-readable description of everything unusual (cuts, corrupt snapshots, moved files).
    pub reason: Option<String>,
}

/// Handle to an open event log. Cheap to clone; the writer thread stops after the last
/// handle is dropped or [`Wal::close`] is called.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: RwLock<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_id: ThreadId,
    shared: Arc<Shared>,
    max_record_bytes: usize,
}

impl Inner {
    fn shutdown(&self) {
        let tx = self
            .tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(tx);
        if thread::current().id() == self.writer_id {
            // Called from a callback on the writer thread: it exits by itself once drained.
            return;
        }
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("event log writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How much nicer than the thread that opens the log (and than the request
/// threads, which keep the process's nice) the writer thread runs on Linux.
///
/// Where the writer shares a core with request threads (a server pinned to
/// one core), the work it does after each batch (the `after_durable`
/// callbacks: a checkout's learner updates, exposures and contact counts)
/// should yield that core to a request rather than hold it off. Under
/// the kernel's fair scheduler a thread 5 nicer gets weight 335 against 1024
/// (at nice 0): when both are runnable the writer gets about a quarter of
/// the core, so it waits behind requests but is never starved. `SCHED_IDLE`
/// (weight 3) or nice 19 (weight 15) would leave it about 1% of a saturated
/// core, below the share a checkout's deferred work needs (about 13% of its
/// instructions, docs/performance.md), so deferred records, which nothing
/// waits for, would pile up without bound while the core stays saturated.
pub const WRITER_NICE: i32 = 5;

/// Deferred records waiting at or above which the writer returns to the
/// priority of the thread that opened the log: past this backlog the core is
/// saturated and the deferred work must get its fair share, or it would grow
/// without bound while the requests it yields to keep coming.
pub const WRITER_BACKLOG_HIGH: usize = 4_096;

/// Deferred records waiting at or below which the writer runs
/// [`WRITER_NICE`] nicer again (hysteresis against flapping).
pub const WRITER_BACKLOG_LOW: usize = 256;

/// The writer thread's priority, following its backlog (Linux only;
/// elsewhere, or when refused, the thread keeps its priority).
///
/// Below saturation the backlog stays short and the writer runs nicer, so a
/// request's thread is not held off by the work applied after earlier
/// decisions. Under saturation the backlog grows past
/// [`WRITER_BACKLOG_HIGH`] and the writer shares the core at equal weight:
/// a closed-loop saturation figure then includes the deferred work instead
/// of pushing it into an ever-longer queue. `OFFER_ENGINE_WRITER_NICE`
/// (0 to 19) overrides [`WRITER_NICE`]; 0 keeps the writer at equal
/// priority throughout. `OFFER_ENGINE_WRITER_IDLE=1` lowers it to
/// `SCHED_IDLE` instead of nicer: a request thread that wakes preempts it at
/// once (under the fair scheduler a nicer thread still runs out its slice),
/// measured in docs/performance.md but not the default until a whole load
/// test has been run with it.
pub(crate) struct WriterPriority {
    base: i32,
    nicer: i32,
    lowered: bool,
    /// Lowered means `SCHED_IDLE` rather than nicer.
    idle: bool,
}

impl WriterPriority {
    /// Reads the calling thread's nice and makes it nicer.
    pub(crate) fn start() -> WriterPriority {
        let nicer = std::env::var("OFFER_ENGINE_WRITER_NICE")
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map(|n| n.clamp(0, 19))
            .unwrap_or(WRITER_NICE);
        let base = current_nice();
        let idle = std::env::var("OFFER_ENGINE_WRITER_IDLE").is_ok_and(|v| v == "1");
        let mut p = WriterPriority {
            base,
            nicer,
            lowered: false,
            idle,
        };
        // Going back to the base needs CAP_SYS_NICE or an RLIMIT_NICE that
        // allows it: probe once. Where it is refused, the writer runs nicer
        // throughout only if that was asked for explicitly; by default it
        // then keeps the base, because a writer stuck nicer lets deferred
        // work pile up without bound on a saturated core.
        if nicer > 0 && p.lower() && !p.raise() {
            if std::env::var_os("OFFER_ENGINE_WRITER_NICE").is_none() {
                tracing::info!(
                    "the event log writer cannot return to its priority after lowering it \
                     (no CAP_SYS_NICE, RLIMIT_NICE 0); it runs at the process's priority"
                );
            }
            p.nicer = 0;
            p.lowered = true;
            return p;
        }
        p.follow(0);
        p
    }

    /// Adjusts the priority to a backlog of `deferred` records.
    pub(crate) fn follow(&mut self, deferred: usize) {
        if self.nicer == 0 {
            return;
        }
        if self.lowered && deferred >= WRITER_BACKLOG_HIGH {
            if self.raise() {
                self.lowered = false;
            }
        } else if !self.lowered && deferred <= WRITER_BACKLOG_LOW {
            self.lowered = self.lower();
        }
    }

    fn lower(&self) -> bool {
        if self.idle {
            set_policy(true)
        } else {
            set_nice((self.base + self.nicer).min(19))
        }
    }

    fn raise(&self) -> bool {
        if self.idle {
            set_policy(false)
        } else {
            set_nice(self.base)
        }
    }
}

fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and getpriority take and return plain integers; on
        // Linux, PRIO_PROCESS with a thread id reads that thread's nice.
        // getpriority cannot fail for the calling thread (its -1 is then a
        // nice of -1).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Sets the calling thread's policy to `SCHED_IDLE` or back to
/// `SCHED_OTHER`; whether it was taken.
fn set_policy(idle: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        // SAFETY: gettid returns this thread's id; sched_setscheduler reads
        // the parameter struct, which outlives the call.
        let rc = unsafe { libc::sched_setscheduler(libc::gettid(), policy, &param) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = idle;
        false
    }
}

/// Sets the calling thread's nice; whether it was taken.
fn set_nice(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on
        // Linux, PRIO_PROCESS with a thread id sets that thread's nice.
        let rc =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                nice,
                "the event log writer keeps its priority"
            );
        }
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

impl Wal {
    /// Opens the log in `dir` (creating the directory if needed) and rebuilds the state through
    /// `apply`: the newest valid snapshot first (one `ReplayItem::Snapshot`, if any), then every
    /// record with a greater LSN in order (`ReplayItem::Record`). Torn or corrupt data is cut
    /// off as described in the module documentation and reported in the [`RecoveryReport`].
    ///
    /// Errors: [`WalError::Io`] if the directory cannot be read or repaired,
    /// [`WalError::Replay`] if `apply` returns an error, [`WalError::Corrupt`] if no
    /// consistent state can be rebuilt.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        mut apply: impl FnMut(ReplayItem<'_>) -> Result<(), String>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let (active, report) = recovery::recover(dir, &opts, &mut apply)?;
        let max_record_bytes = opts.max_record_bytes;
        let writer = Writer::new(dir.to_path_buf(), opts, active);
        let shared = writer.shared();
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("wal-writer".to_string())
            .spawn(move || {
                let priority = WriterPriority::start();
                writer.run(rx, priority)
            })?;
        let writer_id = handle.thread().id();
        let wal = Wal {
            inner: Arc::new(Inner {
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                writer_id,
                shared,
                max_record_bytes,
            }),
        };
        Ok((wal, report))
    }

    /// Appends one record. Resolves once the record is durable (fsynced) and
    /// `after_durable(lsn)` has run on the writer thread; returns its LSN.
    ///
    /// Callbacks run one at a time in LSN order, so state changed there follows log order
    /// exactly. On failure the callback does not run and the record will not be replayed.
    /// The record is queued when this function is called; dropping the returned future does
    /// not cancel it.
    pub fn append(
        &self,
        payload: Vec<u8>,
        after_durable: impl FnOnce(u64) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<u64, WalError>> + Send + 'static {
        // The request is queued now, at the call, not when the future is first polled: the
        // order of `append` calls is the order of the log, and a caller may drop the future
        // (fire and forget) without cancelling the write.
        let queued = self.precheck(payload.len()).and_then(|()| {
            let (tx, rx) = oneshot::channel();
            self.send(Command::Append {
                payload,
                after_durable: Box::new(after_durable),
                reply: Reply::Async(tx),
            })
            .map(|()| rx)
        });
        async move {
            match queued {
                Ok(rx) => rx.await.map_err(|_| WalError::Closed)?,
                Err(e) => Err(e),
            }
        }
    }

    /// Appends one record that nobody waits for (a checkout decision): it is queued without
    /// waking the writer, written with the next batch (at the latest after
    /// [`WalOptions::deferred_linger`]), and `done` runs on the writer thread with its LSN once
    /// it is durable, or with the error if the batch failed. Log order: a deferred record
    /// queued before an [`Wal::append`] call is written before that record; deferred records
    /// keep their own order.
    ///
    /// Errors returned here (too large, poisoned, closed) mean nothing was queued and `done`
    /// will not run.
    pub fn append_deferred(
        &self,
        payload: Vec<u8>,
        done: impl FnOnce(Result<u64, WalError>) + Send + 'static,
    ) -> Result<(), WalError> {
        self.precheck(payload.len())?;
        {
            let tx = self.inner.tx.read().unwrap_or_else(PoisonError::into_inner);
            if tx.is_none() {
                return Err(WalError::Closed);
            }
            // Pushed while the channel is known open, so close() (which takes the write lock
            // first) cannot miss it: the writer drains the queue before it exits.
            self.inner
                .shared
                .deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(DeferredRecord {
                    payload,
                    done: Box::new(done),
                });
        }
        if self.inner.shared.idle.swap(false, Ordering::SeqCst) {
            // Best effort: a closed channel means the writer is draining anyway.
            let _ = self.send(Command::Wake);
        }
        Ok(())
    }

    /// Same as [`Wal::append`], blocking the calling (non-async) thread. Must not be called
    /// from an `after_durable` callback or `make()` function (it would wait on itself; an
    /// error is returned instead).
    pub fn append_blocking(
        &self,
        payload: Vec<u8>,
        after_durable: impl FnOnce(u64) + Send + 'static,
    ) -> Result<u64, WalError> {
        self.precheck(payload.len())?;
        self.not_on_writer()?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Append {
            payload,
            after_durable: Box::new(after_durable),
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Writes a snapshot: runs `make()` on the writer thread between batches, so the state it
    /// reads contains exactly the records up to the last applied LSN `L`, stores it atomically
    /// as `snapshot-{L:020}.snap`, then deletes snapshots older than the previous one and the
    /// segments whose records are all covered by the previous snapshot. Returns `L`.
    pub async fn snapshot(
        &self,
        make: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Result<u64, WalError> {
        if self.inner.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot {
            make: Box::new(make),
            reply: Reply::Async(tx),
        })?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Same as [`Wal::snapshot`], blocking the calling (non-async) thread.
    pub fn snapshot_blocking(
        &self,
        make: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Result<u64, WalError> {
        if self.inner.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        self.not_on_writer()?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Snapshot {
            make: Box::new(make),
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// LSN of the last durable record (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.inner.shared.last_lsn.load(Ordering::Acquire)
    }

    /// `false` once the log is poisoned (a failed write could not be rolled back).
    pub fn is_healthy(&self) -> bool {
        !self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// Stops accepting requests, lets the writer finish everything already queued, and waits
    /// for it to exit (this blocks the calling thread for at most one batch). Later calls on any handle fail with [`WalError::Closed`]. Also happens
    /// when the last handle is dropped.
    pub fn close(&self) {
        self.inner.shutdown();
    }

    /// Test hook: the next `n` batch writes fail as if the disk were full (half the batch is
    /// written, then an `ENOSPC` error is returned), through the same path as a real failure.
    #[doc(hidden)]
    pub fn inject_failures(&self, n: usize) {
        self.inner
            .shared
            .inject_failures
            .store(n, Ordering::Release);
    }

    fn precheck(&self, size: usize) -> Result<(), WalError> {
        let max = self.inner.max_record_bytes.min(u32::MAX as usize);
        if size > max {
            return Err(WalError::RecordTooLarge { size, max });
        }
        if self.inner.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn not_on_writer(&self) -> Result<(), WalError> {
        if thread::current().id() == self.inner.writer_id {
            return Err(WalError::Io(io::Error::other(
                "blocking event log call from the writer thread would deadlock",
            )));
        }
        Ok(())
    }

    fn send(&self, cmd: Command) -> Result<(), WalError> {
        let guard = self.inner.tx.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.send(cmd).map_err(|_| WalError::Closed),
            None => Err(WalError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{open_collect, opts};
    use crate::{WalError, WalOptions};

    #[test]
    fn too_large_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = WalOptions {
            max_record_bytes: 10,
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), o);
        assert!(matches!(
            wal.append_blocking(vec![0; 11], |_| panic!("must not run")),
            Err(WalError::RecordTooLarge { size: 11, max: 10 })
        ));
        assert_eq!(wal.append_blocking(vec![0; 10], |_| {}).expect("append"), 1);
    }

    /// The writer's priority follows its backlog: nicer while it is short,
    /// back to the base past `WRITER_BACKLOG_HIGH`, nicer again only once
    /// it is down to `WRITER_BACKLOG_LOW`.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_priority_follows_its_backlog() {
        std::thread::spawn(|| {
            let base = crate::current_nice();
            let mut p = crate::WriterPriority::start();
            if p.nicer == 0 {
                // Not allowed to return to the base here: it stays put.
                return;
            }
            let nicer = (base + crate::WRITER_NICE).min(19);
            assert_eq!(crate::current_nice(), nicer);
            p.follow(crate::WRITER_BACKLOG_HIGH);
            assert_eq!(crate::current_nice(), base);
            p.follow(crate::WRITER_BACKLOG_LOW + 1);
            assert_eq!(crate::current_nice(), base, "hysteresis");
            p.follow(crate::WRITER_BACKLOG_LOW);
            assert_eq!(crate::current_nice(), nicer);
        })
        .join()
        .expect("priority thread");
    }

    /// The writer thread runs `WRITER_NICE` nicer than the thread that
    /// opened the log: read back from /proc, where field 19 of a thread's
    /// `stat` is its nice value.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_thread_runs_at_a_lower_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        // The append runs after the writer has started (and set its nice).
        wal.append_blocking(vec![1], |_| {}).expect("append");
        let nice_of = |stat: &str| -> i32 {
            // The name (field 2) is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')').expect("stat") + 2..];
            rest.split(' ')
                .nth(16)
                .expect("field 19")
                .parse()
                .expect("nice")
        };
        let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").expect("stat"));
        let mut writers = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let path = task.expect("task").path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim() == "wal-writer" {
                if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
                    writers.push(nice_of(&stat));
                }
            }
        }
        assert!(!writers.is_empty(), "no wal-writer thread found");
        // Other tests' writers run in this process too, each opened by a
        // test thread at the process's nice.
        let want = (own + crate::WRITER_NICE).min(19);
        assert!(
            writers.iter().all(|n| *n == want),
            "{writers:?}, want {want}"
        );
        drop(wal);
    }
}
