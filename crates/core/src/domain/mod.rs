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

/// Qualifying-spend thresholds (CNY over 12 months) for each tier.
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
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            silver: 10_000.0,
            gold: 50_000.0,
            platinum: 80_000.0,
            diamond: 100_000.0,
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

/// Compact in-memory member record (28 bytes). The member id is the key of
/// the store and is not repeated here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// Qualifying spend over 12 months, CNY.
    pub qualifying_spend_12m: f32,
    /// Points balance.
    pub points: u32,
    /// Day of the last flight, if any.
    pub last_flight: Option<Day>,
    /// Day the member joined.
    pub joined: Day,
    /// Flights over 12 months.
    pub flights_12m: u16,
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
        let member = (|| {
            id?;
            spend?;
            Some(Member {
                qualifying_spend_12m: self.qualifying_spend_12m as f32,
                points: points?,
                last_flight: last_flight?,
                joined: joined?,
                flights_12m: flights_12m?,
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

    /// The NDJSON form of a compact member.
    pub fn from_member(id: &str, m: &Member) -> MemberRecord {
        MemberRecord {
            member_id: id.to_string(),
            tier: m.tier.as_str().to_string(),
            points: m.points as i64,
            qualifying_spend_12m: round2(m.qualifying_spend_12m as f64),
            flights_12m: m.flights_12m as i64,
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
}
