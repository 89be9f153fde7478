//! Admin routes (scope `admin`): `POST /v1/admin/reload` swaps in the
//! catalog, model and experiments files named in the configuration,
//! `POST /v1/admin/snapshot` writes a snapshot now, `GET /v1/admin/keys`
//! lists key ids and scopes.
//!
//! A reload builds the new engine completely before swapping it in; a file
//! that fails to read or parse refuses the whole reload (422 naming the file
//! and the error) and the running version stays in service. The same
//! reload runs when a watched file changes ([`crate::service::reload`]).

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::service::SharedState;

/// `POST /v1/admin/reload`.
#[utoipa::path(
    post,
    path = "/v1/admin/reload",
    tag = "admin",
    responses(
        (status = 200, description = "swapped in: catalog version, offers, model version, experiments", body = serde_json::Value),
        (status = 422, description = "a file failed to read or parse (named in `field`); the running version stays", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn reload(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let out = state.reload("admin").await?;
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /v1/admin/snapshot`.
#[utoipa::path(
    post,
    path = "/v1/admin/snapshot",
    tag = "admin",
    responses(
        (status = 200, description = "written; `lsn` is the last record it contains", body = serde_json::Value),
        (status = 500, description = "the snapshot could not be written", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn snapshot(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let lsn = state.snapshot().await?;
    tracing::info!(lsn, "snapshot written on request");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "lsn": lsn })))
}

/// `GET /v1/admin/state`: the position of the last record applied and a
/// digest of the state it produced. Two replicas (or a replica before and
/// after a restart) that applied the same records report the same digest.
#[utoipa::path(
    get,
    path = "/v1/admin/state",
    tag = "admin",
    responses(
        (status = 200, description = "applied position and state digest", body = crate::state::StateDigest),
    ),
)]
pub async fn state(state: web::Data<SharedState>) -> Result<HttpResponse, ApiError> {
    let st = state.get_ref().clone();
    // Hashing every member is blocking work (seconds at 10M members).
    let digest = web::block(move || st.state_digest())
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("state digest task failed: {e}")))?;
    Ok(HttpResponse::Ok().json(digest))
}

/// `GET /v1/admin/keys`: ids and scopes, never secrets or hashes.
#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "admin",
    responses(
        (status = 200, description = "`development_mode` and the configured keys' ids and scopes", body = serde_json::Value),
    ),
)]
pub async fn keys(state: web::Data<SharedState>) -> HttpResponse {
    let keys: Vec<serde_json::Value> = match &state.security().keys {
        None => Vec::new(),
        Some(k) => k
            .list()
            .into_iter()
            .map(|(id, scopes)| serde_json::json!({"id": id, "scopes": scopes}))
            .collect(),
    };
    HttpResponse::Ok().json(serde_json::json!({
        "development_mode": state.security().development_mode(),
        "keys": keys,
    }))
}
