//! Learning from outcomes: adaptive propensity models that update online as
//! decisions and accepts arrive, and the exploration policies that give new
//! offers a chance while recording the probability with which each offer was
//! put in its slot.
//!
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::features::{FeatureVector, N_FEATURES};
use crate::model::ScoringTable;
use crate::state::expiring::ExpiringMap;
pub use offer_engine_core::policy::{seed_of, select, softmax_weights, Candidate, Exploration};
pub use offer_engine_core::posterior::*;

/// What a decision leaves for delayed rewards: the features it was scored
/// on, the offers shown and what became of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// When it was made, ms.
    pub created_ms: i64,
    /// The member it was for (fulfilments are logged with it; erasure forgets by it).
    pub member_id: String,
    /// Its feature vector.
    pub features: Vec<f32>,
    /// Offer ids shown, in order.
    pub offers: Vec<String>,
    /// Bit `i` set: offer `i` was accepted (attributed within the window).
    pub accepted: u64,
    /// Bit `i` set: offer `i` was fulfilled after its accept.
    pub fulfilled: u64,
}

impl Remembered {
    /// Position of `offer_id` among the offers shown, if tracked (the first 64).
    pub fn position(&self, offer_id: &str) -> Option<usize> {
        self.offers
            .iter()
            .position(|o| o == offer_id)
            .filter(|i| *i < 64)
    }
}

/// A fulfilment that would count: the remembered decision and the offer's position in it.
#[derive(Debug, Clone)]
pub struct Fulfilment {
    /// The decision as remembered.
    pub remembered: Arc<Remembered>,
    /// Position of the offer among those shown.
    pub pos: usize,
}

/// Why a fulfilment cannot be attributed to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FulfilmentError {
    /// Not remembered: unknown, not scored by the adaptive models, or long gone.
    #[error("no such decision remembered for delayed rewards (unknown, not scored by the adaptive models, or older than the attribution window)")]
    Unknown,
    /// The offer was not shown in that decision.
    #[error("this offer was not in that decision")]
    NotShown,
    /// The decision is older than the attribution window.
    #[error("the attribution window of this decision has closed")]
    WindowClosed,
    /// No accept of this offer in this decision has been recorded.
    #[error("this offer was not accepted in that decision (or its accept is not recorded yet)")]
    NotAccepted,
    /// Already fulfilled: it counts once.
    #[error("already fulfilled")]
    AlreadyFulfilled,
}

/// A posterior shared between the writer (updates) and decisions (reads).
/// A `std` lock: held only for a dot product or an update, never across `.await`.
pub type Shared = Arc<RwLock<Posterior>>;

struct Aligned {
    /// Address of the catalog the slots are aligned with.
    catalog: usize,
    /// Slot `i` is catalog offer `i`'s posterior.
    slots: Vec<Shared>,
}

struct Inner {
    settings: LearnSettings,
    /// Posteriors by offer id (offers survive catalog reloads by id).
    models: DashMap<Box<str>, Shared, ahash::RandomState>,
    /// Priors for offers not seen yet: catalog + shipped table.
    prior: ArcSwap<Option<(Arc<Catalog>, Arc<ScoringTable>)>>,
    /// Posteriors aligned with the last catalog asked about.
    aligned: ArcSwap<Aligned>,
    /// Decision id → what delayed rewards need, kept until a day after its
    /// attribution window closes (so a late event is told "window closed",
    /// not "unknown"), at most `max_remembered`, the oldest evicted first.
    memory: ExpiringMap<Arc<Remembered>>,
    /// The clock the memory evicts by: the latest decision time applied (log
    /// time, so replay evicts as the live run did, whatever the wall clock).
    clock: AtomicI64,
}

/// A remembered decision is kept this long after its attribution window closes.
const KEEP_AFTER_WINDOW_MS: i64 = 86_400_000;

/// The adaptive models. Cloning is shallow.
#[derive(Clone)]
pub struct OnlineLearner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OnlineLearner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineLearner")
            .field("models", &self.inner.models.len())
            .finish()
    }
}

impl Default for OnlineLearner {
    fn default() -> Self {
        OnlineLearner::new(LearnSettings::default())
    }
}

/// Snapshot form.
#[derive(Debug, Serialize, Deserialize)]
pub struct LearnerSnapshot {
    /// Posteriors by offer id.
    pub models: Vec<(String, Posterior)>,
    /// Remembered decisions.
    pub memory: Vec<(String, Remembered)>,
}

impl OnlineLearner {
    /// An empty learner.
    pub fn new(settings: LearnSettings) -> OnlineLearner {
        OnlineLearner {
            inner: Arc::new(Inner {
                settings,
                models: DashMap::default(),
                prior: ArcSwap::from_pointee(None),
                aligned: ArcSwap::from_pointee(Aligned {
                    catalog: 0,
                    slots: Vec::new(),
                }),
                // Not a cache: moka's default TinyLFU admits a new key into
                // a full cache only if it is more popular than the victim,
                // and a decision id is new by definition, so once
                // `max_remembered` decisions are held every new decision
                // would be dropped (moka-rs/moka#147;
                // `a_full_memory_keeps_the_newest_decisions`). The memory is
                // FIFO by log time: an entry is written once, and the oldest
                // is the one least likely to be asked for again.
                memory: ExpiringMap::new(settings.max_remembered as usize),
                clock: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Settings.
    pub fn settings(&self) -> &LearnSettings {
        &self.inner.settings
    }

    /// Sets the prior of offers not yet seen: the shipped model aligned with
    /// the catalog (call at start and after a reload, before replay).
    pub fn set_prior(&self, catalog: Arc<Catalog>, table: Arc<ScoringTable>) {
        self.inner.prior.store(Arc::new(Some((catalog, table))));
    }

    fn prior_for(&self, offer_id: &str) -> Posterior {
        let var = self.inner.settings.prior_variance;
        if let Some((catalog, table)) = self.inner.prior.load().as_ref() {
            if let Some(i) = catalog.offers.iter().position(|o| o.id == offer_id) {
                let w: Vec<f64> = table.weights.row(i).iter().map(|v| *v as f64).collect();
                return Posterior::prior(table.bias[i] as f64, &w, var);
            }
        }
        Posterior::flat(var)
    }

    /// The posterior of `offer_id`, created from its prior if new.
    pub fn model(&self, offer_id: &str) -> Shared {
        if let Some(m) = self.inner.models.get(offer_id) {
            return m.clone();
        }
        self.inner
            .models
            .entry(offer_id.into())
            .or_insert_with(|| Arc::new(RwLock::new(self.prior_for(offer_id))))
            .clone()
    }

    /// Posteriors aligned with `catalog` (slot i = offer i). Rebuilt only
    /// when the catalog changes; otherwise one atomic load.
    pub fn slots(&self, catalog: &Arc<Catalog>) -> SlotsRef {
        let key = Arc::as_ptr(catalog) as usize;
        let cur = self.inner.aligned.load_full();
        if cur.catalog == key {
            return SlotsRef(cur);
        }
        let slots = catalog.offers.iter().map(|o| self.model(&o.id)).collect();
        let fresh = Arc::new(Aligned {
            catalog: key,
            slots,
        });
        self.inner.aligned.store(fresh.clone());
        SlotsRef(fresh)
    }

    /// Score of an offer for a decision: the posterior mean once the offer
    /// has `min_evidence` examples, else `shipped`.
    #[inline]
    pub fn score(&self, slot: &Shared, x: &FeatureVector, shipped: f32) -> f32 {
        let g = slot.read().unwrap_or_else(|e| e.into_inner());
        if g.examples >= self.inner.settings.min_evidence {
            g.mean_probability(x) as f32
        } else {
            shipped
        }
    }

    /// A decision was made: its shown offers count as negatives now (see
    /// the module notes) and it is remembered for delayed rewards.
    pub fn decided(
        &self,
        decision_id: &str,
        member_id: &str,
        created_ms: i64,
        features: &[f32],
        offers: &[&str],
    ) {
        if !self.inner.settings.enabled || features.len() != N_FEATURES || offers.is_empty() {
            return;
        }
        let mut x = [0f32; N_FEATURES];
        x.copy_from_slice(features);
        for o in offers {
            let m = self.model(o);
            m.write()
                .unwrap_or_else(|e| e.into_inner())
                .update(&x, false);
        }
        self.remember(
            decision_id,
            Remembered {
                created_ms,
                member_id: member_id.to_string(),
                features: features.to_vec(),
                offers: offers.iter().map(|s| s.to_string()).collect(),
                accepted: 0,
                fulfilled: 0,
            },
        );
    }

    /// An accept of `offer_id` in `decision_id` at `at_ms`. Within the
    /// window it is recorded (a later fulfilment needs it) and, when `learn`
    /// (the offer is rewarded on accept), it is a positive example. Returns
    /// whether it was attributed (remembered, shown, within the window).
    ///
    /// Called from the log's apply path, one record at a time (the writer
    /// thread, or replay), so the read-modify-write of the entry is not raced.
    pub fn accepted(&self, decision_id: &str, offer_id: &str, at_ms: i64, learn: bool) -> bool {
        if !self.inner.settings.enabled {
            return false;
        }
        let Some(r) = self.inner.memory.get_held(decision_id) else {
            return false;
        };
        let window = self.window_ms();
        let Some(bit) = r.position(offer_id).map(|i| 1u64 << i) else {
            return false;
        };
        if at_ms - r.created_ms > window {
            return false;
        }
        if r.accepted & bit == 0 {
            let mut next = (*r).clone();
            next.accepted |= bit;
            self.inner.memory.replace(decision_id, Arc::new(next));
        }
        if learn {
            self.learn_positive(&r, offer_id);
        }
        true
    }

    /// Whether a fulfilment of `offer_id` in `decision_id` at `at_ms` would
    /// count (read-only: the HTTP edge checks before logging).
    pub fn check_fulfilment(
        &self,
        decision_id: &str,
        offer_id: &str,
        at_ms: i64,
    ) -> Result<Fulfilment, FulfilmentError> {
        if !self.inner.settings.enabled {
            return Err(FulfilmentError::Unknown);
        }
        let r = self
            .inner
            .memory
            .get_held(decision_id)
            .ok_or(FulfilmentError::Unknown)?;
        let pos = r.position(offer_id).ok_or(FulfilmentError::NotShown)?;
        let bit = 1u64 << pos;
        if at_ms - r.created_ms > self.window_ms() {
            return Err(FulfilmentError::WindowClosed);
        }
        if r.accepted & bit == 0 {
            return Err(FulfilmentError::NotAccepted);
        }
        if r.fulfilled & bit != 0 {
            return Err(FulfilmentError::AlreadyFulfilled);
        }
        Ok(Fulfilment { remembered: r, pos })
    }

    /// A fulfilment (the accepted offer was delivered): recorded once, and a
    /// positive example when `learn` (the offer is rewarded on fulfilment).
    /// Same apply-path rule as [`OnlineLearner::accepted`].
    pub fn fulfilled(
        &self,
        decision_id: &str,
        offer_id: &str,
        at_ms: i64,
        learn: bool,
    ) -> Result<(), FulfilmentError> {
        let f = self.check_fulfilment(decision_id, offer_id, at_ms)?;
        let mut next = (*f.remembered).clone();
        next.fulfilled |= 1u64 << f.pos;
        self.inner.memory.replace(decision_id, Arc::new(next));
        if learn {
            self.learn_positive(&f.remembered, offer_id);
        }
        Ok(())
    }

    /// Forgets every remembered decision of `member_id` (erasure; walks the memory).
    pub fn forget_member(&self, member_id: &str) {
        self.inner.memory.remove_where(|r| r.member_id == member_id);
    }

    /// Holds `r` under `decision_id` (keeps one already held: replay is idempotent).
    fn remember(&self, decision_id: &str, r: Remembered) {
        let created = r.created_ms;
        let now = self
            .inner
            .clock
            .fetch_max(created, Ordering::Relaxed)
            .max(created);
        let keep_until = created
            .saturating_add(self.window_ms())
            .saturating_add(KEEP_AFTER_WINDOW_MS);
        self.inner
            .memory
            .insert_with(decision_id, keep_until, now, || Arc::new(r));
    }

    fn window_ms(&self) -> i64 {
        self.inner.settings.attribution_window_days as i64 * 86_400_000
    }

    fn learn_positive(&self, r: &Remembered, offer_id: &str) {
        let mut x = [0f32; N_FEATURES];
        x.copy_from_slice(&r.features);
        self.model(offer_id)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .update(&x, true);
    }

    /// A remembered decision.
    pub fn remembered(&self, decision_id: &str) -> Option<Arc<Remembered>> {
        self.inner.memory.get_held(decision_id)
    }

    /// A copy of the posterior of `offer_id`, if it has one.
    pub fn posterior(&self, offer_id: &str) -> Option<Posterior> {
        self.inner
            .models
            .get(offer_id)
            .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Snapshot form (sorted, so equal states give equal bytes).
    pub fn to_snapshot(&self, now_ms: i64) -> LearnerSnapshot {
        // A model without examples is its prior: a function of the catalog
        // and model in service, not of the records, and made again on
        // demand; only what the records taught is state.
        let mut models: Vec<(String, Posterior)> = self
            .inner
            .models
            .iter()
            .filter(|e| e.value().read().unwrap_or_else(|e| e.into_inner()).examples > 0)
            .map(|e| {
                (
                    e.key().to_string(),
                    e.value().read().unwrap_or_else(|e| e.into_inner()).clone(),
                )
            })
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        let window = self.window_ms();
        let mut memory: Vec<(String, Remembered)> = Vec::new();
        self.inner.memory.for_each(i64::MIN, |k, r| {
            if now_ms - r.created_ms <= window {
                memory.push((k.to_string(), (**r).clone()));
            }
        });
        memory.sort_by(|a, b| a.0.cmp(&b.0));
        LearnerSnapshot { models, memory }
    }

    /// Restores a snapshot (into an empty learner).
    pub fn restore(&self, snap: LearnerSnapshot) {
        for (id, p) in snap.models {
            self.inner
                .models
                .insert(id.into(), Arc::new(RwLock::new(p)));
        }
        // Oldest first, so eviction order is time order again.
        let mut memory = snap.memory;
        memory.sort_by_key(|(_, r)| r.created_ms);
        for (id, r) in memory {
            self.remember(&id, r);
        }
        // Re-align on next use.
        self.inner.aligned.store(Arc::new(Aligned {
            catalog: 0,
            slots: Vec::new(),
        }));
    }
}

/// Aligned slots, borrowed from the learner's cache.
pub struct SlotsRef(Arc<Aligned>);

impl std::ops::Deref for SlotsRef {
    type Target = [Shared];
    fn deref(&self) -> &[Shared] {
        &self.0.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn x_of(v: &[(usize, f32)]) -> FeatureVector {
        let mut x = [0f32; N_FEATURES];
        for (i, f) in v {
            x[*i] = *f;
        }
        x
    }

    #[test]
    fn posterior_moves_the_right_way_and_narrows() {
        let x = x_of(&[(4, 1.0), (15, 1.0)]);
        let mut p = Posterior::flat(1.0);
        let before = p.mean_logit(&x);
        let var_before = p.var_logit(&x);
        p.update(&x, true);
        assert!(p.mean_logit(&x) > before, "an accept raises the estimate");
        assert!(
            p.var_logit(&x) < var_before,
            "evidence narrows the posterior"
        );
        let mid = p.mean_logit(&x);
        p.update(&x, false);
        assert!(p.mean_logit(&x) < mid, "a non-accept lowers it");
        // Parameters the example does not touch stay where they were.
        assert_eq!(p.mean[6], 0.0);
        assert_eq!(p.cov[6 * DIM + 6], 1.0);
        assert_eq!((p.examples, p.accepts), (2, 1));
    }

    #[test]
    fn converges_to_the_true_rate_with_fake_negatives() {
        // Two segments with true accept rates 3% and 12%: each exposure is a
        // negative, each accept a further positive copy.
        let a = x_of(&[(11, 1.0)]);
        let b = x_of(&[(12, 1.0)]);
        let mut p = Posterior::flat(1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..40_000 {
            for (x, rate) in [(&a, 0.03), (&b, 0.12)] {
                p.update(x, false);
                if rng.gen_bool(rate) {
                    p.update(x, true);
                }
            }
        }
        let (pa, pb) = (p.mean_probability(&a), p.mean_probability(&b));
        assert!((pa - 0.03).abs() < 0.006, "{pa}");
        assert!((pb - 0.12).abs() < 0.015, "{pb}");
    }

    fn cands(evs: &[f64], cats: &[u32]) -> Vec<Candidate> {
        evs.iter()
            .zip(cats)
            .enumerate()
            .map(|(i, (ev, c))| Candidate {
                index: i,
                category: *c,
                ev: *ev,
            })
            .collect()
    }

    #[test]
    fn greedy_takes_the_best_per_category_with_propensity_one() {
        let c = cands(&[50.0, 40.0, 30.0, 10.0], &[0, 0, 1, 2]);
        let s = select(&c, 3, Exploration::Greedy, 1, 0, &|i, _| c[i].ev);
        assert_eq!(s, vec![(0, 1.0), (2, 1.0), (3, 1.0)]);
    }

    #[test]
    fn exploration_policies_validate() {
        assert!(Exploration::EpsilonGreedy { epsilon: 1.5 }
            .validate()
            .is_err());
        assert!(Exploration::Softmax { temperature: 0.0 }
            .validate()
            .is_err());
        assert!(Exploration::Softmax { temperature: 5.0 }.validate().is_ok());
        let e: Exploration = toml::from_str("policy = \"epsilon_greedy\"\nepsilon = 0.05").unwrap();
        assert_eq!(e, Exploration::EpsilonGreedy { epsilon: 0.05 });
    }

    /// Exact first-slot probabilities of a policy, over every candidate.
    fn first_slot(c: &[Candidate], policy: Exploration) -> Vec<f64> {
        let remaining: Vec<usize> = (0..c.len()).collect();
        match policy {
            Exploration::EpsilonGreedy { epsilon } => (0..c.len())
                .map(|i| epsilon / c.len() as f64 + if i == 0 { 1.0 - epsilon } else { 0.0 })
                .collect(),
            Exploration::Softmax { temperature } => {
                let w = softmax_weights(c, &remaining, temperature);
                let t: f64 = w.iter().sum();
                w.iter().map(|v| v / t).collect()
            }
            _ => unreachable!(),
        }
    }

    proptest::proptest! {
        #[test]
        fn first_slot_probabilities_sum_to_one_and_match_what_is_recorded(
            evs in proptest::collection::vec(0.0f64..500.0, 1..8),
            eps in 0.0f64..1.0,
            temp in 1.0f64..200.0,
            seed in 0u64..1000,
        ) {
            let mut evs = evs;
            evs.sort_by(|a, b| b.total_cmp(a));
            let cats: Vec<u32> = (0..evs.len() as u32).collect();
            let c = cands(&evs, &cats);
            for policy in [
                Exploration::EpsilonGreedy { epsilon: eps },
                Exploration::Softmax { temperature: temp },
            ] {
                let probs = first_slot(&c, policy);
                let total: f64 = probs.iter().sum();
                proptest::prop_assert!((total - 1.0).abs() < 1e-9);
                let s = select(&c, 1, policy, seed, 0, &|i, _| c[i].ev);
                let (pick, prob) = s[0];
                // Ties in EV make two offers equally likely under softmax,
                // so compare the probability of the pick, not its position.
                proptest::prop_assert!((probs[pick] - prob).abs() < 1e-9, "{policy:?}");
            }
        }
    }

    /// Recorded propensities match how often the policy actually makes
    /// that choice, for every slot (sequential sampling without replacement).
    #[test]
    fn recorded_propensities_match_empirical_frequencies() {
        let c = cands(&[120.0, 100.0, 90.0, 60.0, 20.0], &[0, 1, 1, 2, 3]);
        for policy in [
            Exploration::EpsilonGreedy { epsilon: 0.3 },
            Exploration::Softmax { temperature: 30.0 },
        ] {
            let n = 40_000;
            let mut counts = std::collections::HashMap::new();
            let mut recorded = std::collections::HashMap::new();
            for seed in 0..n {
                let s = select(&c, 2, policy, seed, 0, &|i, _| c[i].ev);
                let key = (s[0].0, s[1].0);
                *counts.entry(key).or_insert(0u32) += 1;
                recorded.insert(key, s[0].1 * s[1].1);
            }
            for (key, k) in counts {
                let freq = k as f64 / n as f64;
                let p = recorded[&key];
                let tol = 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3;
                assert!((freq - p).abs() < tol, "{policy:?} {key:?}: {freq} vs {p}");
            }
        }
    }

    #[test]
    fn thompson_propensity_estimates_the_win_rate() {
        // Offer 0: EV ~ N(100, 20²), offer 1: EV ~ N(90, 20²): P(0 wins) = Φ(10/√800) ≈ 0.638.
        let c = cands(&[100.0, 90.0], &[0, 0]);
        let f = |i: usize, rng: &mut ChaCha8Rng| c[i].ev + 20.0 * standard_normal(rng);
        let mut picked0 = 0;
        let mut mean_p0 = 0.0;
        let n = 2000;
        for seed in 0..n {
            let s = select(&c, 1, Exploration::Thompson, seed, 256, &f);
            if s[0].0 == 0 {
                picked0 += 1;
                mean_p0 += s[0].1;
            }
        }
        let freq = picked0 as f64 / n as f64;
        mean_p0 /= picked0 as f64;
        assert!((freq - 0.638).abs() < 0.04, "{freq}");
        assert!((mean_p0 - 0.638).abs() < 0.03, "{mean_p0}");
    }

    #[test]
    fn learner_learns_accepts_within_the_window_and_snapshots() {
        let l = OnlineLearner::new(LearnSettings {
            attribution_window_days: 1,
            ..Default::default()
        });
        let x = x_of(&[(4, 1.0)]);
        l.decided("d1", "M1", 0, &x, &["o1", "o2"]);
        assert_eq!(l.posterior("o1").unwrap().examples, 1);
        assert!(l.accepted("d1", "o1", 3_600_000, true));
        assert!(!l.accepted("d1", "o3", 3_600_000, true), "not shown in d1");
        assert!(
            !l.accepted("d1", "o2", 2 * 86_400_000, true),
            "outside the window"
        );
        assert!(!l.accepted("nope", "o1", 0, true));
        let p = l.posterior("o1").unwrap();
        assert_eq!((p.examples, p.accepts), (2, 1));
        let snap = l.to_snapshot(0);
        let bytes = bincode::serialize(&snap).unwrap();
        let other = OnlineLearner::new(*l.settings());
        other.restore(bincode::deserialize(&bytes).unwrap());
        assert_eq!(other.posterior("o1"), l.posterior("o1"));
        assert!(other.remembered("d1").is_some());
        assert_eq!(bincode::serialize(&other.to_snapshot(0)).unwrap(), bytes);
    }

    #[test]
    fn fulfilment_counts_once_after_an_accept_within_the_window_and_survives_snapshots() {
        let l = OnlineLearner::new(LearnSettings {
            attribution_window_days: 30,
            ..Default::default()
        });
        let x = x_of(&[(4, 1.0)]);
        let day = 86_400_000;
        l.decided("d1", "M1", 0, &x, &["upgrade", "lounge"]);
        assert_eq!(
            l.check_fulfilment("d1", "upgrade", day).unwrap_err(),
            FulfilmentError::NotAccepted
        );
        // Rewarded on fulfilment: the accept is recorded but teaches nothing.
        assert!(l.accepted("d1", "upgrade", 60_000, false));
        assert_eq!(l.posterior("upgrade").unwrap().accepts, 0);
        assert_eq!(
            l.check_fulfilment("d1", "lounge", day).unwrap_err(),
            FulfilmentError::NotAccepted
        );
        assert_eq!(
            l.check_fulfilment("d1", "wifi", day).unwrap_err(),
            FulfilmentError::NotShown
        );
        assert_eq!(
            l.check_fulfilment("nope", "upgrade", day).unwrap_err(),
            FulfilmentError::Unknown
        );
        assert_eq!(
            l.check_fulfilment("d1", "upgrade", 31 * day).unwrap_err(),
            FulfilmentError::WindowClosed
        );
        // The flight is flown three weeks later: the reward arrives.
        let snap = bincode::serialize(&l.to_snapshot(21 * day)).unwrap();
        l.fulfilled("d1", "upgrade", 21 * day, true).unwrap();
        let p = l.posterior("upgrade").unwrap();
        assert_eq!((p.examples, p.accepts), (2, 1));
        assert_eq!(
            l.fulfilled("d1", "upgrade", 22 * day, true).unwrap_err(),
            FulfilmentError::AlreadyFulfilled
        );
        assert_eq!(l.posterior("upgrade").unwrap().accepts, 1, "counted once");
        // A restart before the fulfilment: the accept survives the snapshot.
        let other = OnlineLearner::new(*l.settings());
        other.restore(bincode::deserialize(&snap).unwrap());
        other.fulfilled("d1", "upgrade", 21 * day, true).unwrap();
        assert_eq!(other.posterior("upgrade"), l.posterior("upgrade"));
        // Erasure forgets the member's decisions.
        l.forget_member("M1");
        assert!(l.remembered("d1").is_none());
    }

    #[test]
    fn a_full_memory_keeps_the_newest_decisions() {
        // Delayed rewards come to recent decisions: once the memory is full,
        // a new decision must push out the oldest, never be refused itself
        // (TinyLFU admission, moka's default, refuses keys it has not seen
        // before once the cache is full: moka-rs/moka#147).
        let l = OnlineLearner::new(LearnSettings {
            max_remembered: 100,
            ..Default::default()
        });
        let x = x_of(&[(4, 1.0)]);
        for i in 0..5_000 {
            l.decided(&format!("d{i}"), "M1", i, &x, &["o1"]);
            if i % 7 == 0 {
                // Reads of older decisions (accept checks) must not change that.
                let _ = l.remembered(&format!("d{}", i / 2));
            }
        }
        // Capacity is per eviction ring (16), so the newest 20 are surely held.
        let newest = (4_980..5_000)
            .filter(|i| l.remembered(&format!("d{i}")).is_some())
            .count();
        assert_eq!(newest, 20, "the newest 20 decisions are remembered");
        assert!(l.inner.memory.len() <= 112, "100 rounded up to 16 rings");
        assert!(l.remembered("d0").is_none(), "the oldest is gone");
        assert!(l.accepted("d4999", "o1", 5_000, true));
    }
}
