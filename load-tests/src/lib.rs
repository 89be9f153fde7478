//! Load generator for offer-engine (issue 6): drives the real server over
//! loopback HTTP with realistic traffic, measures the saturation throughput
//! of `GET /healthz` (the stack's ceiling on this machine) and of
//! `POST /v1/offers` with the same generator in the same run, then latency
//! at a fixed arrival rate of half the offers saturation (open loop,
//! coordinated-omission corrected, HdrHistogram), and writes JSON and a
//! Markdown summary. `load-tests/run.sh` runs the whole record.

pub mod cluster;
pub mod engine;
pub mod report;
pub mod traffic;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use engine::{run_step, Mode, Step, StepResult, Target};
use traffic::{Kind, MemberDist, Mix, Traffic};

/// One population run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `http://127.0.0.1:PORT` (loopback only).
    pub url: String,
    /// Members loaded in the server (`M00000001..=M{population}`).
    pub population: u64,
    /// How member ids are drawn.
    pub dist: MemberDist,
    /// Connections for the saturation (closed-loop) steps.
    pub sat_connections: usize,
    /// Connections for the fixed-rate (open-loop) steps.
    pub rate_connections: usize,
    /// Seconds per measured step.
    pub step_secs: f64,
    /// Alternating saturation rounds (healthz, offers); the median of each is reported.
    pub rounds: usize,
    /// Longest wait for a quiet machine before each step.
    pub quiet_wait: Duration,
    /// Seconds of warm-up (closed loop on the offers route, not reported).
    pub warmup_secs: f64,
    /// Fraction of the offers saturation throughput for the fixed-rate steps.
    pub rate_fraction: f64,
    /// Traffic of the mixed fixed-rate step.
    pub mix: Mix,
    /// RNG seed.
    pub seed: u64,
    /// Server pid (for its CPU use and resident memory), if known.
    pub server_pid: Option<String>,
    /// The members NDJSON the server loaded (its size is the raw record bytes).
    pub members_file: Option<String>,
    /// Extra facts to keep with the results (set by run.sh: load time, ...).
    pub extra: Value,
}

/// Polls `GET /readyz` until it answers 200 or `timeout` passes.
pub async fn wait_ready(target: &Target, timeout: Duration) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + timeout;
    let req = traffic::Req {
        kind: Kind::Healthz,
        method: hyper::Method::GET,
        path: "/readyz".into(),
        body: bytes::Bytes::new(),
    };
    loop {
        if let Ok(mut c) = engine::Conn::open(target).await {
            if let Ok((200, _)) = c.send(target, &req).await {
                return Ok(());
            }
        }
        if std::time::Instant::now() >= until {
            anyhow::bail!("{} not ready after {:?}", target.host, timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `VmRSS` and `VmHWM` (KiB) of a process.
pub fn proc_memory_kib(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Waits (at most `max`) until processes other than the server and this
/// generator use less than 0.15 cores over half a second: on a shared
/// machine a compile next door would otherwise be measured too.
pub async fn wait_quiet(server_pid: Option<&str>, max: Duration) {
    let until = std::time::Instant::now() + max;
    let mut warned = false;
    loop {
        let (m0, s0, g0) = (
            engine::machine_cpu_seconds(),
            server_pid.and_then(engine::proc_cpu_seconds),
            engine::proc_cpu_seconds("self"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (m1, s1, g1) = (
            engine::machine_cpu_seconds(),
            server_pid.and_then(engine::proc_cpu_seconds),
            engine::proc_cpu_seconds("self"),
        );
        let other = match (m0, m1, g0, g1) {
            (Some(a), Some(b), Some(g0), Some(g1)) => {
                (b.0 - a.0) - (g1 - g0) - s1.zip(s0).map(|(x, y)| x - y).unwrap_or(0.0)
            }
            _ => return,
        } / 0.5;
        if other < 0.15 {
            return;
        }
        if std::time::Instant::now() >= until {
            eprintln!("  machine still busy ({other:.2} cores used by other processes); measuring anyway (see other_cpu_util)");
            return;
        }
        if !warned {
            eprintln!("  waiting for the machine to be quiet ({other:.2} cores used by other processes)...");
            warned = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn log_step(r: &StepResult) {
    let t = r.total();
    let h = &t.hist;
    eprintln!(
        "  {:<18} {:>10.0} req/s  errors {:>6.3}%  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>8.3} ms  gen cpu {:>4.0}%  server cpu {}  other cpu {}",
        r.step.name,
        r.throughput(),
        r.error_rate() * 100.0,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        r.generator_cpu_s / r.elapsed.as_secs_f64() * 100.0,
        r.server_cpu_s
            .map(|s| format!("{:.0}%", s / r.elapsed.as_secs_f64() * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        r.other_cpu_util()
            .map(|s| format!("{:.0}%", s * 100.0))
            .unwrap_or_else(|| "n/a".into()),
    );
}

/// Runs the whole sequence for one population and returns its JSON record.
pub async fn run_population(cfg: &RunConfig) -> anyhow::Result<Value> {
    let target = Target::from_url(&cfg.url)?;
    wait_ready(&target, Duration::from_secs(30)).await?;
    let traffic = Arc::new(Traffic::new(cfg.population, cfg.dist));
    let pid = cfg.server_pid.as_deref();
    let mem_before = pid.and_then(proc_memory_kib);
    let raw_bytes = cfg
        .members_file
        .as_ref()
        .and_then(|f| std::fs::metadata(f).ok())
        .map(|m| m.len());
    let secs = Duration::from_secs_f64(cfg.step_secs);
    let closed = |name: &str, kind: Kind, d: Duration| Step {
        name: name.into(),
        mode: Mode::Closed,
        connections: cfg.sat_connections,
        duration: d,
        mix: Mix::only(kind),
        drain: Duration::ZERO,
    };
    eprintln!(
        "population {}: {} members, {:?} ids",
        cfg.url, cfg.population, cfg.dist
    );
    let mut seed = cfg.seed;
    let mut next_seed = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed
    };
    wait_quiet(pid, cfg.quiet_wait).await;
    let warm = run_step(
        &target,
        traffic.clone(),
        closed(
            "warmup",
            Kind::Offers,
            Duration::from_secs_f64(cfg.warmup_secs),
        ),
        pid,
        next_seed(),
    )
    .await?;
    log_step(&warm);
    // Saturation: healthz and offers alternate for `rounds` rounds, so drift
    // on a shared machine hits both alike; the median round of each is kept.
    let mut h_rounds = Vec::new();
    let mut o_rounds = Vec::new();
    for round in 0..cfg.rounds.max(1) {
        wait_quiet(pid, cfg.quiet_wait).await;
        let h = run_step(
            &target,
            traffic.clone(),
            closed(
                &format!("healthz_saturation_{}", round + 1),
                Kind::Healthz,
                secs,
            ),
            pid,
            next_seed(),
        )
        .await?;
        log_step(&h);
        h_rounds.push(h);
        wait_quiet(pid, cfg.quiet_wait).await;
        let o = run_step(
            &target,
            traffic.clone(),
            closed(
                &format!("offers_saturation_{}", round + 1),
                Kind::Offers,
                secs,
            ),
            pid,
            next_seed(),
        )
        .await?;
        log_step(&o);
        o_rounds.push(o);
    }
    let median = |v: &mut Vec<StepResult>| {
        v.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
        v.remove(v.len() / 2)
    };
    let round_rps = |v: &[StepResult]| v.iter().map(|r| r.throughput()).collect::<Vec<_>>();
    let (h_all, o_all) = (round_rps(&h_rounds), round_rps(&o_rounds));
    let healthz = median(&mut h_rounds);
    let offers = median(&mut o_rounds);
    let rate = (offers.throughput() * cfg.rate_fraction).max(1.0);
    let open = |name: &str, mix: Mix| Step {
        name: name.into(),
        mode: Mode::Open { rate },
        connections: cfg.rate_connections,
        duration: secs,
        mix,
        drain: Duration::from_secs(2),
    };
    // The latency floor of this stack and machine at the same rate: a route
    // that does nothing, measured the same way (host scheduling, loopback,
    // actix, the generator's own pacing).
    wait_quiet(pid, cfg.quiet_wait).await;
    let healthz_rate = run_step(
        &target,
        traffic.clone(),
        open("healthz_fixed_rate", Mix::only(Kind::Healthz)),
        pid,
        next_seed(),
    )
    .await?;
    log_step(&healthz_rate);
    wait_quiet(pid, cfg.quiet_wait).await;
    let offers_rate = run_step(
        &target,
        traffic.clone(),
        open("offers_fixed_rate", Mix::only(Kind::Offers)),
        pid,
        next_seed(),
    )
    .await?;
    log_step(&offers_rate);
    wait_quiet(pid, cfg.quiet_wait).await;
    let mixed_rate = run_step(
        &target,
        traffic.clone(),
        open("mixed_fixed_rate", cfg.mix.clone()),
        pid,
        next_seed(),
    )
    .await?;
    log_step(&mixed_rate);
    for k in Kind::ALL {
        let s = &mixed_rate.kinds[k.index()];
        if !s.hist.is_empty() {
            eprintln!(
                "    {:<14} n={:<7} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  errors {}  expected rejections {}",
                k.name(),
                s.hist.len(),
                s.hist.value_at_quantile(0.5) as f64 / 1000.0,
                s.hist.value_at_quantile(0.99) as f64 / 1000.0,
                s.hist.value_at_quantile(0.999) as f64 / 1000.0,
                s.errors,
                s.expected_rejections
            );
        }
    }
    let mem_after = pid.and_then(proc_memory_kib);
    let ratio = offers.throughput() / healthz.throughput();
    let mem = mem_before.map(|(rss, hwm)| {
        let rss_b = rss * 1024;
        json!({
            "rss_bytes": rss_b,
            "peak_rss_bytes": hwm * 1024,
            "raw_bytes": raw_bytes,
            "rss_over_raw": raw_bytes.map(|r| rss_b as f64 / r as f64),
            "rss_bytes_per_member": rss_b as f64 / cfg.population as f64,
            "raw_bytes_per_member": raw_bytes.map(|r| r as f64 / cfg.population as f64),
            "rss_bytes_after_load_test": mem_after.map(|(r, _)| r * 1024),
        })
    });
    let lat = |r: &StepResult| {
        let h = &r.kinds[Kind::Offers.index()].hist;
        (
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
        )
    };
    let (p99, p999) = lat(&offers_rate);
    Ok(json!({
        "population": cfg.population,
        "member_ids": format!("{:?}", cfg.dist).to_lowercase(),
        "url": cfg.url,
        "server_pid": cfg.server_pid,
        "members_file": cfg.members_file,
        "memory": mem,
        "extra": cfg.extra,
        "healthz_saturation_rps": healthz.throughput(),
        "healthz_saturation_rounds_rps": h_all,
        "offers_saturation_rounds_rps": o_all,
        "offers_saturation_rps": offers.throughput(),
        "offers_over_healthz": ratio,
        "fixed_rate_rps": rate,
        "offers_fixed_rate_p99_ms": p99,
        "offers_fixed_rate_p99_9_ms": p999,
        "targets": report::targets(ratio, p99, p999, mem_before.map(|(rss, _)| rss * 1024), raw_bytes, cfg.population),
        "steps": [warm.to_json(), healthz.to_json(), offers.to_json(), healthz_rate.to_json(),
            offers_rate.to_json(), mixed_rate.to_json()],
        "saturation_rounds": h_rounds.iter().chain(o_rounds.iter()).map(|r| r.to_json()).collect::<Vec<_>>(),
    }))
}
