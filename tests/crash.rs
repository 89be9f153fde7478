//! Crash test: start the real binary, send thousands of member updates and
//! outcome events concurrently, `kill -9` it mid-stream, start it again on
//! the same data dir, and check that every acknowledged write is there
//! (member features, suppressions, inventory counts) and nothing was applied
//! twice. Snapshots run every second meanwhile, so recovery goes through a
//! snapshot plus the log after it.

mod support;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

fn start(data_dir: &std::path::Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offer-engine"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--synthetic-members",
        "2000",
    ])
    .env("OFFER_ENGINE__DURABILITY__DATA_DIR", data_dir)
    .env("OFFER_ENGINE__DURABILITY__SNAPSHOT_INTERVAL_SECS", "1")
    .env("OFFER_ENGINE__SERVER__WORKERS", "2")
    .env(
        "OFFER_ENGINE__CONTACT__MAX_OFFERS_PER_DAY__CHECKOUT",
        "10000",
    );
    let (child, base) = support::spawn_server(cmd);
    Server { child, base }
}

fn departure(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

/// What the load phase saw acknowledged, and what was in flight at the kill.
#[derive(Default)]
struct Ledger {
    /// member → acknowledged points added.
    points_acked: HashMap<String, u64>,
    /// member → value of a points request in flight when the server died.
    points_in_flight: HashMap<String, u64>,
    /// (member, offer) declines acknowledged, with the request that showed the offer.
    declines: Vec<(String, String, Value)>,
    /// flight → acknowledged accepts.
    accepts_acked: HashMap<String, u32>,
    /// flights with an accept in flight at the kill.
    accepts_in_flight: HashMap<String, u32>,
}

fn offer_req(member: &str, dep: &str) -> Value {
    json!({"member_id": member, "channel": "checkout", "max_offers": 10, "itinerary": {
        "origin": "PEK", "destination": "LHR", "departure": dep, "cabin": "business",
        "fare": {"amount": 21000, "currency": "CNY"}, "passengers": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = server.base.clone();
    let members: Vec<String> = (1..=400).map(|i| format!("M{i:08}")).collect();
    let mut initial_points = HashMap::new();
    for m in &members {
        let v: Value = client
            .get(format!("{base}/v1/members/{m}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        initial_points.insert(m.clone(), v["points"].as_u64().unwrap());
    }
    // 12 flights, first-class upgrade capped at 2 seats each.
    let flights: Vec<String> = (0..12).map(|i| departure(30 + i)).collect();
    let seen = Arc::new(Mutex::new(Ledger::default()));
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let client = client.clone();
        let base = base.clone();
        let mine: Vec<String> = members.iter().skip(t).step_by(16).cloned().collect();
        let flights = flights.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut j: u64 = 0;
            while Instant::now() < stop_at {
                j += 1;
                let m = &mine[j as usize % mine.len()];
                match j % 3 {
                    // Points: each request adds a distinct amount.
                    0 | 1 => {
                        let value = 1000 + j * 16 + t as u64;
                        seen.lock().unwrap().points_in_flight.insert(m.clone(), value);
                        let r = client
                            .post(format!("{base}/v1/member-events"))
                            .json(&json!({"member_id": m, "type": "points_earned", "points": value}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 202 => {
                                let mut s = seen.lock().unwrap();
                                s.points_in_flight.remove(m);
                                *s.points_acked.entry(m.clone()).or_default() += value;
                            }
                            Ok(r) => panic!("points_earned answered {}", r.status()),
                            Err(_) => return, // the server died mid-request
                        }
                    }
                    // A decision, then a decline of one offer and an accept of the capped upgrade.
                    _ => {
                        let flight = &flights[j as usize % flights.len()];
                        let req = offer_req(m, flight);
                        let Ok(r) = client.post(format!("{base}/v1/offers")).json(&req).send().await else {
                            return;
                        };
                        let Ok(body) = r.json::<Value>().await else { return };
                        let d = body["decision_id"].as_str().unwrap_or_default().to_string();
                        let offers = body["offers"].as_array().cloned().unwrap_or_default();
                        if let Some(o) = offers.iter().find(|o| o["category"] == "wifi") {
                            let e = json!({"decision_id": d, "offer_id": o["offer_id"], "type": "decline"});
                            match client.post(format!("{base}/v1/events")).json(&e).send().await {
                                Ok(r) if r.status() == 202 => seen.lock().unwrap().declines.push((
                                    m.clone(),
                                    o["offer_id"].as_str().unwrap().to_string(),
                                    req.clone(),
                                )),
                                // 404: the decision was not yet in this process's memory? It is
                                // remembered before the answer, so any other status is a bug.
                                Ok(r) => panic!("decline answered {}", r.status()),
                                Err(_) => return,
                            }
                        }
                        if let Some(o) = offers.iter().find(|o| o["offer_id"] == "upg-first-intl-cash") {
                            let e = json!({"decision_id": d, "offer_id": o["offer_id"], "type": "accept",
                                           "revenue": o["price"], "token": o["token"]});
                            *seen.lock().unwrap().accepts_in_flight.entry(flight.clone()).or_default() += 1;
                            match client.post(format!("{base}/v1/events")).json(&e).send().await {
                                Ok(r) => {
                                    let mut s = seen.lock().unwrap();
                                    *s.accepts_in_flight.get_mut(flight).unwrap() -= 1;
                                    match r.status().as_u16() {
                                        202 => *s.accepts_acked.entry(flight.clone()).or_default() += 1,
                                        409 => {}
                                        other => panic!("accept answered {other}"),
                                    }
                                }
                                Err(_) => return,
                            }
                        }
                    }
                }
            }
        }));
    }
    // Kill -9 while the load is still running.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    for t in tasks {
        t.await.expect("load task");
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let acked_points: usize = seen.points_acked.len();
    let acked_accepts: u32 = seen.accepts_acked.values().sum();
    eprintln!(
        "before the kill: {} members updated, {} declines and {} accepts acknowledged, {} points and {} accept requests in flight",
        acked_points,
        seen.declines.len(),
        acked_accepts,
        seen.points_in_flight.len(),
        seen.accepts_in_flight.values().sum::<u32>()
    );
    assert!(
        acked_points > 100,
        "too little load before the kill: {acked_points} members updated"
    );
    let total_acks: u64 =
        seen.accepts_acked.values().map(|v| *v as u64).sum::<u64>() + seen.declines.len() as u64;
    assert!(total_acks > 20, "too few events acknowledged: {total_acks}");

    // Restart on the same data dir.
    let mut server = start(dir.path());
    let base = server.base.clone();
    for m in &members {
        let v: Value = client
            .get(format!("{base}/v1/members/{m}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now = v["points"].as_u64().unwrap();
        let expected = initial_points[m] + seen.points_acked.get(m).copied().unwrap_or(0);
        let in_flight = seen.points_in_flight.get(m).copied();
        assert!(
            now == expected || Some(now - expected.min(now)) == in_flight,
            "{m}: points {now}, expected {expected} (+ {in_flight:?} in flight at the kill)"
        );
    }
    for (m, offer, req) in &seen.declines {
        let body: Value = client
            .post(format!("{base}/v1/offers"))
            .json(req)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let shown: Vec<&str> = body["offers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["offer_id"].as_str())
            .collect();
        assert!(
            !shown.contains(&offer.as_str()),
            "{m} declined {offer} before the crash but is offered it again"
        );
    }
    // Inventory: accepted units survived, and the cap still holds.
    for (i, flight) in flights.iter().enumerate() {
        let acked = seen.accepts_acked.get(flight).copied().unwrap_or(0);
        let in_flight = seen.accepts_in_flight.get(flight).copied().unwrap_or(0);
        assert!(acked <= 2, "flight {i} oversold before the crash: {acked}");
        let mut after = 0;
        // Members in the holdout get no offers; try enough members to fill the flight.
        for m in members.iter().skip(i * 30).take(30) {
            if acked + after >= 2 {
                break;
            }
            let body: Value = client
                .post(format!("{base}/v1/offers"))
                .json(&offer_req(m, flight))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let Some(o) = body["offers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["offer_id"] == "upg-first-intl-cash")
            else {
                continue;
            };
            let e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept",
                           "revenue": o["price"], "token": o["token"]});
            let r = client
                .post(format!("{base}/v1/events"))
                .json(&e)
                .send()
                .await
                .unwrap();
            if r.status() == 202 {
                after += 1;
            }
        }
        assert!(
            acked + after <= 2,
            "flight {i}: {acked} accepted before the crash, {after} after: oversold"
        );
        if in_flight == 0 {
            assert_eq!(
                acked + after,
                2,
                "flight {i}: {acked} acknowledged accepts before the crash were lost"
            );
        }
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
