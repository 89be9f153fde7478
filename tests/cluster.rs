//! Cluster test (real processes): a three-node NATS JetStream cluster on
//! loopback and three replicas of the real binary in cluster mode, sharing
//! one members file and one token key. Concurrently on all replicas:
//! checkout decisions, accepts sent to a *different* replica than the one
//! that decided, aimed at an offer capped at 2 units a flight, points
//! events and erasures. Mid-load one replica and one NATS server are killed
//! with `kill -9` and restarted. Then: accepted units never above the cap,
//! every acknowledged write on every replica, nothing applied twice, equal
//! digests on all replicas, and a fourth replica on an empty data dir
//! reaching the same digest from a shared snapshot plus the stream's tail.
//!
//! A second test trims the stream (purged up to the oldest kept shared
//! snapshot) and starts a replica whose local snapshot predates the trim
//! point and one on an empty data dir: both start from a shared snapshot
//! and reach the same digest and the same points.
//!
//! Needs Debian's `nats-server` (`apt-get install -y nats-server`; `test.sh`
//! installs it): without it the test fails, it is never skipped.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MEMBERS: usize = 300;
const CAP: u32 = 2;
const TOKEN_KEY: &str = "cluster-test-token-key-0123456789";

fn nats_server() -> PathBuf {
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    let which = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match which {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "nats-server is not installed; install it with `sudo apt-get install -y nats-server` (test.sh does)"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nats {
    client_ports: Vec<u16>,
    route_ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Nats {
    fn start(dir: &Path) -> Nats {
        Nats::start_n(dir, 3)
    }

    /// `n` servers with JetStream in one cluster (1: a lone server).
    fn start_n(dir: &Path, n: usize) -> Nats {
        let mut nats = Nats {
            client_ports: (0..n).map(|_| free_port()).collect(),
            route_ports: (0..n).map(|_| free_port()).collect(),
            dir: dir.to_path_buf(),
            children: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            nats.start_node(i);
        }
        nats
    }

    fn start_node(&mut self, i: usize) {
        let routes: Vec<String> = self
            .route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut cmd = Command::new(nats_server());
        cmd.args(["-js", "-n", &format!("n{i}"), "-a", "127.0.0.1"])
            .args(["-p", &self.client_ports[i].to_string()])
            .arg("-sd")
            .arg(self.dir.join(format!("store{i}")));
        // A lone server runs without cluster settings: with them, its
        // JetStream waits for peers that never come.
        if self.route_ports.len() > 1 {
            cmd.args(["--cluster_name", "offers-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", self.route_ports[i]),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .arg("-l")
            .arg(self.dir.join(format!("n{i}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.children[i] = Some(child);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().expect("kill -9 nats-server");
            let _ = c.wait();
        }
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(nats: &str, data_dir: &Path, members: &Path) -> Replica {
    start_replica_with(nats, data_dir, members, &[])
}

/// A replica; `env` adds to (or overrides) the settings below.
fn start_replica_with(
    nats: &str,
    data_dir: &Path,
    members: &Path,
    env: &[(&str, &str)],
) -> Replica {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offer-engine"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--nats",
        nats,
        "--stream",
        "OFFERS",
    ])
    .arg("--members")
    .arg(members)
    .arg("--data-dir")
    .arg(data_dir)
    .env("OFFER_ENGINE__CLUSTER__REPLICAS", "3")
    .env("OFFER_ENGINE__SECURITY__TOKEN_KEY", TOKEN_KEY)
    .env("OFFER_ENGINE__DURABILITY__SNAPSHOT_INTERVAL_SECS", "1")
    .env("OFFER_ENGINE__CLUSTER__SHARED_SNAPSHOT_INTERVAL_SECS", "1")
    .env("OFFER_ENGINE__SERVER__WORKERS", "2")
    .env(
        "OFFER_ENGINE__CONTACT__MAX_OFFERS_PER_DAY__CHECKOUT",
        "10000",
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, base) = support::spawn_server(cmd);
    Replica { child, base }
}

fn write_members(path: &Path) {
    let mut s = String::new();
    for i in 1..=MEMBERS {
        let tier = if i % 3 == 0 { "base" } else { "silver" };
        s.push_str(
            &json!({"member_id": format!("M{i:08}"), "tier": tier, "points": 10_000 + i,
                "qualifying_spend_12m": 20_000.0, "flights_12m": 8, "last_flight": "2026-10-01",
                "joined": "2015-03-01", "home_airport": "PEK", "birth_month": (i % 12) + 1,
                "consent": {"email": true, "sms": true, "app": true}, "tags": ["business"]})
            .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn offer_req(member: &str, dep: &str) -> Value {
    json!({"member_id": member, "channel": "checkout", "max_offers": 10, "itinerary": {
        "origin": "PEK", "destination": "LHR", "departure": dep, "cabin": "business",
        "fare": {"amount": 21000, "currency": "CNY"}, "passengers": 1}})
}

/// What the clients saw acknowledged, and what was in flight when a
/// request failed (maybe applied).
#[derive(Default)]
struct Seen {
    points_acked: HashMap<String, u64>,
    points_unknown: HashMap<String, u64>,
    accepts_acked: HashMap<String, u32>,
    accepts_refused: u32,
    accepts_unknown: u32,
    erased_acked: Vec<String>,
    decisions: u32,
}

async fn state_of(client: &reqwest::Client, base: &str) -> Option<Value> {
    let r = client
        .get(format!("{base}/v1/admin/state"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until every replica reports the same applied sequence and digest,
/// at least `at_least`; returns them.
async fn converged(client: &reqwest::Client, bases: &[String], at_least: u64) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last.clear();
        for b in bases {
            last.push(state_of(client, b).await.unwrap_or(Value::Null));
        }
        let first = &last[0];
        if first["applied"].as_u64().unwrap_or(0) >= at_least
            && last
                .iter()
                .all(|s| s["applied"] == first["applied"] && s["digest"] == first["digest"])
        {
            return (
                first["applied"].as_u64().unwrap(),
                first["digest"].as_str().unwrap().to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let summary: Vec<String> = last
        .iter()
        .map(|s| {
            format!(
                "applied={} digest={} parts={}",
                s["applied"], s["digest"], s["parts"]
            )
        })
        .collect();
    panic!("replicas did not converge within 90 s: {summary:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_stream_agree_through_kill_dash_nine() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(tmp.path());
    let urls = nats.urls();
    let members_file = tmp.path().join("members.ndjson");
    write_members(&members_file);
    let data: Vec<PathBuf> = (0..4)
        .map(|i| tmp.path().join(format!("data{i}")))
        .collect();

    // Three replicas start at once on an empty stream: one initial population.
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let (urls, d, m) = (urls.clone(), data[i].clone(), members_file.clone());
            std::thread::spawn(move || start_replica(&urls, &d, &m))
        })
        .collect();
    let mut replicas: Vec<Replica> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (initial_seq, _) = converged(&client, &bases, 1).await;
    assert_eq!(
        initial_seq, 1,
        "one initial population record, not one per replica"
    );
    for b in &bases {
        let r: Value = client
            .get(format!("{b}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["members"], MEMBERS, "{b}: {r}");
        assert!(r["cluster"]["applied"].as_u64().unwrap() >= 1, "{r}");
    }

    let members: Vec<String> = (1..=MEMBERS).map(|i| format!("M{i:08}")).collect();
    // The last 20 members are erased during the load; the others earn points.
    let (earners, erased) = members.split_at(MEMBERS - 20);
    let flights: Vec<String> = (0..8)
        .map(|i| (chrono::Utc::now() + chrono::Duration::hours(30 + i)).to_rfc3339())
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_at = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for t in 0..12usize {
        let client = client.clone();
        let bases = bases.clone();
        let mine: Vec<String> = earners.iter().skip(t).step_by(12).cloned().collect();
        let to_erase: Vec<String> = erased.iter().skip(t).step_by(12).cloned().collect();
        let flights = flights.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut j: u64 = 0;
            while Instant::now() < stop_at {
                j += 1;
                let here = &bases[(t + j as usize) % 3];
                let there = &bases[(t + j as usize + 1) % 3];
                let m = &mine[j as usize % mine.len()];
                match j % 4 {
                    0 | 1 => {
                        let value = 1_000 + j * 12 + t as u64;
                        let r = client
                            .post(format!("{here}/v1/member-events"))
                            .json(&json!({"member_id": m, "type": "points_earned", "points": value}))
                            .send()
                            .await;
                        let mut s = seen.lock().unwrap();
                        match r.map(|r| r.status().as_u16()) {
                            Ok(202) => *s.points_acked.entry(m.clone()).or_default() += value,
                            Ok(503) | Err(_) => {
                                *s.points_unknown.entry(m.clone()).or_default() += value
                            }
                            Ok(other) => panic!("points_earned answered {other}"),
                        }
                    }
                    2 if j % 40 == 2 && !to_erase.is_empty() => {
                        let victim = &to_erase[(j / 40) as usize % to_erase.len()];
                        let r = client
                            .delete(format!("{here}/v1/members/{victim}"))
                            .send()
                            .await;
                        if let Ok(r) = r {
                            match r.status().as_u16() {
                                200 | 202 | 204 => seen.lock().unwrap().erased_acked.push(victim.clone()),
                                503 => {}
                                other => panic!("erase answered {other}"),
                            }
                        }
                    }
                    _ => {
                        // Decide on one replica, accept on another.
                        let flight = &flights[j as usize % flights.len()];
                        let Ok(r) = client
                            .post(format!("{here}/v1/offers"))
                            .json(&offer_req(m, flight))
                            .send()
                            .await
                        else {
                            continue;
                        };
                        if r.status() != 200 {
                            assert!(r.status() == 503, "checkout answered {}", r.status());
                            continue;
                        }
                        let Ok(body) = r.json::<Value>().await else { continue };
                        seen.lock().unwrap().decisions += 1;
                        let d = body["decision_id"].as_str().unwrap_or_default().to_string();
                        let offers = body["offers"].as_array().cloned().unwrap_or_default();
                        let Some(o) = offers.iter().find(|o| o["offer_id"] == "upg-first-intl-cash")
                        else {
                            continue;
                        };
                        let e = json!({"decision_id": d, "offer_id": o["offer_id"], "type": "accept",
                                       "revenue": o["price"], "token": o["token"]});
                        let r = client.post(format!("{there}/v1/events")).json(&e).send().await;
                        let mut s = seen.lock().unwrap();
                        match r.map(|r| r.status().as_u16()) {
                            Ok(202) => *s.accepts_acked.entry(flight.clone()).or_default() += 1,
                            Ok(409) => s.accepts_refused += 1,
                            Ok(503) | Err(_) => s.accepts_unknown += 1,
                            Ok(other) => panic!("accept on another replica answered {other}"),
                        }
                    }
                }
            }
        }));
    }

    // Mid-load: kill -9 one replica and one NATS server, then restart both.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = replicas[2].child.kill();
    let _ = replicas[2].child.wait();
    nats.kill9(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_node(0);
    replicas[2] = start_replica(&urls, &data[2], &members_file);
    let mut bases = bases;
    bases[2] = replicas[2].base.clone();
    for t in tasks {
        t.await.expect("load task");
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let acked_accepts: u32 = seen.accepts_acked.values().sum();
    eprintln!(
        "load: {} decisions; points: {} members with acknowledged writes, {} with a write of unknown outcome; accepts {} acknowledged, {} refused (409), {} unknown; {} erasures acknowledged",
        seen.decisions,
        seen.points_acked.len(),
        seen.points_unknown.len(),
        acked_accepts,
        seen.accepts_refused,
        seen.accepts_unknown,
        seen.erased_acked.len()
    );
    assert!(seen.points_acked.len() > 50, "too little load");
    assert!(acked_accepts > 0, "no accept was acknowledged");
    assert!(seen.accepts_refused > 0, "the cap never refused an accept");
    // Never an oversell: the 202s per flight, over all replicas.
    for (flight, n) in &seen.accepts_acked {
        assert!(
            *n <= CAP,
            "{n} accepts acknowledged for flight {flight} (cap {CAP})"
        );
    }

    let (applied, digest) = converged(&client, &bases, 2).await;
    eprintln!("converged at sequence {applied}, digest {digest}");
    for b in &bases {
        for m in earners {
            let v: Value = client
                .get(format!("{b}/v1/members/{m}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let initial: u64 = 10_000 + m[1..].parse::<u64>().unwrap();
            let got = v["points"].as_u64().unwrap();
            let acked = seen.points_acked.get(m).copied().unwrap_or(0);
            let unknown = seen.points_unknown.get(m).copied().unwrap_or(0);
            // Every acknowledged write is here; nothing beyond what was
            // sent (an unknown one is there at most once).
            assert!(
                got >= initial + acked && got <= initial + acked + unknown,
                "{b} {m}: points {got}, initial {initial}, acknowledged {acked}, unknown {unknown}"
            );
        }
        for m in &seen.erased_acked {
            let r = client
                .get(format!("{b}/v1/members/{m}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{b}: erased member {m} is back");
        }
    }

    // The replica's position and publish latency are exported. Reachability
    // is a look at the stream every second, which can miss once on a machine
    // this loaded (four such clusters run at once): ask again for a while.
    let wants = [
        "offer_engine_cluster_lag_records 0".to_string(),
        format!("offer_engine_cluster_applied_sequence {applied}"),
        "offer_engine_cluster_nats_reachable 1".to_string(),
        "offer_engine_cluster_publish_duration_seconds_count".to_string(),
        "offer_engine_cluster_records_applied_total".to_string(),
    ];
    let metrics_by = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_of(&client, &bases[0]).await;
        let missing: Vec<&String> = wants
            .iter()
            .filter(|w| !text.contains(w.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < metrics_by, "/metrics lacks {missing:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A fourth replica on an empty data dir reaches the same digest from a
    // shared snapshot (replicas share one every second here) and the tail.
    // Shared snapshots are made in the background after local ones: wait
    // until one beyond the initial population exists, or the fourth replica
    // would (rightly) replay the stream instead.
    let shared_by = Instant::now() + Duration::from_secs(60);
    loop {
        let mut newest = 0;
        for b in &bases {
            let r = readyz(&client, b).await;
            newest = newest.max(r["cluster"]["shared_snapshot"].as_u64().unwrap_or(0));
        }
        if newest > 1 {
            break;
        }
        assert!(Instant::now() < shared_by, "no shared snapshot within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fourth = start_replica(&urls, &data[3], &members_file);
    let all: Vec<String> = bases.iter().cloned().chain([fourth.base.clone()]).collect();
    let (applied4, digest4) = converged(&client, &all, applied).await;
    assert_eq!((applied4, &digest4), (applied, &digest));
    let r = readyz(&client, &fourth.base).await;
    let from = &r["cluster"]["restored_from"];
    assert_eq!(from["source"], "shared", "{r}");
    assert!(from["sequence"].as_u64().unwrap() > 1, "{r}");
    let text = metrics_of(&client, &fourth.base).await;
    assert!(
        text.contains("offer_engine_cluster_shared_snapshots_total{direction=\"download\"} 1"),
        "{text}"
    );
    // Experiment counters are a function of the stream too: a replica that
    // started from a snapshot (local or shared) counts from what it holds.
    let mut counters = Vec::new();
    for b in &all {
        let text = metrics_of(&client, b).await;
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("offer_engine_experiment_decisions_total{")
                    || l.starts_with("offer_engine_experiment_members_total{")
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        counters.push(lines);
    }
    assert!(!counters[0].is_empty(), "no experiment counters");
    for (b, c) in all.iter().zip(&counters) {
        assert_eq!(c, &counters[0], "{b}'s experiment counters");
    }
}

async fn readyz(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics_of(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The stream sequence of the newest local snapshot in a data dir.
fn newest_local_snapshot(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("cluster-snapshots"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("snap-")?
                        .strip_suffix(".bin")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Earns `points` for `member` through `base`; every write must be
/// acknowledged (no faults in this test).
async fn earn(client: &reqwest::Client, base: &str, member: &str, points: u64) {
    let r = client
        .post(format!("{base}/v1/member-events"))
        .json(&json!({"member_id": member, "type": "points_earned", "points": points}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "points_earned through {base}");
}

/// 20 acknowledged points writes spread over `bases`, added to `earned`.
async fn write_round(
    client: &reqwest::Client,
    bases: &[String],
    round: &mut u64,
    earned: &mut HashMap<String, u64>,
) {
    *round += 1;
    for i in 0..20u64 {
        let m = format!("M{:08}", 1 + (*round * 20 + i) % MEMBERS as u64);
        let base = &bases[(i as usize) % bases.len()];
        earn(client, base, &m, 100 + i).await;
        *earned.entry(m).or_default() += 100 + i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trimmed_stream_starts_fresh_and_stale_replicas_from_shared_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    // One server and one copy: trimming is what is tested, not failover.
    let nats = Nats::start_n(tmp.path(), 1);
    let urls = nats.urls();
    let members_file = tmp.path().join("members.ndjson");
    write_members(&members_file);
    let data: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("data{i}")))
        .collect();
    let env = [
        ("OFFER_ENGINE__CLUSTER__REPLICAS", "1"),
        ("OFFER_ENGINE__CLUSTER__SHARED_SNAPSHOTS_KEPT", "2"),
        ("OFFER_ENGINE__CLUSTER__TRIM_AFTER_SECS", "0"),
    ];
    let a = start_replica_with(&urls, &data[0], &members_file, &env);
    let mut b = start_replica_with(&urls, &data[1], &members_file, &env);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    converged(&client, &[a.base.clone(), b.base.clone()], 1).await;

    let mut earned: HashMap<String, u64> = HashMap::new();
    let mut round = 0u64;
    for _ in 0..3 {
        let bases = [a.base.clone(), b.base.clone()];
        write_round(&client, &bases, &mut round, &mut earned).await;
    }
    let (at_kill, _) = converged(&client, &[a.base.clone(), b.base.clone()], 2).await;
    // Let B write a local snapshot of what it holds, then kill it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = b.child.kill();
    let _ = b.child.wait();
    let stale = newest_local_snapshot(&data[1]);
    assert!(
        stale >= 1 && stale <= at_kill,
        "B's local snapshot {stale} (applied {at_kill})"
    );

    // Writes through A until the stream is trimmed past B's snapshot.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        write_round(
            &client,
            std::slice::from_ref(&a.base),
            &mut round,
            &mut earned,
        )
        .await;
        let r = readyz(&client, &a.base).await;
        let first = r["cluster"]["stream_first"].as_u64().unwrap_or(0);
        if first > stale + 1 {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "the stream was not trimmed past {stale} within 60 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let text = metrics_of(&client, &a.base).await;
    let gauge = text
        .lines()
        .find_map(|l| l.strip_prefix("offer_engine_cluster_stream_first_sequence "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(gauge.is_some_and(|g| g >= first), "{gauge:?} < {first}");

    // The newest shared snapshot does not decode (put here under the
    // sequence A is at): starting replicas fall back to the older one.
    let at = state_of(&client, &a.base).await.unwrap()["applied"]
        .as_u64()
        .unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(urls.as_str()).await.unwrap());
    let bucket = js.get_object_store("OFFERS_SNAPSHOTS").await.unwrap();
    bucket
        .put(
            format!("snap-{at:020}").as_str(),
            &mut &b"not a snapshot"[..],
        )
        .await
        .unwrap();

    // B restarts on its data dir: its snapshot predates the stream's first
    // record, so it must start from a shared one. C starts on an empty dir.
    let b = start_replica_with(&urls, &data[1], &members_file, &env);
    let c = start_replica_with(&urls, &data[2], &members_file, &env);
    let all = vec![a.base.clone(), b.base.clone(), c.base.clone()];
    let (applied, digest) = converged(&client, &all, first).await;
    eprintln!("trimmed stream: first {first}, B's stale snapshot {stale}, converged at {applied}, digest {digest}");
    for r in [&b, &c] {
        let ready = readyz(&client, &r.base).await;
        let from = &ready["cluster"]["restored_from"];
        assert_eq!(from["source"], "shared", "{ready}");
        let seq = from["sequence"].as_u64().unwrap();
        assert!(seq + 1 >= first && seq > stale && seq < at, "{ready}");
        let text = metrics_of(&client, &r.base).await;
        assert!(
            text.contains("offer_engine_cluster_shared_snapshots_total{direction=\"download\"} 1"),
            "{text}"
        );
    }
    // Every write is on every replica, once.
    for base in &all {
        for (m, p) in &earned {
            let v: Value = client
                .get(format!("{base}/v1/members/{m}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let initial: u64 = 10_000 + m[1..].parse::<u64>().unwrap();
            assert_eq!(v["points"].as_u64(), Some(initial + p), "{base} {m}");
        }
    }
    // Writes after the restarts reach every replica too.
    write_round(&client, &all, &mut round, &mut earned).await;
    let (after, digest_after) = converged(&client, &all, applied + 20).await;
    assert!(after >= applied + 20 && digest_after != digest);

    // A running replica that the trim overtakes (B, stopped with SIGSTOP
    // meanwhile) stops applying at the gap and refuses everything but
    // /healthz, /readyz and /metrics, rather than skip records.
    let pid = b.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        write_round(
            &client,
            std::slice::from_ref(&a.base),
            &mut round,
            &mut earned,
        )
        .await;
        let r = readyz(&client, &a.base).await;
        // Well past what B's consumer may already hold in its buffers
        // (a pull batch of 200 and the next one asked for at half).
        if r["cluster"]["stream_first"].as_u64().unwrap_or(0) > after + 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trim past {after} within 60 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    // A connection to B pooled before the stop is closed by B's keep-alive
    // timeout once it runs again: ask B on connections of their own.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let r = client
            .get(format!("{}/readyz", b.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default().to_string();
        if status == 503 && detail.contains("no longer holds") {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "B did not report the gap within 30 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("B after the trim overtook it: {detail}");
    let r = client
        .post(format!("{}/v1/member-events", b.base))
        .json(&json!({"member_id": "M00000001", "type": "points_earned", "points": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a write to a replica stopped at a gap");
    assert!(r.headers().contains_key("retry-after"));
    // Restarted, it starts from a shared snapshot and agrees again.
    drop(b);
    let b = start_replica_with(&urls, &data[1], &members_file, &env);
    let all = vec![a.base.clone(), b.base.clone(), c.base.clone()];
    converged(&client, &all, after + 1).await;
    assert_eq!(
        readyz(&client, &b.base).await["cluster"]["restored_from"]["source"],
        "shared"
    );
}

// ---------------------------------------------------------------------
// Faults: a replica that loses NATS (every server, or one of three).
// ---------------------------------------------------------------------

/// Seconds of staleness beyond which the fault tests' replicas are not
/// ready (short, so the test sees it).
const MAX_STALE_SECS: &str = "10";

/// [`start_replica`] with a short `max_stale_secs` and the default
/// interval between shared snapshots.
fn start_fault_replica(nats: &str, data_dir: &Path, members: &Path) -> Replica {
    start_replica_with(
        nats,
        data_dir,
        members,
        &[
            ("OFFER_ENGINE__CLUSTER__MAX_STALE_SECS", MAX_STALE_SECS),
            (
                "OFFER_ENGINE__CLUSTER__SHARED_SNAPSHOT_INTERVAL_SECS",
                "300",
            ),
        ],
    )
}

/// Three NATS servers and three replicas, caught up; the clients' view.
async fn cluster_of_three(tmp: &Path) -> (Nats, Vec<Replica>, Vec<String>, reqwest::Client) {
    let nats = Nats::start(tmp);
    let urls = nats.urls();
    let members_file = tmp.join("members.ndjson");
    write_members(&members_file);
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let (urls, d, m) = (
                urls.clone(),
                tmp.join(format!("data{i}")),
                members_file.clone(),
            );
            std::thread::spawn(move || start_fault_replica(&urls, &d, &m))
        })
        .collect();
    let replicas: Vec<Replica> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    converged(&client, &bases, 1).await;
    (nats, replicas, bases, client)
}

/// `GET /readyz`: its status and body.
async fn readyz_status(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One unlabelled series of `GET /metrics`.
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{base}: /metrics lacks {name}"))
}

/// A checkout on `base` for a flight `hours` from now, timed: the answer,
/// the decision id and its `upg-first-intl-cash` offer, if shown.
async fn timed_checkout(
    client: &reqwest::Client,
    base: &str,
    member: &str,
    hours: i64,
) -> (u16, Duration, String, Option<Value>) {
    let dep = (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339();
    let started = Instant::now();
    let r = client
        .post(format!("{base}/v1/offers"))
        .json(&offer_req(member, &dep))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let d = body["decision_id"].as_str().unwrap_or_default().to_string();
    let offer = body["offers"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["offer_id"] == "upg-first-intl-cash"))
        .cloned();
    (status, took, d, offer)
}

fn accept_of(decision: &str, offer: &Value) -> Value {
    json!({"decision_id": decision, "offer_id": offer["offer_id"], "type": "accept",
           "revenue": offer["price"], "token": offer["token"]})
}

async fn points_of(client: &reqwest::Client, base: &str, member: &str) -> u64 {
    let v: Value = client
        .get(format!("{base}/v1/members/{member}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["points"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_nats_server_lost_checkout_answers_writes_wait_and_all_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nats, _replicas, bases, client) = cluster_of_three(tmp.path()).await;

    // Before the outage: one decision per replica (known everywhere), to
    // be accepted with an Idempotency-Key while NATS is lost.
    let mut before = Vec::new();
    for (i, b) in bases.iter().enumerate() {
        for k in 0..20 {
            let m = format!("M{:08}", 1 + i * 20 + k);
            let (s, _, d, o) = timed_checkout(&client, b, &m, 40 + (i * 20 + k) as i64).await;
            assert_eq!(s, 200);
            if let Some(o) = o {
                before.push((i, d, o));
                break;
            }
        }
    }
    assert_eq!(before.len(), 3, "each replica showed the capped offer");
    let (seq_before, _) = converged(&client, &bases, 1).await;

    // Every NATS server dies.
    for i in 0..3 {
        nats.kill9(i);
    }
    let lost_at = Instant::now();

    // Checkout keeps answering on every replica, each within a bound.
    let mut slowest = Duration::ZERO;
    let mut during: Vec<(usize, String, Value)> = Vec::new();
    let mut checkouts = 0;
    for round in 0..6 {
        for (i, b) in bases.iter().enumerate() {
            let m = format!("M{:08}", 100 + round * 3 + i);
            let hours = 100 + (round * 3 + i) as i64;
            let (s, took, d, o) = timed_checkout(&client, b, &m, hours).await;
            assert_eq!(s, 200, "{b}: checkout without NATS answered {s}");
            assert!(
                took < Duration::from_millis(500),
                "{b}: checkout without NATS took {took:?}"
            );
            slowest = slowest.max(took);
            checkouts += 1;
            if let Some(o) = o {
                during.push((i, d, o));
            }
        }
    }
    assert!(!during.is_empty(), "no decision showed the capped offer");

    // Once every replica saw NATS gone (the first look at the stream that
    // fails), writes answer 503 with Retry-After at once: nothing of them
    // is sent, so nothing is applied later. (Just before, a write retries
    // within publish_timeout_ms; its answer is 503 too, maybe applied.)
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in &bases {
        while readyz_status(&client, b).await.1["cluster"]["nats_reachable"] != false {
            assert!(
                Instant::now() < deadline,
                "{b} still reports NATS reachable"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let victim = "M00000200";
    let points_before = points_of(&client, &bases[0], victim).await;
    let mut write_503 = 0;
    let mut slowest_503 = Duration::ZERO;
    for b in &bases {
        let started = Instant::now();
        let r = client
            .post(format!("{b}/v1/member-events"))
            .json(&json!({"member_id": victim, "type": "points_earned", "points": 777}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{b}: a write without NATS");
        // Answered at once when the replica has seen NATS gone; reported,
        // not asserted: a starved test machine stretches it.
        slowest_503 = slowest_503.max(started.elapsed());
        assert!(
            r.headers().get("retry-after").is_some(),
            "{b}: 503 without Retry-After"
        );
        write_503 += 1;
    }
    let (i0, d0, o0) = &before[0];
    let keyed = |b: &str| {
        client
            .post(format!("{b}/v1/events"))
            .header("idempotency-key", "fault-test-accept-1")
            .json(&accept_of(d0, o0))
    };
    let there = &bases[(i0 + 1) % 3];
    let r = keyed(there).send().await.unwrap();
    assert_eq!(r.status(), 503, "an accept without NATS");
    assert!(r.headers().get("retry-after").is_some());

    // /readyz: NATS unreachable, staleness growing, decisions waiting.
    // Read from /metrics (the same figures as /readyz's cluster block,
    // which a replica stale beyond max_stale_secs no longer shows).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut stale_first = Vec::new();
    let mut outboxed = 0;
    for b in &bases {
        assert_eq!(
            metric(&client, b, "offer_engine_cluster_nats_reachable").await,
            0.0,
            "{b}"
        );
        stale_first.push(metric(&client, b, "offer_engine_cluster_stale_seconds").await);
        outboxed += metric(&client, b, "offer_engine_cluster_outbox_length").await as u64;
    }
    assert!(
        outboxed >= checkouts as u64 / 2,
        "decisions wait in the outboxes: {outboxed}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (b, first) in bases.iter().zip(&stale_first) {
        let now = metric(&client, b, "offer_engine_cluster_stale_seconds").await;
        assert!(
            now >= first + 1.0 && now >= 2.0,
            "{b}: stale_seconds {first} then {now}"
        );
    }
    // Stale beyond max_stale_secs: not ready (a load balancer prefers a
    // fresh replica), yet checkout still answers.
    let max_stale: f64 = MAX_STALE_SECS.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, b) in bases.iter().enumerate() {
        loop {
            let (s, r) = readyz_status(&client, b).await;
            if s == 503 {
                let detail = r["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("stale"), "{b}: {r}");
                break;
            }
            let stale = r["cluster"]["stale_seconds"].as_f64().unwrap();
            assert!(stale <= max_stale + 0.5, "{b}: ready while {stale} s stale");
            assert!(Instant::now() < deadline, "{b}: still ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (s, took, _, _) = timed_checkout(&client, b, &format!("M{:08}", 150 + i), 150).await;
        assert_eq!(s, 200, "{b}: checkout on a stale replica");
        slowest = slowest.max(took);
    }
    let text = client
        .get(format!("{}/metrics", bases[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "offer_engine_cluster_nats_reachable 0",
        "offer_engine_cluster_stale_seconds",
        "offer_engine_cluster_outbox_length",
        "offer_engine_cluster_outbox_dropped_total 0",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}");
    }

    // NATS returns (same data dirs): outboxes drain, replicas catch up.
    let outage = lost_at.elapsed();
    for i in 0..3 {
        nats.start_node(i);
    }
    let back_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    'drain: loop {
        let mut empty = true;
        for b in &bases {
            let r = readyz_status(&client, b).await.1;
            empty &= r["cluster"]["outbox"] == 0 && r["cluster"]["nats_reachable"] == true;
        }
        if empty {
            break 'drain;
        }
        assert!(
            Instant::now() < deadline,
            "outboxes did not drain within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_after = back_at.elapsed();
    let (seq_after, digest) = converged(&client, &bases, seq_before + 1).await;
    let caught_up_after = back_at.elapsed();
    let mut drained_total = 0;
    for b in &bases {
        let text = client
            .get(format!("{b}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        drained_total += text
            .lines()
            .find_map(|l| l.strip_prefix("offer_engine_cluster_outbox_drained_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // Not every queued decision is counted as published from the
        // outbox: one whose first publish sat in the client's buffer is
        // sent on reconnect, stored, and leaves the outbox when it arrives
        // from the stream. None is dropped.
        assert!(
            text.contains("offer_engine_cluster_outbox_dropped_total 0"),
            "{b}: a decision was dropped"
        );
    }
    // Every decision made during the outage is known on every replica: an
    // accept sent to another replica than the one that decided is 202.
    for (i, d, o) in &during {
        let there = &bases[(i + 1) % 3];
        let r = client
            .post(format!("{there}/v1/events"))
            .json(&accept_of(d, o))
            .send()
            .await
            .unwrap();
        let s = r.status();
        assert_eq!(
            s,
            202,
            "accept of decision {d} (made on replica {i} without NATS) on another replica: {}",
            r.text().await.unwrap_or_default()
        );
    }
    // The refused writes were not applied; retried now, each applies once.
    assert_eq!(points_of(&client, &bases[0], victim).await, points_before);
    let r = client
        .post(format!("{}/v1/member-events", bases[1]))
        .json(&json!({"member_id": victim, "type": "points_earned", "points": 777}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = keyed(there).send().await.unwrap();
    assert_eq!(
        r.status(),
        202,
        "the keyed accept retried after NATS returned"
    );
    let first: Value = r.json().await.unwrap();
    let r = keyed(there).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        first,
        "the replay is the first answer"
    );
    // Once every replica applied it, the same accept without the key is
    // refused where the decision was made: it was applied. (Sent before
    // that replica applied the first, it would be applied a second time:
    // "already accepted" is checked on the request path, not at apply.)
    let (_, digest2) = converged(&client, &bases, seq_after + 1).await;
    let again = client
        .post(format!("{}/v1/events", bases[*i0]))
        .json(&accept_of(d0, o0))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "the accept was applied (once)");
    for b in &bases {
        assert_eq!(
            points_of(&client, b, victim).await,
            points_before + 777,
            "{b}"
        );
    }

    // Campaign decisions go the way of checkout's: remembered at apply on
    // every replica; an accept on the replica that ran the campaign, sent
    // as soon as the line is read, waits for its decisions to be applied.
    let r = client
        .post(format!("{}/v1/campaigns", bases[0]))
        .json(&json!({"channel": "email", "tiers": ["silver"], "offers": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["offers"].as_array().is_some_and(|o| !o.is_empty()))
        .collect();
    assert!(
        lines.len() >= 2,
        "campaign lines with offers: {}",
        lines.len()
    );
    let campaign_accept = |l: &Value| {
        let o = &l["offers"][0];
        let mut e = json!({"decision_id": l["decision_id"], "offer_id": o["offer_id"],
                           "type": "accept", "token": o["token"]});
        if o["price"].is_object() {
            e["revenue"] = o["price"].clone();
        }
        e
    };
    let r = client
        .post(format!("{}/v1/events", bases[0]))
        .json(&campaign_accept(&lines[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "campaign accept where it ran");
    let r = client
        .post(format!("{}/v1/events", bases[1]))
        .json(&campaign_accept(&lines[lines.len() - 1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "campaign accept on another replica");
    converged(&client, &bases, seq_after + 2).await;
    eprintln!(
        "all NATS lost for {:.1} s: {checkouts} checkouts all 200, slowest {:.0} ms; {write_503} writes 503 with Retry-After (slowest {:.0} ms); {outboxed} decisions queued; after restart outboxes drained in {:.1} s ({drained_total} published from them), digests equal after {:.1} s (seq {seq_before} -> {seq_after}, digest {digest} -> {digest2})",
        outage.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        slowest_503.as_secs_f64() * 1000.0,
        drained_after.as_secs_f64(),
        caught_up_after.as_secs_f64(),
    );
}

/// The stream's leader (a NATS server name, `n0`..`n2`), asked with the
/// NATS client.
async fn stream_leader(urls: &str) -> Option<usize> {
    let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
    let c = async_nats::ConnectOptions::new().connect(urls).await.ok()?;
    let js = async_nats::jetstream::new(c);
    let mut s = js.get_stream("OFFERS").await.ok()?;
    let info = s.info().await.ok()?;
    let leader = info.cluster.as_ref()?.leader.clone()?;
    leader.strip_prefix('n')?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_nats_server_of_three_is_not_seen_by_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nats, _replicas, bases, client) = cluster_of_three(tmp.path()).await;
    // The worst one to lose: the stream's leader (writes wait for a new one).
    let victim = stream_leader(&nats.urls())
        .await
        .expect("the stream has a leader");
    let stop_at = Instant::now() + Duration::from_secs(16);
    let kill_at = Instant::now() + Duration::from_secs(3);
    #[derive(Default)]
    struct Saw {
        writes: u32,
        write_errors: Vec<String>,
        slowest_write: Duration,
        checkouts: u32,
        checkout_errors: Vec<String>,
        slowest_checkout: Duration,
        acked: HashMap<String, u64>,
        unknown: HashMap<String, u64>,
    }
    let saw = Arc::new(Mutex::new(Saw::default()));
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let (client, bases, saw) = (client.clone(), bases.clone(), saw.clone());
        tasks.push(tokio::spawn(async move {
            let mut j = 0usize;
            while Instant::now() < stop_at {
                j += 1;
                let b = &bases[(t + j) % 3];
                let m = format!("M{:08}", 1 + (t * 40 + j % 40));
                let started = Instant::now();
                if j.is_multiple_of(2) {
                    let r = client
                        .post(format!("{b}/v1/member-events"))
                        .json(&json!({"member_id": m, "type": "points_earned", "points": 5}))
                        .send()
                        .await;
                    let took = started.elapsed();
                    let mut s = saw.lock().unwrap();
                    s.writes += 1;
                    s.slowest_write = s.slowest_write.max(took);
                    match r {
                        Ok(r) if r.status() == 202 => *s.acked.entry(m).or_default() += 5,
                        // Refused, maybe applied (the publish may be
                        // stored after the answer): retry-able, never silent.
                        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                            *s.unknown.entry(m).or_default() += 5;
                            s.write_errors.push(format!("503 after {took:?}"));
                        }
                        other => panic!(
                            "a write answered {:?} after {took:?}",
                            other.map(|r| r.status())
                        ),
                    }
                } else {
                    let (st, took, _, _) =
                        timed_checkout(&client, b, &m, 50 + (j % 50) as i64).await;
                    let mut s = saw.lock().unwrap();
                    s.checkouts += 1;
                    s.slowest_checkout = s.slowest_checkout.max(took);
                    if st != 200 {
                        s.checkout_errors.push(format!("{st} after {took:?}"));
                    }
                }
            }
        }));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    nats.kill9(victim);
    for t in tasks {
        t.await.expect("load task");
    }
    nats.start_node(victim);
    let saw = Arc::try_unwrap(saw).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "killed NATS server n{victim} (the stream leader): {} writes, {} not 202 {:?}, slowest {:.2} s; {} checkouts, {} not 200, slowest {:.0} ms",
        saw.writes,
        saw.write_errors.len(),
        saw.write_errors,
        saw.slowest_write.as_secs_f64(),
        saw.checkouts,
        saw.checkout_errors.len(),
        saw.slowest_checkout.as_secs_f64() * 1000.0
    );
    // Checkout never fails. Writes wait through the stream leader's
    // election (retrying within publish_timeout_ms); one that outlasts the
    // request timeout answers 503 with Retry-After, counted above.
    assert!(
        saw.checkout_errors.is_empty(),
        "checkouts failed: {:?}",
        saw.checkout_errors
    );
    assert!(
        saw.write_errors.len() * 100 <= saw.writes as usize,
        "more than 1% of writes refused: {:?}",
        saw.write_errors
    );
    assert!(saw.writes > 30 && saw.checkouts > 30, "too little load");
    let (_, _) = converged(&client, &bases, 2).await;
    let members: std::collections::HashSet<&String> =
        saw.acked.keys().chain(saw.unknown.keys()).collect();
    for b in &bases {
        for m in &members {
            let initial: u64 = 10_000 + m[1..].parse::<u64>().unwrap();
            let acked = saw.acked.get(*m).copied().unwrap_or(0);
            let unknown = saw.unknown.get(*m).copied().unwrap_or(0);
            let got = points_of(&client, b, m).await;
            assert!(
                got >= initial + acked && got <= initial + acked + unknown,
                "{b} {m}: points {got}, initial {initial}, acknowledged {acked}, unknown {unknown}"
            );
        }
    }
}
