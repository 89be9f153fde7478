//! Off-policy evaluation throughput on 1 million logged rounds in the
//! generic NDJSON format (docs/ope-log-format.md).
//!
//! - `evaluate/parse_and_estimate_1m`: read the file as `offer-engine evaluate
//!   --log` does (buffered reader, serde per line, reduction to round terms),
//!   then IPS, SNIPS, DR, intervals and diagnostics;
//! - `evaluate/estimate_1m`: the estimators alone on the reduced rounds.
//!
//! The log is synthetic (seeded): 12 actions, 3 positions, a logging and a
//! target distribution over 4 actions per line, reward estimates for the
//! same 4, about 330 bytes a line; it is written once to a temporary file.
//!
//! Run: `cargo bench --bench ope -- --warm-up-time 1 --measurement-time 20`;
//! `cargo bench --bench ope -- --test` runs each once as a smoke test. Under
//! `cargo test` (no `--bench` argument) the log has 10,000 rounds, so CI
//! proves the benchmark works without writing 326 MB.

use std::hint::black_box;
use std::io::{BufReader, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use offer_engine::cli::evaluate::{read_rounds, Target};
use offer_engine::ope::{evaluate, EvaluateOptions};

const ROUNDS: u64 = 1_000_000;
const ACTIONS: usize = 12;

fn normalised(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..n).map(|_| rng.gen_range(0.05..1.0)).collect();
    let s: f64 = raw.iter().sum();
    raw.iter().map(|v| v / s).collect()
}

fn write_log(path: &std::path::Path, rounds: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("temp file"));
    for i in 0..rounds {
        // Four candidate actions at this round.
        let mut acts = Vec::with_capacity(4);
        while acts.len() < 4 {
            let a = rng.gen_range(0..ACTIONS);
            if !acts.contains(&a) {
                acts.push(a);
            }
        }
        let pb = normalised(&mut rng, 4);
        let pe = normalised(&mut rng, 4);
        let k = rng.gen_range(0..4);
        let reward = rng.gen_bool(0.08) as u8;
        let mut line = format!(
            "{{\"round\":{i},\"action\":\"offer-{:02}\",\"position\":{},\"reward\":{reward},\"propensity\":{},\"target_probs\":{{",
            acts[k],
            i % 3,
            pb[k]
        );
        for (j, a) in acts.iter().enumerate() {
            let sep = if j == 0 { "" } else { "," };
            line.push_str(&format!("{sep}\"offer-{a:02}\":{}", pe[j]));
        }
        line.push_str("},\"reward_estimates\":{");
        for (j, a) in acts.iter().enumerate() {
            let sep = if j == 0 { "" } else { "," };
            line.push_str(&format!(
                "{sep}\"offer-{a:02}\":{:.4}",
                rng.gen_range(0.0..0.2)
            ));
        }
        line.push_str("}}\n");
        w.write_all(line.as_bytes()).expect("write");
    }
    w.flush().expect("flush");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("logged.ndjson");
    let rounds = if std::env::args().any(|a| a == "--bench") {
        ROUNDS
    } else {
        10_000
    };
    write_log(&path, rounds);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "ope bench log: {rounds} rounds, {:.0} MB",
        bytes as f64 / 1e6
    );
    let opts = EvaluateOptions::default();
    let read = || {
        let f = std::fs::File::open(&path).expect("log");
        read_rounds(BufReader::with_capacity(1 << 20, f), &Target::Logged).expect("parses")
    };
    let logged = read();

    let mut g = c.benchmark_group("evaluate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rounds));
    g.bench_function("parse_and_estimate_1m", |b| {
        b.iter(|| black_box(evaluate(&read(), &opts).expect("evaluates")))
    });
    g.bench_function("estimate_1m", |b| {
        b.iter(|| black_box(evaluate(black_box(&logged), &opts).expect("evaluates")))
    });
    g.finish();
}

criterion_group!(ope, benches);
criterion_main!(ope);
