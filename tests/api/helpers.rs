//! `spawn_app()` starts the real server on 127.0.0.1:0 with a small embedded
//! synthetic population and returns a typed client.

use offer_engine::config::Settings;
use offer_engine::service::SharedState;
use offer_engine::startup::Application;
use serde_json::{json, Value};

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: SharedState,
    pub limits: actix_web::web::Data<offer_engine::http::limits::Limits>,
    /// Sent as `Authorization: Bearer` by every request helper (None in development mode).
    pub key: Option<String>,
    /// The separate `/metrics` listener's address, if configured.
    #[allow(dead_code)]
    pub metrics_address: Option<String>,
    /// The data dir; removed when the app is dropped (held, not read).
    #[allow(dead_code)]
    pub data_dir: std::sync::Arc<tempfile::TempDir>,
}

/// Synthetic members in the test server.
pub const TEST_MEMBERS: u64 = 3_000;

pub fn test_settings() -> Settings {
    let mut s = Settings::load(None, []).expect("defaults parse");
    s.server.addr = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.members.synthetic_count = TEST_MEMBERS;
    // No experiments (no holdout) unless a test asks for them: see experiments.rs.
    s.experiments.file = "/dev/null".into();
    // Reloads only when a test asks (the file watch has its own test).
    s.reload.watch_secs = 0;
    s
}

/// Settings running the compiled-in default experiments.
pub fn settings_with_default_experiments() -> Settings {
    let mut s = test_settings();
    s.experiments.file = String::new();
    s
}

/// A master key for tests (synthetic, like everything here).
#[allow(dead_code)]
pub const TEST_MASTER_KEY: &str = "test-master-key-0123456789";

/// Settings with a master key: every route needs a key.
#[allow(dead_code)]
pub fn settings_with_master_key() -> Settings {
    let mut s = test_settings();
    s.security.master_key = offer_engine::config::Secret(TEST_MASTER_KEY.into());
    s
}

/// A protected app whose request helpers send the master key.
#[allow(dead_code)]
pub async fn spawn_protected_app() -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    spawn_with(settings_with_master_key(), dir).await
}

pub async fn spawn_app() -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    spawn_with(test_settings(), dir).await
}

pub async fn spawn_with(
    mut settings: Settings,
    data_dir: std::sync::Arc<tempfile::TempDir>,
) -> TestApp {
    settings.durability.data_dir = data_dir.path().display().to_string();
    let key = settings
        .security
        .master_key
        .is_set()
        .then(|| settings.security.master_key.0.clone());
    let app = Application::build(settings).expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
    let state = app.state();
    let limits = app.limits();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        state,
        limits,
        key,
        metrics_address,
        data_dir,
    }
}

/// Copies an idle data dir, as a restart (or another instance) would find it
/// (the running server holds the original's lock).
#[allow(dead_code)]
pub fn copy_dir(from: &std::path::Path) -> std::sync::Arc<tempfile::TempDir> {
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
    }
    std::sync::Arc::new(copy)
}

/// A departure `days` from now, RFC 3339.
pub fn departure_in(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days) + chrono::Duration::hours(3)).to_rfc3339()
}

/// A valid checkout request body.
pub fn offer_request(member_id: &str) -> Value {
    json!({
        "member_id": member_id,
        "channel": "checkout",
        "itinerary": {
            "origin": "PEK",
            "destination": "SHA",
            "departure": departure_in(10),
            "cabin": "economy",
            "fare": {"amount": 1280.0, "currency": "CNY"},
            "passengers": 1
        }
    })
}

impl TestApp {
    /// A request builder with the app's key, if it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let b = self
            .client
            .request(method, format!("{}{path}", self.address));
        match &self.key {
            Some(k) => b.bearer_auth(k),
            None => b,
        }
    }

    pub async fn post_offers(&self, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/v1/offers")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request sent")
    }

    /// The first member of the population matching `pred`.
    pub fn find_member(&self, pred: impl Fn(&offer_engine::domain::Member) -> bool) -> String {
        let mut found = None;
        self.state.state().members().for_each(|id, m| {
            if found.is_none() && pred(m) {
                found = Some(id.to_string());
            }
        });
        found.expect("a member matching the predicate exists in the test population")
    }
}

/// Asserts a problem+json answer with `status` that names `field`.
pub async fn assert_problem(resp: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["type"].is_string(),
        "{body}"
    );
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{body}");
    }
    body
}

/// The `field` of every error in a problem's `errors`, in order.
#[allow(dead_code)]
pub fn error_fields(p: &Value) -> Vec<&str> {
    p["errors"]
        .as_array()
        .expect("a problem with errors")
        .iter()
        .map(|e| e["field"].as_str().expect("each error names its field"))
        .collect()
}
