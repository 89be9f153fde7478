//! Smoke test: the generator against the real server started in process on
//! 127.0.0.1:0 with a small synthetic population, about 2 seconds of steps.
//! It checks the plumbing (requests valid, responses counted, JSON and
//! Markdown written), not performance.

use std::sync::Arc;
use std::time::Duration;

use offer_engine::config::Settings;
use offer_engine::startup::Application;
use offer_engine_load::engine::{run_step, Mode, Step, Target};
use offer_engine_load::traffic::{Kind, MemberDist, Mix, Traffic, AIRPORTS};
use offer_engine_load::{run_population, RunConfig};

const MEMBERS: u64 = 2_000;

async fn spawn_server(dir: &tempfile::TempDir) -> String {
    let mut s = Settings::load(None, []).expect("defaults parse");
    s.server.addr = "127.0.0.1:0".into();
    s.server.workers = 1;
    s.members.synthetic_count = MEMBERS;
    s.durability.data_dir = dir.path().display().to_string();
    let app = Application::build(s).expect("application builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    url
}

#[test]
fn airport_list_matches_the_engine() {
    let engine: Vec<(String, String)> = offer_engine::airports::AIRPORTS
        .iter()
        .map(|a| (a.code.to_string(), a.country.to_string()))
        .collect();
    let ours: Vec<(String, String)> = AIRPORTS
        .iter()
        .map(|(c, k)| (c.to_string(), k.to_string()))
        .collect();
    assert_eq!(
        ours, engine,
        "load-tests/src/traffic.rs AIRPORTS is out of date"
    );
}

#[test]
fn only_loopback_targets_are_accepted() {
    assert!(Target::from_url("http://127.0.0.1:8080").is_ok());
    assert!(Target::from_url("http://localhost:8080").is_ok());
    assert!(Target::from_url("http://[::1]:8080").is_ok());
    assert!(Target::from_url("http://10.0.0.1:8080").is_err());
    assert!(Target::from_url("http://93.184.216.34:80").is_err());
    assert!(Target::from_url("https://127.0.0.1:8080").is_err());
    assert!(
        Mix::parse("campaign=1").is_err(),
        "campaigns are a hook, not wired yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_is_accepted_by_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = spawn_server(&dir).await;
    let target = Target::from_url(&url).unwrap();
    offer_engine_load::wait_ready(&target, Duration::from_secs(30))
        .await
        .unwrap();
    let traffic = Arc::new(Traffic::new(MEMBERS, MemberDist::Zipf));
    // Offers first (fills the pool of offers for outcome events), then the mix.
    for (name, mix, mode) in [
        ("offers", Mix::only(Kind::Offers), Mode::Closed),
        (
            "mixed",
            Mix::parse("offers=40,events=30,member_events=15,member_put=15").unwrap(),
            Mode::Open { rate: 400.0 },
        ),
    ] {
        let step = Step {
            name: name.into(),
            mode,
            connections: 4,
            duration: Duration::from_millis(700),
            mix,
            drain: Duration::from_secs(2),
        };
        let r = run_step(&target, traffic.clone(), step, None, 1)
            .await
            .unwrap();
        let total = r.total();
        assert!(total.ok > 50, "{name}: only {} answers", total.ok);
        assert_eq!(total.errors, 0, "{name}: errors {:?}", total.statuses);
        assert_eq!(r.not_sent, 0, "{name}");
        if name == "mixed" {
            for k in [
                Kind::Offers,
                Kind::Events,
                Kind::MemberEvents,
                Kind::MemberPut,
            ] {
                assert!(
                    r.kinds[k.index()].ok > 0,
                    "{name}: no {} answered",
                    k.name()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_population_run_writes_json_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let url = spawn_server(&dir).await;
    let cfg = RunConfig {
        url,
        population: MEMBERS,
        dist: MemberDist::Uniform,
        sat_connections: 8,
        rate_connections: 8,
        step_secs: 0.25,
        warmup_secs: 0.1,
        rounds: 1,
        quiet_wait: Duration::ZERO,
        rate_fraction: 0.5,
        mix: Mix::realistic(),
        seed: 3,
        server_pid: Some(std::process::id().to_string()),
        members_file: None,
        extra: serde_json::json!({}),
    };
    let v = run_population(&cfg).await.unwrap();
    assert!(v["healthz_saturation_rps"].as_f64().unwrap() > 0.0);
    assert!(v["offers_saturation_rps"].as_f64().unwrap() > 0.0);
    assert!(v["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    let out = tempfile::tempdir().unwrap();
    std::fs::write(
        out.path().join(format!("population-{MEMBERS}.json")),
        v.to_string(),
    )
    .unwrap();
    offer_engine_load::report::summarize(out.path(), "test").unwrap();
    let md = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(md.contains("| 2,000 |"), "{md}");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(all["runs"].as_array().unwrap().len(), 1);
}

/// The cluster benchmark's building blocks against two real servers: one
/// closed-loop step spread over both reaches both (each server's own
/// decision counter moves), and accepts sent as their own kind, on offers
/// the first server made, are answered 2xx or an expected 409/410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_spreads_over_several_servers_and_accepts_are_sent() {
    use offer_engine_load::engine::run_step_multi;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let urls = [spawn_server(&d1).await, spawn_server(&d2).await];
    let targets: Vec<Target> = urls.iter().map(|u| Target::from_url(u).unwrap()).collect();
    for t in &targets {
        offer_engine_load::wait_ready(t, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let decisions = |url: String| async move {
        let t = Target::from_url(&url).unwrap();
        let mut c = offer_engine_load::engine::Conn::open(&t).await.unwrap();
        let req = offer_engine_load::traffic::Req {
            kind: Kind::Healthz,
            method: hyper::Method::GET,
            path: "/metrics".into(),
            body: bytes::Bytes::new(),
        };
        let (_, body) = c.send(&t, &req).await.unwrap();
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("offer_engine_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = [
        decisions(urls[0].clone()).await,
        decisions(urls[1].clone()).await,
    ];
    let traffic = Arc::new(Traffic::new(MEMBERS, MemberDist::Uniform));
    let step = |name: &str, kind: Kind| Step {
        name: name.into(),
        mode: Mode::Closed,
        connections: 4,
        duration: Duration::from_millis(700),
        mix: Mix::only(kind),
        drain: Duration::ZERO,
    };
    let r = run_step_multi(
        &targets,
        traffic.clone(),
        step("spread", Kind::Offers),
        &[],
        1,
    )
    .await
    .unwrap();
    assert_eq!(r.error_rate(), 0.0, "{}", r.to_json());
    let after = [
        decisions(urls[0].clone()).await,
        decisions(urls[1].clone()).await,
    ];
    for i in 0..2 {
        assert!(
            after[i] > before[i],
            "server {i} got no decisions: {before:?} -> {after:?}"
        );
    }
    // Accepts on the first server's offers (the pool fills from its answers).
    let fill = Step {
        mix: Mix::parse("offers=9,events=1").unwrap(),
        ..step("fill", Kind::Offers)
    };
    let r = run_step(&targets[0], traffic.clone(), fill, None, 2)
        .await
        .unwrap();
    assert_eq!(r.error_rate(), 0.0, "{}", r.to_json());
    let mut sent = 0;
    for _ in 0..20 {
        let Some(req) = traffic.accept() else { break };
        assert_eq!(req.kind, Kind::Accepts);
        let mut c = offer_engine_load::engine::Conn::open(&targets[0])
            .await
            .unwrap();
        let (status, body) = c.send(&targets[0], &req).await.unwrap();
        assert!(
            (200..300).contains(&status) || status == 409 || status == 410,
            "accept answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        sent += 1;
    }
    assert!(sent > 0, "no offer was left in the pool to accept");
}
