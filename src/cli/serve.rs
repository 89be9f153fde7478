//! `offer-engine serve`: the HTTP service.

use std::path::PathBuf;

use super::EngineFiles;

/// `serve` flags. Settings come from the built-in defaults
/// (`config/default.toml`), then `--config FILE`, then environment variables,
/// then these flags; a flag's environment variable (shown as `[env: ...]`)
/// sets the same setting as the flag.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without a master key the service runs in development mode: nothing is protected and \
it listens on loopback only (127.0.0.1, ::1, localhost); a non-loopback --addr (e.g. \
0.0.0.0:8080) is refused at start unless a master key is set (OFFER_ENGINE_MASTER_KEY). \
Any setting can be given as OFFER_ENGINE__SECTION__KEY (e.g. OFFER_ENGINE__SERVER__WORKERS=4).

The data dir is locked while the service runs: `campaign --data-dir` and `train --data-dir` \
need it stopped (or work on a copy of the directory).

Documentation: README.md (sections Security, Configuration, Durability) in the repository.")]
pub struct ServeArgs {
    /// Configuration, catalog, model and experiments files.
    #[command(flatten)]
    pub files: EngineFiles,
    /// Listen address [default: 127.0.0.1:8080]. Anything but a loopback
    /// address needs a master key (OFFER_ENGINE_MASTER_KEY).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "OFFER_ENGINE__SERVER__ADDR",
        hide_env_values = true
    )]
    pub addr: Option<String>,
    /// Members NDJSON file, read on the first start on an empty data dir only
    /// [default: the embedded synthetic population].
    #[arg(
        long,
        value_name = "FILE",
        env = "OFFER_ENGINE__MEMBERS__FILE",
        hide_env_values = true
    )]
    pub members: Option<PathBuf>,
    /// Data directory for the event log and snapshots, locked while the
    /// service runs [default: ./data].
    #[arg(
        long,
        value_name = "DIR",
        env = "OFFER_ENGINE__DURABILITY__DATA_DIR",
        hide_env_values = true
    )]
    pub data_dir: Option<PathBuf>,
    /// Size of the embedded synthetic population [default: 100000].
    #[arg(
        long,
        value_name = "N",
        env = "OFFER_ENGINE__MEMBERS__SYNTHETIC_COUNT",
        hide_env_values = true
    )]
    pub synthetic_members: Option<u64>,
    /// Master key (holds every scope, at least 16 characters; none =
    /// development mode). Prefer the environment variable: a flag shows in
    /// the process list.
    #[arg(
        long,
        value_name = "KEY",
        env = "OFFER_ENGINE_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Cluster mode: NATS servers, comma-separated
    /// (`nats://HOST:PORT[,nats://...]`); the replicas share one JetStream
    /// stream as their log [default: off, the local log].
    #[arg(
        long = "nats",
        value_name = "URLS",
        env = "OFFER_ENGINE__CLUSTER__NATS_URLS",
        hide_env_values = true
    )]
    pub nats: Option<String>,
    /// Cluster mode: the JetStream stream's name [default: OFFERS].
    #[arg(
        long,
        value_name = "NAME",
        env = "OFFER_ENGINE__CLUSTER__STREAM",
        hide_env_values = true
    )]
    pub stream: Option<String>,
}

/// Runs `serve`.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let mut settings = a.files.settings()?;
    if let Some(addr) = a.addr {
        settings.server.addr = addr;
    }
    if let Some(m) = a.members {
        settings.members.file = m.display().to_string();
    }
    if let Some(d) = a.data_dir {
        settings.durability.data_dir = d.display().to_string();
    }
    if let Some(n) = a.synthetic_members {
        settings.members.synthetic_count = n;
    }
    if let Some(k) = a.master_key {
        settings.security.master_key = crate::config::Secret(k);
    }
    if let Some(n) = a.nats {
        settings.cluster.nats_urls = n;
    }
    if let Some(s) = a.stream {
        settings.cluster.stream = s;
    }
    crate::telemetry::init(&settings.log.filter, settings.log.format == "json");
    let workers = settings.server.workers;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let app = crate::startup::Application::build(settings)?;
        app.run_until_stopped().await?;
        Ok(())
    })
}
