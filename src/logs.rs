//! Reading the engine's own event log offline (the server stopped): the
//! decisions it made and the accepts they got, for `evaluate --data-dir`
//! (off-policy evaluation) and `train --data-dir` (models from real logs).
//!
//! Opening the log may repair a torn tail, so the data dir's LOCK is taken
//! first and a running server's directory is refused. Decisions already
//! compacted into a snapshot are not in the record stream; the caller is told
//! the snapshot's LSN. A member erased later in the log takes their earlier
//! decisions out of what is returned.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

use crate::events::OutcomeKind;
use crate::state::ledger::DecisionRecord;
use crate::state::LogRecord;
use offer_engine_wal::{ReplayItem, Wal, WalOptions};

/// What the log holds for learning and evaluation.
#[derive(Debug, Default)]
pub struct EngineLog {
    /// Decisions in log order (members erased later excluded).
    pub decisions: Vec<DecisionRecord>,
    /// (decision id, offer position) → revenue of each accept.
    pub accepts: HashMap<(String, u8), f64>,
    /// LSN of the snapshot the records follow, if any: earlier decisions are not here.
    pub snapshot_lsn: Option<u64>,
}

/// Reads the log in `dir`; the server must be stopped.
pub fn read(dir: &Path) -> anyhow::Result<EngineLog> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not an offer-engine data dir", dir.display());
    }
    let _lock = crate::durable::DirLock::take(dir)?;
    let mut log = EngineLog::default();
    let (wal, _) = Wal::open(dir, WalOptions::default(), |item| {
        match item {
            ReplayItem::Snapshot { lsn, .. } => log.snapshot_lsn = Some(lsn),
            ReplayItem::Record { data, lsn } => {
                match LogRecord::decode(data).map_err(|e| format!("record {lsn}: {e}"))? {
                    LogRecord::Decision(d) => log.decisions.push(d),
                    LogRecord::Decisions(ds) => log.decisions.extend(ds),
                    LogRecord::Outcomes(os) => {
                        for o in os.into_iter().filter(|o| o.kind == OutcomeKind::Accept) {
                            log.accepts.insert((o.decision_id, o.offer_pos), o.revenue);
                        }
                    }
                    // For training examples an accept says the member wanted
                    // the offer: one later refunded (a cancelled trip) or
                    // refused at apply (points spent meanwhile) still does.
                    LogRecord::OutcomesV2(os) => {
                        for v in os
                            .into_iter()
                            .filter(|v| v.outcome.kind == OutcomeKind::Accept)
                        {
                            let o = v.outcome;
                            log.accepts.insert((o.decision_id, o.offer_pos), o.revenue);
                        }
                    }
                    LogRecord::MemberErased { member_id, .. } => {
                        log.decisions.retain(|d| d.member_id != member_id)
                    }
                    LogRecord::Members(_)
                    | LogRecord::MembersV2(_)
                    | LogRecord::MemberChange { .. }
                    | LogRecord::CampaignRun(_) => {}
                }
            }
        }
        Ok(())
    })
    .with_context(|| format!("reading the event log in {}", dir.display()))?;
    wal.close();
    Ok(log)
}

/// Counts behind the examples of [`examples`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ExampleSummary {
    /// Decisions with a usable feature vector.
    pub decisions: usize,
    /// Decisions without one (campaigns, older records): skipped.
    pub without_features: usize,
    /// Accepted offers among the examples.
    pub accepts: usize,
}

/// One training example per offer shown in a decision that recorded its
/// features: label = accepted. Offers not in `catalog` are skipped. One
/// decision in five, chosen by a hash of its id, is held out, so a decision's
/// offers are never split between training and evaluation.
pub fn examples(
    log: &EngineLog,
    catalog: &crate::catalog::Catalog,
) -> (Vec<crate::train::LoggedExample>, ExampleSummary) {
    use crate::features::N_FEATURES;
    let index: HashMap<&str, usize> = catalog
        .offers
        .iter()
        .enumerate()
        .map(|(i, o)| (o.id.as_str(), i))
        .collect();
    let mut out = Vec::new();
    let mut summary = ExampleSummary::default();
    for d in &log.decisions {
        let Ok(x) = <[f32; N_FEATURES]>::try_from(d.features.as_slice()) else {
            summary.without_features += 1;
            continue;
        };
        summary.decisions += 1;
        let held_out = crate::experiments::fnv1a64(d.id.as_bytes()).is_multiple_of(5);
        for (pos, o) in d.offers.iter().enumerate() {
            let Some(&offer) = index.get(o.offer_id.as_str()) else {
                continue;
            };
            let accepted = log.accepts.contains_key(&(d.id.clone(), pos as u8));
            summary.accepts += accepted as usize;
            out.push(crate::train::LoggedExample {
                offer,
                x,
                accepted,
                held_out,
            });
        }
    }
    (out, summary)
}
