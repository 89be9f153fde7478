//! offer-engine: a real-time next-best-offer engine for airline loyalty
//! programmes.
//!
//! # Layout
//! The workspace holds three crates and this one:
//! - `offer-engine-core` (`crates/core`): the pure decision core, re-exported
//!   here: [`domain`] (and [`airports`]), [`catalog`], [`features`],
//!   [`model`], [`policy`], [`posterior`], [`decision`], [`experiments`],
//!   [`stats`], [`ope`], [`reasons`], [`records`], [`events`], [`tokens`], [`privacy`],
//!   [`parse`], [`render`], [`synth`], [`train`]. No I/O, clock, runtime or
//!   unseeded randomness: the compiler keeps it so.
//! - `offer-engine-wal` (`crates/wal`): the embedded write-ahead log (group
//!   commit, snapshots, recovery).
//! - `load-tests`: the load generator and its report.
//!
//! This crate, the server, in layers:
//! - [`state`]: the mutable maps behind intent-named methods (members,
//!   ledger, learner, experiment attribution) and the one deterministic
//!   `apply` of a log record; the state digest.
//! - [`durable`]: the one commit path: a record is appended to the log
//!   (behind the [`durable::EventLog`] trait), then applied in log order;
//!   replay at start.
//! - [`service`]: the use cases, one file each (checkout, outcomes, members,
//!   campaigns, reload) and the per-member gate checkout and campaigns share.
//! - Adapters that only translate: [`http`] (actix-web routes, the one API
//!   error type, auth and limits middleware, OpenAPI), [`cli`] (one file per
//!   command), [`metrics`] (Prometheus, bounded labels; the commit path's
//!   observer), [`logs`] (reading a stopped engine's log offline),
//!   [`telemetry`].
//! - Wiring: [`config`] (layered settings), [`auth`] (keys, scopes, rate
//!   limits), [`startup`] (building and running the service).
//! - [`learnsim`]: closed-loop learning simulation against the synthetic
//!   world (tests and benches).
//!
//! # Direction of dependencies
//! ```text
//! core ◄── state ◄── durable ◄── service ◄── http, cli ◄── startup (server)
//!   ▲                                          │
//!   └─────────── metrics, config, auth ◄───────┘
//! ```
//! A module never imports from a layer to its right.
//!
//! # Data flow
//! ```text
//! checkout ─► http (parse) ─► service::checkout ─► core::decide (pure) ─► render
//!                                 │     ▲
//!                                 │     └── state: members, ledger, learner (read)
//!                                 └─► commit(decision) ─► log ─► apply ─► state
//! outcomes, member writes ─► http ─► service ─► commit(record) ─► log ─► apply
//! campaigns ─► service::campaigns ─► the same per-member gate, in blocks ─► NDJSON/CSV
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
    privacy, reasons, records, render, stats, synth, tokens, train,
};

pub mod auth;
pub mod durable;
pub mod service;
pub mod state;
