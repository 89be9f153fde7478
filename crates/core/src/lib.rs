//! offer-engine-core: the pure decision core of offer-engine.
//!
//! Nothing here does I/O, reads a clock, draws an unseeded random number or
//! holds shared mutable state: time, ids and seeds come in as arguments, so
//! every function gives the same answer for the same inputs on every machine.
//! The compiler keeps it so: this crate's dependencies include no async
//! runtime, web framework, concurrent map, metrics library, id generator, nor
//! chrono's clock (`.ci/run` checks the dependency tree and builds the crate
//! alone).
//!
//! # Layout
//! - [`domain`]: tiers, channels, cabins, members, itineraries, money, field
//!   errors; [`domain::airports`] the airport table.
//! - [`catalog`]: offers and the one eligibility rule.
//! - [`features`]: member + context → feature vector; RFM/CLV segmentation.
//! - [`model`]: propensity models aligned with the catalog for scoring.
//! - [`policy`]: ranking and exploration (seeded slot-by-slot selection).
//! - [`posterior`]: the adaptive models' Bayesian posterior maths.
//! - [`decision`]: eligibility → scoring → arbitration → reasons, one function.
//! - [`experiments`]: specs, the assignment hash, the report from aggregates.
//! - [`stats`]: tests, intervals, sequential p-values; [`ope`]: off-policy
//!   estimators.
//! - [`records`]: decisions as issued and inventory keys;
//!   [`events`]: outcome and member events, their checked forms and how a
//!   member change applies to a member.
//! - [`reasons`]: the structured reasons behind an offer and their sentences
//!   (English, Simplified Chinese).
//! - [`tokens`], [`privacy`]: signed offer tokens, pseudonymised member ids.
//! - [`parse`], [`render`]: requests into domain types (errors naming the
//!   field), decisions into their wire form.
//! - [`synth`], [`train`]: the synthetic world (population, trips, hidden
//!   ground truth) and offline training.
//!
//! # Direction of dependencies
//! `domain` ← `catalog`, `features` ← `model`, `policy`, `posterior` ←
//! `decision`, `experiments` ← `records`, `events` ← `render`, `parse`.
//! The server crate (`offer_engine`) builds on this one: core ← state ←
//! durable ← service ← http/cli ← server.

pub mod catalog;
pub mod decision;
pub mod domain;
pub mod events;
pub mod experiments;
pub mod features;
pub mod model;
pub mod ope;
pub mod parse;
pub mod policy;
pub mod posterior;
pub mod privacy;
pub mod reasons;
pub mod records;
pub mod render;
pub mod stats;
pub mod synth;
pub mod tokens;
pub mod train;
