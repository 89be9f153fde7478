//! `offer-engine campaign`: the CLI adapter around [`crate::campaign`].
//! Reads the same state as the server (`--data-dir`, recording every decision
//! durably in its log, or `--members FILE`, recording nothing), writes NDJSON
//! or CSV, and shows progress: a bar with members per second and an ETA on a
//! terminal, a plain line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::campaign::{self, CampaignDto, CampaignSink, Format};
use crate::cli::CampaignArgs;
use crate::config::Settings;
use crate::decision::Engine;
use crate::durable::{Core, LogRecord};
use crate::ledger::DecisionRecord;
use crate::wal::{Wal, WalError};

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

/// A log write on its way to disk.
type PendingWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, WalError>> + Send>>;

/// Output file plus, with a data dir, the log every decision is recorded in.
struct CliSink<W: Write> {
    out: W,
    log: Option<(Wal, Core)>,
    /// Log writes queued and not yet confirmed (confirmed in order; the last proves all).
    pending: Vec<PendingWrite>,
    progress: Progress,
}

impl<W: Write> CampaignSink for CliSink<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }

    fn record(&mut self, records: Vec<DecisionRecord>) -> std::io::Result<()> {
        let Some((wal, core)) = &self.log else {
            return Ok(());
        };
        let rec = LogRecord::Decisions(records);
        let core = core.clone();
        let payload = rec.encode();
        self.pending.push(Box::pin(wal.append(payload, move |_| {
            core.apply(&rec, true);
        })));
        // Keep a bounded number of writes in flight.
        if self.pending.len() >= 64 {
            let first = self.pending.remove(0);
            block_on(first).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn progress(&mut self, scanned: u64) {
        self.progress.update(scanned);
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // A tiny single-threaded runtime: the CLI has no other async work.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|rt| rt.block_on(f))
        .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"))
}

/// Runs the `campaign` command.
pub fn run(a: CampaignArgs) -> anyhow::Result<()> {
    crate::telemetry::init("warn", false);
    let mut settings = Settings::load(a.config.as_deref(), std::env::vars())?;
    if let Some(c) = &a.catalog {
        settings.catalog.file = c.display().to_string();
    }
    if let Some(m) = &a.model {
        settings.model.file = m.display().to_string();
    }
    if let Some(e) = &a.experiments {
        settings.experiments.file = e.display().to_string();
    }
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
        limit: a.limit,
        campaign_id: a.campaign_id.clone(),
    };
    // Every field is checked before anything is loaded or scored.
    let c = dto
        .into_campaign(chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
    let experiments = crate::startup::load_experiments(&settings)?;
    let variant_models = crate::startup::load_variant_models(&experiments)?;
    let engine = Engine::new(
        crate::startup::load_catalog(&settings)?,
        crate::startup::load_model(&settings)?,
        settings.tiers,
    )
    .with_experiments(experiments)
    .with_variant_models(variant_models);
    let (store, ledger, log, _lock) = match (&a.data_dir, &a.members) {
        (Some(dir), _) => {
            settings.durability.data_dir = dir.display().to_string();
            let (core, wal, lock) = crate::startup::open_state(&settings)?;
            (
                core.members.clone(),
                Some(core.ledger.clone()),
                Some((wal, core)),
                Some(lock),
            )
        }
        (None, Some(file)) => {
            settings.members.file = file.display().to_string();
            let store = crate::store::MemberStore::new();
            crate::startup::load_members(&settings, &store)?;
            eprintln!(
                "note: reading {} directly: decisions are not recorded, so accepts from this campaign cannot be attributed (use --data-dir or POST /v1/campaigns)",
                file.display()
            );
            (store, None, None, None)
        }
        (None, None) => anyhow::bail!("give --data-dir DIR (the server's state) or --members FILE"),
    };
    let out: Box<dyn Write> = if a.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&a.out)
                .with_context(|| format!("creating {}", a.out.display()))?,
        )
    };
    let mut sink = CliSink {
        out: std::io::BufWriter::with_capacity(1 << 20, out),
        log,
        pending: Vec::new(),
        progress: Progress::new(store.len() as u64),
    };
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let cap = settings.contact.max_offers_per_day.of(c.channel) as usize;
    let stop = AtomicBool::new(false);
    let opts = campaign::RunOptions {
        daily_cap: cap,
        suppress_days_default: settings.contact.suppress_days_after_decline,
        record: sink.log.is_some(),
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
    let summary = campaign::run(&engine, &c, &store, ledger.as_ref(), opts, &mut sink, &stop)?;
    sink.out.flush()?;
    sink.progress.finish();
    if let Some(last) = sink.pending.pop() {
        // Writes complete in order: the last one durable means all are.
        block_on(last).context("recording the campaign's decisions in the event log")?;
    }
    if let Some((wal, _)) = &sink.log {
        wal.close();
    }
    let recorded = if sink.log.is_some() {
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
