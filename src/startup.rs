//! Building and running the service: load members, catalog and model, bind
//! the listener (port 0 works: tests read the port back), serve.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use chrono::NaiveDate;

use crate::config::Settings;
use crate::decision::Engine;
use crate::domain::TierThresholds;
use crate::durable::{DirLock, Durable, LocalLog};
use crate::http::limits::Limits;
use crate::metrics::Metrics;
use crate::service::reload::build_engine;
use crate::service::{Service, ServiceParts, SharedState};
use crate::state::members::MemberStore;
use crate::state::{State, StateSettings};
use crate::synth;
use offer_engine_wal::WalOptions;

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    state: SharedState,
    /// The concurrency cap and deadline the HTTP middleware applies.
    limits: web::Data<Limits>,
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

/// Opens the data directory: takes its lock (a second process on the same
/// directory is refused), replays the log into a fresh [`State`]; on a new
/// directory loads the initial members and writes the first snapshot.
/// Returns the commit path over the local log, observed by `observer`.
pub fn open_state(
    settings: &Settings,
    observer: Arc<dyn crate::durable::Observer>,
) -> anyhow::Result<(Durable, DirLock)> {
    open_state_with(settings, observer, CatchUp::Wait)
}

/// Cluster mode: whether opening the state waits until the replica applied
/// the stream's end as of its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Block until caught up (tools that work on the whole state).
    Wait,
    /// Return at once; [`crate::durable::cluster::ClusterStatus::caught_up`]
    /// tells when (the service answers `/readyz` meanwhile).
    InBackground,
}

/// [`open_state`], choosing whether to wait for a cluster replica's
/// catch-up.
pub fn open_state_with(
    settings: &Settings,
    observer: Arc<dyn crate::durable::Observer>,
    catch_up: CatchUp,
) -> anyhow::Result<(Durable, DirLock)> {
    let d = &settings.durability;
    let state = State::new(StateSettings {
        max_decisions: d.max_decisions,
        thresholds: settings.tiers,
        learning: settings.learning,
    });
    // Offers the log mentions start from the shipped model's coefficients.
    let engine = build_engine(settings)?;
    state
        .learner()
        .set_prior(engine.catalog.clone(), engine.table.clone());
    // Loyalty windows before replay: member events count as they did live.
    state.experiments().set_loyalty_windows(&engine.experiments);
    let dir = std::path::Path::new(&d.data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let lock = DirLock::take(dir)?;
    if settings.cluster.enabled() {
        let durable = open_cluster(settings, dir, state, observer, catch_up)?;
        return Ok((durable, lock));
    }
    let opts = WalOptions {
        fsync: d.fsync,
        ..WalOptions::default()
    };
    let (wal, report) = crate::durable::open(dir, opts, &state)
        .with_context(|| format!("opening the event log in {}", dir.display()))?;
    let durable = Durable::new(Arc::new(LocalLog(wal)), state, observer);
    if report.snapshot_lsn.is_none() && report.last_lsn == 0 {
        load_members(settings, durable.state().members())?;
        durable
            .snapshot_blocking()
            .context("writing the first snapshot")?;
        tracing::info!(dir = %dir.display(), members = durable.state().members().len(), "new data dir initialised");
    } else if !settings.members.file.is_empty() {
        tracing::warn!(
            file = %settings.members.file,
            dir = %dir.display(),
            "the data dir already holds state; the members file is not read (use POST /v1/members to load more)"
        );
    }
    Ok((durable, lock))
}

/// Records of at most this many bytes carry the initial population into an
/// empty stream (the NATS server takes 1 MiB a message by default).
const INITIAL_CHUNK_BYTES: usize = 512 * 1024;

/// Cluster mode: joins the stream, restoring the newest usable snapshot
/// (this replica's or one shared through the stream's object store;
/// publishing the initial population if the stream is empty and there is
/// none) and applies the stream from the snapshot's sequence to its end as
/// of now, waiting for that or not (`catch_up`).
fn open_cluster(
    settings: &Settings,
    dir: &std::path::Path,
    state: State,
    observer: Arc<dyn crate::durable::Observer>,
    catch_up: CatchUp,
) -> anyhow::Result<Durable> {
    use crate::durable::cluster::{Initial, NatsLog};
    use crate::state::LogRecord;
    let restorer = state.clone();
    let heard = observer.clone();
    // The experiment counters start from the snapshot; the records applied
    // after it (catch-up included) reach the observer one by one.
    let restore = move |bytes: &[u8], seq: u64| {
        restorer.restore(bytes, seq)?;
        heard.restored(&restorer);
        Ok(())
    };
    let applier = state.clone();
    let seen = observer.clone();
    let apply: crate::durable::cluster::Apply = Arc::new(move |payload: &[u8], seq: u64| {
        match LogRecord::decode(payload) {
            Ok(rec) => {
                let applied = applier.apply(&rec, seq, false);
                seen.applied(crate::durable::record_kind(&rec), &rec, &applied);
            }
            // Every replica skips the same undecodable record: the states
            // stay equal; the position still advances.
            Err(e) => tracing::error!(seq, error = %e, "a stream record does not decode; skipped"),
        }
    });
    let initial = || {
        let store = MemberStore::new();
        load_members(settings, &store)?;
        let mut records = Vec::new();
        let mut chunk = Vec::new();
        let mut size = 0;
        let mut all = Vec::with_capacity(store.len());
        store.for_each(|id, m| all.push((id.to_string(), crate::records::MemberWireV2::from(m))));
        // The same file gives the same records on every replica.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, w) in all {
            size += id.len() + bincode::serialized_size(&w).unwrap_or(256) as usize;
            chunk.push((id, w));
            if size >= INITIAL_CHUNK_BYTES {
                records.push(LogRecord::MembersV2(std::mem::take(&mut chunk)).encode());
                size = 0;
            }
        }
        if !chunk.is_empty() || records.is_empty() {
            records.push(LogRecord::MembersV2(chunk).encode());
        }
        Ok(Initial(records))
    };
    let log = NatsLog::start(
        &settings.cluster,
        dir,
        &restore,
        apply,
        observer.clone(),
        initial,
    )
    .context("joining the NATS JetStream stream")?;
    if catch_up == CatchUp::Wait {
        log.wait_caught_up(std::time::Duration::from_secs(600))
            .context("catching up with the NATS JetStream stream")?;
        tracing::info!(
            stream = %settings.cluster.stream,
            applied = state.applied(),
            members = state.members().len(),
            "cluster mode: caught up with the stream"
        );
    }
    Ok(Durable::new(Arc::new(log), state, observer))
}

/// Builds the service without serving it: security (refusing development
/// mode off loopback), the state replayed from the data dir, the engine, the
/// metrics. Benches and embedders call it; [`Application::build`] serves it.
pub fn build_service(settings: &Settings) -> anyhow::Result<SharedState> {
    let security = crate::auth::Security::from_settings(
        &settings.security,
        crate::auth::RateDefaults {
            requests_per_second: settings.limits.requests_per_second,
            burst: settings.limits.burst,
        },
    )
    .context("security settings")?;
    if security.development_mode() {
        check_development_mode(settings)?;
    } else {
        tracing::info!(
            keys = settings.security.keys.len(),
            "API keys required (master key and scoped keys)"
        );
    }
    let metrics = Metrics::new();
    // A cluster replica catches up in the background: the service binds its
    // port at once and answers `/readyz` (503, with the progress) meanwhile.
    let (durable, lock) =
        open_state_with(settings, Arc::new(metrics.clone()), CatchUp::InBackground)?;
    let engine = build_engine(settings)?;
    log_loaded(settings, &engine);
    metrics.align_offers(&engine.catalog);
    durable
        .state()
        .learner()
        .set_prior(engine.catalog.clone(), engine.table.clone());
    let state: SharedState = Arc::new(Service::new(ServiceParts {
        durable,
        engine,
        metrics,
        settings: settings.clone(),
        security,
        data_lock: lock,
    }));
    let m = state.metrics();
    m.members.set(state.state().members().len() as i64);
    m.init_error_series();
    // Cluster mode seeds them when the snapshot is restored (the apply
    // loop counts every later record).
    if state.durable().cluster_status().is_none() {
        m.seed_experiments(state.state().experiments());
    }
    Ok(state)
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
        let state = build_service(&settings)?;
        let listener = TcpListener::bind(&settings.server.addr)
            .with_context(|| format!("binding {}", settings.server.addr))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::new(state.clone());
        let limits = web::Data::new(Limits::new(&settings.limits));
        let app_limits = limits.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(app_limits.clone())
                // The last wrapped runs first: count, then authorise, then
                // limit, then refuse while not ready.
                .wrap(middleware::from_fn(crate::http::ready_gate))
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
        crate::service::reload::spawn_file_watch(&state);
        tracing::info!(addr = %settings.server.addr, port, "listening");
        mark_ready_when_caught_up(&state);
        Ok(Application {
            port,
            server,
            state,
            limits,
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

    /// The HTTP limits (for tests).
    pub fn limits(&self) -> web::Data<Limits> {
        self.limits.clone()
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
        match self.state.snapshot().await {
            Ok(lsn) => tracing::info!(lsn, "final snapshot written"),
            Err(e) => {
                tracing::error!(error = %e, "final snapshot failed; the log still holds every write")
            }
        }
        self.state.durable().close();
        result
    }
}

/// Marks the service ready: at once with the local log; in cluster mode
/// once the replica applied the stream's end as of its start (until then
/// `/readyz` and every route but `/healthz` and `/metrics` answer 503).
fn mark_ready_when_caught_up(state: &SharedState) {
    let Some(c) = state.durable().cluster_status() else {
        state.mark_ready();
        return;
    };
    let weak = Arc::downgrade(state);
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        loop {
            if c.caught_up() {
                if let Some(state) = weak.upgrade() {
                    state.mark_ready();
                    tracing::info!(
                        applied = c.applied.load(Ordering::Acquire),
                        members = state.state().members().len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "cluster mode: caught up with the stream; ready"
                    );
                }
                return;
            }
            if c.gap.load(Ordering::Acquire) {
                tracing::error!("the stream no longer holds records this replica needs; it stays unready (restart it to load a shared snapshot)");
                return;
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// Writes a snapshot every `snapshot_interval_secs`.
fn spawn_snapshots(state: &SharedState) {
    let secs = state.settings().durability.snapshot_interval_secs.max(1);
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            // Outlived decisions leave memory before they would be copied.
            // Replicas sharing a stream evict by the log's time, so that
            // they hold the same decisions whenever they applied the same
            // records (the wall clock differs between them).
            let now = if state.durable().cluster_status().is_some() {
                state.state().log_time_ms()
            } else {
                chrono::Utc::now().timestamp_millis()
            };
            state.state().ledger().evict_expired(now);
            let started = std::time::Instant::now();
            match state.snapshot().await {
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
