//! The console in a real browser: the server under generated traffic, each
//! page opened in headless Chromium (`--dump-dom`), its figures checked
//! against the API's JSON for the same experiment, the SRM banner, and the
//! key prompt when keys are on. With OFFER_ENGINE_WRITE_SCREENSHOTS=1 it
//! also writes the screenshots under docs/console/.

use std::collections::HashMap;
use std::process::Command;

use offer_engine::experiments::ExperimentSpec;
use serde_json::{json, Value};

use crate::helpers::*;

const INSTALL: &str = "apt-get install chromium";

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").output().is_ok() {
            return name.to_string();
        }
    }
    panic!("headless Chromium is missing: install it with `{INSTALL}` (./test.sh does)");
}

/// Runs Chromium headless on `url` with `mode` (`--dump-dom` or
/// `--screenshot=...`); returns stdout and stderr.
async fn browse(url: String, mode: Vec<String>) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().expect("profile dir");
        let out = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=15000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(mode)
            .arg(url)
            .output()
            .unwrap_or_else(|e| panic!("chromium did not run ({e}); install: {INSTALL}"));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("browser task")
}

/// The page's DOM once its script is done; fails on any console message.
async fn dom(app: &TestApp, page: &str) -> String {
    dom_allowing(app, page, "").await
}

/// As [`dom`], allowing console lines containing `allowed` (the browser's
/// own note of a refused request, when that is the point of the test).
async fn dom_allowing(app: &TestApp, page: &str, allowed: &str) -> String {
    let url = format!("{}/console{page}", app.address);
    let (dom, stderr) = browse(url.clone(), vec!["--dump-dom".into()]).await;
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .filter(|l| allowed.is_empty() || !l.contains(allowed))
        .collect();
    assert!(console.is_empty(), "{url}: console messages: {console:#?}");
    assert!(
        dom.contains("data-ready"),
        "{url}: the script did not finish:\n{dom}"
    );
    assert!(
        !dom.contains("data-error"),
        "{url}: the page shows an error:\n{dom}"
    );
    dom
}

/// Screenshots for the README, when asked (laptop and phone widths).
async fn screenshot(app: &TestApp, page: &str, name: &str) {
    if std::env::var("OFFER_ENGINE_WRITE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    for (suffix, size) in [("", "1280,2000"), ("-phone", "412,2400")] {
        let path = dir.join(format!("{name}{suffix}.png"));
        browse(
            format!("{}/console{page}", app.address),
            vec![
                format!("--screenshot={}", path.display()),
                format!("--window-size={size}"),
                "--hide-scrollbars".into(),
            ],
        )
        .await;
        assert!(path.exists(), "no screenshot at {}", path.display());
    }
}

/// An attribute of the tag text `tag` (`name="value"`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Every figure of a page: (API path, JSON path, raw value if a number).
fn figures(dom: &str) -> Vec<(String, String, Option<f64>)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(" data-src=\"") {
        let open = rest[..i].rfind('<').unwrap_or(0);
        let close = rest[i..].find('>').map_or(rest.len(), |j| i + j);
        let tag = &rest[open..close];
        let src = attr(tag, "data-src").unwrap().replace("&amp;", "&");
        let path = attr(tag, "data-path")
            .expect("a figure names its path")
            .to_string();
        let value = attr(tag, "data-value").map(|v| v.parse::<f64>().expect("a number"));
        out.push((src, path, value));
        rest = &rest[close..];
    }
    out
}

/// Checks every figure of the DOM against the API; returns how many.
async fn figures_match_the_api(app: &TestApp, dom: &str) -> usize {
    let mut cache: HashMap<String, Value> = HashMap::new();
    let figs = figures(dom);
    for (src, path, value) in &figs {
        if !cache.contains_key(src) {
            let r = app.get(src).await;
            assert_eq!(r.status(), 200, "{src}");
            cache.insert(src.clone(), r.json().await.unwrap());
        }
        let mut v = &cache[src];
        for k in path.split('.') {
            v = match k.parse::<usize>() {
                Ok(i) if v.is_array() => &v[i],
                _ => &v[k],
            };
        }
        match value {
            // Equal, up to a unit in the last place: serde_json's default
            // number parsing here (without its float_roundtrip feature) can
            // be one off, where the browser's parse is correctly rounded.
            Some(x) => {
                let a = v
                    .as_f64()
                    .unwrap_or_else(|| panic!("{src} {path}: the API has {v}"));
                assert!(
                    a == *x || (a - x).abs() <= 4.0 * f64::EPSILON * a.abs().max(x.abs()),
                    "{src} {path}: page {x}, API {a}"
                );
            }
            None => assert!(
                v.is_null(),
                "{src} {path}: the page shows none, the API {v}"
            ),
        }
    }
    figs.len()
}

async fn app_with_experiments() -> TestApp {
    spawn_with(
        settings_with_default_experiments(),
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
    )
    .await
}

/// Offers to the members `ids`; every second accepts its first offer and
/// every third flies.
async fn traffic(app: &TestApp, ids: impl Iterator<Item = u32>) {
    for i in ids {
        let id = format!("M{i:08}");
        let body: Value = app
            .post_offers(&offer_request(&id))
            .await
            .json()
            .await
            .unwrap();
        if i % 2 == 0 {
            if let Some(o) = body["offers"].as_array().unwrap().first() {
                let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept"});
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                e["token"] = o["token"].clone();
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
            }
        }
        if i % 3 == 0 {
            let r = app
                .post_json(
                    "/v1/member-events",
                    &json!({"member_id": id, "type": "flight_flown", "qualifying_spend": 1500}),
                )
                .await;
            assert_eq!(r.status(), 202);
        }
    }
    // Applied once durable (group commit).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn every_console_page_shows_the_apis_figures() {
    let app = app_with_experiments().await;
    traffic(&app, 1..=600).await;
    let id = app.state.engine().experiments[0].id.clone();

    let list = dom(&app, "#/experiments").await;
    assert!(list.contains(&format!("href=\"#/experiment/{id}\"")));
    assert!(
        !list.contains("data-srm-failing"),
        "a sound split shows no SRM banner"
    );
    let n = figures_match_the_api(&app, &list).await;
    assert!(n >= 5, "the list shows {n} figures");

    let page = dom(&app, &format!("#/experiment/{id}")).await;
    assert!(!page.contains("data-srm-failing"));
    // The plots arrived with labelled axes.
    for label in [
        "relative lift (%)",
        "variant · metric",
        "day (UTC)",
        "p-value (0–1)",
    ] {
        assert!(page.contains(label), "no axis label {label:?}");
    }
    // Every lift of every variant row is shown, whatever its name.
    let report: Value = app
        .get(&format!("/v1/experiments/{id}/report"))
        .await
        .json()
        .await
        .unwrap();
    for v in report["variants"].as_array().unwrap() {
        for (k, lift) in v.as_object().unwrap() {
            if k.ends_with("_lift") && lift.is_object() {
                let row = format!(
                    "data-variant=\"{}\" data-lift=\"{k}\"",
                    v["variant"].as_str().unwrap()
                );
                assert!(page.contains(&row), "no row for {row}");
            }
        }
        if let Some(verdict) = v["verdict"].as_str() {
            let html = verdict
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(page.contains(&html), "verdict {verdict:?} missing");
        }
    }
    assert!(page.contains("Corrected p-value"));
    let n = figures_match_the_api(&app, &page).await;
    assert!(n >= 30, "the experiment page shows {n} figures");

    screenshot(&app, "#/experiments", "experiments").await;
    screenshot(&app, &format!("#/experiment/{id}"), "experiment").await;
}

#[tokio::test]
async fn a_failing_split_shows_the_srm_banner() {
    let app = app_with_experiments().await;
    let spec: ExperimentSpec = app.state.engine().experiments[0].clone();
    let control = spec.control();
    // Every control member comes, one in five of the others: members per
    // variant no longer match the weights.
    let skewed =
        (1..=900u32).filter(|i| spec.assign(&format!("M{i:08}")) == Some(control) || i % 5 == 0);
    traffic(&app, skewed).await;
    let report: Value = app
        .get(&format!("/v1/experiments/{}/report", spec.id))
        .await
        .json()
        .await
        .unwrap();
    assert!(report["srm_p_value"].as_f64().unwrap() < 0.001, "{report}");
    let list = dom(&app, "#/experiments").await;
    assert!(list.contains("data-srm-failing"));
    let page = dom(&app, &format!("#/experiment/{}", spec.id)).await;
    assert!(page.contains("data-srm-failing") && page.contains("Sample-ratio mismatch"));
    figures_match_the_api(&app, &page).await;
    screenshot(&app, &format!("#/experiment/{}", spec.id), "experiment-srm").await;
}

#[tokio::test]
async fn without_a_key_the_console_asks_for_one_and_shows_no_data() {
    let mut settings = settings_with_master_key();
    settings.experiments.file = String::new();
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    traffic(&app, 1..=60).await;
    // The page itself is open; the data behind it is not.
    let r = app
        .client
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = dom_allowing(&app, "#/experiments", "status of 401").await;
    assert!(page.contains("data-needs-key") && page.contains("API key"));
    assert!(figures(&page).is_empty(), "figures without a key:\n{page}");
    assert!(!page.contains("nbo-model-vs-priority"));
    screenshot(&app, "#/experiments", "key").await;
}

/// Offers to the members `ids` on checkout, returning (offers shown per
/// offer id, accepts per offer id, declines per offer id): every second
/// member accepts its first offer, every fifth declines its last.
async fn offer_traffic(app: &TestApp, ids: impl Iterator<Item = u32>) -> [HashMap<String, u64>; 3] {
    let (mut shown, mut accepts, mut declines) = (HashMap::new(), HashMap::new(), HashMap::new());
    for i in ids {
        let id = format!("M{i:08}");
        let body: Value = app
            .post_offers(&offer_request(&id))
            .await
            .json()
            .await
            .unwrap();
        let offers = body["offers"].as_array().unwrap();
        for o in offers {
            *shown
                .entry(o["offer_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        if i % 2 == 0 {
            if let Some(o) = offers.first() {
                let mut e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "accept", "token": o["token"]});
                if o["price"].is_object() {
                    e["revenue"] = o["price"].clone();
                }
                assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
                *accepts
                    .entry(o["offer_id"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
        if i % 5 == 0 && offers.len() > 1 {
            let o = offers.last().unwrap();
            let e = json!({"decision_id": body["decision_id"], "offer_id": o["offer_id"], "type": "decline"});
            assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
            *declines
                .entry(o["offer_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    [shown, accepts, declines]
}

#[tokio::test]
async fn the_offers_and_campaigns_pages_show_the_apis_figures() {
    let app = app_with_experiments().await;
    let [shown, accepts, declines] = offer_traffic(&app, 1..=300).await;
    // A campaign, and accepts of the first offer of its first 7 lines.
    let r = app
        .post_json(
            "/v1/campaigns",
            &json!({"channel": "email", "offers": 2, "limit": 40, "campaign_id": "spring-wave"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    for l in lines.iter().take(7) {
        let o = &l["offers"][0];
        let mut e = json!({"decision_id": l["decision_id"], "offer_id": o["offer_id"], "type": "accept", "token": o["token"]});
        if o["price"].is_object() {
            e["revenue"] = o["price"].clone();
        }
        assert_eq!(app.post_json("/v1/events", &e).await.status(), 202);
    }
    // A second run, on a segment.
    let r = app
        .post_json(
            "/v1/campaigns",
            &json!({"channel": "email", "tiers": ["gold", "platinum"], "offers": 1, "limit": 10, "campaign_id": "gold-upsell"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 10);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // The API's figures are the traffic's: checkout counts per offer.
    let stats: Value = app.get("/v1/offers/stats").await.json().await.unwrap();
    let checkout: Vec<&Value> = stats["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"] == "checkout")
        .collect();
    assert_eq!(checkout.len(), shown.len(), "{stats}");
    for c in &checkout {
        let id = c["offer_id"].as_str().unwrap();
        let n = |m: &HashMap<String, u64>| m.get(id).copied().unwrap_or(0);
        assert_eq!(c["shown"], n(&shown), "{c}");
        assert_eq!(c["accepts"], n(&accepts), "{c}");
        assert_eq!(c["declines"], n(&declines), "{c}");
        let rate = c["accepts"].as_f64().unwrap() / c["shown"].as_f64().unwrap();
        let got = c["accept_rate"].as_f64().unwrap();
        assert!((got - rate).abs() <= 4.0 * f64::EPSILON, "{c}");
    }
    let email_accepts: u64 = stats["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"] == "email")
        .map(|c| c["accepts"].as_u64().unwrap())
        .sum();
    assert_eq!(email_accepts, 7, "{stats}");
    let runs: Value = app.get("/v1/campaigns/runs").await.json().await.unwrap();
    // Newest first.
    assert_eq!(runs["runs"][0]["campaign_id"], "gold-upsell");
    assert_eq!(runs["runs"][0]["members_written"], 10);
    assert_eq!(runs["runs"][0]["accepts"], 0);
    assert_eq!(
        runs["runs"][0]["segment"],
        r#"{"tiers":["gold","platinum"]}"#
    );
    let run = &runs["runs"][1];
    assert_eq!(run["campaign_id"], "spring-wave");
    assert_eq!(run["members_written"], 40);
    assert_eq!(run["accepts"], 7);
    assert!(run["members_scored"].as_u64().unwrap() >= 40, "{run}");

    let page = dom(&app, "#/offers").await;
    for (id, _) in shown.iter() {
        assert!(
            page.contains(&format!("data-offer=\"{id}\" data-channel=\"checkout\"")),
            "no row for {id}"
        );
    }
    for label in ["share of offers shown (%)", "offer · channel"] {
        assert!(page.contains(label), "no axis label {label:?}");
    }
    let n = figures_match_the_api(&app, &page).await;
    assert!(n >= 8 * checkout.len(), "the offers page shows {n} figures");

    let page = dom(&app, "#/campaigns").await;
    assert!(page.contains("data-campaign=\"spring-wave\""));
    let n = figures_match_the_api(&app, &page).await;
    assert_eq!(n, 10, "the campaigns page shows {n} figures");

    screenshot(&app, "#/offers", "offers").await;
    screenshot(&app, "#/campaigns", "campaigns").await;
}

#[tokio::test]
async fn the_offers_and_campaigns_pages_show_no_data_without_a_key() {
    let mut settings = settings_with_master_key();
    settings.experiments.file = String::new();
    let app = spawn_with(settings, std::sync::Arc::new(tempfile::tempdir().unwrap())).await;
    traffic(&app, 1..=20).await;
    for page in ["#/offers", "#/campaigns"] {
        let dom = dom_allowing(&app, page, "status of 401").await;
        assert!(dom.contains("data-needs-key") && dom.contains("API key"));
        assert!(figures(&dom).is_empty(), "figures without a key:\n{dom}");
    }
}
