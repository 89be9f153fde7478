//! Prometheus metrics. Labels are bounded: route templates (never raw
//! paths), methods, status codes, offer ids and categories from the catalog,
//! channels. Member ids never appear in a label.

use std::collections::HashMap;

use arc_swap::ArcSwap;
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Sub-millisecond buckets for the in-process decision, seconds.
pub const DECISION_BUCKETS: &[f64] = &[
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01,
];

/// Buckets for whole HTTP requests, seconds.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Every metric the service exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Requests by route template, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency by route template.
    pub http_duration: HistogramVec,
    /// In-process decision latency by channel.
    pub decision_duration: HistogramVec,
    /// Decisions by channel and cold start.
    pub decisions: IntCounterVec,
    /// Offers served by offer id and category.
    pub offers_served: IntCounterVec,
    /// Members in memory.
    pub members: IntGauge,
    /// Outcome events applied, by offer id and type.
    pub outcome_events: IntCounterVec,
    /// Revenue of accepted offers, by offer id (quoted currency, CNY in the default catalog).
    pub accepted_revenue: CounterVec,
    /// Value to the airline of accepted offers (net of points given away), by offer id, CNY.
    pub accepted_value: CounterVec,
    /// Value given back by refunds, by offer id, CNY.
    pub refunded_value: CounterVec,
    /// Member updates applied, by kind.
    pub member_updates: IntCounterVec,
    /// Checkout decisions answered with the fallback, by reason
    /// (`deadline`, `scoring_failed`).
    pub fallbacks: IntCounterVec,
    /// Writes the event log refused, by kind of record.
    pub log_errors: IntCounterVec,
    /// Cluster mode: seconds from a publish to JetStream's acknowledgement
    /// (retries included).
    pub cluster_publish: prometheus::Histogram,
    /// Cluster mode: records the stream holds that this replica has not applied.
    pub cluster_lag: IntGauge,
    /// Cluster mode: the last stream sequence applied here.
    pub cluster_applied_sequence: IntGauge,
    /// Cluster mode: records applied from the stream (its rate is the apply rate).
    pub cluster_applied: prometheus::IntCounter,
    /// Cluster mode: 1 while NATS answers, 0 while not.
    pub cluster_nats_reachable: IntGauge,
    /// Cluster mode: snapshots shared through the object store, by
    /// `direction` (`upload`, `download`).
    pub cluster_shared_snapshots: IntCounterVec,
    /// Cluster mode: the sequence of the newest shared snapshot.
    pub cluster_shared_snapshot_sequence: IntGauge,
    /// Cluster mode: the stream's first sequence (older records purged).
    pub cluster_stream_first_sequence: IntGauge,
    /// Cluster mode: staleness and the decision outbox.
    pub cluster_faults: ClusterFaultMetrics,
    /// Catalog/model/experiments reloads by trigger (`admin`, `watch`) and result (`ok`, `refused`).
    pub reloads: IntCounterVec,
    /// Requests with an `Idempotency-Key`, by route template and outcome
    /// (`first`, `replayed`, `key_reused`).
    pub idempotent_requests: IntCounterVec,
    /// Decisions made in experiments.
    pub experiment_decisions: IntCounterVec,
    /// Members exposed for the first time.
    pub experiment_members: IntCounterVec,
    /// Members converting for the first time.
    pub experiment_conversions: IntCounterVec,
    /// Accepted revenue attributed to experiment variants.
    pub experiment_revenue: CounterVec,
    /// Sample-ratio-mismatch p-value, refreshed at each scrape.
    pub experiment_srm_p_value: GaugeVec,
    /// Conversion p-value against the control, refreshed at each scrape.
    pub experiment_conversion_p_value: GaugeVec,
    /// Absolute conversion lift against the control, refreshed at each scrape.
    pub experiment_conversion_lift: GaugeVec,
    /// Guardrail status per variant and metric (0 ok, 1 warning, 2
    /// failing), refreshed at each scrape.
    pub experiment_guardrail_status: GaugeVec,
    /// The checkout's series resolved once: a label lookup hashes its
    /// values and takes a lock, about 2,900 instructions a checkout when
    /// done per offer served (callgrind).
    hot: std::sync::Arc<HotSeries>,
}

/// Label handles the checkout uses, resolved ahead of time.
struct HotSeries {
    /// `decisions_total` by channel index, then cold start (0, 1).
    decisions: Vec<[IntCounter; 2]>,
    /// `decision_duration_seconds` by channel index.
    duration: Vec<Histogram>,
    /// `offers_served_total` by catalog index, for the catalog it was made for.
    served: ArcSwap<ServedSeries>,
    /// `http_requests_total` and `http_request_duration_seconds` of the
    /// routes without path parameters, by path.
    http: std::sync::RwLock<HashMap<Box<str>, RouteSeries>>,
}

/// Most (method, status) pairs whose handles are kept per route: methods
/// come from clients, so the table stays bounded whatever they send.
const ROUTE_SERIES_MAX: usize = 32;

/// The HTTP series of one route template, resolved once.
struct RouteSeries {
    duration: Histogram,
    /// `http_requests_total` by method and status.
    counts: Vec<(Box<str>, u16, IntCounter)>,
}

/// `offers_served_total` handles aligned with one catalog.
struct ServedSeries {
    /// The catalog they are aligned with (its address; compared, never read).
    catalog: usize,
    /// One per catalog offer, by index.
    counters: Vec<IntCounter>,
}

impl Metrics {
    /// Counts and times one HTTP request. `pattern` gives the route
    /// template (actix matches the path against every route again to find
    /// it, and allocates it); it is asked only the first time a path is
    /// seen. Routes whose path is their own template (no path parameters,
    /// so a bounded set) keep their handles by path: label lookups hash the
    /// values and take a lock, about 1,300 instructions a request
    /// (callgrind). Other paths (member ids, unmatched) are never kept.
    pub fn http_request(
        &self,
        path: &str,
        pattern: impl FnOnce() -> Option<String>,
        method: &str,
        status: u16,
        secs: f64,
    ) {
        {
            let table = self.hot.http.read().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = table.get(path) {
                if let Some((_, _, c)) = r
                    .counts
                    .iter()
                    .find(|(m, s, _)| *s == status && &**m == method)
                {
                    c.inc();
                    r.duration.observe(secs);
                    return;
                }
            }
        }
        let pattern = pattern();
        let route = pattern.as_deref().unwrap_or("unmatched");
        let code = status.to_string();
        let counter = self
            .http_requests
            .with_label_values(&[route, method, code.as_str()]);
        let duration = self.http_duration.with_label_values(&[route]);
        counter.inc();
        duration.observe(secs);
        if pattern.as_deref() != Some(path) {
            return;
        }
        let mut table = self.hot.http.write().unwrap_or_else(|e| e.into_inner());
        let r = table.entry(path.into()).or_insert_with(|| RouteSeries {
            duration,
            counts: Vec::new(),
        });
        if r.counts.len() < ROUTE_SERIES_MAX
            && !r
                .counts
                .iter()
                .any(|(m, s, _)| *s == status && &**m == method)
        {
            r.counts.push((method.into(), status, counter));
        }
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("offer_engine".into()), None)
            .expect("static prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("static metric");
        let decision_duration = HistogramVec::new(
            HistogramOpts::new(
                "decision_duration_seconds",
                "In-process decision latency (member lookup to ranked offers)",
            )
            .buckets(DECISION_BUCKETS.to_vec()),
            &["channel"],
        )
        .expect("static metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "decisions_total",
                "Decisions made by channel and cold start",
            ),
            &["channel", "cold_start"],
        )
        .expect("static metric");
        let offers_served = IntCounterVec::new(
            Opts::new("offers_served_total", "Offers returned in decisions"),
            &["offer_id", "category"],
        )
        .expect("static metric");
        let members = IntGauge::new("members", "Members held in memory").expect("static metric");
        let outcome_events = IntCounterVec::new(
            Opts::new("outcome_events_total", "Outcome events applied (durable)"),
            &["offer_id", "type"],
        )
        .expect("static metric");
        let accepted_revenue = CounterVec::new(
            Opts::new("accepted_revenue_total", "Revenue of accepted offers"),
            &["offer_id"],
        )
        .expect("static metric");
        let accepted_value = CounterVec::new(
            Opts::new(
                "accepted_value_total",
                "Value to the airline of accepted offers, net of points given away (CNY)",
            ),
            &["offer_id"],
        )
        .expect("static metric");
        let refunded_value = CounterVec::new(
            Opts::new(
                "refunded_value_total",
                "Value of accepts given back by refunds (CNY)",
            ),
            &["offer_id"],
        )
        .expect("static metric");
        let member_updates = IntCounterVec::new(
            Opts::new("member_updates_total", "Member updates applied (durable)"),
            &["kind"],
        )
        .expect("static metric");
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "decision_fallbacks_total",
                "Checkout decisions answered with the fallback offers (business priority)",
            ),
            &["reason"],
        )
        .expect("static metric");
        let ev = ["experiment", "variant"];
        let experiment_decisions = IntCounterVec::new(
            Opts::new(
                "experiment_decisions_total",
                "Decisions made in experiments",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_members = IntCounterVec::new(
            Opts::new(
                "experiment_members_total",
                "Members exposed to an experiment for the first time",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_conversions = IntCounterVec::new(
            Opts::new(
                "experiment_conversions_total",
                "Experiment members converting for the first time",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_revenue = CounterVec::new(
            Opts::new(
                "experiment_revenue_total",
                "Accepted revenue attributed to experiment variants",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_srm_p_value = GaugeVec::new(
            Opts::new(
                "experiment_srm_p_value",
                "Sample-ratio-mismatch p-value (chi-square of members against weights)",
            ),
            &["experiment"],
        )
        .expect("static metric");
        let experiment_conversion_p_value = GaugeVec::new(
            Opts::new(
                "experiment_conversion_p_value",
                "Two-proportion z-test p-value against the control",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_conversion_lift = GaugeVec::new(
            Opts::new(
                "experiment_conversion_lift",
                "Conversion rate minus the control's",
            ),
            &ev,
        )
        .expect("static metric");
        let experiment_guardrail_status = GaugeVec::new(
            Opts::new(
                "experiment_guardrail_status",
                "Guardrail status against the control: 0 ok, 1 warning, 2 failing",
            ),
            &["experiment", "variant", "metric"],
        )
        .expect("static metric");
        let log_errors = IntCounterVec::new(
            Opts::new(
                "log_errors_total",
                "Writes the event log refused (full disk, I/O error)",
            ),
            &["record"],
        )
        .expect("static metric");
        let cluster_publish = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "cluster_publish_duration_seconds",
                "Cluster mode: publish to JetStream acknowledgement, retries included",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
            ]),
        )
        .expect("static metric");
        let cluster_lag = IntGauge::new(
            "cluster_lag_records",
            "Cluster mode: records the stream holds that this replica has not applied",
        )
        .expect("static metric");
        let cluster_applied_sequence = IntGauge::new(
            "cluster_applied_sequence",
            "Cluster mode: the last stream sequence applied by this replica",
        )
        .expect("static metric");
        let cluster_applied = prometheus::IntCounter::new(
            "cluster_records_applied_total",
            "Cluster mode: records applied from the stream",
        )
        .expect("static metric");
        let cluster_nats_reachable = IntGauge::new(
            "cluster_nats_reachable",
            "Cluster mode: 1 while NATS answers the replica's stream-info requests",
        )
        .expect("static metric");
        let cluster_shared_snapshots = IntCounterVec::new(
            Opts::new(
                "cluster_shared_snapshots_total",
                "Cluster mode: snapshots put into (upload) or restored from (download) the shared object store",
            ),
            &["direction"],
        )
        .expect("static metric");
        let cluster_shared_snapshot_sequence = IntGauge::new(
            "cluster_shared_snapshot_sequence",
            "Cluster mode: the stream sequence of the newest shared snapshot",
        )
        .expect("static metric");
        let cluster_stream_first_sequence = IntGauge::new(
            "cluster_stream_first_sequence",
            "Cluster mode: the stream's first sequence (older records were purged)",
        )
        .expect("static metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "reloads_total",
                "Catalog, model and experiments reloads by trigger and result",
            ),
            &["trigger", "result"],
        )
        .expect("static metric");
        let idempotent_requests = IntCounterVec::new(
            Opts::new(
                "idempotent_requests_total",
                "Requests with an Idempotency-Key: answered first, replayed, or refused (key reused with another request)",
            ),
            &["route", "outcome"],
        )
        .expect("static metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(idempotent_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(decision_duration.clone()),
            Box::new(decisions.clone()),
            Box::new(offers_served.clone()),
            Box::new(members.clone()),
            Box::new(outcome_events.clone()),
            Box::new(accepted_revenue.clone()),
            Box::new(accepted_value.clone()),
            Box::new(refunded_value.clone()),
            Box::new(member_updates.clone()),
            Box::new(fallbacks.clone()),
            Box::new(log_errors.clone()),
            Box::new(cluster_publish.clone()),
            Box::new(cluster_lag.clone()),
            Box::new(cluster_applied_sequence.clone()),
            Box::new(cluster_applied.clone()),
            Box::new(cluster_nats_reachable.clone()),
            Box::new(cluster_shared_snapshots.clone()),
            Box::new(cluster_shared_snapshot_sequence.clone()),
            Box::new(cluster_stream_first_sequence.clone()),
            Box::new(reloads.clone()),
            Box::new(experiment_decisions.clone()),
            Box::new(experiment_members.clone()),
            Box::new(experiment_conversions.clone()),
            Box::new(experiment_revenue.clone()),
            Box::new(experiment_srm_p_value.clone()),
            Box::new(experiment_conversion_p_value.clone()),
            Box::new(experiment_conversion_lift.clone()),
            Box::new(experiment_guardrail_status.clone()),
        ] {
            registry.register(c).expect("each metric registered once");
        }
        let cluster_faults = ClusterFaultMetrics::registered(&registry);
        let hot = std::sync::Arc::new(HotSeries {
            decisions: crate::domain::Channel::ALL
                .iter()
                .map(|c| {
                    [
                        decisions.with_label_values(&[c.as_str(), "false"]),
                        decisions.with_label_values(&[c.as_str(), "true"]),
                    ]
                })
                .collect(),
            duration: crate::domain::Channel::ALL
                .iter()
                .map(|c| decision_duration.with_label_values(&[c.as_str()]))
                .collect(),
            served: ArcSwap::from_pointee(ServedSeries {
                catalog: 0,
                counters: Vec::new(),
            }),
            http: std::sync::RwLock::new(HashMap::new()),
        });
        Metrics {
            hot,
            registry,
            http_requests,
            http_duration,
            decision_duration,
            decisions,
            offers_served,
            members,
            outcome_events,
            accepted_revenue,
            accepted_value,
            refunded_value,
            member_updates,
            fallbacks,
            log_errors,
            cluster_publish,
            cluster_lag,
            cluster_applied_sequence,
            cluster_applied,
            cluster_nats_reachable,
            cluster_shared_snapshots,
            cluster_shared_snapshot_sequence,
            cluster_stream_first_sequence,
            cluster_faults,
            reloads,
            idempotent_requests,
            experiment_decisions,
            experiment_members,
            experiment_conversions,
            experiment_revenue,
            experiment_srm_p_value,
            experiment_conversion_p_value,
            experiment_conversion_lift,
            experiment_guardrail_status,
        }
    }

    /// Creates the error series at zero, so the first error is an increase
    /// Prometheus can see (a series born at 1 shows no `increase()`).
    pub fn init_error_series(&self) {
        for record in [
            "decision",
            "outcomes",
            "put",
            "bulk",
            "flight_flown",
            "points_earned",
            "points_redeemed",
            "tier_changed",
            "consent_changed",
            "purchase",
            "erase",
        ] {
            self.log_errors.with_label_values(&[record]);
        }
        for trigger in ["admin", "watch"] {
            for result in ["ok", "refused"] {
                self.reloads.with_label_values(&[trigger, result]);
            }
        }
    }

    /// Seeds the experiment counters from state restored at start, so
    /// dashboards read totals, not totals since the last restart.
    pub fn seed_experiments(&self, book: &crate::state::experiments::ExperimentBook) {
        for t in book.totals() {
            let l = [t.experiment.as_str(), t.variant.as_str()];
            self.experiment_decisions
                .with_label_values(&l)
                .inc_by(t.decisions);
            self.experiment_members
                .with_label_values(&l)
                .inc_by(t.members);
            self.experiment_conversions
                .with_label_values(&l)
                .inc_by(t.conversions);
            self.experiment_revenue
                .with_label_values(&l)
                .inc_by(t.revenue);
        }
    }

    /// Counts what a live apply changed in experiments (one place, so the
    /// counters and the durable state never disagree).
    pub fn observe_applied(&self, applied: &crate::state::Applied) {
        for (a, first) in &applied.exposed {
            let l = [a.experiment.as_str(), a.variant.as_str()];
            self.experiment_decisions.with_label_values(&l).inc();
            if *first {
                self.experiment_members.with_label_values(&l).inc();
            }
        }
        for (a, first, revenue) in &applied.converted {
            let l = [a.experiment.as_str(), a.variant.as_str()];
            if *first {
                self.experiment_conversions.with_label_values(&l).inc();
            }
            self.experiment_revenue
                .with_label_values(&l)
                .inc_by(*revenue);
        }
    }

    /// Refreshes the experiment gauges from reports.
    pub fn observe_reports(&self, reports: &[crate::experiments::Report]) {
        for r in reports {
            if let Some(p) = r.srm_p_value {
                self.experiment_srm_p_value
                    .with_label_values(&[&r.experiment])
                    .set(p);
            }
            for v in &r.variants {
                if let Some(l) = &v.conversion_lift {
                    let labels = [r.experiment.as_str(), v.variant.as_str()];
                    self.experiment_conversion_p_value
                        .with_label_values(&labels)
                        .set(l.p_value);
                    self.experiment_conversion_lift
                        .with_label_values(&labels)
                        .set(l.absolute);
                }
            }
            for g in &r.guardrails {
                use crate::experiments::GuardrailStatus;
                let metric = g.metric.as_str();
                let status = match g.status {
                    GuardrailStatus::Ok => 0.0,
                    GuardrailStatus::Warning => 1.0,
                    GuardrailStatus::Failing => 2.0,
                };
                self.experiment_guardrail_status
                    .with_label_values(&[r.experiment.as_str(), g.variant.as_str(), metric])
                    .set(status);
            }
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A checkout decision was made (`started` when scoring began).
    pub fn observe_decision(
        &self,
        channel: crate::domain::Channel,
        cold_start: bool,
        fallback: Option<&'static str>,
        started: std::time::Instant,
    ) {
        if let Some(reason) = fallback {
            self.fallbacks.with_label_values(&[reason]).inc();
        }
        let c = channel.index();
        self.hot.duration[c].observe(started.elapsed().as_secs_f64());
        self.hot.decisions[c][usize::from(cold_start)].inc();
    }

    /// Resolves the `offers_served_total` series of a catalog's offers (at
    /// start and at each reload, so checkouts look none up).
    pub fn align_offers(&self, catalog: &std::sync::Arc<crate::catalog::Catalog>) {
        let counters = catalog
            .offers
            .iter()
            .map(|o| {
                self.offers_served
                    .with_label_values(&[&o.id, o.category.as_str()])
            })
            .collect();
        self.hot.served.store(std::sync::Arc::new(ServedSeries {
            catalog: std::sync::Arc::as_ptr(catalog) as usize,
            counters,
        }));
    }

    /// Offer `index` of `catalog` was served in a checkout answer.
    pub fn offer_served(&self, catalog: &std::sync::Arc<crate::catalog::Catalog>, index: usize) {
        let served = self.hot.served.load();
        match served.counters.get(index) {
            Some(c) if served.catalog == std::sync::Arc::as_ptr(catalog) as usize => c.inc(),
            // A checkout that raced a reload: look the series up.
            _ => {
                if let Some(o) = catalog.offers.get(index) {
                    self.offers_served
                        .with_label_values(&[&o.id, o.category.as_str()])
                        .inc();
                }
            }
        }
    }
}

/// The metrics hear every record applied live, so counters and the durable
/// state never disagree.
impl crate::durable::Observer for Metrics {
    fn restored(&self, state: &crate::state::State) {
        self.seed_experiments(state.experiments());
    }

    fn applied(
        &self,
        what: &'static str,
        rec: &crate::state::LogRecord,
        applied: &crate::state::Applied,
    ) {
        use crate::state::LogRecord;
        match rec {
            LogRecord::Outcomes(list) => {
                for e in list {
                    self.outcome_events
                        .with_label_values(&[&e.offer_id, e.kind.as_str()])
                        .inc();
                    if e.kind == crate::events::OutcomeKind::Accept {
                        self.accepted_revenue
                            .with_label_values(&[&e.offer_id])
                            .inc_by(e.revenue);
                    }
                }
            }
            // A batch refused at apply changed nothing: nothing to count.
            LogRecord::OutcomesV2(_) if applied.refused.is_some() => {}
            LogRecord::OutcomesV2(list) => {
                for v in list {
                    let e = &v.outcome;
                    self.outcome_events
                        .with_label_values(&[&e.offer_id, e.kind.as_str()])
                        .inc();
                    match e.kind {
                        crate::events::OutcomeKind::Accept => {
                            self.accepted_revenue
                                .with_label_values(&[&e.offer_id])
                                .inc_by(e.revenue);
                            // A counter only goes up: a negative value (an
                            // offer worth less than the points it gives
                            // away) is left out here and kept in reports.
                            if v.value > 0.0 {
                                self.accepted_value
                                    .with_label_values(&[&e.offer_id])
                                    .inc_by(v.value);
                            }
                        }
                        crate::events::OutcomeKind::Refunded if v.value > 0.0 => {
                            self.refunded_value
                                .with_label_values(&[&e.offer_id])
                                .inc_by(v.value);
                        }
                        _ => {}
                    }
                }
            }
            LogRecord::Members(_)
            | LogRecord::MembersV2(_)
            | LogRecord::MemberChange { .. }
            | LogRecord::MemberErased { .. } => {
                self.member_updates.with_label_values(&[what]).inc();
            }
            LogRecord::Decision(_) | LogRecord::Decisions(_) | LogRecord::CampaignRun(_) => {}
        }
        self.observe_applied(applied);
    }

    fn published(&self, seconds: f64) {
        self.cluster_publish.observe(seconds);
    }

    fn not_logged(&self, what: &'static str, e: &crate::durable::LogError) {
        self.log_errors.with_label_values(&[what]).inc();
        if what == "decision" {
            tracing::warn!(error = %e, "decision not logged; its outcomes cannot be attributed after a restart");
        }
    }
}

impl Metrics {
    /// Cluster mode: copies the replica's position on the stream into the
    /// gauges (at each scrape).
    pub fn observe_cluster(&self, c: &crate::durable::cluster::ClusterStatus) {
        use std::sync::atomic::Ordering;
        self.cluster_lag.set(c.lag().min(i64::MAX as u64) as i64);
        let applied = c.applied.load(Ordering::Acquire);
        self.cluster_applied_sequence
            .set(applied.min(i64::MAX as u64) as i64);
        let total = c.records_applied.load(Ordering::Acquire);
        let before = self.cluster_applied.get();
        if total > before {
            self.cluster_applied.inc_by(total - before);
        }
        self.cluster_nats_reachable
            .set(i64::from(c.reachable.load(Ordering::Acquire)));
        for (direction, total) in [
            ("upload", c.shared_uploads.load(Ordering::Acquire)),
            ("download", c.shared_downloads.load(Ordering::Acquire)),
        ] {
            let counter = self
                .cluster_shared_snapshots
                .with_label_values(&[direction]);
            let before = counter.get();
            if total > before {
                counter.inc_by(total - before);
            }
        }
        self.cluster_shared_snapshot_sequence
            .set(c.shared_newest.load(Ordering::Acquire).min(i64::MAX as u64) as i64);
        self.cluster_stream_first_sequence
            .set(c.stream_first.load(Ordering::Acquire).min(i64::MAX as u64) as i64);
        self.cluster_faults.observe(c);
    }
}

/// Cluster mode: how stale a replica may be and its decision outbox.
#[derive(Clone)]
pub struct ClusterFaultMetrics {
    /// Seconds since the replica last confirmed it held the stream's end.
    pub stale_seconds: prometheus::Gauge,
    /// Decisions waiting in the outbox.
    pub outbox_length: IntGauge,
    /// Their bytes.
    pub outbox_bytes: IntGauge,
    /// Decisions published from the outbox.
    pub outbox_drained: prometheus::IntCounter,
    /// Decisions dropped from a full outbox, unpublished.
    pub outbox_dropped: prometheus::IntCounter,
}

impl ClusterFaultMetrics {
    fn registered(registry: &Registry) -> ClusterFaultMetrics {
        let m = ClusterFaultMetrics {
            stale_seconds: prometheus::Gauge::new(
                "cluster_stale_seconds",
                "Cluster mode: seconds since this replica last confirmed it held the stream's end",
            )
            .expect("static metric"),
            outbox_length: IntGauge::new(
                "cluster_outbox_length",
                "Cluster mode: decisions made here waiting to be published (NATS lost or slow)",
            )
            .expect("static metric"),
            outbox_bytes: IntGauge::new(
                "cluster_outbox_bytes",
                "Cluster mode: bytes of the decisions waiting in the outbox",
            )
            .expect("static metric"),
            outbox_drained: prometheus::IntCounter::new(
                "cluster_outbox_drained_total",
                "Cluster mode: decisions published from the outbox",
            )
            .expect("static metric"),
            outbox_dropped: prometheus::IntCounter::new(
                "cluster_outbox_dropped_total",
                "Cluster mode: decisions dropped unpublished from a full outbox (their accepts find no decision)",
            )
            .expect("static metric"),
        };
        for c in [
            Box::new(m.stale_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.outbox_length.clone()),
            Box::new(m.outbox_bytes.clone()),
            Box::new(m.outbox_drained.clone()),
            Box::new(m.outbox_dropped.clone()),
        ] {
            registry.register(c).expect("each metric registered once");
        }
        m
    }

    /// Copies the replica's staleness and outbox into the metrics (at each
    /// scrape); the counters catch up with the status's totals.
    fn observe(&self, c: &crate::durable::cluster::ClusterStatus) {
        use std::sync::atomic::Ordering;
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        self.stale_seconds.set(c.stale_seconds(now));
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        self.outbox_length
            .set(clamp(c.outbox_len.load(Ordering::Acquire)));
        self.outbox_bytes
            .set(clamp(c.outbox_bytes.load(Ordering::Acquire)));
        for (counter, total) in [
            (
                &self.outbox_drained,
                c.outbox_drained.load(Ordering::Acquire),
            ),
            (
                &self.outbox_dropped,
                c.outbox_dropped.load(Ordering::Acquire),
            ),
        ] {
            let before = counter.get();
            if total > before {
                counter.inc_by(total - before);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_series_are_kept_for_routes_without_parameters_only() {
        let m = Metrics::new();
        let asked = std::cell::Cell::new(0);
        let static_route = || {
            asked.set(asked.get() + 1);
            Some("/v1/offers".to_string())
        };
        for _ in 0..3 {
            m.http_request("/v1/offers", static_route, "POST", 200, 0.001);
        }
        m.http_request("/v1/offers", static_route, "POST", 422, 0.001);
        // The template is asked once per (method, status), then kept.
        assert_eq!(asked.get(), 2);
        let c = |route: &str, method: &str, status: &str| {
            m.http_requests
                .with_label_values(&[route, method, status])
                .get()
        };
        assert_eq!(c("/v1/offers", "POST", "200"), 3);
        assert_eq!(c("/v1/offers", "POST", "422"), 1);
        assert_eq!(
            m.http_duration
                .with_label_values(&["/v1/offers"])
                .get_sample_count(),
            4
        );
        // A path with a parameter is counted under its template, never kept.
        let member = || Some("/v1/members/{id}".to_string());
        m.http_request("/v1/members/M1", member, "GET", 200, 0.001);
        m.http_request("/v1/members/M2", member, "GET", 200, 0.001);
        m.http_request("/nowhere", || None, "GET", 404, 0.001);
        assert_eq!(c("/v1/members/{id}", "GET", "200"), 2);
        assert_eq!(c("unmatched", "GET", "404"), 1);
        let table = m.hot.http.read().unwrap();
        assert_eq!(table.len(), 1);
        // Methods come from clients: the pairs kept per route are bounded.
        drop(table);
        for i in 0..100 {
            let method = format!("X{i}");
            m.http_request("/v1/offers", static_route, &method, 405, 0.001);
        }
        assert_eq!(
            m.hot.http.read().unwrap()["/v1/offers"].counts.len(),
            ROUTE_SERIES_MAX
        );
    }
}
