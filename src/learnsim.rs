//! A closed-loop simulation of learning from outcomes in the synthetic
//! world: members from [`crate::synth`] book trips, the real decision core
//! picks offers under an exploration policy with the adaptive models of
//! [`crate::online`], accepts are drawn from the hidden ground truth and fed
//! back, and the simulation measures what was learned (AUC on a fixed
//! held-out set against the shipped offline model) and what learning cost
//! (regret against an oracle that knows the ground truth).
//!
//! Deterministic for a seed; used by `tests/learning_simulation.rs`, the
//! learning-curve example and the online-update bench.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::{Catalog, EligibilityContext};
use crate::decision::{decide_explored, decide_scored, DecisionInput, Engine, Explore, Ranking};
use crate::domain::{Channel, Itinerary, Member, TierThresholds};
use crate::features::{self, FeatureVector};
use crate::model::ModelFile;
use crate::state::learner::{Exploration, LearnSettings, OnlineLearner};
use crate::synth::{self, GroundTruth};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the population, trips and accept draws.
    pub seed: u64,
    /// Members to draw from.
    pub population: u64,
    /// Exploration policy.
    pub policy: Exploration,
    /// Learner settings.
    pub learn: LearnSettings,
    /// Cold start: the adaptive models start from a flat prior instead of the shipped model.
    pub cold_start: bool,
    /// Offers per decision.
    pub max_offers: usize,
    /// Held-out (member, trip, eligible offer) examples for the AUC.
    pub holdout: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            population: 50_000,
            policy: Exploration::Thompson,
            learn: LearnSettings {
                min_evidence: 0,
                thompson_draws: 0,
                // A cold start knows nothing: a wide prior explores more.
                prior_variance: 1.0,
                ..LearnSettings::default()
            },
            cold_start: true,
            max_offers: 3,
            holdout: 20_000,
        }
    }
}

struct Example {
    x: FeatureVector,
    offer: usize,
    label: bool,
}

/// One point of a learning curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Decisions so far.
    pub decisions: u64,
    /// Held-out AUC of the adaptive models' posterior means.
    pub auc_adaptive: f64,
    /// Held-out AUC of the shipped offline model.
    pub auc_offline: f64,
    /// Sum over decisions of the oracle's true expected value less the policy's, CNY.
    pub cumulative_regret: f64,
}

/// The simulation state.
pub struct Simulation {
    cfg: SimConfig,
    engine: Engine,
    truth: GroundTruth,
    th: TierThresholds,
    /// The adaptive models being trained.
    pub learner: OnlineLearner,
    rng: ChaCha8Rng,
    as_of: NaiveDate,
    now: DateTime<Utc>,
    holdout: Vec<Example>,
    decisions: u64,
    regret: f64,
    last: Vec<usize>,
    last_trip: Option<Itinerary>,
    last_member: Option<Member>,
}

impl Simulation {
    /// A simulation of `catalog` scored by the shipped model.
    pub fn new(cfg: SimConfig, catalog: Catalog) -> Simulation {
        Simulation::with_model(cfg, catalog, ModelFile::default_model())
    }

    /// A simulation of `catalog` scored by `model`.
    pub fn with_model(cfg: SimConfig, catalog: Catalog, model: ModelFile) -> Simulation {
        let th = TierThresholds::default();
        let engine = Engine::new(catalog, model, th);
        let learner = OnlineLearner::new(cfg.learn);
        if !cfg.cold_start {
            learner.set_prior(engine.catalog.clone(), engine.table.clone());
        }
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 1).expect("valid date");
        let now = Utc
            .with_ymd_and_hms(2026, 11, 2, 9, 0, 0)
            .single()
            .expect("valid instant");
        let mut sim = Simulation {
            truth: GroundTruth::new(cfg.seed),
            rng: synth::stream_rng(cfg.seed, 1 << 40),
            engine,
            th,
            learner,
            as_of,
            now,
            holdout: Vec::new(),
            decisions: 0,
            regret: 0.0,
            last: Vec::new(),
            last_trip: None,
            last_member: None,
            cfg,
        };
        sim.holdout = sim.make_holdout();
        sim
    }

    /// The engine (catalog + shipped model).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn draw_context(&self, rng: &mut ChaCha8Rng) -> (Member, Itinerary) {
        let i = rng.gen_range(0..self.cfg.population);
        let m = synth::member(self.cfg.seed, i, self.as_of, &self.th);
        let it = synth::itinerary(rng, Some(&m), self.now);
        (m, it)
    }

    fn features(&self, m: &Member, it: &Itinerary) -> FeatureVector {
        features::for_checkout(Some(m), it, self.now, &self.th)
    }

    fn make_holdout(&self) -> Vec<Example> {
        let mut rng = synth::stream_rng(self.cfg.seed ^ 0x5eed, 1 << 41);
        let mut out = Vec::with_capacity(self.cfg.holdout);
        while out.len() < self.cfg.holdout {
            let (m, it) = self.draw_context(&mut rng);
            let x = self.features(&m, &it);
            let gap = features::spend_to_next_tier(&m, &self.th);
            let ectx =
                EligibilityContext::new(Some(&m), Some(&it), Channel::Checkout, self.now, gap);
            for (k, offer) in self.engine.catalog.offers.iter().enumerate() {
                if offer.eligible(&ectx).is_ok() {
                    let p = self.truth.probability(
                        offer,
                        Some(&m),
                        Some(&it),
                        Channel::Checkout,
                        self.now,
                        &self.th,
                    );
                    out.push(Example {
                        x,
                        offer: k,
                        label: rng.gen_bool(p),
                    });
                }
            }
        }
        out
    }

    /// One decision: decide under the policy, draw accepts, learn.
    pub fn step(&mut self) {
        let mut rng = self.rng.clone();
        let (m, it) = self.draw_context(&mut rng);
        let id_seed: u64 = rng.gen();
        self.rng = rng;
        let x = self.features(&m, &it);
        let input = DecisionInput {
            member: Some(&m),
            itinerary: Some(&it),
            channel: Channel::Checkout,
            now: self.now,
            max_offers: self.cfg.max_offers,
            ranking: Ranking::Model,
        };
        let slots = self.learner.slots(&self.engine.catalog);
        let table = self.engine.table.clone();
        let moments = |i: usize| {
            slots[i]
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .logit_moments(&x)
        };
        let explore = Explore {
            policy: self.cfg.policy,
            seed: id_seed,
            draws: self.cfg.learn.thompson_draws,
            moments: &moments,
        };
        let learner = &self.learner;
        let d = decide_explored(
            &self.engine,
            &input,
            &crate::decision::Unconstrained,
            None,
            |i| learner.score(&slots[i], &x, table.propensity(i, &x)),
            Some(&explore),
        );
        let truth = |i: usize| {
            self.truth.probability(
                &self.engine.catalog.offers[i],
                Some(&m),
                Some(&it),
                Channel::Checkout,
                self.now,
                &self.th,
            )
        };
        let oracle = decide_scored(
            &self.engine,
            &input,
            &crate::decision::Unconstrained,
            None,
            |i| truth(i) as f32,
        );
        let value = |i: usize| {
            self.engine.catalog.offers[i]
                .accept_value(it.passengers, self.engine.catalog.cost_per_point)
        };
        let oracle_ev: f64 = oracle
            .offers
            .iter()
            .map(|o| truth(o.index) * value(o.index))
            .sum();
        let shown_ev: f64 = d
            .offers
            .iter()
            .map(|o| truth(o.index) * value(o.index))
            .sum();
        self.regret += oracle_ev - shown_ev;
        let id = format!("sim-{}", self.decisions);
        let t = self.now.timestamp_millis();
        let ids: Vec<&str> = d
            .offers
            .iter()
            .map(|o| self.engine.catalog.offers[o.index].id.as_str())
            .collect();
        self.learner.decided(&id, "sim-member", t, &x, &ids);
        for o in &d.offers {
            if self.rng.gen_bool(truth(o.index)) {
                self.learner
                    .accepted(&id, &self.engine.catalog.offers[o.index].id, t, true);
            }
        }
        self.last = d.offers.iter().map(|o| o.index).collect();
        self.last_trip = Some(it);
        self.last_member = Some(m);
        self.decisions += 1;
    }

    /// Catalog indices shown in the last decision, with its trip and member.
    pub fn last(&self) -> (&[usize], Option<&Itinerary>, Option<&Member>) {
        (
            &self.last,
            self.last_trip.as_ref(),
            self.last_member.as_ref(),
        )
    }

    /// Held-out AUC of (adaptive models, shipped offline model).
    pub fn auc(&self) -> (f64, f64) {
        let slots = self.learner.slots(&self.engine.catalog);
        let labels: Vec<bool> = self.holdout.iter().map(|e| e.label).collect();
        let adaptive: Vec<f64> = self
            .holdout
            .iter()
            .map(|e| {
                slots[e.offer]
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .mean_probability(&e.x)
            })
            .collect();
        let offline: Vec<f64> = self
            .holdout
            .iter()
            .map(|e| self.engine.table.propensity(e.offer, &e.x) as f64)
            .collect();
        (
            crate::train::auc(&adaptive, &labels),
            crate::train::auc(&offline, &labels),
        )
    }

    /// The current point of the learning curve.
    pub fn point(&self) -> CurvePoint {
        let (a, o) = self.auc();
        CurvePoint {
            decisions: self.decisions,
            auc_adaptive: a,
            auc_offline: o,
            cumulative_regret: self.regret,
        }
    }

    /// Runs `n` decisions, recording a point every `every`.
    pub fn run(&mut self, n: u64, every: u64) -> Vec<CurvePoint> {
        let mut curve = vec![self.point()];
        for k in 1..=n {
            self.step();
            if k % every.max(1) == 0 {
                curve.push(self.point());
            }
        }
        curve
    }
}

/// The learning curve as CSV.
pub fn curve_csv(curve: &[CurvePoint]) -> String {
    let mut s = String::from("decisions,auc_adaptive,auc_offline,cumulative_regret_cny\n");
    for p in curve {
        s.push_str(&format!(
            "{},{:.5},{:.5},{:.2}\n",
            p.decisions, p.auc_adaptive, p.auc_offline, p.cumulative_regret
        ));
    }
    s
}

/// The learning curve as a hand-written SVG: AUC (left) and cumulative
/// regret (right), against decisions.
pub fn curve_svg(curve: &[CurvePoint], title: &str) -> String {
    let (w, h, pad) = (960.0, 400.0, 60.0);
    let panel = (w - 3.0 * pad) / 2.0;
    let max_x = curve.iter().map(|p| p.decisions).max().unwrap_or(1).max(1) as f64;
    let auc_lo = curve
        .iter()
        .flat_map(|p| [p.auc_adaptive, p.auc_offline])
        .fold(1.0f64, f64::min)
        .min(0.5);
    let max_r = curve
        .iter()
        .map(|p| p.cumulative_regret)
        .fold(1.0f64, f64::max);
    let x_of = |left: f64, d: u64| left + d as f64 / max_x * panel;
    let y_of = |v: f64, lo: f64, hi: f64| pad + (1.0 - (v - lo) / (hi - lo)) * (h - 2.0 * pad);
    let line = |left: f64, f: &dyn Fn(&CurvePoint) -> f64, lo: f64, hi: f64| {
        curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", x_of(left, p.decisions), y_of(f(p), lo, hi)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        xml_escape(title)
    );
    for (left, label) in [
        (pad, "held-out AUC"),
        (2.0 * pad + panel, "cumulative regret, CNY"),
    ] {
        s.push_str(&format!(
            "<rect x=\"{left}\" y=\"{pad}\" width=\"{panel}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">decisions (0 to {})</text>\n",
            h - 2.0 * pad,
            left + panel / 2.0,
            pad - 8.0,
            left + panel / 2.0,
            h - pad + 20.0,
            max_x as u64
        ));
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.2}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.2}</text>\n",
        pad - 4.0, pad + 4.0, 1.0, pad - 4.0, h - pad, auc_lo
    ));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text>\n",
        2.0 * pad + panel - 4.0 + 0.0,
        pad + 4.0,
        max_r
    ));
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(pad, &|p| p.auc_adaptive, auc_lo, 1.0)
    ));
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-dasharray=\"6 4\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(pad, &|p| p.auc_offline, auc_lo, 1.0)
    ));
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(2.0 * pad + panel, &|p| p.cumulative_regret, 0.0, max_r)
    ));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">adaptive models (cold start)</text>\n\
         <text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">offline model (propensity-lr-v1)</text>\n</svg>\n",
        pad + 10.0,
        h - pad - 30.0,
        pad + 10.0,
        h - pad - 14.0
    ));
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
