//! Durability benchmark (not a test): durable ingest of outcome events with
//! fsync group commit, and replay speed at start.
//!
//! `cargo bench --bench durability` runs the full measurement (1M events
//! ingested, 10M replayed) and prints one line per figure. Under `cargo test`
//! (no `--bench` argument) it runs a small smoke version so CI proves it works.
//!
//! Ingest goes through the real path below HTTP: an outcome record is encoded,
//! appended to the log, fsynced with its group, applied to the ledger by the
//! log-order callback (`Durable::commit`, the commit path every write takes), and only then acknowledged to its producer task.

use std::time::Instant;

use std::sync::Arc;

use offer_engine::domain::TierThresholds;
use offer_engine::durable::{Durable, LocalLog, Silent};
use offer_engine::events::{OutcomeKind, OutcomeRecord};
use offer_engine::state::ledger::InventoryKey;
use offer_engine::state::{LogRecord, State, StateSettings};
use offer_engine_wal::WalOptions;

fn core() -> State {
    State::new(StateSettings {
        max_decisions: 1_000_000,
        thresholds: TierThresholds::default(),
        learning: Default::default(),
    })
}

fn outcome(i: u64, per_record: usize) -> LogRecord {
    LogRecord::Outcomes(
        (0..per_record as u64)
            .map(|k| {
                let n = i * per_record as u64 + k;
                OutcomeRecord {
                    decision_id: format!("{:032x}", n.wrapping_mul(0x9E3779B97F4A7C15)),
                    offer_pos: (n % 3) as u8,
                    offer_id: ["wifi-flight-pass", "seat-extra-legroom", "lounge-dom"]
                        [(n % 3) as usize]
                        .into(),
                    member_id: format!("M{:08}", n % 100_000 + 1),
                    kind: if n.is_multiple_of(7) {
                        OutcomeKind::Accept
                    } else {
                        OutcomeKind::Impression
                    },
                    revenue: if n.is_multiple_of(7) { 120.0 } else { 0.0 },
                    at_ms: 1_795_000_000_000 + n as i64,
                    client_at_ms: None,
                    inventory: (n.is_multiple_of(7)).then_some((
                        InventoryKey::AirportDay {
                            airport: *b"PEK",
                            day: 20_500 + (n % 30) as i32,
                        },
                        u32::MAX,
                    )),
                    suppress_days: 30,
                    experiments: Vec::new(),
                    learn: true,
                }
            })
            .collect(),
    )
}

/// Appends `records` records of `per_record` events from `tasks` concurrent
/// producers, each waiting for its acknowledgement before sending the next.
fn ingest(records: u64, per_record: usize, tasks: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let core = core();
    let (wal, _) =
        offer_engine::durable::open(dir.path(), WalOptions::default(), &core).expect("open");
    let durable = Durable::new(Arc::new(LocalLog(wal)), core, Arc::new(Silent));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    rt.block_on(async {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let durable = durable.clone();
            handles.push(tokio::spawn(async move {
                let mut i = t;
                while i < records {
                    // The one commit path: append, fsync with the group, apply.
                    durable
                        .commit(outcome(i, per_record), "outcomes")
                        .await
                        .expect("durable append");
                    i += tasks;
                }
            }));
        }
        for h in handles {
            h.await.expect("producer");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    durable.close();
    (records * per_record as u64) as f64 / secs
}

/// Writes `n` single-event records (fsync off: only the replay is measured),
/// then opens the log on a fresh state and times the replay.
fn replay(n: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let core = core();
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let (wal, _) = offer_engine::durable::open(dir.path(), opts, &core).expect("open");
        let mut last = None;
        for i in 0..n {
            last = Some(wal.append(outcome(i, 1).encode(), |_| {}));
            if i % 4096 == 4095 {
                if let Some(p) = last.take() {
                    block_on(p).expect("append");
                }
            }
        }
        if let Some(p) = last {
            block_on(p).expect("append");
        }
        wal.close();
    }
    let fresh = core();
    let started = Instant::now();
    let (_wal, report) =
        offer_engine::durable::open(dir.path(), WalOptions::default(), &fresh).expect("replay");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.records_replayed, n);
    (secs, n as f64 / secs)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (records, replay_n) = if full {
        (1_000_000u64, 10_000_000u64)
    } else {
        (2_000, 20_000)
    };
    println!(
        "durability benchmark ({}), {} cores",
        if full { "full" } else { "smoke" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for (tasks, per_record) in [(256u64, 1usize), (1024, 1), (256, 10)] {
        let n = if per_record == 1 {
            records
        } else {
            records / 10
        };
        let rate = ingest(n, per_record, tasks);
        println!("ingest: {:>9} events, {:>4} producers, {:>2} events/record, fsync group commit: {:>10.0} events/s", n * per_record as u64, tasks, per_record, rate);
    }
    let (secs, rate) = replay(replay_n);
    println!("replay: {replay_n} records in {secs:.2} s ({rate:.0} records/s)");
}
