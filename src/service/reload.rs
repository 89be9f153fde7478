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
use anyhow::Context;

use super::{Service, SharedState};
use crate::catalog::Catalog;
use crate::decision::Engine;
use crate::experiments::ExperimentSpec;
use crate::model::ModelFile;

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

/// Builds the engine the configured files describe (blocking file reads):
/// the one builder for start-up, reloads and the campaign command.
pub fn build_engine(s: &Settings) -> Result<Engine, ReloadError> {
    let catalog = load_catalog(s).map_err(|e| invalid(&s.catalog.file, "catalog", e))?;
    let model = load_model(s).map_err(|e| invalid(&s.model.file, "model", e))?;
    let experiments =
        load_experiments(s).map_err(|e| invalid(&s.experiments.file, "experiments", e))?;
    let variant_models = load_variant_models(&experiments)
        .map_err(|e| invalid(&s.experiments.file, "experiments", e))?;
    Ok(Engine::new(catalog, model, s.tiers)
        .with_experiments(experiments)
        .with_variant_models(variant_models))
}

impl Service {
    /// Reloads the configured files and swaps the new engine in; `trigger`
    /// (`admin`, `watch`) labels the metric. A refused reload leaves the
    /// running version in service.
    pub async fn reload(&self, trigger: &'static str) -> Result<serde_json::Value, ReloadError> {
        let settings = self.settings().clone();
        // Parsing a large catalog or model is blocking work.
        let built = tokio::task::spawn_blocking(move || build_engine(&settings))
            .await
            .unwrap_or_else(|e| {
                Err(ReloadError {
                    file: "reload".into(),
                    detail: format!("reload task failed: {e}"),
                })
            });
        let result = built.map(|engine| self.swap(engine));
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        self.metrics()
            .reloads
            .with_label_values(&[trigger, outcome])
            .inc();
        if let Err(e) = &result {
            tracing::warn!(trigger, file = %e.file, error = %e.detail,
                "reload refused; the running catalog, model and experiments stay in service");
        }
        result
    }

    /// Swaps `engine` in and returns what is now in service.
    fn swap(&self, engine: Engine) -> serde_json::Value {
        let out = serde_json::json!({
            "catalog_version": engine.catalog.version,
            "offers": engine.catalog.offers.len(),
            "model_version": engine.table.version,
            "experiments": engine.experiments.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        });
        // Offers new in this catalog start from the new model's coefficients.
        self.state()
            .learner()
            .set_prior(engine.catalog.clone(), engine.table.clone());
        self.state()
            .experiments()
            .set_loyalty_windows(&engine.experiments);
        self.metrics().align_offers(&engine.catalog);
        self.engine.store(Arc::new(engine));
        tracing::info!(%out, "catalog, model and experiments reloaded");
        out
    }
}

/// The files a reload reads: the configured ones and the variant models the
/// running experiments name.
pub fn watched_files(state: &SharedState) -> Vec<PathBuf> {
    let s = state.settings();
    let mut files: Vec<PathBuf> = [&s.catalog.file, &s.model.file, &s.experiments.file]
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .collect();
    let engine = state.engine();
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
    let secs = state.settings().reload.watch_secs;
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
            // Refusals are logged and counted; not retried until a file changes again.
            let _ = state.reload("watch").await;
            // A swap can name other variant models: watch what is configured now.
            let files = watched_files(&state);
            let fp = fingerprint(&files);
            seen = Some((files, fp));
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
pub fn load_experiments(settings: &Settings) -> anyhow::Result<Vec<ExperimentSpec>> {
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
    experiments: &[ExperimentSpec],
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
