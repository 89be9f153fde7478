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

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
