//! Email (and sms, app) campaigns: the best offers for a whole segment.
//!
//! A campaign is a segment filter, a channel, an offer count, a date and a
//! limit. It is checked completely before any scoring starts. Then the
//! member store is scanned once (in its deterministic order), matching
//! members are cut into blocks, and worker threads score each block with one
//! matrix product (block × features · featuresᵀ × candidate offers, `ndarray`)
//! before the same eligibility, contact-policy and arbitration code as
//! checkout ([`crate::decision::decide_scored`]) picks each member's offers.
//! Lines stream out in scan order with memory bounded by the blocks in flight,
//! whatever the segment size.
//!
//! Consent is absolute: eligibility refuses every offer on a channel the
//! member has not consented to, so such a member never appears. Holdout
//! members are recorded as exposed but not written. Every decision is
//! recorded like a checkout decision (same attribution, expiry and
//! durability), with a deterministic id (`cmp-{campaign_id}-{member_id}`),
//! so running the same campaign on the same state writes the same file.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use chrono::{DateTime, NaiveDate, Utc};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::audience::{issued_offer, Ask, Audience};
use crate::decision::{decide_scored, Constraints, DecisionInput, Engine};
use crate::domain::{Channel, Day, FieldError, Iata, Member, Tags, Tier};
use crate::durable::{Durable, LogError, Pending};
use crate::experiments::Assignment;
use crate::features::{self, DecisionContext, N_FEATURES};
use crate::reasons::Lang;
use crate::records::{DecisionRecord, IssuedOffer};
use crate::render::OfferOut;
use crate::state::ledger::Ledger;

/// Wire form of a campaign (`POST /v1/campaigns`; the CLI flags use the same names).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignDto {
    /// `email`, `sms` or `app`.
    pub channel: String,
    /// Tiers to include (default all).
    #[serde(default)]
    pub tiers: Option<Vec<String>>,
    /// Home airports to include (default all).
    #[serde(default)]
    pub home_airports: Option<Vec<String>>,
    /// Members who have not flown for at least this many days (never flown counts).
    #[serde(default)]
    pub min_days_since_flight: Option<u32>,
    /// Members who flew within this many days.
    #[serde(default)]
    pub max_days_since_flight: Option<u32>,
    /// Birth month, 1 to 12.
    #[serde(default)]
    pub birth_month: Option<u8>,
    /// Minimum points balance.
    #[serde(default)]
    pub min_points: Option<u32>,
    /// Maximum points balance.
    #[serde(default)]
    pub max_points: Option<u32>,
    /// At most this much qualifying spend (CNY) from the next tier (top tier excluded).
    #[serde(default)]
    pub max_distance_to_next_tier: Option<f64>,
    /// Members having every one of these tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Offers per member, 1 to 10 (default 3).
    #[serde(default)]
    pub offers: Option<usize>,
    /// Campaign date, YYYY-MM-DD (default today, or the day of `send_at`):
    /// offers must be valid on it.
    #[serde(default)]
    pub date: Option<String>,
    /// When the messages go out (RFC 3339; default: when the campaign is
    /// decided, now or the start of `date`): each offer stays acceptable for
    /// the channel's validity counted from it, never past the offer's window.
    #[serde(default)]
    pub send_at: Option<String>,
    /// Most members written.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Campaign id (default: derived from the other fields); part of every decision id.
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// A checked segment filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentFilter {
    /// Allowed tiers (None: all).
    pub tiers: Option<Vec<Tier>>,
    /// Allowed home airports (None: all).
    pub home_airports: Option<Vec<Iata>>,
    /// Minimum days since the last flight.
    pub min_days_since_flight: Option<u32>,
    /// Maximum days since the last flight.
    pub max_days_since_flight: Option<u32>,
    /// Birth month.
    pub birth_month: Option<u8>,
    /// Minimum points.
    pub min_points: Option<u32>,
    /// Maximum points.
    pub max_points: Option<u32>,
    /// Maximum distance to the next tier, CNY.
    pub max_distance_to_next_tier: Option<f64>,
    /// Required tags.
    pub tags: Tags,
}

impl SegmentFilter {
    /// Whether a member is in the segment on `today`.
    pub fn matches(&self, m: &Member, today: Day, th: &crate::domain::TierThresholds) -> bool {
        if self.tiers.as_ref().is_some_and(|t| !t.contains(&m.tier)) {
            return false;
        }
        if self
            .home_airports
            .as_ref()
            .is_some_and(|a| !a.contains(&m.home_airport))
        {
            return false;
        }
        let days = m.last_flight.map(|d| today.0 - d.0);
        if let Some(min) = self.min_days_since_flight {
            if days.is_some_and(|d| d < min as i32) {
                return false;
            }
        }
        if let Some(max) = self.max_days_since_flight {
            match days {
                Some(d) if d <= max as i32 => {}
                _ => return false,
            }
        }
        if self.birth_month.is_some_and(|b| b != m.birth_month) {
            return false;
        }
        if self.min_points.is_some_and(|p| m.points < p)
            || self.max_points.is_some_and(|p| m.points > p)
        {
            return false;
        }
        if let Some(max) = self.max_distance_to_next_tier {
            match features::spend_to_next_tier(m, th) {
                Some(gap) if gap <= max => {}
                _ => return false,
            }
        }
        m.tags.contains_all(self.tags)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object a line.
    #[default]
    Ndjson,
    /// Comma-separated, one row a member, `offers` groups of columns.
    Csv,
}

/// A checked campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Id (part of every decision id).
    pub id: String,
    /// Segment.
    pub filter: SegmentFilter,
    /// Channel (email, sms or app).
    pub channel: Channel,
    /// Offers per member.
    pub offers: usize,
    /// Campaign day.
    pub date: NaiveDate,
    /// Decision instant (now on the day it runs, else the start of the campaign day).
    pub now: DateTime<Utc>,
    /// Send time: validity is counted from it (at or after `now`, on the campaign day).
    pub send_at: DateTime<Utc>,
    /// Most members written.
    pub limit: Option<u64>,
}

/// Parses every item of an optional list filter, reporting each bad item by
/// its index (`tiers[2]`) and an empty list as an error; None when absent.
fn each_of<T, E: Into<String>>(
    field: &str,
    list: &Option<Vec<String>>,
    errs: &mut Vec<FieldError>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Option<Vec<T>> {
    let v = list.as_ref()?;
    if v.is_empty() {
        errs.push(FieldError::new(field, "must not be empty"));
        return None;
    }
    Some(
        v.iter()
            .enumerate()
            .filter_map(|(i, item)| {
                parse(item)
                    .map_err(|m| errs.push(FieldError::new(format!("{field}[{i}]"), m)))
                    .ok()
            })
            .collect(),
    )
}

impl CampaignDto {
    /// The segment filter as given (JSON, the filter fields that are set),
    /// for the run's record.
    pub fn segment_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.retain(|k, v| {
                !v.is_null()
                    && !matches!(
                        k.as_str(),
                        "channel" | "offers" | "date" | "send_at" | "limit" | "campaign_id"
                    )
            });
        }
        v.to_string()
    }

    /// Checks every field before anything is scored; the first field at
    /// fault ([`CampaignDto::into_campaign_all`] gives all of them).
    pub fn into_campaign(self, now: DateTime<Utc>) -> Result<Campaign, FieldError> {
        self.into_campaign_all(now)
            .map_err(|mut v| v.swap_remove(0))
    }

    /// Checks every field before anything is scored, reporting every field
    /// at fault (never an empty list).
    pub fn into_campaign_all(self, now: DateTime<Utc>) -> Result<Campaign, Vec<FieldError>> {
        let mut errs = Vec::new();
        let channel = match self.channel.as_str() {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            "app" => Some(Channel::App),
            other => {
                errs.push(FieldError::new(
                    "channel",
                    format!("{other:?} is not a campaign channel; one of email, sms, app"),
                ));
                None
            }
        };
        let tiers = each_of("tiers", &self.tiers, &mut errs, |t| {
            Tier::parse(t).ok_or_else(|| {
                format!("unknown tier {t:?}; one of base, silver, gold, platinum, diamond")
            })
        });
        let home_airports = each_of("home_airports", &self.home_airports, &mut errs, Iata::parse);
        if let (Some(a), Some(b)) = (self.min_days_since_flight, self.max_days_since_flight) {
            if a > b {
                errs.push(FieldError::new(
                    "min_days_since_flight",
                    "is greater than max_days_since_flight: the range is empty",
                ));
            }
        }
        if self.birth_month.is_some_and(|m| !(1..=12).contains(&m)) {
            errs.push(FieldError::new("birth_month", "must be from 1 to 12"));
        }
        if let (Some(a), Some(b)) = (self.min_points, self.max_points) {
            if a > b {
                errs.push(FieldError::new(
                    "min_points",
                    "is greater than max_points: the range is empty",
                ));
            }
        }
        if self
            .max_distance_to_next_tier
            .is_some_and(|d| !d.is_finite() || d < 0.0)
        {
            errs.push(FieldError::new(
                "max_distance_to_next_tier",
                "must be a non-negative number",
            ));
        }
        let tags = match &self.tags {
            None => Tags::default(),
            Some(v) => Tags::parse(v).unwrap_or_else(|e| {
                errs.push(e);
                Tags::default()
            }),
        };
        let offers = self.offers.unwrap_or(3);
        if !(1..=crate::domain::MAX_OFFERS).contains(&offers) {
            errs.push(FieldError::new("offers", "must be from 1 to 10"));
        }
        let today = now.date_naive();
        let send_at = match &self.send_at {
            None => None,
            Some(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => {
                    errs.push(FieldError::new(
                        "send_at",
                        "must be an RFC 3339 instant such as 2026-12-01T08:00:00Z",
                    ));
                    None
                }
            },
        };
        let date = match &self.date {
            None => send_at.map_or(today, |t| t.date_naive()),
            Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap_or_else(|_| {
                errs.push(FieldError::new("date", "must be YYYY-MM-DD"));
                today
            }),
        };
        if date < today {
            errs.push(FieldError::new("date", "is in the past"));
        }
        if self.limit == Some(0) {
            errs.push(FieldError::new("limit", "must be at least 1"));
        }
        if let Some(id) = &self.campaign_id {
            if let Err(e) = crate::domain::validate_member_id(id, "campaign_id") {
                errs.push(e);
            }
        }
        let Some(channel) = channel else {
            return Err(errs);
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        let filter = SegmentFilter {
            tiers,
            home_airports,
            min_days_since_flight: self.min_days_since_flight,
            max_days_since_flight: self.max_days_since_flight,
            birth_month: self.birth_month,
            min_points: self.min_points,
            max_points: self.max_points,
            max_distance_to_next_tier: self.max_distance_to_next_tier,
            tags,
        };
        let id = match &self.campaign_id {
            Some(id) => id.clone(),
            None => format!(
                "{:016x}",
                crate::experiments::assignment_hash(&format!(
                    "{channel:?}|{filter:?}|{offers}|{date}"
                ))
            ),
        };
        let decided_at = if date == today {
            now
        } else {
            date.and_time(chrono::NaiveTime::MIN).and_utc()
        };
        let send_at = match send_at {
            None => decided_at,
            Some(t) if t.date_naive() != date => {
                return Err(vec![FieldError::new(
                    "send_at",
                    format!("is not on the campaign date {date}"),
                )])
            }
            Some(t) if t < decided_at => {
                return Err(vec![FieldError::new("send_at", "is in the past")])
            }
            Some(t) => t,
        };
        Ok(Campaign {
            id,
            filter,
            channel,
            offers,
            date,
            now: decided_at,
            send_at,
            limit: self.limit,
        })
    }
}

/// Offers that can be eligible in a campaign, and their model rows.
struct Plan {
    candidates: Vec<usize>,
    /// Catalog index → column in `weights_t` (usize::MAX: not a candidate).
    slot: Vec<usize>,
    /// N_FEATURES × candidates.
    weights_t: Array2<f32>,
    bias: Vec<f32>,
}

fn plan(engine: &Engine, c: &Campaign) -> Plan {
    let day = Day::from_date(c.date);
    let candidates: Vec<usize> = engine
        .catalog
        .offers
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.channels.contains(&c.channel)
                && !o.needs_trip()
                && o.valid_from <= day
                && day <= o.valid_to
        })
        .map(|(i, _)| i)
        .collect();
    let mut slot = vec![usize::MAX; engine.catalog.offers.len()];
    for (k, i) in candidates.iter().enumerate() {
        slot[*i] = k;
    }
    let mut weights_t = Array2::<f32>::zeros((N_FEATURES, candidates.len()));
    let mut bias = Vec::with_capacity(candidates.len());
    for (k, i) in candidates.iter().enumerate() {
        for j in 0..N_FEATURES {
            weights_t[[j, k]] = engine.table.weights[[*i, j]];
        }
        bias.push(engine.table.bias[*i]);
    }
    Plan {
        candidates,
        slot,
        weights_t,
        bias,
    }
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    member_id: &'a str,
    decision_id: &'a str,
    experiments: &'a [Assignment],
    /// What a message template needs about the member; names and addresses
    /// are not here (the engine holds none): the template joins them from
    /// the CRM by `member_id`.
    member: MemberFields,
    offers: Vec<OfferOut<'a>>,
}

/// The member facts a campaign line carries for the message template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberFields {
    /// Tier.
    pub tier: Tier,
    /// Points balance.
    pub points: u32,
    /// The next tier up (null at the top).
    pub next_tier: Option<Tier>,
    /// Qualifying spend still needed for the next tier, whole CNY (tiers are
    /// earned by qualifying spend over the rolling 12 months; null at the top).
    pub spend_to_next_tier_cny: Option<u64>,
    /// Value segment: `high-value`, `potential` or `low-value`.
    pub value_segment: &'static str,
}

impl MemberFields {
    /// The fields of `m` on `today`.
    pub fn of(m: &Member, today: Day, th: &crate::domain::TierThresholds) -> MemberFields {
        let spend = m.qualifying_spend_12m as f64;
        MemberFields {
            tier: m.tier,
            points: m.points,
            next_tier: m.tier.next(),
            spend_to_next_tier_cny: features::spend_to_next_tier(m, th)
                .map(|gap| features::whole_cny_gap(spend, gap)),
            value_segment: features::segment(m, today).value.as_str(),
        }
    }
}

/// What a scored block produced.
struct BlockResult {
    seq: u64,
    /// Output bytes and, per member, the end offset of its line in `bytes`
    /// (equal to the start for members not written) and its record.
    bytes: Vec<u8>,
    members: Vec<(usize, Option<DecisionRecord>, Option<LeftOutReason>)>,
    scanned: u64,
}

/// Why a member of the segment got no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeftOutReason {
    Holdout,
    DailyCap,
    Suppressed,
    NoEligibleOffer,
}

/// Members that match the filter but got no line, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// Filter matched, but no marketing consent for the channel: not in the
    /// segment at all (not counted in `members_matched`).
    pub no_consent: u64,
    /// In an experiment's holdout: recorded as exposed, not written.
    pub holdout: u64,
    /// The channel's daily cap of offers shown (`contact.max_offers_per_day`)
    /// was already used up today.
    pub daily_cap: u64,
    /// Every offer they could get was declined recently and is suppressed
    /// (`contact.suppress_days_after_decline`).
    pub suppressed: u64,
    /// No offer in the catalog is eligible for them on the campaign date.
    pub no_eligible_offer: u64,
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} without consent for the channel, {} in the holdout, {} at the daily cap, {} with every offer suppressed after a decline, {} with no eligible offer",
            self.no_consent, self.holdout, self.daily_cap, self.suppressed, self.no_eligible_offer
        )
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignSummary {
    /// Campaign id.
    pub campaign_id: String,
    /// Members in the store.
    pub members_scanned: u64,
    /// Members in the segment (filter matched and consent for the channel given).
    pub members_matched: u64,
    /// Members written (with at least one offer).
    pub members_written: u64,
    /// Members matching the filter that got no line, by reason (holdout
    /// members are recorded as exposed and not written).
    pub left_out: LeftOut,
    /// Decisions recorded.
    pub decisions_recorded: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Where lines go (the adapter's output: a file, an HTTP stream).
pub trait CampaignSink {
    /// Writes output bytes (whole lines).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Progress: members scanned so far.
    fn progress(&mut self, _scanned: u64) {}
}

/// Where a run's decisions go, in scan order, before their lines are
/// written.
pub trait Recorder {
    /// Records a block of decisions.
    fn record(&mut self, records: Vec<DecisionRecord>) -> std::io::Result<()>;
}

/// Commits a campaign's decisions as their lines are written (a decision
/// is remembered before its line can reach anyone), with a bounded number
/// of log writes in flight.
pub struct CampaignLog {
    durable: Durable,
    now_ms: i64,
    in_flight: std::collections::VecDeque<Pending>,
}

/// Log writes a campaign keeps in flight before it waits for the oldest.
const MAX_IN_FLIGHT: usize = 64;

impl CampaignLog {
    /// Records a campaign run at `now_ms` through `durable`.
    pub fn new(durable: Durable, now_ms: i64) -> CampaignLog {
        CampaignLog {
            durable,
            now_ms,
            in_flight: Default::default(),
        }
    }

    /// Waits until every decision recorded is durable (writes complete in
    /// order: the last one durable means all are).
    pub fn finish(mut self) -> Result<(), LogError> {
        match self.in_flight.pop_back() {
            Some(last) => wait(last).map(|_| ()),
            None => Ok(()),
        }
    }
}

impl Recorder for CampaignLog {
    fn record(&mut self, records: Vec<DecisionRecord>) -> std::io::Result<()> {
        self.in_flight
            .push_back(self.durable.commit_decisions(records, self.now_ms));
        if self.in_flight.len() > MAX_IN_FLIGHT {
            if let Some(oldest) = self.in_flight.pop_front() {
                wait(oldest).map_err(std::io::Error::other)?;
            }
        }
        Ok(())
    }
}

/// Waits for a log write from a thread that is not running async tasks
/// (a blocking worker of the server's runtime, or the CLI).
fn wait(p: Pending) -> Result<u64, LogError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(p),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| LogError::Unavailable(format!("cannot start a runtime: {e}")))?
            .block_on(p),
    }
}

/// How a run behaves beyond the campaign itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Offers a member may be shown per day on the channel (contact policy).
    pub daily_cap: usize,
    /// Days a decline suppresses an offer, where the offer sets none.
    pub suppress_days_default: u32,
    /// Whether decisions are recorded (false: a members file, nothing to attribute to).
    pub record: bool,
    /// Output format.
    pub format: Format,
    /// Scoring threads.
    pub threads: usize,
    /// Signs each offer's `token` (accepts need it); None: no tokens.
    pub tokens: Option<crate::tokens::TokenKey>,
}

/// Members per block scored together.
pub const BLOCK: usize = 1024;

/// The CSV header for `offers` offers per row.
pub fn csv_header(offers: usize) -> String {
    let mut h = String::from(
        "member_id,decision_id,experiments,tier,points,next_tier,spend_to_next_tier_cny,value_segment",
    );
    for k in 1..=offers {
        for f in [
            "id",
            "category",
            "title",
            "price",
            "currency",
            "points_price",
            "score",
            "expected_value",
            "expires_at",
            "reasons",
            "token",
        ] {
            h.push_str(&format!(",offer{k}_{f}"));
        }
    }
    h.push('\n');
    h
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    out.push(b',');
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn write_line(out: &mut Vec<u8>, format: Format, offers_per_row: usize, line: &Line<'_>) {
    match format {
        Format::Ndjson => {
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, line);
            out.push(b'\n');
        }
        Format::Csv => {
            out.extend_from_slice(line.member_id.as_bytes());
            csv_field(out, line.decision_id);
            let exps: Vec<String> = line
                .experiments
                .iter()
                .map(|a| format!("{}={}", a.experiment, a.variant))
                .collect();
            csv_field(out, &exps.join(";"));
            let m = &line.member;
            csv_field(out, m.tier.as_str());
            csv_field(out, &m.points.to_string());
            csv_field(out, m.next_tier.map_or("", |t| t.as_str()));
            let gap = m.spend_to_next_tier_cny.map(|g| g.to_string());
            csv_field(out, gap.as_deref().unwrap_or(""));
            csv_field(out, m.value_segment);
            for k in 0..offers_per_row {
                match line.offers.get(k) {
                    Some(o) => {
                        csv_field(out, o.offer_id);
                        csv_field(out, o.category);
                        csv_field(out, o.title);
                        csv_field(
                            out,
                            &o.price
                                .as_ref()
                                .map(|p| p.amount.to_string())
                                .unwrap_or_default(),
                        );
                        csv_field(
                            out,
                            o.price.as_ref().map(|p| p.currency.as_str()).unwrap_or(""),
                        );
                        csv_field(
                            out,
                            &o.points_price.map(|p| p.to_string()).unwrap_or_default(),
                        );
                        csv_field(out, &o.score.to_string());
                        csv_field(out, &o.expected_value.to_string());
                        csv_field(out, &o.expires_at);
                        // CSV is read by people: the English sentences, joined.
                        csv_field(out, &o.reasons.joined_text(Lang::En, " | "));
                        csv_field(out, o.token.as_deref().unwrap_or(""));
                    }
                    None => {
                        for _ in 0..11 {
                            out.push(b',');
                        }
                    }
                }
            }
            out.push(b'\n');
        }
    }
}

/// Scores one block of members of the segment.
#[allow(clippy::too_many_arguments)]
fn score_block(
    engine: &Engine,
    c: &Campaign,
    plan: &Plan,
    ledger: Option<&Ledger>,
    opts: &RunOptions,
    seq: u64,
    block: Vec<(Box<str>, Member)>,
    scanned: u64,
) -> BlockResult {
    let ctx = DecisionContext {
        itinerary: None,
        channel: c.channel,
        now: c.now,
    };
    let mut x = Array2::<f32>::zeros((block.len(), N_FEATURES));
    let mut feats = Vec::with_capacity(block.len());
    for (r, (_, m)) in block.iter().enumerate() {
        let f = features::build(Some(m), &ctx, &engine.thresholds);
        for (j, v) in f.iter().enumerate() {
            x[[r, j]] = *v;
        }
        feats.push(f);
    }
    // One matrix product for the whole block: members × candidate offers.
    let z = x.dot(&plan.weights_t);
    let now_ms = c.now.timestamp_millis();
    let mut bytes = Vec::with_capacity(block.len() * 256);
    let mut members = Vec::with_capacity(block.len());
    for (r, (id, m)) in block.iter().enumerate() {
        let audience = Audience::of(
            engine,
            ledger,
            Ask {
                member_id: id,
                channel: c.channel,
                itinerary: None,
                max_offers: c.offers,
                daily_cap: opts.daily_cap,
                now_ms,
            },
        );
        let policy = &audience.policy;
        let (ranking, max_offers, categories) =
            (policy.ranking, policy.max_offers, policy.categories);
        let assignments = policy.assignments.clone();
        let decision_id = format!("cmp-{}-{}", c.id, id);
        if audience.holdout() {
            members.push((
                bytes.len(),
                opts.record.then(|| DecisionRecord {
                    id: decision_id,
                    member_id: id.to_string(),
                    channel: c.channel,
                    created_ms: now_ms,
                    offers: Vec::new(),
                    experiments: assignments,
                    covariate: m.qualifying_spend_12m,
                    features: Vec::new(),
                }),
                Some(LeftOutReason::Holdout),
            ));
            continue;
        }
        let cands: Vec<usize> = match categories {
            None => plan.candidates.clone(),
            Some(cats) => plan
                .candidates
                .iter()
                .copied()
                .filter(|i| cats.contains(&engine.catalog.offers[*i].category))
                .collect(),
        };
        let zrow = z.row(r);
        let variant_model = !std::sync::Arc::ptr_eq(policy.table, &engine.table);
        let input = DecisionInput {
            member: Some(m),
            itinerary: None,
            channel: c.channel,
            now: c.now,
            max_offers,
            ranking,
        };
        let score = |i: usize| {
            if variant_model {
                // A variant with a model of its own scores with it.
                policy.table.propensity(i, &feats[r])
            } else {
                let k = plan.slot[i];
                crate::model::sigmoid(zrow[k] + plan.bias[k])
            }
        };
        let mut d = decide_scored(engine, &input, &audience, Some(&cands), score);
        // Validity runs from the send time on the campaign's channel.
        for o in &mut d.offers {
            let offer = &engine.catalog.offers[o.index];
            o.expires_at = crate::decision::expiry_from(offer, c.channel, c.send_at, None);
        }
        let left_out = if !d.offers.is_empty() {
            None
        } else if audience.remaining_contacts() == 0 {
            Some(LeftOutReason::DailyCap)
        } else if !audience.suppresses_any() {
            Some(LeftOutReason::NoEligibleOffer)
        } else {
            // Rare (a member with offers declined recently and nothing
            // else to show): scored again without the suppressions to say which.
            let unsuppressed = audience.ignoring_suppressions();
            let again = decide_scored(engine, &input, &unsuppressed, Some(&cands), score);
            Some(if again.offers.is_empty() {
                LeftOutReason::NoEligibleOffer
            } else {
                LeftOutReason::Suppressed
            })
        };
        if d.offers.is_empty() && assignments.is_empty() {
            members.push((bytes.len(), None, left_out));
            continue;
        }
        let issued: Vec<IssuedOffer> = if opts.record {
            d.offers
                .iter()
                .map(|o| {
                    let offer = &engine.catalog.offers[o.index];
                    issued_offer(offer, o, None, opts.suppress_days_default)
                })
                .collect()
        } else {
            Vec::new()
        };
        if !d.offers.is_empty() {
            // The decision's part of the tokens is hashed once per member.
            let signer = opts
                .tokens
                .as_ref()
                .map(|k| k.for_decision(&decision_id, id));
            let line = Line {
                member_id: id,
                decision_id: &decision_id,
                experiments: &assignments,
                member: MemberFields::of(m, Day::from_date(c.date), &engine.thresholds),
                offers: d
                    .offers
                    .into_iter()
                    .map(|o| {
                        let offer = &engine.catalog.offers[o.index];
                        match &signer {
                            Some(s) => OfferOut::new_signed(offer, o, s, &decision_id, id),
                            None => OfferOut::new(offer, o),
                        }
                    })
                    .collect(),
            };
            write_line(&mut bytes, opts.format, c.offers, &line);
        }
        members.push((
            bytes.len(),
            opts.record.then(|| DecisionRecord {
                id: decision_id,
                member_id: id.to_string(),
                channel: c.channel,
                created_ms: now_ms,
                offers: issued,
                experiments: assignments,
                covariate: m.qualifying_spend_12m,
                // Campaign decisions do not feed the adaptive models (they
                // are scored a block at a time and accepted via other paths).
                features: Vec::new(),
            }),
            left_out,
        ));
    }
    BlockResult {
        seq,
        bytes,
        members,
        scanned,
    }
}

/// Runs a campaign over `store`, writing lines and records to `sink`.
/// `ledger` (the live state) applies suppressions and daily caps; without
/// one (a members file) none apply. `stop` ends the scan early (client gone).
#[allow(clippy::too_many_arguments)]
pub fn run(
    engine: &Engine,
    campaign: &Campaign,
    store: &crate::state::members::MemberStore,
    ledger: Option<&Ledger>,
    opts: RunOptions,
    sink: &mut dyn CampaignSink,
    mut log: Option<&mut dyn Recorder>,
    stop: &AtomicBool,
) -> std::io::Result<CampaignSummary> {
    let started = std::time::Instant::now();
    let plan = plan(engine, campaign);
    let today = Day::from_date(campaign.date);
    let threads = opts.threads.max(1);
    let format = opts.format;
    let mut summary = CampaignSummary {
        campaign_id: campaign.id.clone(),
        ..Default::default()
    };
    if format == Format::Csv {
        sink.write(csv_header(campaign.offers).as_bytes())?;
    }
    let scanned = AtomicU64::new(0);
    let matched = AtomicU64::new(0);
    let no_consent = AtomicU64::new(0);
    // Bounded queues: at most a few blocks in flight, whatever the segment size.
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<(Box<str>, Member)>, u64)>(threads * 2);
    let work_rx = std::sync::Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::sync_channel::<BlockResult>(threads * 2);
    let mut io_error = None;
    std::thread::scope(|s| {
        // Scanner: the store in its deterministic order, filtered, cut into blocks.
        s.spawn(|| {
            let mut block = Vec::with_capacity(BLOCK);
            let mut seq = 0u64;
            let th = engine.thresholds;
            store.for_each(|id, m| {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let n = scanned.fetch_add(1, Ordering::Relaxed) + 1;
                // Consent is absolute: a member without it is not in the
                // segment at all (not even as a holdout exposure, which would
                // unbalance the experiment's arms); only counted.
                if !campaign.filter.matches(m, today, &th) {
                    return;
                }
                let consented = campaign
                    .channel
                    .required_consent()
                    .is_none_or(|ch| m.consent.granted(ch));
                if !consented {
                    no_consent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                matched.fetch_add(1, Ordering::Relaxed);
                block.push((Box::<str>::from(id), *m));
                if block.len() == BLOCK {
                    let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK));
                    if work_tx.send((seq, full, n)).is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    seq += 1;
                }
            });
            let _ = work_tx.send((seq, block, scanned.load(Ordering::Relaxed)));
            drop(work_tx);
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let plan = &plan;
            let opts = &opts;
            s.spawn(move || loop {
                let job = {
                    let rx = work_rx.lock().unwrap_or_else(|e| e.into_inner());
                    rx.recv()
                };
                let Ok((seq, block, n)) = job else { break };
                let r = score_block(engine, campaign, plan, ledger, opts, seq, block, n);
                if done_tx.send(r).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Writer (this thread): blocks in scan order, cut exactly at the limit.
        let mut pending: BTreeMap<u64, BlockResult> = BTreeMap::new();
        let mut next = 0u64;
        let mut limit_hit = false;
        for r in done_rx.iter() {
            pending.insert(r.seq, r);
            while let Some(r) = pending.remove(&next) {
                next += 1;
                if limit_hit || io_error.is_some() {
                    continue;
                }
                let mut start = 0usize;
                let mut cut = r.bytes.len();
                let mut records = Vec::with_capacity(r.members.len());
                for (end, rec, left_out) in r.members {
                    let written = end > start;
                    if written && campaign.limit.is_some_and(|l| summary.members_written >= l) {
                        cut = start;
                        limit_hit = true;
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    if written {
                        summary.members_written += 1;
                    }
                    let l = &mut summary.left_out;
                    match left_out {
                        Some(LeftOutReason::Holdout) => l.holdout += 1,
                        Some(LeftOutReason::DailyCap) => l.daily_cap += 1,
                        Some(LeftOutReason::Suppressed) => l.suppressed += 1,
                        Some(LeftOutReason::NoEligibleOffer) => l.no_eligible_offer += 1,
                        None => {}
                    }
                    if let Some(rec) = rec {
                        records.push(rec);
                    }
                    start = end;
                }
                summary.decisions_recorded += records.len() as u64;
                // Record first: a decision is remembered before its line can reach anyone.
                let result = match (&mut log, records.is_empty()) {
                    (Some(log), false) => log.record(records),
                    _ => Ok(()),
                }
                .and_then(|()| sink.write(&r.bytes[..cut]));
                if let Err(e) = result {
                    io_error = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
                sink.progress(r.scanned);
            }
        }
    });
    if let Some(e) = io_error {
        return Err(e);
    }
    summary.members_scanned = scanned.load(Ordering::Relaxed);
    summary.members_matched = matched.load(Ordering::Relaxed);
    summary.left_out.no_consent = no_consent.load(Ordering::Relaxed);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

impl super::Service {
    /// Runs a campaign on the live state, streaming its lines to `sink`.
    /// Suppressions and daily caps apply; every decision is committed
    /// (remembered at once, durable before the run is reported done), and
    /// then the run's summary, with `segment` (the filter as given).
    pub fn run_campaign(
        &self,
        campaign: &Campaign,
        segment: &str,
        format: Format,
        sink: &mut dyn CampaignSink,
        stop: &AtomicBool,
    ) -> std::io::Result<CampaignSummary> {
        let engine = self.engine.load_full();
        let settings = self.settings();
        let opts = RunOptions {
            daily_cap: settings.contact.max_offers_per_day.of(campaign.channel) as usize,
            suppress_days_default: settings.contact.suppress_days_after_decline,
            record: true,
            format,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            tokens: Some(self.security().tokens.clone()),
        };
        let started_ms = Utc::now().timestamp_millis();
        let mut log = CampaignLog::new(self.durable().clone(), started_ms);
        let state = self.state();
        let summary = run(
            &engine,
            campaign,
            state.members(),
            Some(state.ledger()),
            opts,
            sink,
            Some(&mut log as &mut dyn Recorder),
            stop,
        )?;
        log.finish().map_err(std::io::Error::other)?;
        let run = crate::records::CampaignRunRecord {
            campaign_id: summary.campaign_id.clone(),
            channel: campaign.channel,
            segment: segment.to_string(),
            started_ms,
            duration_ms: (summary.seconds * 1000.0).round() as u64,
            members_scanned: summary.members_scanned,
            members_matched: summary.members_matched,
            members_written: summary.members_written,
            held_out: summary.left_out.holdout,
            decisions_recorded: summary.decisions_recorded,
        };
        wait(
            self.durable()
                .commit(crate::records::LogRecord::CampaignRun(run), "campaign run"),
        )
        .map_err(std::io::Error::other)?;
        Ok(summary)
    }
}

/// A sink writing to any `Write`, recording nothing (a members file has no log).
pub struct WriteSink<W: Write> {
    /// The output.
    pub out: W,
}

impl<W: Write> CampaignSink for WriteSink<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn bad_filters_are_refused_before_scoring() {
        let base = CampaignDto {
            channel: "email".into(),
            ..Default::default()
        };
        let cases = [
            (
                CampaignDto {
                    channel: "fax".into(),
                    ..base.clone()
                },
                "channel",
            ),
            (
                CampaignDto {
                    channel: "checkout".into(),
                    ..base.clone()
                },
                "channel",
            ),
            (
                CampaignDto {
                    tiers: Some(vec!["gold".into(), "bronze".into()]),
                    ..base.clone()
                },
                "tiers[1]",
            ),
            (
                CampaignDto {
                    home_airports: Some(vec!["PEKK".into()]),
                    ..base.clone()
                },
                "home_airports[0]",
            ),
            (
                CampaignDto {
                    min_points: Some(10),
                    max_points: Some(5),
                    ..base.clone()
                },
                "min_points",
            ),
            (
                CampaignDto {
                    min_days_since_flight: Some(100),
                    max_days_since_flight: Some(5),
                    ..base.clone()
                },
                "min_days_since_flight",
            ),
            (
                CampaignDto {
                    birth_month: Some(13),
                    ..base.clone()
                },
                "birth_month",
            ),
            (
                CampaignDto {
                    tags: Some(vec!["vip".into()]),
                    ..base.clone()
                },
                "tags[0]",
            ),
            (
                CampaignDto {
                    offers: Some(0),
                    ..base.clone()
                },
                "offers",
            ),
            (
                CampaignDto {
                    date: Some("2020-01-01".into()),
                    ..base.clone()
                },
                "date",
            ),
            (
                CampaignDto {
                    limit: Some(0),
                    ..base.clone()
                },
                "limit",
            ),
        ];
        for (dto, field) in cases {
            assert_eq!(dto.into_campaign(now()).unwrap_err().field, field);
        }
        assert!(base.into_campaign(now()).is_ok());
    }

    #[test]
    fn csv_quotes_commas_and_quotes() {
        let mut out = Vec::new();
        csv_field(&mut out, "a, \"b\"");
        assert_eq!(out, b",\"a, \"\"b\"\"\"");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let dto = CampaignDto {
            channel: "fax".into(),
            tiers: Some(vec!["gold".into(), "tin".into()]),
            birth_month: Some(13),
            offers: Some(11),
            date: Some("2020-01-01".into()),
            ..Default::default()
        };
        let fields: Vec<String> = dto
            .into_campaign_all(now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["channel", "tiers[1]", "birth_month", "offers", "date"]
        );
    }
}

/// A campaign run as the Campaigns page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignRunOut {
    /// Campaign id.
    pub campaign_id: String,
    /// Channel.
    pub channel: Channel,
    /// The segment filter as given (JSON text; `{}`: every member with consent).
    pub segment: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// Members in the store.
    pub members_scanned: u64,
    /// Members in the segment (filter matched, consent given): the members scored.
    pub members_scored: u64,
    /// Members written (with at least one offer).
    pub members_written: u64,
    /// Members in an experiment holdout (recorded as exposed, not written).
    pub held_out: u64,
    /// Decisions recorded.
    pub decisions_recorded: u64,
    /// Accepts (less refunds) of the decisions issued under this campaign id,
    /// by every run with the id.
    pub accepts: u64,
}

impl super::Service {
    /// The campaign runs kept, newest first, with their accepts.
    pub fn campaign_runs(&self) -> Vec<CampaignRunOut> {
        let runs = self.state().campaign_runs();
        let mut out: Vec<CampaignRunOut> = runs
            .runs()
            .into_iter()
            .map(|r| CampaignRunOut {
                accepts: runs.accepts(&r.campaign_id),
                started_at: chrono::DateTime::from_timestamp_millis(r.started_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                campaign_id: r.campaign_id,
                channel: r.channel,
                segment: r.segment,
                duration_ms: r.duration_ms,
                members_scanned: r.members_scanned,
                members_scored: r.members_matched,
                members_written: r.members_written,
                held_out: r.held_out,
                decisions_recorded: r.decisions_recorded,
            })
            .collect();
        out.reverse();
        out
    }
}
