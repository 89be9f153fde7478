//! `offer-engine evaluate`: the CLI adapter around [`crate::ope`]. Reads
//! logged bandit feedback as NDJSON (the generic format of
//! `docs/ope-log-format.md`), reduces every line to the few numbers the
//! estimators need ([`RoundTerms`]) as it goes, and prints the
//! [`Evaluation`] as JSON, its warnings also on standard error.
//!
//! The candidate (target) policy comes from each line's `target_probs`, or
//! from a model file (`--model`): the engine's own ranking with that model,
//! greedy (probability 1 to the offer the engine would show at each
//! position) or a softmax over expected value (`--temperature`), computed
//! from each line's `context` ([`ModelContext`]).
//!
//! The engine's own event log is turned into the generic format by
//! [`export_engine_log`] (`evaluate --data-dir DIR --export FILE`); see its
//! documentation for what it needs from decision records.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};
use crate::model::{ModelFile, ScoringTable};
use crate::ope::{self, EvaluateOptions, Evaluation, OpeError, RoundTerms};

/// One line of the generic log. Unknown fields are refused so that a typo
/// (`propensities`) fails loudly instead of silently reading as absent.
/// Strings borrow from the line where they can (no escapes): reading a log is
/// mostly parsing, and a million lines of small maps are a million allocations
/// saved per field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedRound<'a> {
    /// Identifier of the round (any JSON value; only for the reader's own bookkeeping).
    #[serde(default)]
    pub round: Option<serde::de::IgnoredAny>,
    /// The action (offer id) the logging policy showed.
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    /// Slot it was shown in, 0 = first (default 0).
    #[serde(default)]
    pub position: Option<u32>,
    /// Observed reward.
    pub reward: f64,
    /// Logging policy's probability of `action` at `position`.
    pub propensity: f64,
    /// Candidate policy's probabilities over actions at `position`, in the
    /// line's order (only ever iterated).
    #[serde(default, borrow, deserialize_with = "action_list")]
    pub target_probs: Option<Vec<(ActionKey<'a>, f64)>>,
    /// Reward model: estimated reward of each action (used by DR).
    #[serde(default, borrow)]
    pub reward_estimates: Option<HashMap<ActionKey<'a>, f64, ahash::RandomState>>,
    /// What the candidate policy needs to decide (`--model`), see [`ModelContext`].
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

/// An action name as a map key, borrowed from the line when it has no escapes.
/// Hashes and compares as the `str` it holds, so maps are looked up by `&str`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionKey<'a>(pub Cow<'a, str>);

impl std::borrow::Borrow<str> for ActionKey<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ActionKey<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ActionKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an action name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(ActionKey(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ActionKey(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ActionKey(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object `{action: number}` as a list of pairs.
fn action_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(ActionKey<'de>, f64)>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(ActionKey<'de>, f64)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of action → probability")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
            while let Some(entry) = m.next_entry::<ActionKey<'de>, f64>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V).map(Some)
}

/// `context` of a line when the target is a model file: what the engine
/// would score and choose among at this round.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelContext {
    /// The feature vector (member, trip and channel features as the engine
    /// computes them, `features::build`): an object keyed by every feature
    /// name, or an array in `FEATURE_NAMES` order.
    pub features: FeatureInput,
    /// Offer ids that were eligible (after suppressions, inventory and the
    /// variant's categories): the actions the candidate chooses among.
    pub eligible: Vec<String>,
    /// Party size (per-passenger offers sell this many units). Default 1.
    #[serde(default = "one")]
    pub passengers: u8,
}

fn one() -> u8 {
    1
}

/// Features by name or in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FeatureInput {
    /// `FEATURE_NAMES` order.
    List(Vec<f32>),
    /// Keyed by feature name; every name must be present.
    Named(HashMap<String, f32>),
}

impl FeatureInput {
    fn vector(&self) -> Result<FeatureVector, String> {
        let mut x = [0f32; N_FEATURES];
        match self {
            FeatureInput::List(v) => {
                if v.len() != N_FEATURES {
                    return Err(format!(
                        "context.features has {} values, the engine computes {N_FEATURES}",
                        v.len()
                    ));
                }
                x.copy_from_slice(v);
            }
            FeatureInput::Named(m) => {
                for (j, name) in FEATURE_NAMES.iter().enumerate() {
                    x[j] = *m
                        .get(*name)
                        .ok_or_else(|| format!("context.features lacks {name:?}"))?;
                }
                if let Some(k) = m.keys().find(|k| !FEATURE_NAMES.contains(&k.as_str())) {
                    return Err(format!("context.features has unknown feature {k:?}"));
                }
            }
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err("context.features must be finite numbers".to_string());
        }
        Ok(x)
    }
}

/// What a reward is, for the model's reward estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardUnit {
    /// Reward is 1 for an accept, 0 otherwise; q̂ = the model's propensity.
    Accept,
    /// Reward is the accept's margin (CNY): q̂ = propensity × margin × units.
    Value,
}

/// The engine's ranking with a candidate model, as a policy over offers.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    catalog: Catalog,
    table: ScoringTable,
    index: HashMap<String, usize>,
    temperature: Option<f64>,
    reward: RewardUnit,
}

impl ModelPolicy {
    /// `temperature` None: greedy, as the engine decides. Some(t): at each
    /// position a softmax over expected value (CNY) / t among the offers the
    /// greedy ranking has not used up at earlier positions.
    pub fn new(
        model: &ModelFile,
        catalog: Catalog,
        temperature: Option<f64>,
        reward: RewardUnit,
    ) -> Result<ModelPolicy, String> {
        if let Some(t) = temperature {
            if !(t > 0.0 && t.is_finite()) {
                return Err(format!("temperature must be a positive number, got {t}"));
            }
        }
        let table = ScoringTable::new(model, &catalog);
        let index = catalog
            .offers
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), i))
            .collect();
        Ok(ModelPolicy {
            catalog,
            table,
            index,
            temperature,
            reward,
        })
    }

    /// Reduces one line with this policy as the target.
    fn terms(&self, line: &LoggedRound<'_>) -> Result<RoundTerms, String> {
        let ctx: ModelContext = match &line.context {
            Some(v) => ModelContext::deserialize(v).map_err(|e| format!("context: {e}"))?,
            None => return Err("--model needs a `context` on every line".to_string()),
        };
        let x = ctx.features.vector()?;
        // (catalog index, q̂, expected value as the engine ranks it)
        let mut scored = Vec::with_capacity(ctx.eligible.len());
        for id in &ctx.eligible {
            let i = *self
                .index
                .get(id)
                .ok_or_else(|| format!("context.eligible names {id:?}, not in the catalog"))?;
            let o = &self.catalog.offers[i];
            let p = self.table.propensity(i, &x) as f64;
            let value = o.margin * o.units(ctx.passengers);
            let q = match self.reward {
                RewardUnit::Accept => p,
                RewardUnit::Value => p * value,
            };
            scored.push((i, q, p * value * o.lever));
        }
        // The decision core's order: expected value, then priority, then catalog order.
        let offers = &self.catalog.offers;
        scored.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then(offers[b.0].priority.cmp(&offers[a.0].priority))
                .then(a.0.cmp(&b.0))
        });
        scored.dedup_by_key(|s| s.0);
        let position = line.position.unwrap_or(0) as usize;
        // Greedy picks at earlier positions use up their categories.
        let mut used = Vec::new();
        let mut remaining: Vec<(usize, f64, f64)> = scored;
        for _ in 0..position {
            let Some(k) = remaining.first().copied() else {
                break;
            };
            used.push(offers[k.0].category);
            remaining.retain(|s| !used.contains(&offers[s.0].category));
        }
        let logged = self.index.get(line.action.as_ref()).copied();
        let q_logged = logged
            .and_then(|i| remaining.iter().find(|s| s.0 == i).map(|s| s.1))
            .unwrap_or(0.0);
        let dist: Vec<(usize, f64)> = match (self.temperature, remaining.first()) {
            // The candidate shows nothing here: it earns nothing at this position.
            (_, None) => Vec::new(),
            (None, Some(best)) => vec![(best.0, 1.0)],
            (Some(t), Some(best)) => {
                let top = best.2;
                let e: Vec<f64> = remaining.iter().map(|s| ((s.2 - top) / t).exp()).collect();
                let z: f64 = e.iter().sum();
                remaining.iter().zip(e).map(|(s, e)| (s.0, e / z)).collect()
            }
        };
        let target_prob = dist
            .iter()
            .filter(|d| Some(d.0) == logged)
            .map(|d| d.1)
            .sum();
        let estimate_target = dist
            .iter()
            .map(|(i, p)| p * remaining.iter().find(|s| s.0 == *i).map_or(0.0, |s| s.1))
            .sum();
        if !(line.propensity > 0.0 && line.propensity <= 1.0) {
            return Err(OpeError::Propensity(line.propensity).to_string());
        }
        if !line.reward.is_finite() {
            return Err(OpeError::NotFinite("reward").to_string());
        }
        Ok(RoundTerms {
            reward: line.reward,
            propensity: line.propensity,
            target_prob,
            estimate_logged: q_logged,
            estimate_target,
        })
    }
}

/// Where the candidate policy comes from.
#[derive(Debug, Clone)]
pub enum Target {
    /// Each line's `target_probs` (and `reward_estimates` for DR).
    Logged,
    /// A model file's ranking (and its propensities for DR).
    Model(Box<ModelPolicy>),
}

/// Errors reading a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be read.
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
    /// A line that is not a logged round.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// Reduces one parsed line.
pub fn round_terms(line: &LoggedRound<'_>, target: &Target) -> Result<RoundTerms, String> {
    match target {
        Target::Logged => {
            let probs = line.target_probs.as_ref().ok_or(
                "no `target_probs` (give them on every line, or a candidate model with --model)",
            )?;
            let est = line.reward_estimates.as_ref();
            let q = |a: &str| est.and_then(|m| m.get(a)).copied().unwrap_or(0.0);
            RoundTerms::from_distribution(
                &line.action,
                line.reward,
                line.propensity,
                probs.iter().map(|(a, p)| (a.0.as_ref(), *p)),
                est.is_some().then_some(&q as &dyn Fn(&str) -> f64),
            )
            .map_err(|e| e.to_string())
        }
        Target::Model(m) => m.terms(line),
    }
}

/// Parses and reduces every non-blank line of `input`. Each line is reduced
/// as soon as it is parsed, so memory holds five numbers per round, not the
/// line.
pub fn read_rounds(mut input: impl BufRead, target: &Target) -> Result<Vec<RoundTerms>, ReadError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut line = 0u64;
    loop {
        text.clear();
        if input.read_line(&mut text)? == 0 {
            return Ok(out);
        }
        line += 1;
        if text.trim().is_empty() {
            continue;
        }
        let parsed: LoggedRound<'_> = serde_json::from_str(&text).map_err(|e| ReadError::Line {
            line,
            message: e.to_string(),
        })?;
        out.push(
            round_terms(&parsed, target).map_err(|message| ReadError::Line { line, message })?,
        );
    }
}

/// The printed report: the evaluation plus what was evaluated.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `"target_probs"` or `"model:<version>"` (with `"greedy"` or the temperature).
    pub target: String,
    /// The estimates.
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

/// `evaluate` flags.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// Logged rounds, generic NDJSON (docs/ope-log-format.md); "-" for standard input.
    #[arg(long, required_unless_present = "data_dir")]
    pub log: Option<PathBuf>,
    /// Candidate model JSON: the target is the engine's ranking with it (lines need `context`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Catalog TOML the model ranks (default: the compiled-in catalog).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// With --model: softmax over expected value (CNY) / temperature instead of greedy.
    #[arg(long, requires = "model")]
    pub temperature: Option<f64>,
    /// With --model: what the logged reward measures, for the model's reward estimates.
    #[arg(long, value_enum, default_value = "value")]
    pub reward: RewardUnit,
    /// Two-sided confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Warn when an importance weight exceeds this.
    #[arg(long, default_value_t = 50.0)]
    pub weight_threshold: f64,
    /// Warn when effective sample size / rounds is below this.
    #[arg(long, default_value_t = 0.1)]
    pub min_ess_ratio: f64,
    /// Engine data dir (server stopped): convert its decision log instead (needs --export).
    #[arg(long, conflicts_with = "log", requires = "export")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: write the logged rounds here as generic NDJSON ("-" for standard output).
    #[arg(long, requires = "data_dir")]
    pub export: Option<PathBuf>,
    /// With --data-dir: reward of a round, `accept` (0/1) or `revenue` (of the accept).
    #[arg(long, value_enum, default_value = "accept")]
    pub export_reward: ExportReward,
}

/// Runs `evaluate`.
pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    if let (Some(dir), Some(out)) = (&a.data_dir, &a.export) {
        let rounds = with_output(out, |w| export_engine_log(dir, a.export_reward, w))?;
        eprintln!(
            "wrote {rounds} logged rounds from {} to {}",
            dir.display(),
            out.display()
        );
        return Ok(());
    }
    let Some(log) = &a.log else {
        anyhow::bail!("give --log FILE (or --data-dir DIR --export FILE)");
    };
    let (target, label) = match &a.model {
        None => (Target::Logged, "target_probs".to_string()),
        Some(p) => {
            let model = ModelFile::from_json(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("loading {}", p.display()))?;
            let catalog = match &a.catalog {
                None => Catalog::default_catalog(),
                Some(c) => Catalog::from_toml(
                    &std::fs::read_to_string(c)
                        .with_context(|| format!("reading {}", c.display()))?,
                )
                .with_context(|| format!("loading {}", c.display()))?,
            };
            let label = match a.temperature {
                None => format!("model:{} greedy", model.version),
                Some(t) => format!("model:{} softmax temperature {t}", model.version),
            };
            let policy = ModelPolicy::new(&model, catalog, a.temperature, a.reward)
                .map_err(anyhow::Error::msg)?;
            (Target::Model(Box::new(policy)), label)
        }
    };
    let rounds = if log.as_os_str() == "-" {
        read_rounds(std::io::stdin().lock(), &target)
    } else {
        let f = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
        read_rounds(std::io::BufReader::with_capacity(1 << 20, f), &target)
    }
    .with_context(|| format!("reading {}", log.display()))?;
    let opts = EvaluateOptions {
        confidence: a.confidence,
        weight_threshold: a.weight_threshold,
        min_ess_ratio: a.min_ess_ratio,
    };
    let evaluation = ope::evaluate(&rounds, &opts)?;
    for w in &evaluation.warnings {
        eprintln!("warning [{}]: {}", w.code, w.message);
    }
    let report = Report {
        target: label,
        evaluation,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

fn with_output<T>(
    out: &Path,
    f: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut w = super::open_output(out)?;
    let r = f(&mut w)?;
    w.flush()?;
    Ok(r)
}

// ---------------------------------------------------------------------------
// The engine's own decision log
// ---------------------------------------------------------------------------

/// Reward of an exported round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportReward {
    /// 1 if the offer was accepted, else 0.
    Accept,
    /// The revenue recorded with the accept, else 0.
    Revenue,
}

/// The logging policy's probability of showing an issued offer in its slot,
/// if it is a usable one (in (0, 1]).
fn logging_propensity(offer: &crate::state::ledger::IssuedOffer) -> Option<f64> {
    (offer.propensity > 0.0 && offer.propensity <= 1.0).then_some(offer.propensity)
}

/// One exported line: the generic format without `target_probs`, which the
/// candidate supplies (added per line, or `--model` with a `context` that a
/// caller rebuilds from `context.decision_id`).
#[derive(Debug, Serialize)]
struct ExportedRound<'a> {
    round: String,
    action: &'a str,
    position: usize,
    reward: f64,
    propensity: f64,
    context: ExportedContext<'a>,
}

#[derive(Debug, Serialize)]
struct ExportedContext<'a> {
    decision_id: &'a str,
    member_id: &'a str,
    channel: &'a str,
    created_ms: i64,
}

/// Converts the decision log in `dir` (the server must be stopped) into
/// generic logged rounds on `out`, one per offer shown, with the reward from
/// the accepts in the log. Returns the number of rounds.
///
/// Needs every issued offer to carry `propensity`, the logging policy's
/// probability of showing it at its position; a log without it is refused,
/// naming the field, because without it no unbiased estimate is possible.
/// Decisions compacted into a snapshot are not in the record stream and are
/// skipped (reported on standard error).
pub fn export_engine_log(
    dir: &Path,
    reward: ExportReward,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let crate::logs::EngineLog {
        decisions,
        accepts,
        snapshot_lsn,
    } = crate::logs::read(dir)?;
    if let Some(lsn) = snapshot_lsn {
        eprintln!(
            "note: decisions up to LSN {lsn} are compacted into a snapshot and are not exported"
        );
    }
    let mut rounds = 0u64;
    for d in &decisions {
        for (pos, o) in d.offers.iter().enumerate() {
            let propensity = logging_propensity(o).ok_or_else(|| {
                anyhow::anyhow!(
                    "decision {} offer {pos} ({}) has `propensity` {}, not a probability in (0, 1]: \
                     its rounds cannot be weighted, so the log cannot be evaluated off-policy",
                    d.id,
                    o.offer_id,
                    o.propensity
                )
            })?;
            let accepted = accepts.get(&(d.id.clone(), pos as u8));
            let line = ExportedRound {
                round: format!("{}/{pos}", d.id),
                action: &o.offer_id,
                position: pos,
                reward: match (reward, accepted) {
                    (_, None) => 0.0,
                    (ExportReward::Accept, Some(_)) => 1.0,
                    (ExportReward::Revenue, Some(r)) => *r,
                },
                propensity,
                context: ExportedContext {
                    decision_id: &d.id,
                    member_id: &d.member_id,
                    channel: d.channel.as_str(),
                    created_ms: d.created_ms,
                },
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            rounds += 1;
        }
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(t: Option<f64>) -> ModelPolicy {
        ModelPolicy::new(
            &ModelFile::default_model(),
            Catalog::default_catalog(),
            t,
            RewardUnit::Accept,
        )
        .unwrap()
    }

    fn line<'a>(action: &'a str, position: u32, eligible: &[&str]) -> LoggedRound<'a> {
        let ctx = serde_json::json!({
            "features": vec![0.5f32; N_FEATURES],
            "eligible": eligible,
        });
        LoggedRound {
            round: None,
            action: Cow::Borrowed(action),
            position: Some(position),
            reward: 1.0,
            propensity: 0.5,
            target_probs: None,
            reward_estimates: None,
            context: Some(ctx),
        }
    }

    #[test]
    fn greedy_model_policy_is_deterministic_and_softmax_sums_to_one() {
        let c = Catalog::default_catalog();
        let ids: Vec<&str> = c.offers.iter().map(|o| o.id.as_str()).collect();
        let greedy = policy(None);
        // Exactly one eligible offer gets probability 1 at position 0.
        let hits: f64 = ids
            .iter()
            .map(|a| greedy.terms(&line(a, 0, &ids)).unwrap().target_prob)
            .sum();
        assert_eq!(hits, 1.0);
        let soft = policy(Some(20.0));
        let total: f64 = ids
            .iter()
            .map(|a| soft.terms(&line(a, 1, &ids)).unwrap().target_prob)
            .sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // Beyond the offers it could show, the candidate shows nothing.
        let t = greedy.terms(&line(ids[0], 5, &ids[..1])).unwrap();
        assert_eq!((t.target_prob, t.estimate_target), (0.0, 0.0));
    }

    #[test]
    fn model_context_errors_name_the_field() {
        let p = policy(None);
        let mut l = line("x", 0, &["no-such-offer"]);
        assert!(p.terms(&l).unwrap_err().contains("no-such-offer"));
        l.context = Some(serde_json::json!({"features": {"recency_years": 1.0}, "eligible": []}));
        assert!(p.terms(&l).unwrap_err().contains("frequency_log"));
        l.context = None;
        assert!(p.terms(&l).unwrap_err().contains("context"));
    }

    #[test]
    fn engine_log_with_an_unusable_propensity_is_refused_naming_the_field() {
        use crate::state::ledger::{DecisionRecord, IssuedOffer};
        use crate::state::LogRecord;
        use offer_engine_wal::{Wal, WalOptions};
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default(), |_| Ok(())).unwrap();
        let rec = LogRecord::Decision(DecisionRecord {
            id: "d-1".into(),
            member_id: "M1".into(),
            channel: crate::domain::Channel::Checkout,
            created_ms: 0,
            offers: vec![IssuedOffer {
                offer_id: "lounge-dom".into(),
                price: None,
                points_price: None,
                expires_ms: 1,
                inventory: None,
                suppress_days: 0,
                propensity: 0.0,
            }],
            experiments: Vec::new(),
            covariate: 0.0,
            features: Vec::new(),
        });
        wal.append_blocking(rec.encode(), |_| ()).unwrap();
        wal.close();
        drop(wal);
        let mut out = Vec::new();
        let err = export_engine_log(dir.path(), ExportReward::Accept, &mut out).unwrap_err();
        assert!(err.to_string().contains("`propensity`"), "{err}");
        assert!(err.to_string().contains("d-1"), "{err}");
        let missing = dir.path().join("nope");
        assert!(export_engine_log(&missing, ExportReward::Accept, &mut out).is_err());
    }

    #[test]
    fn generic_lines_parse_and_refuse_typos() {
        let good = r#"{"round":1,"action":"a","reward":1,"propensity":0.5,"target_probs":{"a":0.2,"b":0.8}}
{"round":"x","action":"b","position":0,"reward":0,"propensity":0.5,"target_probs":{"a":0.2,"b":0.8},"reward_estimates":{"a":0.1}}
"#;
        let r = read_rounds(good.as_bytes(), &Target::Logged).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].weight(), 0.4);
        assert_eq!(r[1].estimate_target, 0.2 * 0.1);
        // Escaped names cannot borrow from the line; they still match.
        let escaped = r#"{"action":"\u0061","reward":1,"propensity":0.5,"target_probs":{"a":1},"reward_estimates":{"\u0061":0.3}}"#;
        let r = read_rounds(escaped.as_bytes(), &Target::Logged).unwrap();
        assert_eq!((r[0].target_prob, r[0].estimate_logged), (1.0, 0.3));
        let typo = r#"{"action":"a","reward":1,"propensities":0.5}"#;
        match read_rounds(typo.as_bytes(), &Target::Logged) {
            Err(ReadError::Line { line: 1, message }) => assert!(message.contains("propensities")),
            other => panic!("{other:?}"),
        }
        let no_target = r#"{"action":"a","reward":1,"propensity":0.5}"#;
        let e = read_rounds(no_target.as_bytes(), &Target::Logged).unwrap_err();
        assert!(e.to_string().contains("target_probs"));
    }
}
