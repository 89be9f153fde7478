//! Idempotent retries: a caller that sends an `Idempotency-Key` with a
//! write (`POST /v1/offers`, `POST /v1/events`) and retries it (a booking
//! flow that timed out) gets the first answer again, byte for byte, instead
//! of a second decision or a 409.
//!
//! Answers are kept in a bounded in-memory cache (moka) with a time to live
//! (`idempotency.ttl_secs`) and a size bound in bytes
//! (`idempotency.max_bytes`), keyed by route, caller (the API key's id) and
//! the key, so callers never see each other's answers. Each entry holds a
//! SHA-256 fingerprint of the request (body, query string, and
//! `Accept-Language`): the same key with another request is refused.
//!
//! Concurrent requests with one key are coalesced: one runs, the others
//! wait for its answer (moka runs one `init` per key at a time), so they
//! make one decision. Only successful (2xx) answers are kept: a failed
//! request can be retried and runs again; requests waiting on a failing
//! one get its failure.
//!
//! The cache is memory only. After a restart (or once a key has expired or
//! been evicted) a retry runs as a new request: a checkout makes a new
//! decision (the first decision's offers stay valid until they expire), and
//! an event batch already durable is refused as it would be without a key
//! (409 for an accept already recorded).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Longest key accepted, bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Settings (`[idempotency]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// How long an answer is kept for retries, seconds (default 600).
    pub ttl_secs: u64,
    /// Most bytes of answers kept (keys, fingerprints and bodies;
    /// least-recently-used go first); default 64 MiB, about 35,000
    /// three-offer checkout answers.
    pub max_bytes: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            ttl_secs: 600,
            max_bytes: 64 << 20,
        }
    }
}

/// Which keyed write a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/offers`.
    Offers,
    /// `POST /v1/events`.
    Events,
}

impl Route {
    /// The route template (the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Offers => "/v1/offers",
            Route::Events => "/v1/events",
        }
    }
}

/// Where a key applies: one route, one caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The route.
    pub route: Route,
    /// The caller: the API key's id (empty in development mode).
    pub caller: Box<str>,
    /// The caller's key.
    pub key: Box<str>,
}

/// An answer as sent, kept for retries.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Fingerprint of the request it answered.
    pub fingerprint: [u8; 32],
    /// HTTP status.
    pub status: u16,
    /// Headers (content type, `Retry-After` and so on), as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// What happened to a keyed request.
#[derive(Debug)]
pub enum Outcome {
    /// This request ran; here is its answer.
    First(Arc<Answer>),
    /// An earlier request with the key ran (or was running); its answer.
    Replayed(Arc<Answer>),
}

/// Why a keyed request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key is empty, too long or not visible ASCII.
    #[error("must be 1 to {MAX_KEY_LEN} visible ASCII characters")]
    BadKey,
    /// The key was used with another request.
    #[error("was already used with a different request; use a new key for a new request")]
    Reused,
}

/// Checks a key: 1 to 255 visible ASCII characters.
pub fn check_key(key: &[u8]) -> Result<&str, IdempotencyError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(IdempotencyError::BadKey);
    }
    std::str::from_utf8(key).map_err(|_| IdempotencyError::BadKey)
}

/// The fingerprint of a request: its parts, each length-prefixed so that
/// no two different requests hash alike.
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The answers kept for retries.
pub struct Replays {
    cache: moka::future::Cache<Scope, Arc<Answer>>,
}

impl Replays {
    /// A cache keeping answers `ttl`, at most `max_bytes` of them.
    pub fn new(s: &IdempotencySettings) -> Replays {
        let cache = moka::future::Cache::builder()
            .time_to_live(Duration::from_secs(s.ttl_secs))
            .max_capacity(s.max_bytes)
            .weigher(|k: &Scope, v: &Arc<Answer>| {
                let headers: usize = v.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
                let n = k.caller.len() + k.key.len() + v.body.len() + headers + 128;
                u32::try_from(n).unwrap_or(u32::MAX)
            })
            .build();
        Replays { cache }
    }

    /// Runs `run` once per `scope` within the time to live: the first
    /// request runs it (and its 2xx answer is kept); a retry, or a request
    /// arriving while the first runs, gets that answer. A request with
    /// another `fingerprint` is refused.
    pub async fn run<F>(
        &self,
        scope: Scope,
        fingerprint: [u8; 32],
        run: F,
    ) -> Result<Outcome, IdempotencyError>
    where
        F: Future<Output = Answer>,
    {
        let init = async {
            let mut a = run.await;
            a.fingerprint = fingerprint;
            if (200..300).contains(&a.status) {
                Ok(Arc::new(a))
            } else {
                Err(a)
            }
        };
        let (answer, fresh) = match self.cache.entry(scope).or_try_insert_with(init).await {
            Ok(e) => {
                let fresh = e.is_fresh();
                (e.into_value(), fresh)
            }
            // This request's own failure, or the failure of the request it
            // waited on: not kept either way.
            Err(failed) => {
                let fresh = failed.fingerprint == fingerprint;
                (failed, fresh)
            }
        };
        if answer.fingerprint != fingerprint {
            return Err(IdempotencyError::Reused);
        }
        Ok(if fresh {
            Outcome::First(answer)
        } else {
            Outcome::Replayed(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn scope(key: &str) -> Scope {
        Scope {
            route: Route::Offers,
            caller: "k1".into(),
            key: key.into(),
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            fingerprint: [0; 32],
            status,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(check_key(b"a").is_ok());
        assert!(check_key(&[b'x'; 255]).is_ok());
        assert!(check_key(b"").is_err());
        assert!(check_key(&[b'x'; 256]).is_err());
        assert!(check_key(b"a b").is_err());
        assert!(check_key(b"a\tb").is_err());
        assert!(check_key("é".as_bytes()).is_err());
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"ab", b"c"]));
    }

    #[tokio::test]
    async fn one_run_per_key_and_only_successes_are_kept() {
        let r = Replays::new(&IdempotencySettings::default());
        let runs = AtomicUsize::new(0);
        let go = |status: u16| {
            let runs = &runs;
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                answer(status, "x")
            }
        };
        let fp = fingerprint(&[b"body"]);
        assert!(matches!(
            r.run(scope("a"), fp, go(200)).await,
            Ok(Outcome::First(_))
        ));
        assert!(matches!(
            r.run(scope("a"), fp, go(200)).await,
            Ok(Outcome::Replayed(_))
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let other = fingerprint(&[b"other"]);
        assert!(matches!(
            r.run(scope("a"), other, go(200)).await,
            Err(IdempotencyError::Reused)
        ));
        // Another caller's same key is another key.
        let mut s = scope("a");
        s.caller = "k2".into();
        assert!(matches!(r.run(s, fp, go(200)).await, Ok(Outcome::First(_))));
        // A failure is not kept: the retry runs again.
        assert!(matches!(
            r.run(scope("b"), fp, go(409)).await,
            Ok(Outcome::First(a)) if a.status == 409
        ));
        assert!(matches!(
            r.run(scope("b"), fp, go(202)).await,
            Ok(Outcome::First(a)) if a.status == 202
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn concurrent_requests_with_one_key_run_once() {
        let r = Arc::new(Replays::new(&IdempotencySettings::default()));
        let runs = Arc::new(AtomicUsize::new(0));
        let fp = fingerprint(&[b"body"]);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (r, runs) = (r.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                r.run(scope("same"), fp, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    answer(200, "only")
                })
                .await
                .map(|o| match o {
                    Outcome::First(a) | Outcome::Replayed(a) => a.body.clone(),
                })
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), b"only");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
