//! `offer-engine train`: the propensity model and its card, fitted on a
//! simulated history (the synthetic world) or on the engine's own decision
//! and outcome logs.

use std::path::PathBuf;

use anyhow::Context;

use crate::catalog::Catalog;

/// `train` flags.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Seed of the synthetic world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Members in the simulated population.
    #[arg(long, default_value_t = 50_000)]
    pub members: u64,
    /// Simulated decisions.
    #[arg(long, default_value_t = 200_000)]
    pub decisions: u64,
    /// Simulation start date (YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-01")]
    pub as_of: String,
    /// L2 penalty.
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Model version string (with --data-dir it must be new, e.g. propensity-lr-v2).
    #[arg(long, default_value = "propensity-lr-v1")]
    pub version: String,
    /// Catalog to train for (default: compiled-in).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Learn from the engine's own decision and outcome logs in this data dir
    /// (the server must be stopped) instead of a simulated history.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output model file (default: models/propensity-lr-v1.json, or
    /// models/VERSION.json with --data-dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output model card (default: models/MODEL_CARD.md, or
    /// models/VERSION.md with --data-dir).
    #[arg(long)]
    pub card: Option<PathBuf>,
}

/// `train --data-dir`: a new versioned model from the engine's own logs.
fn train_from_logs(a: &TrainArgs, dir: &std::path::Path, catalog: &Catalog) -> anyhow::Result<()> {
    if a.version == "propensity-lr-v1" {
        anyhow::bail!(
            "--version: name the new model (e.g. propensity-lr-v2); propensity-lr-v1 is the shipped one"
        );
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("models/{}.json", a.version)));
    let card = a
        .card
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("models/{}.md", a.version)));
    let started = std::time::Instant::now();
    let log = crate::logs::read(dir)?;
    let (examples, summary) = crate::logs::examples(&log, catalog);
    if examples.is_empty() {
        anyhow::bail!(
            "no usable examples in {}: decisions need recorded features (checkout decisions of this release)",
            dir.display()
        );
    }
    let training = serde_json::json!({
        "source": "engine logs",
        "decisions": summary.decisions,
        "decisions_without_features": summary.without_features,
        "examples": examples.len(),
        "accepts": summary.accepts,
        "holdout": "decisions whose id hashes into 1 of 5 buckets",
        "l2": a.l2,
        "snapshot_lsn": log.snapshot_lsn,
    });
    let (model, report) =
        crate::train::train_from_examples(&examples, catalog, a.l2, &a.version, training);
    let command = format!(
        "cargo run --release -- train --data-dir {} --version {} --l2 {} --out {} --card {}",
        dir.display(),
        a.version,
        a.l2,
        out.display(),
        card.display()
    );
    let data = format!(
        "The engine's own decision and outcome logs in `{}`: {} decisions with recorded features ({} without, \
         skipped{}), {} offers shown, {} accepted. One decision in five (by id) held out. {} training rows; L2 penalty {}.",
        dir.display(),
        summary.decisions,
        summary.without_features,
        match log.snapshot_lsn {
            Some(lsn) => format!("; decisions compacted into the snapshot at LSN {lsn} are not in the log"),
            None => String::new(),
        },
        examples.len(),
        summary.accepts,
        report.train_rows,
        a.l2
    );
    std::fs::write(&out, serde_json::to_string_pretty(&model)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(
        &card,
        crate::train::model_card_from_logs(&report, &data, &command),
    )
    .with_context(|| format!("writing {}", card.display()))?;
    eprintln!(
        "trained {} from {} logged examples in {:.1}s: held-out AUC {:.4}, log loss {:.4}; wrote {} and {}",
        a.version,
        examples.len(),
        started.elapsed().as_secs_f64(),
        report.pooled.auc,
        report.pooled.log_loss,
        out.display(),
        card.display()
    );
    Ok(())
}

/// Runs `train`.
pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    crate::telemetry::init("info", false);
    let catalog = match &a.catalog {
        None => Catalog::default_catalog(),
        Some(p) => Catalog::from_toml(&std::fs::read_to_string(p)?)?,
    };
    let as_of = chrono::NaiveDate::parse_from_str(&a.as_of, "%Y-%m-%d")
        .with_context(|| format!("--as-of {:?} is not YYYY-MM-DD", a.as_of))?;
    if let Some(dir) = &a.data_dir {
        return train_from_logs(&a, dir, &catalog);
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| "models/propensity-lr-v1.json".into());
    let card = a
        .card
        .clone()
        .unwrap_or_else(|| "models/MODEL_CARD.md".into());
    let cfg = crate::train::TrainConfig {
        seed: a.seed,
        members: a.members,
        decisions: a.decisions,
        holdout: 0.2,
        l2: a.l2,
        as_of,
        version: a.version.clone(),
    };
    let started = std::time::Instant::now();
    let (model, report) = crate::train::train(&cfg, &catalog);
    let command = format!(
        "cargo run --release -- train --seed {} --members {} --decisions {} --as-of {} --l2 {} --version {} --out {} --card {}",
        a.seed, a.members, a.decisions, a.as_of, a.l2, a.version, out.display(), card.display()
    );
    std::fs::write(&out, serde_json::to_string_pretty(&model)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(&card, crate::train::model_card(&cfg, &report, &command))
        .with_context(|| format!("writing {}", card.display()))?;
    eprintln!(
        "trained {} in {:.1}s: held-out AUC {:.4} (ground truth {:.4}), log loss {:.4}, MAE vs truth {:.4}; wrote {} and {}",
        a.version,
        started.elapsed().as_secs_f64(),
        report.pooled.auc,
        report.pooled.truth_auc,
        report.pooled.log_loss,
        report.pooled.mae_vs_truth,
        out.display(),
        card.display()
    );
    Ok(())
}
