//! Experiment attribution state: per experiment, every exposed member's
//! variant, covariate, conversion, revenue, decisions, segments at first
//! exposure and loyalty outcomes in the window after it, per-variant running
//! statistics and their daily history (the time series), updated as
//! decisions, outcomes and member events are applied (and on replay), so the
//! report and the time series after a restart are those before it. The
//! specs, assignment and report maths are in the core
//! ([`offer_engine_core::experiments`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::domain::Tier;
use crate::stats::ArmStats;
use dashmap::DashMap;
pub use offer_engine_core::experiments::*;
use serde::{Deserialize, Serialize};
/// Attribution state of one experiment.
struct ExperimentState {
    /// Variant names, by slot (in the order first seen).
    variants: std::sync::RwLock<Vec<String>>,
    /// Member → exposure.
    members: DashMap<Box<str>, Exposure, ahash::RandomState>,
    /// Per-variant statistics, kept up to date as members are exposed and convert.
    arms: Mutex<Vec<ArmStats>>,
    /// Decisions made per variant.
    decisions: Vec<AtomicU64>,
    /// Members who declined at least once, per variant.
    decliners: Vec<AtomicU64>,
    /// Running minimum of the always-valid p-value per variant (f64 bits).
    sequential_min: Vec<AtomicU64>,
    /// Per log day with activity, the variants' statistics at its end (by
    /// slot): members and conversions as in `arms`, and in the revenue
    /// fields the accepts' value to the airline (as in `value_arms`), which
    /// is what the time series reports. Locked after `arms` and
    /// `value_arms`, never before.
    days: Mutex<VecDeque<(i32, Vec<ArmStats>)>>,
    /// Member → value and points cost of their accepts (members with none
    /// are not held: most exposed members never accept).
    values: DashMap<Box<str>, MemberValue, ahash::RandomState>,
    /// Per-variant value statistics, kept up to date like `arms`.
    value_arms: Mutex<Vec<ValueArm>>,
}

/// A member's accepted value and the cost of the points their accepts gave away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberValue {
    /// Value to the airline (net of points given away), CNY.
    pub value: f64,
    /// Cost of the points given away, CNY.
    pub points_cost: f64,
}

/// One experiment's values in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueSnapshot {
    /// Experiment id.
    pub experiment: String,
    /// Member → value, members with a value only.
    pub members: Vec<(String, MemberValue)>,
}

impl ExperimentState {
    fn new(variants: Vec<String>) -> ExperimentState {
        let n = MAX_VARIANTS;
        ExperimentState {
            variants: std::sync::RwLock::new(variants),
            members: super::members::growing_map(super::members::fixed_hasher()),
            arms: Mutex::new(vec![ArmStats::default(); n]),
            decisions: (0..n).map(|_| AtomicU64::new(0)).collect(),
            decliners: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sequential_min: (0..n).map(|_| AtomicU64::new(1f64.to_bits())).collect(),
            days: Mutex::new(VecDeque::new()),
            values: super::members::growing_map(super::members::fixed_hasher()),
            value_arms: Mutex::new(vec![ValueArm::default(); n]),
        }
    }

    /// Records slot `v`'s statistics as of log day `day` in the daily
    /// history (`arms` is the locked current statistics). Log time never
    /// goes back, so only the last day changes; a new day starts from every
    /// slot's current figures.
    fn record_day(&self, arms: &[ArmStats], values: &[ValueArm], v: usize, day: i32) {
        // Members and conversions from the arm, value from the value arm.
        let row_of = |i: usize| {
            let mut s = arms[i].clone();
            if let Some(val) = values.get(i) {
                s.revenue_sum = val.stats.revenue_sum;
                s.revenue_sum_sq = val.stats.revenue_sum_sq;
                s.covariate_revenue_sum = val.stats.covariate_revenue_sum;
            }
            s
        };
        let slots = self
            .variants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            .max(v + 1)
            .min(arms.len());
        let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        match days.back_mut() {
            Some((d, row)) if *d >= day => {
                if row.len() < slots {
                    row.resize(slots, ArmStats::default());
                }
                if let Some(r) = row.get_mut(v).filter(|_| v < arms.len()) {
                    *r = row_of(v);
                }
            }
            _ => {
                days.push_back((day, (0..slots).map(row_of).collect()));
                while days.len() > MAX_TIMESERIES_DAYS {
                    days.pop_front();
                }
            }
        }
    }
}

/// Attribution state of every experiment seen; cloning is shallow.
#[derive(Clone)]
pub struct ExperimentBook {
    /// Experiment id → state.
    experiments: Arc<DashMap<String, Arc<ExperimentState>, ahash::RandomState>>,
    /// Experiment id → loyalty window in days, from the configured specs
    /// (an experiment not configured counts [`DEFAULT_LOYALTY_WINDOW_DAYS`]).
    windows: Arc<RwLock<HashMap<String, u32>>>,
    /// Experiment id → its configured spec: the always-valid p-value's
    /// running minimum is folded in when records are applied (so it is a
    /// function of the log, equal on every replica), which needs the
    /// control and the mixture variance.
    specs: Arc<RwLock<HashMap<String, crate::experiments::ExperimentSpec>>>,
}

impl Default for ExperimentBook {
    fn default() -> Self {
        // Fixed seeds: the same records give the same iteration order, so
        // snapshots of equal histories are equal byte for byte.
        ExperimentBook {
            experiments: Arc::new(DashMap::with_hasher(super::members::fixed_hasher())),
            windows: Arc::new(RwLock::new(HashMap::new())),
            specs: Arc::new(RwLock::new(HashMap::new())),
        }
    }
}

/// What an exposure or conversion changed (for metrics on the live path).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The member was exposed for the first time.
    pub new_member: bool,
    /// The member converted for the first time.
    pub new_conversion: bool,
}

impl ExperimentBook {
    fn state(&self, exp: &str) -> Arc<ExperimentState> {
        if let Some(s) = self.experiments.get(exp) {
            return s.clone();
        }
        self.experiments
            .entry(exp.to_string())
            .or_insert_with(|| Arc::new(ExperimentState::new(Vec::new())))
            .clone()
    }

    /// An experiment's state for a report: an experiment nothing was
    /// applied to yet reads as empty and is not added, so reading a report
    /// (or `/metrics`) never changes the state or its digest.
    fn state_for_read(&self, exp: &str) -> Arc<ExperimentState> {
        match self.experiments.get(exp) {
            Some(s) => s.clone(),
            None => Arc::new(ExperimentState::new(Vec::new())),
        }
    }

    fn variant_index(st: &ExperimentState, name: &str) -> Option<usize> {
        let v = st.variants.read().unwrap_or_else(|e| e.into_inner());
        v.iter().position(|v| v == name)
    }

    /// The slot of a variant, registering it if new (None past [`MAX_VARIANTS`]).
    fn slot(st: &ExperimentState, name: &str) -> Option<usize> {
        if let Some(i) = Self::variant_index(st, name) {
            return Some(i);
        }
        let mut v = st.variants.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|x| x == name) {
            return Some(i);
        }
        if v.len() >= MAX_VARIANTS {
            return None;
        }
        v.push(name.to_string());
        Some(v.len() - 1)
    }

    /// Sets the loyalty window of each configured experiment (at start-up,
    /// before the log is replayed, and on reload). Member events applied
    /// afterwards count within these windows.
    pub fn set_loyalty_windows(&self, specs: &[ExperimentSpec]) {
        let mut w = self.windows.write().unwrap_or_else(|e| e.into_inner());
        w.clear();
        for s in specs {
            w.insert(s.id.clone(), s.loyalty_window_days);
        }
        let mut k = self.specs.write().unwrap_or_else(|e| e.into_inner());
        k.clear();
        for s in specs {
            k.insert(s.id.clone(), s.clone());
        }
    }

    /// Folds the current always-valid p-value of each variant against the
    /// control into its running minimum; called with the arms just changed
    /// by an applied record (never by a read).
    fn fold_sequential(&self, experiment: &str, st: &ExperimentState, arms: &[ArmStats]) {
        let specs = self.specs.read().unwrap_or_else(|e| e.into_inner());
        let Some(spec) = specs.get(experiment) else {
            return;
        };
        let c = spec.control();
        let Some(control) = spec
            .variants
            .get(c)
            .and_then(|v| Self::variant_index(st, &v.name))
            .and_then(|j| arms.get(j))
        else {
            return;
        };
        for (i, v) in spec.variants.iter().enumerate() {
            if i == c {
                continue;
            }
            let Some(j) = Self::variant_index(st, &v.name) else {
                continue;
            };
            let (Some(a), Some(min)) = (arms.get(j), st.sequential_min.get(j)) else {
                continue;
            };
            if a.members == 0 || control.members == 0 {
                continue;
            }
            let p = crate::stats::sequential_p_value(control, a, spec.msprt_tau2);
            let prev = f64::from_bits(min.load(Ordering::Relaxed));
            min.store(
                crate::stats::msprt_update(prev, p).to_bits(),
                Ordering::Relaxed,
            );
        }
    }

    /// The loyalty window of an experiment, days.
    fn window_days(&self, exp: &str) -> u32 {
        let w = self.windows.read().unwrap_or_else(|e| e.into_inner());
        w.get(exp).copied().unwrap_or(DEFAULT_LOYALTY_WINDOW_DAYS)
    }

    /// Records a decision for a member in an experiment (exposure) at log
    /// time `at_ms`. At the member's first exposure `member` gives their
    /// segments and flights of the last 12 months (called only then; it
    /// must be deterministic, e.g. read from the state as it is when the
    /// record is applied).
    pub fn expose(
        &self,
        a: &Assignment,
        member: &str,
        covariate: f32,
        at_ms: i64,
        first: impl FnOnce() -> Option<(SegmentKeys, u16)>,
    ) -> Change {
        let st = self.state(&a.experiment);
        let Some(v) = Self::slot(&st, &a.variant) else {
            return Change::default();
        };
        st.decisions[v].fetch_add(1, Ordering::Relaxed);
        let mut change = Change::default();
        st.members
            .entry(member.into())
            .and_modify(|e| e.decisions = e.decisions.saturating_add(1))
            .or_insert_with(|| {
                change.new_member = true;
                let (segment, pre_flights) = match first() {
                    Some((k, f)) => (Some(k), f),
                    None => (None, 0),
                };
                Exposure::first(v as u8, covariate, at_ms, segment, pre_flights)
            });
        if change.new_member {
            let mut arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
            arms[v].add_member(false, 0.0, covariate as f64);
            let mut values = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
            values[v].stats.add_member(false, 0.0, covariate as f64);
            st.record_day(&arms, &values, v, day_of(at_ms));
            self.fold_sequential(&a.experiment, &st, &arms);
        }
        change
    }

    /// A member event applied at log time `at_ms`: in every experiment where
    /// the member is exposed and the event falls inside the loyalty window
    /// after their first exposure, counts the flight (`flight`), the
    /// qualifying spend added (`spend`) and whether the member's tier after
    /// the event (`tier_after`) is above the one at first exposure (or,
    /// where that is unknown, the one before the event, `tier_before`).
    pub fn member_event(
        &self,
        member: &str,
        at_ms: i64,
        flight: bool,
        spend: f64,
        tier_before: Tier,
        tier_after: Tier,
    ) {
        for st in self.experiments.iter() {
            let Some(mut e) = st.members.get_mut(member) else {
                continue;
            };
            if !e.in_window(at_ms, self.window_days(st.key())) {
                continue;
            }
            if flight {
                e.flights = e.flights.saturating_add(1);
            }
            e.spend = (e.spend as f64 + spend) as f32;
            let base = e.segment.map(|k| k.tier).unwrap_or(tier_before);
            if tier_after > base {
                e.tier_up = true;
            }
        }
    }

    /// Erasure: the member's exposures stay in the statistics (removing
    /// them would bias every report) but no longer under their id nor with
    /// their segments; each is
    /// re-keyed under a placeholder made of the erasure's time and a
    /// counter, which says nothing about the member and is the same on every
    /// replica. Returns how many.
    pub fn erase_member(&self, member: &str, at_ms: i64) -> usize {
        let mut n = 0;
        for st in self.experiments.iter() {
            if let Some((_, mut e)) = st.members.remove(member) {
                // The segments (tier, home airport, channel...) could single
                // the member out among few: they go, the member counts in
                // segment "unknown" from now on.
                e.segment = None;
                let anon = (0u32..)
                    .map(|k| format!("erased-{at_ms}-{k}"))
                    .find(|k| !st.members.contains_key(k.as_str()))
                    .unwrap_or_default();
                if let Some((_, v)) = st.values.remove(member) {
                    st.values.insert(anon.as_str().into(), v);
                }
                st.members.insert(anon.into(), e);
                n += 1;
            }
        }
        n
    }

    /// Records a decline by a member in an experiment (for the decline-rate
    /// guardrail); returns whether it was the member's first.
    pub fn decline(&self, a: &Assignment, member: &str) -> bool {
        let Some(st) = self.experiments.get(&a.experiment).map(|s| s.clone()) else {
            return false;
        };
        let Some(mut e) = st.members.get_mut(member) else {
            return false;
        };
        if e.declined {
            return false;
        }
        e.declined = true;
        let v = e.variant as usize;
        drop(e);
        if let Some(d) = st.decliners.get(v) {
            d.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Records an accept attributed to a member in an experiment at log
    /// time `at_ms`; `revenue` is the accepted revenue (the report's revenue
    /// figures; the value to the airline comes with [`ExperimentBook::add_value`]).
    pub fn convert(&self, a: &Assignment, member: &str, revenue: f64, at_ms: i64) -> Change {
        let Some(st) = self.experiments.get(&a.experiment).map(|s| s.clone()) else {
            return Change::default();
        };
        let mut change = Change::default();
        let Some(mut e) = st.members.get_mut(member) else {
            return change;
        };
        let v = e.variant as usize;
        let (old, cov) = (e.revenue, e.covariate as f64);
        e.revenue += revenue;
        let new = e.revenue;
        if !e.converted {
            e.converted = true;
            change.new_conversion = true;
        }
        drop(e);
        let mut arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
        let arm = &mut arms[v];
        if change.new_conversion {
            arm.conversions += 1;
        }
        arm.revenue_sum += revenue;
        arm.revenue_sum_sq += new * new - old * old;
        arm.covariate_revenue_sum += cov * revenue;
        let values = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
        st.record_day(&arms, &values, v, day_of(at_ms));
        self.fold_sequential(&a.experiment, &st, &arms);
        change
    }

    /// Adds an accept's value and points cost to a member exposed in the
    /// experiment (negative amounts: a refund) at log time `at_ms`.
    pub fn add_value(
        &self,
        a: &Assignment,
        member: &str,
        value: f64,
        points_cost: f64,
        at_ms: i64,
    ) {
        if value == 0.0 && points_cost == 0.0 {
            return;
        }
        let Some(st) = self.experiments.get(&a.experiment).map(|s| s.clone()) else {
            return;
        };
        let Some((v, cov)) = st
            .members
            .get(member)
            .map(|e| (e.variant as usize, e.covariate as f64))
        else {
            return;
        };
        let (old, new) = {
            let mut e = st.values.entry(member.into()).or_default();
            let old = e.value;
            e.value += value;
            e.points_cost += points_cost;
            (old, e.value)
        };
        let arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
        let mut values = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(arm) = values.get_mut(v) else {
            return;
        };
        arm.stats.revenue_sum += value;
        arm.stats.revenue_sum_sq += new * new - old * old;
        arm.stats.covariate_revenue_sum += cov * value;
        arm.points_cost_sum += points_cost;
        st.record_day(&arms, &values, v, day_of(at_ms));
    }

    /// Reverses a refunded accept: its revenue, value and points cost (the
    /// member stays converted: they did accept).
    pub fn refund(
        &self,
        a: &Assignment,
        member: &str,
        revenue: f64,
        value: f64,
        points_cost: f64,
        at_ms: i64,
    ) {
        self.add_value(a, member, -value, -points_cost, at_ms);
        let Some(st) = self.experiments.get(&a.experiment).map(|s| s.clone()) else {
            return;
        };
        let Some(mut e) = st.members.get_mut(member) else {
            return;
        };
        let v = e.variant as usize;
        let (old, cov) = (e.revenue, e.covariate as f64);
        e.revenue -= revenue;
        let new = e.revenue;
        drop(e);
        let mut arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(arm) = arms.get_mut(v) {
            arm.revenue_sum -= revenue;
            arm.revenue_sum_sq += new * new - old * old;
            arm.covariate_revenue_sum -= cov * revenue;
        }
    }

    /// Every experiment's member values, for a snapshot.
    pub fn value_snapshot(&self) -> Vec<ValueSnapshot> {
        self.experiments
            .iter()
            .map(|e| ValueSnapshot {
                experiment: e.key().clone(),
                members: e
                    .value()
                    .values
                    .iter()
                    .map(|m| (m.key().to_string(), *m.value()))
                    .collect(),
            })
            .collect()
    }

    /// Restores member values (after [`ExperimentBook::restore`], which
    /// counted every exposed member in the value arms with no value).
    pub fn restore_values(&self, snaps: Vec<ValueSnapshot>) {
        for s in snaps {
            let Some(st) = self.experiments.get(&s.experiment).map(|e| e.clone()) else {
                continue;
            };
            // Value sums already restored from the daily history are kept
            // as they were summed live; only an experiment without one (a
            // snapshot before format 6) sums its members' values here.
            let sum = st.days.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            let mut arms = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
            for (m, val) in s.members {
                let Some((v, cov)) = st
                    .members
                    .get(m.as_str())
                    .map(|e| (e.variant as usize, e.covariate as f64))
                else {
                    continue;
                };
                if let Some(arm) = arms.get_mut(v) {
                    if sum {
                        arm.stats.revenue_sum += val.value;
                        arm.stats.revenue_sum_sq += val.value * val.value;
                        arm.stats.covariate_revenue_sum += cov * val.value;
                    }
                    arm.points_cost_sum += val.points_cost;
                }
                st.values.insert(m.into(), val);
            }
        }
    }
}

impl ExperimentBook {
    /// The experiment's exposures with each one's spec variant index (None:
    /// a variant the spec no longer has).
    fn spec_members(
        &self,
        st: &ExperimentState,
        spec: &ExperimentSpec,
    ) -> Vec<(Option<usize>, Exposure)> {
        let names = st
            .variants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The state's slot (order first seen) → the spec's variant index.
        let to_spec: Vec<Option<usize>> = names
            .iter()
            .map(|n| spec.variants.iter().position(|v| &v.name == n))
            .collect();
        st.members
            .iter()
            .map(|m| {
                let e = *m.value();
                (to_spec.get(e.variant as usize).copied().flatten(), e)
            })
            .collect()
    }

    /// The current report of `spec` at log time `now_ms` (which decides
    /// whose loyalty window has ended); changes nothing. The loyalty outcomes scan the experiment's exposures:
    /// O(exposed members) per call.
    pub fn report(&self, spec: &ExperimentSpec, now_ms: i64) -> Report {
        self.report_with(spec, Some(now_ms))
    }

    /// The report of `spec` without the loyalty outcomes (their figures are
    /// zero and their lifts null): O(variants), for `/metrics`, which is
    /// scraped too often to scan every exposure.
    pub fn report_without_loyalty(&self, spec: &ExperimentSpec) -> Report {
        self.report_with(spec, None)
    }

    /// The report; with the loyalty outcomes as of log time `loyalty_at_ms`
    /// when given.
    fn report_with(&self, spec: &ExperimentSpec, loyalty_at_ms: Option<i64>) -> Report {
        let n = spec.variants.len();
        let names: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        let st = self.state_for_read(&spec.id);
        // Map the state's variant order (as first seen) onto the spec's.
        let mut arms = vec![ArmStats::default(); n];
        let mut exposures = vec![0u64; n];
        let mut prev = vec![1.0f64; n];
        let mut decliners = vec![0u64; n];
        {
            let st_arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
            for (i, name) in names.iter().enumerate() {
                if let Some(j) = Self::variant_index(&st, name) {
                    arms[i] = st_arms[j].clone();
                    exposures[i] = st.decisions[j].load(Ordering::Relaxed);
                    prev[i] = f64::from_bits(st.sequential_min[j].load(Ordering::Relaxed));
                    decliners[i] = st.decliners[j].load(Ordering::Relaxed);
                }
            }
        }
        let loyalty = match loyalty_at_ms {
            Some(now_ms) => LoyaltyArm::per_variant(
                n,
                now_ms,
                spec.loyalty_window_days,
                self.spec_members(&st, spec),
            ),
            None => Vec::new(),
        };
        let mut value_arms = vec![ValueArm::default(); n];
        {
            let st_values = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
            for (i, name) in names.iter().enumerate() {
                if let Some(j) = Self::variant_index(&st, name) {
                    value_arms[i] = st_values[j].clone();
                }
            }
        }
        // Reads nothing back: the running minimum was folded in when the
        // records were applied, so a report is a function of the log.
        let mut report = report_from_arms(spec, &arms, &exposures, &prev, &decliners, &loyalty);
        add_value_figures(spec, &mut report, &value_arms);
        report
    }

    /// The report of `spec` per segment (`by`) at log time `now_ms`,
    /// p-values corrected across segments with `correction`. Scans the
    /// experiment's exposures: O(exposed members) per call. Reads nothing it
    /// changes (no running minimum per segment is kept).
    pub fn segmented_report(
        &self,
        spec: &ExperimentSpec,
        by: SegmentBy,
        correction: crate::stats::Correction,
        now_ms: i64,
    ) -> SegmentedReport {
        let st = self.state_for_read(&spec.id);
        let members = self.spec_members(&st, spec);
        let groups = segment_arms(
            by,
            spec.variants.len(),
            now_ms,
            spec.loyalty_window_days,
            members,
        );
        segmented_report(spec, by, correction, &groups)
    }

    /// The results of `spec` over time: per log day with activity, each
    /// variant's cumulative figures and lifts (see [`timeseries`]).
    pub fn timeseries(&self, spec: &ExperimentSpec) -> Timeseries {
        let Some(st) = self.experiments.get(&spec.id).map(|s| s.clone()) else {
            return timeseries(spec, &[]);
        };
        let names = st
            .variants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let from_slot: Vec<Option<usize>> = spec
            .variants
            .iter()
            .map(|v| names.iter().position(|n| n == &v.name))
            .collect();
        let days: Vec<(i32, Vec<ArmStats>)> = {
            let days = st.days.lock().unwrap_or_else(|e| e.into_inner());
            days.iter()
                .map(|(d, row)| {
                    let arms = from_slot
                        .iter()
                        .map(|j| j.and_then(|j| row.get(j)).cloned().unwrap_or_default())
                        .collect();
                    (*d, arms)
                })
                .collect()
        };
        timeseries(spec, &days)
    }

    /// Snapshot form: per experiment, variant names, per-variant decisions
    /// and sequential minimum, and every member's exposure.
    pub fn to_snapshot(&self) -> Vec<ExperimentSnapshot> {
        self.experiments
            .iter()
            .map(|e| {
                let st = e.value();
                ExperimentSnapshot {
                    id: e.key().clone(),
                    variants: st
                        .variants
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                    decisions: st
                        .decisions
                        .iter()
                        .map(|d| d.load(Ordering::Relaxed))
                        .collect(),
                    sequential_min: st
                        .sequential_min
                        .iter()
                        .map(|d| f64::from_bits(d.load(Ordering::Relaxed)))
                        .collect(),
                    members: st
                        .members
                        .iter()
                        .map(|m| (m.key().to_string(), *m.value()))
                        .collect(),
                    days: st
                        .days
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .cloned()
                        .collect(),
                }
            })
            .collect()
    }

    /// Restores from a snapshot (into an empty book).
    pub fn restore(&self, snaps: Vec<ExperimentSnapshot>) {
        for s in snaps {
            let st = ExperimentState::new(s.variants);
            for (i, d) in s.decisions.iter().enumerate() {
                if let Some(a) = st.decisions.get(i) {
                    a.store(*d, Ordering::Relaxed);
                }
            }
            for (i, p) in s.sequential_min.iter().enumerate() {
                if let Some(a) = st.sequential_min.get(i) {
                    a.store(p.to_bits(), Ordering::Relaxed);
                }
            }
            {
                let mut arms = st.arms.lock().unwrap_or_else(|e| e.into_inner());
                for (m, e) in s.members {
                    if let Some(arm) = arms.get_mut(e.variant as usize) {
                        arm.add_member(e.converted, e.revenue, e.covariate as f64);
                    }
                    if let Some(arm) = st
                        .value_arms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(e.variant as usize)
                    {
                        arm.stats.add_member(false, 0.0, e.covariate as f64);
                    }
                    if e.declined {
                        if let Some(d) = st.decliners.get(e.variant as usize) {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    st.members.insert(m.into(), e);
                }
                // The last day holds the running value statistics exactly
                // as they were summed live (recomputing from members in
                // another order could differ in the last bits, and the days
                // after a restart continue from them); its counts equal the
                // recomputed ones. The revenue sums are recomputed.
                if let Some((_, row)) = s.days.last() {
                    let mut values = st.value_arms.lock().unwrap_or_else(|e| e.into_inner());
                    for ((arm, value), kept) in arms.iter_mut().zip(values.iter_mut()).zip(row) {
                        arm.members = kept.members;
                        arm.conversions = kept.conversions;
                        arm.covariate_sum = kept.covariate_sum;
                        arm.covariate_sum_sq = kept.covariate_sum_sq;
                        value.stats = ArmStats {
                            conversions: 0,
                            ..kept.clone()
                        };
                    }
                }
            }
            let kept = s.days.len().saturating_sub(MAX_TIMESERIES_DAYS);
            *st.days.lock().unwrap_or_else(|e| e.into_inner()) =
                s.days.into_iter().skip(kept).collect();
            self.experiments.insert(s.id, Arc::new(st));
        }
    }
}

/// Log day of a ms timestamp.
fn day_of(ms: i64) -> i32 {
    super::day_of_ms(ms)
}

/// Running totals of one variant (for counters seeded at start).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantTotals {
    /// Experiment id.
    pub experiment: String,
    /// Variant name.
    pub variant: String,
    /// Decisions made.
    pub decisions: u64,
    /// Members exposed.
    pub members: u64,
    /// Members converted.
    pub conversions: u64,
    /// Accepted revenue.
    pub revenue: f64,
}

impl ExperimentBook {
    /// Whether `member` is exposed (under their id) in any experiment.
    pub fn is_exposed(&self, member: &str) -> bool {
        self.experiments
            .iter()
            .any(|e| e.members.contains_key(member))
    }

    /// Exposed members across experiments (erased ones included, anonymously).
    pub fn exposures(&self) -> usize {
        self.experiments.iter().map(|e| e.members.len()).sum()
    }

    /// Every variant's running totals.
    pub fn totals(&self) -> Vec<VariantTotals> {
        let mut out = Vec::new();
        for e in self.experiments.iter() {
            let st = e.value();
            let names = st
                .variants
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let arms = st.arms.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (i, name) in names.into_iter().enumerate() {
                out.push(VariantTotals {
                    experiment: e.key().clone(),
                    variant: name,
                    decisions: st.decisions[i].load(Ordering::Relaxed),
                    members: arms[i].members,
                    conversions: arms[i].conversions,
                    revenue: arms[i].revenue_sum,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    #[test]
    fn default_experiments_parse() {
        let e = parse_experiments(DEFAULT_EXPERIMENTS).unwrap();
        assert_eq!(e.len(), 1);
        assert!(e[0].variants.iter().any(|v| v.holdout));
    }

    #[test]
    fn assignment_is_sticky_and_follows_weights() {
        let e = &parse_experiments(DEFAULT_EXPERIMENTS).unwrap()[0];
        let mut counts = vec![0u64; e.variants.len()];
        for i in 0..100_000u64 {
            let id = crate::synth::member_id(i);
            let v = e.assign(&id).unwrap();
            assert_eq!(e.assign(&id), Some(v));
            counts[v] += 1;
        }
        let w: Vec<f64> = e.variants.iter().map(|v| v.weight as f64).collect();
        let p = stats::srm_p_value(&counts, &w).unwrap();
        assert!(p > 0.001, "{counts:?} p={p}");
    }

    #[test]
    fn incremental_arms_equal_recomputed_arms() {
        let book = ExperimentBook::default();
        let a = |v: &str| Assignment {
            experiment: "x".into(),
            variant: v.into(),
        };
        for i in 0..100u32 {
            let v = if i % 2 == 0 { "control" } else { "treatment" };
            book.expose(
                &a(v),
                &format!("m{i}"),
                i as f32,
                i as i64 * 3_600_000,
                || None,
            );
            if i % 3 == 0 {
                book.convert(
                    &a(v),
                    &format!("m{i}"),
                    10.0 + i as f64,
                    i as i64 * 3_600_000,
                );
                book.convert(&a(v), &format!("m{i}"), 5.0, i as i64 * 3_600_000);
            }
            if i % 4 == 1 {
                assert!(book.decline(&a(v), &format!("m{i}")));
                assert!(!book.decline(&a(v), &format!("m{i}")), "counted once");
            }
        }
        let st = book.experiments.get("x").unwrap().clone();
        let incremental = st.arms.lock().unwrap().clone();
        let restored = ExperimentBook::default();
        restored.restore(book.to_snapshot());
        let st2 = restored.experiments.get("x").unwrap().clone();
        let recomputed = st2.arms.lock().unwrap().clone();
        let declines = |st: &ExperimentState| -> Vec<u64> {
            st.decliners
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect()
        };
        assert_eq!(declines(&st), declines(&st2));
        assert_eq!(declines(&st)[1], 25);

        for (x, y) in incremental.iter().zip(&recomputed) {
            assert_eq!(x.members, y.members);
            assert_eq!(x.conversions, y.conversions);
            assert!((x.revenue_sum_sq - y.revenue_sum_sq).abs() < 1e-6);
            assert!((x.covariate_revenue_sum - y.covariate_revenue_sum).abs() < 1e-6);
        }
    }

    /// The daily history keeps one entry per log day with activity, the
    /// last mirroring the running statistics, and at most
    /// [`MAX_TIMESERIES_DAYS`] of them; a variant first seen later joins the
    /// rows from its first day.
    #[test]
    fn the_daily_history_is_bounded_and_follows_log_days() {
        let spec = parse_experiments(
            "[[experiment]]\nid = \"x\"\nsalt = \"s\"\ntraffic = 1.0\n\
             [[experiment.variant]]\nname = \"control\"\ncontrol = true\nweight = 1\n\
             [[experiment.variant]]\nname = \"model\"\nweight = 1\n",
        )
        .unwrap()
        .remove(0);
        let book = ExperimentBook::default();
        let a = |v: &str| Assignment {
            experiment: "x".into(),
            variant: v.into(),
        };
        let day = 86_400_000i64;
        let days = MAX_TIMESERIES_DAYS as i64 + 5;
        for d in 0..days {
            book.expose(&a("control"), &format!("c{d}"), 0.0, d * day, || None);
            if d >= 3 {
                // Two events on one day: still one entry.
                book.expose(&a("model"), &format!("m{d}"), 0.0, d * day + 10, || None);
                book.convert(&a("model"), &format!("m{d}"), 2.0, d * day + 20);
                book.add_value(&a("model"), &format!("m{d}"), 2.0, 0.0, d * day + 20);
            }
        }
        let ts = book.timeseries(&spec);
        assert_eq!(ts.days.len(), MAX_TIMESERIES_DAYS);
        assert_eq!(ts.days[0].day, crate::domain::Day(5).to_string());
        let last = ts.days.last().unwrap();
        assert_eq!(last.variants[0].members, days as u64);
        assert_eq!(
            (last.variants[1].members, last.variants[1].conversions),
            (days as u64 - 3, days as u64 - 3)
        );
        assert_eq!(last.variants[1].value, 2.0 * (days - 3) as f64);
        // The first day kept is cumulative: everything before it counts.
        assert_eq!(ts.days[0].variants[0].members, 6);
        // The running minimum of the always-valid p-value never rises.
        let p: Vec<f64> = ts
            .days
            .iter()
            .filter_map(|d| d.variants[1].sequential_p_value)
            .collect();
        assert!(p.windows(2).all(|w| w[1] <= w[0]), "{p:?}");
        let st = book.experiments.get("x").unwrap().clone();
        let arms = st.arms.lock().unwrap().clone();
        let days_kept = st.days.lock().unwrap();
        assert_eq!(days_kept.back().unwrap().1[..], arms[..2]);
    }

    #[test]
    fn erasure_keeps_the_figures_and_drops_the_segments() {
        use crate::domain::{Channel, Tier};
        use crate::features::ValueSegment;
        let book = ExperimentBook::default();
        let a = Assignment {
            experiment: "x".into(),
            variant: "control".into(),
        };
        let keys = SegmentKeys {
            tier: Tier::Diamond,
            value: ValueSegment::HighValue,
            business: true,
            home_airport: *b"LXA",
            channel: Channel::Kiosk,
        };
        book.expose(&a, "M1", 5.0, 1_000, || Some((keys, 0)));
        book.convert(&a, "M1", 30.0, 2_000);
        assert_eq!(book.erase_member("M1", 7), 1);
        let st = book.experiments.get("x").unwrap().clone();
        let (id, e) = st
            .members
            .iter()
            .map(|m| (m.key().to_string(), *m.value()))
            .next()
            .unwrap();
        assert_eq!(id, "erased-7-0");
        assert!(e.converted && e.revenue == 30.0 && e.segment.is_none());
    }
}
