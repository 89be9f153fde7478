//! Liveness, readiness and the Prometheus endpoint.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::service::SharedState;

/// The body of `GET /healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Always `ok`.
    pub status: &'static str,
}

/// The body of `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ready<'a> {
    /// Always `ready`.
    pub status: &'static str,
    /// Members loaded.
    pub members: usize,
    /// Catalog version.
    pub catalog_version: &'a str,
    /// Offers in the catalog.
    pub offers: usize,
    /// Model version.
    pub model_version: &'a str,
    /// Cluster mode only: where this replica stands on the shared stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReady>,
}

/// A replica's position on the shared stream (cluster mode).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ClusterReady {
    /// The last stream sequence applied here.
    pub applied: u64,
    /// The stream's last sequence as last seen (every second).
    pub stream_last: u64,
    /// Records the stream holds that are not applied here yet.
    pub lag: u64,
    /// Whether NATS answered the last look (every second); while it does
    /// not, checkout answers from the state held and writes answer 503.
    pub nats_reachable: bool,
    /// Seconds since this replica last confirmed it held the stream's end
    /// (a look at the stream whose last sequence it has applied since):
    /// how stale its answers may be. Beyond `[cluster] max_stale_secs`
    /// `/readyz` answers 503; checkout still answers.
    pub stale_seconds: f64,
    /// Decisions made here waiting in the outbox to be published.
    pub outbox: u64,
    /// The stream's first sequence (older records were purged: they are
    /// in the shared snapshots).
    pub stream_first: u64,
    /// The sequence of the newest shared snapshot, as last seen.
    pub shared_snapshot: u64,
    /// Where this replica's state came from at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<crate::durable::cluster::RestoredFrom>,
}

/// Whether the service serves its routes: ready, and (cluster mode) not
/// stopped at a gap in the stream.
pub fn serving(state: &SharedState) -> bool {
    state.is_ready()
        && !state
            .durable()
            .cluster_status()
            .is_some_and(|c| c.gap.load(std::sync::atomic::Ordering::Acquire))
}

/// Why the service is not ready: still starting, or (cluster mode) still
/// catching up with the stream, with the progress.
pub fn not_ready_reason(state: &SharedState) -> String {
    use std::sync::atomic::Ordering;
    match state.durable().cluster_status() {
        Some(c) if c.gap.load(Ordering::Acquire) => format!(
            "the stream no longer holds the records after sequence {} (trimmed while this replica was behind); restart it to load a shared snapshot",
            c.applied.load(Ordering::Acquire)
        ),
        Some(c) => format!(
            "catching up with the stream: applied {} of {}",
            c.applied.load(Ordering::Acquire),
            c.catch_up_target.load(Ordering::Acquire)
        ),
        None => "still starting".into(),
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "the process is up", body = Status)),
)]
/// `GET /healthz`: the process is up. Deliberately does nothing else; it is
/// also the load tests' baseline for the most this stack can serve.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// `GET /readyz`: members, catalog and model are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "still starting, or (cluster mode) stale beyond `max_stale_secs`", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn readyz(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    if !serving(&state) {
        return Err(ApiError::Unavailable(not_ready_reason(&state)));
    }
    // A replica too far behind the stream tells the load balancer to
    // prefer a fresh one; it still answers checkout if asked.
    if let Some(c) = state.durable().cluster_status() {
        let max = state.settings().cluster.max_stale_secs;
        let stale = c.stale_seconds(chrono::Utc::now().timestamp_millis().max(0) as u64);
        if stale > max as f64 {
            return Err(ApiError::Unavailable(format!(
                "stale: this replica last confirmed it held the stream's end {stale:.0} s ago (max_stale_secs {max}); NATS reachable: {}",
                c.reachable.load(std::sync::atomic::Ordering::Acquire)
            )));
        }
    }
    let engine = state.engine();
    Ok(HttpResponse::Ok().json(Ready {
        status: "ready",
        members: state.state().members().len(),
        catalog_version: &engine.catalog.version,
        offers: engine.catalog.offers.len(),
        model_version: &engine.table.version,
        cluster: state.durable().cluster_status().map(|c| {
            use std::sync::atomic::Ordering;
            ClusterReady {
                applied: c.applied.load(Ordering::Acquire),
                stream_last: c.stream_last.load(Ordering::Acquire),
                lag: c.lag(),
                nats_reachable: c.reachable.load(Ordering::Acquire),
                stale_seconds: c.stale_seconds(chrono::Utc::now().timestamp_millis().max(0) as u64),
                outbox: c.outbox_len.load(Ordering::Acquire),
                stream_first: c.stream_first.load(Ordering::Acquire),
                shared_snapshot: c.shared_newest.load(Ordering::Acquire),
                restored_from: c.restored_from.get().cloned(),
            }
        }),
    }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")),
)]
pub async fn metrics(state: web::Data<SharedState>) -> HttpResponse {
    state
        .metrics()
        .members
        .set(state.state().members().len() as i64);
    let engine = state.engine();
    let reports: Vec<_> = engine
        .experiments
        .iter()
        .map(|e| state.state().experiments().report_without_loyalty(e))
        .collect();
    state.metrics().observe_reports(&reports);
    if let Some(c) = state.durable().cluster_status() {
        state.metrics().observe_cluster(&c);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics().render())
}
