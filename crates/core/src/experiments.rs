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
//!
//! # Segments
//! A member's segments (tier, value segment, business or leisure traveller,
//! home airport, channel) are taken once, at first exposure
//! ([`SegmentKeys`], kept in the [`Exposure`]): before the treatment could
//! move them. A segment a treatment changed (an offer that lifts members a
//! tier) would otherwise carry its own effect into the comparison. The
//! segmented report ([`segmented_report`]) gives every figure per segment;
//! each lift's p-value is corrected across the segments that have one (per
//! variant and per metric: the family is "this variant against the control
//! on this metric, in every segment"), Holm by default (family-wise error),
//! Benjamini–Hochberg on request (false discovery rate). A segment where the
//! variant or the control has fewer than the experiment's
//! `segment_min_members` shows its counts and no comparison.
//!
//! # Verdicts
//! Each variant row says in words what its conversion figures allow
//! ([`VariantReport::verdict`]) and how many more members per arm the planned
//! minimum detectable effect needs ([`VariantReport::sample_size_needed`]).
//! In the whole-experiment report the verdict rests on the always-valid
//! (mSPRT) p-value, since reports are read continuously; in a segment row on
//! the corrected fixed-horizon p-value. Both quote the fixed-horizon 95%
//! interval of the difference.
//!
//! # Loyalty outcomes
//! Per exposure the state also counts, from the member events applied
//! (flights flown, purchases, tier changes), those whose log time falls in
//! the window of `loyalty_window_days` after the first exposure: flights,
//! qualifying spend, and whether the member reached a tier above the one at
//! first exposure. A member *lapsed* when their window has ended (by the
//! state's log time) without a flight; lapse is judged over completed
//! windows only. [`LoyaltyArm`] sums them per variant; the report's
//! `flights_lift` and `spend_lift` are Welch lifts after CUPED on the
//! 12-month flights and the qualifying spend at first exposure, and
//! `tier_up_lift` and `lapse_lift` two-proportion lifts.
//!
//! # Results over time
//! The state keeps, per log day with activity, each variant's cumulative
//! [`ArmStats`] at the day's end (at most [`MAX_TIMESERIES_DAYS`]);
//! [`timeseries`] turns them into the daily figures, with the always-valid
//! p-value as the running minimum over the days.
//!
//! # Guardrails
//! An experiment may name metrics ([`GuardrailSpec`]) a variant must not make
//! worse than the control beyond a margin. The harm (positive is worse) and
//! its fixed-horizon 95% interval give the status: `ok` when the interval
//! lies below the margin, `failing` when it lies above 0 and the estimate
//! beyond the margin, `warning` otherwise. Holdouts are not checked.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::domain::{Category, Channel, Day, FieldError, Iata, Member, Tier};
use crate::features::ValueSegment;
use crate::policy::Ranking;
use crate::stats::{self, ArmStats, Correction, Lift};
/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(0xcbf29ce484222325, bytes)
}

/// FNV-1a continued from `h` over `bytes`: hashing the pieces of a string
/// in turn gives the hash of the whole, with no string built.
fn fnv1a64_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The assignment hash of the concatenation of `parts`.
fn assignment_hash_of(parts: &[&str]) -> u64 {
    fmix64(
        parts
            .iter()
            .fold(0xcbf29ce484222325, |h, p| fnv1a64_from(h, p.as_bytes())),
    )
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
    /// Planned minimum detectable effect: relative change of the
    /// conversion rate (0.05 = a 5% lift) the experiment is sized for, at
    /// 80% power and a two-sided 5% level.
    #[serde(default = "default_mde")]
    pub mde: f64,
    /// Members per arm a segment needs (in the variant and in the control)
    /// before the segmented report compares them.
    #[serde(default = "default_segment_min_members")]
    pub segment_min_members: u64,
    /// Days after a member's first exposure over which their loyalty
    /// outcomes (flights, qualifying spend, tier-up, lapse) are counted.
    #[serde(default = "default_loyalty_window_days")]
    pub loyalty_window_days: u32,
    /// Guardrail metrics: what a variant must not make worse beyond a margin.
    #[serde(default, rename = "guardrail")]
    pub guardrails: Vec<GuardrailSpec>,
    /// Variants, in assignment order.
    #[serde(rename = "variant")]
    pub variants: Vec<VariantSpec>,
}

/// A metric a guardrail watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailMetric {
    /// Share of members who converted; must not drop.
    ConversionRate,
    /// Accepted revenue per member; must not drop.
    RevenuePerMember,
    /// Share of members who declined at least one offer; must not rise.
    DeclineRate,
}

impl GuardrailMetric {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardrailMetric::ConversionRate => "conversion_rate",
            GuardrailMetric::RevenuePerMember => "revenue_per_member",
            GuardrailMetric::DeclineRate => "decline_rate",
        }
    }
}

impl GuardrailStatus {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardrailStatus::Ok => "ok",
            GuardrailStatus::Warning => "warning",
            GuardrailStatus::Failing => "failing",
        }
    }
}

/// One guardrail: `metric` must not get worse than the control's by more
/// than `margin` (absolute, in the metric's units: 0.01 is one percentage
/// point of a rate, 5.0 is 5 currency units per member).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSpec {
    /// The metric.
    pub metric: GuardrailMetric,
    /// Largest tolerated harm, absolute.
    pub margin: f64,
}

/// What a guardrail says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailStatus {
    /// The 95% interval of the harm lies below the margin.
    Ok,
    /// Neither ok nor failing: a harm beyond the margin is not ruled out yet
    /// (or a significant harm within the margin).
    Warning,
    /// The harm is significant (its 95% interval excludes 0) and its
    /// estimate exceeds the margin.
    Failing,
}

/// A guardrail of one variant in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardrailReport {
    /// Variant.
    pub variant: String,
    /// Metric.
    pub metric: GuardrailMetric,
    /// Margin.
    pub margin: f64,
    /// Harm: how much worse than the control (positive is worse), null
    /// without data.
    pub harm: Option<f64>,
    /// Lower end of the 95% interval of the harm.
    pub harm_ci_low: Option<f64>,
    /// Upper end of the 95% interval of the harm.
    pub harm_ci_high: Option<f64>,
    /// Status.
    pub status: GuardrailStatus,
}

fn default_tau2() -> f64 {
    1e-4
}

fn default_mde() -> f64 {
    0.05
}

fn default_segment_min_members() -> u64 {
    100
}

/// Default loyalty window: 90 days after first exposure.
pub const DEFAULT_LOYALTY_WINDOW_DAYS: u32 = 90;

/// Longest loyalty window accepted (ten years).
pub const MAX_LOYALTY_WINDOW_DAYS: u32 = 3_650;

fn default_loyalty_window_days() -> u32 {
    DEFAULT_LOYALTY_WINDOW_DAYS
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
        if !(e.mde.is_finite() && e.mde > -1.0 && e.mde != 0.0) {
            return Err(FieldError::new(
                at("mde"),
                "must be a relative change above -1 and not 0",
            ));
        }
        if !(1..=MAX_LOYALTY_WINDOW_DAYS).contains(&e.loyalty_window_days) {
            return Err(FieldError::new(
                at("loyalty_window_days"),
                format!("must be from 1 to {MAX_LOYALTY_WINDOW_DAYS}"),
            ));
        }
        if e.guardrails
            .iter()
            .any(|g| !(g.margin.is_finite() && g.margin >= 0.0))
        {
            return Err(FieldError::new(
                at("guardrail.margin"),
                "must be a number of at least 0",
            ));
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
        // The hashes of "salt:member" and "salt:variant:member", without
        // formatting either (a checkout assigns every running experiment).
        if assignment_hash_of(&[&self.salt, ":", member_id]) % 10_000 >= threshold {
            return None;
        }
        let total: u64 = self.variants.iter().map(|v| v.weight as u64).sum();
        let point = assignment_hash_of(&[&self.salt, ":variant:", member_id]) % total.max(1);
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
    /// Decisions made for the member in the experiment (0: unknown, an
    /// exposure restored from a snapshot older than format 5).
    pub decisions: u32,
    /// The member's segments at first exposure (None: unknown, the member
    /// was not in the member store then, or the exposure predates format 5).
    pub segment: Option<SegmentKeys>,
    /// Declined at least once (false in exposures before format 5).
    pub declined: bool,
    /// Log time of the first exposure, minutes since the epoch (0: unknown,
    /// an exposure restored from a snapshot older than format 6; such a
    /// member has no loyalty outcomes).
    pub first_min: u32,
    /// Flights flown inside the loyalty window.
    pub flights: u16,
    /// Flights in the 12 months before first exposure (CUPED covariate of
    /// the flights lift; 0 when the member was not known then).
    pub pre_flights: u16,
    /// Qualifying spend added inside the loyalty window.
    pub spend: f32,
    /// Reached a tier above the one held at first exposure inside the window.
    pub tier_up: bool,
}

impl Exposure {
    /// A first exposure: in variant slot `variant`, at log time `at_ms`,
    /// with the covariate, segments and 12-month flights as they were then.
    pub fn first(
        variant: u8,
        covariate: f32,
        at_ms: i64,
        segment: Option<SegmentKeys>,
        pre_flights: u16,
    ) -> Exposure {
        Exposure {
            variant,
            covariate,
            converted: false,
            revenue: 0.0,
            decisions: 1,
            segment,
            declined: false,
            // Minute 0 (1970-01-01 00:00) and earlier read as unknown.
            first_min: u32::try_from(at_ms.div_euclid(60_000)).unwrap_or(0),
            flights: 0,
            pre_flights,
            spend: 0.0,
            tier_up: false,
        }
    }

    /// Log time of the first exposure, ms (None: unknown).
    pub fn first_ms(&self) -> Option<i64> {
        (self.first_min > 0).then(|| self.first_min as i64 * 60_000)
    }

    /// Whether a member event at log time `at_ms` falls inside the loyalty
    /// window of `window_days` days after the first exposure.
    pub fn in_window(&self, at_ms: i64, window_days: u32) -> bool {
        self.first_ms()
            .is_some_and(|f| at_ms >= f && at_ms < f + window_days as i64 * DAY_MS)
    }

    /// Whether the loyalty window has ended by log time `now_ms`.
    pub fn window_complete(&self, now_ms: i64, window_days: u32) -> bool {
        self.first_ms()
            .is_some_and(|f| f + window_days as i64 * DAY_MS <= now_ms)
    }
}

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Format-5 form of [`Exposure`] (before loyalty outcomes were kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExposureV5 {
    /// Variant index.
    pub variant: u8,
    /// Covariate (qualifying spend at first exposure).
    pub covariate: f32,
    /// Converted at least once.
    pub converted: bool,
    /// Accepted revenue.
    pub revenue: f64,
    /// Decisions made for the member in the experiment.
    pub decisions: u32,
    /// The member's segments at first exposure.
    pub segment: Option<SegmentKeys>,
    /// Declined at least once.
    pub declined: bool,
}

impl From<ExposureV5> for Exposure {
    fn from(e: ExposureV5) -> Self {
        Exposure {
            variant: e.variant,
            covariate: e.covariate,
            converted: e.converted,
            revenue: e.revenue,
            decisions: e.decisions,
            segment: e.segment,
            declined: e.declined,
            first_min: 0,
            flights: 0,
            pre_flights: 0,
            spend: 0.0,
            tier_up: false,
        }
    }
}

/// Format-4 form of [`Exposure`] (before decisions and segments were kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExposureV4 {
    /// Variant index.
    pub variant: u8,
    /// Covariate (qualifying spend at first exposure).
    pub covariate: f32,
    /// Converted at least once.
    pub converted: bool,
    /// Accepted revenue.
    pub revenue: f64,
}

impl From<ExposureV4> for Exposure {
    fn from(e: ExposureV4) -> Self {
        ExposureV5 {
            variant: e.variant,
            covariate: e.covariate,
            converted: e.converted,
            revenue: e.revenue,
            decisions: 0,
            segment: None,
            declined: false,
        }
        .into()
    }
}

/// A member's segments, taken at first exposure (pre-treatment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentKeys {
    /// Tier.
    pub tier: Tier,
    /// Value segment (from the lifetime value).
    pub value: ValueSegment,
    /// Business (true) or leisure traveller.
    pub business: bool,
    /// Home airport code.
    pub home_airport: [u8; 3],
    /// Channel of the first decision.
    pub channel: Channel,
}

impl SegmentKeys {
    /// The segments of `member` on `day`, first exposed through `channel`.
    pub fn of(member: &Member, channel: Channel, day: Day) -> SegmentKeys {
        let seg = crate::features::segment(member, day);
        let h = member.home_airport.as_str().as_bytes();
        SegmentKeys {
            tier: member.tier,
            value: seg.value,
            business: seg.business,
            home_airport: [h[0], h[1], h[2]],
            channel,
        }
    }
}

/// What the segmented report splits members by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentBy {
    /// Tier at first exposure.
    Tier,
    /// Value segment at first exposure.
    ValueSegment,
    /// `business` or `leisure`.
    Traveller,
    /// Home airport at first exposure.
    HomeAirport,
    /// Channel of the first decision.
    Channel,
}

/// The segment of exposures whose segments are not known.
pub const UNKNOWN_SEGMENT: &str = "unknown";

impl SegmentBy {
    /// Every dimension.
    pub const ALL: [SegmentBy; 5] = [
        SegmentBy::Tier,
        SegmentBy::ValueSegment,
        SegmentBy::Traveller,
        SegmentBy::HomeAirport,
        SegmentBy::Channel,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentBy::Tier => "tier",
            SegmentBy::ValueSegment => "value_segment",
            SegmentBy::Traveller => "traveller",
            SegmentBy::HomeAirport => "home_airport",
            SegmentBy::Channel => "channel",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<SegmentBy> {
        SegmentBy::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The segment of a member with these keys (`unknown` without keys).
    pub fn key(self, keys: Option<&SegmentKeys>) -> String {
        let Some(k) = keys else {
            return UNKNOWN_SEGMENT.to_string();
        };
        match self {
            SegmentBy::Tier => k.tier.as_str().to_string(),
            SegmentBy::ValueSegment => k.value.as_str().to_string(),
            SegmentBy::Traveller => if k.business { "business" } else { "leisure" }.to_string(),
            SegmentBy::HomeAirport => Iata::from_bytes(k.home_airport).as_str().to_string(),
            SegmentBy::Channel => k.channel.as_str().to_string(),
        }
    }
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
    /// The p-value corrected across segments (segmented reports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value_corrected: Option<f64>,
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
            p_value_corrected: None,
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
    /// Members whose loyalty outcomes are counted: exposed members with a
    /// known first-exposure time.
    pub loyalty_members: u64,
    /// Flights flown per member inside the loyalty window (so far).
    pub flights_per_member: MeanSd,
    /// Qualifying spend per member inside the loyalty window (so far).
    pub spend_per_member: MeanSd,
    /// Share of members who reached a higher tier inside the window.
    pub tier_up_rate: f64,
    /// Members whose loyalty window has ended (the lapse rate's base).
    pub lapse_members: u64,
    /// Share of `lapse_members` who flew no flight inside their window.
    pub lapse_rate: f64,
    /// Flights per member against the control: Welch with CUPED on the
    /// flights of the 12 months before first exposure (null for the control).
    pub flights_lift: Option<ReportLift>,
    /// Qualifying spend per member against the control: Welch with CUPED on
    /// the qualifying spend at first exposure (null for the control).
    pub spend_lift: Option<ReportLift>,
    /// Tier-up rate against the control, two proportions (null for the control).
    pub tier_up_lift: Option<ReportLift>,
    /// Lapse rate against the control over completed windows, two
    /// proportions; negative is fewer lapses (null for the control).
    pub lapse_lift: Option<ReportLift>,
    /// What the conversion figures allow, in words (null for the control).
    pub verdict: Option<String>,
    /// Members per arm still needed (beyond the smaller of this arm and the
    /// control) to detect the planned minimum detectable effect at 80% power
    /// and a two-sided 5% level; 0 once reached (null for the control, or
    /// while the control has no conversions to size from).
    pub sample_size_needed: Option<u64>,
    /// Value to the airline per exposed member (accepts' value net of the
    /// points given away, refunds taken back; null in segment rows).
    pub value_per_member: Option<MeanSd>,
    /// Value per member against the control, Welch (null for the control).
    pub value_lift: Option<ReportLift>,
    /// Value lift with CUPED adjustment (null for the control).
    pub cuped_value_lift: Option<ReportLift>,
    /// Cost of the points given away per exposed member (null in segment rows).
    pub points_cost_per_member: Option<f64>,
    /// Return on the points given away against the holdout: (value per
    /// member − the holdout's) / (points cost per member − the holdout's);
    /// null for the holdout, without a holdout, or when the variant gives
    /// away no more points than the holdout.
    pub roi: Option<f64>,
}

/// One variant's value statistics: members and covariates as in its
/// [`ArmStats`], the revenue sums holding value instead (so every revenue
/// statistic applies to value unchanged), and the points cost given away.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueArm {
    /// Members and covariate as in the arm; `revenue_*` hold value.
    pub stats: ArmStats,
    /// Sum over members of the cost of the points given away.
    pub points_cost_sum: f64,
}

impl ValueArm {
    /// Points cost per member; 0 without members.
    pub fn points_cost_mean(&self) -> f64 {
        if self.stats.members == 0 {
            0.0
        } else {
            self.points_cost_sum / self.stats.members as f64
        }
    }
}

/// Return on the points given away of `arm` against `holdout`: incremental
/// value per member over incremental points cost per member. None without
/// members in either, or when the arm gives away no more than the holdout.
pub fn roi(arm: &ValueArm, holdout: &ValueArm) -> Option<f64> {
    if arm.stats.members == 0 || holdout.stats.members == 0 {
        return None;
    }
    let cost = arm.points_cost_mean() - holdout.points_cost_mean();
    let gain = arm.stats.revenue_mean() - holdout.stats.revenue_mean();
    (cost > 0.0).then(|| gain / cost).filter(|r| r.is_finite())
}

/// Fills the value figures of a report's rows from each variant's value
/// arm (by spec variant index): value per member, its Welch and CUPED lifts
/// against the control (as the revenue ones), points cost per member and
/// the ROI against the holdout.
pub fn add_value_figures(spec: &ExperimentSpec, report: &mut Report, value_arms: &[ValueArm]) {
    let c = spec.control();
    let holdout = spec.variants.iter().position(|v| v.holdout);
    let Some(control) = value_arms.get(c) else {
        return;
    };
    for (i, row) in report.variants.iter_mut().enumerate() {
        let Some(a) = value_arms.get(i) else {
            continue;
        };
        row.value_per_member = Some(MeanSd {
            mean: a.stats.revenue_mean(),
            std_dev: a.stats.revenue_std_dev(),
        });
        row.points_cost_per_member = Some(a.points_cost_mean());
        if i != c {
            row.value_lift = stats::revenue_lift(&control.stats, &a.stats, 0.95).map(Into::into);
            row.cuped_value_lift =
                stats::cuped_revenue_lift(&control.stats, &a.stats, 0.95).map(Into::into);
        }
        row.roi = holdout
            .filter(|h| *h != i)
            .and_then(|h| value_arms.get(h))
            .and_then(|h| roi(a, h));
    }
}

/// One arm's loyalty outcomes, over its exposed members whose first
/// exposure time is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoyaltyArm {
    /// Flights in the window per member (as revenue) with the 12-month
    /// flights before first exposure (as covariate).
    pub flights: ArmStats,
    /// Qualifying spend in the window per member (as revenue) with the
    /// qualifying spend at first exposure (as covariate).
    pub spend: ArmStats,
    /// Members (members) and those who reached a higher tier (conversions).
    pub tier_up: ArmStats,
    /// Members whose window has ended (members) and those of them who flew
    /// no flight in it (conversions).
    pub lapse: ArmStats,
}

impl LoyaltyArm {
    /// Adds one exposed member, at log time `now_ms`, with a window of
    /// `window_days`; a member with an unknown first exposure is left out.
    pub fn add(&mut self, e: &Exposure, now_ms: i64, window_days: u32) {
        if e.first_ms().is_none() {
            return;
        }
        self.flights
            .add_member(false, e.flights as f64, e.pre_flights as f64);
        self.spend
            .add_member(false, e.spend as f64, e.covariate as f64);
        self.tier_up.add_member(e.tier_up, 0.0, 0.0);
        if e.window_complete(now_ms, window_days) {
            self.lapse.add_member(e.flights == 0, 0.0, 0.0);
        }
    }

    /// Every exposure's loyalty outcomes, per spec variant: `members` yields
    /// each exposed member's spec variant index (None: left out).
    pub fn per_variant(
        variants: usize,
        now_ms: i64,
        window_days: u32,
        members: impl IntoIterator<Item = (Option<usize>, Exposure)>,
    ) -> Vec<LoyaltyArm> {
        let mut out = vec![LoyaltyArm::default(); variants];
        for (v, e) in members {
            if let Some(arm) = v.and_then(|v| out.get_mut(v)) {
                arm.add(&e, now_ms, window_days);
            }
        }
        out
    }
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
    /// Each guardrail of each variant that shows offers (holdouts are left
    /// out: they give up conversions by design).
    pub guardrails: Vec<GuardrailReport>,
}

/// Builds the report of an experiment from its arms. Pure.
///
/// `decliners` are the members per variant who declined at least once (for
/// the `decline_rate` guardrail); `loyalty` the loyalty outcomes per variant
/// (empty: none counted).
pub fn report_from_arms(
    spec: &ExperimentSpec,
    arms: &[ArmStats],
    exposures: &[u64],
    sequential_prev: &[f64],
    decliners: &[u64],
    loyalty: &[LoyaltyArm],
) -> Report {
    let c = spec.control();
    let observed: Vec<u64> = arms.iter().map(|a| a.members).collect();
    let weights: Vec<f64> = spec.variants.iter().map(|v| v.weight as f64).collect();
    let mut variants = variant_rows(spec, arms, exposures, sequential_prev, loyalty, 0);
    for v in variants.iter_mut() {
        let p = v.sequential_p_value;
        v.verdict = verdict(spec, v, p, "always-valid p");
    }
    let guardrails = guardrails(spec, arms, decliners);
    for v in variants.iter_mut() {
        let mine: Vec<&GuardrailReport> = guardrails
            .iter()
            .filter(|g| g.variant == v.variant)
            .collect();
        if let (Some(text), false) = (v.verdict.as_mut(), mine.is_empty()) {
            let bad: Vec<String> = mine
                .iter()
                .filter(|g| g.status != GuardrailStatus::Ok)
                .map(|g| format!("{} {}", g.metric.as_str(), g.status.as_str()))
                .collect();
            if bad.is_empty() {
                text.push_str("; guardrails ok");
            } else {
                text.push_str(&format!("; guardrails: {}", bad.join(", ")));
            }
        }
    }
    Report {
        experiment: spec.id.clone(),
        control: spec.variants[c].name.clone(),
        srm_p_value: stats::srm_p_value(&observed, &weights),
        variants,
        guardrails,
    }
}

/// The guardrails of every variant that shows offers against the control.
fn guardrails(spec: &ExperimentSpec, arms: &[ArmStats], decliners: &[u64]) -> Vec<GuardrailReport> {
    let c = spec.control();
    let mut out = Vec::new();
    for (i, v) in spec.variants.iter().enumerate() {
        if i == c || v.holdout {
            continue;
        }
        let (control, arm) = (&arms[c], &arms[i]);
        for g in &spec.guardrails {
            // (variant − control, its 95% interval) on the metric's scale.
            let diff = match g.metric {
                GuardrailMetric::ConversionRate => stats::proportion_difference(
                    control.conversions,
                    control.members,
                    arm.conversions,
                    arm.members,
                    0.95,
                ),
                GuardrailMetric::DeclineRate => stats::proportion_difference(
                    decliners.get(c).copied().unwrap_or(0),
                    control.members,
                    decliners.get(i).copied().unwrap_or(0),
                    arm.members,
                    0.95,
                ),
                GuardrailMetric::RevenuePerMember => stats::revenue_lift(control, arm, 0.95)
                    .map(|l| (l.absolute, l.abs_ci_low, l.abs_ci_high)),
            };
            // Harm is positive when the variant is worse.
            let harm = diff.map(|(d, lo, hi)| match g.metric {
                GuardrailMetric::DeclineRate => (d, lo, hi),
                _ => (-d, -hi, -lo),
            });
            let status = match harm {
                Some((_, _, hi)) if hi < g.margin => GuardrailStatus::Ok,
                Some((h, lo, _)) if lo > 0.0 && h > g.margin => GuardrailStatus::Failing,
                _ => GuardrailStatus::Warning,
            };
            out.push(GuardrailReport {
                variant: v.name.clone(),
                metric: g.metric,
                margin: g.margin,
                harm: harm.map(|h| h.0),
                harm_ci_low: harm.map(|h| h.1),
                harm_ci_high: harm.map(|h| h.2),
                status,
            });
        }
    }
    out
}

/// The variant rows of a report (verdicts left empty). A comparison is made
/// only where the variant and the control have at least `min_members`.
fn variant_rows(
    spec: &ExperimentSpec,
    arms: &[ArmStats],
    exposures: &[u64],
    sequential_prev: &[f64],
    loyalty: &[LoyaltyArm],
    min_members: u64,
) -> Vec<VariantReport> {
    let c = spec.control();
    let control = &arms[c];
    let none = LoyaltyArm::default();
    let loyal = |i: usize| loyalty.get(i).unwrap_or(&none);
    let lc = loyal(c);
    spec.variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let a = &arms[i];
            let is_control = i == c;
            let big_enough = a.members >= min_members && control.members >= min_members;
            // Figures against the control need members in both arms.
            let compared = !is_control && a.members > 0 && control.members > 0 && big_enough;
            let other = |f: &dyn Fn() -> Option<Lift>| {
                if is_control || !big_enough {
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
                loyalty_members: loyal(i).flights.members,
                flights_per_member: MeanSd {
                    mean: loyal(i).flights.revenue_mean(),
                    std_dev: loyal(i).flights.revenue_std_dev(),
                },
                spend_per_member: MeanSd {
                    mean: loyal(i).spend.revenue_mean(),
                    std_dev: loyal(i).spend.revenue_std_dev(),
                },
                tier_up_rate: loyal(i).tier_up.conversion_rate(),
                lapse_members: loyal(i).lapse.members,
                lapse_rate: loyal(i).lapse.conversion_rate(),
                flights_lift: other(&|| {
                    stats::cuped_revenue_lift(&lc.flights, &loyal(i).flights, 0.95)
                }),
                spend_lift: other(&|| stats::cuped_revenue_lift(&lc.spend, &loyal(i).spend, 0.95)),
                tier_up_lift: other(&|| {
                    stats::conversion_lift(&lc.tier_up, &loyal(i).tier_up, 0.95)
                }),
                lapse_lift: other(&|| stats::conversion_lift(&lc.lapse, &loyal(i).lapse, 0.95)),
                verdict: None,
                sample_size_needed: (!is_control)
                    .then(|| sample_size_needed(spec, control, a))
                    .flatten(),
                value_per_member: None,
                value_lift: None,
                cuped_value_lift: None,
                points_cost_per_member: None,
                roi: None,
            }
        })
        .collect()
}

/// Significance level of the verdicts and of the sample size.
pub const VERDICT_ALPHA: f64 = 0.05;
/// Power the sample size is planned for.
pub const PLANNED_POWER: f64 = 0.8;

/// Members per arm still needed for the planned minimum detectable effect,
/// from the control's conversion rate.
fn sample_size_needed(spec: &ExperimentSpec, control: &ArmStats, arm: &ArmStats) -> Option<u64> {
    let n = stats::two_proportion_sample_size(
        control.conversion_rate(),
        spec.mde,
        VERDICT_ALPHA,
        PLANNED_POWER,
    )?;
    let have = control.members.min(arm.members);
    Some((n.ceil() as u64).saturating_sub(have))
}

/// A p-value in words: three decimals, or "< 0.001".
fn p_words(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

/// The verdict of a variant row from its conversion lift and the p-value
/// `p` (named `label`) it is judged by; None for the control.
fn verdict(
    spec: &ExperimentSpec,
    row: &VariantReport,
    p: Option<f64>,
    label: &str,
) -> Option<String> {
    let control = &spec.variants[spec.control()].name;
    if &row.variant == control {
        return None;
    }
    let (Some(l), Some(p)) = (row.conversion_lift.as_ref(), p) else {
        return Some(format!(
            "not enough data to compare {} with {control} yet",
            row.variant
        ));
    };
    let figures = format!(
        "{:+.1} points (95% CI {:.1} to {:.1}), {label} {}",
        l.absolute * 100.0,
        l.ci_low * 100.0,
        l.ci_high * 100.0,
        p_words(p)
    );
    Some(if p < VERDICT_ALPHA && l.absolute > 0.0 {
        format!("{} beats {control} on conversion: {figures}", row.variant)
    } else if p < VERDICT_ALPHA && l.absolute < 0.0 {
        format!(
            "{control} is better than {} on conversion: {figures}",
            row.variant
        )
    } else {
        format!("no detectable difference yet on conversion: {figures}")
    })
}

/// One segment's arms, by spec variant index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentArms {
    /// Per-variant statistics.
    pub arms: Vec<ArmStats>,
    /// Per-variant decisions.
    pub exposures: Vec<u64>,
    /// Per-variant loyalty outcomes.
    pub loyalty: Vec<LoyaltyArm>,
}

/// Groups exposures by segment: `members` yields each exposed member's spec
/// variant index (None: a variant the spec no longer has, left out) and
/// exposure; `now_ms` is the log time loyalty windows are judged complete
/// by. Segments come out in name order.
pub fn segment_arms(
    by: SegmentBy,
    variants: usize,
    now_ms: i64,
    window_days: u32,
    members: impl IntoIterator<Item = (Option<usize>, Exposure)>,
) -> BTreeMap<String, SegmentArms> {
    let mut out: BTreeMap<String, SegmentArms> = BTreeMap::new();
    for (v, e) in members {
        let Some(v) = v.filter(|v| *v < variants) else {
            continue;
        };
        let seg = out
            .entry(by.key(e.segment.as_ref()))
            .or_insert_with(|| SegmentArms {
                arms: vec![ArmStats::default(); variants],
                exposures: vec![0; variants],
                loyalty: vec![LoyaltyArm::default(); variants],
            });
        seg.arms[v].add_member(e.converted, e.revenue, e.covariate as f64);
        seg.exposures[v] += e.decisions as u64;
        seg.loyalty[v].add(&e, now_ms, window_days);
    }
    out
}

/// One segment of the segmented report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    /// Segment name (e.g. `gold`).
    pub segment: String,
    /// Variant rows as in the report; lifts carry `p_value_corrected`.
    pub variants: Vec<VariantReport>,
}

/// The report per segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentedReport {
    /// Experiment id.
    pub experiment: String,
    /// What members are split by.
    pub by: SegmentBy,
    /// The correction across segments.
    pub correction: Correction,
    /// Members per arm a segment needs for a comparison.
    pub min_members: u64,
    /// Segments in name order.
    pub segments: Vec<SegmentReport>,
}

/// Builds the segmented report from each segment's arms. Pure.
///
/// Per segment the rows are [`report_from_arms`]'s, except that a variant or
/// control below `spec.segment_min_members` gets no comparison, the
/// sequential p-value is the current look's (no running minimum is kept per
/// segment; it is conservative), and the verdict rests on the corrected
/// p-value. The p-values of each variant's conversion, revenue, CUPED and
/// loyalty lifts are corrected across the segments that have that lift.
pub fn segmented_report(
    spec: &ExperimentSpec,
    by: SegmentBy,
    correction: Correction,
    segments: &BTreeMap<String, SegmentArms>,
) -> SegmentedReport {
    let mut out: Vec<SegmentReport> = segments
        .iter()
        .map(|(name, s)| SegmentReport {
            segment: name.clone(),
            variants: variant_rows(
                spec,
                &s.arms,
                &s.exposures,
                &[],
                &s.loyalty,
                spec.segment_min_members,
            ),
        })
        .collect();
    type Pick = fn(&mut VariantReport) -> Option<&mut ReportLift>;
    let metrics: [Pick; 7] = [
        |r| r.conversion_lift.as_mut(),
        |r| r.revenue_lift.as_mut(),
        |r| r.cuped_revenue_lift.as_mut(),
        |r| r.flights_lift.as_mut(),
        |r| r.spend_lift.as_mut(),
        |r| r.tier_up_lift.as_mut(),
        |r| r.lapse_lift.as_mut(),
    ];
    for i in 0..spec.variants.len() {
        for pick in metrics {
            let mut family: Vec<&mut ReportLift> = out
                .iter_mut()
                .filter_map(|s| s.variants.get_mut(i).and_then(pick))
                .collect();
            let p: Vec<f64> = family.iter().map(|l| l.p_value).collect();
            for (l, q) in family.iter_mut().zip(correction.adjust(&p)) {
                l.p_value_corrected = Some(q);
            }
        }
    }
    let label = format!("{}-corrected p", correction.as_str());
    let control = spec.control();
    for (s, arms) in out.iter_mut().zip(segments.values()) {
        let control_members = arms.arms.get(control).map(|a| a.members).unwrap_or(0);
        for (i, row) in s.variants.iter_mut().enumerate() {
            let p = row
                .conversion_lift
                .as_ref()
                .and_then(|l| l.p_value_corrected);
            row.verdict =
                if i != control && row.members.min(control_members) < spec.segment_min_members {
                    Some(format!(
                        "too few members for a verdict ({} per arm needed)",
                        spec.segment_min_members
                    ))
                } else {
                    verdict(spec, row, p, &label)
                };
        }
    }
    SegmentedReport {
        experiment: spec.id.clone(),
        by,
        correction,
        min_members: spec.segment_min_members,
        segments: out,
    }
}

/// Most days of results over time kept per experiment; older days are
/// dropped first (the cumulative figures of the days kept are unaffected).
pub const MAX_TIMESERIES_DAYS: usize = 400;

/// The value of an arm's conversions that the time series reports: the day
/// rows hold in their revenue fields the accepts' value to the airline
/// (margin net of points given away, the report's `value_per_member`), so
/// this is their sum, and per member the same amounts give `value_lift`.
pub fn conversion_value(arm: &ArmStats) -> f64 {
    arm.revenue_sum
}

/// One variant on one day of the time series (cumulative to the day's end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeseriesVariant {
    /// Variant name.
    pub variant: String,
    /// Members exposed so far.
    pub members: u64,
    /// Members converted so far.
    pub conversions: u64,
    /// Value of the conversions so far ([`conversion_value`]).
    pub value: f64,
    /// Conversion-rate lift against the control as of the day (null for
    /// the control or without data).
    pub conversion_lift: Option<ReportLift>,
    /// Value-per-member lift against the control as of the day, Welch
    /// (null for the control or without data).
    pub value_lift: Option<ReportLift>,
    /// Always-valid (mSPRT) p-value of the conversion difference as of the
    /// day: the running minimum over the days kept up to it (null for the
    /// control or without data).
    pub sequential_p_value: Option<f64>,
}

/// One day of the time series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeseriesDay {
    /// `YYYY-MM-DD` (UTC, by log time).
    pub day: String,
    /// Variants in configured order.
    pub variants: Vec<TimeseriesVariant>,
}

/// Results over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeseries {
    /// Experiment id.
    pub experiment: String,
    /// Days with activity, oldest first.
    pub days: Vec<TimeseriesDay>,
}

/// Builds the time series of an experiment from its daily cumulative arms
/// (each day's arms by spec variant index, days ascending). Pure.
pub fn timeseries(spec: &ExperimentSpec, days: &[(i32, Vec<ArmStats>)]) -> Timeseries {
    let c = spec.control();
    let mut running = vec![1.0f64; spec.variants.len()];
    let none = ArmStats::default();
    let out = days
        .iter()
        .map(|(day, arms)| {
            let arm = |i: usize| arms.get(i).unwrap_or(&none);
            let control = arm(c);
            let variants = spec
                .variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let a = arm(i);
                    let compared = i != c && a.members > 0 && control.members > 0;
                    let sequential_p_value = compared.then(|| {
                        let p = stats::sequential_p_value(control, a, spec.msprt_tau2);
                        running[i] = stats::msprt_update(running[i], p);
                        running[i]
                    });
                    TimeseriesVariant {
                        variant: v.name.clone(),
                        members: a.members,
                        conversions: a.conversions,
                        value: conversion_value(a),
                        conversion_lift: (i != c)
                            .then(|| stats::conversion_lift(control, a, 0.95))
                            .flatten()
                            .map(Into::into),
                        value_lift: (i != c)
                            .then(|| stats::revenue_lift(control, a, 0.95))
                            .flatten()
                            .map(Into::into),
                        sequential_p_value,
                    }
                })
                .collect();
            TimeseriesDay {
                day: Day(*day).to_string(),
                variants,
            }
        })
        .collect();
    Timeseries {
        experiment: spec.id.clone(),
        days: out,
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
    /// Per day with activity (log day), each variant's cumulative
    /// statistics at the day's end, by state index; at most
    /// [`MAX_TIMESERIES_DAYS`], oldest first.
    pub days: Vec<(i32, Vec<ArmStats>)>,
}

/// Format-5 form of [`ExperimentSnapshot`] (exposures without loyalty
/// outcomes, no days); read from older snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentSnapshotV5 {
    /// Id.
    pub id: String,
    /// Variant names, by state index.
    pub variants: Vec<String>,
    /// Decisions per variant.
    pub decisions: Vec<u64>,
    /// Running minimum of the sequential p-value per variant.
    pub sequential_min: Vec<f64>,
    /// Member exposures.
    pub members: Vec<(String, ExposureV5)>,
}

impl From<ExperimentSnapshotV5> for ExperimentSnapshot {
    fn from(s: ExperimentSnapshotV5) -> Self {
        ExperimentSnapshot {
            id: s.id,
            variants: s.variants,
            decisions: s.decisions,
            sequential_min: s.sequential_min,
            members: s.members.into_iter().map(|(m, e)| (m, e.into())).collect(),
            days: Vec::new(),
        }
    }
}

/// Format-4 form of [`ExperimentSnapshot`] (exposures without decisions
/// and segments); read from older snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentSnapshotV4 {
    /// Id.
    pub id: String,
    /// Variant names, by state index.
    pub variants: Vec<String>,
    /// Decisions per variant.
    pub decisions: Vec<u64>,
    /// Running minimum of the sequential p-value per variant.
    pub sequential_min: Vec<f64>,
    /// Member exposures.
    pub members: Vec<(String, ExposureV4)>,
}

impl From<ExperimentSnapshotV4> for ExperimentSnapshot {
    fn from(s: ExperimentSnapshotV4) -> Self {
        ExperimentSnapshot {
            id: s.id,
            variants: s.variants,
            decisions: s.decisions,
            sequential_min: s.sequential_min,
            members: s.members.into_iter().map(|(m, e)| (m, e.into())).collect(),
            days: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_parts_is_hash_of_the_whole() {
        for (salt, member) in [
            ("s1", "M0000001"),
            ("", ""),
            ("盐", "m:x"),
            ("a", "variant:"),
        ] {
            assert_eq!(
                assignment_hash_of(&[salt, ":", member]),
                assignment_hash(&format!("{salt}:{member}"))
            );
            assert_eq!(
                assignment_hash_of(&[salt, ":variant:", member]),
                assignment_hash(&format!("{salt}:variant:{member}"))
            );
        }
    }

    fn spec(min: u64) -> ExperimentSpec {
        parse_experiments(&format!(
            "[[experiment]]\nid = \"x\"\nsalt = \"s\"\ntraffic = 1.0\nsegment_min_members = {min}\n\
             [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
             [[experiment.variant]]\nname = \"model\"\nweight = 1\n"
        ))
        .unwrap()
        .remove(0)
    }

    fn arm(members: u64, conversions: u64) -> ArmStats {
        let mut a = ArmStats::default();
        for i in 0..members {
            a.add_member(
                i < conversions,
                if i < conversions { 10.0 } else { 0.0 },
                1.0,
            );
        }
        a
    }

    #[test]
    fn verdicts_say_what_the_figures_allow() {
        let s = spec(100);
        let r = report_from_arms(
            &s,
            &[arm(20_000, 2_000), arm(20_000, 2_400)],
            &[0, 0],
            &[],
            &[],
            &[],
        );
        assert_eq!(r.variants[0].verdict, None);
        let v = r.variants[1].verdict.as_deref().unwrap();
        assert!(
            v.starts_with("model beats control on conversion: +2.0 points (95% CI "),
            "{v}"
        );
        assert!(v.ends_with("always-valid p < 0.001"), "{v}");
        let n = stats::two_proportion_sample_size(0.1, 0.05, 0.05, 0.8).unwrap();
        assert_eq!(
            r.variants[1].sample_size_needed,
            Some(n.ceil() as u64 - 20_000)
        );
        let r = report_from_arms(
            &s,
            &[arm(20_000, 2_400), arm(20_000, 2_000)],
            &[0, 0],
            &[],
            &[],
            &[],
        );
        let v = r.variants[1].verdict.as_deref().unwrap();
        assert!(
            v.starts_with("control is better than model on conversion: -2.0 points"),
            "{v}"
        );
        let r = report_from_arms(
            &s,
            &[arm(1_000, 100), arm(1_000, 104)],
            &[0, 0],
            &[],
            &[],
            &[],
        );
        let v = r.variants[1].verdict.as_deref().unwrap();
        assert!(
            v.starts_with("no detectable difference yet on conversion: +0.4 points"),
            "{v}"
        );
        let r = report_from_arms(&s, &[arm(0, 0), arm(10, 1)], &[0, 0], &[], &[], &[]);
        let v = r.variants[1].verdict.as_deref().unwrap();
        assert_eq!(v, "not enough data to compare model with control yet");
        assert_eq!(r.variants[1].sample_size_needed, None);
    }

    #[test]
    fn segments_group_exposures_and_small_ones_get_no_verdict() {
        let s = spec(50);
        let keys = |tier: Tier| SegmentKeys {
            tier,
            value: ValueSegment::LowValue,
            business: false,
            home_airport: *b"PEK",
            channel: Channel::App,
        };
        let mut members = Vec::new();
        for i in 0..400u32 {
            let tier = if i < 360 { Tier::Base } else { Tier::Gold };
            members.push((
                Some((i % 2) as usize),
                Exposure {
                    converted: i % 5 == 0 || (i % 2 == 1 && i % 7 == 0),
                    decisions: 2,
                    ..Exposure::first(0, 1.0, 0, Some(keys(tier)), 0)
                },
            ));
        }
        members.push((None, members[0].1));
        let groups = segment_arms(SegmentBy::Tier, 2, 0, 90, members);
        let names: Vec<&str> = groups.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["base", "gold"]);
        assert_eq!(groups["base"].arms[0].members, 180);
        assert_eq!(groups["base"].exposures[0], 360);
        let r = segmented_report(&s, SegmentBy::Tier, Correction::Holm, &groups);
        let base = &r.segments[0].variants[1];
        let l = base.conversion_lift.as_ref().unwrap();
        // One segment with a comparison: Holm over a family of one changes nothing.
        assert_eq!(l.p_value_corrected, Some(l.p_value));
        let gold = &r.segments[1].variants[1];
        assert_eq!(gold.members, 20);
        assert!(gold.conversion_lift.is_none() && gold.sequential_p_value.is_none());
        assert_eq!(
            gold.verdict.as_deref(),
            Some("too few members for a verdict (50 per arm needed)")
        );
        assert_eq!(SegmentBy::Traveller.key(Some(&keys(Tier::Gold))), "leisure");
        assert_eq!(SegmentBy::HomeAirport.key(Some(&keys(Tier::Gold))), "PEK");
        assert_eq!(SegmentBy::Channel.key(None), "unknown");
        assert_eq!(
            SegmentBy::parse("value_segment"),
            Some(SegmentBy::ValueSegment)
        );
        assert_eq!(SegmentBy::parse("postcode"), None);
    }

    #[test]
    fn guardrails_say_ok_warning_or_failing() {
        let mut s = spec(100);
        s.guardrails = vec![
            GuardrailSpec {
                metric: GuardrailMetric::ConversionRate,
                margin: 0.01,
            },
            GuardrailSpec {
                metric: GuardrailMetric::DeclineRate,
                margin: 0.01,
            },
        ];
        let status = |c: ArmStats, t: ArmStats, declines: [u64; 2]| {
            report_from_arms(&s, &[c, t], &[0, 0], &[], &declines, &[])
                .guardrails
                .iter()
                .map(|g| g.status)
                .collect::<Vec<_>>()
        };
        use GuardrailStatus::*;
        // Equal and large: both harms are shown to be within the margin.
        assert_eq!(
            status(arm(50_000, 5_000), arm(50_000, 5_000), [2_500, 2_500]),
            vec![Ok, Ok]
        );
        // Small: nothing is ruled out yet.
        assert_eq!(
            status(arm(200, 20), arm(200, 20), [10, 10]),
            vec![Warning, Warning]
        );
        // Conversion clearly down 3 points, declines clearly up 3 points.
        assert_eq!(
            status(arm(50_000, 5_000), arm(50_000, 3_500), [2_500, 4_000]),
            vec![Failing, Failing]
        );
        let r = report_from_arms(
            &s,
            &[arm(50_000, 5_000), arm(50_000, 3_500)],
            &[0, 0],
            &[],
            &[0, 0],
            &[],
        );
        let g = &r.guardrails[0];
        assert_eq!(
            (g.variant.as_str(), g.metric),
            ("model", GuardrailMetric::ConversionRate)
        );
        assert!((g.harm.unwrap() - 0.03).abs() < 1e-12);
    }

    /// One exposure per member and experiment is held in memory (beside a
    /// boxed id of 16 bytes plus its text): segments, decisions and the
    /// decline flag take it from 16 bytes to 32, the loyalty outcomes
    /// (first-exposure minute, flights, flights before, spend, tier-up) to
    /// 40, and no further unnoticed.
    #[test]
    fn an_exposure_stays_small() {
        assert_eq!(std::mem::size_of::<ExposureV4>(), 16);
        assert_eq!(std::mem::size_of::<ExposureV5>(), 32);
        assert_eq!(std::mem::size_of::<Exposure>(), 40);
    }

    #[test]
    fn loyalty_windows_count_from_first_exposure() {
        let day0 = 20_000 * DAY_MS;
        let e = Exposure::first(0, 1.0, day0 + 30_000, None, 3);
        assert_eq!(e.first_ms(), Some(day0));
        assert!(!e.in_window(day0 - 1, 90));
        assert!(e.in_window(day0, 90) && e.in_window(day0 + 90 * DAY_MS - 1, 90));
        assert!(!e.in_window(day0 + 90 * DAY_MS, 90));
        assert!(!e.window_complete(day0 + 90 * DAY_MS - 1, 90));
        assert!(e.window_complete(day0 + 90 * DAY_MS, 90));
        let unknown = Exposure::first(0, 1.0, 0, None, 0);
        assert_eq!(unknown.first_ms(), None);
        assert!(!unknown.in_window(day0, 90) && !unknown.window_complete(i64::MAX, 90));
        // Loyalty per arm: the unknown member is left out, lapse counts
        // only the completed window.
        let flew = Exposure {
            flights: 2,
            spend: 500.0,
            tier_up: true,
            ..e
        };
        let later = Exposure::first(1, 1.0, day0 + 50 * DAY_MS, None, 0);
        let arms = LoyaltyArm::per_variant(
            2,
            day0 + 100 * DAY_MS,
            90,
            [
                (Some(0), e),
                (Some(0), flew),
                (Some(0), unknown),
                (Some(1), later),
                (None, e),
            ],
        );
        assert_eq!(arms[0].flights.members, 2);
        assert_eq!(arms[0].flights.revenue_sum, 2.0);
        assert_eq!(arms[0].flights.covariate_sum, 6.0);
        assert_eq!(arms[0].spend.revenue_sum, 500.0);
        assert_eq!(
            (arms[0].tier_up.members, arms[0].tier_up.conversions),
            (2, 1)
        );
        assert_eq!((arms[0].lapse.members, arms[0].lapse.conversions), (2, 1));
        assert_eq!((arms[1].flights.members, arms[1].lapse.members), (1, 0));
    }

    #[test]
    fn a_loyalty_window_outside_its_range_is_refused() {
        for days in ["0", "3651"] {
            let text = format!(
                "[[experiment]]\nid = \"x\"\nsalt = \"s\"\ntraffic = 1.0\nloyalty_window_days = {days}\n\
                 [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
                 [[experiment.variant]]\nname = \"model\"\nweight = 1\n"
            );
            let err = parse_experiments(&text).unwrap_err();
            assert!(
                format!("{err:?}").contains("loyalty_window_days"),
                "{err:?}"
            );
        }
        assert_eq!(spec(1).loyalty_window_days, DEFAULT_LOYALTY_WINDOW_DAYS);
    }

    #[test]
    fn a_zero_mde_is_refused() {
        let text = "[[experiment]]\nid = \"x\"\nsalt = \"s\"\ntraffic = 1.0\nmde = 0.0\n\
             [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
             [[experiment.variant]]\nname = \"model\"\nweight = 1\n";
        let err = parse_experiments(text).unwrap_err();
        assert!(format!("{err:?}").contains("mde"), "{err:?}");
    }
}
