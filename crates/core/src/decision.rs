//! The decision core: eligibility, scoring, arbitration and reasons, as one
//! pure function over plain data. Checkout, campaigns and simulations all call
//! [`decide`]; nothing here does I/O, reads a clock or draws a random number.
//!
//! Flow: features → for every catalog offer: eligibility, then the caller's
//! constraints (suppressions, inventory) → propensity from the aligned
//! [`ScoringTable`] → expected value = propensity × margin × units × lever →
//! rank (by expected value, or by fixed business priority) → at most one
//! offer per category, at most `max_offers` and at most the member's
//! remaining contacts today → reasons for the winners.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::catalog::{Catalog, EligibilityContext, Offer};
use crate::domain::{Category, Channel, Day, Itinerary, Member, Money, TierThresholds};
use crate::features::{self, DecisionContext, ValueSegment};
use crate::model::{ModelFile, ScoringTable};
pub use crate::policy::Ranking;
use crate::reasons::{Reason, Route};

/// Catalog, model and tier rules that decide together. Swapped as a whole
/// (behind `ArcSwap` in the server) when the catalog or model is reloaded, so
/// a decision never sees a model aligned with another catalog.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The offer catalog.
    pub catalog: Arc<Catalog>,
    /// The model, aligned with the catalog.
    pub table: Arc<ScoringTable>,
    /// The model file it came from (kept for reloads that change only the catalog).
    pub model: Arc<ModelFile>,
    /// Tier thresholds.
    pub thresholds: TierThresholds,
    /// Running experiments (their variants choose the policy).
    pub experiments: Arc<Vec<crate::experiments::ExperimentSpec>>,
    /// Models that experiment variants score with, by file name, aligned with the catalog.
    pub variant_tables: Arc<std::collections::HashMap<String, Arc<ScoringTable>>>,
}

impl Engine {
    /// Builds an engine from its parts.
    pub fn new(catalog: Catalog, model: ModelFile, thresholds: TierThresholds) -> Engine {
        let table = ScoringTable::new(&model, &catalog);
        Engine {
            catalog: Arc::new(catalog),
            table: Arc::new(table),
            model: Arc::new(model),
            thresholds,
            experiments: Arc::new(Vec::new()),
            variant_tables: Arc::new(std::collections::HashMap::new()),
        }
    }

    /// The same engine with variant models (file name → model), aligned with its catalog.
    pub fn with_variant_models(mut self, models: Vec<(String, ModelFile)>) -> Engine {
        let tables = models
            .into_iter()
            .map(|(name, m)| (name, Arc::new(ScoringTable::new(&m, &self.catalog))))
            .collect();
        self.variant_tables = Arc::new(tables);
        self
    }

    /// The same engine running `experiments`.
    pub fn with_experiments(
        mut self,
        experiments: Vec<crate::experiments::ExperimentSpec>,
    ) -> Engine {
        self.experiments = Arc::new(experiments);
        self
    }

    /// The compiled-in catalog and model with default thresholds.
    pub fn embedded_default() -> Engine {
        Engine::new(
            Catalog::default_catalog(),
            ModelFile::default_model(),
            TierThresholds::default(),
        )
    }
}

/// What a member's experiment variants ask of a decision: one rule for
/// checkout and campaigns, so a member lands in the same variant and gets
/// the same policy on every path.
#[derive(Debug, Clone)]
pub struct VariantPolicy<'a> {
    /// The member's assignments (returned with the decision, recorded for attribution).
    pub assignments: Vec<crate::experiments::Assignment>,
    /// A holdout variant: show nothing.
    pub holdout: bool,
    /// Ranking policy.
    pub ranking: Ranking,
    /// Most offers (the caller's limit, capped by the variant's).
    pub max_offers: usize,
    /// Catalog subset, if a variant restricts it.
    pub categories: Option<&'a [Category]>,
    /// The model to score with (a variant's, or the engine's).
    pub table: &'a Arc<ScoringTable>,
    /// Whether the variant scores with a model file of its own (then the
    /// adaptive models, which learn around the engine's model, stay out).
    pub own_model: bool,
    /// Exploration policy.
    pub exploration: crate::policy::Exploration,
}

impl Engine {
    /// The policy for `member_id` given the caller's `max_offers`.
    pub fn variant_policy(&self, member_id: &str, max_offers: usize) -> VariantPolicy<'_> {
        let mut p = VariantPolicy {
            assignments: Vec::new(),
            holdout: false,
            ranking: Ranking::Model,
            max_offers,
            categories: None,
            table: &self.table,
            own_model: false,
            exploration: crate::policy::Exploration::Greedy,
        };
        for e in self.experiments.iter() {
            if let Some(v) = e.assign(member_id) {
                let var = &e.variants[v];
                p.assignments.push(crate::experiments::Assignment {
                    experiment: e.id.clone(),
                    variant: var.name.clone(),
                });
                p.holdout |= var.holdout;
                p.ranking = var.ranking;
                if let Some(n) = var.max_offers {
                    p.max_offers = p.max_offers.min(n);
                }
                if !var.categories.is_empty() {
                    p.categories = Some(var.categories.as_slice());
                }
                if let Some(t) = var.model.as_ref().and_then(|m| self.variant_tables.get(m)) {
                    p.table = t;
                    p.own_model = true;
                }
                p.exploration = var.exploration;
            }
        }
        p
    }
}

/// State outside the core that can rule an offer out for this member:
/// suppressions after a decline, sold-out inventory, the daily contact cap.
/// Adapters implement it over their stores; the default allows everything.
pub trait Constraints {
    /// Whether catalog offer `index` may be shown (not suppressed, in stock).
    fn allowed(&self, _index: usize, _offer: &Offer) -> bool {
        true
    }
    /// Whether the member's tier upgrade voucher is still unused (offers
    /// that use it are shown only then; the default: unused).
    fn voucher_unused(&self) -> bool {
        true
    }
    /// How many more offers the member may be shown today on this channel.
    fn remaining_contacts(&self) -> usize {
        usize::MAX
    }
}

/// No constraints.
pub struct Unconstrained;
impl Constraints for Unconstrained {}

/// What to decide.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    /// The member (None: cold start).
    pub member: Option<&'a Member>,
    /// The trip, if any.
    pub itinerary: Option<&'a Itinerary>,
    /// Channel.
    pub channel: Channel,
    /// Decision instant.
    pub now: DateTime<Utc>,
    /// Most offers to return.
    pub max_offers: usize,
    /// Ranking policy.
    pub ranking: Ranking,
}

/// One ranked offer.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedOffer {
    /// Index of the offer in the engine's catalog.
    pub index: usize,
    /// Propensity to accept, from the model.
    pub propensity: f32,
    /// Probability with which the exploration policy put this offer in
    /// this slot, given the slots before it (1 for greedy).
    pub slot_propensity: f64,
    /// Expected value, CNY.
    pub expected_value: f64,
    /// Cash price for the party.
    pub price: Option<Money>,
    /// Points price for the party.
    pub points_price: Option<u64>,
    /// When the offer stops being acceptable.
    pub expires_at: DateTime<Utc>,
    /// Why this offer (structured; sentences only on request).
    pub reasons: Vec<Reason>,
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the member was unknown.
    pub cold_start: bool,
    /// Ranked offers, best first.
    pub offers: Vec<RankedOffer>,
    /// How many catalog offers were eligible before arbitration.
    pub eligible: usize,
}

/// Decides which offers to show. Pure and deterministic.
pub fn decide(
    engine: &Engine,
    input: &DecisionInput<'_>,
    constraints: &(impl Constraints + ?Sized),
) -> Decision {
    let ctx = DecisionContext {
        itinerary: input.itinerary,
        channel: input.channel,
        now: input.now,
    };
    let x = features::build(input.member, &ctx, &engine.thresholds);
    decide_scored(engine, input, constraints, None, |i| {
        engine.table.propensity(i, &x)
    })
}

/// [`decide`] with the propensities given: `score(i)` is catalog offer `i`'s
/// propensity for this member (campaigns compute a block of members at once
/// with one matrix product). `candidates`, when given, lists the only offers
/// that can be eligible (a campaign rules out trip offers once, up front);
/// every candidate still goes through the full eligibility rule.
pub fn decide_scored(
    engine: &Engine,
    input: &DecisionInput<'_>,
    constraints: &(impl Constraints + ?Sized),
    candidates: Option<&[usize]>,
    score: impl Fn(usize) -> f32,
) -> Decision {
    decide_explored(engine, input, constraints, candidates, score, None)
}

/// How a decision explores (see [`crate::policy`]).
pub struct Explore<'a> {
    /// The policy.
    pub policy: crate::policy::Exploration,
    /// Seed of the decision's draws (e.g. from its id).
    pub seed: u64,
    /// Monte Carlo draws for Thompson propensities.
    pub draws: usize,
    /// Posterior mean and standard deviation of catalog offer `i`'s
    /// log-odds (Thompson draws p = e^z from them; see [`crate::posterior`]).
    pub moments: &'a dyn Fn(usize) -> (f64, f64),
}

/// [`decide_scored`] under an exploration policy: the greedy arbitration
/// when `explore` is None or greedy, otherwise the policy's slot-by-slot
/// draws, each offer carrying its slot propensity.
pub fn decide_explored(
    engine: &Engine,
    input: &DecisionInput<'_>,
    constraints: &(impl Constraints + ?Sized),
    candidates: Option<&[usize]>,
    score: impl Fn(usize) -> f32,
    explore: Option<&Explore<'_>>,
) -> Decision {
    let _span = tracing::trace_span!("decide", channel = input.channel.as_str()).entered();
    let spend_gap = input
        .member
        .and_then(|m| features::spend_to_next_tier(m, &engine.thresholds));
    let ectx = EligibilityContext::new(
        input.member,
        input.itinerary,
        input.channel,
        input.now,
        spend_gap,
    );
    let passengers = input.itinerary.map(|i| i.passengers).unwrap_or(1);
    let all = engine.catalog.offers.len();
    let mut scored: Vec<(usize, f32, f64)> =
        Vec::with_capacity(candidates.map_or(all, |c| c.len()));
    let mut consider = |i: usize| {
        let offer = &engine.catalog.offers[i];
        if offer.eligible(&ectx).is_err()
            || !constraints.allowed(i, offer)
            || (offer.uses_voucher && !constraints.voucher_unused())
        {
            return;
        }
        let p = score(i);
        let ev = p as f64 * offer.accept_value(passengers, engine.catalog.cost_per_point);
        scored.push((i, p, ev));
    };
    match candidates {
        Some(c) => c.iter().for_each(|i| consider(*i)),
        None => (0..all).for_each(&mut consider),
    }
    let mut candidates = scored;
    let eligible = candidates.len();
    let offers = &engine.catalog.offers;
    // A member with an unused upgrade voucher is offered its use before a
    // paid upgrade: the paid ones give way.
    if candidates.iter().any(|c| offers[c.0].uses_voucher) {
        candidates
            .retain(|c| offers[c.0].uses_voucher || offers[c.0].category != Category::Upgrade);
    }
    match input.ranking {
        Ranking::Model => candidates.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then(offers[b.0].priority.cmp(&offers[a.0].priority))
                .then(a.0.cmp(&b.0))
        }),
        Ranking::Priority => candidates.sort_by(|a, b| {
            offers[b.0]
                .priority
                .cmp(&offers[a.0].priority)
                .then(b.2.total_cmp(&a.2))
                .then(a.0.cmp(&b.0))
        }),
    }
    let limit = input.max_offers.min(constraints.remaining_contacts());
    let mut member_lines: Option<MemberReasons> = None;
    // (candidate, slot propensity) in slot order.
    let picks: Vec<((usize, f32, f64), f64)> = match explore {
        Some(ex) if ex.policy != crate::policy::Exploration::Greedy => {
            let cands: Vec<crate::policy::Candidate> = candidates
                .iter()
                .map(|(i, _, ev)| crate::policy::Candidate {
                    index: *i,
                    category: category_index(offers[*i].category),
                    ev: *ev,
                })
                .collect();
            let cpp = engine.catalog.cost_per_point;
            // (mean, sd, value) per candidate, computed once per decision.
            let moments: Vec<(f64, f64, f64)> = if ex.policy.samples() {
                cands
                    .iter()
                    .map(|c| {
                        let (mu, sd) = (ex.moments)(c.index);
                        (mu, sd, offers[c.index].accept_value(passengers, cpp))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let sample_ev = |pos: usize, rng: &mut rand_chacha::ChaCha8Rng| {
                let (mu, sd, value) = moments[pos];
                crate::posterior::draw_probability(mu, sd, rng) * value
            };
            crate::policy::select(&cands, limit, ex.policy, ex.seed, ex.draws, &sample_ev)
                .into_iter()
                .map(|(pos, prob)| (candidates[pos], prob))
                .collect()
        }
        _ => {
            let mut used_categories: u32 = 0;
            let mut picks = Vec::with_capacity(limit.min(10));
            for c in candidates {
                if picks.len() >= limit {
                    break;
                }
                let bit = 1u32 << category_index(offers[c.0].category);
                if used_categories & bit != 0 {
                    continue;
                }
                used_categories |= bit;
                picks.push((c, 1.0));
            }
            picks
        }
    };
    let mut chosen = Vec::with_capacity(picks.len());
    for ((i, p, ev), slot_propensity) in picks {
        let offer = &offers[i];
        chosen.push(RankedOffer {
            index: i,
            propensity: p,
            slot_propensity,
            expected_value: crate::domain::round2(ev),
            price: offer.cash_price(passengers),
            points_price: offer.points_price_for(passengers),
            expires_at: expiry(offer, input),
            reasons: reasons(
                offer,
                input,
                member_lines.get_or_insert_with(|| member_reasons(input, spend_gap)),
                p,
                ev,
            ),
        });
    }
    Decision {
        cold_start: input.member.is_none(),
        offers: chosen,
        eligible,
    }
}

fn category_index(c: Category) -> u32 {
    Category::ALL.iter().position(|x| *x == c).unwrap_or(0) as u32
}

/// Expiry: the offer's validity on the decision's channel from now, but
/// never after departure nor after the last day of the offer's window.
fn expiry(offer: &Offer, input: &DecisionInput<'_>) -> DateTime<Utc> {
    expiry_from(offer, input.channel, input.now, input.itinerary)
}

/// When an offer shown on `channel` from `start` stops being acceptable:
/// `start` plus the offer's validity on that channel (the catalog's
/// `validity_minutes`), never after the departure of `itinerary` nor after
/// the last day of the offer's window. Campaigns count from their send time.
pub fn expiry_from(
    offer: &Offer,
    channel: Channel,
    start: DateTime<Utc>,
    itinerary: Option<&crate::domain::Itinerary>,
) -> DateTime<Utc> {
    let mut t = start + Duration::minutes(offer.validity.minutes(channel) as i64);
    if let Some(it) = itinerary {
        t = t.min(it.departure);
    }
    let window_end = Day(offer.valid_to.0 + 1)
        .to_date()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    t.min(window_end)
}

/// `12345` → `"12,345"`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reasons that depend only on the member, computed once per decision.
struct MemberReasons {
    /// At most two (tier, value segment).
    lines: [Option<Reason>; 2],
    recency_days: Option<i32>,
}

fn member_reasons(input: &DecisionInput<'_>, spend_gap: Option<f64>) -> MemberReasons {
    let Some(m) = input.member else {
        return MemberReasons {
            lines: [Some(Reason::NewMember), None],
            recency_days: None,
        };
    };
    let tier = match (m.tier.next(), spend_gap) {
        (Some(next), Some(gap)) if gap <= 20_000.0 => Reason::NearNextTier {
            tier: next,
            current_tier: m.tier,
            spend_short: features::whole_cny_gap(m.qualifying_spend_12m as f64, gap),
        },
        _ => Reason::Tier { tier: m.tier },
    };
    let s = features::segment(m, Day::of(input.now));
    let value = match s.value {
        ValueSegment::HighValue => Some(Reason::HighValue {
            lifetime_value: (s.clv / 1000.0).round() as u64 * 1000,
        }),
        ValueSegment::Potential => Some(Reason::Growing),
        ValueSegment::LowValue => None,
    };
    MemberReasons {
        lines: [Some(tier), value],
        recency_days: s.recency_days,
    }
}

fn reasons(
    offer: &Offer,
    input: &DecisionInput<'_>,
    mr: &MemberReasons,
    p: f32,
    ev: f64,
) -> Vec<Reason> {
    let mut r = Vec::with_capacity(5);
    r.extend(mr.lines.iter().flatten().copied());
    if let Some(m) = input.member {
        if offer.category == Category::Retention {
            r.push(match mr.recency_days {
                Some(days) => Reason::Lapsed { days },
                None => Reason::NotFlownYet,
            });
        }
        let passengers = input.itinerary.map(|i| i.passengers).unwrap_or(1);
        if offer.points_price_for(passengers).is_some_and(|pp| pp > 0) {
            r.push(Reason::PointsBalance {
                points: m.points as u64,
            });
        }
    }
    if let Some(it) = input.itinerary {
        match offer.category {
            Category::Upgrade | Category::Wifi => r.push(Reason::Trip {
                route: if it.is_domestic() {
                    Route::Domestic
                } else {
                    Route::International
                },
                km: it.distance_km().round() as u64,
                cabin: it.cabin,
            }),
            Category::Lounge | Category::PartnerBundle => r.push(Reason::Departure {
                origin: it.origin,
                days: it.days_to_departure(input.now),
            }),
            _ if it.passengers > 1 => r.push(Reason::Party {
                passengers: it.passengers,
            }),
            _ => {}
        }
    }
    r.push(Reason::Propensity {
        // Four decimals: the figure a reader needs, and stable in JSON.
        p: (p as f64 * 10_000.0).round() / 10_000.0,
        expected_value: crate::domain::round2(ev),
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1200), "1,200");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn expiry_is_the_channel_validity_capped_by_departure_and_window() {
        use chrono::TimeZone;
        let catalog = Catalog::default_catalog();
        let offer = &catalog.offers[0];
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
        for ch in Channel::ALL {
            let want = start + Duration::minutes(offer.validity.minutes(ch) as i64);
            assert_eq!(expiry_from(offer, ch, start, None), want, "{ch:?}");
        }
        assert_eq!(
            expiry_from(offer, Channel::Email, start, None),
            start + Duration::days(7)
        );
        // A departure sooner than the validity ends it.
        let it = Itinerary {
            origin: crate::domain::Iata::parse("PEK").unwrap(),
            destination: crate::domain::Iata::parse("SHA").unwrap(),
            departure: start + Duration::hours(5),
            cabin: crate::domain::Cabin::Economy,
            fare: Money {
                amount: 1000.0,
                currency: "CNY".into(),
            },
            passengers: 1,
        };
        assert_eq!(
            expiry_from(offer, Channel::App, start, Some(&it)),
            it.departure
        );
        // So does the end of the offer's last day.
        let late = Day(offer.valid_to.0)
            .to_date()
            .and_hms_opt(20, 0, 0)
            .unwrap()
            .and_utc();
        let end = Day(offer.valid_to.0 + 1)
            .to_date()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        assert_eq!(expiry_from(offer, Channel::Email, late, None), end);
    }
}
