//! Propensity models: one logistic regression per offer (with a per-category
//! fallback for offers the model has not seen), stored as JSON in `models/`.
//!
//! [`ScoringTable`] aligns a model with a catalog once, when either is
//! loaded, so that a decision scores offer `i` of the catalog with row `i` of
//! an `ndarray` matrix and never looks anything up by name on the hot path.

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::domain::Category;
use crate::features::{FeatureVector, FEATURE_NAMES, N_FEATURES};

/// Errors loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Not valid model JSON.
    #[error("model does not parse: {0}")]
    Parse(String),
    /// Trained on other features than this build computes.
    #[error("model features differ from this engine's: {0}")]
    Features(String),
    /// A coefficient is wrong.
    #[error("model coefficients for {0:?} are invalid (wrong length or not finite)")]
    Coefficients(String),
}

/// Coefficients of one logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// Intercept.
    pub bias: f64,
    /// One weight per feature, in [`FEATURE_NAMES`] order.
    pub weights: Vec<f64>,
}

/// A model file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    /// Version string returned as `model_version` in every decision.
    pub version: String,
    /// Always `"logistic_regression"` for now.
    pub kind: String,
    /// Feature names the model was trained on.
    pub features: Vec<String>,
    /// Per-offer coefficients.
    pub offers: BTreeMap<String, Coefficients>,
    /// Per-category fallback for offers without their own coefficients.
    pub categories: BTreeMap<Category, Coefficients>,
    /// Free-form training metadata (seed, sizes, metrics).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// The model shipped with the engine, compiled in.
pub const DEFAULT_MODEL: &str = include_str!("../../../models/propensity-lr-v1.json");

impl ModelFile {
    /// Parses and checks a model file.
    pub fn from_json(text: &str) -> Result<ModelFile, ModelError> {
        let m: ModelFile =
            serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        if m.kind != "logistic_regression" {
            return Err(ModelError::Parse(format!(
                "unknown model kind {:?}",
                m.kind
            )));
        }
        if m.features.len() != N_FEATURES
            || m.features.iter().zip(FEATURE_NAMES).any(|(a, b)| a != b)
        {
            return Err(ModelError::Features(format!(
                "model has {:?}, engine computes {:?}",
                m.features, FEATURE_NAMES
            )));
        }
        for (name, c) in m.offers.iter().map(|(k, v)| (k.clone(), v)).chain(
            m.categories
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v)),
        ) {
            if c.weights.len() != N_FEATURES
                || !c.bias.is_finite()
                || c.weights.iter().any(|w| !w.is_finite())
            {
                return Err(ModelError::Coefficients(name));
            }
        }
        Ok(m)
    }

    /// The compiled-in model.
    pub fn default_model() -> ModelFile {
        // Checked by a unit test; failing here is a build defect.
        ModelFile::from_json(DEFAULT_MODEL).expect("default model parses (tested)")
    }
}

/// Where a catalog offer's coefficients came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoefficientSource {
    /// The offer's own.
    Offer,
    /// Its category's fallback.
    Category,
    /// Neither: a flat prior (propensity 1%).
    Prior,
}

/// A model aligned with a catalog: row `i` scores catalog offer `i`.
#[derive(Debug, Clone)]
pub struct ScoringTable {
    /// Model version.
    pub version: String,
    /// Weights, one row per catalog offer.
    pub weights: Array2<f32>,
    /// Intercepts, one per catalog offer.
    pub bias: Array1<f32>,
    /// Where each row came from.
    pub sources: Vec<CoefficientSource>,
}

/// Logistic function.
#[inline]
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl ScoringTable {
    /// Aligns `model` with `catalog`.
    pub fn new(model: &ModelFile, catalog: &Catalog) -> ScoringTable {
        let n = catalog.offers.len();
        let mut weights = Array2::<f32>::zeros((n, N_FEATURES));
        let mut bias = Array1::<f32>::zeros(n);
        let mut sources = Vec::with_capacity(n);
        for (i, offer) in catalog.offers.iter().enumerate() {
            let (c, src) = match model.offers.get(&offer.id) {
                Some(c) => (Some(c), CoefficientSource::Offer),
                None => match model.categories.get(&offer.category) {
                    Some(c) => (Some(c), CoefficientSource::Category),
                    None => (None, CoefficientSource::Prior),
                },
            };
            match c {
                Some(c) => {
                    bias[i] = c.bias as f32;
                    for (j, w) in c.weights.iter().enumerate() {
                        weights[[i, j]] = *w as f32;
                    }
                }
                // ln(0.01 / 0.99)
                None => bias[i] = -4.595,
            }
            sources.push(src);
        }
        ScoringTable {
            version: model.version.clone(),
            weights,
            bias,
            sources,
        }
    }

    /// Propensity of catalog offer `i` for features `x`.
    #[inline]
    pub fn propensity(&self, i: usize, x: &FeatureVector) -> f32 {
        let row = self.weights.row(i);
        let xv = ArrayView1::from(&x[..]);
        sigmoid(self.bias[i] + row.dot(&xv))
    }

    /// Propensities of every offer for a block of feature rows
    /// (rows x N_FEATURES), as one matrix product: rows x offers.
    pub fn propensity_matrix(&self, features: &Array2<f32>) -> Array2<f32> {
        let mut z = features.dot(&self.weights.t());
        for mut row in z.rows_mut() {
            for (v, b) in row.iter_mut().zip(self.bias.iter()) {
                *v = sigmoid(*v + *b);
            }
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_parses_and_covers_the_default_catalog() {
        let m = ModelFile::default_model();
        let c = Catalog::default_catalog();
        let t = ScoringTable::new(&m, &c);
        // Offers with too little simulated traffic (a seasonal offer outside the
        // simulated weeks, rarely eligible retention offers) use their category's fit.
        assert!(t.sources.iter().all(|s| *s != CoefficientSource::Prior));
        let own = t
            .sources
            .iter()
            .filter(|s| **s == CoefficientSource::Offer)
            .count();
        assert!(
            own * 10 >= t.sources.len() * 8,
            "{own} of {}",
            t.sources.len()
        );
    }

    #[test]
    fn matrix_and_single_scoring_agree() {
        let m = ModelFile::default_model();
        let c = Catalog::default_catalog();
        let t = ScoringTable::new(&m, &c);
        let mut x = [0f32; N_FEATURES];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin();
        }
        let mat = Array2::from_shape_vec((1, N_FEATURES), x.to_vec()).unwrap();
        let p = t.propensity_matrix(&mat);
        for i in 0..c.offers.len() {
            assert!((p[[0, i]] - t.propensity(i, &x)).abs() < 1e-5);
        }
    }

    #[test]
    fn wrong_features_are_refused() {
        let mut m = ModelFile::default_model();
        m.features.swap(0, 1);
        let text = serde_json::to_string(&m).unwrap();
        assert!(matches!(
            ModelFile::from_json(&text),
            Err(ModelError::Features(_))
        ));
    }
}
