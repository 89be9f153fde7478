//! Offer tokens: every offer a decision returns carries a `token` that
//! signs what was promised (decision, member, offer, price, points price,
//! expiry) with a MAC under a key from the configuration (keyed BLAKE3 for
//! the tokens issued now, HMAC-SHA256 for the older forms). An accept
//! must bring the token back; the server checks the signature and that the
//! signed terms are exactly those of the offer it issued. A client can
//! therefore not change a price, extend an expiry or move an offer to
//! another member, and any instance holding the same key (or the same
//! instance after a restart) checks the same token the same way.
//!
//! Three forms verify:
//!
//! - **v3** (issued now, 23 bytes): `"3" base64url(tag)`, where `tag` is the
//!   first 16 bytes (128 bits) of keyed BLAKE3 (`blake3::keyed_hash`) over
//!   the versioned, length-prefixed terms (`OT3`, decision id, member id,
//!   offer id, price, points price, expiry: the v1 encoding under another
//!   version tag). The BLAKE3 key is derived from the token key with
//!   BLAKE3's key derivation under its own context string, so no v3 tag is
//!   ever computed under the key of the HMAC forms. Like v2, the token
//!   carries no terms: the server recomputes the tag over the offer as it
//!   issued it, so a change to any bound term makes it fail; the compare is
//!   constant-time. Terms up to 64 bytes take one BLAKE3 compression, up to
//!   128 two (a uuid decision id, a member id and an offer id of about 20
//!   bytes each: two), where a v2 token takes two SHA-256 compressions per
//!   offer plus one per decision, each several times dearer (see
//!   docs/security.md for the choice of MAC).
//! - **v2** (issued before v3, 23 bytes): `"2" base64url(tag)`, where `tag` is the
//!   first 16 bytes (128 bits) of HMAC-SHA256 over the versioned,
//!   length-prefixed terms. The token carries no terms: the server holds the
//!   offer as issued and recomputes the MAC over those, so any change to a
//!   bound term (decision, member, offer, price, points price, expiry) makes
//!   it fail. The decision's part of the terms (version, decision id,
//!   member id) is padded to whole SHA-256 blocks and absorbed once per
//!   decision ([`TokenKey::for_decision`]); each offer then costs two
//!   SHA-256 blocks (its terms and the outer hash) instead of three.
//! - **v1** (issued before, about 160 bytes): `base64url(terms) "."
//!   base64url(HMAC-SHA256(key, terms))` with the full tag; the terms can
//!   be read back, so a refusal can name the term that differs. Kept so
//!   tokens issued before an upgrade verify until their offers expire.
//!
//! In both, no two different sets of terms encode alike. Pure: no clock, no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::domain::Money;

type HmacSha256 = Hmac<Sha256>;

/// Version tag at the start of the signed terms (v1 tokens).
const VERSION: &[u8; 3] = b"OT1";

/// Version tag at the start of the signed terms (v2 tokens).
const VERSION2: &[u8; 3] = b"OT2";

/// Version tag at the start of the signed terms (v3 tokens).
const VERSION3: &[u8; 3] = b"OT3";

/// The first character of a v2 token (v1 tokens always hold a '.').
const PREFIX2: char = '2';

/// The first character of a v3 token.
const PREFIX3: char = '3';

/// BLAKE3 key-derivation context of the v3 MAC key (BLAKE3 asks for a
/// hard-coded, globally unique context string per use).
const CONTEXT3: &str = "offer-engine 2026 offer token v3 keyed BLAKE3 MAC key";

/// Bytes of the terms signed on the stack (longer terms take a Vec).
const STACK3: usize = 192;

/// Bytes of the MAC a v2 token carries (128 bits).
const TAG2: usize = 16;

/// SHA-256 block size.
const BLOCK: usize = 64;

/// The key that signs tokens (32 bytes), with its HMAC state keyed once:
/// keying HMAC-SHA-256 hashes two blocks (the padded key with ipad and opad),
/// which was 40% of the hashing of every token signed.
#[derive(Clone)]
pub struct TokenKey {
    raw: [u8; 32],
    keyed: HmacSha256,
    /// The key of the v3 MAC (keyed BLAKE3), derived from `raw`.
    mac3: [u8; 32],
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
            mac3: blake3::derive_key(CONTEXT3, &raw),
        }
    }

    /// The raw key (to key other derivations, never to log).
    pub fn bytes(&self) -> [u8; 32] {
        self.raw
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Signs an offer's terms (a v3 token, the form issued now). Signing
    /// several offers of one decision is cheaper with
    /// [`TokenKey::for_decision`].
    pub fn sign(&self, t: &Terms<'_>) -> String {
        self.for_decision(t.decision_id, t.member_id).sign(t)
    }

    /// A signer for the offers of one decision (v3 tokens): the decision's
    /// part of the terms is encoded once, here.
    pub fn for_decision(&self, decision_id: &str, member_id: &str) -> DecisionSigner {
        let mut head = [0u8; STACK3];
        let mut w = Writer {
            buf: &mut head,
            n: 0,
        };
        let fits = decision_id.len() + member_id.len() + 7 <= STACK3;
        if fits {
            w.put(VERSION3);
            w.str(decision_id);
            w.str(member_id);
        }
        let n = w.n;
        DecisionSigner {
            key: self.mac3,
            head,
            head_len: n,
            long: (!fits).then(|| {
                let mut v = Vec::with_capacity(decision_id.len() + member_id.len() + 7);
                v.extend_from_slice(VERSION3);
                put_str(&mut v, decision_id);
                put_str(&mut v, member_id);
                v
            }),
        }
    }

    /// Signs an offer's terms as a v2 token (the form issued before v3),
    /// for tests and tools that need one.
    pub fn sign_v2(&self, t: &Terms<'_>) -> String {
        self.for_decision_v2(t.decision_id, t.member_id).sign(t)
    }

    /// A v2 signer for the offers of one decision: the decision's part of
    /// the terms is hashed once, here.
    fn for_decision_v2(&self, decision_id: &str, member_id: &str) -> DecisionSignerV2 {
        let mut head = Vec::with_capacity(2 * BLOCK);
        head.extend_from_slice(VERSION2);
        put_str(&mut head, decision_id);
        put_str(&mut head, member_id);
        // Zeros to the block boundary: the lengths say where the strings
        // end, so the padding is unambiguous, and the state after it holds
        // no buffered bytes to hash again for every offer (a uuid decision
        // id and a member id up to 21 bytes make one block).
        head.resize(head.len().div_ceil(BLOCK) * BLOCK, 0);
        let mut mac = self.mac();
        mac.update(&head);
        DecisionSignerV2 { mac }
    }

    /// Signs an offer's terms as a v1 token (the form issued before v2),
    /// for tests and tools that need one.
    pub fn sign_v1(&self, t: &Terms<'_>) -> String {
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
        if let Some(tag) = token.strip_prefix(PREFIX3) {
            let mut got = [0u8; TAG2];
            match B64.decode_slice(tag, &mut got) {
                Ok(TAG2) => {}
                _ => return Err(TokenError::Malformed),
            }
            let want = self
                .for_decision(expected.decision_id, expected.member_id)
                .tag(expected);
            return if bool::from(got.ct_eq(&want)) {
                Ok(())
            } else {
                Err(TokenError::NotForTheseTerms)
            };
        }
        if let Some(tag) = token.strip_prefix(PREFIX2) {
            let mut got = [0u8; TAG2];
            match B64.decode_slice(tag, &mut got) {
                Ok(TAG2) => {}
                _ => return Err(TokenError::Malformed),
            }
            let want = self
                .for_decision_v2(expected.decision_id, expected.member_id)
                .tag(expected);
            return if bool::from(got.ct_eq(&want)) {
                Ok(())
            } else {
                Err(TokenError::NotForTheseTerms)
            };
        }
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

/// Signs the offers of one decision (v3 tokens).
#[derive(Clone)]
pub struct DecisionSigner {
    /// The v3 MAC key.
    key: [u8; 32],
    /// The decision's part of the terms (`OT3`, decision id, member id).
    head: [u8; STACK3],
    head_len: usize,
    /// The decision's part when it does not fit `head`.
    long: Option<Vec<u8>>,
}

impl DecisionSigner {
    /// The token of one offer; `t`'s decision and member must be those the
    /// signer was made for (they are not encoded again).
    pub fn sign(&self, t: &Terms<'_>) -> String {
        let tag = self.tag(t);
        let mut out = String::with_capacity(1 + 22);
        out.push(PREFIX3);
        B64.encode_string(tag, &mut out);
        out
    }

    fn tag(&self, t: &Terms<'_>) -> [u8; TAG2] {
        let mut buf = [0u8; STACK3];
        // The whole terms in one buffer, so keyed BLAKE3 runs once over them.
        let mut w = Writer {
            buf: &mut buf,
            n: 0,
        };
        let on_stack = self.long.is_none() && {
            w.put(&self.head[..self.head_len]);
            t.write_offer(&mut w)
        };
        let hash = if on_stack {
            let n = w.n;
            blake3::keyed_hash(&self.key, &buf[..n])
        } else {
            let mut v = match &self.long {
                Some(l) => l.clone(),
                None => self.head[..self.head_len].to_vec(),
            };
            t.encode_offer_vec(&mut v);
            blake3::keyed_hash(&self.key, &v)
        };
        let mut tag = [0u8; TAG2];
        tag.copy_from_slice(&hash.as_bytes()[..TAG2]);
        tag
    }
}

/// Signs the offers of one decision (v2 tokens).
#[derive(Clone)]
struct DecisionSignerV2 {
    /// Keyed, with the decision's blocks absorbed.
    mac: HmacSha256,
}

impl DecisionSignerV2 {
    /// The token of one offer; `t`'s decision and member must be those the
    /// signer was made for (they are not hashed again).
    pub fn sign(&self, t: &Terms<'_>) -> String {
        let tag = self.tag(t);
        let mut out = String::with_capacity(1 + 22);
        out.push(PREFIX2);
        B64.encode_string(tag, &mut out);
        out
    }

    fn tag(&self, t: &Terms<'_>) -> [u8; TAG2] {
        // The offer's part: with SHA-256's padding one block while the
        // offer id is at most 22 bytes (30 without a points price).
        let mut bytes = [0u8; 128];
        let n = t.encode_offer(&mut bytes);
        let mut mac = self.mac.clone();
        match n {
            Some(n) => mac.update(&bytes[..n]),
            None => {
                let mut v = Vec::with_capacity(128);
                t.encode_offer_vec(&mut v);
                mac.update(&v);
            }
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG2];
        tag.copy_from_slice(&full[..TAG2]);
        tag
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
    /// The offer's part of the v2 terms into `buf`, without allocating;
    /// None when it does not fit.
    fn encode_offer(&self, buf: &mut [u8; 128]) -> Option<usize> {
        let mut w = Writer { buf, n: 0 };
        self.write_offer(&mut w).then_some(w.n)
    }

    /// The offer's part of the terms (offer id, price, points price, expiry)
    /// after what `w` holds; false (and nothing written) when it does not fit.
    fn write_offer(&self, w: &mut Writer<'_>) -> bool {
        let currency = self.price.map_or(0, |p| p.currency.len());
        // Two lengths, two flags, three 8-byte figures at most.
        if w.n + self.offer_id.len() + currency + 2 + 2 + 2 + 24 > w.buf.len() {
            return false;
        }
        w.str(self.offer_id);
        match self.price {
            Some(p) => {
                w.put(&[1]);
                w.put(&minor_units(p.amount).to_le_bytes());
                w.str(&p.currency);
            }
            None => w.put(&[0]),
        }
        match self.points_price {
            Some(p) => {
                w.put(&[1]);
                w.put(&p.to_le_bytes());
            }
            None => w.put(&[0]),
        }
        w.put(&self.expires_ms.to_le_bytes());
        true
    }

    /// The same bytes as [`Terms::encode_offer`], for any length.
    fn encode_offer_vec(&self, out: &mut Vec<u8>) {
        put_str(out, self.offer_id);
        self.encode_rest(out);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(VERSION);
        put_str(out, self.decision_id);
        put_str(out, self.member_id);
        put_str(out, self.offer_id);
        self.encode_rest(out);
    }

    /// Price, points price and expiry.
    fn encode_rest(&self, out: &mut Vec<u8>) {
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

/// Writes into a fixed buffer (sized by the caller's check).
struct Writer<'a> {
    buf: &'a mut [u8],
    n: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.n..self.n + b.len()].copy_from_slice(b);
        self.n += b.len();
    }
    fn str(&mut self, s: &str) {
        self.put(&(s.len() as u16).to_le_bytes());
        self.put(s.as_bytes());
    }
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
    /// A genuine v1 token, for different terms.
    #[error("was issued for a different {0}")]
    Mismatch(&'static str),
    /// A v2 token that does not verify for this offer's terms: altered,
    /// issued for another offer, member or decision, or signed with another
    /// key (v2 tokens carry no terms, so which cannot be told).
    #[error("signature does not verify for this offer's terms (altered, issued for another offer, member or decision, or signed with another key)")]
    NotForTheseTerms,
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

    fn changed_terms<'a>(t: Terms<'a>, cheaper: &'a Money) -> Vec<(Terms<'a>, &'static str)> {
        vec![
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
                    price: Some(cheaper),
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
        ]
    }

    #[test]
    fn a_token_verifies_for_its_terms_only() {
        let key = TokenKey::derive(b"secret", "offer-token");
        let price = money(2560.0);
        let t = Terms {
            decision_id: "8e9375a3-2b1f-4f33-81e2-24ddf734780e",
            member_id: "M00000042",
            offer_id: "upg-biz-dom-cash",
            price: Some(&price),
            points_price: None,
            expires_ms: 1_800_000_000_000,
        };
        let cheaper = money(1.0);
        // v3: what the server issues.
        let v3 = key.sign(&t);
        assert_eq!(v3.len(), 23, "{v3}");
        assert!(v3.starts_with('3') && !v3.contains('.'));
        assert_eq!(key.verify(&v3, &t), Ok(()));
        assert_eq!(key.for_decision(t.decision_id, t.member_id).sign(&t), v3);
        let other = TokenKey::derive(b"secret2", "offer-token");
        assert_eq!(other.verify(&v3, &t), Err(TokenError::NotForTheseTerms));
        for (t2, term) in changed_terms(t, &cheaper) {
            assert_eq!(
                key.verify(&v3, &t2),
                Err(TokenError::NotForTheseTerms),
                "{term}"
            );
        }
        // The v3 tag is keyed BLAKE3 over the v1 encoding under `OT3`,
        // with the key derived under its own context.
        let mut terms = Vec::new();
        t.encode(&mut terms);
        terms[..3].copy_from_slice(b"OT3");
        let want = blake3::keyed_hash(&blake3::derive_key(CONTEXT3, &key.bytes()), &terms);
        assert_eq!(v3[1..], B64.encode(&want.as_bytes()[..16]));
        // v2: issued before v3; still verifies.
        let tok = key.sign_v2(&t);
        assert_eq!(tok.len(), 23, "{tok}");
        assert!(tok.starts_with('2') && !tok.contains('.'));
        assert_ne!(tok[1..], v3[1..]);
        assert_eq!(key.verify(&tok, &t), Ok(()));
        // One signer per decision gives the same token as signing alone.
        assert_eq!(
            key.for_decision_v2(t.decision_id, t.member_id).sign(&t),
            tok
        );
        // Same key material gives the same key (another instance, a restart).
        let again = TokenKey::derive(b"secret", "offer-token");
        assert_eq!(again.verify(&tok, &t), Ok(()));
        assert_eq!(again.verify(&v3, &t), Ok(()));
        assert_eq!(other.verify(&tok, &t), Err(TokenError::NotForTheseTerms));
        for (t2, term) in changed_terms(t, &cheaper) {
            assert_eq!(
                key.verify(&tok, &t2),
                Err(TokenError::NotForTheseTerms),
                "{term}"
            );
        }
        // v1: issued before; still verifies, and names the term that differs.
        let old = key.sign_v1(&t);
        // The size docs/api.md quotes for the README example's upgrade offer.
        assert_eq!(old.len(), 168, "{old}");
        assert_eq!(key.verify(&old, &t), Ok(()));
        assert_eq!(other.verify(&old, &t), Err(TokenError::BadSignature));
        for (t2, term) in changed_terms(t, &cheaper) {
            assert_eq!(key.verify(&old, &t2), Err(TokenError::Mismatch(term)));
        }
    }

    #[test]
    fn long_ids_sign_alike_whatever_the_path() {
        // An offer id too long for the stack buffer takes the Vec path; the
        // decision part spans several blocks: both still bind every term.
        let key = TokenKey::derive(b"k", "offer-token");
        let long_offer = "o".repeat(300);
        let long_member = "m".repeat(200);
        let price = money(10.0);
        let t = Terms {
            decision_id: "d",
            member_id: &long_member,
            offer_id: &long_offer,
            price: Some(&price),
            points_price: Some(7),
            expires_ms: 1,
        };
        let short = "o".repeat(299);
        let small_offer = Terms {
            offer_id: "upg",
            ..t
        };
        let long_member_only = Terms {
            member_id: "m",
            ..t
        };
        for tok in [key.sign(&t), key.sign_v2(&t)] {
            assert_eq!(key.verify(&tok, &t), Ok(()));
            assert!(key
                .verify(
                    &tok,
                    &Terms {
                        offer_id: &short,
                        ..t
                    }
                )
                .is_err());
        }
        // v3 signs the same bytes on the stack and in a Vec: the tag is
        // keyed BLAKE3 over the whole encoding whichever path is taken.
        let k3 = blake3::derive_key(CONTEXT3, &key.bytes());
        for terms in [t, small_offer, long_member_only] {
            let mut enc = Vec::new();
            terms.encode(&mut enc);
            enc[..3].copy_from_slice(VERSION3);
            let want = blake3::keyed_hash(&k3, &enc);
            assert_eq!(key.sign(&terms)[1..], B64.encode(&want.as_bytes()[..16]));
        }
        // The two encodings of the offer's part agree where both apply.
        let mut buf = [0u8; 128];
        let small = Terms {
            offer_id: "upg",
            ..t
        };
        let n = small.encode_offer(&mut buf).unwrap();
        let mut v = Vec::new();
        small.encode_offer_vec(&mut v);
        assert_eq!(&buf[..n], &v[..]);
    }

    #[test]
    fn altered_v2_and_v3_tokens_are_refused() {
        let key = TokenKey::derive(b"k", "offer-token");
        let t = Terms {
            decision_id: "d",
            member_id: "m",
            offer_id: "o",
            price: None,
            points_price: Some(5000),
            expires_ms: 42,
        };
        for (tok, v) in [(key.sign_v2(&t), "2"), (key.sign(&t), "3")] {
            assert!(tok.starts_with(v));
            // Every character of the tag changed in turn.
            for i in 1..tok.len() {
                let mut b = tok.clone().into_bytes();
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                let bad = String::from_utf8(b).unwrap();
                assert!(key.verify(&bad, &t).is_err(), "{bad}");
            }
            // A tag of one form presented as the other.
            let swapped = format!("{}{}", if v == "2" { "3" } else { "2" }, &tok[1..]);
            assert_eq!(key.verify(&swapped, &t), Err(TokenError::NotForTheseTerms));
            for bad in [
                v,
                &format!("{v}AAAA"),
                &format!("{tok}A"),
                &tok[..tok.len() - 1],
            ] {
                assert_eq!(key.verify(bad, &t), Err(TokenError::Malformed), "{bad:?}");
            }
        }
    }

    #[test]
    fn altered_v1_tokens_are_refused() {
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
        let tok = key.sign_v1(&t);
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
