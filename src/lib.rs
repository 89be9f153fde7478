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

pub mod airports;
pub mod campaign;
pub mod campaign_cli;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod decision;
pub mod domain;
pub mod durable;
pub mod evaluate_cli;
pub mod events;
pub mod experiments;
pub mod expiring;
pub mod features;
pub mod http;
pub mod learnsim;
pub mod ledger;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod online;
pub mod ope;
pub mod parse;
pub mod reload;
pub mod render;
pub mod startup;
pub mod state;
pub mod stats;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod train;

pub mod auth;
pub mod privacy;
pub mod tokens;
