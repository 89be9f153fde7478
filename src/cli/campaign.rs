//! `offer-engine campaign`: the CLI adapter around [`crate::service::campaigns`].
//! Reads the same state as the server (`--data-dir`, recording every decision
//! durably in its log, or `--members FILE`, recording nothing), writes NDJSON
//! or CSV, and shows progress: a bar with members per second and an ETA on a
//! terminal, a plain line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::durable::Silent;
use crate::service::campaigns::{
    self, CampaignDto, CampaignLog, CampaignSink, Format, Recorder, RunOptions,
};
use crate::service::reload::build_engine;

/// `campaign` flags (named like the fields of `POST /v1/campaigns`).
#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// Configuration, catalog, model and experiments files.
    #[command(flatten)]
    pub files: super::EngineFiles,
    /// Members NDJSON file (decisions are then not recorded: nothing to attribute accepts to).
    #[arg(long, conflicts_with = "data_dir")]
    pub members: Option<PathBuf>,
    /// The server's data dir (the server must be stopped); decisions are recorded durably.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
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
    /// Campaign date YYYY-MM-DD (default today, or the day of --send-at).
    #[arg(long)]
    pub date: Option<String>,
    /// When the messages go out, RFC 3339 (default: the run time, or the
    /// start of --date); offers stay acceptable for the channel's validity from it.
    #[arg(long)]
    pub send_at: Option<String>,
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

/// Progress reporting: indicatif on a terminal, plain lines otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Plain {
        total: u64,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    fn new(total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} members  {per_sec}  ETA {eta}",
            ) {
                bar.set_style(style);
            }
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Plain {
                total,
                started: now,
                last: now,
            }
        }
    }

    fn update(&mut self, scanned: u64) {
        match self {
            Progress::Bar(b) => b.set_position(scanned),
            Progress::Plain {
                total,
                started,
                last,
            } => {
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    let rate = scanned as f64 / secs.max(1e-9);
                    let eta = (*total).saturating_sub(scanned) as f64 / rate.max(1.0);
                    eprintln!("campaign: {scanned}/{total} members scanned, {rate:.0} members/s, ETA {eta:.0} s");
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// Output file with progress.
struct CliSink {
    out: Box<dyn Write>,
    progress: Progress,
}

impl CampaignSink for CliSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }

    fn progress(&mut self, scanned: u64) {
        self.progress.update(scanned);
    }
}

/// Runs the `campaign` command.
pub fn run(a: CampaignArgs) -> anyhow::Result<()> {
    crate::telemetry::init("warn", false);
    let mut settings = a.files.settings()?;
    let format = match a.format.as_str() {
        "ndjson" => Format::Ndjson,
        "csv" => Format::Csv,
        other => anyhow::bail!("--format {other:?}: one of ndjson, csv"),
    };
    let dto = CampaignDto {
        channel: a.channel.clone(),
        tiers: a.tiers.clone(),
        home_airports: a.home_airports.clone(),
        min_days_since_flight: a.min_days_since_flight,
        max_days_since_flight: a.max_days_since_flight,
        birth_month: a.birth_month,
        min_points: a.min_points,
        max_points: a.max_points,
        max_distance_to_next_tier: a.max_distance_to_next_tier,
        tags: a.tags.clone(),
        offers: Some(a.offers),
        date: a.date.clone(),
        send_at: a.send_at.clone(),
        limit: a.limit,
        campaign_id: a.campaign_id.clone(),
    };
    // Every field is checked before anything is loaded or scored.
    let now = chrono::Utc::now();
    let c = dto
        .into_campaign(now)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
    let engine = build_engine(&settings)?;
    let (store, durable, _lock) = match (&a.data_dir, &a.members) {
        (Some(dir), _) => {
            settings.durability.data_dir = dir.display().to_string();
            let (durable, lock) = crate::startup::open_state(&settings, Arc::new(Silent))?;
            (durable.state().members().clone(), Some(durable), Some(lock))
        }
        (None, Some(file)) => {
            settings.members.file = file.display().to_string();
            let store = crate::state::members::MemberStore::new();
            crate::startup::load_members(&settings, &store)?;
            eprintln!(
                "note: reading {} directly: decisions are not recorded, so accepts from this campaign cannot be attributed (use --data-dir or POST /v1/campaigns)",
                file.display()
            );
            (store, None, None)
        }
        (None, None) => anyhow::bail!("give --data-dir DIR (the server's state) or --members FILE"),
    };
    let mut sink = CliSink {
        out: super::open_output(&a.out)?,
        progress: Progress::new(store.len() as u64),
    };
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let stop = AtomicBool::new(false);
    let opts = RunOptions {
        daily_cap: settings.contact.max_offers_per_day.of(c.channel) as usize,
        suppress_days_default: settings.contact.suppress_days_after_decline,
        record: durable.is_some(),
        format,
        threads,
        // Signed with the server's key (same configuration), so accepts of
        // these offers verify on the server.
        tokens: Some(
            crate::auth::Security::from_settings(
                &settings.security,
                crate::auth::RateDefaults {
                    requests_per_second: 0.0,
                    burst: 0.0,
                },
            )
            .context("security settings")?
            .tokens,
        ),
    };
    let mut log = durable
        .as_ref()
        .map(|d| CampaignLog::new(d.clone(), now.timestamp_millis()));
    let ledger = durable.as_ref().map(|d| d.state().ledger());
    let summary = campaigns::run(
        &engine,
        &c,
        &store,
        ledger,
        opts,
        &mut sink,
        log.as_mut().map(|l| l as &mut dyn Recorder),
        &stop,
    )?;
    sink.out.flush()?;
    sink.progress.finish();
    if let Some(log) = log {
        log.finish()
            .context("recording the campaign's decisions in the event log")?;
    }
    if let Some(d) = &durable {
        d.close();
    }
    let recorded = if durable.is_some() {
        format!("{} decisions recorded", summary.decisions_recorded)
    } else {
        "decisions not recorded".to_string()
    };
    eprintln!(
        "campaign {}: {} members scanned, {} in the segment, {} written; left out: {}; {recorded}, {:.2} s ({:.0} members/s)",
        summary.campaign_id,
        summary.members_scanned,
        summary.members_matched,
        summary.members_written,
        summary.left_out,
        summary.seconds,
        summary.members_scanned as f64 / summary.seconds.max(1e-9)
    );
    Ok(())
}
