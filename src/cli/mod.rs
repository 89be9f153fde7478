//! The command line. `main` only parses arguments and calls [`run`]; each
//! command lives in its own file with its flags and only translates: flags
//! into settings and domain types, one call into the library, the result
//! printed.
//!
//! - [`serve`]: the HTTP service.
//! - [`members`]: `gen-members`, a synthetic population as NDJSON.
//! - [`train`]: the propensity model from a simulated history or the
//!   engine's own logs.
//! - [`campaign`]: a segment's best offers to a file.
//! - [`evaluate`]: off-policy evaluation of a candidate policy.

pub mod campaign;
pub mod evaluate;
pub mod members;
pub mod serve;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;

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
    Serve(serve::ServeArgs),
    /// Write a synthetic member population as NDJSON.
    GenMembers(members::GenArgs),
    /// Fit the propensity model on a simulated history and write it with its model card.
    Train(train::TrainArgs),
    /// Write the best offers for a segment of members to a file (NDJSON or CSV).
    Campaign(Box<campaign::CampaignArgs>),
    /// Off-policy evaluation of a candidate policy on logged bandit feedback.
    Evaluate(Box<evaluate::EvaluateArgs>),
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

/// The catalog, model and experiments files and the configuration file,
/// flags shared by every command that builds an engine.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EngineFiles {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
}

impl EngineFiles {
    /// The settings: defaults, then the configuration file, then
    /// `OFFER_ENGINE__...` variables, then these flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut settings = Settings::load(self.config.as_deref(), std::env::vars())?;
        if let Some(c) = &self.catalog {
            settings.catalog.file = c.display().to_string();
        }
        if let Some(m) = &self.model {
            settings.model.file = m.display().to_string();
        }
        if let Some(e) = &self.experiments {
            settings.experiments.file = e.display().to_string();
        }
        Ok(settings)
    }
}

/// An output file, buffered; `-` is standard output.
pub fn open_output(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    let out: Box<dyn Write> = if path.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )
    };
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, out)))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::GenMembers(a) => members::run(a),
        Command::Train(a) => train::run(a),
        Command::Campaign(a) => campaign::run(*a),
        Command::Evaluate(a) => evaluate::run(*a),
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
