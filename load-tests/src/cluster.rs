//! The cluster benchmark (`offer-engine-load cluster`, driven by
//! `load-tests/cluster.sh bench`): the same generator against one server on
//! the embedded local log and against replicas of one JetStream stream, in
//! the same run, step after step, so drift on a shared machine hits both.
//!
//! It measures checkout saturation with one, two and three replicas (the
//! connections spread evenly over them), durable writes a second (member
//! events, closed loop), replication lag under that write load, and the
//! latency of checkout and of an accept at a fixed moderate rate. It is a
//! record, not a test: nothing here passes or fails on a figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::engine::{new_histogram, run_step_multi, Conn, Mode, Step, StepResult, Target};
use crate::traffic::{Issued, Kind, MemberDist, Mix, Req, Traffic};
use crate::{wait_quiet, wait_ready};

/// What to measure and where.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The single server on the local log (the baseline).
    pub local: String,
    /// Its pid (CPU use).
    pub local_pid: Option<String>,
    /// The replicas' URLs, in order (1, 2 and 3 replicas use a prefix).
    pub replicas: Vec<String>,
    /// Pids of every server-side process of the cluster (replicas and
    /// nats-servers): their CPU use is reported together.
    pub cluster_pids: Vec<String>,
    /// Members loaded (`M00000001..=M{population}`).
    pub population: u64,
    /// Seconds per measured step.
    pub step_secs: f64,
    /// Rounds of the checkout saturation steps (median kept).
    pub rounds: usize,
    /// Connections of the closed-loop steps.
    pub connections: usize,
    /// Fixed rate of the checkout latency steps (requests a second).
    pub checkout_rate: f64,
    /// Fixed rate of the accept latency steps.
    pub accept_rate: f64,
    /// Longest wait for a quiet machine before each step.
    pub quiet_wait: Duration,
    /// Seed.
    pub seed: u64,
    /// Facts kept with the record (machine, pinning, versions).
    pub extra: Value,
}

fn loadavg() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<f64> = s
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| json!(v))
        })
        .unwrap_or(Value::Null)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": ms(h.value_at_quantile(0.5)),
        "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "count": h.len(),
    })
}

fn log(r: &StepResult) {
    let t = r.total();
    eprintln!(
        "  {:<28} {:>9.0} req/s  errors {:>6.3}%  p50 {:>8.3} ms  p99 {:>8.3} ms  server cpu {}  other cpu {}",
        r.step.name,
        r.throughput(),
        r.error_rate() * 100.0,
        ms(t.hist.value_at_quantile(0.5)),
        ms(t.hist.value_at_quantile(0.99)),
        r.server_cpu_s
            .map(|s| format!("{:.0}%", s / r.elapsed.as_secs_f64() * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        r.other_cpu_util()
            .map(|s| format!("{:.0}%", s * 100.0))
            .unwrap_or_else(|| "n/a".into()),
    );
}

/// The `cluster` section of `GET /readyz`: (applied, lag).
async fn readyz_cluster(c: &mut Conn, t: &Target) -> anyhow::Result<(u64, u64)> {
    let req = Req {
        kind: Kind::Healthz,
        method: hyper::Method::GET,
        path: "/readyz".into(),
        body: bytes::Bytes::new(),
    };
    let (status, body) = c.send(t, &req).await?;
    anyhow::ensure!(status == 200, "/readyz answered {status}");
    let v: Value = serde_json::from_slice(&body)?;
    let applied = v["cluster"]["applied"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("/readyz has no cluster.applied: not in cluster mode?"))?;
    Ok((applied, v["cluster"]["lag"].as_u64().unwrap_or(0)))
}

/// Replication lag as a client meets it: a member event acknowledged by
/// replica A, then A's applied sequence read at once (at least the event's
/// own sequence: A answers only after applying it), then replica B's
/// `/readyz` polled without pause until it has applied that far. The time
/// from A's answer to B's is an upper bound of the lag of that write (A may
/// have applied a few later records before its `/readyz` answered).
struct LagProbe {
    hist: Histogram<u64>,
    timeouts: u64,
    write_errors: u64,
}

async fn lag_probe(
    a: Target,
    b: Target,
    traffic: Arc<Traffic>,
    until: Instant,
    seed: u64,
) -> anyhow::Result<LagProbe> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut ca = Conn::open(&a).await?;
    let mut cb = Conn::open(&b).await?;
    let mut p = LagProbe {
        hist: new_histogram(),
        timeouts: 0,
        write_errors: 0,
    };
    while Instant::now() < until {
        let req = traffic.member_event(&mut rng);
        match ca.send(&a, &req).await {
            Ok((s, _)) if (200..300).contains(&s) => {}
            _ => {
                p.write_errors += 1;
                ca = Conn::open(&a).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let acked = Instant::now();
        let (target_seq, _) = readyz_cluster(&mut ca, &a).await?;
        let give_up = acked + Duration::from_secs(10);
        loop {
            let (applied_b, _) = readyz_cluster(&mut cb, &b).await?;
            if applied_b >= target_seq {
                p.hist
                    .saturating_record((acked.elapsed().as_micros() as u64).max(1));
                break;
            }
            if Instant::now() >= give_up {
                p.timeouts += 1;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(p)
}

/// Every replica's `/readyz` lag (records behind the stream's end as last
/// seen), sampled every 100 ms.
async fn lag_sampler(targets: Vec<Target>, until: Instant) -> anyhow::Result<Histogram<u64>> {
    let mut conns = Vec::new();
    for t in &targets {
        conns.push(Conn::open(t).await?);
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)?;
    while Instant::now() < until {
        for (c, t) in conns.iter_mut().zip(&targets) {
            let (_, lag) = readyz_cluster(c, t).await?;
            // Zero lag is recorded as 1 (HdrHistogram's lowest value): the
            // report reads "≤ 1 record".
            h.saturating_record(lag.max(1));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(h)
}

/// Fills the traffic's offer pool with `n` priced offers, one per decision,
/// from checkout answers of `t`.
async fn fill_accepts(t: &Target, traffic: &Traffic, n: usize, seed: u64) -> anyhow::Result<()> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut c = Conn::open(t).await?;
    let mut tries = 0usize;
    while traffic.pool.len() < n {
        tries += 1;
        anyhow::ensure!(
            tries <= n * 20,
            "only {} priced offers in {} checkout answers",
            traffic.pool.len(),
            tries
        );
        let (s, body) = c.send(t, &traffic.offers(&mut rng)).await?;
        if s != 200 {
            continue;
        }
        let v: Value = serde_json::from_slice(&body)?;
        let (Some(d), Some(offers)) = (v["decision_id"].as_str(), v["offers"].as_array()) else {
            continue;
        };
        if let Some(o) = offers.iter().find(|o| o["price"]["amount"].is_number()) {
            traffic.pool.push(Issued {
                decision_id: d.to_string(),
                offer_id: o["offer_id"].as_str().unwrap_or_default().to_string(),
                price: Some(o["price"]["amount"].clone()),
                token: o["token"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(())
}

struct Runner<'a> {
    cfg: &'a ClusterConfig,
    traffic: Arc<Traffic>,
    seed: u64,
    steps: Vec<Value>,
    /// Skips the quiet wait of the next step (its probes already run).
    no_quiet_wait: bool,
}

impl Runner<'_> {
    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed
    }

    async fn step(
        &mut self,
        name: &str,
        targets: &[Target],
        pids: &[String],
        mode: Mode,
        kind: Kind,
        secs: f64,
    ) -> anyhow::Result<StepResult> {
        if !std::mem::take(&mut self.no_quiet_wait) {
            wait_quiet(None, self.cfg.quiet_wait).await;
        }
        let load_before = loadavg();
        let step = Step {
            name: name.into(),
            mode,
            connections: match mode {
                Mode::Closed => self.cfg.connections,
                // An open-loop step at a moderate rate needs few connections;
                // 16 keep a stall from delaying the schedule.
                Mode::Open { .. } => 16,
            },
            duration: Duration::from_secs_f64(secs),
            mix: Mix::only(kind),
            drain: Duration::from_secs(2),
        };
        let seed = self.next_seed();
        let r = run_step_multi(targets, self.traffic.clone(), step, pids, seed).await?;
        log(&r);
        let mut j = r.to_json();
        j["targets"] = json!(targets.len());
        j["loadavg_before"] = load_before;
        j["loadavg_after"] = loadavg();
        self.steps.push(j);
        Ok(r)
    }
}

fn lat(r: &StepResult, kind: Kind) -> (f64, f64) {
    let h = &r.kinds[kind.index()].hist;
    if h.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark and returns its record.
pub async fn run_cluster(cfg: &ClusterConfig) -> anyhow::Result<Value> {
    anyhow::ensure!(
        !cfg.replicas.is_empty(),
        "--replicas needs at least one URL"
    );
    let local = Target::from_url(&cfg.local)?;
    let reps: Vec<Target> = cfg
        .replicas
        .iter()
        .map(|u| Target::from_url(u))
        .collect::<anyhow::Result<_>>()?;
    wait_ready(&local, Duration::from_secs(60)).await?;
    for r in &reps {
        wait_ready(r, Duration::from_secs(600)).await?;
    }
    let local_pids: Vec<String> = cfg.local_pid.iter().cloned().collect();
    let cl_pids = cfg.cluster_pids.clone();
    let mut run = Runner {
        cfg,
        traffic: Arc::new(Traffic::new(cfg.population, MemberDist::Uniform)),
        seed: cfg.seed,
        steps: Vec::new(),
        no_quiet_wait: false,
    };
    let secs = cfg.step_secs;
    let started = chrono::Utc::now();
    let load_start = loadavg();

    eprintln!("warm-up (not reported)");
    run.step(
        "warmup_local",
        std::slice::from_ref(&local),
        &local_pids,
        Mode::Closed,
        Kind::Offers,
        3.0,
    )
    .await?;
    run.step(
        "warmup_cluster",
        &reps,
        &cl_pids,
        Mode::Closed,
        Kind::Offers,
        3.0,
    )
    .await?;

    eprintln!(
        "checkout saturation: local log, then 1..={} replicas, {} rounds",
        reps.len(),
        cfg.rounds
    );
    let mut sat: Vec<Vec<f64>> = vec![Vec::new(); reps.len() + 1];
    for round in 1..=cfg.rounds.max(1) {
        let r = run
            .step(
                &format!("checkout_sat_local_{round}"),
                std::slice::from_ref(&local),
                &local_pids,
                Mode::Closed,
                Kind::Offers,
                secs,
            )
            .await?;
        sat[0].push(r.throughput());
        for k in 1..=reps.len() {
            let r = run
                .step(
                    &format!("checkout_sat_{k}_replicas_{round}"),
                    &reps[..k],
                    &cl_pids,
                    Mode::Closed,
                    Kind::Offers,
                    secs,
                )
                .await?;
            sat[k].push(r.throughput());
        }
    }
    let sat_median: Vec<f64> = sat.iter().map(|v| median(v.clone())).collect();

    eprintln!(
        "durable writes (member events, closed loop, {} connections)",
        cfg.connections
    );
    let w_local = run
        .step(
            "writes_sat_local",
            std::slice::from_ref(&local),
            &local_pids,
            Mode::Closed,
            Kind::MemberEvents,
            secs,
        )
        .await?;
    let w_one = run
        .step(
            "writes_sat_1_replica",
            &reps[..1],
            &cl_pids,
            Mode::Closed,
            Kind::MemberEvents,
            secs,
        )
        .await?;
    // The lag probe writes on the first replica and reads the last, the
    // sampler reads every replica, while the closed loop writes on all.
    let b = reps.last().cloned().unwrap_or_else(|| reps[0].clone());
    wait_quiet(None, cfg.quiet_wait).await;
    run.no_quiet_wait = true;
    let until = Instant::now() + Duration::from_secs_f64(secs) + Duration::from_millis(20);
    let probe = tokio::spawn(lag_probe(
        reps[0].clone(),
        b.clone(),
        run.traffic.clone(),
        until,
        99,
    ));
    let sampler = tokio::spawn(lag_sampler(reps.clone(), until));
    let w_all = run
        .step(
            &format!("writes_sat_{}_replicas", reps.len()),
            &reps,
            &cl_pids,
            Mode::Closed,
            Kind::MemberEvents,
            secs,
        )
        .await?;
    let probe_loaded = probe.await??;
    let sampled_loaded = sampler.await??;
    eprintln!(
        "  lag under write load: ack on A to applied on B p50 {:.3} ms p99 {:.3} ms ({} probes, {} timeouts); /readyz lag p50 {} p99 {} records",
        ms(probe_loaded.hist.value_at_quantile(0.5)),
        ms(probe_loaded.hist.value_at_quantile(0.99)),
        probe_loaded.hist.len(),
        probe_loaded.timeouts,
        sampled_loaded.value_at_quantile(0.5),
        sampled_loaded.value_at_quantile(0.99),
    );
    // The same probe on an idle cluster: the floor of the figure above.
    let until = Instant::now() + Duration::from_secs_f64(secs.min(5.0));
    let probe_idle = lag_probe(reps[0].clone(), b, run.traffic.clone(), until, 98).await?;
    eprintln!(
        "  lag idle: p50 {:.3} ms p99 {:.3} ms ({} probes)",
        ms(probe_idle.hist.value_at_quantile(0.5)),
        ms(probe_idle.hist.value_at_quantile(0.99)),
        probe_idle.hist.len()
    );

    eprintln!(
        "added latency at a fixed rate: checkout {} req/s, accept {} req/s",
        cfg.checkout_rate, cfg.accept_rate
    );
    let c_local = run
        .step(
            "checkout_rate_local",
            std::slice::from_ref(&local),
            &local_pids,
            Mode::Open {
                rate: cfg.checkout_rate,
            },
            Kind::Offers,
            secs,
        )
        .await?;
    let c_cluster = run
        .step(
            "checkout_rate_replica",
            &reps[..1],
            &cl_pids,
            Mode::Open {
                rate: cfg.checkout_rate,
            },
            Kind::Offers,
            secs,
        )
        .await?;
    let need = (cfg.accept_rate * secs).ceil() as usize + 16;
    fill_accepts(&local, &run.traffic, need, 11).await?;
    let a_local = run
        .step(
            "accept_rate_local",
            std::slice::from_ref(&local),
            &local_pids,
            Mode::Open {
                rate: cfg.accept_rate,
            },
            Kind::Accepts,
            secs,
        )
        .await?;
    // Whatever the local step left in the pool was decided by the local server.
    while !run.traffic.pool.is_empty() {
        let _ = run.traffic.accept();
    }
    // Decisions from the last replica, accepts sent to the first: the
    // attribution across replicas a load balancer makes ordinary.
    fill_accepts(reps.last().unwrap_or(&reps[0]), &run.traffic, need, 12).await?;
    let a_cluster = run
        .step(
            "accept_rate_replica",
            &reps[..1],
            &cl_pids,
            Mode::Open {
                rate: cfg.accept_rate,
            },
            Kind::Accepts,
            secs,
        )
        .await?;

    let (cl50, cl99) = lat(&c_local, Kind::Offers);
    let (cc50, cc99) = lat(&c_cluster, Kind::Offers);
    let (al50, al99) = lat(&a_local, Kind::Accepts);
    let (ac50, ac99) = lat(&a_cluster, Kind::Accepts);
    Ok(json!({
        "started": started.to_rfc3339(),
        "finished": chrono::Utc::now().to_rfc3339(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "population": cfg.population,
        "local": cfg.local,
        "replicas": cfg.replicas,
        "step_secs": secs,
        "rounds": cfg.rounds,
        "connections": cfg.connections,
        "extra": cfg.extra,
        "checkout_saturation_rps": {
            "local": sat_median[0],
            "replicas": sat_median[1..].to_vec(),
            "rounds_local": sat[0],
            "rounds_replicas": sat[1..].to_vec(),
        },
        "durable_writes_rps": {
            "local": w_local.throughput(),
            "one_replica": w_one.throughput(),
            "all_replicas": w_all.throughput(),
            "error_rate_local": w_local.error_rate(),
            "error_rate_one_replica": w_one.error_rate(),
            "error_rate_all_replicas": w_all.error_rate(),
        },
        "replication_lag": {
            "under_write_load_ack_to_applied_ms": hist_json(&probe_loaded.hist),
            "under_write_load_timeouts": probe_loaded.timeouts,
            "under_write_load_probe_write_errors": probe_loaded.write_errors,
            "under_write_load_readyz_lag_records": {
                "p50": sampled_loaded.value_at_quantile(0.5),
                "p99": sampled_loaded.value_at_quantile(0.99),
                "max": sampled_loaded.max(),
                "samples": sampled_loaded.len(),
            },
            "idle_ack_to_applied_ms": hist_json(&probe_idle.hist),
        },
        "added_latency_ms": {
            "checkout_rate_rps": cfg.checkout_rate,
            "checkout_local": {"p50": cl50, "p99": cl99},
            "checkout_replica": {"p50": cc50, "p99": cc99},
            "checkout_added": {"p50": cc50 - cl50, "p99": cc99 - cl99},
            "accept_rate_rps": cfg.accept_rate,
            "accept_local": {"p50": al50, "p99": al99},
            "accept_replica": {"p50": ac50, "p99": ac99},
            "accept_added": {"p50": ac50 - al50, "p99": ac99 - al99},
        },
        "steps": run.steps,
    }))
}

/// The Markdown summary of a record made by [`run_cluster`].
pub fn summary_md(v: &Value, command: &str) -> String {
    let f = |x: &Value| {
        x.as_f64()
            .map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let f3 = |x: &Value| {
        x.as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let sat = &v["checkout_saturation_rps"];
    let w = &v["durable_writes_rps"];
    let lag = &v["replication_lag"];
    let a = &v["added_latency_ms"];
    let mut s = String::new();
    s.push_str("# Cluster benchmark\n\n");
    s.push_str(&format!(
        "Command: `{command}`. Started {}, finished {}. Load average (1/5/15 min) at start {}, at end {}. Members: {}. Steps of {} s; {} connections in closed loops.\n\n",
        v["started"].as_str().unwrap_or("?"),
        v["finished"].as_str().unwrap_or("?"),
        v["loadavg_start"],
        v["loadavg_end"],
        v["population"],
        v["step_secs"],
        v["connections"],
    ));
    if let Some(m) = v["extra"].as_object() {
        for (k, x) in m {
            s.push_str(&format!(
                "- {k}: {}\n",
                x.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| x.to_string())
            ));
        }
        s.push('\n');
    }
    s.push_str("## Checkout saturation (POST /v1/offers, closed loop; median of rounds)\n\n| server | req/s | rounds |\n|---|---|---|\n");
    s.push_str(&format!(
        "| one server, local log | {} | {} |\n",
        f(&sat["local"]),
        sat["rounds_local"]
    ));
    if let (Some(r), Some(rr)) = (
        sat["replicas"].as_array(),
        sat["rounds_replicas"].as_array(),
    ) {
        for (i, (x, rounds)) in r.iter().zip(rr).enumerate() {
            s.push_str(&format!(
                "| cluster, load on {} replica(s) | {} | {} |\n",
                i + 1,
                f(x),
                rounds
            ));
        }
    }
    s.push_str("\n## Durable writes (POST /v1/member-events, closed loop)\n\n| server | writes/s | error rate |\n|---|---|---|\n");
    s.push_str(&format!(
        "| one server, local log | {} | {} |\n",
        f(&w["local"]),
        f3(&w["error_rate_local"])
    ));
    s.push_str(&format!(
        "| cluster, load on 1 replica | {} | {} |\n",
        f(&w["one_replica"]),
        f3(&w["error_rate_one_replica"])
    ));
    s.push_str(&format!(
        "| cluster, load on all replicas | {} | {} |\n",
        f(&w["all_replicas"]),
        f3(&w["error_rate_all_replicas"])
    ));
    let pl = &lag["under_write_load_ack_to_applied_ms"];
    let pi = &lag["idle_ack_to_applied_ms"];
    let rl = &lag["under_write_load_readyz_lag_records"];
    s.push_str("\n## Replication lag (write acknowledged by replica 1 → applied by the last replica)\n\n| condition | p50 ms | p90 ms | p99 ms | max ms | probes |\n|---|---|---|---|---|---|\n");
    s.push_str(&format!(
        "| during the all-replica write load | {} | {} | {} | {} | {} |\n",
        f3(&pl["p50"]),
        f3(&pl["p90"]),
        f3(&pl["p99"]),
        f3(&pl["max"]),
        pl["count"]
    ));
    s.push_str(&format!(
        "| idle cluster | {} | {} | {} | {} | {} |\n",
        f3(&pi["p50"]),
        f3(&pi["p90"]),
        f3(&pi["p99"]),
        f3(&pi["max"]),
        pi["count"]
    ));
    s.push_str(&format!(
        "\nProbe timeouts (10 s) under load: {}. `/readyz` `cluster.lag` sampled every 100 ms on every replica under the write load: p50 {} p99 {} max {} records ({} samples; 1 means 0 or 1).\n",
        lag["under_write_load_timeouts"], rl["p50"], rl["p99"], rl["max"], rl["samples"]
    ));
    s.push_str(&format!(
        "\n## Added latency at a fixed rate (open loop, from the intended send time)\n\n| route | rate | local log p50 / p99 ms | cluster p50 / p99 ms | added p50 / p99 ms |\n|---|---|---|---|---|\n| checkout `POST /v1/offers` | {} req/s | {} / {} | {} / {} | {} / {} |\n| accept `POST /v1/events` | {} req/s | {} / {} | {} / {} | {} / {} |\n",
        f(&a["checkout_rate_rps"]),
        f3(&a["checkout_local"]["p50"]), f3(&a["checkout_local"]["p99"]),
        f3(&a["checkout_replica"]["p50"]), f3(&a["checkout_replica"]["p99"]),
        f3(&a["checkout_added"]["p50"]), f3(&a["checkout_added"]["p99"]),
        f(&a["accept_rate_rps"]),
        f3(&a["accept_local"]["p50"]), f3(&a["accept_local"]["p99"]),
        f3(&a["accept_replica"]["p50"]), f3(&a["accept_replica"]["p99"]),
        f3(&a["accept_added"]["p50"]), f3(&a["accept_added"]["p99"]),
    ));
    s.push_str("\n## Steps\n\n| step | targets | req/s | error rate | p50 ms | p99 ms | server cpu | other cpu | load avg after |\n|---|---|---|---|---|---|---|---|---|\n");
    if let Some(steps) = v["steps"].as_array() {
        for st in steps {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                st["name"].as_str().unwrap_or("?"),
                st["targets"],
                f(&st["throughput_rps"]),
                f3(&st["error_rate"]),
                f3(&st["total"]["latency_ms"]["p50"]),
                f3(&st["total"]["latency_ms"]["p99"]),
                f3(&st["server_cpu_util"]),
                f3(&st["other_cpu_util"]),
                st["loadavg_after"],
            ));
        }
    }
    s
}
