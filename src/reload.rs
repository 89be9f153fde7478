//! Safe swaps of the catalog, model and experiments.
//!
//! A reload reads every configured file, builds a complete new [`Engine`] and
//! only then swaps it in through the `ArcSwap`: requests in flight finish on
//! the engine they loaded, the next ones see the new one, and nothing waits.
//! A file that fails to read, parse or validate refuses the whole reload; the
//! running version stays in service. Two triggers share this code:
//! `POST /v1/admin/reload` and a watch that polls the files' modification time
//! and size every `reload.watch_secs` seconds. (Polling rather than inotify:
//! it also sees files replaced by a rename or on network volumes, and costs a
//! few `stat` calls a second.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Settings;
use crate::decision::Engine;
use crate::state::SharedState;

/// Why a reload was refused: which file, and the parser's or validator's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {detail}")]
pub struct ReloadError {
    /// The configured file (or `catalog`, `model`, `experiments` for a compiled-in default).
    pub file: String,
    /// What is wrong with it.
    pub detail: String,
}

fn invalid(file: &str, default: &str, e: anyhow::Error) -> ReloadError {
    ReloadError {
        file: if file.is_empty() {
            default.to_string()
        } else {
            file.to_string()
        },
        // The innermost cause: the outer context only repeats the file name.
        detail: e.chain().last().map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// Builds the engine the configured files describe (blocking file reads).
pub fn build_engine(s: &Settings) -> Result<Engine, ReloadError> {
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

/// Swaps `engine` in and returns what is now in service.
pub fn swap(state: &SharedState, engine: Engine) -> serde_json::Value {
    let out = serde_json::json!({
        "catalog_version": engine.catalog.version,
        "offers": engine.catalog.offers.len(),
        "model_version": engine.table.version,
        "experiments": engine.experiments.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
    });
    // Offers new in this catalog start from the new model's coefficients.
    state
        .core
        .learner
        .set_prior(engine.catalog.clone(), engine.table.clone());
    state.engine.store(Arc::new(engine));
    state.metrics.seed_experiments(&state.core.experiments);
    tracing::info!(%out, "catalog, model and experiments reloaded");
    out
}

/// The files a reload reads: the configured ones and the variant models the
/// running experiments name.
pub fn watched_files(state: &SharedState) -> Vec<PathBuf> {
    let s = &state.settings;
    let mut files: Vec<PathBuf> = [&s.catalog.file, &s.model.file, &s.experiments.file]
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .collect();
    let engine = state.engine.load();
    for e in engine.experiments.iter() {
        for v in &e.variants {
            if let Some(m) = &v.model {
                let p = PathBuf::from(m);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
        }
    }
    files
}

/// Modification time and size of each file (None when it cannot be read).
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Polls the files every `reload.watch_secs` seconds and reloads when one
/// changed. A refused reload is logged and counted
/// (`offer_engine_reloads_total{trigger="watch",result="refused"}`) and not
/// retried until a file changes again.
pub fn spawn_file_watch(state: &SharedState) {
    let secs = state.settings.reload.watch_secs;
    if secs == 0 {
        return;
    }
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
        let mut seen: Option<(Vec<PathBuf>, Fingerprint)> = None;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let files = watched_files(&state);
            let st = state.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let now = fingerprint(&files);
                (files, now)
            })
            .await;
            let Ok((files, now)) = checked else { continue };
            let changed = match &seen {
                None => false,
                Some((f, fp)) => *f != files || *fp != now,
            };
            seen = Some((files, now));
            if !changed {
                continue;
            }
            let built = tokio::task::spawn_blocking(move || build_engine(&st.settings)).await;
            match built {
                Ok(Ok(engine)) => {
                    swap(&state, engine);
                    state
                        .metrics
                        .reloads
                        .with_label_values(&["watch", "ok"])
                        .inc();
                }
                Ok(Err(e)) => {
                    state
                        .metrics
                        .reloads
                        .with_label_values(&["watch", "refused"])
                        .inc();
                    tracing::error!(file = %e.file, error = %e.detail,
                        "changed file refused; the running catalog, model and experiments stay in service");
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
            // A swap can name other variant models: watch what is configured now.
            let files = watched_files(&state);
            let fp = fingerprint(&files);
            seen = Some((files, fp));
        }
    });
}
