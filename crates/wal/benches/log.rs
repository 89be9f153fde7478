//! Benchmark of the bare event log (not a test): group-commit append throughput and replay
//! speed, with opaque 100-byte payloads and no state behind them. The root package's
//! `benches/durability.rs` measures the same two paths with real records applied to the
//! engine's state; the difference between the two is the cost of the state.
//!
//! `cargo bench -p offer-engine-wal --bench log` runs the full measurement and prints one
//! line per figure. Under `cargo test` (no `--bench` argument) it runs a small smoke version
//! so CI proves it works.

use std::path::Path;
use std::time::Instant;

use offer_engine_wal::{ReplayItem, Wal, WalOptions};

/// Group-commit throughput: `n` appends of 100-byte records (fsync on) from `concurrency`
/// tokio tasks on a 2-worker runtime, each waiting for its acknowledgement before the next,
/// in a fresh log under `dir`. Returns appends per second.
fn bench_append(dir: &Path, n: usize, concurrency: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (wal, _) = Wal::open(dir, WalOptions::default(), |_| Ok(())).expect("open");
    let concurrency = concurrency.max(1);
    let per_task = n / concurrency;
    let started = Instant::now();
    let done = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    wal.append(vec![7u8; 100], |_| {}).await.expect("append");
                }
                per_task as u64
            }));
        }
        let mut done = 0u64;
        for task in tasks {
            done += task.await.expect("producer");
        }
        done
    });
    let secs = started.elapsed().as_secs_f64();
    // Every append acknowledged, each at its own position.
    assert_eq!(done, (per_task * concurrency) as u64);
    assert_eq!(wal.last_lsn(), done);
    wal.close();
    done as f64 / secs.max(1e-9)
}

/// Recovery speed: writes `n` 100-byte records under `dir` (fsync off, default 64 MiB
/// segments; only the replay is timed), then times [`Wal::open`]. Returns the seconds and
/// the records replayed per second.
fn bench_replay(dir: &Path, n: u64) -> (f64, f64) {
    let opts = WalOptions {
        fsync: false,
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(dir, opts.clone(), |_| Ok(())).expect("open");
        let payload = [42u8; 100];
        for i in 1..=n {
            if i % 4096 == 0 || i == n {
                // Waiting for every 4096th keeps the writer's queue short; the others are
                // queued at the call and written in order without being awaited.
                wal.append_blocking(payload.to_vec(), |_| {})
                    .expect("append");
            } else {
                drop(wal.append(payload.to_vec(), |_| {}));
            }
        }
        assert_eq!(wal.last_lsn(), n);
        wal.close();
    }
    let mut count = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    let (wal, report) = Wal::open(dir, opts, |item| {
        if let ReplayItem::Record { data, .. } = item {
            count += 1;
            bytes += data.len() as u64;
        }
        Ok(())
    })
    .expect("replay");
    let secs = started.elapsed().as_secs_f64();
    wal.close();
    assert_eq!(
        (count, report.records_replayed),
        (n, n),
        "every record replayed"
    );
    assert_eq!(bytes, n * 100);
    (secs, count as f64 / secs.max(1e-9))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (appends, replay_n) = if full {
        (100_000usize, 10_000_000u64)
    } else {
        (2_000, 20_000)
    };
    println!(
        "event log benchmark ({}), {} cores",
        if full { "full" } else { "smoke" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for concurrency in [200usize, 1000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let rate = bench_append(dir.path(), appends, concurrency);
        println!(
            "append: {appends:>9} records of 100 bytes, {concurrency:>4} producers, fsync group commit: {rate:>10.0} appends/s"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (secs, rate) = bench_replay(dir.path(), replay_n);
    println!("replay: {replay_n} records of 100 bytes in {secs:.2} s ({rate:.0} records/s)");
}
