//! The service layer: the engine's use cases, one file each, between the
//! adapters (HTTP, CLI) and the state. Each use case is an intent-named
//! method that takes domain types and returns a domain result or a typed
//! error; adapters only parse, call one method and render.
//!
//! - [`checkout`]: one member, one itinerary → ranked, signed offers.
//! - [`outcomes`]: impressions, clicks, accepts, declines, fulfilments.
//! - [`members`]: member records, bulk loads, member events, erasure.
//! - [`campaigns`]: a segment's best offers, streamed.
//! - [`reload`]: swapping catalog, model and experiments.
//! - [`audience`]: what one member may be shown (variant policy,
//!   suppressions, daily contact cap, inventory), shared by checkout and
//!   campaigns, and the decision record both commit.
//!
//! [`Service`] is the one object the adapters share (behind an `Arc`); its
//! fields are private, and every durable change goes through
//! [`crate::durable::Durable::commit`].

pub mod audience;
pub mod campaigns;
pub mod checkout;
pub mod idempotency;
pub mod members;
pub mod offer_stats;
pub mod outcomes;
pub mod reload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::auth::Security;
use crate::config::Settings;
use crate::decision::Engine;
use crate::durable::DirLock;
use crate::durable::Durable;
use crate::metrics::Metrics;
use crate::state::State;

/// Everything the use cases share. Hot-swappable parts sit behind
/// `ArcSwap` and are loaded once per request; nothing here is locked across
/// an `.await`.
pub struct Service {
    /// The commit path and the state it makes durable.
    durable: Durable,
    /// Catalog + model + tier rules + experiments, swapped as a whole.
    engine: ArcSwap<Engine>,
    /// Prometheus metrics.
    metrics: Metrics,
    /// Settings the service started with.
    settings: Settings,
    /// Set once start-up (loading, replay) is complete.
    ready: AtomicBool,
    /// API keys, offer-token key, log pseudonyms.
    security: Security,
    /// Answers kept for retries with an idempotency key.
    replays: idempotency::Replays,
    /// The data dir's lock, held for the life of the process.
    _data_lock: DirLock,
}

/// Handle shared by the adapters.
pub type SharedState = Arc<Service>;

/// What a [`Service`] is built from.
pub struct ServiceParts {
    /// The commit path.
    pub durable: Durable,
    /// The engine to start with.
    pub engine: Engine,
    /// Metrics (also the commit path's observer).
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    /// Keys and token key.
    pub security: Security,
    /// The data dir's lock.
    pub data_lock: DirLock,
}

impl Service {
    /// A service over its parts (not ready until [`Service::mark_ready`]).
    pub fn new(p: ServiceParts) -> Service {
        let replays = idempotency::Replays::new(&p.settings.idempotency);
        Service {
            durable: p.durable,
            engine: ArcSwap::from_pointee(p.engine),
            metrics: p.metrics,
            settings: p.settings,
            ready: AtomicBool::new(false),
            replays,
            security: p.security,
            _data_lock: p.data_lock,
        }
    }

    /// The state (read side).
    pub fn state(&self) -> &State {
        self.durable.state()
    }

    /// The commit path.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// The engine in service now.
    pub fn engine(&self) -> Guard<Arc<Engine>> {
        self.engine.load()
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Settings the service started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Keys, token key, pseudonyms.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Answers kept for retries with an idempotency key.
    pub fn replays(&self) -> &idempotency::Replays {
        &self.replays
    }

    /// Whether start-up is complete.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Start-up is complete.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release)
    }

    /// Writes a snapshot now; returns the log position it reflects.
    pub async fn snapshot(&self) -> Result<u64, crate::durable::LogError> {
        self.durable.snapshot().await
    }

    /// The digest of the applied state and the position it reflects.
    pub fn state_digest(&self) -> crate::state::StateDigest {
        self.state().digest()
    }
}
