//! Domain types of the decision core: tiers, channels, cabins, airports,
//! money, compact member records and checkout requests.
//!
//! Everything here is plain data. Values are parsed into these types at the
//! edge (HTTP, NDJSON, TOML), so the core never sees an unknown tier, a bad
//! airport code or a negative fare.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub mod airports;

use self::airports::Airport;

/// A typed validation failure that names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `itinerary.cabin`.
    pub field: String,
    /// What is wrong with it, for a human.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Loyalty tier, ordered from lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Tier {
    /// Entry tier.
    Base = 0,
    /// Priority check-in and boarding.
    Silver = 1,
    /// Adds lounge access and an upgrade voucher.
    Gold = 2,
    /// As gold, higher earn rates.
    Platinum = 3,
    /// Adds ground transport.
    Diamond = 4,
}

impl Tier {
    /// All tiers, lowest first.
    pub const ALL: [Tier; 5] = [
        Tier::Base,
        Tier::Silver,
        Tier::Gold,
        Tier::Platinum,
        Tier::Diamond,
    ];

    /// The snake_case name used in every API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Base => "base",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Platinum => "platinum",
            Tier::Diamond => "diamond",
        }
    }

    /// Parses a tier name.
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The next tier up, if any.
    pub fn next(self) -> Option<Tier> {
        Tier::ALL.get(self as usize + 1).copied()
    }

    /// Benefits the tier already includes; a member is never sold these.
    pub fn benefits(self) -> Benefits {
        let mut b = Benefits::empty();
        if self >= Tier::Silver {
            b = b.with(Benefit::PriorityBoarding);
        }
        if self >= Tier::Gold {
            b = b
                .with(Benefit::LoungeAccess)
                .with(Benefit::UpgradeVoucher)
                .with(Benefit::ExtraBaggage);
        }
        if self >= Tier::Diamond {
            b = b.with(Benefit::GroundTransport);
        }
        b
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A benefit a tier can include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Benefit {
    /// Priority check-in and boarding (silver and above).
    PriorityBoarding = 0,
    /// Lounge access (gold and above).
    LoungeAccess = 1,
    /// A complimentary upgrade voucher (gold and above).
    UpgradeVoucher = 2,
    /// Ground transport to and from the airport (diamond).
    GroundTransport = 3,
    /// An extra checked bag (gold and above): never sold to those tiers.
    ExtraBaggage = 4,
}

/// A small set of [`Benefit`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Benefits(u8);

impl Benefits {
    /// No benefit.
    pub fn empty() -> Self {
        Benefits(0)
    }
    /// The set with `b` added.
    pub fn with(self, b: Benefit) -> Self {
        Benefits(self.0 | 1 << (b as u8))
    }
    /// Whether `b` is in the set.
    pub fn contains(self, b: Benefit) -> bool {
        self.0 & (1 << (b as u8)) != 0
    }
}

/// When a member whose rolling 12-month qualifying spend no longer earns
/// their tier moves down (upgrades are immediate, on the event that earns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeRule {
    /// At the start of the membership anniversary month (the month of
    /// `joined`), to the tier the 12 full months before earn. The default:
    /// a member keeps a tier for the rest of the membership year.
    #[default]
    Anniversary,
    /// After `grace_months` month starts in a row at which the 12 full months
    /// before earn a lower tier; at the next, to the tier they earn.
    Grace,
}

/// Qualifying-spend thresholds (CNY over the rolling 12 months) for each
/// tier, and the programme's downgrade rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierThresholds {
    /// Spend needed for silver.
    pub silver: f64,
    /// Spend needed for gold.
    pub gold: f64,
    /// Spend needed for platinum.
    pub platinum: f64,
    /// Spend needed for diamond.
    pub diamond: f64,
    /// When a tier the spend no longer earns is taken away.
    #[serde(default)]
    pub downgrade: DowngradeRule,
    /// Month starts a member keeps a tier the spend no longer earns, under
    /// the `grace` rule (0 to 24).
    #[serde(default = "default_grace_months")]
    pub grace_months: u8,
}

fn default_grace_months() -> u8 {
    3
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            silver: 10_000.0,
            gold: 50_000.0,
            platinum: 80_000.0,
            diamond: 100_000.0,
            downgrade: DowngradeRule::Anniversary,
            grace_months: default_grace_months(),
        }
    }
}

impl TierThresholds {
    /// Threshold of a tier (0 for base).
    pub fn of(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Base => 0.0,
            Tier::Silver => self.silver,
            Tier::Gold => self.gold,
            Tier::Platinum => self.platinum,
            Tier::Diamond => self.diamond,
        }
    }

    /// The tier that a given qualifying spend earns.
    pub fn tier_for(&self, spend: f64) -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| spend >= self.of(*t))
            .unwrap_or(Tier::Base)
    }

    /// Checks that thresholds increase strictly.
    pub fn validate(&self) -> Result<(), FieldError> {
        let v = [self.silver, self.gold, self.platinum, self.diamond];
        if v.iter().any(|x| !x.is_finite() || *x <= 0.0) || v.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FieldError::new(
                "tiers",
                "thresholds must be positive and strictly increasing",
            ));
        }
        if self.grace_months > 24 {
            return Err(FieldError::new(
                "tiers.grace_months",
                "must be from 0 to 24",
            ));
        }
        Ok(())
    }
}

/// Marketing-consent channels a member can opt in or out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChannel {
    /// Email marketing.
    Email,
    /// SMS marketing.
    Sms,
    /// App push / in-app marketing.
    App,
}

impl ConsentChannel {
    /// All consent channels.
    pub const ALL: [ConsentChannel; 3] = [
        ConsentChannel::Email,
        ConsentChannel::Sms,
        ConsentChannel::App,
    ];
    fn bit(self) -> u8 {
        match self {
            ConsentChannel::Email => 1,
            ConsentChannel::Sms => 2,
            ConsentChannel::App => 4,
        }
    }
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentChannel::Email => "email",
            ConsentChannel::Sms => "sms",
            ConsentChannel::App => "app",
        }
    }
}

/// Consent flags, one bit per [`ConsentChannel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consent(u8);

impl Consent {
    /// Consent from the three flags.
    pub fn new(email: bool, sms: bool, app: bool) -> Self {
        let mut c = Consent(0);
        c.set(ConsentChannel::Email, email);
        c.set(ConsentChannel::Sms, sms);
        c.set(ConsentChannel::App, app);
        c
    }
    /// Whether the member consented to `ch`.
    pub fn granted(self, ch: ConsentChannel) -> bool {
        self.0 & ch.bit() != 0
    }
    /// Raw bits (for snapshots).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// From raw bits; unknown bits are dropped.
    pub fn from_bits(b: u8) -> Consent {
        Consent(b & 7)
    }
    /// Grants or withdraws consent for `ch`.
    pub fn set(&mut self, ch: ConsentChannel, granted: bool) {
        if granted {
            self.0 |= ch.bit();
        } else {
            self.0 &= !ch.bit();
        }
    }
}

/// Serialized form of [`Consent`]: `{"email": bool, "sms": bool, "app": bool}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentDto {
    /// Email marketing consent.
    pub email: bool,
    /// SMS marketing consent.
    pub sms: bool,
    /// App marketing consent.
    pub app: bool,
}

/// Channel a decision is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The booking flow (transactional: no marketing consent needed).
    Checkout,
    /// The airline app (needs app consent).
    App,
    /// Email (needs email consent).
    Email,
    /// Airport kiosk (transactional).
    Kiosk,
    /// SMS (needs sms consent); campaigns only.
    Sms,
}

impl Channel {
    /// All channels.
    pub const ALL: [Channel; 5] = [
        Channel::Checkout,
        Channel::App,
        Channel::Email,
        Channel::Kiosk,
        Channel::Sms,
    ];
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Checkout => "checkout",
            Channel::App => "app",
            Channel::Email => "email",
            Channel::Kiosk => "kiosk",
            Channel::Sms => "sms",
        }
    }
    /// Parses a channel name.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
    /// The marketing consent this channel needs, if it is a marketing channel.
    /// Checkout and kiosk answer a member who is buying right now, so they are
    /// transactional and need none.
    pub fn required_consent(self) -> Option<ConsentChannel> {
        match self {
            Channel::Checkout | Channel::Kiosk => None,
            Channel::App => Some(ConsentChannel::App),
            Channel::Email => Some(ConsentChannel::Email),
            Channel::Sms => Some(ConsentChannel::Sms),
        }
    }
    /// Dense index, for per-channel counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Cabin of the itinerary.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Cabin {
    /// Economy.
    Economy,
    /// Premium economy.
    PremiumEconomy,
    /// Business.
    Business,
    /// First.
    First,
}

impl Cabin {
    /// All cabins, lowest first.
    pub const ALL: [Cabin; 4] = [
        Cabin::Economy,
        Cabin::PremiumEconomy,
        Cabin::Business,
        Cabin::First,
    ];
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cabin::Economy => "economy",
            Cabin::PremiumEconomy => "premium_economy",
            Cabin::Business => "business",
            Cabin::First => "first",
        }
    }
}

/// Offer category; the snake_case names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Cabin upgrade, for cash or points.
    Upgrade,
    /// Lounge pass.
    Lounge,
    /// Partner bundle (hotel, car rental).
    PartnerBundle,
    /// Extra baggage.
    Baggage,
    /// Preferred seat.
    Seat,
    /// In-flight Wi-Fi.
    Wifi,
    /// Miles booster (double points).
    MilesBooster,
    /// Tier fast-track for members near the next tier.
    TierFastTrack,
    /// Retention offer for lapsing high-value members.
    Retention,
    /// Co-brand credit card.
    CobrandCard,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 10] = [
        Category::Upgrade,
        Category::Lounge,
        Category::PartnerBundle,
        Category::Baggage,
        Category::Seat,
        Category::Wifi,
        Category::MilesBooster,
        Category::TierFastTrack,
        Category::Retention,
        Category::CobrandCard,
    ];
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Upgrade => "upgrade",
            Category::Lounge => "lounge",
            Category::PartnerBundle => "partner_bundle",
            Category::Baggage => "baggage",
            Category::Seat => "seat",
            Category::Wifi => "wifi",
            Category::MilesBooster => "miles_booster",
            Category::TierFastTrack => "tier_fast_track",
            Category::Retention => "retention",
            Category::CobrandCard => "cobrand_card",
        }
    }
}

/// Known member tags. Tags are a closed vocabulary so that they fit a bitset
/// in the compact record and features can rely on them; an unknown tag is a
/// field error naming `tags`.
pub const TAGS: [&str; 12] = [
    "business",
    "leisure",
    "family",
    "student",
    "senior",
    "luxury",
    "budget",
    "frequent_international",
    "corporate",
    "golfer",
    "foodie",
    "cobrand_holder",
];

/// A set of tags from [`TAGS`], one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Tags(u16);

impl Tags {
    /// Index of a tag name in [`TAGS`].
    pub fn index_of(name: &str) -> Option<usize> {
        TAGS.iter().position(|t| *t == name)
    }
    /// Parses tag names.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Tags, FieldError> {
        let mut t = Tags(0);
        for (i, n) in names.iter().enumerate() {
            let idx = Tags::index_of(n.as_ref()).ok_or_else(|| {
                FieldError::new(
                    format!("tags[{i}]"),
                    format!(
                        "unknown tag {:?}; known tags: {}",
                        n.as_ref(),
                        TAGS.join(", ")
                    ),
                )
            })?;
            t.0 |= 1 << idx;
        }
        Ok(t)
    }
    /// Whether the named tag is set (false for unknown names).
    pub fn has(self, name: &str) -> bool {
        Tags::index_of(name).is_some_and(|i| self.0 & (1 << i) != 0)
    }
    /// Whether the tag with index `i` is set.
    pub fn has_index(self, i: usize) -> bool {
        i < 16 && self.0 & (1 << i) != 0
    }
    /// Whether every tag of `other` is in `self`.
    pub fn contains_all(self, other: Tags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any tag of `other` is in `self`.
    pub fn intersects(self, other: Tags) -> bool {
        self.0 & other.0 != 0
    }
    /// Tag names, in vocabulary order.
    pub fn names(self) -> Vec<String> {
        TAGS.iter()
            .enumerate()
            .filter(|(i, _)| self.has_index(*i))
            .map(|(_, n)| (*n).to_string())
            .collect()
    }
    /// Adds a tag by index.
    pub fn insert(&mut self, i: usize) {
        if i < TAGS.len() {
            self.0 |= 1 << i;
        }
    }
    /// Raw bits (for snapshots).
    pub fn bits(self) -> u16 {
        self.0
    }
    /// From raw bits; unknown bits are dropped.
    pub fn from_bits(b: u16) -> Tags {
        Tags(b & ((1u16 << TAGS.len()) - 1))
    }
}

/// An IATA airport code known to the engine's airport table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iata([u8; 3]);

impl Iata {
    /// Parses a code: three upper-case letters present in the airport table.
    pub fn parse(s: &str) -> Result<Iata, String> {
        let b = s.as_bytes();
        if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "{s:?} is not an IATA airport code (three upper-case letters)"
            ));
        }
        let code = Iata([b[0], b[1], b[2]]);
        if airports::lookup(code).is_none() {
            return Err(format!("unknown airport {s:?}"));
        }
        Ok(code)
    }
    /// Builds a code from bytes without checking the table (for the table itself).
    pub const fn from_bytes(b: [u8; 3]) -> Iata {
        Iata(b)
    }
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // The bytes are always ASCII upper-case letters (checked at parse and in the table).
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
    /// The airport this code names.
    pub fn airport(self) -> Option<&'static Airport> {
        airports::lookup(self)
    }
}

impl fmt::Display for Iata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Iata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A money amount; amounts are finite and non-negative once parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// The amount in major units.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: String,
}

impl Money {
    /// Checks amount and currency, naming `field` on error.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if !self.amount.is_finite() || self.amount < 0.0 {
            return Err(FieldError::new(
                format!("{field}.amount"),
                "must be a non-negative number",
            ));
        }
        let c = self.currency.as_bytes();
        if c.len() != 3 || !c.iter().all(|x| x.is_ascii_uppercase()) {
            return Err(FieldError::new(
                format!("{field}.currency"),
                "must be an ISO 4217 code such as \"CNY\"",
            ));
        }
        Ok(())
    }
}

/// A calendar day as days since 1970-01-01, compact for the member record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

impl Day {
    /// The day of a date.
    pub fn from_date(d: NaiveDate) -> Day {
        Day((d - NaiveDate::default()).num_days() as i32)
    }
    /// The date of this day.
    pub fn to_date(self) -> NaiveDate {
        NaiveDate::default() + chrono::Duration::days(self.0 as i64)
    }
    /// The day of an instant (UTC).
    pub fn of(t: DateTime<Utc>) -> Day {
        Day::from_date(t.date_naive())
    }
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(Day::from_date)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_date().format("%Y-%m-%d"))
    }
}

/// A calendar month as months since January 1970 (1970-01 is 0).
pub type Month = u16;

/// The month a day falls in; days outside the years 1970 to 7000 clamp to the ends.
pub fn month_of(d: Day) -> Month {
    use chrono::Datelike;
    // 719,163 days from 0001-01-01 to 1970-01-01.
    let date =
        d.0.checked_add(719_163)
            .and_then(NaiveDate::from_num_days_from_ce_opt);
    match date {
        Some(x) if x.year() >= 1970 => {
            ((x.year() as i64 - 1970) * 12 + x.month0() as i64).min(u16::MAX as i64) as Month
        }
        Some(_) => 0,
        None if d.0 < 0 => 0,
        None => u16::MAX,
    }
}

/// `YYYY-MM` of a month.
pub fn month_name(m: Month) -> String {
    format!("{:04}-{:02}", 1970 + m as u32 / 12, m as u32 % 12 + 1)
}

/// Parses `YYYY-MM` (1970 or later).
pub fn parse_month(s: &str) -> Option<Month> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let y: u32 = y.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if !(1970..=7000).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    Some(((y - 1970) * 12 + m - 1) as Month)
}

/// Qualifying spend and flights by calendar month over the rolling 12
/// months: the current month and the 11 before it (40 bytes).
///
/// Spend is kept per month as a 16-bit count of a unit shared by the
/// member's months, a power of two from 1/16 CNY up: the smallest unit in
/// which the largest month fits (1/8 CNY while every month is under 8,192
/// CNY, 1 CNY under 65,536 CNY). Flights are kept per month up to 255.
///
/// A record that arrives with 12-month totals only (older log records and
/// snapshots, member files without `monthly`) is *undated*: its totals are
/// spread evenly over 12 months (remainders to the newest) whose calendar
/// months are fixed the first time the log time moves the member on: at a
/// month start, the 12 months before it; at a member event, the 12 months
/// ending with the event's month. Until then the totals are exactly as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MonthlyHistory {
    /// Spend in units by age: `[0]` is `month`, `[i]` is `month - i`.
    spend: [u16; 12],
    /// Flights by age.
    flights: [u8; 12],
    /// The newest month held; 0 while undated.
    month: Month,
    /// The unit of `spend` is `2^(exp - 4)` CNY.
    exp: u8,
    /// Month starts in a row at which the spend earned less than the tier
    /// (the `grace` downgrade rule counts them).
    short: u8,
}

/// Largest unit exponent: 2^11 = 2,048 CNY, so a month holds up to about 134 million CNY.
const MAX_EXP: u8 = 15;

impl MonthlyHistory {
    fn unit(exp: u8) -> f64 {
        f64::powi(2.0, exp as i32 - 4)
    }

    /// An undated history holding `spend` CNY and `flights` flights spread
    /// evenly over 12 months.
    pub fn spread(spend: f64, flights: u16) -> MonthlyHistory {
        let spend = if spend.is_finite() {
            spend.max(0.0)
        } else {
            0.0
        };
        let mut exp = 0;
        let mut total = (spend / Self::unit(exp)).round();
        while total > 65_535.0 * 12.0 && exp < MAX_EXP {
            exp += 1;
            total = (spend / Self::unit(exp)).round();
        }
        let total = total.min(65_535.0 * 12.0) as u32;
        let mut h = MonthlyHistory {
            exp,
            ..Default::default()
        };
        for i in 0..12 {
            h.spend[i] = (total / 12 + u32::from((i as u32) < total % 12)) as u16;
            let f = flights as u32;
            h.flights[i] = (f / 12 + u32::from((i as u32) < f % 12)).min(255) as u8;
        }
        h
    }

    /// A history from `(month, spend CNY, flights)` entries, dated at the
    /// newest month; entries older than 11 months before it are left out,
    /// two entries for one month add up.
    pub fn from_months(entries: &[(Month, f64, u8)]) -> MonthlyHistory {
        let newest = entries.iter().map(|e| e.0).max().unwrap_or(0).max(1);
        let mut h = MonthlyHistory {
            month: newest,
            ..Default::default()
        };
        for (m, spend, flights) in entries {
            h.add(*m, *spend, *flights);
        }
        h
    }

    /// Whether its months are fixed.
    pub fn is_dated(&self) -> bool {
        self.month != 0
    }

    /// The newest month held, None while undated.
    pub fn month(&self) -> Option<Month> {
        self.is_dated().then_some(self.month)
    }

    /// Spend over the 12 months, CNY.
    pub fn spend(&self) -> f64 {
        let units: u64 = self.spend.iter().map(|v| *v as u64).sum();
        units as f64 * Self::unit(self.exp)
    }

    /// The unit spend is kept in, CNY.
    pub fn unit_cny(&self) -> f64 {
        Self::unit(self.exp)
    }

    /// Flights over the 12 months.
    pub fn flights(&self) -> u16 {
        self.flights.iter().map(|v| *v as u16).sum()
    }

    /// The months with spend or flights, newest first: (month, CNY, flights);
    /// empty while undated.
    pub fn months(&self) -> Vec<(Month, f64, u8)> {
        if !self.is_dated() {
            return Vec::new();
        }
        (0..12usize)
            .filter(|i| self.spend[*i] > 0 || self.flights[*i] > 0)
            .filter(|i| (*i as u16) <= self.month)
            .map(|i| {
                (
                    self.month - i as u16,
                    self.spend[i] as f64 * Self::unit(self.exp),
                    self.flights[i],
                )
            })
            .collect()
    }

    /// Fixes an undated history's newest month at `month`; a dated one is unchanged.
    pub fn date(&mut self, month: Month) {
        if !self.is_dated() {
            self.month = month.max(1);
        }
    }

    /// Moves a dated history on to `month`: months older than 11 before it
    /// age out. An earlier month or an undated history is left as it is.
    pub fn roll_to(&mut self, month: Month) {
        if !self.is_dated() || month <= self.month {
            return;
        }
        let by = (month - self.month) as usize;
        if by >= 12 {
            self.spend = [0; 12];
            self.flights = [0; 12];
        } else {
            self.spend.copy_within(0..12 - by, by);
            self.flights.copy_within(0..12 - by, by);
            self.spend[..by].fill(0);
            self.flights[..by].fill(0);
        }
        self.month = month;
        // Back to the finest unit the remaining months allow (exact: doubling).
        while self.exp > 0 && self.spend.iter().all(|v| *v <= 32_767) {
            self.exp -= 1;
            for v in &mut self.spend {
                *v *= 2;
            }
        }
    }

    /// Adds spend and flights in `month` to a dated history; a month older
    /// than its window is left out (false), a newer one moves it on first.
    pub fn add(&mut self, month: Month, spend: f64, flights: u8) -> bool {
        self.roll_to(month);
        if !self.is_dated() || u32::from(month) + 11 < u32::from(self.month) || month > self.month {
            return false;
        }
        let i = (self.month - month) as usize;
        self.flights[i] = self.flights[i].saturating_add(flights);
        let spend = if spend.is_finite() {
            spend.max(0.0)
        } else {
            0.0
        };
        loop {
            let units = (spend / Self::unit(self.exp)).round();
            let sum = self.spend[i] as f64 + units;
            if sum <= 65_535.0 {
                self.spend[i] = sum as u16;
                return true;
            }
            if self.exp == MAX_EXP {
                self.spend[i] = u16::MAX;
                return true;
            }
            // A coarser unit for every month of the member.
            self.exp += 1;
            for v in &mut self.spend {
                *v = v.div_ceil(2);
            }
        }
    }

    /// Month starts in a row the spend earned less than the tier.
    pub fn months_short(&self) -> u8 {
        self.short
    }

    /// Sets the count of month starts short of the tier.
    pub fn set_months_short(&mut self, n: u8) {
        self.short = n;
    }

    /// The raw parts, for the log and snapshots: (spend units, flights,
    /// newest month, unit exponent, months short).
    pub fn to_raw(&self) -> ([u16; 12], [u8; 12], Month, u8, u8) {
        (self.spend, self.flights, self.month, self.exp, self.short)
    }

    /// From raw parts; an exponent out of range is clamped.
    pub fn from_raw(spend: [u16; 12], flights: [u8; 12], month: Month, exp: u8, short: u8) -> Self {
        MonthlyHistory {
            spend,
            flights,
            month,
            exp: exp.min(MAX_EXP),
            short,
        }
    }
}

/// Compact in-memory member record (68 bytes, a test checks it). The
/// member id is the key of the store and is not repeated here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// Qualifying spend over the rolling 12 months, CNY: the sum of
    /// `history` (exactly as given while the history is undated).
    pub qualifying_spend_12m: f32,
    /// Points balance.
    pub points: u32,
    /// Day of the last flight, if any.
    pub last_flight: Option<Day>,
    /// Day the member joined.
    pub joined: Day,
    /// Qualifying spend and flights by month over the rolling 12 months.
    pub history: MonthlyHistory,
    /// Tags bitset.
    pub tags: Tags,
    /// Home airport.
    pub home_airport: Iata,
    /// Loyalty tier.
    pub tier: Tier,
    /// Birth month 1-12.
    pub birth_month: u8,
    /// Marketing consent flags.
    pub consent: Consent,
}

impl Member {
    /// Flights over the rolling 12 months.
    pub fn flights_12m(&self) -> u16 {
        self.history.flights()
    }

    /// Sets the 12-month totals as one undated spread (the form of a record
    /// without monthly history).
    pub fn set_totals(&mut self, spend: f64, flights: u16) {
        self.history = MonthlyHistory::spread(spend, flights);
        self.qualifying_spend_12m = spend as f32;
    }

    /// Recomputes the spend total from a dated history.
    pub fn refresh_totals(&mut self) {
        if self.history.is_dated() {
            self.qualifying_spend_12m = self.history.spend() as f32;
        }
    }
}

/// One month of a member's history in the NDJSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonthRecord {
    /// Calendar month, `YYYY-MM`.
    pub month: String,
    /// Qualifying spend in the month, CNY.
    #[serde(default)]
    pub qualifying_spend: f64,
    /// Flights in the month (0 to 255).
    #[serde(default)]
    pub flights: i64,
}

/// The member NDJSON schema (one object a line); also the body of
/// `PUT /v1/members/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRecord {
    /// Member id (non-empty, at most 64 bytes).
    pub member_id: String,
    /// Tier name.
    pub tier: String,
    /// Points balance (non-negative integer).
    pub points: i64,
    /// Qualifying spend, CNY, last 12 months.
    pub qualifying_spend_12m: f64,
    /// Flights in the last 12 months.
    pub flights_12m: i64,
    /// Last flight date `YYYY-MM-DD`, or null.
    pub last_flight: Option<String>,
    /// Join date `YYYY-MM-DD`.
    pub joined: String,
    /// Home airport IATA code.
    pub home_airport: String,
    /// Birth month 1-12.
    pub birth_month: i64,
    /// Marketing consent per channel.
    pub consent: ConsentDto,
    /// Tags from the known vocabulary.
    pub tags: Vec<String>,
    /// Optional: qualifying spend and flights by month, at most 12 months
    /// ending with the newest given; the 12-month totals must then equal
    /// their sums (spend to 1 CNY, or to the unit months are kept in, see
    /// [`MonthlyHistory`]). Without it the totals are spread evenly
    /// over 12 months (see [`MonthlyHistory`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Vec<MonthRecord>>,
}

/// Largest accepted member id, in bytes.
pub const MAX_MEMBER_ID_LEN: usize = 64;

/// Checks a member id: non-empty, at most 64 bytes, printable ASCII without spaces.
pub fn validate_member_id(id: &str, field: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > MAX_MEMBER_ID_LEN {
        return Err(FieldError::new(field, "must be 1 to 64 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

impl MemberRecord {
    /// Parses the record into the compact form (parse, don't validate): the
    /// first field at fault ([`MemberRecord::to_member_all`] gives all).
    pub fn to_member(&self) -> Result<Member, FieldError> {
        self.to_member_all().map_err(|mut v| v.swap_remove(0))
    }

    /// Parses the record into the compact form, reporting every field at
    /// fault (never an empty list).
    pub fn to_member_all(&self) -> Result<Member, Vec<FieldError>> {
        let mut errs = Vec::new();
        macro_rules! ok {
            ($e:expr) => {
                match $e {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errs.push(e);
                        None
                    }
                }
            };
        }
        let id = ok!(validate_member_id(&self.member_id, "member_id"));
        let tier = ok!(Tier::parse(&self.tier).ok_or_else(|| {
            FieldError::new(
                "tier",
                format!(
                    "unknown tier {:?}; one of base, silver, gold, platinum, diamond",
                    self.tier
                ),
            )
        }));
        let points = ok!(u32::try_from(self.points)
            .map_err(|_| FieldError::new("points", "must be an integer from 0 to 4294967295")));
        let spend_ok = self.qualifying_spend_12m.is_finite()
            && self.qualifying_spend_12m >= 0.0
            && self.qualifying_spend_12m <= 1e9;
        let spend = ok!(spend_ok.then_some(()).ok_or_else(|| {
            FieldError::new("qualifying_spend_12m", "must be a number from 0 to 1e9")
        }));
        let flights_12m = ok!(u16::try_from(self.flights_12m)
            .ok()
            .filter(|f| *f <= 2000)
            .ok_or_else(|| FieldError::new("flights_12m", "must be an integer from 0 to 2000")));
        let last_flight = match &self.last_flight {
            None => Some(None),
            Some(s) => ok!(Day::parse(s)
                .map(Some)
                .ok_or_else(|| FieldError::new("last_flight", "must be YYYY-MM-DD or null"))),
        };
        let joined =
            ok!(Day::parse(&self.joined)
                .ok_or_else(|| FieldError::new("joined", "must be YYYY-MM-DD")));
        let home_airport =
            ok!(Iata::parse(&self.home_airport).map_err(|m| FieldError::new("home_airport", m)));
        let birth_month = ok!(u8::try_from(self.birth_month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| FieldError::new("birth_month", "must be an integer from 1 to 12")));
        let tags = ok!(Tags::parse(&self.tags));
        let history = match (&self.monthly, spend, flights_12m) {
            (None, Some(()), Some(f)) => Some(MonthlyHistory::spread(self.qualifying_spend_12m, f)),
            (Some(months), Some(()), Some(f)) => ok!(self.monthly_history(months, f)),
            _ => None,
        };
        let member = (|| {
            id?;
            Some(Member {
                qualifying_spend_12m: match history? {
                    h if h.is_dated() => h.spend() as f32,
                    _ => self.qualifying_spend_12m as f32,
                },
                points: points?,
                last_flight: last_flight?,
                joined: joined?,
                history: history?,
                tags: tags?,
                home_airport: home_airport?,
                tier: tier?,
                birth_month: birth_month?,
                consent: Consent::new(self.consent.email, self.consent.sms, self.consent.app),
            })
        })();
        match member {
            Some(m) if errs.is_empty() => Ok(m),
            _ if errs.is_empty() => Err(vec![FieldError::new("body", "is invalid")]),
            _ => Err(errs),
        }
    }

    /// Checks `monthly` against the totals and builds the dated history.
    fn monthly_history(
        &self,
        months: &[MonthRecord],
        flights: u16,
    ) -> Result<MonthlyHistory, FieldError> {
        if months.len() > 12 {
            // Twelve distinct months at most fit the window; refusing more
            // first keeps the checks below small whatever the input.
            return Err(FieldError::new("monthly", "holds at most 12 months"));
        }
        let mut entries = Vec::with_capacity(months.len());
        for (i, e) in months.iter().enumerate() {
            let month = parse_month(&e.month).ok_or_else(|| {
                FieldError::new(
                    format!("monthly[{i}].month"),
                    "must be YYYY-MM, 1970 or later",
                )
            })?;
            if entries.iter().any(|(m, _, _)| *m == month) {
                return Err(FieldError::new(
                    format!("monthly[{i}].month"),
                    "is given twice",
                ));
            }
            if !(e.qualifying_spend.is_finite() && (0.0..=1e8).contains(&e.qualifying_spend)) {
                return Err(FieldError::new(
                    format!("monthly[{i}].qualifying_spend"),
                    "must be a number from 0 to 1e8",
                ));
            }
            let f = u8::try_from(e.flights).map_err(|_| {
                FieldError::new(
                    format!("monthly[{i}].flights"),
                    "must be an integer from 0 to 255",
                )
            })?;
            entries.push((month, e.qualifying_spend, f));
        }
        if let Some(newest) = entries.iter().map(|e| e.0).max() {
            if let Some(i) = entries.iter().position(|e| e.0 + 11 < newest) {
                return Err(FieldError::new(
                    format!("monthly[{i}].month"),
                    "is more than 11 months before the newest month given",
                ));
            }
        }
        let h = MonthlyHistory::from_months(&entries);
        // Months are kept to the history's unit (1 CNY under 65,536 CNY a
        // month): the total may differ from the months' sum by a unit and a
        // half a month, or by 1 CNY.
        let tolerance = (h.unit_cny() * 1.5 * entries.len() as f64).max(1.0);
        if (h.spend() - self.qualifying_spend_12m).abs() > tolerance {
            return Err(FieldError::new(
                "qualifying_spend_12m",
                format!("is not the sum of monthly spend ({})", round2(h.spend())),
            ));
        }
        if h.flights() != flights {
            return Err(FieldError::new(
                "flights_12m",
                format!("is not the sum of monthly flights ({})", h.flights()),
            ));
        }
        Ok(h)
    }

    /// The NDJSON form of a compact member (with `monthly` once its history is dated).
    pub fn from_member(id: &str, m: &Member) -> MemberRecord {
        let monthly = m.history.is_dated().then(|| {
            let mut v: Vec<MonthRecord> = m
                .history
                .months()
                .into_iter()
                .map(|(month, spend, flights)| MonthRecord {
                    month: month_name(month),
                    qualifying_spend: spend,
                    flights: flights as i64,
                })
                .collect();
            v.reverse();
            v
        });
        MemberRecord {
            member_id: id.to_string(),
            tier: m.tier.as_str().to_string(),
            points: m.points as i64,
            qualifying_spend_12m: round2(m.qualifying_spend_12m as f64),
            flights_12m: m.flights_12m() as i64,
            last_flight: m.last_flight.map(|d| d.to_string()),
            joined: m.joined.to_string(),
            home_airport: m.home_airport.as_str().to_string(),
            birth_month: m.birth_month as i64,
            consent: ConsentDto {
                email: m.consent.granted(ConsentChannel::Email),
                sms: m.consent.granted(ConsentChannel::Sms),
                app: m.consent.granted(ConsentChannel::App),
            },
            tags: m.tags.names(),
            monthly,
        }
    }
}

/// Rounds to cents.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A parsed itinerary.
#[derive(Debug, Clone, PartialEq)]
pub struct Itinerary {
    /// Departure airport.
    pub origin: Iata,
    /// Arrival airport.
    pub destination: Iata,
    /// Scheduled departure (UTC).
    pub departure: DateTime<Utc>,
    /// Booked cabin.
    pub cabin: Cabin,
    /// Fare paid for the whole party.
    pub fare: Money,
    /// Party size, 1 to 9.
    pub passengers: u8,
}

impl Itinerary {
    /// Whether both airports are in the same country.
    pub fn is_domestic(&self) -> bool {
        match (self.origin.airport(), self.destination.airport()) {
            (Some(a), Some(b)) => a.country == b.country,
            _ => false,
        }
    }
    /// Great-circle distance of the route in km.
    pub fn distance_km(&self) -> f64 {
        airports::distance_km(self.origin, self.destination).unwrap_or(0.0)
    }
    /// Whole days from `now` to departure (0 when departing today).
    pub fn days_to_departure(&self, now: DateTime<Utc>) -> i64 {
        ((self.departure - now).num_hours().max(0)) / 24
    }
}

/// Largest party a request may name.
pub const MAX_PASSENGERS: u8 = 9;
/// Default number of offers per decision.
pub const DEFAULT_MAX_OFFERS: usize = 3;
/// Most offers a decision may return.
pub const MAX_OFFERS: usize = 10;

/// A parsed checkout request.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferRequest {
    /// Member id (may be unknown: cold start).
    pub member_id: String,
    /// Channel of the decision.
    pub channel: Channel,
    /// The itinerary being booked.
    pub itinerary: Itinerary,
    /// Most offers to return, 1 to 10.
    pub max_offers: usize,
    /// Whether each reason gets a sentence (`text`) in the answer.
    pub explain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"member_id":"M1","tier":"gold","points":1200,"qualifying_spend_12m":52000.5,"flights_12m":12,"last_flight":"2026-10-01","joined":"2019-04-02","home_airport":"PEK","birth_month":7,"consent":{"email":true,"sms":false,"app":true},"tags":["business"]}"#;

    fn record(monthly: &str) -> MemberRecord {
        let line = LINE.replace(r#""tags""#, &format!(r#""monthly":{monthly},"tags""#));
        crate::parse::from_json(line.as_bytes()).unwrap()
    }

    /// The memory target (150 bytes a member at 10 million) rests on this
    /// size: the store's slots hold a 4-byte key beside it.
    #[test]
    fn the_member_record_is_68_bytes() {
        assert_eq!(std::mem::size_of::<MonthlyHistory>(), 40);
        assert_eq!(std::mem::size_of::<Member>(), 68);
    }

    #[test]
    fn months_are_named_and_parsed() {
        let m = parse_month("2026-11").unwrap();
        assert_eq!(month_name(m), "2026-11");
        assert_eq!(month_of(Day::parse("2026-11-30").unwrap()), m);
        assert_eq!(month_of(Day::parse("2026-12-01").unwrap()), m + 1);
        assert_eq!(parse_month("1970-01"), Some(0));
        for bad in ["2026-13", "1969-12", "2026-1", "26-11", "2026/11", ""] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
        assert_eq!(month_of(Day(i32::MIN)), 0);
        assert_eq!(month_of(Day(i32::MAX)), u16::MAX);
    }

    #[test]
    fn a_spread_keeps_the_totals_and_ages_out_a_twelfth_a_month() {
        let mut h = MonthlyHistory::spread(52_000.5, 13);
        assert!(!h.is_dated());
        assert_eq!((h.spend(), h.flights()), (52_000.5, 13));
        // Rolling an undated history does nothing until it is dated.
        h.roll_to(700);
        assert_eq!(h.spend(), 52_000.5);
        h.date(680);
        h.roll_to(681);
        // The oldest month (a twelfth, the remainder going to the newest) aged out.
        assert!(
            (h.spend() - 52_000.5 * 11.0 / 12.0).abs() < 0.2,
            "{}",
            h.spend()
        );
        assert_eq!(h.flights(), 12);
        h.roll_to(693);
        assert_eq!((h.spend(), h.flights()), (0.0, 0));
    }

    #[test]
    fn months_keep_their_spend_and_a_large_month_coarsens_the_unit() {
        let mut h = MonthlyHistory::from_months(&[(600, 1_000.25, 1), (605, 2_500.5, 2)]);
        assert_eq!(h.month(), Some(605));
        assert_eq!(h.spend(), 3_500.75);
        // Outside the window: left out.
        assert!(!h.add(593, 99.0, 1));
        assert_eq!(h.spend(), 3_500.75);
        // A month of 300,000 CNY needs a unit of 8 CNY: the others round to it.
        assert!(h.add(605, 300_000.0, 1));
        // Each month is then within a unit and a half of what was added.
        assert!((h.spend() - 303_500.75).abs() <= 24.0, "{}", h.spend());
        assert_eq!(h.unit_cny(), 8.0);
        assert_eq!(h.flights(), 4);
        // Once it ages out the finer unit comes back for what is left.
        h.roll_to(617);
        assert_eq!(h.months(), vec![]);
        h.add(617, 10.5, 0);
        assert_eq!(h.spend(), 10.5);
        // Saturating, never wrapping.
        for _ in 0..30 {
            h.add(617, 1e7, 255);
        }
        assert!(h.spend() > 1e8 && h.flights() == 255, "{}", h.spend());
        // Months at the ends of the range neither wrap nor panic.
        let mut h = MonthlyHistory::from_months(&[(u16::MAX, 1.0, 1)]);
        assert!(h.add(u16::MAX - 3, 1.0, 1) && !h.add(1, 1.0, 1));
        h.roll_to(u16::MAX);
        assert_eq!(h.flights(), 2);
        let mut m = MonthlyHistory::spread(f64::NAN, u16::MAX);
        m.date(0);
        assert_eq!((m.spend(), m.month()), (0.0, Some(1)));
    }

    #[test]
    fn member_lines_take_an_optional_monthly_history() {
        // Today's totals-only form.
        let m = crate::parse::from_json::<MemberRecord>(LINE.as_bytes())
            .unwrap()
            .to_member()
            .unwrap();
        assert_eq!((m.qualifying_spend_12m, m.flights_12m()), (52_000.5, 12));
        assert!(!m.history.is_dated());
        assert_eq!(MemberRecord::from_member("M1", &m).monthly, None);
        // With months: dated at the newest, the totals their sums.
        let r = record(
            r#"[{"month":"2026-10","qualifying_spend":50000.5,"flights":10},{"month":"2025-11","qualifying_spend":2000,"flights":2}]"#,
        );
        let m = r.to_member().unwrap();
        assert_eq!(m.history.month(), parse_month("2026-10"));
        // A month of 50,000 CNY is kept to the CNY (the half rounds up).
        assert_eq!((m.qualifying_spend_12m, m.flights_12m()), (52_001.0, 12));
        let r = record(
            r#"[{"month":"2025-11","qualifying_spend":2000.5,"flights":2},{"month":"2026-10","qualifying_spend":50000,"flights":10}]"#,
        );
        let m = r.to_member().unwrap();
        let back = MemberRecord::from_member("M1", &m);
        let months = back.monthly.as_ref().unwrap();
        // Oldest first; 2,000.5 kept to the month's unit of 1 CNY.
        assert_eq!(months[0].month, "2025-11");
        assert_eq!(months[0].qualifying_spend, 2001.0);
        assert_eq!(months[1], r.monthly.as_ref().unwrap()[1]);
        assert_eq!(back.to_member().unwrap(), m);
        // Each fault names its field.
        for (monthly, field) in [
            (
                r#"[{"month":"2026-10","qualifying_spend":50000.5,"flights":12}]"#,
                "qualifying_spend_12m",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":52002.5,"flights":12}]"#,
                "qualifying_spend_12m",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":52000.5,"flights":11}]"#,
                "flights_12m",
            ),
            (
                r#"[{"month":"2026-13","qualifying_spend":52000.5,"flights":12}]"#,
                "monthly[0].month",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":-1,"flights":12}]"#,
                "monthly[0].qualifying_spend",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":52000.5,"flights":300}]"#,
                "monthly[0].flights",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":52000.5,"flights":12},{"month":"2026-10"}]"#,
                "monthly[1].month",
            ),
            (
                r#"[{"month":"2026-10","qualifying_spend":52000.5,"flights":12},{"month":"2025-10"}]"#,
                "monthly[1].month",
            ),
        ] {
            let e = record(monthly).to_member().unwrap_err();
            assert_eq!(e.field, field, "{monthly}: {e}");
        }
        let many = format!("[{}]", vec![r#"{"month":"2026-10"}"#; 13].join(","));
        assert_eq!(record(&many).to_member().unwrap_err().field, "monthly");
    }
}
