//! What the generator sends: realistic checkout requests over the whole
//! member population, outcome events on offers it was really given, member
//! events and member PUTs, in a configurable mix.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{Duration, FixedOffset, Utc};
use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// Airports of the engine's table (`src/airports.rs`), with their country.
/// `tests/smoke.rs` checks this list against the engine's own table.
pub const AIRPORTS: &[(&str, &str)] = &[
    ("AKL", "NZ"),
    ("AMS", "NL"),
    ("BKK", "TH"),
    ("CAN", "CN"),
    ("CDG", "FR"),
    ("CGO", "CN"),
    ("CKG", "CN"),
    ("CSX", "CN"),
    ("CTU", "CN"),
    ("DLC", "CN"),
    ("DXB", "AE"),
    ("FOC", "CN"),
    ("FRA", "DE"),
    ("HAK", "CN"),
    ("HGH", "CN"),
    ("HKG", "HK"),
    ("HND", "JP"),
    ("HRB", "CN"),
    ("ICN", "KR"),
    ("JFK", "US"),
    ("KMG", "CN"),
    ("KUL", "MY"),
    ("LAX", "US"),
    ("LHR", "GB"),
    ("MEL", "AU"),
    ("NGB", "CN"),
    ("NKG", "CN"),
    ("NRT", "JP"),
    ("PEK", "CN"),
    ("PKX", "CN"),
    ("PVG", "CN"),
    ("SFO", "US"),
    ("SHA", "CN"),
    ("SHE", "CN"),
    ("SIN", "SG"),
    ("SJW", "CN"),
    ("SYD", "AU"),
    ("SYX", "CN"),
    ("SZX", "CN"),
    ("TAO", "CN"),
    ("TFU", "CN"),
    ("TNA", "CN"),
    ("TPE", "TW"),
    ("TSN", "CN"),
    ("URC", "CN"),
    ("WUH", "CN"),
    ("XIY", "CN"),
    ("XMN", "CN"),
    ("YYZ", "CA"),
];

// The engine's own vocabulary, so generated member writes are valid.
use offer_engine_core::domain::{Tier, TAGS};

/// The kinds of request, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `GET /healthz` (the baseline).
    Healthz,
    /// `POST /v1/offers` (checkout decision).
    Offers,
    /// `POST /v1/events` (impression, accept or decline on an offer received).
    Events,
    /// `POST /v1/member-events` (points_earned).
    MemberEvents,
    /// `PUT /v1/members/{id}`.
    MemberPut,
    /// `POST /v1/campaigns` — HOOK(campaigns): not sent yet, see [`Traffic::campaign`].
    Campaign,
    /// `POST /v1/events` with one accept at the quoted price on an offer
    /// received earlier (the cluster benchmark's write on a decision).
    Accepts,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 7] = [
        Kind::Healthz,
        Kind::Offers,
        Kind::Events,
        Kind::MemberEvents,
        Kind::MemberPut,
        Kind::Campaign,
        Kind::Accepts,
    ];
    /// Stable name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::Offers => "offers",
            Kind::Events => "events",
            Kind::MemberEvents => "member_events",
            Kind::MemberPut => "member_put",
            Kind::Campaign => "campaign",
            Kind::Accepts => "accepts",
        }
    }
    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
    /// Route label for reports.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Healthz => "GET /healthz",
            Kind::Offers => "POST /v1/offers",
            Kind::Events => "POST /v1/events",
            Kind::MemberEvents => "POST /v1/member-events",
            Kind::MemberPut => "PUT /v1/members/{id}",
            Kind::Campaign => "POST /v1/campaigns",
            Kind::Accepts => "POST /v1/events (accept)",
        }
    }
}

/// Relative weights of each kind in a step's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// `(kind, weight)`; weights need not sum to anything.
    pub weights: Vec<(Kind, u32)>,
}

impl Mix {
    /// Only one kind.
    pub fn only(kind: Kind) -> Mix {
        Mix {
            weights: vec![(kind, 1)],
        }
    }
    /// The realistic checkout mix: mostly decisions, with the writes a booking
    /// flow and a loyalty back end send alongside.
    pub fn realistic() -> Mix {
        Mix {
            weights: vec![
                (Kind::Offers, 85),
                (Kind::Events, 8),
                (Kind::MemberEvents, 4),
                (Kind::MemberPut, 3),
                // HOOK(campaigns): give campaign runs a weight here once
                // `POST /v1/campaigns` exists and `Traffic::campaign` builds one.
                (Kind::Campaign, 0),
            ],
        }
    }
    /// Parses `offers=85,events=8,member_events=4,member_put=3`.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not NAME=WEIGHT"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|x| x.name() == k.trim())
                .ok_or_else(|| format!("unknown request kind {k:?}"))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("bad weight in {part:?}"))?;
            if kind == Kind::Campaign && w > 0 {
                return Err("campaign runs are not wired yet (HOOK(campaigns) in load-tests/src/traffic.rs)".into());
            }
            weights.push((kind, w));
        }
        if weights.iter().all(|(_, w)| *w == 0) {
            return Err("the mix has no positive weight".into());
        }
        Ok(Mix { weights })
    }
    fn pick(&self, rng: &mut SmallRng) -> Kind {
        let total: u32 = self.weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0..total);
        for (k, w) in &self.weights {
            if x < *w {
                return *k;
            }
            x -= w;
        }
        self.weights[0].0
    }
    /// Human-readable form, e.g. `offers=85,events=8`.
    pub fn describe(&self) -> String {
        self.weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(k, w)| format!("{}={w}", k.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How member ids are drawn.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum MemberDist {
    /// Uniform over `M00000001..=M{population}`.
    Uniform,
    /// Zipf (s = 1.0) over the whole population: a few very active members.
    Zipf,
}

/// One request ready to send.
#[derive(Debug, Clone)]
pub struct Req {
    /// Kind (histogram it lands in).
    pub kind: Kind,
    /// HTTP method.
    pub method: hyper::Method,
    /// Path and query.
    pub path: String,
    /// JSON body (empty for GET).
    pub body: Bytes,
}

/// An offer the server really made, kept to send an outcome event for it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Decision id.
    pub decision_id: String,
    /// Offer id.
    pub offer_id: String,
    /// Quoted cash price (JSON number) or `None` for points-only offers.
    pub price: Option<serde_json::Value>,
    /// The offer's signed token (an accept must bring it back).
    pub token: String,
}

/// Offers received and not yet used for an event (bounded).
#[derive(Default)]
pub struct IssuedPool {
    q: Mutex<VecDeque<Issued>>,
}

/// How many issued offers the pool keeps.
pub const POOL_CAP: usize = 4096;

impl IssuedPool {
    /// Whether the pool wants more samples (then offers responses are parsed).
    pub fn wants_more(&self) -> bool {
        self.q.lock().unwrap().len() < POOL_CAP
    }
    /// Offers held.
    pub fn len(&self) -> usize {
        self.q.lock().unwrap().len()
    }
    /// Whether no offer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds the offers of one decision response body.
    pub fn add_from_response(&self, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let Some(id) = v["decision_id"].as_str() else {
            return;
        };
        let Some(offers) = v["offers"].as_array() else {
            return;
        };
        let mut q = self.q.lock().unwrap();
        for o in offers {
            if q.len() >= POOL_CAP {
                break;
            }
            let Some(offer_id) = o["offer_id"].as_str() else {
                continue;
            };
            let price = o["price"]["amount"].clone();
            q.push_back(Issued {
                decision_id: id.to_string(),
                offer_id: offer_id.to_string(),
                price: (!price.is_null()).then_some(price),
                token: o["token"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    /// Adds one offer (the cluster benchmark keeps one priced offer per
    /// decision, so its accepts are not refused as "already accepted").
    pub fn push(&self, o: Issued) {
        let mut q = self.q.lock().unwrap();
        if q.len() < POOL_CAP {
            q.push_back(o);
        }
    }
    fn take(&self) -> Option<Issued> {
        self.q.lock().unwrap().pop_front()
    }
}

/// Builds requests.
pub struct Traffic {
    /// Members `M00000001..=M{population}`.
    pub population: u64,
    /// Member id distribution.
    pub dist: MemberDist,
    zipf: Option<Zipf<f64>>,
    /// Offers received, for outcome events.
    pub pool: IssuedPool,
    /// Unix seconds of "now" at construction (departures are relative to it).
    base: chrono::DateTime<Utc>,
}

impl Traffic {
    /// A generator over `population` members.
    pub fn new(population: u64, dist: MemberDist) -> Traffic {
        assert!(population >= 1, "population must be at least 1");
        Traffic {
            population,
            dist,
            zipf: match dist {
                MemberDist::Zipf => Some(Zipf::new(population, 1.0).expect("zipf parameters")),
                MemberDist::Uniform => None,
            },
            pool: IssuedPool::default(),
            base: Utc::now(),
        }
    }

    /// A member id from the population, e.g. `M00000042`.
    pub fn member_id(&self, rng: &mut SmallRng) -> String {
        let i = match &self.zipf {
            Some(z) => (z.sample(rng) as u64).clamp(1, self.population),
            None => rng.gen_range(1..=self.population),
        };
        format!("M{i:08}")
    }

    /// The next request of `mix`.
    pub fn next(&self, mix: &Mix, rng: &mut SmallRng) -> Req {
        match mix.pick(rng) {
            Kind::Healthz => Req {
                kind: Kind::Healthz,
                method: hyper::Method::GET,
                path: "/healthz".into(),
                body: Bytes::new(),
            },
            Kind::Offers => self.offers(rng),
            Kind::Events => self.event(rng).unwrap_or_else(|| self.offers(rng)),
            Kind::MemberEvents => self.member_event(rng),
            Kind::MemberPut => self.member_put(rng),
            Kind::Campaign => self.campaign(rng).unwrap_or_else(|| self.offers(rng)),
            Kind::Accepts => self.accept().unwrap_or_else(|| self.offers(rng)),
        }
    }

    /// A checkout decision request.
    pub fn offers(&self, rng: &mut SmallRng) -> Req {
        let member = self.member_id(rng);
        let domestic = rng.gen_bool(0.75);
        let (origin, destination) = loop {
            let a = AIRPORTS[rng.gen_range(0..AIRPORTS.len())];
            let b = AIRPORTS[rng.gen_range(0..AIRPORTS.len())];
            if a.0 != b.0 && (!domestic || (a.1 == "CN" && b.1 == "CN")) {
                break (a, b);
            }
        };
        let (cabin, fare_mult) = match rng.gen_range(0..100) {
            0..=79 => ("economy", 1.0),
            80..=87 => ("premium_economy", 1.8),
            88..=97 => ("business", 3.5),
            _ => ("first", 6.0),
        };
        let intl = origin.1 != "CN" || destination.1 != "CN";
        let base_fare = if intl {
            rng.gen_range(2500..9000)
        } else {
            rng.gen_range(450..2200)
        };
        let passengers = match rng.gen_range(0..100) {
            0..=54 => 1,
            55..=79 => 2,
            80..=91 => 3,
            _ => 4,
        };
        let channel = match rng.gen_range(0..100) {
            0..=89 => "checkout",
            90..=94 => "app",
            _ => "kiosk",
        };
        let cst = FixedOffset::east_opt(8 * 3600).expect("offset");
        let departure = (self.base
            + Duration::days(rng.gen_range(1..=60))
            + Duration::minutes(rng.gen_range(0..24 * 60)))
        .with_timezone(&cst)
        .format("%Y-%m-%dT%H:%M:00%:z");
        let fare = (base_fare as f64 * fare_mult).round() as u64 * passengers;
        let body = format!(
            r#"{{"member_id":"{member}","channel":"{channel}","itinerary":{{"origin":"{}","destination":"{}","departure":"{departure}","cabin":"{cabin}","fare":{{"amount":{fare},"currency":"CNY"}},"passengers":{passengers}}}}}"#,
            origin.0, destination.0
        );
        Req {
            kind: Kind::Offers,
            method: hyper::Method::POST,
            path: "/v1/offers".into(),
            body: Bytes::from(body),
        }
    }

    /// An outcome event on an offer received earlier: impression (60%),
    /// decline (30%) or accept (10%, revenue = the quoted price). `None`
    /// while no offer has been received yet.
    pub fn event(&self, rng: &mut SmallRng) -> Option<Req> {
        let o = self.pool.take()?;
        let r = rng.gen_range(0..100);
        let body = if r < 60 {
            format!(
                r#"{{"decision_id":"{}","offer_id":"{}","type":"impression"}}"#,
                o.decision_id, o.offer_id
            )
        } else if r < 90 {
            format!(
                r#"[{{"decision_id":"{d}","offer_id":"{o}","type":"impression"}},{{"decision_id":"{d}","offer_id":"{o}","type":"decline"}}]"#,
                d = o.decision_id,
                o = o.offer_id
            )
        } else {
            let amount = o.price.map(|p| p.to_string()).unwrap_or_else(|| "0".into());
            format!(
                r#"{{"decision_id":"{}","offer_id":"{}","type":"accept","revenue":{{"amount":{amount},"currency":"CNY"}},"token":"{}"}}"#,
                o.decision_id, o.offer_id, o.token
            )
        };
        Some(Req {
            kind: Kind::Events,
            method: hyper::Method::POST,
            path: "/v1/events".into(),
            body: Bytes::from(body),
        })
    }

    /// An accept at the quoted price, with the offer's token, on an offer
    /// received earlier. `None` while the pool is empty.
    pub fn accept(&self) -> Option<Req> {
        let o = self.pool.take()?;
        let amount = o.price.map(|p| p.to_string()).unwrap_or_else(|| "0".into());
        Some(Req {
            kind: Kind::Accepts,
            method: hyper::Method::POST,
            path: "/v1/events".into(),
            body: Bytes::from(format!(
                r#"{{"decision_id":"{}","offer_id":"{}","type":"accept","revenue":{{"amount":{amount},"currency":"CNY"}},"token":"{}"}}"#,
                o.decision_id, o.offer_id, o.token
            )),
        })
    }

    /// `points_earned` for a member of the population.
    pub fn member_event(&self, rng: &mut SmallRng) -> Req {
        let body = format!(
            r#"{{"member_id":"{}","type":"points_earned","points":{}}}"#,
            self.member_id(rng),
            rng.gen_range(100..5000)
        );
        Req {
            kind: Kind::MemberEvents,
            method: hyper::Method::POST,
            path: "/v1/member-events".into(),
            body: Bytes::from(body),
        }
    }

    /// Replaces a member's whole record (the NDJSON schema).
    pub fn member_put(&self, rng: &mut SmallRng) -> Req {
        let id = self.member_id(rng);
        let today = self.base.date_naive();
        let joined = today - Duration::days(rng.gen_range(30..6000));
        let last_flight = if rng.gen_bool(0.85) {
            format!("\"{}\"", today - Duration::days(rng.gen_range(1..700)))
        } else {
            "null".into()
        };
        let tags: Vec<String> = TAGS
            .iter()
            .filter(|_| rng.gen_bool(0.15))
            .map(|t| format!("\"{t}\""))
            .collect();
        let home = AIRPORTS[rng.gen_range(0..AIRPORTS.len())].0;
        let body = format!(
            r#"{{"member_id":"{id}","tier":"{}","points":{},"qualifying_spend_12m":{:.2},"flights_12m":{},"last_flight":{last_flight},"joined":"{joined}","home_airport":"{home}","birth_month":{},"consent":{{"email":{},"sms":{},"app":{}}},"tags":[{}]}}"#,
            Tier::ALL[rng.gen_range(0..Tier::ALL.len())].as_str(),
            rng.gen_range(0..200_000),
            rng.gen_range(0.0..150_000.0),
            rng.gen_range(0..60),
            rng.gen_range(1..=12),
            rng.gen_bool(0.6),
            rng.gen_bool(0.3),
            rng.gen_bool(0.5),
            tags.join(",")
        );
        Req {
            kind: Kind::MemberPut,
            method: hyper::Method::PUT,
            path: format!("/v1/members/{id}"),
            body: Bytes::from(body),
        }
    }

    /// HOOK(campaigns): `POST /v1/campaigns` is being added in src/ right now.
    /// Once its body is settled, build one here (e.g. a small segment, a
    /// channel, `max_members`), return `Some`, and give `Kind::Campaign` a
    /// weight in [`Mix::realistic`]; [`Mix::parse`] refuses a positive
    /// campaign weight until then. Its latency lands in its own histogram.
    pub fn campaign(&self, _rng: &mut SmallRng) -> Option<Req> {
        None
    }
}
