//! `offer-engine serve`: the HTTP service.

use std::path::PathBuf;

use super::EngineFiles;

/// `serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration, catalog, model and experiments files.
    #[command(flatten)]
    pub files: EngineFiles,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    pub addr: Option<String>,
    /// Members NDJSON file (default: the embedded synthetic population).
    #[arg(long)]
    pub members: Option<PathBuf>,
    /// Data directory for the event log and snapshots (default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Size of the embedded synthetic population.
    #[arg(long)]
    pub synthetic_members: Option<u64>,
    /// Master key (holds every scope). Prefer the environment variable
    /// OFFER_ENGINE_MASTER_KEY: a flag shows in the process list.
    #[arg(long)]
    pub master_key: Option<String>,
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
