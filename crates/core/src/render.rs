//! The wire form of a ranked offer, shared by checkout answers and campaign
//! lines (the same fields in both, as users rely on).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::catalog::Offer;
use crate::decision::RankedOffer;
use crate::domain::Money;
use crate::reasons::Reasons;
use crate::tokens::{DecisionSigner, Terms};

/// One offer as returned to a caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OfferOut<'a> {
    /// Offer id.
    pub offer_id: &'a str,
    /// Category (snake_case).
    pub category: &'static str,
    /// Title.
    pub title: &'a str,
    /// Cash price for the party, or null.
    pub price: Option<Money>,
    /// Points price for the party, or null.
    pub points_price: Option<u64>,
    /// Model propensity.
    pub score: f32,
    /// Expected value, CNY.
    pub expected_value: f64,
    /// Why this offer: objects with a stable `code` and its figures (see
    /// `Reason` for every code); with `explain` each also has `text`, a
    /// sentence in English or Simplified Chinese (`Accept-Language`).
    #[schema(value_type = Vec<crate::reasons::Reason>)]
    pub reasons: Reasons,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// Signed terms of the offer; an accept must bring it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Probability with which the exploration policy put this offer in this
    /// slot (1 when the variant does not explore).
    pub propensity: f64,
}

impl<'a> OfferOut<'a> {
    /// The wire form of a ranked catalog offer.
    pub fn new(offer: &'a Offer, o: RankedOffer) -> OfferOut<'a> {
        OfferOut {
            offer_id: &offer.id,
            category: offer.category.as_str(),
            title: &offer.title,
            price: o.price,
            points_price: o.points_price,
            score: o.propensity,
            expected_value: o.expected_value,
            reasons: Reasons::plain(o.reasons),
            expires_at: rfc3339(o.expires_at),
            token: None,
            propensity: o.slot_propensity,
        }
    }

    /// The wire form with its signed `token` (see [`crate::tokens`]);
    /// `signer` is for `decision_id` and `member_id`.
    pub fn new_signed(
        offer: &'a Offer,
        o: RankedOffer,
        signer: &DecisionSigner,
        decision_id: &str,
        member_id: &str,
    ) -> OfferOut<'a> {
        let token = signer.sign(&Terms {
            decision_id,
            member_id,
            offer_id: &offer.id,
            price: o.price.as_ref(),
            points_price: o.points_price,
            expires_ms: o.expires_at.timestamp_millis(),
        });
        let mut out = OfferOut::new(offer, o);
        out.token = Some(token);
        out
    }
}

/// RFC 3339 in UTC with milliseconds (`2026-12-01T10:00:00.000Z`), as
/// chrono's `to_rfc3339_opts(SecondsFormat::Millis, true)` writes it; years
/// 0 to 9999 are written here without the formatting machinery (about a
/// third of the cost, callgrind), others by chrono.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    // A leap second (nanos of a second and more) is chrono's to write.
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, digits: usize, mut v: u32| {
        for i in (at..at + digits).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 3, nanos / 1_000_000);
    // Only ASCII digits and separators were written.
    b.iter().map(|&c| c as char).collect()
}

/// A JSON writer for the answers on the checkout path, byte for byte what
/// `serde_json::to_writer` writes for the same values (a property test
/// holds them together). serde_json passes every key and string through
/// its escape scan, a branch per byte that was about 16,000 instructions
/// of a three-offer checkout (callgrind); here keys are literals and each
/// string is checked by a branch-free scan (which the compiler vectorizes)
/// and copied, serde_json escaping only a string that needs it.
pub mod json {
    use serde::Serialize;

    /// True when `s` can be written between quotes as it is: no quote,
    /// backslash or control character (the characters JSON escapes).
    #[inline]
    pub fn plain(s: &str) -> bool {
        // No early exit: the loop vectorizes, and answers' strings are
        // short and almost never need escaping.
        !s.bytes().fold(false, |bad, b| {
            bad | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    }

    /// Writes `s` as a JSON string.
    #[inline]
    pub fn str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
        if plain(s) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            Ok(())
        } else {
            serde_json::to_writer(&mut *out, s)
        }
    }

    /// Writes a number, an option or any small value as serde_json does.
    #[inline]
    pub fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *out, v)
    }

    /// Writes a literal piece (keys, punctuation).
    #[inline]
    pub fn raw(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
    }
}

impl OfferOut<'_> {
    /// Appends this offer as JSON to `out`, exactly as its `Serialize`
    /// implementation does through serde_json (see [`json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        json::raw(out, "{\"offer_id\":");
        json::str(out, self.offer_id)?;
        json::raw(out, ",\"category\":");
        json::str(out, self.category)?;
        json::raw(out, ",\"title\":");
        json::str(out, self.title)?;
        json::raw(out, ",\"price\":");
        match &self.price {
            None => json::raw(out, "null"),
            Some(m) => {
                json::raw(out, "{\"amount\":");
                json::value(out, &m.amount)?;
                json::raw(out, ",\"currency\":");
                json::str(out, &m.currency)?;
                json::raw(out, "}");
            }
        }
        json::raw(out, ",\"points_price\":");
        json::value(out, &self.points_price)?;
        json::raw(out, ",\"score\":");
        json::value(out, &self.score)?;
        json::raw(out, ",\"expected_value\":");
        json::value(out, &self.expected_value)?;
        json::raw(out, ",\"reasons\":");
        self.reasons.write_json(out)?;
        json::raw(out, ",\"expires_at\":");
        json::str(out, &self.expires_at)?;
        if let Some(t) = &self.token {
            json::raw(out, ",\"token\":");
            json::str(out, t)?;
        }
        json::raw(out, ",\"propensity\":");
        json::value(out, &self.propensity)?;
        json::raw(out, "}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rfc3339_as_chrono_writes_it(ms in -62_167_219_200_000i64..253_402_300_800_000i64 + 86_400_000) {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            prop_assert_eq!(rfc3339(t), t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }

    #[test]
    fn rfc3339_outside_four_digit_years_is_chrono_s() {
        for ms in [
            -62_167_219_200_001i64,
            253_402_300_800_000,
            1_764_583_200_123,
        ] {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(rfc3339(t), t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }
}
