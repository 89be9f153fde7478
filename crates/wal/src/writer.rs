//! The writer thread: the one owner of the active segment. It batches queued appends (group
//! commit), writes and fsyncs each batch once, runs the callbacks in LSN order, writes
//! snapshots between batches, rolls segments, and poisons the log when a failed write cannot
//! be rolled back.
//!
//! Also here: the protocol between [`Wal`](crate::Wal) handles and the thread (`Command`,
//! `Reply`, the deferred queue in `Shared`), since both sides must agree on it. The ordering
//! and failure guarantees are those of the crate documentation's *Group commit*.

use std::fs::{self, File};
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;

use tokio::sync::oneshot;

use crate::format::{encode_record, open_segment, segment_path, sync_dir, write_snapshot};
use crate::recovery::{collect_garbage, ActiveSegment};
use crate::{WalError, WalOptions};

/// The writer yields its core after this many completions of one batch.
const YIELD_EVERY: usize = 32;

pub(crate) type Callback = Box<dyn FnOnce(u64) + Send + 'static>;
/// What a deferred append runs once its batch is durable (or failed).
pub(crate) type DeferredDone = Box<dyn FnOnce(Result<u64, WalError>) + Send + 'static>;
pub(crate) type SnapshotFn = Box<dyn FnOnce() -> Vec<u8> + Send + 'static>;

/// Where the writer sends a request's outcome.
pub(crate) enum Reply {
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

pub(crate) enum Command {
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

/// A record of [`Wal::append_deferred`](crate::Wal::append_deferred), waiting in
/// [`Shared::deferred`].
pub(crate) struct DeferredRecord {
    pub(crate) payload: Vec<u8>,
    pub(crate) done: DeferredDone,
}

/// State shared between handles and the writer thread.
pub(crate) struct Shared {
    pub(crate) last_lsn: AtomicU64,
    pub(crate) poisoned: AtomicBool,
    pub(crate) inject_failures: AtomicUsize,
    /// Records of [`Wal::append_deferred`](crate::Wal::append_deferred) not yet taken by the
    /// writer. Appenders push here without touching the channel, so a stream of them costs
    /// the writer no wake-ups.
    pub(crate) deferred: Mutex<Vec<DeferredRecord>>,
    /// True while the writer is (about to be) blocked on an empty channel with nothing
    /// deferred: the next deferred appender must wake it with [`Command::Wake`].
    pub(crate) idle: AtomicBool,
}

/// What the writer does next.
enum Next {
    /// Write this command (with everything deferred).
    Command(Command),
    /// Write the deferred records alone.
    DeferredOnly,
    /// Every handle is gone: write what is deferred and stop.
    Closed,
}

pub(crate) struct Writer {
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
    /// A writer continuing `active`, the segment recovery chose.
    pub(crate) fn new(dir: PathBuf, opts: WalOptions, active: ActiveSegment) -> Writer {
        Writer {
            dir,
            opts,
            shared: Arc::new(Shared {
                last_lsn: AtomicU64::new(active.next_lsn - 1),
                poisoned: AtomicBool::new(false),
                inject_failures: AtomicUsize::new(0),
                deferred: Mutex::new(Vec::new()),
                idle: AtomicBool::new(false),
            }),
            file: active.file,
            seg_path: active.path,
            seg_len: active.len,
            next_lsn: active.next_lsn,
            buf: Vec::new(),
        }
    }

    /// The state the handles share with this writer.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The thread's body: serves `rx` until every sender is gone. A panic poisons the log.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Command>, mut priority: crate::WriterPriority) {
        let result = catch_unwind(AssertUnwindSafe(|| self.run_loop(&rx, &mut priority)));
        if result.is_err() {
            self.shared.poisoned.store(true, Ordering::Release);
            tracing::error!("event log writer thread panicked; log poisoned");
        }
    }

    fn run_loop(&mut self, rx: &mpsc::Receiver<Command>, priority: &mut crate::WriterPriority) {
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
            priority.follow(deferred.len());
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};

    use crate::test_support::*;
    use crate::{WalError, WalOptions};

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
}
