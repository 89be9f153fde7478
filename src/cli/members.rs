//! `offer-engine gen-members`: a synthetic member population as NDJSON.

use std::io::Write;
use std::path::PathBuf;

use crate::domain::TierThresholds;

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
    /// Writes each member's spend and flights by month (`monthly`) over the
    /// 12 months ending with the month of --as-of, not only the totals.
    #[arg(long)]
    pub monthly: bool,
}

/// Runs `gen-members`.
pub fn run(a: GenArgs) -> anyhow::Result<()> {
    let as_of = crate::synth::as_of_or_today(a.as_of.as_deref(), chrono::Utc::now().date_naive())
        .map_err(anyhow::Error::msg)?;
    let mut w = super::open_output(&a.out)?;
    let th = TierThresholds::default();
    let lines: Box<dyn Iterator<Item = String>> = if a.monthly {
        Box::new(crate::synth::population_lines_monthly(
            a.seed, a.count, as_of, th,
        ))
    } else {
        Box::new(crate::synth::population_lines(a.seed, a.count, as_of, th))
    };
    for line in lines {
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
