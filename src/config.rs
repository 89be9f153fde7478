//! Layered configuration: compiled-in defaults (`config/default.toml`), then
//! an optional file, then environment variables `OFFER_ENGINE__SECTION__KEY`,
//! then command-line flags. The result is one typed [`Settings`].

use serde::{Deserialize, Serialize};

use crate::domain::TierThresholds;

/// Compiled-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML did not parse or did not fit the schema.
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub addr: String,
    /// Body size limit, bytes.
    pub max_body_bytes: usize,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Bulk upload size limit, bytes.
    pub max_bulk_bytes: usize,
    /// Also serve `GET /metrics`, without a key, on this address (empty: no).
    pub metrics_addr: String,
}

/// Event log and snapshots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySettings {
    /// Directory of the log and snapshots.
    pub data_dir: String,
    /// Seconds between snapshots.
    pub snapshot_interval_secs: u64,
    /// fsync before acknowledging.
    pub fsync: bool,
    /// Most decisions remembered.
    pub max_decisions: u64,
}

/// Cluster mode: replicas sharing one NATS JetStream stream as their log
/// (see `docs/cluster.md`). Off while `nats_urls` is empty: the embedded
/// local log is then the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,nats://...`);
    /// empty: cluster mode is off.
    pub nats_urls: String,
    /// The JetStream stream holding the records (created if missing).
    pub stream: String,
    /// Copies JetStream keeps of the stream when it creates it (3 in
    /// production; at most the number of NATS servers).
    pub replicas: usize,
    /// Seconds a retried publish with the same `Nats-Msg-Id` is stored once.
    pub duplicate_window_secs: u64,
    /// Milliseconds a write waits for JetStream's acknowledgement, retries
    /// included, before it is answered 503.
    pub publish_timeout_ms: u64,
    /// Seconds between shared snapshots: after writing a local snapshot a
    /// replica puts it into the `<stream>_SNAPSHOTS` object store when the
    /// newest shared one is at least this old (0: never share, and so never
    /// trim the stream: the replica that uploads trims).
    pub shared_snapshot_interval_secs: u64,
    /// Shared snapshots kept (the newest; at least 2, so one is left to
    /// fall back on when the newest is unreadable).
    pub shared_snapshots_kept: usize,
    /// Seconds the oldest kept shared snapshot must have existed before the
    /// stream is purged up to its sequence (0: at once; never purged while
    /// fewer than 2 shared snapshots exist).
    pub trim_after_secs: u64,
    /// Milliseconds a checkout waits for its decision to be acknowledged
    /// and applied here before it answers anyway (the decision then waits
    /// in the outbox or is still on its way): a sale never waits on NATS.
    pub checkout_publish_budget_ms: u64,
    /// Most bytes of decisions the outbox holds while they cannot be
    /// published; beyond it the oldest is dropped (and counted).
    pub outbox_max_bytes: u64,
    /// Seconds since this replica last confirmed it held the stream's end
    /// beyond which `/readyz` answers 503 (checkout still answers).
    pub max_stale_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            nats_urls: String::new(),
            stream: "OFFERS".into(),
            replicas: 3,
            duplicate_window_secs: 120,
            publish_timeout_ms: 10_000,
            shared_snapshot_interval_secs: 300,
            shared_snapshots_kept: 3,
            trim_after_secs: 3600,
            checkout_publish_budget_ms: 50,
            outbox_max_bytes: 64 << 20,
            max_stale_secs: 60,
        }
    }
}

impl ClusterSettings {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.nats_urls.trim().is_empty()
    }

    /// The server URLs, trimmed, empty entries dropped.
    pub fn urls(&self) -> Vec<String> {
        self.nats_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Offers per member per day, by channel.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerChannel {
    /// Checkout.
    pub checkout: u16,
    /// App.
    pub app: u16,
    /// Email.
    pub email: u16,
    /// Kiosk.
    pub kiosk: u16,
    /// SMS.
    pub sms: u16,
}

impl PerChannel {
    /// The cap of a channel.
    pub fn of(&self, c: crate::domain::Channel) -> u16 {
        use crate::domain::Channel::*;
        match c {
            Checkout => self.checkout,
            App => self.app,
            Email => self.email,
            Kiosk => self.kiosk,
            Sms => self.sms,
        }
    }
}

/// Contact policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactSettings {
    /// Default suppression after a decline, days.
    pub suppress_days_after_decline: u32,
    /// Daily caps per channel.
    pub max_offers_per_day: PerChannel,
}

/// Where members come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    /// NDJSON file, empty for the synthetic population.
    pub file: String,
    /// Synthetic population size.
    pub synthetic_count: u64,
    /// Synthetic population seed.
    pub synthetic_seed: u64,
}

/// A file setting that may be empty (use the compiled-in default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSetting {
    /// Path, or empty.
    pub file: String,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

/// A secret setting: never printed by `Debug` (settings are logged).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Secret {
    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Access control and privacy (README, *Security*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Master key; empty = development mode. `OFFER_ENGINE_MASTER_KEY` sets it.
    pub master_key: Secret,
    /// Secret the offer-token key is derived from; empty = from the master key.
    pub token_key: Secret,
    /// Log member ids in clear instead of keyed pseudonyms (debugging only).
    pub log_member_ids: bool,
    /// Scoped keys (salted hashes, from `offer-engine keys new`).
    pub keys: Vec<KeySpec>,
}

/// Hot reload of the catalog, model and experiments files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSettings {
    /// Seconds between checks of the files for changes; 0 turns the watch off.
    pub watch_secs: u64,
}

/// Limits and degradation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests per second per key (0 = unlimited).
    pub requests_per_second: f64,
    /// Requests a key may make at once above the rate.
    pub burst: f64,
    /// Requests served at once before 503 (0 = unlimited).
    pub max_concurrent_requests: usize,
    /// A request still running after this many milliseconds gets 503.
    pub request_timeout_ms: u64,
    /// A checkout that has already spent this many milliseconds before
    /// scoring answers with the fallback offers.
    pub fallback_after_ms: u64,
    /// Most events in one `POST /v1/events` batch.
    pub max_batch_events: usize,
}

/// All settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Members.
    pub members: MemberSettings,
    /// Catalog.
    pub catalog: FileSetting,
    /// Model.
    pub model: FileSetting,
    /// Experiments.
    pub experiments: FileSetting,
    /// Hot reload of catalog, model and experiments.
    pub reload: ReloadSettings,
    /// Tier thresholds.
    pub tiers: TierThresholds,
    /// Event log.
    pub durability: DurabilitySettings,
    /// Contact policy.
    pub contact: ContactSettings,
    /// Logging.
    pub log: LogSettings,
    /// Access control and privacy.
    pub security: SecuritySettings,
    /// Limits and degradation.
    pub limits: LimitSettings,
    /// Answers kept for retries with an `Idempotency-Key`.
    #[serde(default)]
    pub idempotency: crate::service::idempotency::IdempotencySettings,
    /// Adaptive models and delayed rewards.
    #[serde(default)]
    pub learning: crate::state::learner::LearnSettings,
    /// Cluster mode (off unless `nats_urls` is set).
    #[serde(default)]
    pub cluster: ClusterSettings,
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parses an environment value as a TOML scalar when it is one (numbers,
/// booleans), as a string otherwise.
fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

impl Settings {
    /// Loads defaults, then `file`, then the given environment variables.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut v: toml::Value =
            toml::from_str(DEFAULTS).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let over: toml::Value = toml::from_str(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut v, over);
        }
        for (k, val) in env {
            // Meilisearch-style: the one secret an operator must set has a short name.
            if k == "OFFER_ENGINE_MASTER_KEY" {
                let mut t = toml::Table::new();
                t.insert("master_key".into(), toml::Value::String(val));
                let mut over = toml::Table::new();
                over.insert("security".into(), toml::Value::Table(t));
                merge(&mut v, toml::Value::Table(over));
                continue;
            }
            let Some(rest) = k.strip_prefix("OFFER_ENGINE__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let mut over = env_value(&val);
            for p in parts.iter().rev() {
                let mut t = toml::Table::new();
                t.insert(p.clone(), over);
                over = toml::Value::Table(t);
            }
            merge(&mut v, over);
        }
        let s: Settings = v
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        s.tiers
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::load(None, []).unwrap();
        assert_eq!(s.server.addr, "127.0.0.1:8080");
        assert_eq!(s.tiers, TierThresholds::default());
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\naddr = \"127.0.0.1:9\"\nworkers = 2\n").unwrap();
        let s = Settings::load(
            Some(&f),
            [("OFFER_ENGINE__SERVER__WORKERS".to_string(), "3".to_string())],
        )
        .unwrap();
        assert_eq!(s.server.addr, "127.0.0.1:9");
        assert_eq!(s.server.workers, 3);
    }

    #[test]
    fn unknown_keys_and_bad_tiers_are_refused() {
        let bad = [("OFFER_ENGINE__SERVER__ADRR".to_string(), "x".to_string())];
        assert!(Settings::load(None, bad).is_err());
        let bad = [("OFFER_ENGINE__TIERS__GOLD".to_string(), "5".to_string())];
        assert!(Settings::load(None, bad).is_err());
    }

    #[test]
    fn the_downgrade_rule_is_configured_under_tiers() {
        let s = Settings::load(None, []).unwrap();
        assert_eq!(s.tiers.downgrade, crate::domain::DowngradeRule::Anniversary);
        assert_eq!(s.tiers.grace_months, 3);
        let s = Settings::load(
            None,
            [
                (
                    "OFFER_ENGINE__TIERS__DOWNGRADE".to_string(),
                    "grace".to_string(),
                ),
                (
                    "OFFER_ENGINE__TIERS__GRACE_MONTHS".to_string(),
                    "2".to_string(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(s.tiers.downgrade, crate::domain::DowngradeRule::Grace);
        assert_eq!(s.tiers.grace_months, 2);
        for (k, v) in [("DOWNGRADE", "never"), ("GRACE_MONTHS", "25")] {
            let bad = [(format!("OFFER_ENGINE__TIERS__{k}"), v.to_string())];
            assert!(Settings::load(None, bad).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn the_master_key_comes_from_its_variable_and_is_never_printed() {
        let s = Settings::load(None, []).unwrap();
        assert!(
            !s.security.master_key.is_set(),
            "development mode by default"
        );
        let s = Settings::load(
            None,
            [(
                "OFFER_ENGINE_MASTER_KEY".to_string(),
                "correct-horse-battery-staple".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(s.security.master_key.0, "correct-horse-battery-staple");
        assert!(!format!("{s:?}").contains("correct-horse"));
    }
}

/// A scoped key as written in the configuration (`[[security.keys]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// The id embedded in the key (12 hex digits).
    pub id: String,
    /// Scope names.
    pub scopes: Vec<String>,
    /// Random salt, hex.
    pub salt: String,
    /// `HMAC-SHA256(salt, key)`, hex.
    pub hash: String,
    /// Requests per second this key may make (overrides `limits.requests_per_second`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Burst this key may use at once (overrides `limits.burst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}
