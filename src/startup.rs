//! Building and running the service: load members, catalog and model, bind
//! the listener (port 0 works: tests read the port back), serve.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use arc_swap::ArcSwap;
use chrono::NaiveDate;

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::decision::Engine;
use crate::domain::TierThresholds;
use crate::durable::Core;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::model::ModelFile;
use crate::state::{AppState, SharedState};
use crate::store::MemberStore;
use crate::synth;
use crate::wal::{Wal, WalOptions};

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    state: SharedState,
    /// The separate `/metrics` listener, when configured: (port, server).
    metrics: Option<(u16, actix_web::dev::ServerHandle)>,
}

/// Whether every address `addr` resolves to is a loopback address.
fn loopback_only(addr: &str) -> anyhow::Result<bool> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

/// Development mode (no master key) listens on loopback only: a service
/// that protects nothing must not be reachable from another machine.
pub fn check_development_mode(settings: &Settings) -> anyhow::Result<()> {
    let mut addrs = vec![settings.server.addr.as_str()];
    if !settings.server.metrics_addr.is_empty() {
        addrs.push(settings.server.metrics_addr.as_str());
    }
    for addr in addrs {
        if !loopback_only(addr)? {
            anyhow::bail!(
                "refusing to listen on {addr} in development mode: without a master key nothing \
                 is protected, so only loopback addresses are allowed. Set OFFER_ENGINE_MASTER_KEY \
                 (or --master-key) to serve on other addresses"
            );
        }
    }
    tracing::warn!(
        addr = %settings.server.addr,
        "DEVELOPMENT MODE: no master key is set, so NOTHING IS PROTECTED: every route answers \
         without an API key and offer tokens are signed with a public key. Listening on \
         loopback only. Set OFFER_ENGINE_MASTER_KEY for production"
    );
    Ok(())
}

/// Fills `store` with the synthetic population, in parallel.
pub fn populate_synthetic(
    store: &MemberStore,
    seed: u64,
    count: u64,
    as_of: NaiveDate,
    th: &TierThresholds,
) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let chunk = count.div_ceil(threads.max(1));
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                let end = ((t + 1) * chunk).min(count);
                for i in t * chunk..end {
                    store.upsert(&synth::member_id(i), synth::member(seed, i, as_of, th));
                }
            });
        }
    });
}

/// Loads the catalog named by the settings (or the compiled-in one).
pub fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    if settings.catalog.file.is_empty() {
        return Ok(Catalog::default_catalog());
    }
    let text = std::fs::read_to_string(&settings.catalog.file)
        .with_context(|| format!("reading catalog {}", settings.catalog.file))?;
    Catalog::from_toml(&text).with_context(|| format!("catalog {}", settings.catalog.file))
}

/// Loads the model named by the settings (or the compiled-in one).
pub fn load_model(settings: &Settings) -> anyhow::Result<ModelFile> {
    if settings.model.file.is_empty() {
        return Ok(ModelFile::default_model());
    }
    let text = std::fs::read_to_string(&settings.model.file)
        .with_context(|| format!("reading model {}", settings.model.file))?;
    ModelFile::from_json(&text).with_context(|| format!("model {}", settings.model.file))
}

/// Loads the experiments named by the settings (or the compiled-in ones).
pub fn load_experiments(
    settings: &Settings,
) -> anyhow::Result<Vec<crate::experiments::ExperimentSpec>> {
    let text = if settings.experiments.file.is_empty() {
        crate::experiments::DEFAULT_EXPERIMENTS.to_string()
    } else {
        std::fs::read_to_string(&settings.experiments.file)
            .with_context(|| format!("reading experiments {}", settings.experiments.file))?
    };
    crate::experiments::parse_experiments(&text)
        .map_err(|e| anyhow::anyhow!("experiments {}: {e}", settings.experiments.file))
}

/// Loads the model files experiment variants name (each once).
pub fn load_variant_models(
    experiments: &[crate::experiments::ExperimentSpec],
) -> anyhow::Result<Vec<(String, ModelFile)>> {
    let mut out: Vec<(String, ModelFile)> = Vec::new();
    for e in experiments {
        for v in &e.variants {
            let Some(path) = &v.model else { continue };
            if out.iter().any(|(p, _)| p == path) {
                continue;
            }
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading model {path} of experiment {} variant {}",
                    e.id, v.name
                )
            })?;
            let model = ModelFile::from_json(&text).with_context(|| {
                format!("model {path} of experiment {} variant {}", e.id, v.name)
            })?;
            out.push((path.clone(), model));
        }
    }
    Ok(out)
}

/// Loads members named by the settings into `store`, or generates the synthetic population.
pub fn load_members(settings: &Settings, store: &MemberStore) -> anyhow::Result<()> {
    let m = &settings.members;
    if m.file.is_empty() {
        let as_of = chrono::Utc::now().date_naive();
        populate_synthetic(
            store,
            m.synthetic_seed,
            m.synthetic_count,
            as_of,
            &settings.tiers,
        );
        tracing::info!(
            members = store.len(),
            seed = m.synthetic_seed,
            "generated the embedded synthetic population (no members file given)"
        );
        return Ok(());
    }
    let f =
        std::fs::File::open(&m.file).with_context(|| format!("opening members file {}", m.file))?;
    let report = store
        .load_ndjson(std::io::BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("reading members file {}", m.file))?;
    for e in &report.errors {
        tracing::warn!(file = %m.file, line = e.line, field = e.field.as_deref().unwrap_or(""), message = %e.message, "member line rejected");
    }
    if report.rejected > 0 {
        tracing::warn!(
            file = %m.file,
            rejected = report.rejected,
            shown = report.errors.len(),
            "some member lines were rejected; the rest were loaded"
        );
    }
    tracing::info!(file = %m.file, loaded = report.loaded, lines = report.lines, "members loaded");
    Ok(())
}

/// Opens the data directory: replays the log into a fresh [`Core`]; on a
/// new directory loads the initial members and writes the first snapshot.
/// Holds the data directory's lock file: one process per data dir.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] std::fs::File);

/// Opens the data directory: takes its lock (a second process on the same
/// directory is refused), replays the log into a fresh [`Core`]; on a new
/// directory loads the initial members and writes the first snapshot.
pub fn open_state(settings: &Settings) -> anyhow::Result<(Core, Wal, DirLock)> {
    let d = &settings.durability;
    let core = Core {
        members: MemberStore::new(),
        ledger: Ledger::new(d.max_decisions),
        thresholds: settings.tiers,
        experiments: Default::default(),
        learner: crate::online::OnlineLearner::new(settings.learning),
    };
    // Offers the log mentions start from the shipped model's coefficients.
    let prior_catalog = Arc::new(load_catalog(settings)?);
    let prior_table = crate::model::ScoringTable::new(&load_model(settings)?, &prior_catalog);
    core.learner.set_prior(prior_catalog, Arc::new(prior_table));
    let dir = std::path::Path::new(&d.data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let lock_file = lock_data_dir(dir)?;
    let opts = WalOptions {
        fsync: d.fsync,
        ..WalOptions::default()
    };
    let (wal, report) = crate::durable::open(dir, opts, &core)
        .with_context(|| format!("opening the event log in {}", dir.display()))?;
    if report.snapshot_lsn.is_none() && report.last_lsn == 0 {
        load_members(settings, &core.members)?;
        let snap = core.clone();
        wal.snapshot_blocking(move || snap.snapshot_bytes())
            .context("writing the first snapshot")?;
        tracing::info!(dir = %dir.display(), members = core.members.len(), "new data dir initialised");
    } else if !settings.members.file.is_empty() {
        tracing::warn!(
            file = %settings.members.file,
            dir = %dir.display(),
            "the data dir already holds state; the members file is not read (use POST /v1/members to load more)"
        );
    }
    Ok((core, wal, DirLock(lock_file)))
}

/// One start-up line naming what will decide: the catalog, model and
/// experiments versions and where each came from.
fn log_loaded(settings: &Settings, engine: &Engine) {
    let source = |file: &str| {
        if file.is_empty() {
            "compiled-in default".to_string()
        } else {
            file.to_string()
        }
    };
    let experiments = if engine.experiments.is_empty() {
        "none".to_string()
    } else {
        engine
            .experiments
            .iter()
            .map(|e| {
                let variants: Vec<String> = e
                    .variants
                    .iter()
                    .map(|v| format!("{} {}", v.name, v.weight))
                    .collect();
                format!("{} (salt {}: {})", e.id, e.salt, variants.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    tracing::info!(
        catalog_version = %engine.catalog.version,
        offers = engine.catalog.offers.len(),
        catalog = %source(&settings.catalog.file),
        model_version = %engine.table.version,
        model = %source(&settings.model.file),
        experiments = %experiments,
        experiments_file = %source(&settings.experiments.file),
        "loaded catalog, model and experiments"
    );
}

impl Application {
    /// Loads state and binds the listener; does not serve yet. Must be called
    /// inside a tokio runtime (it starts the periodic snapshot task).
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let security = crate::auth::Security::from_settings(
            &settings.security,
            crate::auth::RateDefaults {
                requests_per_second: settings.limits.requests_per_second,
                burst: settings.limits.burst,
            },
        )
        .context("security settings")?;
        if security.development_mode() {
            check_development_mode(&settings)?;
        } else {
            tracing::info!(
                keys = settings.security.keys.len(),
                "API keys required (master key and scoped keys)"
            );
        }
        let limits = crate::http::limits::Limits::new(&settings.limits);
        let catalog = load_catalog(&settings)?;
        let model = load_model(&settings)?;
        let (core, wal, lock) = open_state(&settings)?;
        let experiments = load_experiments(&settings)?;
        let variant_models = load_variant_models(&experiments)?;
        let engine = Engine::new(catalog, model, settings.tiers)
            .with_experiments(experiments)
            .with_variant_models(variant_models);
        core.learner
            .set_prior(engine.catalog.clone(), engine.table.clone());
        log_loaded(&settings, &engine);
        let listener = TcpListener::bind(&settings.server.addr)
            .with_context(|| format!("binding {}", settings.server.addr))?;
        let port = listener.local_addr()?.port();
        let state: SharedState = Arc::new(AppState {
            core,
            wal,
            engine: ArcSwap::from_pointee(engine),
            metrics: Metrics::new(),
            settings: settings.clone(),
            ready: AtomicBool::new(false),
            data_lock: lock,
            security,
            limits,
        });
        state.metrics.members.set(state.core.members.len() as i64);
        state.metrics.init_error_series();
        state.metrics.seed_experiments(&state.core.experiments);
        let data = web::Data::new(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                // The last wrapped runs first: count, then authorise, then limit.
                .wrap(middleware::from_fn(crate::http::limits::limit))
                .wrap(middleware::from_fn(crate::http::auth::authorize))
                .wrap(middleware::from_fn(crate::http::track_requests))
                .configure(crate::http::configure)
        })
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.shutdown_timeout(10).run();
        let metrics = if settings.server.metrics_addr.is_empty() {
            None
        } else {
            let l = TcpListener::bind(&settings.server.metrics_addr)
                .with_context(|| format!("binding {}", settings.server.metrics_addr))?;
            let port = l.local_addr()?.port();
            let data = web::Data::new(state.clone());
            // Only /metrics, without a key: meant for a private scrape network.
            let s = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route("/metrics", web::get().to(crate::http::metrics_endpoint))
            })
            .listen(l)?
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .run();
            tracing::info!(addr = %settings.server.metrics_addr, port, "serving /metrics");
            let handle = s.handle();
            tokio::spawn(s);
            Some((port, handle))
        };
        spawn_snapshots(&state);
        crate::reload::spawn_file_watch(&state);
        state.ready.store(true, Ordering::Release);
        tracing::info!(addr = %settings.server.addr, port, "listening");
        Ok(Application {
            port,
            server,
            state,
            metrics,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` listener, if configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(p, _)| *p)
    }

    /// Shared state (for tests and embedding).
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serves until the server stops (SIGINT/SIGTERM), then writes a final snapshot.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some((_, m)) = &self.metrics {
            m.stop(true).await;
        }
        let core = self.state.core.clone();
        match self.state.wal.snapshot(move || core.snapshot_bytes()).await {
            Ok(lsn) => tracing::info!(lsn, "final snapshot written"),
            Err(e) => {
                tracing::error!(error = %e, "final snapshot failed; the log still holds every write")
            }
        }
        self.state.wal.close();
        result
    }
}

/// Takes the data dir's LOCK (held while the returned file is open): one
/// process at a time may open an event log, since opening repairs a torn tail.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .with_context(|| format!("opening the lock file in {}", dir.display()))?;
    if lock_file.try_lock().is_err() {
        anyhow::bail!(
            "data dir {} is in use by another offer-engine process (its LOCK file is held); stop it first",
            dir.display()
        );
    }
    Ok(lock_file)
}

/// Writes a snapshot every `snapshot_interval_secs`.
fn spawn_snapshots(state: &SharedState) {
    let secs = state.settings.durability.snapshot_interval_secs.max(1);
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            // Outlived decisions leave memory before they would be copied.
            state
                .core
                .ledger
                .decisions
                .evict_expired(chrono::Utc::now().timestamp_millis());
            let core = state.core.clone();
            let started = std::time::Instant::now();
            match state.wal.snapshot(move || core.snapshot_bytes()).await {
                Ok(lsn) => tracing::info!(
                    lsn,
                    seconds = started.elapsed().as_secs_f64(),
                    "snapshot written"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "snapshot failed; will retry at the next interval")
                }
            }
        }
    });
}
