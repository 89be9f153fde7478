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
use crate::metrics::Metrics;
use crate::model::ModelFile;
use crate::state::{AppState, SharedState};
use crate::store::MemberStore;
use crate::synth;

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    state: SharedState,
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

/// Loads members named by the settings, or generates the synthetic population.
pub fn load_members(settings: &Settings) -> anyhow::Result<MemberStore> {
    let m = &settings.members;
    if m.file.is_empty() {
        let store = MemberStore::with_capacity(m.synthetic_count as usize);
        let as_of = chrono::Utc::now().date_naive();
        populate_synthetic(
            &store,
            m.synthetic_seed,
            m.synthetic_count,
            as_of,
            &settings.tiers,
        );
        tracing::info!(
            members = store.len(),
            seed = m.synthetic_seed,
            "generated the embedded synthetic population (no file given)"
        );
        return Ok(store);
    }
    let f =
        std::fs::File::open(&m.file).with_context(|| format!("opening members file {}", m.file))?;
    let store = MemberStore::new();
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
    Ok(store)
}

impl Application {
    /// Loads state and binds the listener; does not serve yet.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let catalog = load_catalog(&settings)?;
        let model = load_model(&settings)?;
        let members = load_members(&settings)?;
        let engine = Engine::new(catalog, model, settings.tiers);
        let listener = TcpListener::bind(&settings.server.addr)
            .with_context(|| format!("binding {}", settings.server.addr))?;
        let port = listener.local_addr()?.port();
        let state: SharedState = Arc::new(AppState {
            members,
            engine: ArcSwap::from_pointee(engine),
            metrics: Metrics::new(),
            settings: settings.clone(),
            ready: AtomicBool::new(false),
        });
        state.metrics.members.set(state.members.len() as i64);
        let data = web::Data::new(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(middleware::from_fn(crate::http::track_requests))
                .configure(crate::http::configure)
        })
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.shutdown_timeout(10).run();
        state.ready.store(true, Ordering::Release);
        tracing::info!(addr = %settings.server.addr, port, "listening");
        Ok(Application {
            port,
            server,
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state (for tests and embedding).
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serves until the server stops (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
