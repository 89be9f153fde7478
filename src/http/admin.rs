//! Admin routes (scope `admin`): `POST /v1/admin/reload` swaps in the
//! catalog, model and experiments files named in the configuration,
//! `POST /v1/admin/snapshot` writes a snapshot now, `GET /v1/admin/keys`
//! lists key ids and scopes.
//!
//! A reload builds the new engine completely before swapping it in; a file
//! that fails to read or parse refuses the whole reload (422 naming the file
//! and the error) and the running version stays in service.

use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::decision::Engine;
use crate::state::SharedState;

/// Which configured file a loader error is about, and why, for the problem document.
fn invalid(file: &str, default: &str, e: anyhow::Error) -> ApiError {
    ApiError::InvalidFile {
        file: if file.is_empty() {
            default.to_string()
        } else {
            file.to_string()
        },
        // The chain without the context line that repeats the file name.
        detail: e.chain().last().map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// Builds the engine the configured files describe.
fn build_engine(state: &SharedState) -> Result<Engine, ApiError> {
    let s = &state.settings;
    let catalog =
        crate::startup::load_catalog(s).map_err(|e| invalid(&s.catalog.file, "catalog", e))?;
    let model = crate::startup::load_model(s).map_err(|e| invalid(&s.model.file, "model", e))?;
    let experiments = crate::startup::load_experiments(s)
        .map_err(|e| invalid(&s.experiments.file, "experiments", e))?;
    let variant_models = crate::startup::load_variant_models(&experiments)
        .map_err(|e| invalid(&s.experiments.file, "experiments", e))?;
    Ok(Engine::new(catalog, model, s.tiers)
        .with_experiments(experiments)
        .with_variant_models(variant_models))
}

/// `POST /v1/admin/reload`.
pub async fn reload(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let st = state.get_ref().clone();
    // Parsing a large catalog or model is blocking work.
    let engine = web::block(move || build_engine(&st))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reload task failed: {e}")))??;
    let out = serde_json::json!({
        "catalog_version": engine.catalog.version,
        "offers": engine.catalog.offers.len(),
        "model_version": engine.table.version,
        "experiments": engine.experiments.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
    });
    state.engine.store(Arc::new(engine));
    state.metrics.seed_experiments(&state.core.experiments);
    tracing::info!(%out, "catalog, model and experiments reloaded");
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /v1/admin/snapshot`.
pub async fn snapshot(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let core = state.core.clone();
    let lsn = state
        .wal
        .snapshot(move || core.snapshot_bytes())
        .await
        .map_err(ApiError::Storage)?;
    tracing::info!(lsn, "snapshot written on request");
    Ok(HttpResponse::Ok().json(serde_json::json!({"lsn": lsn})))
}

/// `GET /v1/admin/keys`: ids and scopes, never secrets or hashes.
pub async fn keys(state: web::Data<SharedState>) -> HttpResponse {
    let keys: Vec<serde_json::Value> = match &state.security.keys {
        None => Vec::new(),
        Some(k) => k
            .list()
            .into_iter()
            .map(|(id, scopes)| serde_json::json!({"id": id, "scopes": scopes}))
            .collect(),
    };
    HttpResponse::Ok().json(serde_json::json!({
        "development_mode": state.security.development_mode(),
        "keys": keys,
    }))
}
