//! Shared application state, registered once with actix and cloned
//! (shallowly) into every worker.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use offer_engine_wal::Wal;

use crate::config::Settings;
use crate::decision::Engine;
use crate::durable::Core;
use crate::metrics::Metrics;

/// Everything handlers share. Hot-swappable parts sit behind `ArcSwap` and are
/// loaded once per request; nothing here is locked across an `.await`.
pub struct AppState {
    /// Members and the ledger: the state the event log makes durable.
    pub core: Core,
    /// The event log.
    pub wal: Wal,
    /// Catalog + model + tier rules, swapped as a whole.
    pub engine: ArcSwap<Engine>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Settings the service started with.
    pub settings: Settings,
    /// Set once start-up (loading, replay) is complete.
    pub ready: AtomicBool,
    /// The data dir's lock, held for the life of the process.
    pub data_lock: crate::startup::DirLock,
    /// API keys, offer-token key, log pseudonyms.
    pub security: crate::auth::Security,
    /// Concurrency cap and request deadline.
    pub limits: crate::http::limits::Limits,
}

/// Handle shared by handlers.
pub type SharedState = Arc<AppState>;
