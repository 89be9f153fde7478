//! offer-engine: a real-time next-best-offer engine for airline loyalty
//! programmes.
//!
//! # Layout
//! The decision core is pure (no I/O, no clock, no randomness):
//! - [`domain`]: tiers, channels, cabins, airports, members, requests.
//! - [`airports`]: the airport table (country, coordinates).
//! - [`catalog`]: offers and the one eligibility rule.
//! - [`features`]: member + context → feature vector; RFM/CLV segmentation.
//! - [`model`]: propensity models aligned with the catalog for scoring.
//! - [`decision`]: eligibility → scoring → arbitration → reasons.
//!
//! Around it, thin adapters:
//! - [`parse`]: JSON requests into domain types, errors naming the field.
//! - [`store`]: members in a concurrent map; the NDJSON reader.
//! - [`http`]: actix-web routes and the one API error type.
//! - [`metrics`]: Prometheus metrics with bounded labels.
//! - [`startup`], [`config`], [`telemetry`], [`cli`]: wiring.
//! - [`auth`], [`tokens`], [`privacy`]: API keys and scopes, signed offer
//!   tokens, pseudonymised member ids in logs (pure; the middleware is in
//!   `http::auth` and `http::limits`).
//!
//! And the synthetic world used by tests, simulations and training:
//! [`synth`] (population, itineraries, hidden ground truth) and [`train`].
//!
//! Off-policy evaluation of candidate policies on logged feedback:
//! [`ope`] (pure estimators) and [`evaluate_cli`] (`offer-engine evaluate`).
//!
//! # Data flow
//! ```text
//! POST /v1/offers ─► parse ─► decide(engine, member, itinerary) ─► JSON
//!                               ▲            ▲
//!            MemberStore ───────┘            └── ArcSwap<Engine> (catalog + model)
//! ```

pub mod cli;
pub mod config;
pub mod http;
pub mod learnsim;
pub mod logs;
pub mod metrics;
pub mod startup;
pub mod telemetry;

pub use offer_engine_core::domain::airports;
pub use offer_engine_core::{
    catalog, decision, domain, events, experiments, features, model, ope, parse, policy, posterior,
    privacy, records, render, stats, synth, tokens, train,
};

pub mod auth;
pub mod durable;
pub mod service;
pub mod state;
