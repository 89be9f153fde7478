//! Access control, the pure part: scopes, API keys kept as salted hashes,
//! the route → scope table and the per-key token bucket. No I/O; the
//! actix middleware that uses it is [`crate::http::auth`].
//!
//! # Keys
//! A scoped key looks like `oek_{id}_{secret}`: `id` is 12 hex digits (not
//! secret; it names the key in the configuration and in logs) and `secret`
//! 32 random bytes in base64url. The configuration holds only the id, the
//! scopes, a random salt and `HMAC-SHA256(salt, key)`; the key itself is
//! printed once by `offer-engine keys new` and never stored.
//!
//! Checking a presented key is a hash-map lookup by the id embedded in it,
//! then one HMAC and a constant-time comparison with the stored hash: about
//! a microsecond, so no cache is needed. A slow password hash (argon2,
//! bcrypt) would buy nothing here: the secrets are 256-bit random values,
//! not guessable passwords, and a slow hash per request would cost more
//! than the decision itself.
//!
//! The master key (`OFFER_ENGINE_MASTER_KEY`, `--master-key`) is chosen by
//! the operator; it holds every scope. It is hashed with a per-process
//! random salt at start and compared the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};

use sha2::Sha256;
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `POST /v1/offers`.
    Offers,
    /// `POST /v1/events`.
    Events,
    /// `GET /v1/members/{id}`.
    MembersRead,
    /// Member writes: `PUT`/`DELETE /v1/members/{id}`, `POST /v1/members`, `POST /v1/member-events`.
    MembersWrite,
    /// `POST /v1/campaigns`.
    Campaigns,
    /// `GET /v1/experiments`, `GET /v1/experiments/{id}/report`,
    /// `GET /v1/experiments/{id}/timeseries`, `GET /v1/offers/stats`, `GET /v1/campaigns/runs`.
    ExperimentsRead,
    /// Reloads, snapshots, key listing, `/metrics` on the main listener.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 7] = [
        Scope::Offers,
        Scope::Events,
        Scope::MembersRead,
        Scope::MembersWrite,
        Scope::Campaigns,
        Scope::ExperimentsRead,
        Scope::Admin,
    ];

    /// The name used in configuration and problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Offers => "offers",
            Scope::Events => "events",
            Scope::MembersRead => "members:read",
            Scope::MembersWrite => "members:write",
            Scope::Campaigns => "campaigns",
            Scope::ExperimentsRead => "experiments:read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes (a bit set: checking one is a single AND).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope (the master key).
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |b, s| b | s.bit()))
    }
    /// Whether `s` is in the set.
    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }
    /// Parses names; unknown names are an error naming them.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, KeyError> {
        let mut b = 0;
        for n in names {
            let n = n.as_ref().trim();
            b |= Scope::parse(n)
                .ok_or_else(|| KeyError::UnknownScope(n.to_string()))?
                .bit();
        }
        if b == 0 {
            return Err(KeyError::NoScopes);
        }
        Ok(Scopes(b))
    }
    /// Scope names, in [`Scope::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }
}

pub use crate::config::KeySpec;

/// Why keys in the configuration were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A scope name that does not exist.
    #[error("unknown scope {0:?} (scopes: offers, events, members:read, members:write, campaigns, experiments:read, admin)")]
    UnknownScope(String),
    /// A key with no scope at all.
    #[error("a key needs at least one scope")]
    NoScopes,
    /// A key entry that does not have the form `keys new` writes.
    #[error("key {id:?}: {why}")]
    BadEntry {
        /// The key id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// The master key is too short to be a secret.
    #[error("the master key must be at least {MIN_MASTER_KEY_LEN} characters")]
    WeakMasterKey,
}

/// Shortest master key accepted.
pub const MIN_MASTER_KEY_LEN: usize = 16;

/// Prefix of scoped keys.
const PREFIX: &str = "oek_";

type HmacSha256 = Hmac<Sha256>;

/// `HMAC-SHA256(salt, key)`.
pub fn hash_key(salt: &[u8], key: &str) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().into()
}

pub use offer_engine_core::privacy::{from_hex, to_hex};

/// The id embedded in a presented scoped key, if it has that form.
fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

/// A fresh key with these scopes: the key (shown once) and its configuration entry.
pub fn generate_key(scopes: Scopes) -> (String, KeySpec) {
    use rand::RngCore;
    let mut rng = rand::rngs::OsRng;
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut salt);
    let id = to_hex(&id);
    let key = format!(
        "{PREFIX}{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let spec = KeySpec {
        id,
        scopes: scopes.names().into_iter().map(String::from).collect(),
        salt: to_hex(&salt),
        hash: to_hex(&hash_key(&salt, &key)),
        requests_per_second: None,
        burst: None,
    };
    (key, spec)
}

/// The configuration block for a key (what `keys new` prints).
pub fn config_block(spec: &KeySpec) -> String {
    let scopes: Vec<String> = spec.scopes.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[[security.keys]]\nid = {:?}\nscopes = [{}]\nsalt = {:?}\nhash = {:?}\n",
        spec.id,
        scopes.join(", "),
        spec.salt,
        spec.hash
    )
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
/// Time is passed in, so it is tested without a clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(Duration::from_secs_f64(if wait.is_finite() {
            wait.min(86_400.0)
        } else {
            86_400.0
        }))
    }
}

/// One known key.
#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    salt: Vec<u8>,
    hash: [u8; 32],
    scopes: Scopes,
    /// None: unlimited.
    bucket: Option<Mutex<TokenBucket>>,
}

impl Entry {
    fn verify(&self, presented: &str) -> bool {
        hash_key(&self.salt, presented).ct_eq(&self.hash).into()
    }
}

/// Who is calling: the key that authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    entry: &'a Entry,
}

impl Principal<'_> {
    /// The key id (`master` for the master key): safe to log.
    pub fn id(&self) -> &str {
        &self.entry.id
    }
    /// Whether the key holds `s`.
    pub fn allows(&self, s: Scope) -> bool {
        self.entry.scopes.contains(s)
    }
    /// Takes one request from the key's budget (None: unlimited).
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        match &self.entry.bucket {
            None => Ok(()),
            Some(b) => b.lock().unwrap_or_else(|e| e.into_inner()).take(now),
        }
    }
}

/// Default per-key rate.
#[derive(Debug, Clone, Copy)]
pub struct RateDefaults {
    /// Requests per second; 0 or less = unlimited.
    pub requests_per_second: f64,
    /// Burst.
    pub burst: f64,
}

/// The keys the service accepts.
#[derive(Debug)]
pub struct KeyStore {
    by_id: HashMap<String, Entry, ahash::RandomState>,
    master: Entry,
}

fn bucket(rate: f64, burst: f64) -> Option<Mutex<TokenBucket>> {
    (rate > 0.0 && rate.is_finite())
        .then(|| Mutex::new(TokenBucket::new(rate, burst, Instant::now())))
}

impl KeyStore {
    /// Builds the store from the master key and the configured keys.
    pub fn new(master: &str, keys: &[KeySpec], rate: RateDefaults) -> Result<KeyStore, KeyError> {
        use rand::RngCore;
        if master.chars().count() < MIN_MASTER_KEY_LEN {
            return Err(KeyError::WeakMasterKey);
        }
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let master = Entry {
            id: "master".into(),
            hash: hash_key(&salt, master),
            salt,
            scopes: Scopes::all(),
            bucket: bucket(rate.requests_per_second, rate.burst),
        };
        let mut by_id = HashMap::with_hasher(ahash::RandomState::new());
        for k in keys {
            let bad = |why: &str| KeyError::BadEntry {
                id: k.id.clone(),
                why: why.to_string(),
            };
            if k.id.is_empty() || k.id.contains('_') || k.id == "master" {
                return Err(bad(
                    "the id must be non-empty, without '_', and not \"master\"",
                ));
            }
            let scopes = Scopes::parse(&k.scopes)?;
            let salt = from_hex(&k.salt)
                .filter(|s| s.len() >= 8)
                .ok_or_else(|| bad("salt must be at least 8 bytes of hex"))?;
            let hash: [u8; 32] = from_hex(&k.hash)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("hash must be 32 bytes of hex"))?;
            let entry = Entry {
                id: k.id.as_str().into(),
                salt,
                hash,
                scopes,
                bucket: bucket(
                    k.requests_per_second.unwrap_or(rate.requests_per_second),
                    k.burst.unwrap_or(rate.burst),
                ),
            };
            if by_id.insert(k.id.clone(), entry).is_some() {
                return Err(bad("the id is used twice"));
            }
        }
        Ok(KeyStore { by_id, master })
    }

    /// The key a caller presented, if it is one of ours.
    pub fn authenticate(&self, presented: &str) -> Option<Principal<'_>> {
        let entry = match key_id(presented).and_then(|id| self.by_id.get(id)) {
            Some(e) => e,
            None => &self.master,
        };
        entry.verify(presented).then_some(Principal { entry })
    }

    /// Key ids and scopes (never hashes), master first.
    pub fn list(&self) -> Vec<(String, Vec<&'static str>)> {
        let mut v: Vec<_> = self
            .by_id
            .values()
            .map(|e| (e.id.to_string(), e.scopes.names()))
            .collect();
        v.sort();
        v.insert(0, (self.master.id.to_string(), self.master.scopes.names()));
        v
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open in every mode (probes).
    Open,
    /// A key holding this scope.
    Needs(Scope),
    /// No route matched (the router answers 404 or 405; nothing to protect).
    Unrouted,
}

/// The route → scope table, by method and route template.
pub fn required(method: &str, pattern: Option<&str>) -> Access {
    use Scope::*;
    let Some(pattern) = pattern else {
        return Access::Unrouted;
    };
    match (method, pattern) {
        (_, "/healthz" | "/readyz") => Access::Open,
        ("POST", "/v1/offers") => Access::Needs(Offers),
        ("POST", "/v1/events") => Access::Needs(Events),
        ("GET", "/v1/members/{id}") => Access::Needs(MembersRead),
        ("PUT" | "DELETE", "/v1/members/{id}") => Access::Needs(MembersWrite),
        ("POST", "/v1/members" | "/v1/member-events") => Access::Needs(MembersWrite),
        ("POST", "/v1/campaigns") => Access::Needs(Campaigns),
        (
            "GET",
            "/v1/experiments"
            | "/v1/offers/stats"
            | "/v1/offers/plots/offers.svg"
            | "/v1/campaigns/runs"
            | "/v1/experiments/{id}/report"
            | "/v1/experiments/{id}/timeseries"
            | "/v1/experiments/{id}/plots/forest.svg"
            | "/v1/experiments/{id}/plots/timeseries.svg",
        ) => Access::Needs(ExperimentsRead),
        // The console's page, script and style hold no data (the script
        // reads the APIs with the caller's key).
        ("GET", "/console" | "/console/console.js" | "/console/console.css") => Access::Open,
        ("GET", "/metrics") => Access::Needs(Admin),
        (_, p) if p.starts_with("/v1/admin/") => Access::Needs(Admin),
        // A known route with a method it does not take: the router says 405.
        _ => Access::Unrouted,
    }
}

/// The key of an `Authorization: Bearer KEY` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Key material of a development-mode service: public, so development
/// tokens prove nothing (and need not: nothing is protected there).
const DEVELOPMENT_SECRET: &[u8] = b"offer-engine development mode: not a secret";

/// Everything access control and privacy need at run time.
#[derive(Debug)]
pub struct Security {
    /// The keys; None in development mode (no master key: nothing is protected).
    pub keys: Option<KeyStore>,
    /// Signs and checks offer tokens.
    pub tokens: crate::tokens::TokenKey,
    /// Member ids as logs may show them.
    pub pseudonyms: crate::privacy::Pseudonyms,
}

impl Security {
    /// Builds it from the settings; refuses bad keys and a weak master key.
    pub fn from_settings(
        s: &crate::config::SecuritySettings,
        rate: RateDefaults,
    ) -> Result<Security, KeyError> {
        let keys = if s.master_key.is_set() {
            Some(KeyStore::new(&s.master_key.0, &s.keys, rate)?)
        } else {
            None
        };
        let secret: &[u8] = if s.token_key.is_set() {
            s.token_key.0.as_bytes()
        } else if s.master_key.is_set() {
            s.master_key.0.as_bytes()
        } else {
            DEVELOPMENT_SECRET
        };
        let tokens = crate::tokens::TokenKey::derive(secret, "offer-engine offer token v1");
        let pseudonyms = if s.log_member_ids {
            crate::privacy::Pseudonyms::clear()
        } else {
            crate::privacy::Pseudonyms::keyed(
                crate::tokens::TokenKey::derive(secret, "offer-engine log pseudonym v1").bytes(),
            )
        };
        Ok(Security {
            keys,
            tokens,
            pseudonyms,
        })
    }

    /// Whether the service runs without protection.
    pub fn development_mode(&self) -> bool {
        self.keys.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "a-master-key-of-some-length";
    const UNLIMITED: RateDefaults = RateDefaults {
        requests_per_second: 0.0,
        burst: 0.0,
    };

    #[test]
    fn generated_keys_verify_and_hold_only_their_scopes() {
        let (key, spec) = generate_key(Scopes::parse(&["offers", "events"]).unwrap());
        assert!(key.starts_with("oek_"));
        assert!(!spec.hash.contains(&key) && !spec.salt.contains(&key));
        assert_ne!(spec.hash, to_hex(&hash_key(b"", &key)), "salted");
        let store = KeyStore::new(MASTER, std::slice::from_ref(&spec), UNLIMITED).unwrap();
        let p = store.authenticate(&key).expect("the key verifies");
        assert_eq!(p.id(), spec.id);
        assert!(p.allows(Scope::Offers) && p.allows(Scope::Events));
        assert!(!p.allows(Scope::Admin) && !p.allows(Scope::MembersRead));
        let m = store.authenticate(MASTER).expect("the master key verifies");
        assert!(Scope::ALL.iter().all(|s| m.allows(*s)));
        assert_eq!(m.id(), "master");
    }

    #[test]
    fn wrong_or_altered_keys_are_refused() {
        let (key, spec) = generate_key(Scopes::parse(&["admin"]).unwrap());
        let store = KeyStore::new(MASTER, &[spec], UNLIMITED).unwrap();
        let mut altered = key.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        for k in [
            altered.as_str(),
            "",
            "oek_",
            "master",
            &key[..key.len() - 1],
            "a-master-key-of-some-lengtH",
        ] {
            assert!(store.authenticate(k).is_none(), "{k:?} was accepted");
        }
        // Another key's id with this key's secret.
        let (other, other_spec) = generate_key(Scopes::parse(&["offers"]).unwrap());
        let store = KeyStore::new(MASTER, std::slice::from_ref(&other_spec), UNLIMITED).unwrap();
        let secret = key.rsplit_once('_').unwrap().1;
        assert!(store
            .authenticate(&format!("oek_{}_{secret}", other_spec.id))
            .is_none());
        assert!(store.authenticate(&other).is_some());
    }

    #[test]
    fn hashing_is_salted_keyed_and_stable() {
        let a = hash_key(b"salt-one", "k");
        assert_eq!(a, hash_key(b"salt-one", "k"));
        assert_ne!(a, hash_key(b"salt-two", "k"));
        assert_ne!(a, hash_key(b"salt-one", "K"));
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            to_hex(&hash_key(b"Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(from_hex(&to_hex(&a)).unwrap(), a.to_vec());
        assert!(from_hex("abc").is_none() && from_hex("zz").is_none());
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key_named() {
        let (_, spec) = generate_key(Scopes::parse(&["offers"]).unwrap());
        assert_eq!(
            KeyStore::new("short", &[], UNLIMITED).unwrap_err(),
            KeyError::WeakMasterKey
        );
        let mut s = spec.clone();
        s.scopes = vec!["offer".into()];
        assert_eq!(
            KeyStore::new(MASTER, &[s], UNLIMITED).unwrap_err(),
            KeyError::UnknownScope("offer".into())
        );
        let mut s = spec.clone();
        s.hash.pop();
        assert!(matches!(
            KeyStore::new(MASTER, &[s], UNLIMITED).unwrap_err(),
            KeyError::BadEntry { id, .. } if id == spec.id
        ));
        assert!(KeyStore::new(MASTER, &[spec.clone(), spec.clone()], UNLIMITED).is_err());
        let block = config_block(&spec);
        let parsed: toml::Table = toml::from_str(&block).unwrap();
        let back: KeySpec = parsed["security"]["keys"][0].clone().try_into().unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_millis(500)), Ok(()));
        assert!(b.take(t0 + Duration::from_millis(500)).is_err());
        // Saved-up tokens never exceed the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn every_route_has_its_scope() {
        use Scope::*;
        for (m, p, want) in [
            ("POST", "/v1/offers", Access::Needs(Offers)),
            ("POST", "/v1/events", Access::Needs(Events)),
            ("GET", "/v1/members/{id}", Access::Needs(MembersRead)),
            ("PUT", "/v1/members/{id}", Access::Needs(MembersWrite)),
            ("DELETE", "/v1/members/{id}", Access::Needs(MembersWrite)),
            ("POST", "/v1/members", Access::Needs(MembersWrite)),
            ("POST", "/v1/member-events", Access::Needs(MembersWrite)),
            ("POST", "/v1/campaigns", Access::Needs(Campaigns)),
            ("GET", "/v1/experiments", Access::Needs(ExperimentsRead)),
            ("GET", "/v1/offers/stats", Access::Needs(ExperimentsRead)),
            (
                "GET",
                "/v1/offers/plots/offers.svg",
                Access::Needs(ExperimentsRead),
            ),
            ("GET", "/v1/campaigns/runs", Access::Needs(ExperimentsRead)),
            (
                "GET",
                "/v1/experiments/{id}/report",
                Access::Needs(ExperimentsRead),
            ),
            (
                "GET",
                "/v1/experiments/{id}/timeseries",
                Access::Needs(ExperimentsRead),
            ),
            (
                "GET",
                "/v1/experiments/{id}/plots/forest.svg",
                Access::Needs(ExperimentsRead),
            ),
            (
                "GET",
                "/v1/experiments/{id}/plots/timeseries.svg",
                Access::Needs(ExperimentsRead),
            ),
            ("GET", "/console", Access::Open),
            ("GET", "/console/console.js", Access::Open),
            ("POST", "/v1/admin/reload", Access::Needs(Admin)),
            ("GET", "/metrics", Access::Needs(Admin)),
            ("GET", "/healthz", Access::Open),
            ("GET", "/readyz", Access::Open),
            ("DELETE", "/v1/offers", Access::Unrouted),
        ] {
            assert_eq!(required(m, Some(p)), want, "{m} {p}");
        }
        assert_eq!(required("GET", None), Access::Unrouted);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
