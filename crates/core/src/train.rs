//! Training the shipped propensity model on a simulated history.
//!
//! The simulation draws members from the synthetic population, gives each a
//! plausible trip and channel, shows every eligible offer (a uniform logging
//! policy, so there is no selection bias to correct), and draws accepts from
//! the hidden [`GroundTruth`]. One L2-regularised logistic regression per
//! offer is fitted by Newton's method (IRLS) with `ndarray`; a pooled fit per
//! category is the fallback for new offers. Held-out metrics are measured
//! against both the observed outcomes and the true probabilities.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeZone, Utc};
use ndarray::{Array1, Array2, Axis};
use rand::Rng;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::domain::{Category, TierThresholds};
use crate::features::{FEATURE_NAMES, N_FEATURES};
use crate::model::{Coefficients, ModelFile};
use crate::synth::{self, GroundTruth};

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Seed of the synthetic world (population and ground truth).
    pub seed: u64,
    /// Members in the simulated population.
    pub members: u64,
    /// Simulated decisions.
    pub decisions: u64,
    /// Share of decisions held out for evaluation.
    pub holdout: f64,
    /// L2 penalty.
    pub l2: f64,
    /// Simulation start date.
    pub as_of: NaiveDate,
    /// Model version string.
    pub version: String,
}

/// One row of training data.
struct Row {
    x: [f32; N_FEATURES],
    y: bool,
    truth: f64,
}

/// Held-out metrics of one offer (or of all pooled).
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Held-out rows.
    pub rows: usize,
    /// Observed accept rate.
    pub accept_rate: f64,
    /// AUC of the model against observed accepts.
    pub auc: f64,
    /// AUC of the true probabilities against the same accepts (the ceiling).
    pub truth_auc: f64,
    /// Mean log loss.
    pub log_loss: f64,
    /// Mean absolute error of predicted vs true probability.
    pub mae_vs_truth: f64,
}

/// One calibration bin (deciles of predicted probability).
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBin {
    /// Rows in the bin.
    pub rows: usize,
    /// Mean predicted probability.
    pub predicted: f64,
    /// Observed accept rate.
    pub observed: f64,
    /// Mean true probability.
    pub truth: f64,
}

/// What training produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The model version.
    pub version: String,
    /// Training rows.
    pub train_rows: usize,
    /// Pooled held-out metrics.
    pub pooled: Metrics,
    /// Per offer.
    pub per_offer: BTreeMap<String, Metrics>,
    /// Calibration of pooled held-out predictions.
    pub calibration: Vec<CalibrationBin>,
}

/// Area under the ROC curve by the rank-sum formula, ties averaged.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (mut rank_sum, mut pos, mut neg) = (0.0, 0usize, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            if labels[*k] {
                rank_sum += avg_rank;
                pos += 1;
            } else {
                neg += 1;
            }
        }
        i = j + 1;
    }
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

/// Solves `a x = b` for symmetric positive definite `a` by Cholesky.
fn cholesky_solve(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let n = b.len();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[[i, i]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[[i, k]] * y[k];
        }
        y[i] = s / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[[k, i]] * x[k];
        }
        x[i] = s / l[[i, i]];
    }
    Some(x)
}

/// Fits an L2-regularised logistic regression (intercept unpenalised) by IRLS.
fn fit_logistic(rows: &[&Row], l2: f64) -> Coefficients {
    let n = rows.len();
    let d = N_FEATURES + 1;
    let mut x = Array2::<f64>::zeros((n, d));
    let mut y = Array1::<f64>::zeros(n);
    for (i, r) in rows.iter().enumerate() {
        x[[i, 0]] = 1.0;
        for j in 0..N_FEATURES {
            x[[i, j + 1]] = r.x[j] as f64;
        }
        y[i] = r.y as u8 as f64;
    }
    let rate = (y.sum() + 0.5) / (n as f64 + 1.0);
    let mut beta = Array1::<f64>::zeros(d);
    beta[0] = (rate / (1.0 - rate)).ln();
    for _ in 0..25 {
        let z = x.dot(&beta);
        let p = z.mapv(|v| 1.0 / (1.0 + (-v).exp()));
        let w = p.mapv(|v| (v * (1.0 - v)).max(1e-9));
        let xw = &x * &w.view().insert_axis(Axis(1));
        let mut h = x.t().dot(&xw);
        let mut g = x.t().dot(&(&y - &p));
        for j in 1..d {
            h[[j, j]] += l2;
            g[j] -= l2 * beta[j];
        }
        h[[0, 0]] += 1e-6;
        let Some(step) = cholesky_solve(&h, &g) else {
            break;
        };
        beta = &beta + &step;
        if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-7 {
            break;
        }
    }
    Coefficients {
        bias: beta[0],
        weights: beta.iter().skip(1).copied().collect(),
    }
}

fn predict(c: &Coefficients, x: &[f32; N_FEATURES]) -> f64 {
    let z = c.bias
        + c.weights
            .iter()
            .zip(x)
            .map(|(w, v)| w * *v as f64)
            .sum::<f64>();
    1.0 / (1.0 + (-z).exp())
}

fn metrics(preds: &[f64], rows: &[&Row]) -> Metrics {
    let labels: Vec<bool> = rows.iter().map(|r| r.y).collect();
    let truth: Vec<f64> = rows.iter().map(|r| r.truth).collect();
    let n = rows.len().max(1) as f64;
    let ll = preds
        .iter()
        .zip(&labels)
        .map(|(p, y)| {
            let p = p.clamp(1e-12, 1.0 - 1e-12);
            if *y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n;
    // Real logs have no ground truth (NaN): its columns are then NaN too.
    let known = truth.iter().all(|t| t.is_finite());
    Metrics {
        rows: rows.len(),
        accept_rate: labels.iter().filter(|y| **y).count() as f64 / n,
        auc: auc(preds, &labels),
        truth_auc: if known {
            auc(&truth, &labels)
        } else {
            f64::NAN
        },
        log_loss: ll,
        mae_vs_truth: if known {
            preds
                .iter()
                .zip(&truth)
                .map(|(p, t)| (p - t).abs())
                .sum::<f64>()
                / n
        } else {
            f64::NAN
        },
    }
}

/// Simulates a history and fits the model. Returns the model file and report.
pub fn train(cfg: &TrainConfig, catalog: &Catalog) -> (ModelFile, TrainReport) {
    let th = TierThresholds::default();
    let truth = GroundTruth::new(cfg.seed);
    let members: Vec<_> = (0..cfg.members)
        .map(|i| synth::member(cfg.seed, i, cfg.as_of, &th))
        .collect();
    let mut rng = synth::stream_rng(cfg.seed ^ 0x7472_6169_6e00, u64::MAX);
    let start = Utc.from_utc_datetime(&cfg.as_of.and_hms_opt(6, 0, 0).unwrap_or_default());
    let n_offers = catalog.offers.len();
    let mut train_rows: Vec<Vec<Row>> = (0..n_offers).map(|_| Vec::new()).collect();
    let mut test_rows: Vec<Vec<Row>> = (0..n_offers).map(|_| Vec::new()).collect();
    for _ in 0..cfg.decisions {
        let c = synth::Checkout::draw(&mut rng, &members, start, 60 * 24 * 28, &th);
        let (m, it, channel, now, x) = (c.member, &c.itinerary, c.channel, c.now, c.x);
        let ectx = c.eligibility(&th);
        let held_out = rng.gen_bool(cfg.holdout);
        for (i, offer) in catalog.offers.iter().enumerate() {
            if offer.eligible(&ectx).is_err() {
                continue;
            }
            let p = truth.probability(offer, Some(m), Some(it), channel, now, &th);
            let row = Row {
                x,
                y: rng.gen_bool(p),
                truth: p,
            };
            if held_out {
                test_rows[i].push(row);
            } else {
                train_rows[i].push(row);
            }
        }
    }
    let training = serde_json::json!({
        "seed": cfg.seed,
        "members": cfg.members,
        "decisions": cfg.decisions,
        "holdout": cfg.holdout,
        "l2": cfg.l2,
        "as_of": cfg.as_of.to_string(),
    });
    fit_model(
        &train_rows,
        &test_rows,
        catalog,
        cfg.l2,
        &cfg.version,
        training,
    )
}

/// One example read from the engine's own logs: an offer shown in a decision.
#[derive(Debug, Clone)]
pub struct LoggedExample {
    /// Index of the offer in the catalog trained for.
    pub offer: usize,
    /// The features the decision was scored on.
    pub x: [f32; N_FEATURES],
    /// Whether the member accepted it.
    pub accepted: bool,
    /// Held out for evaluation (chosen by the caller, e.g. by decision id).
    pub held_out: bool,
}

/// Fits the model from logged examples. There is no ground truth in real
/// logs, so the truth columns of the report are NaN (null in JSON).
pub fn train_from_examples(
    examples: &[LoggedExample],
    catalog: &Catalog,
    l2: f64,
    version: &str,
    training: serde_json::Value,
) -> (ModelFile, TrainReport) {
    let n_offers = catalog.offers.len();
    let mut train_rows: Vec<Vec<Row>> = (0..n_offers).map(|_| Vec::new()).collect();
    let mut test_rows: Vec<Vec<Row>> = (0..n_offers).map(|_| Vec::new()).collect();
    for e in examples.iter().filter(|e| e.offer < n_offers) {
        let row = Row {
            x: e.x,
            y: e.accepted,
            truth: f64::NAN,
        };
        if e.held_out {
            test_rows[e.offer].push(row);
        } else {
            train_rows[e.offer].push(row);
        }
    }
    fit_model(&train_rows, &test_rows, catalog, l2, version, training)
}

/// Fits one model per offer with enough rows (and per category), evaluates
/// on the held-out rows, and records `training` plus the held-out figures in
/// the model file.
fn fit_model(
    train_rows: &[Vec<Row>],
    test_rows: &[Vec<Row>],
    catalog: &Catalog,
    l2: f64,
    version: &str,
    mut training: serde_json::Value,
) -> (ModelFile, TrainReport) {
    let mut offers = BTreeMap::new();
    let mut per_offer = BTreeMap::new();
    let (mut all_preds, mut all_rows): (Vec<f64>, Vec<&Row>) = (Vec::new(), Vec::new());
    for (i, offer) in catalog.offers.iter().enumerate() {
        let rows: Vec<&Row> = train_rows[i].iter().collect();
        if rows.len() < 200 {
            tracing::warn!(offer = %offer.id, rows = rows.len(), "too few rows; offer falls back to its category");
            continue;
        }
        let c = fit_logistic(&rows, l2);
        let test: Vec<&Row> = test_rows[i].iter().collect();
        let preds: Vec<f64> = test.iter().map(|r| predict(&c, &r.x)).collect();
        per_offer.insert(offer.id.clone(), metrics(&preds, &test));
        all_preds.extend(&preds);
        all_rows.extend(test);
        offers.insert(offer.id.clone(), c);
    }
    let mut categories = BTreeMap::new();
    for cat in Category::ALL {
        let rows: Vec<&Row> = catalog
            .offers
            .iter()
            .enumerate()
            .filter(|(_, o)| o.category == cat)
            .flat_map(|(i, _)| train_rows[i].iter())
            .collect();
        if rows.len() >= 200 {
            categories.insert(cat, fit_logistic(&rows, l2));
        }
    }
    let pooled = metrics(&all_preds, &all_rows);
    let mut order: Vec<usize> = (0..all_preds.len()).collect();
    order.sort_by(|a, b| all_preds[*a].total_cmp(&all_preds[*b]));
    let calibration = order
        .chunks(order.len().div_ceil(10).max(1))
        .map(|c| {
            let k = c.len() as f64;
            CalibrationBin {
                rows: c.len(),
                predicted: c.iter().map(|i| all_preds[*i]).sum::<f64>() / k,
                observed: c.iter().filter(|i| all_rows[**i].y).count() as f64 / k,
                truth: c.iter().map(|i| all_rows[*i].truth).sum::<f64>() / k,
            }
        })
        .collect();
    let report = TrainReport {
        version: version.to_string(),
        train_rows: train_rows.iter().map(|r| r.len()).sum(),
        pooled,
        per_offer,
        calibration,
    };
    let model = ModelFile {
        version: version.to_string(),
        kind: "logistic_regression".into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        offers,
        categories,
        training: {
            if let Some(t) = training.as_object_mut() {
                t.insert("catalog_version".into(), catalog.version.clone().into());
                t.insert("heldout_auc".into(), report.pooled.auc.into());
                t.insert("heldout_truth_auc".into(), report.pooled.truth_auc.into());
                t.insert("heldout_log_loss".into(), report.pooled.log_loss.into());
                t.insert(
                    "heldout_mae_vs_truth".into(),
                    report.pooled.mae_vs_truth.into(),
                );
            }
            training
        },
    };
    (model, report)
}

/// Renders the model card (Markdown).
pub fn model_card(cfg: &TrainConfig, report: &TrainReport, command: &str) -> String {
    let data = format!(
        "Simulated history only (no real member data): {} synthetic members (seed {}), {} simulated decisions \
         starting {}, every eligible offer shown (uniform logging policy), accepts drawn from the synthetic \
         world's hidden ground-truth response model. {:.0}% of decisions held out. {} training rows; L2 penalty {}.",
        cfg.members,
        cfg.seed,
        cfg.decisions,
        cfg.as_of,
        cfg.holdout * 100.0,
        report.train_rows,
        cfg.l2,
    );
    let limits = "Ranking offers at checkout and in campaigns by expected value. The ground truth is synthetic: these \
         figures say how well the model recovers a known response model, not how real members behave. \
         Retrain on the engine's own decision and outcome logs (`train --data-dir`) before trusting it with real traffic. \
         Features are listed in the model file; the engine refuses a model whose features differ from its own.";
    render_card(report, &data, limits, command)
}

/// The model card of a model trained on the engine's own logs.
pub fn model_card_from_logs(report: &TrainReport, data: &str, command: &str) -> String {
    let limits = "Ranking offers at checkout and in campaigns by expected value. Trained on the offers the \
         logging policy chose to show (not on every eligible offer), without importance weighting: offers \
         the policy rarely showed have few rows, and their estimates lean on the category model. There is no \
         ground truth in real logs, so the truth columns are n/a; judge the model by held-out AUC, log loss \
         and calibration, and before swapping it in, run it as the challenger variant of an experiment or \
         through `offer-engine evaluate --model`.";
    render_card(report, data, limits, command)
}

/// Four decimals, or n/a for a figure that does not exist (no ground truth).
fn f4(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "n/a".into()
    }
}

fn render_card(report: &TrainReport, data: &str, limits: &str, command: &str) -> String {
    let mut s = String::new();
    let p = &report.pooled;
    s.push_str(&format!(
        "# Model card: `{}`\n\n\
         Per-offer logistic regression giving the propensity that a member accepts an offer.\n\
         Generated by `offer-engine train`; do not edit by hand.\n\n\
         ## How to reproduce\n\n```sh\n{command}\n```\n\n\
         ## Training data\n\n{data}\n\n\
         ## Held-out results (all offers pooled)\n\n\
         | metric | model | ground truth (ceiling) |\n|---|---|---|\n\
         | AUC against observed accepts | {:.4} | {} |\n\
         | log loss | {:.4} | |\n\
         | mean absolute error of p vs true p | {} | 0 |\n\
         | accept rate | {:.4} | |\n| rows | {} | |\n\n",
        report.version,
        p.auc,
        f4(p.truth_auc),
        p.log_loss,
        f4(p.mae_vs_truth),
        p.accept_rate,
        p.rows
    ));
    s.push_str("## Calibration (held-out deciles of predicted propensity)\n\n| rows | mean predicted | observed rate | mean true p |\n|---|---|---|---|\n");
    for b in &report.calibration {
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {} |\n",
            b.rows,
            b.predicted,
            b.observed,
            f4(b.truth)
        ));
    }
    s.push_str("\n## Per offer (held out)\n\n| offer | rows | accept rate | AUC | truth AUC | MAE vs truth |\n|---|---|---|---|---|---|\n");
    for (id, m) in &report.per_offer {
        s.push_str(&format!(
            "| {id} | {} | {:.4} | {:.4} | {} | {} |\n",
            m.rows,
            m.accept_rate,
            m.auc,
            f4(m.truth_auc),
            f4(m.mae_vs_truth)
        ));
    }
    s.push_str(&format!("\n## Intended use and limits\n\n{limits}\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
    }

    #[test]
    fn small_training_run_beats_chance_and_is_calibrated() {
        let cfg = TrainConfig {
            seed: 11,
            members: 5_000,
            decisions: 20_000,
            holdout: 0.25,
            l2: 1.0,
            as_of: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            version: "test".into(),
        };
        let (model, report) = train(&cfg, &Catalog::default_catalog());
        assert!(report.pooled.auc > 0.65, "{:?}", report.pooled);
        assert!(
            report.pooled.truth_auc - report.pooled.auc < 0.05,
            "{:?}",
            report.pooled
        );
        assert!(report.pooled.mae_vs_truth < 0.03, "{:?}", report.pooled);
        let text = serde_json::to_string(&model).unwrap();
        ModelFile::from_json(&text).unwrap();
    }
}
