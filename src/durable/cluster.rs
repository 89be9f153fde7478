//! Cluster mode: the log is one NATS JetStream stream that every replica
//! publishes to and consumes in order ([`NatsLog`], an [`EventLog`]).
//!
//! A write is published with a unique `Nats-Msg-Id` (a retried publish
//! inside the duplicate window is stored once and acknowledged with the
//! original sequence). One apply loop per replica consumes the stream from
//! the sequence its state reflects and applies every record, its own and
//! the other replicas', through the same [`crate::state::State::apply`], in
//! stream order: inventory caps, "already accepted", points and refunds are
//! decided there, identically on every replica. A write resolves once
//! JetStream acknowledged it **and** this replica's apply loop applied it, so
//! the next read on this replica sees it.
//!
//! Snapshots are local files (`cluster-snapshots/snap-<seq>.bin` in the data
//! dir) made by the apply loop between two records. A replica also shares
//! one now and then through the JetStream object store `<stream>_SNAPSHOTS`
//! (object `snap-<seq>`): state is a function of the stream, so any
//! replica's snapshot at sequence S is the state at S. On start a replica
//! restores the newest usable snapshot, local or shared, and consumes the
//! stream from the sequence after it. The stream is purged up to the oldest
//! kept shared snapshot ([`share_snapshot`]); a replica whose position the
//! stream no longer holds loads a shared snapshot at start, or stops
//! applying and says so while running: it never skips records.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer::pull::OrderedConfig, consumer::DeliverPolicy, message::PublishMessage,
    object_store, stream,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use super::{EventLog, LogError, Pending};
use crate::config::ClusterSettings;

/// Applies a record that no local write waits for (another replica's, or
/// one of ours whose writer gave up): the payload and its stream sequence.
pub type Apply = Arc<dyn Fn(&[u8], u64) + Send + Sync>;

type Reply = Box<dyn FnOnce(Result<u64, LogError>) + Send>;

struct Waiter {
    after: Box<dyn FnOnce(u64) + Send>,
    done: oneshot::Sender<u64>,
}

struct SnapshotRequest {
    make: Box<dyn FnOnce() -> Vec<u8> + Send>,
    reply: Reply,
}

/// What the stream and this replica's apply loop report.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// The last stream sequence applied here.
    pub applied: AtomicU64,
    /// The stream's last sequence, as last seen (every second).
    pub stream_last: AtomicU64,
    /// Whether the last look at the stream succeeded.
    pub reachable: AtomicBool,
    /// Milliseconds since the Unix epoch of the last successful look.
    pub last_seen_ms: AtomicU64,
    /// Records applied from the stream by this process.
    pub records_applied: AtomicU64,
    /// The stream's first sequence (records before it were purged), as
    /// last seen.
    pub stream_first: AtomicU64,
    /// The sequence of the newest shared snapshot, as last seen.
    pub shared_newest: AtomicU64,
    /// Snapshots this process put into the shared object store.
    pub shared_uploads: AtomicU64,
    /// Shared snapshots this process downloaded and restored.
    pub shared_downloads: AtomicU64,
    /// Set when the stream no longer holds the record after the applied
    /// one (purged while this replica was behind): the apply loop stops
    /// rather than skip records; a restart loads a shared snapshot.
    pub gap: AtomicBool,
    /// The sequence the replica must apply before it serves: the stream's
    /// last as of its start.
    pub catch_up_target: AtomicU64,
    /// Where the state came from at start.
    pub restored_from: OnceLock<RestoredFrom>,
    /// Milliseconds since the Unix epoch when this replica last confirmed
    /// it held the stream's end: a look at the stream found its last
    /// sequence, and the apply loop has applied up to it since.
    pub caught_up_ms: AtomicU64,
    /// Decisions waiting in the outbox to be published.
    pub outbox_len: AtomicU64,
    /// Their bytes.
    pub outbox_bytes: AtomicU64,
    /// Decisions published from the outbox.
    pub outbox_drained: AtomicU64,
    /// Decisions dropped from a full outbox, never published by this replica.
    pub outbox_dropped: AtomicU64,
}

/// Where a replica's state came from at start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RestoredFrom {
    /// `local` (this replica's snapshot), `shared` (a snapshot from the
    /// object store) or `stream` (no snapshot: the stream from its start).
    pub source: &'static str,
    /// The stream sequence the restored snapshot reflects (0 for `stream`).
    pub sequence: u64,
}

impl ClusterStatus {
    /// Records the stream holds that this replica has not applied yet.
    pub fn lag(&self) -> u64 {
        self.stream_last
            .load(Ordering::Acquire)
            .saturating_sub(self.applied.load(Ordering::Acquire))
    }

    /// Whether this replica applied the stream's end as of its start.
    pub fn caught_up(&self) -> bool {
        self.applied.load(Ordering::Acquire) >= self.catch_up_target.load(Ordering::Acquire)
    }

    /// Seconds since this replica last confirmed it held the stream's end
    /// at `now_ms`: how stale what it answers may be.
    pub fn stale_seconds(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.caught_up_ms.load(Ordering::Acquire)) as f64 / 1000.0
    }
}

/// A NATS JetStream stream as the event log.
pub struct NatsLog {
    handle: tokio::runtime::Handle,
    observer: Arc<dyn super::Observer>,
    stream: stream::Stream,
    js: jetstream::Context,
    client: async_nats::Client,
    subject: String,
    replica: String,
    counter: AtomicU64,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    snapshots: mpsc::UnboundedSender<SnapshotRequest>,
    status: Arc<ClusterStatus>,
    publish_timeout: Duration,
    closed: Arc<AtomicBool>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    outbox: Arc<Outbox>,
    checkout_budget: Duration,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("NATS: {e}"))
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// The directory of this replica's local snapshots.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster-snapshots")
}

/// This replica's local snapshots, newest first: the stream sequence each
/// reflects and its file.
pub fn local_snapshots(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(snapshot_dir(data_dir)) else {
        return Vec::new();
    };
    let mut all: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let seq = name
                .strip_prefix("snap-")
                .and_then(|r| r.strip_suffix(".bin"))
                .and_then(|r| r.parse::<u64>().ok())?;
            Some((seq, e.path()))
        })
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.0));
    all
}

/// The newest local snapshot: its bytes and the stream sequence it reflects.
pub fn newest_snapshot(data_dir: &Path) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    match local_snapshots(data_dir).into_iter().next() {
        None => Ok(None),
        Some((seq, path)) => Ok(Some((std::fs::read(path)?, seq))),
    }
}

/// The object store bucket of a stream's shared snapshots.
pub fn snapshot_bucket_name(stream: &str) -> String {
    format!("{stream}_SNAPSHOTS")
}

fn shared_name(seq: u64) -> String {
    format!("snap-{seq:020}")
}

/// A shared snapshot as listed: the sequence it reflects, its size and
/// when it was stored (Unix seconds).
#[derive(Debug, Clone)]
struct Shared {
    seq: u64,
    name: String,
    size: usize,
    stored_secs: i64,
}

/// The shared snapshots in `bucket`, newest first.
async fn list_shared(bucket: &object_store::ObjectStore) -> Result<Vec<Shared>, String> {
    let mut list = bucket.list().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(o) = list.next().await {
        let o = o.map_err(|e| e.to_string())?;
        let Some(seq) = o
            .name
            .strip_prefix("snap-")
            .and_then(|r| r.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Shared {
            seq,
            name: o.name.clone(),
            size: o.size,
            stored_secs: o.modified.map(|t| t.unix_timestamp()).unwrap_or(0),
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.seq));
    Ok(out)
}

/// Downloads a shared snapshot. The object store checks the SHA-256
/// digest it stored with the object when the read reaches the end; the
/// size is checked here.
async fn download_shared(
    bucket: &object_store::ObjectStore,
    s: &Shared,
) -> Result<Vec<u8>, String> {
    let read = async {
        let mut obj = bucket.get(&s.name).await.map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(s.size);
        obj.read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        if bytes.len() != s.size {
            return Err(format!("{} bytes read, {} listed", bytes.len(), s.size));
        }
        Ok(bytes)
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .map_err(|_| "not read within 300 s".to_string())?
}

/// Opens the shared snapshots' bucket, creating it if missing (the stream's
/// replica count, file storage).
async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, String> {
    if let Ok(b) = js.get_object_store(name).await {
        return Ok(b);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: name.to_string(),
            description: Some("offer-engine shared snapshots".into()),
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await;
    match created {
        Ok(b) => Ok(b),
        // Another replica created it meanwhile.
        Err(e) => js
            .get_object_store(name)
            .await
            .map_err(|e2| format!("creating bucket {name}: {e}; opening it: {e2}")),
    }
}

/// What a replica needs to share snapshots and trim the stream.
struct Sharing {
    bucket: object_store::ObjectStore,
    stream: stream::Stream,
    interval_secs: u64,
    kept: usize,
    trim_after_secs: u64,
    busy: AtomicBool,
}

/// Puts the snapshot at `seq` into the shared bucket when the newest shared
/// one is older than the interval (so replicas snapshotting at different
/// moments rarely upload the same thing; two uploads are harmless: any
/// replica's snapshot at S is the state at S). Then keeps the newest
/// `kept` and purges the stream up to the oldest of them once it is
/// `trim_after_secs` old: every kept snapshot stays usable (the stream
/// holds every record after it), so a replica can always start from one.
async fn share_snapshot(sh: Arc<Sharing>, status: Arc<ClusterStatus>, seq: u64, bytes: Bytes) {
    let r = async {
        let now = chrono::Utc::now().timestamp();
        let shared = list_shared(&sh.bucket).await?;
        if let Some(newest) = shared.first() {
            status.shared_newest.fetch_max(newest.seq, Ordering::AcqRel);
            if newest.seq >= seq || now - newest.stored_secs < sh.interval_secs as i64 {
                return Ok::<(), String>(());
            }
        }
        let started = Instant::now();
        let meta = object_store::ObjectMetadata {
            name: shared_name(seq),
            description: Some(format!("offer-engine state at stream sequence {seq}")),
            ..Default::default()
        };
        sh.bucket
            .put(meta, &mut bytes.as_ref())
            .await
            .map_err(|e| format!("putting snapshot {seq}: {e}"))?;
        status.shared_uploads.fetch_add(1, Ordering::Relaxed);
        status.shared_newest.fetch_max(seq, Ordering::AcqRel);
        tracing::info!(
            seq,
            bytes = bytes.len(),
            seconds = started.elapsed().as_secs_f64(),
            "shared snapshot stored"
        );
        let shared = list_shared(&sh.bucket).await?;
        for old in shared.iter().skip(sh.kept) {
            if let Err(e) = sh.bucket.delete(&old.name).await {
                tracing::warn!(seq = old.seq, error = %e, "deleting an old shared snapshot failed");
            }
        }
        let kept: Vec<&Shared> = shared.iter().take(sh.kept).collect();
        let Some(oldest) = kept.last() else {
            return Ok(());
        };
        if kept.len() < 2 || now - oldest.stored_secs < sh.trim_after_secs as i64 {
            return Ok(());
        }
        let first = sh
            .stream
            .get_info()
            .await
            .map_err(|e| format!("stream info: {e}"))?
            .state
            .first_sequence;
        if first <= oldest.seq {
            let purged = sh
                .stream
                .purge()
                .sequence(oldest.seq + 1)
                .await
                .map_err(|e| format!("purging the stream up to {}: {e}", oldest.seq))?;
            status
                .stream_first
                .fetch_max(oldest.seq + 1, Ordering::AcqRel);
            tracing::info!(
                purged = purged.purged,
                first = oldest.seq + 1,
                "stream trimmed up to the oldest kept shared snapshot"
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, seq, "sharing a snapshot failed; the next snapshot tries again");
    }
    sh.busy.store(false, Ordering::Release);
}

fn write_snapshot(data_dir: &Path, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = snapshot_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("snap-{seq:020}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("snap-{seq:020}.bin")))?;
    // Keep the two newest: one to fall back on if the newest is unreadable.
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    all.sort();
    while all.len() > 2 {
        let old = all.remove(0);
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// Initial records a starting replica offers for an empty stream: the first
/// is published only if the stream is still empty, so replicas starting at
/// once on an empty stream give one initial population.
pub struct Initial(pub Vec<Vec<u8>>);

/// Restores a snapshot's bytes, reflecting the given stream sequence, into
/// the still empty state; refuses (changing nothing) what it cannot decode.
pub type Restore<'a> = &'a (dyn Fn(&[u8], u64) -> Result<(), String> + Sync);

/// A snapshot a starting replica may restore.
enum Candidate {
    Local(u64, PathBuf),
    Shared(Shared),
}

impl Candidate {
    fn seq(&self) -> u64 {
        match self {
            Candidate::Local(seq, _) => *seq,
            Candidate::Shared(s) => s.seq,
        }
    }
}

/// Restores the newest usable snapshot, local or shared (a local one on a
/// tie: nothing to download), falling back to older ones when one does not
/// read or decode. Usable: the stream still holds every record after it
/// (`first` is the stream's first sequence) and it is not past the
/// stream's end (a snapshot of another stream of the same name). Without
/// one the stream is replayed from its start, unless it was trimmed: then
/// start-up fails rather than skip records.
async fn restore_newest(
    restore: Restore<'_>,
    local: Vec<(u64, PathBuf)>,
    shared: Vec<Shared>,
    bucket: Option<&object_store::ObjectStore>,
    first: u64,
    last: u64,
    status: &ClusterStatus,
) -> anyhow::Result<RestoredFrom> {
    let mut candidates: Vec<Candidate> = local
        .into_iter()
        .map(|(seq, p)| Candidate::Local(seq, p))
        .chain(shared.into_iter().map(Candidate::Shared))
        .collect();
    // Newest first; a local one before a shared one at the same sequence.
    candidates.sort_by_key(|c| {
        (
            std::cmp::Reverse(c.seq()),
            matches!(c, Candidate::Shared(_)),
        )
    });
    for c in candidates {
        let seq = c.seq();
        if seq == 0 {
            continue;
        }
        if seq > last {
            tracing::warn!(
                seq,
                last,
                "a snapshot is past the stream's end (of another stream?); not used"
            );
            continue;
        }
        if seq + 1 < first {
            tracing::info!(
                seq,
                first,
                "a snapshot older than the stream's first record; not usable"
            );
            continue;
        }
        let (source, bytes) = match &c {
            Candidate::Local(_, path) => ("local", std::fs::read(path).map_err(|e| e.to_string())),
            Candidate::Shared(s) => match bucket {
                Some(b) => ("shared", download_shared(b, s).await),
                None => continue,
            },
        };
        match bytes.and_then(|b| restore(&b, seq)) {
            Ok(()) => {
                if source == "shared" {
                    status.shared_downloads.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(seq, source, "restored a snapshot");
                return Ok(RestoredFrom {
                    source,
                    sequence: seq,
                });
            }
            Err(e) => {
                tracing::warn!(seq, source, error = %e, "a snapshot does not read or decode; trying an older one")
            }
        }
    }
    if first > 1 {
        anyhow::bail!(
            "the stream starts at sequence {first} (older records were purged) and no usable snapshot \
             reflects sequence {} or later: none local, none readable in the shared bucket",
            first - 1
        );
    }
    Ok(RestoredFrom {
        source: "stream",
        sequence: 0,
    })
}

impl NatsLog {
    /// Connects, creates the stream if missing, restores the newest usable
    /// snapshot (this replica's or a shared one) through `restore`, offers
    /// `initial` if the stream is empty and nothing was restored, and
    /// starts the apply loop after the restored sequence. It returns at
    /// once: [`ClusterStatus::caught_up`] tells when this replica applied
    /// the stream's end as of its start ([`NatsLog::wait_caught_up`]).
    pub fn start(
        cfg: &ClusterSettings,
        data_dir: &Path,
        restore: Restore<'_>,
        apply: Apply,
        observer: Arc<dyn super::Observer>,
        initial: impl FnOnce() -> anyhow::Result<Initial> + Send,
    ) -> anyhow::Result<NatsLog> {
        use anyhow::Context;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats")
            .enable_all()
            .build()
            .context("starting the NATS runtime")?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("nats-rt".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .context("starting the NATS thread")?;

        let urls = cfg.urls();
        let stream_name = cfg.stream.clone();
        let subject = format!("{}.rec", stream_name.to_ascii_lowercase());
        let stream_cfg = stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{}.>", stream_name.to_ascii_lowercase())],
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas.max(1),
            duplicate_window: Duration::from_secs(cfg.duplicate_window_secs.max(1)),
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let publish_timeout = Duration::from_millis(cfg.publish_timeout_ms.max(100));
        let bucket_name = snapshot_bucket_name(&stream_name);
        let local = local_snapshots(data_dir);
        let status = Arc::new(ClusterStatus::default());
        // Start-up runs inside the service's runtime: block on the NATS
        // runtime from a thread of its own.
        let h = handle.clone();
        let joined = std::thread::scope(|scope| {
            scope
                .spawn(|| h.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            let client = loop {
                let r = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .event_callback(|ev| async move { tracing::info!(event = %ev, "nats") })
                    .connect(urls.clone())
                    .await;
                match r {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(error = %e, "NATS not reachable yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(anyhow::anyhow!("connecting to NATS {urls:?}: {e}")),
                }
            };
            let mut js = jetstream::new(client.clone());
            js.set_timeout(Duration::from_secs(2));
            // The JetStream meta leader may still be elected just after the
            // servers start: retry until the deadline.
            let mut stream = loop {
                match js.get_or_create_stream(stream_cfg.clone()).await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(error = %e, "stream not available yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(anyhow::anyhow!("creating stream {stream_name}: {e}")),
                }
            };
            // On a loaded machine the first look can time out like the
            // creation: retry it until the same deadline.
            let info = loop {
                match stream.info().await {
                    Ok(info) => break info.clone(),
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(error = %e, "stream info not available yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(anyhow::anyhow!("stream info: {e}")),
                }
            };
            if info.config.num_replicas != stream_cfg.num_replicas
                || info.config.storage != stream::StorageType::File
            {
                tracing::warn!(
                    stream = %stream_name,
                    replicas = info.config.num_replicas,
                    configured = stream_cfg.num_replicas,
                    "the existing stream's replicas or storage differ from the configuration; it is used as it is"
                );
            }
            let first = info.state.first_sequence;
            let mut last = info.state.last_sequence;
            status.stream_first.store(first, Ordering::Release);
            let bucket = match open_bucket(&js, &bucket_name, stream_cfg.num_replicas).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(bucket = %bucket_name, error = %e, "the shared snapshots' bucket is not available");
                    None
                }
            };
            let shared = match &bucket {
                Some(b) => list_shared(b).await.unwrap_or_else(|e| {
                    tracing::warn!(bucket = %bucket_name, error = %e, "listing shared snapshots failed");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            if let Some(s) = shared.first() {
                status.shared_newest.store(s.seq, Ordering::Release);
            }
            let from = restore_newest(restore, local, shared, bucket.as_ref(), first, last, &status).await?;
            let applied = from.sequence;
            if last == 0 && applied == 0 {
                let Initial(records) = initial()?;
                last = publish_initial(&js, &subject, records, publish_timeout).await?;
                if last == 0 {
                    last = stream
                        .info()
                        .await
                        .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
                        .state
                        .last_sequence;
                }
            }
            Ok::<_, anyhow::Error>((client, js, stream, last, bucket, from))
        }))
                .join()
        });
        let (client, js, stream, last, bucket, from) =
            joined.map_err(|_| anyhow::anyhow!("the NATS start-up thread panicked"))??;

        let applied = from.sequence;
        tracing::info!(
            stream = %cfg.stream,
            source = from.source,
            from = applied,
            to = last,
            "joined the stream; catching up"
        );
        let _ = status.restored_from.set(from);
        status.applied.store(applied, Ordering::Release);
        status.catch_up_target.store(last, Ordering::Release);
        status.stream_last.store(last, Ordering::Release);
        status.reachable.store(true, Ordering::Release);
        status.last_seen_ms.store(now_ms(), Ordering::Release);
        status.caught_up_ms.store(now_ms(), Ordering::Release);
        let pending: Arc<Mutex<HashMap<String, Waiter>>> = Arc::default();
        let (snap_tx, snap_rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let sharing = match bucket {
            Some(bucket) if cfg.shared_snapshot_interval_secs > 0 => Some(Arc::new(Sharing {
                bucket,
                stream: stream.clone(),
                interval_secs: cfg.shared_snapshot_interval_secs,
                kept: cfg.shared_snapshots_kept.max(2),
                trim_after_secs: cfg.trim_after_secs,
                busy: AtomicBool::new(false),
            })),
            _ => None,
        };
        handle.spawn(apply_loop(ApplyLoop {
            stream: stream.clone(),
            pending: pending.clone(),
            apply,
            snapshots: snap_rx,
            status: status.clone(),
            data_dir: data_dir.to_path_buf(),
            closed: closed.clone(),
            sharing,
        }));
        handle.spawn(watch_stream(stream.clone(), status.clone(), closed.clone()));
        let outbox = Outbox::spawn(
            &handle,
            OutboxSettings {
                max_bytes: cfg.outbox_max_bytes,
                duplicate_window: Duration::from_secs(cfg.duplicate_window_secs.max(1)),
                client: client.clone(),
                js: js.clone(),
                subject: subject.clone(),
                pending: pending.clone(),
                status: status.clone(),
                closed: closed.clone(),
                observer: observer.clone(),
            },
        );

        Ok(NatsLog {
            handle,
            observer,
            stream,
            js,
            client,
            subject,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            counter: AtomicU64::new(0),
            pending,
            snapshots: snap_tx,
            status,
            publish_timeout,
            closed,
            stop: Mutex::new(Some(stop_tx)),
            outbox,
            checkout_budget: Duration::from_millis(cfg.checkout_publish_budget_ms),
        })
    }

    /// The stream's and the apply loop's positions.
    pub fn status(&self) -> Arc<ClusterStatus> {
        self.status.clone()
    }

    /// Blocks until this replica applied the stream's end as of its start
    /// (tools that need the whole state before they work); fails when the
    /// stream lost records it needs or after `limit`.
    pub fn wait_caught_up(&self, limit: Duration) -> Result<(), LogError> {
        let started = Instant::now();
        while !self.status.caught_up() {
            if self.status.gap.load(Ordering::Acquire) {
                return Err(LogError::Unavailable(
                    "the stream no longer holds records this replica needs".into(),
                ));
            }
            if started.elapsed() > limit {
                return Err(LogError::Unavailable(format!(
                    "caught up to sequence {} of {} in {limit:?}",
                    self.status.applied.load(Ordering::Acquire),
                    self.status.catch_up_target.load(Ordering::Acquire)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Whether NATS is taken as reachable: connected, or the last look at
    /// the stream (every second) succeeded. A client that lost its server
    /// in a cluster of three reconnects to another within milliseconds, so
    /// both failing means every server is out of reach.
    fn nats_up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            || self.status.reachable.load(Ordering::Acquire)
    }

    /// Why a record of `len` bytes cannot be published now, if it cannot;
    /// `need_nats`: refuse it when NATS is lost (a write answers 503 at
    /// once; a decision goes to the outbox instead).
    fn refuse(&self, len: usize, need_nats: bool) -> Option<LogError> {
        if len > self.client.server_info().max_payload.saturating_sub(1024) {
            return Some(LogError::TooLarge(format!(
                "{len} bytes is more than the NATS server takes in one message"
            )));
        }
        if self.closed.load(Ordering::Acquire) {
            return Some(LogError::Unavailable("the log is closed".into()));
        }
        if need_nats && !self.nats_up() {
            return Some(unavailable(
                "not connected to any server and the stream does not answer",
            ));
        }
        None
    }

    /// Publishes a decision without ever failing its caller for NATS:
    /// the returned future resolves with the sequence once this replica
    /// applied it, or with 0 when it did not within the checkout budget,
    /// or at once when the decision went to the outbox (NATS lost, or its
    /// publish failed). The outbox publishes it later with the same
    /// `Nats-Msg-Id`. `after(seq)` runs on the apply loop when it arrives.
    fn publish_outboxed(
        &self,
        payload: Vec<u8>,
        after: Box<dyn FnOnce(u64) + Send>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send + 'static {
        let id = self.next_msg_id();
        let refused = self.refuse(payload.len(), false);
        let (done_tx, done_rx) = oneshot::channel();
        let (queued_tx, queued_rx) = oneshot::channel::<()>();
        if refused.is_none() {
            let outbox = self.outbox.clone();
            outbox.made(&id);
            let arrived = id.clone();
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id.clone(),
                    Waiter {
                        // Stored and applied: nothing left to publish,
                        // whatever the duplicate window.
                        after: Box::new(move |seq| {
                            after(seq);
                            outbox.arrived(&arrived);
                        }),
                        done: done_tx,
                    },
                );
            let payload = Bytes::from(payload);
            // Behind earlier decisions still waiting, or NATS lost: queue.
            if !self.outbox.is_empty() || !self.nats_up() {
                self.outbox.push(id, payload, None);
                let _ = queued_tx.send(());
            } else {
                let js = self.js.clone();
                let subject = self.subject.clone();
                let observer = self.observer.clone();
                let outbox = self.outbox.clone();
                let pending = self.pending.clone();
                let status = self.status.clone();
                self.handle.spawn(async move {
                    let started = Instant::now();
                    match publish_once(&js, &subject, &id, payload.clone()).await {
                        Ok(seq) => {
                            status.stream_last.fetch_max(seq, Ordering::AcqRel);
                            observer.published(started.elapsed().as_secs_f64())
                        }
                        Err(e) => {
                            // Unless the apply loop took it meanwhile (it
                            // was stored after all), publish it later.
                            let waiting = pending
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .contains_key(&id);
                            if waiting {
                                tracing::debug!(error = %e, id = %id, "decision not published; queued in the outbox");
                                outbox.push(id, payload, Some(started));
                                let _ = queued_tx.send(());
                            }
                        }
                    }
                });
            }
        }
        let budget = self.checkout_budget;
        // Timed on the NATS runtime: a campaign waits from a runtime
        // without a timer.
        let waited = refused.is_none().then(|| {
            self.handle.spawn(async move {
                tokio::select! {
                    applied = done_rx => applied.unwrap_or(0),
                    Ok(()) = queued_rx => 0,
                    _ = tokio::time::sleep(budget) => 0,
                }
            })
        });
        async move {
            match (refused, waited) {
                (Some(e), _) => Err(e),
                (None, Some(w)) => Ok(w.await.unwrap_or(0)),
                (None, None) => Ok(0),
            }
        }
    }

    /// The next `Nats-Msg-Id` of this replica: its id and a counter, so a
    /// retried publish of one record is stored once.
    fn next_msg_id(&self) -> String {
        format!(
            "{}-{}",
            self.replica,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Publishes `payload`; once this replica applied it, `after(seq)`
    /// runs on the apply loop (instead of the generic apply) and the
    /// returned future resolves with the sequence.
    fn publish(
        &self,
        payload: Vec<u8>,
        after: Box<dyn FnOnce(u64) + Send>,
    ) -> impl std::future::Future<Output = Result<u64, LogError>> + Send + 'static {
        let id = self.next_msg_id();
        let refused = self.refuse(payload.len(), true);
        let (done_tx, done_rx) = oneshot::channel();
        let pending = self.pending.clone();
        // Spawned only when it may run: a publish aborted later could
        // already sit in the client's buffer and be sent on reconnect.
        let sent = refused.is_none().then(|| {
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id.clone(),
                    Waiter {
                        after,
                        done: done_tx,
                    },
                );
            self.handle.spawn(publish_retrying(
                self.js.clone(),
                self.subject.clone(),
                id.clone(),
                Bytes::from(payload),
                self.publish_timeout,
                self.observer.clone(),
            ))
        });
        let timeout = self.publish_timeout;
        let status = self.status.clone();
        async move {
            let sent = match (refused, sent) {
                (Some(e), _) => return Err(e),
                (None, Some(sent)) => sent,
                (None, None) => return Err(unavailable("the publish did not start")),
            };
            let published = sent.await.unwrap_or_else(|e| Err(unavailable(e)));
            if let Ok(seq) = published {
                // The stream holds at least this: the apply loop learns it
                // is behind (and recreates a silent consumer) without
                // waiting for the next look at the stream.
                status.stream_last.fetch_max(seq, Ordering::AcqRel);
            }
            let give_up = |e: LogError| {
                // Not waited for any more: if the record was stored after
                // all, the apply loop applies it like another replica's.
                let removed = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id)
                    .is_some();
                (removed, e)
            };
            match published {
                Ok(seq) => match tokio::time::timeout(timeout, done_rx).await {
                    Ok(Ok(applied)) => Ok(applied.max(seq)),
                    Ok(Err(_)) => Err(unavailable("the apply loop stopped")),
                    Err(_) => {
                        let (removed, e) = give_up(unavailable(format!(
                            "record {seq} is stored but not applied here within {timeout:?}"
                        )));
                        if removed {
                            Err(e)
                        } else {
                            Ok(seq)
                        }
                    }
                },
                Err(e) => {
                    let (removed, e) = give_up(e);
                    if removed {
                        return Err(e);
                    }
                    // The apply loop took it meanwhile: it was stored and
                    // is being applied.
                    done_rx
                        .await
                        .map_err(|_| unavailable("the apply loop stopped"))
                }
            }
        }
    }
}

/// Publishes with `Nats-Msg-Id = id`, retrying the same id until `timeout`
/// (a stream leader's election takes seconds; the duplicate window stores
/// a retried record once). Resolves with the record's stream sequence.
async fn publish_retrying(
    js: jetstream::Context,
    subject: String,
    id: String,
    payload: Bytes,
    timeout: Duration,
    observer: Arc<dyn super::Observer>,
) -> Result<u64, LogError> {
    let deadline = Instant::now() + timeout;
    let first = Instant::now();
    loop {
        let attempt = async {
            js.send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(id.clone()),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
        };
        let started = Instant::now();
        match attempt.await {
            Ok(ack) => {
                tracing::trace!(
                    seconds = started.elapsed().as_secs_f64(),
                    seq = ack.sequence,
                    "published"
                );
                observer.published(first.elapsed().as_secs_f64());
                return Ok(ack.sequence);
            }
            Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                tracing::debug!(error = %e, id = %id, "publish failed; retrying with the same id");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// One publish with `Nats-Msg-Id = id`, waiting for the acknowledgement
/// (JetStream's request timeout bounds it). Resolves with the sequence.
async fn publish_once(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: Bytes,
) -> Result<u64, LogError> {
    let ack = js
        .send_publish(
            subject.to_string(),
            PublishMessage::build().payload(payload).message_id(id),
        )
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    Ok(ack.sequence)
}

struct OutboxEntry {
    id: String,
    payload: Bytes,
    /// When it was first sent, if ever: until the duplicate window has
    /// passed since, publishing it again cannot store it twice.
    sent: Option<Instant>,
}

#[derive(Default)]
struct OutboxQueue {
    entries: VecDeque<OutboxEntry>,
    bytes: u64,
}

/// What the outbox needs to publish and to report.
struct OutboxSettings {
    max_bytes: u64,
    duplicate_window: Duration,
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    status: Arc<ClusterStatus>,
    closed: Arc<AtomicBool>,
    observer: Arc<dyn super::Observer>,
}

/// Decisions this replica made that are not published yet (NATS lost, or
/// their publish failed), oldest first, bounded in bytes: a checkout never
/// waits for NATS, so its decision waits here and is published when NATS
/// answers again, with the same `Nats-Msg-Id` (a publish that was stored
/// after all is then acknowledged as a duplicate, not stored twice).
struct Outbox {
    queue: Mutex<OutboxQueue>,
    /// Decisions made here and not applied here yet (on their way or
    /// queued): an event about one of them waits for them.
    unapplied: Mutex<HashSet<String>>,
    max_bytes: u64,
    wake: tokio::sync::Notify,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    status: Arc<ClusterStatus>,
}

/// Decisions the outbox publishes at once.
const OUTBOX_BATCH: usize = 64;

impl Outbox {
    fn spawn(handle: &tokio::runtime::Handle, s: OutboxSettings) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            queue: Mutex::default(),
            unapplied: Mutex::default(),
            max_bytes: s.max_bytes,
            wake: tokio::sync::Notify::new(),
            pending: s.pending,
            status: s.status,
        });
        handle.spawn(drain_outbox(
            outbox.clone(),
            Drain {
                js: s.js,
                client: s.client,
                subject: s.subject,
                duplicate_window: s.duplicate_window,
                closed: s.closed,
                observer: s.observer,
            },
        ));
        outbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    fn publish_gauges(&self, q: &OutboxQueue) {
        self.status
            .outbox_len
            .store(q.entries.len() as u64, Ordering::Release);
        self.status.outbox_bytes.store(q.bytes, Ordering::Release);
    }

    /// Queues a decision; a full outbox drops its oldest first (their
    /// accepts then find no decision: a decision is not an acknowledged
    /// write, and the newest are the ones members are looking at).
    fn push(&self, id: String, payload: Bytes, sent: Option<Instant>) {
        let len = payload.len() as u64;
        let mut dropped = Vec::new();
        {
            let mut q = self.lock();
            if len > self.max_bytes {
                // Larger than the whole outbox: dropped itself, the
                // others kept.
                dropped.push(id);
            } else {
                while q.bytes + len > self.max_bytes {
                    let Some(old) = q.entries.pop_front() else {
                        break;
                    };
                    q.bytes -= old.payload.len() as u64;
                    dropped.push(old.id);
                }
                q.bytes += len;
                q.entries.push_back(OutboxEntry { id, payload, sent });
            }
            self.publish_gauges(&q);
        }
        if !dropped.is_empty() {
            self.status
                .outbox_dropped
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped = dropped.len(),
                max_bytes = self.max_bytes,
                "the decision outbox is full; its oldest decisions are dropped unpublished"
            );
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let mut unapplied = self
                .unapplied
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in dropped {
                pending.remove(&id);
                unapplied.remove(&id);
            }
        }
        self.wake.notify_one();
    }

    /// Notes decision `id`, made here, as not applied here yet.
    fn made(&self, id: &str) {
        self.unapplied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
    }

    /// Decision `id` arrived from the stream and is applied here.
    fn arrived(&self, id: &str) {
        self.unapplied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.remove(id, false);
    }

    /// The decisions made here and not applied here yet.
    fn unapplied(&self) -> Vec<String> {
        self.unapplied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Whether any of `ids` is still not applied here.
    fn any_unapplied(&self, ids: &[String]) -> usize {
        let set = self
            .unapplied
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ids.iter().filter(|id| set.contains(*id)).count()
    }

    /// Takes decision `id` out (published, or arrived from the stream);
    /// `drained`: it was published from here.
    fn remove(&self, id: &str, drained: bool) {
        let mut q = self.lock();
        if let Some(i) = q.entries.iter().position(|e| e.id == id) {
            if let Some(e) = q.entries.remove(i) {
                q.bytes -= e.payload.len() as u64;
                if drained {
                    self.status.outbox_drained.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.publish_gauges(&q);
        }
    }

    /// The oldest `n` decisions, left in place until published, with when
    /// each was first sent.
    fn oldest(&self, n: usize) -> Vec<(String, Bytes, Option<Instant>)> {
        self.lock()
            .entries
            .iter()
            .take(n)
            .map(|e| (e.id.clone(), e.payload.clone(), e.sent))
            .collect()
    }

    /// Notes that the oldest `n` are being sent now (those not sent before).
    fn sending(&self, n: usize) {
        let now = Instant::now();
        for e in self.lock().entries.iter_mut().take(n) {
            e.sent.get_or_insert(now);
        }
    }
}

struct Drain {
    js: jetstream::Context,
    client: async_nats::Client,
    subject: String,
    duplicate_window: Duration,
    closed: Arc<AtomicBool>,
    observer: Arc<dyn super::Observer>,
}

/// Publishes the outbox's decisions, oldest first, as soon as NATS answers
/// while each was first sent less than the duplicate window ago (JetStream
/// stores a repeated `Nats-Msg-Id` once). An older one waits until this
/// replica has confirmed it holds the stream's end: if its earlier publish
/// was stored after all, it has then arrived from the stream and left the
/// outbox, so it is not published again beyond the duplicate window.
async fn drain_outbox(outbox: Arc<Outbox>, d: Drain) {
    // Margin for a publish the client still held when it was first sent.
    let safe_for = d.duplicate_window.saturating_sub(Duration::from_secs(10));
    while !d.closed.load(Ordering::Acquire) {
        let status = &outbox.status;
        let up = d.client.connection_state() == async_nats::connection::State::Connected
            || status.reachable.load(Ordering::Acquire);
        if !up {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let fresh =
            status.reachable.load(Ordering::Acquire) && status.stale_seconds(now_ms()) < 3.0;
        let batch = outbox.oldest(OUTBOX_BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let safe = |sent: &Option<Instant>| sent.is_none_or(|t| t.elapsed() < safe_for);
        if !fresh && !batch.iter().all(|(_, _, sent)| safe(sent)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        outbox.sending(batch.len());
        let started = Instant::now();
        let sent = futures_util::future::join_all(
            batch
                .iter()
                .map(|(id, payload, _)| publish_once(&d.js, &d.subject, id, payload.clone())),
        )
        .await;
        let mut failed = None;
        for ((id, _, _), r) in batch.iter().zip(sent) {
            match r {
                Ok(seq) => {
                    outbox.status.stream_last.fetch_max(seq, Ordering::AcqRel);
                    d.observer.published(started.elapsed().as_secs_f64());
                    outbox.remove(id, true);
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            tracing::debug!(error = %e, "publishing the decision outbox failed; retrying");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Publishes the initial records if the stream is empty (the first with
/// `expected_last_sequence(0)`: one replica wins; the others consume).
/// Returns the last sequence published, or 0 when another replica won.
async fn publish_initial(
    js: &jetstream::Context,
    subject: &str,
    records: Vec<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let mut last = 0;
    for (i, r) in records.into_iter().enumerate() {
        let mut msg = PublishMessage::build()
            .payload(Bytes::from(r))
            .message_id(format!("initial-{i}"));
        if i == 0 {
            msg = msg.expected_last_sequence(0);
        }
        let deadline = Instant::now() + timeout;
        let ack = loop {
            let res = async {
                js.send_publish(subject.to_string(), msg.clone())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match res {
                Ok(ack) => break ack,
                // JetStream's "wrong last sequence" (10071): another
                // replica published the initial population first.
                Err(e) if i == 0 && e.contains("10071") => {
                    tracing::info!("another replica published the initial population");
                    return Ok(0);
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "publishing the initial population; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => anyhow::bail!("publishing the initial population: {e}"),
            }
        };
        last = ack.sequence;
    }
    tracing::info!(last, "published the initial population");
    Ok(last)
}

/// Looks at the stream every second: its last sequence (the lag), whether
/// NATS answers, and when this replica last held the stream's end (a look
/// whose last sequence the apply loop has reached since confirms the time
/// of that look; under steady load that is a second or two ago).
async fn watch_stream(
    mut stream: stream::Stream,
    status: Arc<ClusterStatus>,
    closed: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A look's last sequence and time, not yet applied here.
    let mut target: Option<(u64, u64)> = None;
    while !closed.load(Ordering::Acquire) {
        tick.tick().await;
        let applied = status.applied.load(Ordering::Acquire);
        if let Some((last, at)) = target {
            if applied >= last {
                status.caught_up_ms.fetch_max(at, Ordering::AcqRel);
                target = None;
            }
        }
        let asked = now_ms();
        match tokio::time::timeout(Duration::from_secs(2), stream.info()).await {
            Ok(Ok(info)) => {
                let last = info.state.last_sequence;
                status.stream_last.fetch_max(last, Ordering::AcqRel);
                status
                    .stream_first
                    .fetch_max(info.state.first_sequence, Ordering::AcqRel);
                status.reachable.store(true, Ordering::Release);
                status.last_seen_ms.store(now_ms(), Ordering::Release);
                if status.applied.load(Ordering::Acquire) >= last {
                    status.caught_up_ms.fetch_max(asked, Ordering::AcqRel);
                    target = None;
                } else if target.is_none() {
                    target = Some((last, asked));
                }
            }
            _ => status.reachable.store(false, Ordering::Release),
        }
    }
}

struct ApplyLoop {
    stream: stream::Stream,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    apply: Apply,
    snapshots: mpsc::UnboundedReceiver<SnapshotRequest>,
    status: Arc<ClusterStatus>,
    data_dir: PathBuf,
    closed: Arc<AtomicBool>,
    sharing: Option<Arc<Sharing>>,
}

/// Writes a snapshot made between two records at the applied sequence and,
/// when this replica shares snapshots and no upload is under way, shares it
/// in the background (the apply loop does not wait for the upload).
async fn take_snapshot(l: &ApplyLoop, req: SnapshotRequest) {
    let seq = l.status.applied.load(Ordering::Acquire);
    let bytes = Bytes::from((req.make)());
    let dir = l.data_dir.clone();
    let local = bytes.clone();
    let written = tokio::task::spawn_blocking(move || write_snapshot(&dir, seq, &local))
        .await
        .map_err(unavailable)
        .and_then(|r| r.map_err(|e| LogError::Unavailable(format!("writing a snapshot: {e}"))));
    let ok = written.is_ok();
    (req.reply)(written.map(|()| seq));
    if let Some(sh) = &l.sharing {
        // A replica that stopped at a gap holds a state the stream cannot
        // continue; it shares nothing.
        if ok
            && seq > 0
            && !l.closed.load(Ordering::Acquire)
            && !l.status.gap.load(Ordering::Acquire)
            && !sh.busy.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(share_snapshot(sh.clone(), l.status.clone(), seq, bytes));
        }
    }
}

/// The one mutator of a replica's state: consumes the stream in order from
/// the sequence after the one applied, and makes snapshots between records.
async fn apply_loop(mut l: ApplyLoop) {
    'consumer: while !l.closed.load(Ordering::Acquire) {
        let applied = l.status.applied.load(Ordering::Acquire);
        let consumer = l
            .stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "stream consumer failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "creating the stream consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // When the consumer last delivered (or was found idle with nothing
        // to deliver): snapshots between records must not reset it.
        let mut progress = tokio::time::Instant::now();
        loop {
            tokio::select! {
                req = l.snapshots.recv() => {
                    let Some(req) = req else { break 'consumer };
                    take_snapshot(&l, req).await;
                }
                next = tokio::time::timeout_at(progress + Duration::from_secs(2), messages.next()) => {
                    let m = match next {
                        Ok(Some(Ok(m))) => {
                            progress = tokio::time::Instant::now();
                            m
                        }
                        Ok(Some(Err(e))) => {
                            tracing::warn!(error = %e, "stream consumer error; recreating it");
                            continue 'consumer;
                        }
                        Ok(None) => continue 'consumer,
                        Err(_) => {
                            // Quiet for 2 s while the stream holds more: the
                            // ordered consumer recovers slowly by itself
                            // after an outage, so recreate it now.
                            if l.status.lag() > 0 {
                                tracing::info!(lag = l.status.lag(), "stream consumer idle while behind; recreating it");
                                continue 'consumer;
                            }
                            progress = tokio::time::Instant::now();
                            continue;
                        }
                    };
                    let seq = match m.info() {
                        Ok(i) => i.stream_sequence,
                        Err(e) => {
                            tracing::warn!(error = %e, "a stream message without its sequence; recreating the consumer");
                            continue 'consumer;
                        }
                    };
                    let applied = l.status.applied.load(Ordering::Acquire);
                    if seq <= applied {
                        continue;
                    }
                    if seq != applied + 1 {
                        // Purged while this replica was behind: applying
                        // from here would silently lose records. Stop and
                        // say so; a restart loads a shared snapshot.
                        tracing::error!(
                            expected = applied + 1,
                            got = seq,
                            "the stream no longer holds the records after this replica's position \
                             (trimmed while it was behind); it stops applying: restart it to load a shared snapshot"
                        );
                        l.status.gap.store(true, Ordering::Release);
                        break 'consumer;
                    }
                    let id = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.to_string());
                    let waiter = id.and_then(|id| {
                        l.pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&id)
                    });
                    match waiter {
                        Some(w) => {
                            (w.after)(seq);
                            l.status.applied.store(seq, Ordering::Release);
                            let _ = w.done.send(seq);
                        }
                        None => {
                            (l.apply)(&m.payload, seq);
                            l.status.applied.store(seq, Ordering::Release);
                        }
                    }
                    l.status.stream_last.fetch_max(seq, Ordering::AcqRel);
                    l.status.records_applied.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    // Stopped at a gap: the state held is still the state at its position,
    // so local snapshots stay correct (and older than the stream's start).
    if l.status.gap.load(Ordering::Acquire) {
        while let Some(req) = l.snapshots.recv().await {
            take_snapshot(&l, req).await;
        }
    }
}

impl EventLog for NatsLog {
    fn append(&self, payload: Vec<u8>, after_durable: Box<dyn FnOnce(u64) + Send>) -> Pending {
        Box::pin(self.publish(payload, after_durable))
    }

    fn append_decision(&self, payload: Vec<u8>, after: Box<dyn FnOnce(u64) + Send>) -> Pending {
        Box::pin(self.publish_outboxed(payload, after))
    }

    fn append_deferred(
        &self,
        payload: Vec<u8>,
        done: Box<dyn FnOnce(Result<u64, LogError>) + Send>,
    ) -> Result<(), LogError> {
        // `done` runs once: with the sequence when applied here, or with
        // the error when the publish failed and nothing will apply it.
        let slot: Arc<Mutex<Option<Reply>>> = Arc::new(Mutex::new(Some(done)));
        let on_apply = slot.clone();
        let fut = self.publish(
            payload,
            Box::new(move |seq| {
                if let Some(d) = on_apply
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    d(Ok(seq))
                }
            }),
        );
        self.handle.spawn(async move {
            if let Err(e) = fut.await {
                if let Some(d) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    d(Err(e))
                }
            }
        });
        Ok(())
    }

    fn snapshot(&self, make: Box<dyn FnOnce() -> Vec<u8> + Send>) -> Pending {
        let (tx, rx) = oneshot::channel();
        let sent = self.snapshots.send(SnapshotRequest {
            make,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(LogError::Unavailable("the apply loop stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(LogError::Unavailable("the apply loop stopped".into())))
        })
    }

    fn snapshot_blocking(
        &self,
        make: Box<dyn FnOnce() -> Vec<u8> + Send>,
    ) -> Result<u64, LogError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.snapshots
            .send(SnapshotRequest {
                make,
                reply: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            })
            .map_err(|_| LogError::Unavailable("the apply loop stopped".into()))?;
        rx.recv()
            .unwrap_or_else(|_| Err(LogError::Unavailable("the apply loop stopped".into())))
    }

    fn sync(&self) -> Pending {
        let mut stream = self.stream.clone();
        let status = self.status.clone();
        let timeout = self.publish_timeout;
        let outbox = self.outbox.clone();
        let client = self.client.clone();
        let asked = self.handle.spawn(async move {
            // This replica's own decisions on their way or in the outbox
            // may not be in the stream yet: an event about one of them
            // waits for those made so far (not while NATS is lost: that
            // answers at once).
            let deadline = Instant::now() + timeout;
            let made = outbox.unapplied();
            loop {
                let waiting = outbox.any_unapplied(&made);
                if waiting == 0 {
                    break;
                }
                let lost = client.connection_state() != async_nats::connection::State::Connected
                    && !outbox.status.reachable.load(Ordering::Acquire);
                if lost || Instant::now() > deadline {
                    return Err(unavailable(format!(
                        "{waiting} decisions made here are not published yet"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let info = tokio::time::timeout(Duration::from_secs(2), stream.info())
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            Ok::<u64, LogError>(info.state.last_sequence)
        });
        Box::pin(async move {
            let last = asked.await.map_err(unavailable)??;
            status.stream_last.fetch_max(last, Ordering::AcqRel);
            let deadline = Instant::now() + timeout;
            while status.applied.load(Ordering::Acquire) < last {
                if Instant::now() > deadline {
                    return Err(unavailable(format!(
                        "not caught up with the stream ({} of {last}) within {timeout:?}",
                        status.applied.load(Ordering::Acquire)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(last)
        })
    }

    fn is_healthy(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && !self.status.gap.load(Ordering::Acquire)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }

    fn cluster_status(&self) -> Option<Arc<ClusterStatus>> {
        Some(self.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_bytes: u64) -> Outbox {
        Outbox {
            queue: Mutex::default(),
            unapplied: Mutex::default(),
            max_bytes,
            wake: tokio::sync::Notify::new(),
            pending: Arc::default(),
            status: Arc::default(),
        }
    }

    fn waiting(o: &Outbox, id: &str) -> oneshot::Receiver<u64> {
        let (done, rx) = oneshot::channel();
        o.pending.lock().unwrap().insert(
            id.to_string(),
            Waiter {
                after: Box::new(|_| {}),
                done,
            },
        );
        rx
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_and_counts_them() {
        let o = outbox(100);
        let mut first = waiting(&o, "a");
        let _others = [waiting(&o, "b"), waiting(&o, "c")];
        for id in ["a", "b", "c"] {
            o.push(id.into(), Bytes::from(vec![0u8; 40]), None);
        }
        // 120 bytes do not fit in 100: "a" went, unpublished.
        let ids: Vec<String> = o.oldest(10).into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(o.status.outbox_dropped.load(Ordering::Acquire), 1);
        assert_eq!(o.status.outbox_len.load(Ordering::Acquire), 2);
        assert_eq!(o.status.outbox_bytes.load(Ordering::Acquire), 80);
        assert!(!o.pending.lock().unwrap().contains_key("a"));
        assert!(first.try_recv().is_err(), "its waiter is gone");
        // Larger than the whole outbox: dropped itself, the rest kept.
        o.push("huge".into(), Bytes::from(vec![0u8; 101]), None);
        assert_eq!(o.oldest(10).len(), 2);
        assert_eq!(o.status.outbox_dropped.load(Ordering::Acquire), 2);
    }

    #[test]
    fn published_or_arrived_decisions_leave_the_outbox() {
        let o = outbox(1 << 20);
        for id in ["a", "b", "c"] {
            o.push(id.into(), Bytes::from_static(b"decision"), None);
        }
        o.remove("b", true);
        o.remove("a", false);
        o.remove("missing", true);
        assert_eq!(o.oldest(10).len(), 1);
        assert_eq!(o.status.outbox_drained.load(Ordering::Acquire), 1);
        assert_eq!(o.status.outbox_len.load(Ordering::Acquire), 1);
        assert_eq!(o.status.outbox_bytes.load(Ordering::Acquire), 8);
        assert!(!o.is_empty());
        o.remove("c", true);
        assert!(o.is_empty());
    }

    #[test]
    fn staleness_counts_from_the_last_confirmation() {
        let s = ClusterStatus::default();
        s.caught_up_ms.store(10_000, Ordering::Release);
        assert_eq!(s.stale_seconds(12_500), 2.5);
        assert_eq!(
            s.stale_seconds(9_000),
            0.0,
            "a clock step back is not negative"
        );
    }
}
