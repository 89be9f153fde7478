//! The load engine: a fixed set of HTTP/1.1 keep-alive connections, each
//! driven by one task, either open loop (requests scheduled at a fixed
//! arrival rate, latency measured from the *intended* send time, so a slow
//! server is charged for the requests it delayed: no coordinated omission)
//! or closed loop (each connection sends its next request when the last
//! answer arrives: the saturation throughput).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::traffic::{Kind, Mix, Req, Traffic};

/// Latency histograms are in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds")
}

/// Refuses any target but this machine's loopback: load is only ever sent to 127.0.0.0/8 or ::1.
pub fn loopback_addr(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must start with http:// (no TLS): {url}"))?;
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    let addr: SocketAddr = hostport.parse().map_err(|_| {
        anyhow::anyhow!(
            "--url needs a literal loopback IP and a port, e.g. http://127.0.0.1:8080 (got {url})"
        )
    })?;
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to send load to {addr}: only loopback (127.0.0.0/8, ::1) is allowed"
        );
    }
    Ok((addr, hostport))
}

/// Where to send.
#[derive(Clone, Debug)]
pub struct Target {
    /// Loopback socket address.
    pub addr: SocketAddr,
    /// Host header.
    pub host: String,
}

impl Target {
    /// From an `http://127.0.0.1:PORT` URL.
    pub fn from_url(url: &str) -> anyhow::Result<Target> {
        let (addr, host) = loopback_addr(url)?;
        Ok(Target { addr, host })
    }
}

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY).
    pub async fn open(t: &Target) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(t.addr).await?;
        s.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&mut self, t: &Target, r: &Req) -> anyhow::Result<(u16, Bytes)> {
        self.tx.ready().await?;
        let mut b = hyper::Request::builder()
            .method(r.method.clone())
            .uri(r.path.as_str())
            .header(hyper::header::HOST, t.host.as_str());
        if !r.body.is_empty() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(Full::new(r.body.clone()))?;
        let res = self.tx.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Open loop at a fixed rate, or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Requests scheduled every `1/rate` seconds whatever the answers.
    Open {
        /// Requests a second.
        rate: f64,
    },
    /// Each connection sends again as soon as it has its answer.
    Closed,
}

/// One measured step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name in the results.
    pub name: String,
    /// Open or closed loop.
    pub mode: Mode,
    /// Connections (one task each).
    pub connections: usize,
    /// Measured duration.
    pub duration: Duration,
    /// Traffic mix.
    pub mix: Mix,
    /// In open loop: how long after the end requests still scheduled may be
    /// sent; those not sent by then count as errors ("not sent").
    pub drain: Duration,
}

/// Outcome counts and latencies of one kind.
#[derive(Clone)]
pub struct KindStats {
    /// Latency (µs) of every request that got an answer (from intended send time in open loop).
    pub hist: Histogram<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// Answers the traffic expects sometimes (409/410 on outcome events:
    /// already accepted or sold out, expired).
    pub expected_rejections: u64,
    /// Other statuses and transport errors.
    pub errors: u64,
    /// Status → count for everything that was not 2xx.
    pub statuses: std::collections::BTreeMap<String, u64>,
}

impl KindStats {
    fn new() -> Self {
        KindStats {
            hist: new_histogram(),
            ok: 0,
            expected_rejections: 0,
            errors: 0,
            statuses: Default::default(),
        }
    }
    fn merge(&mut self, o: &KindStats) {
        self.hist.add(&o.hist).expect("same bounds");
        self.ok += o.ok;
        self.expected_rejections += o.expected_rejections;
        self.errors += o.errors;
        for (k, v) in &o.statuses {
            *self.statuses.entry(k.clone()).or_default() += v;
        }
    }
    fn answered(&self) -> u64 {
        self.ok + self.expected_rejections + self.errors
    }
}

/// Result of one step.
pub struct StepResult {
    /// The step.
    pub step: Step,
    /// Per kind, indexed by [`Kind::index`].
    pub kinds: Vec<KindStats>,
    /// Open loop: requests scheduled within the duration but never sent before the drain deadline.
    pub not_sent: u64,
    /// Wall time from start to the last answer.
    pub elapsed: Duration,
    /// CPU seconds the generator process used during the step.
    pub generator_cpu_s: f64,
    /// CPU seconds the server process used during the step (when its pid is known).
    pub server_cpu_s: Option<f64>,
    /// CPU seconds the whole machine was busy during the step, and stolen by the hypervisor.
    pub machine_cpu_s: Option<(f64, f64)>,
}

impl StepResult {
    /// All kinds together.
    pub fn total(&self) -> KindStats {
        let mut t = KindStats::new();
        for k in &self.kinds {
            t.merge(k);
        }
        t
    }
    /// Answered requests per second (2xx and expected rejections).
    pub fn throughput(&self) -> f64 {
        let t = self.total();
        (t.ok + t.expected_rejections) as f64 / self.elapsed.as_secs_f64()
    }
    /// Errors (bad statuses, transport errors, not sent) over everything scheduled or sent.
    pub fn error_rate(&self) -> f64 {
        let t = self.total();
        let bad = t.errors + self.not_sent;
        let all = t.answered() + self.not_sent;
        if all == 0 {
            1.0
        } else {
            bad as f64 / all as f64
        }
    }
    /// Cores' worth of CPU used during the step by anything but the server and
    /// the generator (other processes on a shared machine): above ~0.1 the
    /// step was disturbed.
    pub fn other_cpu_util(&self) -> Option<f64> {
        let (busy, _) = self.machine_cpu_s?;
        let srv = self.server_cpu_s?;
        Some(((busy - srv - self.generator_cpu_s) / self.elapsed.as_secs_f64()).max(0.0))
    }
    /// JSON for results.json.
    pub fn to_json(&self) -> Value {
        let total = self.total();
        let kinds: serde_json::Map<String, Value> = Kind::ALL
            .iter()
            .filter(|k| self.kinds[k.index()].answered() > 0)
            .map(|k| {
                (
                    k.name().to_string(),
                    kind_json(&self.kinds[k.index()], Some(k.route())),
                )
            })
            .collect();
        let secs = self.elapsed.as_secs_f64();
        json!({
            "name": self.step.name,
            "mode": match self.step.mode { Mode::Open { .. } => "open", Mode::Closed => "closed" },
            "offered_rate": match self.step.mode { Mode::Open { rate } => json!(rate), Mode::Closed => Value::Null },
            "connections": self.step.connections,
            "duration_s": self.step.duration.as_secs_f64(),
            "elapsed_s": secs,
            "mix": self.step.mix.describe(),
            "throughput_rps": self.throughput(),
            "error_rate": self.error_rate(),
            "not_sent": self.not_sent,
            "generator_cpu_util": self.generator_cpu_s / secs,
            "server_cpu_util": self.server_cpu_s.map(|s| s / secs),
            "other_cpu_util": self.other_cpu_util(),
            "steal_util": self.machine_cpu_s.map(|(_, st)| st / secs),
            "total": kind_json(&total, None),
            "kinds": kinds,
        })
    }
}

fn kind_json(k: &KindStats, route: Option<&str>) -> Value {
    let h = &k.hist;
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "route": route,
        "ok": k.ok,
        "expected_rejections": k.expected_rejections,
        "errors": k.errors,
        "statuses": k.statuses,
        "latency_ms": if h.is_empty() { Value::Null } else { json!({
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "p99_9": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()),
            "mean": h.mean() / 1000.0,
            "count": h.len(),
        })},
    })
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
pub fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Busy and steal CPU seconds of the whole machine, from `/proc/stat`.
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?;
    Some((busy / 100.0, v.get(7).copied().unwrap_or(0.0) / 100.0))
}

struct Shared {
    /// Where the connections go: connection `i` talks to `targets[i % len]`.
    targets: Vec<Target>,
    traffic: Arc<Traffic>,
    mix: Mix,
    mode: Mode,
    start: Instant,
    end: Instant,
    deadline: Instant,
    next_slot: AtomicU64,
    sent: AtomicU64,
    /// Parse only this fraction of offers responses (for outcome events).
    sample_offers: bool,
}

/// Waits until `t` precisely: the tokio timer has 1 ms granularity, so it
/// sleeps until 2 ms before and then yields until the instant (the
/// generator has its own core; spinning a little is the price of µs precision).
async fn pace(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        if t - now > Duration::from_micros(2500) {
            tokio::time::sleep_until((t - Duration::from_millis(2)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

async fn worker(
    sh: Arc<Shared>,
    target: usize,
    mut conn: Option<Conn>,
    seed: u64,
) -> Vec<KindStats> {
    let tgt = &sh.targets[target];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stats: Vec<KindStats> = Kind::ALL.iter().map(|_| KindStats::new()).collect();
    let period = match sh.mode {
        Mode::Open { rate } => Some(1.0 / rate),
        Mode::Closed => None,
    };
    loop {
        let intended = match period {
            Some(p) => {
                let i = sh.next_slot.fetch_add(1, Ordering::Relaxed);
                let t = sh.start + Duration::from_secs_f64(p * i as f64);
                if t >= sh.end || Instant::now() >= sh.deadline {
                    break;
                }
                pace(t).await;
                t
            }
            None => {
                let now = Instant::now();
                if now >= sh.end {
                    break;
                }
                now
            }
        };
        let req = sh.traffic.next(&sh.mix, &mut rng);
        let ks = &mut stats[req.kind.index()];
        sh.sent.fetch_add(1, Ordering::Relaxed);
        if conn.is_none() {
            match Conn::open(tgt).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    ks.errors += 1;
                    *ks.statuses.entry("connect_error".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        // A request unanswered for 30 s counts as a transport error (and its
        // connection is dropped): a stuck request must not hold the step open.
        let res = match tokio::time::timeout(
            Duration::from_secs(30),
            conn.as_mut().expect("connected").send(tgt, &req),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within 30 s")),
        };
        let us = (Instant::now() - intended).as_micros().max(1) as u64;
        match res {
            Ok((status, body)) => {
                ks.hist.saturating_record(us);
                if (200..300).contains(&status) {
                    ks.ok += 1;
                    if req.kind == Kind::Offers && sh.sample_offers && sh.traffic.pool.wants_more()
                    {
                        sh.traffic.pool.add_from_response(&body);
                    }
                } else if matches!(req.kind, Kind::Events | Kind::Accepts)
                    && (status == 409 || status == 410)
                {
                    ks.expected_rejections += 1;
                    *ks.statuses.entry(status.to_string()).or_default() += 1;
                } else {
                    ks.errors += 1;
                    *ks.statuses.entry(status.to_string()).or_default() += 1;
                }
            }
            Err(_) => {
                ks.errors += 1;
                *ks.statuses.entry("transport_error".into()).or_default() += 1;
                conn = None;
            }
        }
    }
    stats
}

/// Runs one step against `target`; `server_pid` (when given) lets it report the server's CPU use.
pub async fn run_step(
    target: &Target,
    traffic: Arc<Traffic>,
    step: Step,
    server_pid: Option<&str>,
    seed: u64,
) -> anyhow::Result<StepResult> {
    let pids: Vec<String> = server_pid.into_iter().map(String::from).collect();
    run_step_multi(std::slice::from_ref(target), traffic, step, &pids, seed).await
}

/// Sum of the CPU seconds of several processes (`None` if one cannot be read).
fn procs_cpu_seconds(pids: &[String]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| proc_cpu_seconds(p)).sum()
}

/// Runs one step with its connections spread evenly over `targets`
/// (connection `i` to `targets[i % len]`, so each server gets the same
/// share of a closed loop); `server_pids` are the server-side processes
/// whose CPU use is reported together as the server's.
pub async fn run_step_multi(
    targets: &[Target],
    traffic: Arc<Traffic>,
    step: Step,
    server_pids: &[String],
    seed: u64,
) -> anyhow::Result<StepResult> {
    anyhow::ensure!(!targets.is_empty(), "no target to send to");
    // Connect everything first: connection set-up is not part of any latency.
    let mut conns = Vec::with_capacity(step.connections);
    for i in 0..step.connections {
        conns.push(Conn::open(&targets[i % targets.len()]).await?);
    }
    let sample_offers = step
        .mix
        .weights
        .iter()
        .any(|(k, w)| matches!(k, Kind::Events | Kind::Accepts) && *w > 0);
    let start = Instant::now() + Duration::from_millis(20);
    let sh = Arc::new(Shared {
        targets: targets.to_vec(),
        traffic,
        mix: step.mix.clone(),
        mode: step.mode,
        start,
        end: start + step.duration,
        deadline: start + step.duration + step.drain,
        next_slot: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        sample_offers,
    });
    let cpu0 = proc_cpu_seconds("self");
    let mach0 = machine_cpu_seconds();
    let srv0 = procs_cpu_seconds(server_pids);
    let mut handles = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        handles.push(tokio::spawn(worker(
            sh.clone(),
            i % targets.len(),
            Some(c),
            seed.wrapping_add(i as u64 * 0x9E37_79B9),
        )));
    }
    let mut kinds: Vec<KindStats> = Kind::ALL.iter().map(|_| KindStats::new()).collect();
    for h in handles {
        let s = h.await?;
        for (a, b) in kinds.iter_mut().zip(s.iter()) {
            a.merge(b);
        }
    }
    let elapsed = Instant::now().saturating_duration_since(start);
    let not_sent = match step.mode {
        Mode::Open { rate } => {
            let scheduled = (rate * step.duration.as_secs_f64()).floor() as u64;
            scheduled.saturating_sub(sh.sent.load(Ordering::Relaxed))
        }
        Mode::Closed => 0,
    };
    // In open loop the step lasts its duration (the schedule), unless draining ran past it.
    let elapsed = match step.mode {
        Mode::Open { .. } => elapsed.max(step.duration),
        Mode::Closed => elapsed,
    };
    Ok(StepResult {
        generator_cpu_s: match (cpu0, proc_cpu_seconds("self")) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        },
        server_cpu_s: match (srv0, procs_cpu_seconds(server_pids)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        machine_cpu_s: match (mach0, machine_cpu_seconds()) {
            (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        },
        step,
        kinds,
        not_sent,
        elapsed,
    })
}
