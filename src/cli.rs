//! The command line: `serve`, `gen-members`, `train`. `main` only parses
//! arguments and calls [`run`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::domain::TierThresholds;

/// offer-engine: real-time next-best-offer engine for airline loyalty programmes.
#[derive(Debug, Parser)]
#[command(name = "offer-engine", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (with no flags: embedded synthetic members, default catalog and model).
    Serve(ServeArgs),
    /// Write a synthetic member population as NDJSON.
    GenMembers(GenArgs),
    /// Fit the propensity model on a simulated history and write it with its model card.
    Train(TrainArgs),
    /// Write the best offers for a segment of members to a file (NDJSON or CSV).
    Campaign(Box<CampaignArgs>),
    /// Off-policy evaluation of a candidate policy on logged bandit feedback.
    Evaluate(Box<crate::evaluate_cli::EvaluateArgs>),
    /// API keys: `keys new --scopes offers,events` makes a scoped key.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a fresh scoped key: prints the key once (it is stored nowhere)
    /// and the block to add to the configuration (a salted hash of it).
    New {
        /// Scopes, comma-separated: offers, events, members:read,
        /// members:write, campaigns, experiments:read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

/// `campaign` flags (named like the fields of `POST /v1/campaigns`).
#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Members NDJSON file (decisions are then not recorded: nothing to attribute accepts to).
    #[arg(long, conflicts_with = "data_dir")]
    pub members: Option<PathBuf>,
    /// The server's data dir (the server must be stopped); decisions are recorded durably.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Catalog TOML (default: the compiled-in catalog).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Model JSON (default: the compiled-in model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Experiments TOML (default: the compiled-in experiments).
    #[arg(long)]
    pub experiments: Option<PathBuf>,
    /// email, sms or app.
    #[arg(long)]
    pub channel: String,
    /// Tiers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tiers: Option<Vec<String>>,
    /// Home airports, comma-separated IATA codes.
    #[arg(long, value_delimiter = ',')]
    pub home_airports: Option<Vec<String>>,
    /// Not flown for at least this many days.
    #[arg(long)]
    pub min_days_since_flight: Option<u32>,
    /// Flew within this many days.
    #[arg(long)]
    pub max_days_since_flight: Option<u32>,
    /// Birth month 1-12.
    #[arg(long)]
    pub birth_month: Option<u8>,
    /// Minimum points.
    #[arg(long)]
    pub min_points: Option<u32>,
    /// Maximum points.
    #[arg(long)]
    pub max_points: Option<u32>,
    /// At most this much qualifying spend (CNY) from the next tier.
    #[arg(long)]
    pub max_distance_to_next_tier: Option<f64>,
    /// Required tags, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Option<Vec<String>>,
    /// Offers per member.
    #[arg(long, default_value_t = 3)]
    pub offers: usize,
    /// Campaign date YYYY-MM-DD (default today).
    #[arg(long)]
    pub date: Option<String>,
    /// Most members written.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Campaign id (default: derived from the filter, channel, offers and date).
    #[arg(long)]
    pub campaign_id: Option<String>,
    /// Output file ("-" for standard output).
    #[arg(long)]
    pub out: PathBuf,
    /// ndjson or csv.
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    /// Scoring threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `serve` flags. Settings come from the built-in defaults
/// (`config/default.toml`), then `--config FILE`, then environment variables,
/// then these flags; a flag's environment variable (shown as `[env: ...]`)
/// sets the same setting as the flag.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without a master key the service runs in development mode: nothing is protected and \
it listens on loopback only (127.0.0.1, ::1, localhost); a non-loopback --addr (e.g. \
0.0.0.0:8080) is refused at start unless a master key is set (OFFER_ENGINE_MASTER_KEY). \
Any setting can be given as OFFER_ENGINE__SECTION__KEY (e.g. OFFER_ENGINE__SERVER__WORKERS=4).

The data dir is locked while the service runs: `campaign --data-dir` and `train --data-dir` \
need it stopped (or work on a copy of the directory).

Documentation: README.md (sections Security, Configuration, Durability) in the repository.")]
pub struct ServeArgs {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080]. Anything but a loopback
    /// address needs a master key (OFFER_ENGINE_MASTER_KEY).
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "OFFER_ENGINE__SERVER__ADDR",
        hide_env_values = true
    )]
    pub addr: Option<String>,
    /// Members NDJSON file, read on the first start on an empty data dir only
    /// [default: the embedded synthetic population].
    #[arg(
        long,
        value_name = "FILE",
        env = "OFFER_ENGINE__MEMBERS__FILE",
        hide_env_values = true
    )]
    pub members: Option<PathBuf>,
    /// Catalog TOML [default: the compiled-in catalog, config/catalog.toml].
    #[arg(
        long,
        value_name = "FILE",
        env = "OFFER_ENGINE__CATALOG__FILE",
        hide_env_values = true
    )]
    pub catalog: Option<PathBuf>,
    /// Model JSON [default: the compiled-in model, models/propensity-lr-v1.json].
    #[arg(
        long,
        value_name = "FILE",
        env = "OFFER_ENGINE__MODEL__FILE",
        hide_env_values = true
    )]
    pub model: Option<PathBuf>,
    /// Experiments TOML [default: the compiled-in experiments, config/experiments.toml].
    #[arg(
        long,
        value_name = "FILE",
        env = "OFFER_ENGINE__EXPERIMENTS__FILE",
        hide_env_values = true
    )]
    pub experiments: Option<PathBuf>,
    /// Data directory for the event log and snapshots, locked while the
    /// service runs [default: ./data].
    #[arg(
        long,
        value_name = "DIR",
        env = "OFFER_ENGINE__DURABILITY__DATA_DIR",
        hide_env_values = true
    )]
    pub data_dir: Option<PathBuf>,
    /// Size of the embedded synthetic population [default: 100000].
    #[arg(
        long,
        value_name = "N",
        env = "OFFER_ENGINE__MEMBERS__SYNTHETIC_COUNT",
        hide_env_values = true
    )]
    pub synthetic_members: Option<u64>,
    /// Master key (holds every scope, at least 16 characters; none =
    /// development mode). Prefer the environment variable: a flag shows in
    /// the process list.
    #[arg(
        long,
        value_name = "KEY",
        env = "OFFER_ENGINE_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
}

/// `gen-members` flags.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Number of members.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Seed; the same seed and date give the same file.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file ("-" for standard output).
    #[arg(long)]
    pub out: PathBuf,
    /// Date the population is as of (YYYY-MM-DD; default today).
    #[arg(long)]
    pub as_of: Option<String>,
}

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

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::GenMembers(a) => gen_members(a),
        Command::Train(a) => train(a),
        Command::Campaign(a) => crate::campaign_cli::run(*a),
        Command::Evaluate(a) => crate::evaluate_cli::run(*a),
        Command::Keys(KeysCommand::New { scopes }) => {
            let scopes = crate::auth::Scopes::parse(&scopes)?;
            let (key, spec) = crate::auth::generate_key(scopes);
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "API key (shown once, stored nowhere; send it as Authorization: Bearer KEY):\n\n  {key}\n\nAdd to the configuration file:\n\n{}",
                crate::auth::config_block(&spec)
            )?;
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(a.config.as_deref(), std::env::vars())?;
    if let Some(addr) = a.addr {
        settings.server.addr = addr;
    }
    if let Some(m) = a.members {
        settings.members.file = m.display().to_string();
    }
    if let Some(c) = a.catalog {
        settings.catalog.file = c.display().to_string();
    }
    if let Some(m) = a.model {
        settings.model.file = m.display().to_string();
    }
    if let Some(e) = a.experiments {
        settings.experiments.file = e.display().to_string();
    }
    if let Some(d) = a.data_dir {
        settings.durability.data_dir = d.display().to_string();
    }
    if let Some(n) = a.synthetic_members {
        settings.members.synthetic_count = n;
    }
    if let Some(k) = a.master_key {
        settings.security.master_key = crate::config::Secret(k);
    }
    crate::telemetry::init(&settings.log.filter, settings.log.format == "json");
    let workers = settings.server.workers;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let app = crate::startup::Application::build(settings)?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn gen_members(a: GenArgs) -> anyhow::Result<()> {
    let as_of = crate::synth::as_of_or_today(a.as_of.as_deref()).map_err(anyhow::Error::msg)?;
    let out: Box<dyn Write> = if a.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&a.out)
                .with_context(|| format!("creating {}", a.out.display()))?,
        )
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    for line in crate::synth::population_lines(a.seed, a.count, as_of, TierThresholds::default()) {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    if a.out.as_os_str() != "-" {
        eprintln!(
            "wrote {} members (seed {}, as of {as_of}) to {}",
            a.count,
            a.seed,
            a.out.display()
        );
    }
    Ok(())
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
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
