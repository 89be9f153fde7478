//! The dashboard and the alert rules against a real Prometheus.
//!
//! Starts the service in-process (port 0, small synthetic population, a temp
//! data dir), starts the `prometheus` binary scraping its `/metrics` every
//! second, drives ~15 s of realistic traffic (checkout and other channels,
//! cold starts, impressions, clicks, accepts with the quoted price as revenue,
//! declines, member events, 4xx of every kind), then runs every PromQL
//! expression of `dashboards/offer-engine.json` and `dashboards/alerts.yml`
//! through Prometheus's query API and fails listing *all* expressions that
//! are invalid or return no data.
//!
//! Before that, `promtool check rules`, `promtool test rules
//! dashboards/alerts_test.yml` (each alert fires when and as it should) and
//! `promtool check config` on the example and on the generated config.
//!
//! Needs `prometheus` and `promtool` on PATH (Debian: `apt-get install
//! prometheus`; `./test.sh` installs it). Without them the test fails, naming
//! the tool and the install line: it never passes without running.
//!
//! Choices the files rely on (documented in dashboards/README.md):
//! - Dashboard expressions use Grafana's `$__rate_interval` and `$__range`;
//!   the test replaces both with `1m` (Prometheus scrapes every 1 s here, so a
//!   minute holds every sample of the run), and the `$experiment` variable
//!   with its "All" value `.*`. Any other `$variable` fails the test.
//! - `alerts.yml` keeps each `expr:` on one line: it is read by scanning lines
//!   (no YAML parser among the dependencies).
//! - An alert expression is a comparison that is empty while healthy. The test
//!   runs it as written (it must be valid) and its left-hand side with the
//!   top-level comparison removed, which must return data, except for the
//!   alerts in [`VALID_ONLY_ALERTS`], whose left-hand side has no series at all
//!   while healthy; those are only checked for being valid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offer_engine::config::Settings;
use offer_engine::startup::Application;
use serde_json::{json, Value};

/// How long traffic runs.
const TRAFFIC: Duration = Duration::from_secs(15);
/// Synthetic members in the server.
const MEMBERS: u64 = 5_000;
/// What `$__rate_interval` and `$__range` become.
const WINDOW: &str = "1m";
/// Alerts whose left-hand side (comparison removed) may legitimately have no
/// series while healthy; checked for validity (`status == success`) only.
/// Every error series is created at zero when the service starts; only the
/// guardrail gauge is absent while no experiment names a guardrail.
const VALID_ONLY_ALERTS: &[&str] = &[
    // Guardrails are optional: the default experiment names none.
    "OfferEngineExperimentGuardrailFailing",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `Some(version line)` when `tool --version` runs.
fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    // promtool and prometheus print their version on stdout or stderr
    // depending on the release.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("").to_string())
}

/// Runs promtool; panics with its output when it fails.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------ expressions

/// One expression to query, and what is expected of it.
#[derive(Debug, Clone)]
struct Check {
    /// Where it comes from (panel title, alert name).
    origin: String,
    /// The PromQL sent to Prometheus.
    expr: String,
    /// Whether an empty result is a failure (false: only validity is checked).
    must_have_data: bool,
}

/// Every `"expr"` string anywhere in the dashboard, with the title of the
/// panel it sits in.
fn collect_dashboard_exprs(v: &Value, panel: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let title = m
                .get("title")
                .and_then(Value::as_str)
                .filter(|_| m.contains_key("type"))
                .unwrap_or(panel);
            for (k, child) in m {
                if k == "expr" {
                    if let Some(s) = child.as_str() {
                        out.push((title.to_string(), s.to_string()));
                    }
                } else {
                    collect_dashboard_exprs(child, title, out);
                }
            }
        }
        Value::Array(a) => {
            for child in a {
                collect_dashboard_exprs(child, panel, out);
            }
        }
        _ => {}
    }
}

/// Replaces Grafana's variables by what the test queries with.
fn substitute(expr: &str) -> Result<String, String> {
    let mut e = expr.to_string();
    for (var, value) in [
        ("${__rate_interval}", WINDOW),
        ("$__rate_interval", WINDOW),
        ("${__range}", WINDOW),
        ("$__range", WINDOW),
        ("${experiment}", ".*"),
        ("$experiment", ".*"),
    ] {
        e = e.replace(var, value);
    }
    if e.contains('$') {
        return Err(format!(
            "unknown Grafana variable in `{expr}` (tests/prometheus.rs substitutes only \
             $__rate_interval, $__range and $experiment)"
        ));
    }
    Ok(e)
}

/// Structural checks of the dashboard, and its checks: every target's expr,
/// and each query variable's `label_values(metric, label)` as
/// `group by (label) (metric)`.
fn dashboard_checks(dash: &Value, problems: &mut Vec<String>) -> Vec<Check> {
    let panels = dash["panels"].as_array().expect("dashboard has panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("dashboard: panel id {} used twice", p["id"]));
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("dashboard: panel '{title}' has no targets"));
        }
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or("").trim();
            if expr.is_empty() {
                problems.push(format!(
                    "dashboard: panel '{title}' has a target without expr"
                ));
            }
            if !t["refId"].is_string() {
                problems.push(format!(
                    "dashboard: panel '{title}' has a target without refId"
                ));
            }
        }
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!(
                "dashboard: panel '{title}' does not use the ${{DS_PROMETHEUS}} datasource"
            ));
        }
    }
    let mut found = Vec::new();
    collect_dashboard_exprs(dash, "dashboard", &mut found);
    let mut checks = Vec::new();
    for (origin, expr) in found {
        match substitute(&expr) {
            Ok(e) => checks.push(Check {
                origin: format!("panel '{origin}'"),
                expr: e,
                must_have_data: true,
            }),
            Err(msg) => problems.push(msg),
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or("");
        let name = var["name"].as_str().unwrap_or("?");
        let inner = q
            .trim()
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'));
        match inner.and_then(|i| i.rsplit_once(',')) {
            Some((metric, label)) => checks.push(Check {
                origin: format!("variable ${name}"),
                expr: format!("group by ({}) ({})", label.trim(), metric.trim()),
                must_have_data: true,
            }),
            None => problems.push(format!(
                "dashboard: variable ${name}: query `{q}` is not label_values(metric, label)"
            )),
        }
    }
    checks
}

/// `(alert name, expr)` for every rule in the rules file. Each `expr:` must
/// be on one line.
fn alert_exprs(text: &str, problems: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start().trim_start_matches("- ").trim();
        if let Some(a) = l
            .strip_prefix("alert:")
            .or_else(|| l.strip_prefix("record:"))
        {
            name = Some(unquote(a.trim()));
        } else if let Some(e) = l.strip_prefix("expr:") {
            let e = e.trim();
            if e.is_empty() || e.starts_with('|') || e.starts_with('>') {
                problems.push(format!(
                    "dashboards/alerts.yml:{}: expr must be on one line (tests/prometheus.rs scans lines)",
                    n + 1
                ));
                continue;
            }
            let who = name.take().unwrap_or_else(|| format!("line {}", n + 1));
            out.push((who, unquote(e)));
        }
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}

/// The left-hand side of the expression's top-level comparison (`==`, `!=`,
/// `>`, `<`, `>=`, `<=`), ignoring anything inside brackets or strings;
/// `None` when there is none.
fn strip_comparison(expr: &str) -> Option<String> {
    let b = expr.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'=' | b'!' if depth == 0 && b.get(i + 1) == Some(&b'=') => {
                    return Some(expr[..i].trim().to_string())
                }
                b'>' | b'<' if depth == 0 => return Some(expr[..i].trim().to_string()),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn alert_checks(rules: &str, problems: &mut Vec<String>) -> Vec<Check> {
    let mut checks = Vec::new();
    for (name, expr) in alert_exprs(rules, problems) {
        checks.push(Check {
            origin: format!("alert {name} (as written)"),
            expr: expr.clone(),
            must_have_data: false,
        });
        match strip_comparison(&expr) {
            Some(lhs) => checks.push(Check {
                origin: format!("alert {name} (comparison removed)"),
                expr: lhs,
                must_have_data: !VALID_ONLY_ALERTS.contains(&name.as_str()),
            }),
            None => problems.push(format!(
                "alert {name}: no top-level comparison in `{expr}`; an alert expression \
                 should be `<signal> <op> <threshold>`"
            )),
        }
    }
    checks
}

// ------------------------------------------------------------ processes

/// The Prometheus child process; killed when dropped (also on panic).
struct PrometheusGuard {
    child: Child,
    log: PathBuf,
}

impl PrometheusGuard {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_prometheus(config: &Path, storage: &Path, port: u16, log: PathBuf) -> PrometheusGuard {
    let log_file = std::fs::File::create(&log).expect("prometheus log file");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("prometheus starts");
    PrometheusGuard { child, log }
}

// ------------------------------------------------------------ traffic

/// Counts of what the traffic did, by HTTP status.
#[derive(Default, Debug)]
struct Tally {
    decisions: u64,
    offers: u64,
    accepts: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

async fn send(req: reqwest::RequestBuilder, tally: &mut Tally) -> Option<reqwest::Response> {
    match req.send().await {
        Ok(r) => {
            *tally.statuses.entry(r.status().as_u16()).or_default() += 1;
            Some(r)
        }
        Err(_) => None,
    }
}

fn itinerary(i: usize) -> Value {
    let departure = (chrono::Utc::now()
        + chrono::Duration::days(2 + (i % 40) as i64)
        + chrono::Duration::hours(3))
    .to_rfc3339();
    match i % 3 {
        0 => json!({"origin": "PEK", "destination": "SHA", "departure": departure,
                    "cabin": "economy", "fare": {"amount": 1280.0, "currency": "CNY"},
                    "passengers": 1 + (i % 3)}),
        1 => json!({"origin": "PEK", "destination": "LHR", "departure": departure,
                    "cabin": "business", "fare": {"amount": 21000, "currency": "CNY"},
                    "passengers": 1}),
        _ => json!({"origin": "CAN", "destination": "PEK", "departure": departure,
                    "cabin": "premium_economy", "fare": {"amount": 3100, "currency": "CNY"},
                    "passengers": 2}),
    }
}

/// One worker's loop: decisions and everything that follows them, until
/// `deadline`.
async fn traffic(
    base: String,
    members: Arc<Vec<String>>,
    worker: usize,
    deadline: Instant,
) -> Tally {
    const CHANNELS: [&str; 4] = ["checkout", "app", "email", "kiosk"];
    let client = reqwest::Client::new();
    let mut t = Tally::default();
    let mut i = worker;
    while Instant::now() < deadline {
        i += 4;
        let member = if i % 10 == 3 {
            format!("UNKNOWN-{i}")
        } else {
            members[(i * 7919) % members.len()].clone()
        };
        let channel = if i & 1 == 0 {
            "checkout"
        } else {
            CHANNELS[(i / 2) % 4]
        };
        let body = json!({"member_id": member, "channel": channel, "itinerary": itinerary(i)});
        let resp = send(client.post(format!("{base}/v1/offers")).json(&body), &mut t).await;
        if let Some(r) = resp.filter(|r| r.status() == 200) {
            let d: Value = r.json().await.expect("decision JSON");
            t.decisions += 1;
            let id = d["decision_id"].as_str().unwrap_or("").to_string();
            let offers = d["offers"].as_array().cloned().unwrap_or_default();
            t.offers += offers.len() as u64;
            if !offers.is_empty() {
                let impressions: Vec<Value> = offers
                    .iter()
                    .map(|o| json!({"decision_id": id, "offer_id": o["offer_id"], "type": "impression"}))
                    .collect();
                send(
                    client.post(format!("{base}/v1/events")).json(&impressions),
                    &mut t,
                )
                .await;
                let o = &offers[(i / 4) % offers.len()];
                let kind = ["accept", "decline", "click", "accept", "impression"][(i / 4) % 5];
                if kind != "impression" {
                    let mut e = json!({"decision_id": id, "offer_id": o["offer_id"], "type": kind});
                    if kind == "accept" && o["price"].is_object() {
                        e["revenue"] = o["price"].clone();
                    }
                    if kind == "accept" {
                        e["token"] = o["token"].clone();
                    }
                    let r = send(client.post(format!("{base}/v1/events")).json(&e), &mut t).await;
                    if kind == "accept" && r.is_some_and(|r| r.status() == 202) {
                        t.accepts += 1;
                    }
                }
            }
        }
        if i % 5 == 4 && !member.starts_with("UNKNOWN") {
            let e = json!({"member_id": member, "type": "points_earned", "points": 100 + i % 900});
            send(
                client.post(format!("{base}/v1/member-events")).json(&e),
                &mut t,
            )
            .await;
        }
        match i % 24 {
            1 => {
                // 422: a field out of range.
                let mut bad = body.clone();
                bad["itinerary"]["passengers"] = json!(50);
                send(client.post(format!("{base}/v1/offers")).json(&bad), &mut t).await;
            }
            5 => {
                // 400: malformed JSON.
                let r = client
                    .post(format!("{base}/v1/offers"))
                    .header("content-type", "application/json")
                    .body("{\"member_id\": ");
                send(r, &mut t).await;
            }
            9 => {
                // 404: unknown route.
                send(client.get(format!("{base}/v1/nowhere")), &mut t).await;
            }
            13 => {
                // 404: an event for a decision nobody made.
                let e = json!({"decision_id": "nope", "offer_id": "lounge-dom", "type": "click"});
                send(client.post(format!("{base}/v1/events")).json(&e), &mut t).await;
            }
            17 => {
                send(client.get(format!("{base}/readyz")), &mut t).await;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t
}

// ------------------------------------------------------------ queries

enum Outcome {
    /// Series (or a scalar) came back; `all_nan` when every value is NaN.
    Data {
        series: usize,
        all_nan: bool,
    },
    Empty,
    Invalid(String),
}

async fn query(client: &reqwest::Client, prom: &str, expr: &str) -> Outcome {
    let resp = match client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Invalid(format!("request failed: {e}")),
    };
    let body: Value = match resp.json().await {
        Ok(b) => b,
        Err(e) => return Outcome::Invalid(format!("response is not JSON: {e}")),
    };
    if body["status"] != "success" {
        return Outcome::Invalid(format!(
            "{}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("?")
        ));
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => Outcome::Data {
            series: 1,
            all_nan: result[1].as_str() == Some("NaN"),
        },
        _ => {
            let series = result.as_array().cloned().unwrap_or_default();
            if series.is_empty() {
                return Outcome::Empty;
            }
            let all_nan = series.iter().all(|s| {
                let v = &s["value"][1];
                v.as_str() == Some("NaN")
                    || s["values"]
                        .as_array()
                        .is_some_and(|vs| vs.iter().all(|p| p[1].as_str() == Some("NaN")))
            });
            Outcome::Data {
                series: series.len(),
                all_nan,
            }
        }
    }
}

/// Polls `ok` until it holds; panics with the Prometheus log when it times
/// out or Prometheus exits.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, guard: &mut PrometheusGuard, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if ok().await {
            return;
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            panic!(
                "prometheus exited ({status}) while waiting for {what}:\n{}",
                guard.log_tail()
            );
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; prometheus log:\n{}",
                guard.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_expressions_return_data_in_a_real_prometheus() {
    let started = Instant::now();
    // No skipping: a test that passes without running is a defect. `./test.sh`
    // installs what is missing.
    let missing: Vec<&str> = ["prometheus", "promtool"]
        .into_iter()
        .filter(|t| tool_version(t).is_none())
        .collect();
    let Some(prom_version) = tool_version("prometheus").filter(|_| missing.is_empty()) else {
        panic!(
            "tests/prometheus.rs needs {} on PATH and cannot run without: install with \
             `apt-get install prometheus` (Debian/Ubuntu; it brings promtool), or run the \
             tests through ./test.sh, which installs it",
            missing.join(" and ")
        );
    };
    eprintln!("using {prom_version}");
    let root = repo();
    let dashboard_path = root.join("dashboards/offer-engine.json");
    let rules_path = root.join("dashboards/alerts.yml");

    // Static checks first: they are cheap and their errors are clearest.
    promtool(&["check", "rules", rules_path.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        root.join("dashboards/alerts_test.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "config",
        root.join("dashboards/prometheus.yml").to_str().unwrap(),
    ]);
    let mut problems = Vec::new();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(&dashboard_path).expect("dashboards/offer-engine.json readable"),
    )
    .expect("dashboards/offer-engine.json is JSON");
    let mut checks = dashboard_checks(&dash, &mut problems);
    let n_dash = checks.len();
    let rules = std::fs::read_to_string(&rules_path).expect("dashboards/alerts.yml readable");
    checks.extend(alert_checks(&rules, &mut problems));
    assert!(n_dash >= 20, "only {n_dash} dashboard expressions found");
    assert!(
        checks.len() > n_dash,
        "no alert expressions found in {}",
        rules_path.display()
    );
    assert!(
        problems.is_empty(),
        "dashboard / rules problems:\n  {}",
        problems.join("\n  ")
    );

    // The service.
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::load(None, []).expect("defaults parse");
    settings.server.addr = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.members.synthetic_count = MEMBERS;
    settings.durability.data_dir = data_dir.path().display().to_string();
    let app = Application::build(settings).expect("application builds");
    let port = app.port();
    let base = format!("http://127.0.0.1:{port}");
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    let mut members = Vec::new();
    state
        .state()
        .members()
        .for_each(|id, _| members.push(id.to_string()));
    members.sort();
    let members = Arc::new(members);

    // Prometheus, scraping it every second and evaluating the rules.
    let prom_dir = tempfile::tempdir().expect("temp dir");
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: offer-engine\n    metrics_path: /metrics\n\
             \x20   static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n",
            rules = rules_path.display()
        ),
    )
    .expect("write prometheus config");
    promtool(&["check", "config", config.to_str().unwrap()]);
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let mut guard = start_prometheus(
        &config,
        &prom_dir.path().join("tsdb"),
        prom_port,
        prom_dir.path().join("prometheus.log"),
    );
    let client = reqwest::Client::new();
    let ready = format!("{prom}/-/ready");
    wait_for(
        "prometheus /-/ready",
        Duration::from_secs(30),
        &mut guard,
        || async { matches!(client.get(&ready).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    wait_for(
        "the first successful scrape of the service",
        Duration::from_secs(15),
        &mut guard,
        || async {
            matches!(
                query(&client, &prom, "up{job=\"offer-engine\"} == 1").await,
                Outcome::Data { .. }
            )
        },
    )
    .await;
    eprintln!("prometheus ready on {prom} after {:.1?}", started.elapsed());

    // Traffic.
    let deadline = Instant::now() + TRAFFIC;
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(traffic(base.clone(), members.clone(), w, deadline)))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let t = w.await.expect("traffic worker");
        total.decisions += t.decisions;
        total.offers += t.offers;
        total.accepts += t.accepts;
        for (s, n) in t.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
    }
    eprintln!(
        "traffic: {} decisions, {} offers, {} accepts; responses by status {:?}",
        total.decisions, total.offers, total.accepts, total.statuses
    );
    assert!(
        total.decisions > 100 && total.accepts > 10,
        "too little traffic: {total:?}"
    );
    // A few more scrapes and rule evaluations after the last request.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every expression.
    let mut empty = Vec::new();
    let mut invalid = Vec::new();
    let mut nan = Vec::new();
    for c in &checks {
        match query(&client, &prom, &c.expr).await {
            Outcome::Data { series, all_nan } => {
                eprintln!("  ok    {series:>3} series  {}: {}", c.origin, c.expr);
                if all_nan {
                    nan.push(format!("{}: {}", c.origin, c.expr));
                }
            }
            Outcome::Empty if !c.must_have_data => {
                eprintln!("  valid   (empty)   {}: {}", c.origin, c.expr)
            }
            Outcome::Empty => {
                eprintln!("  EMPTY             {}: {}", c.origin, c.expr);
                empty.push(format!("{}: {}", c.origin, c.expr));
            }
            Outcome::Invalid(e) => {
                eprintln!("  INVALID           {}: {} ({e})", c.origin, c.expr);
                invalid.push(format!("{}: {} -> {e}", c.origin, c.expr));
            }
        }
    }

    // The rules as Prometheus loaded and evaluated them.
    let rules_api: Value = client
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .expect("rules API")
        .json()
        .await
        .expect("rules JSON");
    let mut loaded = 0;
    for g in rules_api["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            loaded += 1;
            if r["health"] == "err" {
                invalid.push(format!(
                    "rule {} failed to evaluate: {}",
                    r["name"],
                    r["lastError"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    let n_alerts = alert_exprs(&rules, &mut Vec::new()).len();
    if loaded != n_alerts {
        invalid.push(format!(
            "prometheus loaded {loaded} rules, alerts.yml has {n_alerts}"
        ));
    }

    if !nan.is_empty() {
        eprintln!(
            "\nWARNING: these expressions returned only NaN (no observations in the window):\n  {}",
            nan.join("\n  ")
        );
    }
    eprintln!(
        "\n{} expressions checked ({} dashboard, {} alert), {} empty, {} invalid, in {:.1?}",
        checks.len(),
        n_dash,
        checks.len() - n_dash,
        empty.len(),
        invalid.len(),
        started.elapsed()
    );
    let mut report = String::new();
    if !invalid.is_empty() {
        report += &format!("\n{} invalid:\n  {}", invalid.len(), invalid.join("\n  "));
    }
    if !empty.is_empty() {
        report += &format!(
            "\n{} expressions returned no data under traffic:\n  {}",
            empty.len(),
            empty.join("\n  ")
        );
    }
    assert!(
        report.is_empty(),
        "{report}\nprometheus log tail:\n{}",
        guard.log_tail()
    );
    drop(guard);
}
