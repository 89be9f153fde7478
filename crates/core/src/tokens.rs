//! Offer tokens: every offer a decision returns carries a `token` that
//! signs what was promised (decision, member, offer, price, points price,
//! expiry) with HMAC-SHA256 under a key from the configuration. An accept
//! must bring the token back; the server checks the signature and that the
//! signed terms are exactly those of the offer it issued. A client can
//! therefore not change a price, extend an expiry or move an offer to
//! another member, and any instance holding the same key (or the same
//! instance after a restart) checks the same token the same way.
//!
//! Form: `base64url(terms) "." base64url(HMAC-SHA256(key, terms))`, where
//! `terms` is a versioned, length-prefixed byte string (below), so the
//! terms can be read back from the token and no two different sets of terms
//! encode alike. Pure: no clock, no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Money;

type HmacSha256 = Hmac<Sha256>;

/// Version tag at the start of the signed terms.
const VERSION: &[u8; 3] = b"OT1";

/// The key that signs tokens (32 bytes), with its HMAC state keyed once:
/// keying HMAC-SHA-256 hashes two blocks (the padded key with ipad and opad),
/// which was 40% of the hashing of every token signed.
#[derive(Clone)]
pub struct TokenKey {
    raw: [u8; 32],
    keyed: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key derived from configured secret material (any length) and a
    /// purpose label, so one secret can key several uses independently.
    pub fn derive(secret: &[u8], purpose: &str) -> TokenKey {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        TokenKey::from_bytes(mac.finalize().into_bytes().into())
    }

    fn from_bytes(raw: [u8; 32]) -> TokenKey {
        TokenKey {
            raw,
            keyed: HmacSha256::new_from_slice(&raw).expect("HMAC takes any key length"),
        }
    }

    /// The raw key (to key other derivations, never to log).
    pub fn bytes(&self) -> [u8; 32] {
        self.raw
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Signs an offer's terms.
    pub fn sign(&self, t: &Terms<'_>) -> String {
        let mut bytes = Vec::with_capacity(96);
        t.encode(&mut bytes);
        let mut mac = self.mac();
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(4 * (bytes.len() + 34) / 3 + 2);
        B64.encode_string(&bytes, &mut out);
        out.push('.');
        B64.encode_string(tag, &mut out);
        out
    }

    /// Checks a token against the terms of the offer as issued. The
    /// signature is checked first (in constant time), then each term, so a
    /// refusal can say which term a genuine token for another offer differs in.
    pub fn verify(&self, token: &str, expected: &Terms<'_>) -> Result<(), TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let bytes = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&bytes);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let got = OwnedTerms::decode(&bytes).ok_or(TokenError::Malformed)?;
        let exp = expected;
        let checks: [(bool, &'static str); 6] = [
            (got.decision_id == exp.decision_id, "decision"),
            (got.member_id == exp.member_id, "member"),
            (got.offer_id == exp.offer_id, "offer"),
            (
                got.price
                    == exp
                        .price
                        .map(|p| (minor_units(p.amount), p.currency.clone())),
                "price",
            ),
            (got.points_price == exp.points_price, "points price"),
            (got.expires_ms == exp.expires_ms, "expiry"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, term)) => Err(TokenError::Mismatch(term)),
            None => Ok(()),
        }
    }
}

/// What a token signs.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    /// Decision id.
    pub decision_id: &'a str,
    /// Member the decision was for.
    pub member_id: &'a str,
    /// Offer id.
    pub offer_id: &'a str,
    /// Cash price for the party.
    pub price: Option<&'a Money>,
    /// Points price for the party.
    pub points_price: Option<u64>,
    /// Expiry, ms since the epoch.
    pub expires_ms: i64,
}

/// Cash in minor units (fen): prices are signed as integers, so float
/// formatting can never make two equal prices sign differently.
pub fn minor_units(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

impl Terms<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(VERSION);
        put_str(out, self.decision_id);
        put_str(out, self.member_id);
        put_str(out, self.offer_id);
        match self.price {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&minor_units(p.amount).to_le_bytes());
                put_str(out, &p.currency);
            }
            None => out.push(0),
        }
        match self.points_price {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&p.to_le_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
    }
}

/// Terms read back from a token.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTerms {
    /// Decision id.
    pub decision_id: String,
    /// Member id.
    pub member_id: String,
    /// Offer id.
    pub offer_id: String,
    /// Price in minor units and currency.
    pub price: Option<(i64, String)>,
    /// Points price.
    pub points_price: Option<u64>,
    /// Expiry, ms.
    pub expires_ms: i64,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)?.try_into().ok().map(i64::from_le_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

impl OwnedTerms {
    /// Reads the terms of a token (without checking its signature).
    pub fn from_token(token: &str) -> Option<OwnedTerms> {
        let body = token.split_once('.')?.0;
        OwnedTerms::decode(&B64.decode(body).ok()?)
    }

    fn decode(b: &[u8]) -> Option<OwnedTerms> {
        let mut r = Reader(b);
        if r.take(3)? != VERSION {
            return None;
        }
        let decision_id = r.str()?;
        let member_id = r.str()?;
        let offer_id = r.str()?;
        let price = match r.u8()? {
            0 => None,
            1 => Some((r.i64()?, r.str()?)),
            _ => return None,
        };
        let points_price = match r.u8()? {
            0 => None,
            1 => Some(r.i64()? as u64),
            _ => return None,
        };
        let expires_ms = r.i64()?;
        r.0.is_empty().then_some(OwnedTerms {
            decision_id,
            member_id,
            offer_id,
            price,
            points_price,
            expires_ms,
        })
    }

    /// Encodes terms as a token body would hold them (for tests that forge tokens).
    pub fn encode_body(&self) -> String {
        let money = self.price.as_ref().map(|(m, c)| Money {
            amount: *m as f64 / 100.0,
            currency: c.clone(),
        });
        let t = Terms {
            decision_id: &self.decision_id,
            member_id: &self.member_id,
            offer_id: &self.offer_id,
            price: money.as_ref(),
            points_price: self.points_price,
            expires_ms: self.expires_ms,
        };
        let mut bytes = Vec::new();
        t.encode(&mut bytes);
        B64.encode(bytes)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token at all.
    #[error("is not an offer token")]
    Malformed,
    /// The signature does not match (altered, or signed with another key).
    #[error("signature does not verify (the token was altered or signed with another key)")]
    BadSignature,
    /// A genuine token, for different terms.
    #[error("was issued for a different {0}")]
    Mismatch(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(a: f64) -> Money {
        Money {
            amount: a,
            currency: "CNY".into(),
        }
    }

    #[test]
    fn a_token_verifies_for_its_terms_only() {
        let key = TokenKey::derive(b"secret", "offer-token");
        let price = money(2560.0);
        let t = Terms {
            decision_id: "d1",
            member_id: "M00000042",
            offer_id: "upg",
            price: Some(&price),
            points_price: None,
            expires_ms: 1_800_000_000_000,
        };
        let tok = key.sign(&t);
        assert_eq!(key.verify(&tok, &t), Ok(()));
        // Same key material gives the same key (another instance, a restart).
        let again = TokenKey::derive(b"secret", "offer-token");
        assert_eq!(again.verify(&tok, &t), Ok(()));
        let other = TokenKey::derive(b"secret2", "offer-token");
        assert_eq!(other.verify(&tok, &t), Err(TokenError::BadSignature));
        let cheaper = money(1.0);
        for (t2, term) in [
            (
                Terms {
                    decision_id: "d2",
                    ..t
                },
                "decision",
            ),
            (
                Terms {
                    member_id: "M2",
                    ..t
                },
                "member",
            ),
            (Terms { offer_id: "x", ..t }, "offer"),
            (
                Terms {
                    price: Some(&cheaper),
                    ..t
                },
                "price",
            ),
            (Terms { price: None, ..t }, "price"),
            (
                Terms {
                    points_price: Some(1),
                    ..t
                },
                "points price",
            ),
            (
                Terms {
                    expires_ms: t.expires_ms + 1,
                    ..t
                },
                "expiry",
            ),
        ] {
            assert_eq!(key.verify(&tok, &t2), Err(TokenError::Mismatch(term)));
        }
    }

    #[test]
    fn altered_tokens_are_refused() {
        let key = TokenKey::derive(b"k", "offer-token");
        let price = money(99.5);
        let t = Terms {
            decision_id: "d",
            member_id: "m",
            offer_id: "o",
            price: Some(&price),
            points_price: Some(5000),
            expires_ms: 42,
        };
        let tok = key.sign(&t);
        let mut terms = OwnedTerms::from_token(&tok).unwrap();
        assert_eq!(terms.price, Some((9950, "CNY".into())));
        assert_eq!(terms.points_price, Some(5000));
        // New terms with the old signature.
        terms.price = Some((1, "CNY".into()));
        let tag = tok.split_once('.').unwrap().1;
        let forged = format!("{}.{tag}", terms.encode_body());
        let cheap = money(0.01);
        assert_eq!(
            key.verify(
                &forged,
                &Terms {
                    price: Some(&cheap),
                    ..t
                }
            ),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            ".",
            "abc",
            "abc.def",
            &tok[..tok.len() - 2],
            &tok.replace('.', ""),
        ] {
            assert!(key.verify(bad, &t).is_err(), "{bad:?}");
        }
        assert_eq!(minor_units(0.1 + 0.2), 30);
    }
}
