//! A/B experiments: configuration, deterministic assignment, attribution
//! and the report marketers read.
//!
//! # Assignment (language-independent; test vectors in
//! `tests/fixtures/assignment/vectors.json`)
//! ```text
//! h(s)     = fmix64(fnv1a64(UTF-8 bytes of s))
//! in experiment  iff  h(salt + ":" + member_id) mod 10000 < round(traffic * 10000)
//! variant        =   first variant v (in configured order) with
//!                    h(salt + ":variant:" + member_id) mod W < w_1 + ... + w_v
//!                    where W = sum of the integer weights
//! fnv1a64: offset 0xcbf29ce484222325, prime 0x100000001b3 (xor then multiply, per byte)
//! fmix64:  x ^= x >> 33; x *= 0xff51afd7ed558ccd; x ^= x >> 33;
//!          x *= 0xc4ceb9fe1a85ec53; x ^= x >> 33   (all mod 2^64)
//! ```
//! The same member lands in the same variant at checkout and in campaigns.
//!
//! # Attribution
//! The unit is the member. A member is *exposed* when a decision is made for
//! them in the experiment (holdout included: they are exposed to "no
//! offers"). A member *converts* when at least one offer of a decision that
//! carried the experiment is accepted; their revenue is the sum of accepted
//! revenue (0 for exposed members who never converted). The covariate for
//! CUPED is the member's qualifying spend at first exposure, which the
//! experiment cannot have changed yet.
//!
//! Exposures and conversions are counted by the state as records are applied
//! (`offer_engine::state`); this module turns the counts into the report.

use serde::{Deserialize, Serialize};

use crate::domain::{Category, FieldError};
use crate::policy::Ranking;
use crate::stats::{self, ArmStats, Lift};
/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser.
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    x
}

/// The assignment hash of a string.
pub fn assignment_hash(s: &str) -> u64 {
    fmix64(fnv1a64(s.as_bytes()))
}

/// What a variant does to the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// Name (reported and returned in decisions).
    pub name: String,
    /// Integer weight.
    pub weight: u32,
    /// Whether this is the control.
    #[serde(default)]
    pub control: bool,
    /// Holdout: the member gets no offers at all.
    #[serde(default)]
    pub holdout: bool,
    /// Ranking policy (model expected value, or fixed business priority).
    #[serde(default)]
    pub ranking: Ranking,
    /// Most offers this variant shows (capped by the request's max_offers).
    #[serde(default)]
    pub max_offers: Option<usize>,
    /// Only these categories (catalog subset); empty = all.
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Model file this variant scores with (default: the engine's model).
    #[serde(default)]
    pub model: Option<String>,
    /// Exploration policy, e.g. `{ policy = "epsilon_greedy", epsilon = 0.05 }`
    /// (default greedy: the best expected value, propensity 1).
    #[serde(default)]
    pub exploration: crate::policy::Exploration,
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Id.
    pub id: String,
    /// Salt of the assignment hash; changing it reshuffles members.
    pub salt: String,
    /// Share of members in the experiment, 0 to 1.
    pub traffic: f64,
    /// Prior variance of the effect for the always-valid (mSPRT) p-value.
    #[serde(default = "default_tau2")]
    pub msprt_tau2: f64,
    /// Variants, in assignment order.
    #[serde(rename = "variant")]
    pub variants: Vec<VariantSpec>,
}

fn default_tau2() -> f64 {
    1e-4
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentsFile {
    #[serde(default, rename = "experiment")]
    experiments: Vec<ExperimentSpec>,
}

/// The compiled-in default experiments.
pub const DEFAULT_EXPERIMENTS: &str = include_str!("../../../config/experiments.toml");

/// Parses and checks experiments from TOML.
pub fn parse_experiments(text: &str) -> Result<Vec<ExperimentSpec>, FieldError> {
    let f: ExperimentsFile =
        toml::from_str(text).map_err(|e| FieldError::new("experiments", e.to_string()))?;
    let mut ids = std::collections::HashSet::new();
    for (i, e) in f.experiments.iter().enumerate() {
        let at = |field: &str| format!("experiment[{i}].{field}");
        if e.id.is_empty() || !ids.insert(e.id.clone()) {
            return Err(FieldError::new(at("id"), "must be non-empty and unique"));
        }
        if !(0.0..=1.0).contains(&e.traffic) {
            return Err(FieldError::new(at("traffic"), "must be from 0 to 1"));
        }
        if e.variants.len() < 2 || e.variants.len() > 16 {
            return Err(FieldError::new(at("variant"), "needs 2 to 16 variants"));
        }
        if e.variants.iter().filter(|v| v.control).count() != 1 {
            return Err(FieldError::new(
                at("variant"),
                "exactly one variant must be the control",
            ));
        }
        if e.variants.iter().any(|v| v.weight == 0) {
            return Err(FieldError::new(
                at("variant.weight"),
                "weights must be positive integers",
            ));
        }
        let mut names = std::collections::HashSet::new();
        if e.variants
            .iter()
            .any(|v| v.name.is_empty() || !names.insert(v.name.clone()))
        {
            return Err(FieldError::new(
                at("variant.name"),
                "names must be non-empty and unique",
            ));
        }
        if !(e.msprt_tau2.is_finite() && e.msprt_tau2 > 0.0) {
            return Err(FieldError::new(at("msprt_tau2"), "must be positive"));
        }
        for v in &e.variants {
            v.exploration
                .validate()
                .map_err(|m| FieldError::new(at("variant.exploration"), m))?;
        }
    }
    Ok(f.experiments)
}

impl ExperimentSpec {
    /// The variant index of a member, or None if outside the traffic share.
    pub fn assign(&self, member_id: &str) -> Option<usize> {
        let threshold = (self.traffic * 10_000.0).round() as u64;
        if assignment_hash(&format!("{}:{}", self.salt, member_id)) % 10_000 >= threshold {
            return None;
        }
        let total: u64 = self.variants.iter().map(|v| v.weight as u64).sum();
        let point = assignment_hash(&format!("{}:variant:{}", self.salt, member_id)) % total.max(1);
        let mut acc = 0u64;
        for (i, v) in self.variants.iter().enumerate() {
            acc += v.weight as u64;
            if point < acc {
                return Some(i);
            }
        }
        Some(self.variants.len() - 1)
    }

    /// Index of the control variant.
    pub fn control(&self) -> usize {
        self.variants.iter().position(|v| v.control).unwrap_or(0)
    }
}

/// One experiment assignment, as returned with a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// Experiment id.
    pub experiment: String,
    /// Variant name.
    pub variant: String,
}

/// A member's standing in one experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// Variant index.
    pub variant: u8,
    /// Covariate (qualifying spend at first exposure).
    pub covariate: f32,
    /// Converted at least once.
    pub converted: bool,
    /// Accepted revenue.
    pub revenue: f64,
}

/// Most variants an experiment may have.
pub const MAX_VARIANTS: usize = 16;

/// A lift in the report's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportLift {
    /// Treatment minus control.
    pub absolute: f64,
    /// Absolute / control.
    pub relative: f64,
    /// Lower end of the 95% interval of the absolute difference.
    pub ci_low: f64,
    /// Upper end of the 95% interval of the absolute difference.
    pub ci_high: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Lower end of the 95% interval of the relative lift (delta method).
    pub relative_ci_low: f64,
    /// Upper end of the 95% interval of the relative lift (delta method).
    pub relative_ci_high: f64,
}

impl From<Lift> for ReportLift {
    fn from(l: Lift) -> Self {
        ReportLift {
            absolute: l.absolute,
            relative: l.relative,
            ci_low: l.abs_ci_low,
            ci_high: l.abs_ci_high,
            p_value: l.p_value,
            relative_ci_low: l.ci_low,
            relative_ci_high: l.ci_high,
        }
    }
}

/// Mean and standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std_dev: f64,
}

/// One variant in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantReport {
    /// Name.
    pub variant: String,
    /// Exposed members.
    pub members: u64,
    /// Decisions made.
    pub exposures: u64,
    /// Converted members.
    pub conversions: u64,
    /// conversions / members.
    pub conversion_rate: f64,
    /// Revenue per exposed member.
    pub revenue_per_member: MeanSd,
    /// Against the control (null for the control).
    pub conversion_lift: Option<ReportLift>,
    /// Against the control (null for the control).
    pub revenue_lift: Option<ReportLift>,
    /// P(conversion rate > control's), Beta(1,1) priors (null for the control).
    pub chance_to_beat_control: Option<f64>,
    /// Always-valid p-value (running minimum of the mSPRT p-value; null for the control).
    pub sequential_p_value: Option<f64>,
    /// Revenue lift with CUPED adjustment (null for the control).
    pub cuped_revenue_lift: Option<ReportLift>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Experiment id.
    pub experiment: String,
    /// Control variant name.
    pub control: String,
    /// Sample-ratio mismatch p-value (chi-square of members against weights).
    pub srm_p_value: Option<f64>,
    /// Variants in configured order.
    pub variants: Vec<VariantReport>,
}

/// Builds the report of an experiment from its arms. Pure.
pub fn report_from_arms(
    spec: &ExperimentSpec,
    arms: &[ArmStats],
    exposures: &[u64],
    sequential_prev: &[f64],
) -> Report {
    let c = spec.control();
    let control = &arms[c];
    let observed: Vec<u64> = arms.iter().map(|a| a.members).collect();
    let weights: Vec<f64> = spec.variants.iter().map(|v| v.weight as f64).collect();
    let variants = spec
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let a = &arms[i];
            let is_control = i == c;
            // Figures against the control need members in both arms.
            let compared = !is_control && a.members > 0 && control.members > 0;
            let other = |f: &dyn Fn() -> Option<Lift>| {
                if is_control {
                    None
                } else {
                    f().map(Into::into)
                }
            };
            VariantReport {
                variant: v.name.clone(),
                members: a.members,
                exposures: exposures.get(i).copied().unwrap_or(0),
                conversions: a.conversions,
                conversion_rate: a.conversion_rate(),
                revenue_per_member: MeanSd {
                    mean: a.revenue_mean(),
                    std_dev: a.revenue_std_dev(),
                },
                conversion_lift: other(&|| stats::conversion_lift(control, a, 0.95)),
                revenue_lift: other(&|| stats::revenue_lift(control, a, 0.95)),
                chance_to_beat_control: compared.then(|| stats::chance_to_beat_control(control, a)),
                sequential_p_value: compared.then(|| {
                    let p = stats::sequential_p_value(control, a, spec.msprt_tau2);
                    stats::msprt_update(sequential_prev.get(i).copied().unwrap_or(1.0), p)
                }),
                cuped_revenue_lift: other(&|| stats::cuped_revenue_lift(control, a, 0.95)),
            }
        })
        .collect();
    Report {
        experiment: spec.id.clone(),
        control: spec.variants[c].name.clone(),
        srm_p_value: stats::srm_p_value(&observed, &weights),
        variants,
    }
}

/// One experiment in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentSnapshot {
    /// Id.
    pub id: String,
    /// Variant names, by state index.
    pub variants: Vec<String>,
    /// Decisions per variant.
    pub decisions: Vec<u64>,
    /// Running minimum of the sequential p-value per variant.
    pub sequential_min: Vec<f64>,
    /// Member exposures.
    pub members: Vec<(String, Exposure)>,
}
