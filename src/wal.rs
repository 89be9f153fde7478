//! Durable event log (write-ahead log) with group commit and snapshots.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle, ThreadId};

use tokio::sync::oneshot;

/// Size of a record header: payload length, crc32, lsn.
const RECORD_HEADER_LEN: usize = 16;
/// Snapshot file magic.
const SNAP_MAGIC: [u8; 8] = *b"OENSNAP\0";
/// Snapshot format version.
const SNAP_VERSION: u32 = 1;
/// Size of a snapshot header: magic, version, lsn, length, crc32.
const SNAP_HEADER_LEN: usize = 32;
/// Default segment roll size (64 MiB).
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default maximum payload size (16 MiB).
const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;
/// Default maximum number of requests drained into one batch.
const DEFAULT_MAX_BATCH: usize = 8192;
/// The writer yields its core after this many completions of one batch.
const YIELD_EVERY: usize = 32;
/// Read buffer size used during replay.
const READ_CHUNK: usize = 8 << 20;

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

type Callback = Box<dyn FnOnce(u64) + Send + 'static>;
/// What a deferred append runs once its batch is durable (or failed).
type DeferredDone = Box<dyn FnOnce(Result<u64, WalError>) + Send + 'static>;
type SnapshotFn = Box<dyn FnOnce() -> Vec<u8> + Send + 'static>;

/// Where the writer sends a request's outcome.
enum Reply {
    Async(oneshot::Sender<Result<u64, WalError>>),
    Blocking(mpsc::SyncSender<Result<u64, WalError>>),
    /// A deferred append: nobody waits, the function hears the outcome.
    Deferred(DeferredDone),
}

impl Reply {
    fn send(self, result: Result<u64, WalError>) {
        // A caller that went away (dropped future) simply does not hear the answer; the
        // record's fate is unaffected.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Deferred(done) => {
                if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
                    tracing::error!("event log deferred completion panicked");
                }
            }
        }
    }
}

enum Command {
    Append {
        payload: Vec<u8>,
        after_durable: Callback,
        reply: Reply,
    },
    Snapshot {
        make: SnapshotFn,
        reply: Reply,
    },
    /// Deferred records are queued: sent only to wake an idle writer.
    Wake,
}

/// A record of [`Wal::append_deferred`], waiting in [`Shared::deferred`].
struct DeferredRecord {
    payload: Vec<u8>,
    done: DeferredDone,
}

/// State shared between handles and the writer thread.
struct Shared {
    last_lsn: AtomicU64,
    poisoned: AtomicBool,
    inject_failures: AtomicUsize,
    /// Records of [`Wal::append_deferred`] not yet taken by the writer. Appenders push here
    /// without touching the channel, so a stream of them costs the writer no wake-ups.
    deferred: Mutex<Vec<DeferredRecord>>,
    /// True while the writer is (about to be) blocked on an empty channel with nothing
    /// deferred: the next deferred appender must wake it with [`Command::Wake`].
    idle: AtomicBool,
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
        let (writer, report) = recover(dir, &opts, &mut apply)?;
        let shared = Arc::clone(&writer.shared);
        let max_record_bytes = opts.max_record_bytes;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("wal-writer".to_string())
            .spawn(move || writer.run(rx))?;
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

// ---------------------------------------------------------------------------------------------
// Writer thread
// ---------------------------------------------------------------------------------------------

/// What the writer does next.
enum Next {
    /// Write this command (with everything deferred).
    Command(Command),
    /// Write the deferred records alone.
    DeferredOnly,
    /// Every handle is gone: write what is deferred and stop.
    Closed,
}

struct Writer {
    dir: PathBuf,
    opts: WalOptions,
    shared: Arc<Shared>,
    file: File,
    seg_path: PathBuf,
    /// Durable length of the active segment.
    seg_len: u64,
    /// LSN the next record will get.
    next_lsn: u64,
    /// Encoded, not yet written records of the current batch.
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let result = catch_unwind(AssertUnwindSafe(|| self.run_loop(&rx)));
        if result.is_err() {
            self.shared.poisoned.store(true, Ordering::Release);
            tracing::error!("event log writer thread panicked; log poisoned");
        }
    }

    fn run_loop(&mut self, rx: &mpsc::Receiver<Command>) {
        let max_batch = self.opts.max_batch.max(1);
        let mut batch: Vec<Command> = Vec::new();
        let mut pending: Vec<(Option<Callback>, Reply)> = Vec::new();
        let mut deferred: Vec<DeferredRecord> = Vec::new();
        loop {
            let first = match self.next_command(rx) {
                Next::Command(cmd) => Some(cmd),
                Next::DeferredOnly => None,
                Next::Closed => break,
            };
            batch.extend(first);
            while !batch.is_empty() && batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            // Deferred records go first: every one queued before a command in this batch was
            // sent is in the queue now, so "decision before its accept" holds in the log.
            self.take_deferred(&mut deferred);
            for d in deferred.drain(..) {
                let lsn = self.next_lsn + pending.len() as u64;
                encode_record(&mut self.buf, lsn, &d.payload);
                pending.push((None, Reply::Deferred(d.done)));
            }
            for cmd in batch.drain(..) {
                match cmd {
                    Command::Append {
                        payload,
                        after_durable,
                        reply,
                    } => {
                        let lsn = self.next_lsn + pending.len() as u64;
                        encode_record(&mut self.buf, lsn, &payload);
                        pending.push((Some(after_durable), reply));
                    }
                    Command::Snapshot { make, reply } => {
                        self.flush(&mut pending);
                        reply.send(self.snapshot(make));
                    }
                    Command::Wake => {}
                }
            }
            self.flush(&mut pending);
        }
        // Closed: whatever was deferred before the close is still written.
        self.take_deferred(&mut deferred);
        for d in deferred.drain(..) {
            let lsn = self.next_lsn + pending.len() as u64;
            encode_record(&mut self.buf, lsn, &d.payload);
            pending.push((None, Reply::Deferred(d.done)));
        }
        self.flush(&mut pending);
    }

    fn take_deferred(&self, into: &mut Vec<DeferredRecord>) {
        let mut q = self
            .shared
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *q, into);
    }

    fn has_deferred(&self) -> bool {
        !self
            .shared
            .deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Waits for the next thing to do: a command (written at once), or, with only deferred
    /// records queued, the end of the linger time.
    fn next_command(&self, rx: &mpsc::Receiver<Command>) -> Next {
        match rx.try_recv() {
            Ok(cmd) => return Next::Command(cmd),
            Err(mpsc::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if !self.has_deferred() {
            // Announce idleness, then look again: a deferred appender either sees the flag
            // (and sends a Wake) or pushed before we looked (and we see its record).
            self.shared.idle.store(true, Ordering::SeqCst);
            if !self.has_deferred() {
                let got = rx.recv();
                self.shared.idle.store(false, Ordering::SeqCst);
                return match got {
                    Ok(Command::Wake) => self.linger(rx),
                    Ok(cmd) => Next::Command(cmd),
                    Err(_) => Next::Closed,
                };
            }
            self.shared.idle.store(false, Ordering::SeqCst);
        }
        self.linger(rx)
    }

    /// Deferred records are queued: give others up to the linger time to join the batch; a
    /// command that someone waits for ends the wait at once.
    fn linger(&self, rx: &mpsc::Receiver<Command>) -> Next {
        match rx.recv_timeout(self.opts.deferred_linger) {
            Ok(Command::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => Next::DeferredOnly,
            Ok(cmd) => Next::Command(cmd),
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    /// Writes, fsyncs and acknowledges the encoded batch in `self.buf`.
    fn flush(&mut self, pending: &mut Vec<(Option<Callback>, Reply)>) {
        if pending.is_empty() {
            return;
        }
        let result = if self.shared.poisoned.load(Ordering::Acquire) {
            Err(None)
        } else {
            self.write_batch().map_err(Some)
        };
        self.buf.clear();
        match result {
            Ok(()) => {
                let first = self.next_lsn;
                self.next_lsn += pending.len() as u64;
                self.shared
                    .last_lsn
                    .store(self.next_lsn - 1, Ordering::Release);
                for (i, (callback, reply)) in pending.drain(..).enumerate() {
                    // Applying a batch of checkout decisions (learner updates,
                    // exposures, contact counts) can take milliseconds; where the
                    // HTTP workers share this core, they should not wait all of it.
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        thread::yield_now();
                    }
                    let lsn = first + i as u64;
                    if let Some(callback) = callback {
                        if catch_unwind(AssertUnwindSafe(|| callback(lsn))).is_err() {
                            tracing::error!(lsn, "event log after_durable callback panicked");
                        }
                    }
                    reply.send(Ok(lsn));
                }
            }
            Err(err) => {
                for (_, reply) in pending.drain(..) {
                    reply.send(Err(match &err {
                        Some(e) => WalError::Io(io::Error::new(e.kind(), e.to_string())),
                        None => WalError::Poisoned,
                    }));
                }
            }
        }
    }

    fn write_batch(&mut self) -> io::Result<()> {
        if self.seg_len > 0 && self.seg_len >= self.opts.segment_bytes {
            if let Err(e) = self.roll() {
                tracing::error!(
                    dir = %self.dir.display(),
                    error = %e,
                    "event log could not start a new segment; batch rejected"
                );
                return Err(e);
            }
        }
        match self.write_and_sync() {
            Ok(()) => {
                self.seg_len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    file = %self.seg_path.display(),
                    error = %e,
                    "event log write failed; batch rejected"
                );
                self.repair();
                Err(e)
            }
        }
    }

    fn write_and_sync(&mut self) -> io::Result<()> {
        let injected = self
            .shared
            .inject_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            let half = self.buf.len() / 2;
            self.file.write_all(&self.buf[..half])?;
            return Err(disk_full_error());
        }
        self.file.write_all(&self.buf)?;
        if self.opts.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// After a failed write: cut the segment back to its durable length, or poison the log.
    fn repair(&mut self) {
        let result = self.file.set_len(self.seg_len).and_then(|()| {
            if self.opts.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            self.shared.poisoned.store(true, Ordering::Release);
            tracing::error!(
                file = %self.seg_path.display(),
                offset = self.seg_len,
                error = %e,
                "event log could not truncate a failed write; log poisoned, restart required"
            );
        }
    }

    fn roll(&mut self) -> io::Result<()> {
        let path = segment_path(&self.dir, self.next_lsn);
        let file = open_segment(&path)?;
        if file.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        if self.opts.fsync {
            if let Err(e) = sync_dir(&self.dir) {
                drop(file);
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        }
        self.file = file;
        self.seg_path = path;
        self.seg_len = 0;
        Ok(())
    }

    fn snapshot(&mut self, make: SnapshotFn) -> Result<u64, WalError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        let lsn = self.next_lsn - 1;
        let data = catch_unwind(AssertUnwindSafe(make))
            .map_err(|_| WalError::Io(io::Error::other("snapshot make() panicked")))?;
        write_snapshot(&self.dir, lsn, &data, self.opts.fsync)?;
        if let Err(e) = collect_garbage(&self.dir, lsn, self.opts.fsync) {
            tracing::warn!(error = %e, "event log: removing old snapshots/segments failed");
        }
        Ok(lsn)
    }
}

fn disk_full_error() -> io::Error {
    #[cfg(target_os = "linux")]
    {
        io::Error::from_raw_os_error(28) // ENOSPC: "No space left on device"
    }
    #[cfg(not(target_os = "linux"))]
    {
        io::Error::other("No space left on device")
    }
}

fn encode_record(buf: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let lsn_bytes = lsn.to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn_bytes);
    hasher.update(payload);
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&lsn_bytes);
    buf.extend_from_slice(payload);
}

fn record_crc(lsn_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(lsn_bytes);
    hasher.update(payload);
    hasher.finalize()
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("wal-{first_lsn:020}.log"))
}

fn snapshot_path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("snapshot-{lsn:020}.snap"))
}

/// Parses `{prefix}{lsn:020}{suffix}`. LSNs below `min` or absurdly large (so that LSN
/// arithmetic can never overflow) are not ours and are ignored.
fn parse_lsn_name(name: &str, prefix: &str, suffix: &str, min: u64) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let lsn: u64 = digits.parse().ok()?;
    (min..=u64::MAX / 2).contains(&lsn).then_some(lsn)
}

#[derive(Default)]
struct Listing {
    /// `(first_lsn, path)`, ascending.
    segments: Vec<(u64, PathBuf)>,
    /// `(lsn, path)`, ascending.
    snapshots: Vec<(u64, PathBuf)>,
    temps: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(lsn) = parse_lsn_name(name, "wal-", ".log", 1) {
            listing.segments.push((lsn, entry.path()));
        } else if let Some(lsn) = parse_lsn_name(name, "snapshot-", ".snap", 0) {
            listing.snapshots.push((lsn, entry.path()));
        } else if name.starts_with("snapshot-") && name.ends_with(".tmp") {
            listing.temps.push(entry.path());
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Renames `path` to `path.corrupt` (or `path.N.corrupt` if taken) and returns the new name.
fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_owned();
    let mut target = base.clone();
    target.push(".corrupt");
    let mut n = 1u32;
    while Path::new(&target).exists() {
        target = base.clone();
        target.push(format!(".{n}.corrupt"));
        n += 1;
    }
    let target = PathBuf::from(target);
    fs::rename(path, &target)?;
    Ok(target)
}

fn truncate_file(path: &Path, len: u64, fsync: bool) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

fn write_snapshot(dir: &Path, lsn: u64, data: &[u8], fsync: bool) -> io::Result<PathBuf> {
    let final_path = snapshot_path(dir, lsn);
    let tmp = dir.join(format!("snapshot-{lsn:020}.snap.tmp"));
    let mut header = [0u8; SNAP_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAP_MAGIC);
    header[8..12].copy_from_slice(&SNAP_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&lsn.to_le_bytes());
    header[20..28].copy_from_slice(&(data.len() as u64).to_le_bytes());
    header[28..32].copy_from_slice(&record_crc(&lsn.to_le_bytes(), data).to_le_bytes());
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&header)?;
        file.write_all(data)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, &final_path)?;
        if fsync {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| final_path)
}

/// Reads and validates a snapshot. `Ok(Err(why))` means the file is corrupt;
/// on success the state bytes start at `SNAP_HEADER_LEN`.
fn read_snapshot(path: &Path, lsn: u64) -> io::Result<Result<Vec<u8>, String>> {
    let bytes = fs::read(path)?;
    if bytes.len() < SNAP_HEADER_LEN {
        return Ok(Err(format!("file too short ({} bytes)", bytes.len())));
    }
    let mut header = [0u8; SNAP_HEADER_LEN];
    header.copy_from_slice(&bytes[..SNAP_HEADER_LEN]);
    let u32_at =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if header[0..8] != SNAP_MAGIC {
        return Ok(Err("bad magic".to_string()));
    }
    let version = u32_at(8);
    if version != SNAP_VERSION {
        return Ok(Err(format!("unsupported version {version}")));
    }
    let header_lsn = u64_at(12);
    if header_lsn != lsn {
        return Ok(Err(format!(
            "header lsn {header_lsn} does not match file name"
        )));
    }
    let len = u64_at(20);
    let actual = (bytes.len() - SNAP_HEADER_LEN) as u64;
    if len != actual {
        return Ok(Err(format!("length {len} in header, {actual} in file")));
    }
    let crc = u32_at(28);
    if record_crc(&lsn.to_le_bytes(), &bytes[SNAP_HEADER_LEN..]) != crc {
        return Ok(Err("crc mismatch".to_string()));
    }
    Ok(Ok(bytes))
}

/// Keeps the newest snapshot (`newest`) and the previous one; deletes older snapshots and
/// the segments whose records are all covered by the previous snapshot.
fn collect_garbage(dir: &Path, newest: u64, fsync: bool) -> io::Result<()> {
    let listing = list_dir(dir)?;
    let previous = listing
        .snapshots
        .iter()
        .map(|(lsn, _)| *lsn)
        .filter(|lsn| *lsn < newest)
        .max();
    let Some(previous) = previous else {
        return Ok(());
    };
    let mut removed = false;
    for (lsn, path) in &listing.snapshots {
        if *lsn < previous {
            fs::remove_file(path)?;
            removed = true;
        }
    }
    // Segment i holds lsns [first_i, first_{i+1} - 1]; the last (active) one is never removed.
    for pair in listing.segments.windows(2) {
        if let [(_, path), (next_first, _)] = pair {
            if *next_first <= previous.saturating_add(1) {
                fs::remove_file(path)?;
                removed = true;
            }
        }
    }
    if removed && fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

type ApplyFn<'f> = dyn FnMut(ReplayItem<'_>) -> Result<(), String> + 'f;

struct ScanOutcome {
    /// LSN of the last good record (`first_lsn - 1` if none).
    end_lsn: u64,
    /// Byte length of the good prefix.
    valid_len: u64,
    file_len: u64,
    applied: u64,
    corruption: Option<String>,
}

/// Makes sure `buf[*start..*end]` holds at least `need` bytes unless the file ends first.
fn fill(
    file: &mut File,
    buf: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
    need: usize,
) -> io::Result<()> {
    if buf.len() - *start < need {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        if buf.len() < need {
            buf.resize(need, 0);
        }
    }
    while *end - *start < need {
        match file.read(&mut buf[*end..]) {
            Ok(0) => break,
            Ok(n) => *end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one segment, validating every record and applying those with `lsn > skip_upto`.
fn scan_segment(
    path: &Path,
    first_lsn: u64,
    skip_upto: u64,
    buf: &mut Vec<u8>,
    apply: &mut ApplyFn<'_>,
) -> Result<ScanOutcome, WalError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    if buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
    let (mut start, mut end) = (0usize, 0usize);
    let mut offset = 0u64;
    let mut expected = first_lsn;
    let mut applied = 0u64;
    let corruption = loop {
        if end - start < RECORD_HEADER_LEN {
            fill(&mut file, buf, &mut start, &mut end, RECORD_HEADER_LEN)?;
        }
        let avail = end - start;
        if avail == 0 {
            break None;
        }
        if avail < RECORD_HEADER_LEN {
            break Some(format!(
                "short header ({avail} of {RECORD_HEADER_LEN} bytes)"
            ));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        header.copy_from_slice(&buf[start..start + RECORD_HEADER_LEN]);
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let lsn_bytes = [
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ];
        let lsn = u64::from_le_bytes(lsn_bytes);
        let remaining = file_len.saturating_sub(offset + RECORD_HEADER_LEN as u64);
        if len as u64 > remaining {
            break Some(format!(
                "short payload (header says {len} bytes, {remaining} left in file)"
            ));
        }
        let total = RECORD_HEADER_LEN + len;
        if end - start < total {
            fill(&mut file, buf, &mut start, &mut end, total)?;
            if end - start < total {
                break Some(format!("short payload ({} of {len} bytes)", end - start));
            }
        }
        let payload = &buf[start + RECORD_HEADER_LEN..start + total];
        if record_crc(&lsn_bytes, payload) != crc {
            break Some(format!(
                "crc mismatch (record expected to be lsn {expected})"
            ));
        }
        if lsn != expected {
            break Some(format!("lsn {lsn} out of sequence (expected {expected})"));
        }
        if lsn > skip_upto {
            apply(ReplayItem::Record { lsn, data: payload })
                .map_err(|e| WalError::Replay(format!("record lsn {lsn}: {e}")))?;
            applied += 1;
        }
        start += total;
        offset += total as u64;
        expected += 1;
    };
    Ok(ScanOutcome {
        end_lsn: expected - 1,
        valid_len: offset,
        file_len,
        applied,
        corruption,
    })
}

fn recover(
    dir: &Path,
    opts: &WalOptions,
    apply: &mut ApplyFn<'_>,
) -> Result<(Writer, RecoveryReport), WalError> {
    fs::create_dir_all(dir)?;
    let mut report = RecoveryReport::default();
    let mut reasons: Vec<String> = Vec::new();
    let mut listing = list_dir(dir)?;
    for tmp in &listing.temps {
        if let Err(e) = fs::remove_file(tmp) {
            tracing::warn!(file = %tmp.display(), error = %e, "event log: cannot remove temp file");
        }
    }

    // 1. Newest valid snapshot.
    let mut snap_lsn = 0u64;
    while let Some((lsn, path)) = listing.snapshots.pop() {
        match read_snapshot(&path, lsn)? {
            Ok(bytes) => {
                let data = bytes.get(SNAP_HEADER_LEN..).unwrap_or(&[]);
                apply(ReplayItem::Snapshot { lsn, data })
                    .map_err(|e| WalError::Replay(format!("snapshot lsn {lsn}: {e}")))?;
                snap_lsn = lsn;
                report.snapshot_lsn = Some(lsn);
                break;
            }
            Err(why) => {
                let moved = move_aside(&path)?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %moved.display(),
                    reason = %why,
                    "event log: corrupt snapshot ignored, falling back to an older one"
                );
                reasons.push(format!(
                    "corrupt snapshot {} ({why}) moved to {}",
                    path.display(),
                    moved.display()
                ));
            }
        }
    }

    // 2. Segments.
    let segs = &mut listing.segments;
    let need = snap_lsn + 1;
    let mut start_idx = 0;
    while start_idx + 1 < segs.len() && segs[start_idx + 1].0 <= need {
        start_idx += 1;
    }
    if let Some((first, path)) = segs.get(start_idx) {
        if *first > need {
            let msg = format!(
                "records {need}..={} are missing: no snapshot covers them and the oldest segment {} starts at lsn {first}",
                first - 1,
                path.display()
            );
            tracing::error!("event log: {msg}");
            return Err(WalError::Corrupt(msg));
        }
    }
    let mut buf = Vec::new();
    let mut last = snap_lsn;
    // End lsn of the last scanned segment, and its good length.
    let mut tail: Option<(u64, u64)> = None;
    let mut i = start_idx;
    while i < segs.len() {
        let first = segs[i].0;
        if let Some((prev_end, _)) = tail {
            if first != prev_end + 1 {
                let msg = format!(
                    "segment {} starts at lsn {first} but the previous segment ends at lsn {prev_end}",
                    segs[i].1.display()
                );
                move_aside_from(segs, i, &msg, &mut reasons)?;
                break;
            }
        }
        let path = segs[i].1.clone();
        let outcome = scan_segment(&path, first, snap_lsn, &mut buf, apply)?;
        report.segments += 1;
        report.records_replayed += outcome.applied;
        last = last.max(outcome.end_lsn);
        tail = Some((outcome.end_lsn, outcome.valid_len));
        if let Some(why) = outcome.corruption {
            let cut = outcome.file_len - outcome.valid_len;
            truncate_file(&path, outcome.valid_len, opts.fsync)?;
            report.truncated_bytes += cut;
            if report.truncated_at.is_none() {
                report.truncated_at = Some((path.clone(), outcome.valid_len));
            }
            let is_last = i + 1 == segs.len();
            let lossless = segs
                .get(i + 1)
                .is_some_and(|(next_first, _)| *next_first == outcome.end_lsn + 1);
            let msg = format!(
                "cut {cut} bytes from {} at offset {} after lsn {}: {why}",
                path.display(),
                outcome.valid_len,
                outcome.end_lsn
            );
            if is_last || lossless {
                tracing::warn!(
                    file = %path.display(),
                    offset = outcome.valid_len,
                    bytes_cut = cut,
                    reason = %why,
                    "event log: torn/corrupt tail cut off"
                );
                reasons.push(msg);
            } else {
                tracing::error!(
                    file = %path.display(),
                    offset = outcome.valid_len,
                    bytes_cut = cut,
                    reason = %why,
                    "event log: corruption in a non-last segment; later records are lost"
                );
                reasons.push(msg);
                move_aside_from(segs, i + 1, "they follow a corrupt segment", &mut reasons)?;
                break;
            }
        }
        i += 1;
    }

    // 3. Active segment: reuse the last one if it ends right before the next lsn.
    let next_lsn = last + 1;
    let (seg_path, seg_len) = match (segs.last(), tail) {
        (Some((_, path)), Some((end, len))) if end + 1 == next_lsn => (path.clone(), len),
        _ => {
            let path = segment_path(dir, next_lsn);
            let file = open_segment(&path)?;
            file.set_len(0)?;
            if opts.fsync {
                file.sync_all()?;
            }
            (path, 0)
        }
    };
    let file = open_segment(&seg_path)?;
    if opts.fsync {
        sync_dir(dir)?;
    }

    report.last_lsn = last;
    if !reasons.is_empty() {
        report.reason = Some(reasons.join("; "));
    }
    tracing::info!(
        snapshot_lsn = ?report.snapshot_lsn,
        segments = report.segments,
        records = report.records_replayed,
        last_lsn = report.last_lsn,
        truncated_bytes = report.truncated_bytes,
        "event log recovered"
    );
    let writer = Writer {
        dir: dir.to_path_buf(),
        opts: opts.clone(),
        shared: Arc::new(Shared {
            last_lsn: AtomicU64::new(last),
            poisoned: AtomicBool::new(false),
            inject_failures: AtomicUsize::new(0),
            deferred: Mutex::new(Vec::new()),
            idle: AtomicBool::new(false),
        }),
        file,
        seg_path,
        seg_len,
        next_lsn,
        buf: Vec::new(),
    };
    Ok((writer, report))
}

/// Renames `segs[from..]` aside and removes them from `segs`.
fn move_aside_from(
    segs: &mut Vec<(u64, PathBuf)>,
    from: usize,
    why: &str,
    reasons: &mut Vec<String>,
) -> io::Result<()> {
    for (_, path) in segs.iter().skip(from) {
        let moved = move_aside(path)?;
        tracing::error!(
            file = %path.display(),
            moved_to = %moved.display(),
            reason = why,
            "event log: segment moved aside, its records are NOT replayed"
        );
        reasons.push(format!(
            "segment {} moved to {} ({why})",
            path.display(),
            moved.display()
        ));
    }
    segs.truncate(from);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

/// Measures group-commit throughput: `n` appends of 100-byte records (fsync on) from
/// `concurrency` tokio tasks on a 2-worker runtime, in a fresh log under `dir`.
/// Returns appends per second, or 0.0 if the log could not be opened or an append failed
/// (the error is logged).
#[doc(hidden)]
pub fn bench_append(dir: &Path, n: usize, concurrency: usize) -> f64 {
    let run = || -> Result<f64, WalError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (wal, _) = Wal::open(dir, WalOptions::default(), |_| Ok(()))?;
        let concurrency = concurrency.max(1);
        let per_task = n / concurrency;
        let started = std::time::Instant::now();
        let done = runtime.block_on(async {
            let mut tasks = Vec::with_capacity(concurrency);
            for _ in 0..concurrency {
                let wal = wal.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..per_task {
                        wal.append(vec![7u8; 100], |_| {}).await?;
                    }
                    Ok::<u64, WalError>(per_task as u64)
                }));
            }
            let mut done = 0u64;
            for task in tasks {
                done += task
                    .await
                    .map_err(|e| WalError::Io(io::Error::other(e.to_string())))??;
            }
            Ok::<u64, WalError>(done)
        })?;
        let secs = started.elapsed().as_secs_f64();
        wal.close();
        Ok(done as f64 / secs.max(1e-9))
    };
    run().unwrap_or_else(|e| {
        tracing::error!(error = %e, "bench_append failed");
        0.0
    })
}

/// Measures recovery speed: writes `n` 100-byte records directly as 64 MiB segments under
/// `dir`, then times [`Wal::open`]. Returns records replayed per second, or 0.0 on error.
#[doc(hidden)]
pub fn bench_replay(dir: &Path, n: u64) -> f64 {
    let run = || -> Result<f64, WalError> {
        fs::create_dir_all(dir)?;
        let payload = [42u8; 100];
        let mut buf = Vec::with_capacity(DEFAULT_SEGMENT_BYTES as usize + 4096);
        let mut first = 1u64;
        for lsn in 1..=n {
            encode_record(&mut buf, lsn, &payload);
            if buf.len() as u64 >= DEFAULT_SEGMENT_BYTES || lsn == n {
                fs::write(segment_path(dir, first), &buf)?;
                buf.clear();
                first = lsn + 1;
            }
        }
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let mut count = 0u64;
        let mut bytes = 0u64;
        let started = std::time::Instant::now();
        let (wal, report) = Wal::open(dir, opts, |item| {
            if let ReplayItem::Record { data, .. } = item {
                count += 1;
                bytes += data.len() as u64;
            }
            Ok(())
        })?;
        let secs = started.elapsed().as_secs_f64();
        wal.close();
        if count != n || report.records_replayed != n {
            return Err(WalError::Corrupt(format!("replayed {count} of {n}")));
        }
        Ok(count as f64 / secs.max(1e-9))
    };
    run().unwrap_or_else(|e| {
        tracing::error!(error = %e, "bench_replay failed");
        0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn opts() -> WalOptions {
        WalOptions::default()
    }

    /// Replays `dir`, returning (snapshot, records) as delivered.
    type Replayed = (Option<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>);

    /// Test state machine: the list of applied payloads.
    type State = Arc<Mutex<Vec<Vec<u8>>>>;

    fn open_collect(dir: &Path, o: WalOptions) -> (Wal, RecoveryReport, Replayed) {
        let mut snap = None;
        let mut recs = Vec::new();
        let (wal, report) = Wal::open(dir, o, |item| {
            match item {
                ReplayItem::Snapshot { lsn, data } => {
                    assert!(snap.is_none(), "snapshot delivered twice");
                    assert!(recs.is_empty(), "snapshot after records");
                    snap = Some((lsn, data.to_vec()));
                }
                ReplayItem::Record { lsn, data } => recs.push((lsn, data.to_vec())),
            }
            Ok(())
        })
        .expect("open");
        (wal, report, (snap, recs))
    }

    fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
        list_dir(dir).expect("list").segments
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("event-{i:08}-{}", "x".repeat((i % 50) as usize)).into_bytes()
    }

    fn assert_contiguous(recs: &[(u64, Vec<u8>)], first: u64) {
        for (k, (lsn, _)) in recs.iter().enumerate() {
            assert_eq!(*lsn, first + k as u64, "lsn sequence");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trip_concurrent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, report, _) = open_collect(dir.path(), opts());
        assert_eq!(report.last_lsn, 0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let wal = wal.clone();
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for k in 0..50u64 {
                    let p = payload(t * 1000 + k);
                    let order = Arc::clone(&order);
                    let lsn = wal
                        .append(p.clone(), move |lsn| order.lock().expect("lock").push(lsn))
                        .await
                        .expect("append");
                    acked.push((lsn, p));
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.expect("join"));
        }
        acked.sort();
        let order = order.lock().expect("lock").clone();
        assert_eq!(
            order,
            (1..=1600).collect::<Vec<u64>>(),
            "callbacks in lsn order"
        );
        assert_eq!(wal.last_lsn(), 1600);
        wal.close();
        assert!(matches!(
            wal.append(vec![1], |_| {}).await,
            Err(WalError::Closed)
        ));
        drop(wal);

        let (wal, report, (snap, recs)) = open_collect(dir.path(), opts());
        assert!(snap.is_none());
        assert_eq!(report.records_replayed, 1600);
        assert_eq!(report.truncated_bytes, 0);
        assert!(report.reason.is_none());
        assert_eq!(
            recs, acked,
            "every acknowledged record exactly once, in lsn order"
        );
        assert_eq!(
            wal.append(b"next".to_vec(), |_| {}).await.expect("append"),
            1601
        );
    }

    #[test]
    fn deferred_records_precede_later_appends_and_survive_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = WalOptions {
            // Long enough that only the waiting append (or the close) can write them.
            deferred_linger: std::time::Duration::from_secs(30),
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), o.clone());
        let done = Arc::new(Mutex::new(Vec::new()));
        for i in 0..100u64 {
            let done = Arc::clone(&done);
            wal.append_deferred(payload(i), move |r| {
                done.lock().expect("lock").push(r.expect("durable"))
            })
            .expect("queued");
        }
        // A waiting append is written at once, after every deferred record queued before it.
        let lsn = wal
            .append_blocking(b"accept".to_vec(), |_| {})
            .expect("append");
        assert_eq!(lsn, 101);
        assert_eq!(*done.lock().expect("lock"), (1..=100).collect::<Vec<u64>>());
        // Deferred records queued just before a close are written by the close.
        for i in 100..110u64 {
            let done = Arc::clone(&done);
            wal.append_deferred(payload(i), move |r| {
                done.lock().expect("lock").push(r.expect("durable"))
            })
            .expect("queued");
        }
        wal.close();
        assert_eq!(done.lock().expect("lock").len(), 110);
        assert!(matches!(
            wal.append_deferred(vec![1], |_| {}),
            Err(WalError::Closed)
        ));
        drop(wal);
        let (_, report, (_, recs)) = open_collect(dir.path(), o);
        assert_eq!(report.records_replayed, 111);
        let mut expected: Vec<Vec<u8>> = (0..100).map(payload).collect();
        expected.push(b"accept".to_vec());
        expected.extend((100..110).map(payload));
        assert_eq!(
            recs.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            expected
        );
    }

    #[test]
    fn deferred_records_are_written_after_the_linger_without_other_traffic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = WalOptions {
            deferred_linger: std::time::Duration::from_millis(1),
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), o);
        for round in 0..3u64 {
            // Each round finds the writer idle: the first record must wake it.
            let (tx, rx) = mpsc::channel();
            wal.append_deferred(payload(round), move |r| {
                let _ = tx.send(r.map_err(|e| e.to_string()));
            })
            .expect("queued");
            let lsn = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("written without any other append")
                .expect("durable");
            assert_eq!(lsn, round + 1);
            assert_eq!(wal.last_lsn(), round + 1);
        }
    }

    #[test]
    fn deferred_failure_reaches_its_completion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        wal.inject_failures(1);
        let (tx, rx) = mpsc::channel();
        wal.append_deferred(payload(1), move |r| {
            let _ = tx.send(r.is_err());
        })
        .expect("queued");
        assert!(rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("completion runs"));
        // The log stays usable and the failed record is not in it.
        assert_eq!(wal.append_blocking(payload(2), |_| {}).expect("append"), 1);
    }

    fn write_n(wal: &Wal, range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| {
                let p = payload(i);
                (wal.append_blocking(p.clone(), |_| {}).expect("append"), p)
            })
            .collect()
    }

    fn last_segment(dir: &Path) -> PathBuf {
        segments(dir).pop().expect("a segment").1
    }

    /// Appends 20 records, damages the last segment with `damage`, reopens and checks that
    /// the first `survivors` records come back, then that the log continues.
    fn torn_case(damage: impl FnOnce(&Path), survivors: usize, expect_cut: Option<u64>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        let acked = write_n(&wal, 0..20);
        wal.close();
        drop(wal);
        let seg = last_segment(dir.path());
        let before = fs::metadata(&seg).expect("meta").len();
        damage(&seg);
        let damaged_len = fs::metadata(&seg).expect("meta").len();

        let (wal, report, (_, recs)) = open_collect(dir.path(), opts());
        assert_eq!(recs, acked[..survivors].to_vec());
        assert_eq!(report.last_lsn, survivors as u64);
        assert!(report.truncated_bytes > 0);
        if let Some(cut) = expect_cut {
            assert_eq!(report.truncated_bytes, cut);
        }
        let (path, offset) = report.truncated_at.clone().expect("truncated_at");
        assert_eq!(path, seg);
        assert_eq!(offset, damaged_len - report.truncated_bytes);
        assert!(offset <= before);
        assert!(report.reason.as_deref().is_some_and(|r| r.contains("cut")));
        let lsn = wal
            .append_blocking(b"after".to_vec(), |_| {})
            .expect("append");
        assert_eq!(lsn, survivors as u64 + 1);
        wal.close();
        drop(wal);

        let (_, report, (_, recs)) = open_collect(dir.path(), opts());
        assert_eq!(report.truncated_bytes, 0, "second open is clean");
        assert_eq!(recs.len(), survivors + 1);
        assert_contiguous(&recs, 1);
        assert_eq!(recs[survivors].1, b"after".to_vec());
    }

    #[test]
    fn torn_tail_truncated_mid_record() {
        torn_case(
            |seg| {
                let len = fs::metadata(seg).expect("meta").len();
                truncate_file(seg, len - 5, false).expect("truncate");
            },
            19,
            None,
        );
    }

    #[test]
    fn torn_tail_mid_header() {
        torn_case(
            |seg| {
                let len = fs::metadata(seg).expect("meta").len();
                let last_len = RECORD_HEADER_LEN as u64 + payload(19).len() as u64;
                truncate_file(seg, len - last_len + 7, false).expect("truncate");
            },
            19,
            Some(7),
        );
    }

    #[test]
    fn torn_tail_garbage_appended() {
        torn_case(
            |seg| {
                let mut f = OpenOptions::new().append(true).open(seg).expect("open");
                f.write_all(&[0xAB; 37]).expect("write");
            },
            20,
            Some(37),
        );
    }

    #[test]
    fn torn_tail_zeroes_appended() {
        torn_case(
            |seg| {
                let mut f = OpenOptions::new().append(true).open(seg).expect("open");
                f.write_all(&[0; 4096]).expect("write");
            },
            20,
            Some(4096),
        );
    }

    #[test]
    fn torn_tail_flipped_byte_in_last_record() {
        torn_case(
            |seg| {
                let mut bytes = fs::read(seg).expect("read");
                let n = bytes.len();
                bytes[n - 3] ^= 0x40;
                fs::write(seg, bytes).expect("write");
            },
            19,
            Some(RECORD_HEADER_LEN as u64 + payload(19).len() as u64),
        );
    }

    fn encode_state(state: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in state {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    fn decode_state(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while data.len() >= 4 {
            let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
            out.push(data[4..4 + len].to_vec());
            data = &data[4 + len..];
        }
        out
    }

    /// Opens with a state machine "list of payloads" and returns it.
    fn open_state(dir: &Path, o: WalOptions) -> (Wal, RecoveryReport, Replayed, State) {
        let (wal, report, replayed) = open_collect(dir, o);
        let mut state = replayed
            .0
            .as_ref()
            .map(|(_, d)| decode_state(d))
            .unwrap_or_default();
        state.extend(replayed.1.iter().map(|(_, p)| p.clone()));
        (wal, report, replayed, Arc::new(Mutex::new(state)))
    }

    fn append_state(wal: &Wal, state: &State, range: std::ops::Range<u64>) {
        for i in range {
            let st = Arc::clone(state);
            let p = payload(i);
            wal.append_blocking(p.clone(), move |_| st.lock().expect("lock").push(p))
                .expect("append");
        }
    }

    fn snap_state(wal: &Wal, state: &State) -> u64 {
        let st = Arc::clone(state);
        wal.snapshot_blocking(move || encode_state(&st.lock().expect("lock")))
            .expect("snapshot")
    }

    #[test]
    fn snapshot_then_more_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 300,
            ..opts()
        };
        let (wal, _, _, state) = open_state(dir.path(), small());
        append_state(&wal, &state, 0..40);
        let s1 = snap_state(&wal, &state);
        assert_eq!(s1, 40);
        append_state(&wal, &state, 40..60);
        let segs_before = segments(dir.path()).len();
        let s2 = snap_state(&wal, &state);
        assert_eq!(s2, 60);
        // Segments wholly <= s1 are gone, the ones needed after s1 remain.
        let segs = segments(dir.path());
        assert!(segs.len() < segs_before, "old segments deleted");
        assert!(
            segs[0].0 <= s1 + 1,
            "segments after the previous snapshot kept"
        );
        append_state(&wal, &state, 60..75);
        let expected = state.lock().expect("lock").clone();
        wal.close();
        drop(wal);

        let (wal, report, (snap, recs), st) = open_state(dir.path(), small());
        assert_eq!(report.snapshot_lsn, Some(60));
        assert_eq!(snap.as_ref().map(|s| s.0), Some(60));
        assert_eq!(recs.first().map(|r| r.0), Some(61), "only later records");
        assert_eq!(recs.len(), 15);
        assert_contiguous(&recs, 61);
        assert_eq!(*st.lock().expect("lock"), expected);
        let snaps = list_dir(dir.path()).expect("list").snapshots;
        assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![40, 60]);

        // A third snapshot deletes the first one.
        append_state(&wal, &st, 75..80);
        assert_eq!(snap_state(&wal, &st), 80);
        let snaps = list_dir(dir.path()).expect("list").snapshots;
        assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![60, 80]);
        append_state(&wal, &st, 80..90);
        let expected = st.lock().expect("lock").clone();
        wal.close();
        drop(wal);

        // Corrupt the newest snapshot: falls back to the previous one plus segments.
        let newest = snapshot_path(dir.path(), 80);
        let mut bytes = fs::read(&newest).expect("read");
        let n = bytes.len();
        bytes[n / 2] ^= 0xFF;
        fs::write(&newest, bytes).expect("write");
        let (wal, report, (snap, recs), st) = open_state(dir.path(), small());
        assert_eq!(report.snapshot_lsn, Some(60));
        assert_eq!(snap.map(|s| s.0), Some(60));
        assert_contiguous(&recs, 61);
        assert_eq!(recs.len(), 30);
        assert!(report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("corrupt snapshot")));
        assert_eq!(*st.lock().expect("lock"), expected);
        assert!(!newest.exists());
        append_state(&wal, &st, 90..95);
        let expected = st.lock().expect("lock").clone();
        wal.close();
        drop(wal);
        let (_, report, _, st) = open_state(dir.path(), small());
        assert!(report.reason.is_none());
        assert_eq!(*st.lock().expect("lock"), expected);
    }

    #[test]
    fn snapshot_of_empty_log_and_empty_payloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        assert_eq!(
            wal.snapshot_blocking(|| b"empty".to_vec()).expect("snap"),
            0
        );
        assert_eq!(wal.append_blocking(Vec::new(), |_| {}).expect("append"), 1);
        wal.close();
        drop(wal);
        let (_, report, (snap, recs)) = open_collect(dir.path(), opts());
        assert_eq!(snap, Some((0, b"empty".to_vec())));
        assert_eq!(recs, vec![(1, Vec::new())]);
        assert_eq!(report.last_lsn, 1);
    }

    #[test]
    fn segments_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 256,
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), small());
        let acked = write_n(&wal, 0..100);
        wal.close();
        drop(wal);
        let segs = segments(dir.path());
        assert!(segs.len() > 10, "rolled into {} segments", segs.len());
        for (first, path) in &segs {
            let bytes = fs::read(path).expect("read");
            let lsn = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
            assert_eq!(lsn, *first, "segment named after its first lsn");
        }
        let (wal, report, (_, recs)) = open_collect(dir.path(), small());
        assert_eq!(recs, acked);
        assert_eq!(report.segments, segs.len());
        assert_eq!(wal.append_blocking(vec![1], |_| {}).expect("append"), 101);
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn injected_failure_rejects_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        for i in 0..5u64 {
            wal.append(payload(i), |_| {}).await.expect("append");
        }
        wal.inject_failures(1);
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let err = wal
            .append(b"FAILED".to_vec(), move |_| r.store(true, Ordering::SeqCst))
            .await
            .expect_err("injected failure");
        match &err {
            WalError::Io(e) => {
                assert!(e.to_string().contains("No space left on device"), "{e}");
                #[cfg(target_os = "linux")]
                assert_eq!(e.raw_os_error(), None, "copied per caller, message kept");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("event log I/O error: "));
        assert!(!ran.load(Ordering::SeqCst), "callback must not run");
        assert!(wal.is_healthy());
        assert_eq!(wal.last_lsn(), 5);

        // Concurrent appends with two failing batches: only Ok answers may survive.
        wal.inject_failures(2);
        let mut tasks = Vec::new();
        for t in 0..200u64 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                let p = format!("c-{t}").into_bytes();
                let ran = Arc::new(AtomicBool::new(false));
                let r = Arc::clone(&ran);
                let res = wal
                    .append(p.clone(), move |_| r.store(true, Ordering::SeqCst))
                    .await;
                assert_eq!(res.is_ok(), ran.load(Ordering::SeqCst));
                (p, res.is_ok())
            }));
        }
        let mut ok = HashSet::new();
        let mut failed = HashSet::new();
        for t in tasks {
            let (p, good) = t.await.expect("join");
            if good {
                ok.insert(p);
            } else {
                failed.insert(p);
            }
        }
        assert!(!failed.is_empty());
        // All 200 may have fit into one batch, leaving one injected failure unused.
        wal.inject_failures(0);
        let lsn = wal.append(b"later".to_vec(), |_| {}).await.expect("append");
        assert_eq!(lsn, 5 + ok.len() as u64 + 1);
        wal.close();
        drop(wal);

        let (_, report, (_, recs)) = open_collect(dir.path(), opts());
        assert_eq!(report.truncated_bytes, 0, "failed writes were rolled back");
        assert_contiguous(&recs, 1);
        assert_eq!(recs.len() as u64, lsn);
        let replayed: HashSet<Vec<u8>> = recs.iter().map(|r| r.1.clone()).collect();
        assert!(!replayed.contains(b"FAILED".as_slice()));
        for p in &failed {
            assert!(
                !replayed.contains(p),
                "a record answered with Err was replayed"
            );
        }
        for p in &ok {
            assert!(replayed.contains(p), "an acknowledged record was lost");
        }
    }

    #[test]
    fn apply_error_aborts_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        write_n(&wal, 0..3);
        wal.close();
        drop(wal);
        let res = Wal::open(dir.path(), opts(), |item| match item {
            ReplayItem::Record { lsn: 2, .. } => Err("bad".to_string()),
            _ => Ok(()),
        });
        assert!(matches!(res, Err(WalError::Replay(m)) if m.contains("bad")));
    }

    #[test]
    fn corruption_in_non_last_segment_moves_later_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 200,
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), small());
        let acked = write_n(&wal, 0..40);
        wal.close();
        drop(wal);
        let segs = segments(dir.path());
        assert!(segs.len() >= 4);
        // Flip a byte in the first record of the second segment.
        let (second_first, second) = segs[1].clone();
        let mut bytes = fs::read(&second).expect("read");
        bytes[RECORD_HEADER_LEN] ^= 1;
        fs::write(&second, bytes).expect("write");
        let (wal, report, (_, recs)) = open_collect(dir.path(), small());
        assert_eq!(recs, acked[..(second_first - 1) as usize].to_vec());
        assert!(report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("moved")));
        assert_eq!(segments(dir.path()).len(), 2);
        let lsn = wal.append_blocking(b"x".to_vec(), |_| {}).expect("append");
        assert_eq!(lsn, second_first);
        wal.close();
        drop(wal);
        let (_, report, (_, recs)) = open_collect(dir.path(), small());
        assert!(report.reason.is_none());
        assert_eq!(recs.len() as u64, second_first);
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 400,
            fsync: false,
            ..opts()
        };
        let (wal, _, _, state) = open_state(base.path(), small());
        append_state(&wal, &state, 0..30);
        snap_state(&wal, &state);
        append_state(&wal, &state, 30..60);
        snap_state(&wal, &state);
        append_state(&wal, &state, 60..90);
        wal.close();
        drop(wal);

        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut opened = 0;
        for _round in 0..150 {
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(base.path(), dir.path());
            let files: Vec<PathBuf> = fs::read_dir(dir.path())
                .expect("read_dir")
                .map(|e| e.expect("entry").path())
                .collect();
            for _ in 0..1 + rng.below(3) {
                let f = &files[rng.below(files.len() as u64) as usize];
                let Ok(mut bytes) = fs::read(f) else { continue };
                match rng.below(5) {
                    0 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len() as u64) as usize;
                        bytes[i] ^= 1 << rng.below(8);
                    }
                    1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
                    2 => {
                        for _ in 0..rng.below(64) {
                            bytes.push(rng.next() as u8);
                        }
                    }
                    3 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len() as u64) as usize;
                        let j = (i + 1 + rng.below(40) as usize).min(bytes.len());
                        for b in &mut bytes[i..j] {
                            *b = rng.next() as u8;
                        }
                    }
                    _ => {
                        let _ = fs::remove_file(f);
                        continue;
                    }
                }
                fs::write(f, bytes).expect("write");
            }
            let res = Wal::open(dir.path(), small(), |item| {
                if let ReplayItem::Snapshot { data, .. } = item {
                    // Snapshot bytes passed the crc; they must decode.
                    let _ = decode_state(data);
                }
                Ok(())
            });
            let Ok((wal, _)) = res else { continue };
            opened += 1;
            let next = wal.last_lsn() + 1;
            assert_eq!(
                wal.append_blocking(b"z".to_vec(), |_| {}).expect("append"),
                next
            );
            wal.close();
            drop(wal);
            let (_, report, (_, recs)) = open_collect(dir.path(), small());
            assert_eq!(
                report.truncated_bytes, 0,
                "second open after repair is clean"
            );
            assert_eq!(report.last_lsn, next);
            assert_eq!(recs.last().map(|r| r.0), Some(next));
        }
        assert!(opened > 50, "most corruptions are recoverable ({opened})");
    }

    #[test]
    fn append_rate_is_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rate = bench_append(dir.path(), 20_000, 200);
        println!("wal append rate: {rate:.0} appends/s (n=20000, concurrency=200, fsync on)");
        assert!(rate > 0.0);
    }
}
