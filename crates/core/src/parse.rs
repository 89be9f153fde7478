//! Parsing requests into domain types at the edge ("parse, don't validate").
//!
//! JSON is read with `serde_path_to_error`, so a mistyped or missing field is
//! reported by its full dotted path (`itinerary.cabin`), then checked into
//! [`OfferRequest`]; the core never sees an invalid request.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::{
    Cabin, Channel, FieldError, Iata, Itinerary, Money, OfferRequest, DEFAULT_MAX_OFFERS,
    MAX_OFFERS, MAX_PASSENGERS,
};

/// Strips serde_json's " at line L column C" suffix.
pub fn json_error_text(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Converts a path-aware JSON error into a [`FieldError`] naming the field.
/// A missing field is named by its own path (`itinerary.cabin`), not its parent's.
pub fn json_field_error(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let msg = json_error_text(&inner);
    let parent = if path == "." { String::new() } else { path };
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some(name) = rest.split('`').next() {
            let field = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}.{name}")
            };
            return FieldError::new(field, "is required");
        }
    }
    if inner.is_syntax() || inner.is_eof() {
        return FieldError::new("body", format!("malformed JSON: {msg}"));
    }
    FieldError::new(
        if parent.is_empty() {
            "body".into()
        } else {
            parent
        },
        msg,
    )
}

/// Deserializes JSON with field paths in errors.
///
/// Valid bodies (nearly all) are parsed once by plain serde_json; only a
/// body that fails is parsed again with `serde_path_to_error` to name the
/// field, so the common path does not pay for path tracking (about 2% of a
/// checkout's CPU in a profile). Both parse the same bytes with the same
/// deserializer, so they agree on what fails.
pub fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FieldError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(json_field_error)?;
    de.end()
        .map_err(|e| FieldError::new("body", format!("malformed JSON: {}", json_error_text(&e))))?;
    Ok(v)
}

/// Wire form of the itinerary.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItineraryDto {
    /// Departure airport.
    pub origin: String,
    /// Arrival airport.
    pub destination: String,
    /// RFC 3339 departure.
    pub departure: String,
    /// Cabin.
    pub cabin: Cabin,
    /// Fare for the party.
    pub fare: Money,
    /// Party size.
    pub passengers: i64,
}

/// Wire form of `POST /v1/offers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferRequestDto {
    /// Member id.
    pub member_id: String,
    /// Channel.
    pub channel: Channel,
    /// Trip being booked.
    pub itinerary: ItineraryDto,
    /// Most offers to return (default 3, at most 10).
    #[serde(default)]
    pub max_offers: Option<i64>,
    /// Adds a sentence (`text`) to each reason, in the language of
    /// `Accept-Language` (English or Simplified Chinese); default false.
    #[serde(default)]
    pub explain: Option<bool>,
}

/// Parses an RFC 3339 instant.
pub fn parse_instant(s: &str, field: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            FieldError::new(
                field,
                "must be an RFC 3339 date-time such as 2026-12-01T08:30:00+08:00",
            )
        })
}

/// The currency the engine prices in. A fare in any other currency is
/// refused (422 naming `itinerary.fare.currency`): the features, expected
/// values and prices are all CNY, and there is no conversion table.
pub const PRICING_CURRENCY: &str = "CNY";

/// The fields of a checkout request as far as they parsed; `None` where a
/// field is missing or mistyped (already reported).
#[derive(Debug, Default)]
struct PartialRequest {
    member_id: Option<String>,
    channel: Option<Channel>,
    origin: Option<String>,
    destination: Option<String>,
    departure: Option<String>,
    cabin: Option<Cabin>,
    fare_amount: Option<f64>,
    fare_currency: Option<String>,
    passengers: Option<i64>,
    max_offers: Option<Option<i64>>,
    explain: Option<Option<bool>>,
}

/// Checks every field that parsed, pushing one error per field at fault
/// (in the order of the request's documentation); the request when none is.
fn check_request(
    p: PartialRequest,
    now: DateTime<Utc>,
    errs: &mut Vec<FieldError>,
) -> Option<OfferRequest> {
    let before = errs.len();
    if let Some(id) = &p.member_id {
        if let Err(e) = crate::domain::validate_member_id(id, "member_id") {
            errs.push(e);
        }
    }
    let origin = p.origin.as_deref().and_then(|o| {
        Iata::parse(o)
            .map_err(|m| errs.push(FieldError::new("itinerary.origin", m)))
            .ok()
    });
    let destination = p.destination.as_deref().and_then(|d| {
        Iata::parse(d)
            .map_err(|m| errs.push(FieldError::new("itinerary.destination", m)))
            .ok()
    });
    if let (Some(o), Some(d)) = (origin, destination) {
        if o == d {
            errs.push(FieldError::new(
                "itinerary.destination",
                "must differ from origin",
            ));
        }
    }
    let departure = p.departure.as_deref().and_then(|s| {
        let d = parse_instant(s, "itinerary.departure")
            .map_err(|e| errs.push(e))
            .ok()?;
        if d < now - chrono::Duration::hours(1) {
            errs.push(FieldError::new("itinerary.departure", "is in the past"));
            return None;
        }
        if d > now + chrono::Duration::days(400) {
            errs.push(FieldError::new(
                "itinerary.departure",
                "is more than 400 days ahead",
            ));
            return None;
        }
        Some(d)
    });
    if let Some(a) = p.fare_amount {
        if !a.is_finite() || a < 0.0 {
            errs.push(FieldError::new(
                "itinerary.fare.amount",
                "must not be negative",
            ));
        }
    }
    if let Some(c) = &p.fare_currency {
        let b = c.as_bytes();
        if b.len() != 3 || !b.iter().all(|x| x.is_ascii_uppercase()) {
            errs.push(FieldError::new(
                "itinerary.fare.currency",
                "must be an ISO 4217 code such as \"CNY\"",
            ));
        } else if c != PRICING_CURRENCY {
            errs.push(FieldError::new(
                "itinerary.fare.currency",
                format!("must be {PRICING_CURRENCY}: the engine prices in {PRICING_CURRENCY} only"),
            ));
        }
    }
    if let Some(n) = p.passengers {
        if n < 1 || n > MAX_PASSENGERS as i64 {
            errs.push(FieldError::new(
                "itinerary.passengers",
                format!("must be from 1 to {MAX_PASSENGERS}"),
            ));
        }
    }
    let max_offers = match p.max_offers {
        None => None,
        Some(None) => Some(DEFAULT_MAX_OFFERS),
        Some(Some(n)) if (1..=MAX_OFFERS as i64).contains(&n) => Some(n as usize),
        Some(Some(_)) => {
            errs.push(FieldError::new(
                "max_offers",
                format!("must be from 1 to {MAX_OFFERS}"),
            ));
            None
        }
    };
    if errs.len() > before {
        return None;
    }
    Some(OfferRequest {
        member_id: p.member_id?,
        channel: p.channel?,
        itinerary: Itinerary {
            origin: origin?,
            destination: destination?,
            departure: departure?,
            cabin: p.cabin?,
            fare: Money {
                amount: p.fare_amount?,
                currency: p.fare_currency?,
            },
            passengers: p.passengers? as u8,
        },
        max_offers: max_offers?,
        explain: p.explain?.unwrap_or(false),
    })
}

impl OfferRequestDto {
    /// Checks the request into domain types. `now` rejects departures in the
    /// past. The first field at fault; [`OfferRequestDto::into_domain_all`]
    /// gives all of them.
    pub fn into_domain(self, now: DateTime<Utc>) -> Result<OfferRequest, FieldError> {
        self.into_domain_all(now).map_err(|mut v| v.swap_remove(0))
    }

    /// Checks the request into domain types, reporting every field at fault
    /// (never an empty list).
    pub fn into_domain_all(self, now: DateTime<Utc>) -> Result<OfferRequest, Vec<FieldError>> {
        let it = self.itinerary;
        let p = PartialRequest {
            member_id: Some(self.member_id),
            channel: Some(self.channel),
            origin: Some(it.origin),
            destination: Some(it.destination),
            departure: Some(it.departure),
            cabin: Some(it.cabin),
            fare_amount: Some(it.fare.amount),
            fare_currency: Some(it.fare.currency),
            passengers: Some(it.passengers),
            max_offers: Some(self.max_offers),
            explain: Some(self.explain),
        };
        let mut errs = Vec::new();
        match check_request(p, now, &mut errs) {
            Some(r) if errs.is_empty() => Ok(r),
            _ if errs.is_empty() => Err(vec![FieldError::new("body", "is invalid")]),
            _ => Err(errs),
        }
    }
}

/// Field names of the request objects, for unknown-field errors.
const REQUEST_FIELDS: [&str; 5] = ["member_id", "channel", "itinerary", "max_offers", "explain"];
const ITINERARY_FIELDS: [&str; 6] = [
    "origin",
    "destination",
    "departure",
    "cabin",
    "fare",
    "passengers",
];
const FARE_FIELDS: [&str; 2] = ["amount", "currency"];

/// One field of a JSON object as `T`: `None` (and an error) when it is
/// missing or mistyped.
fn field_of<T: serde::de::DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) -> Option<T> {
    let full = if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    };
    match obj.get(name) {
        None => {
            errs.push(FieldError::new(full, "is required"));
            None
        }
        Some(v) => T::deserialize(v)
            .map_err(|e| errs.push(FieldError::new(full, json_error_text(&e))))
            .ok(),
    }
}

/// An object-valued field: `None` (and an error) when missing or not an object.
fn object_of<'v>(
    obj: &'v serde_json::Map<String, serde_json::Value>,
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
    let full = if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    };
    match obj.get(name) {
        None => {
            errs.push(FieldError::new(full, "is required"));
            None
        }
        Some(serde_json::Value::Object(m)) => Some(m),
        Some(_) => {
            errs.push(FieldError::new(full, "must be an object"));
            None
        }
    }
}

fn unknown_fields(
    obj: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    known: &[&str],
    errs: &mut Vec<FieldError>,
) {
    for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        let full = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        errs.push(FieldError::new(
            full,
            format!("is not a field here (expected one of {})", known.join(", ")),
        ));
    }
}

/// Every field at fault in a checkout request body that is JSON but not a
/// valid request: field by field, so a front end learns them all at once.
fn all_request_errors(v: &serde_json::Value, now: DateTime<Utc>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(obj) = v.as_object() else {
        return errs;
    };
    let mut p = PartialRequest {
        member_id: field_of(obj, "", "member_id", &mut errs),
        channel: field_of(obj, "", "channel", &mut errs),
        ..Default::default()
    };
    if let Some(it) = object_of(obj, "", "itinerary", &mut errs) {
        let path = "itinerary";
        p.origin = field_of(it, path, "origin", &mut errs);
        p.destination = field_of(it, path, "destination", &mut errs);
        p.departure = field_of(it, path, "departure", &mut errs);
        p.cabin = field_of(it, path, "cabin", &mut errs);
        if let Some(fare) = object_of(it, path, "fare", &mut errs) {
            p.fare_amount = field_of(fare, "itinerary.fare", "amount", &mut errs);
            p.fare_currency = field_of(fare, "itinerary.fare", "currency", &mut errs);
            unknown_fields(fare, "itinerary.fare", &FARE_FIELDS, &mut errs);
        }
        p.passengers = field_of(it, path, "passengers", &mut errs);
        unknown_fields(it, path, &ITINERARY_FIELDS, &mut errs);
    }
    p.max_offers = match obj.get("max_offers") {
        None => Some(None),
        Some(v) => Option::<i64>::deserialize(v)
            .map_err(|e| errs.push(FieldError::new("max_offers", json_error_text(&e))))
            .ok(),
    };
    p.explain = match obj.get("explain") {
        None => Some(None),
        Some(v) => Option::<bool>::deserialize(v)
            .map_err(|e| errs.push(FieldError::new("explain", json_error_text(&e))))
            .ok(),
    };
    unknown_fields(obj, "", &REQUEST_FIELDS, &mut errs);
    check_request(p, now, &mut errs);
    errs
}

/// Parses and checks a `POST /v1/offers` body, reporting every field at
/// fault (never an empty list). The first error is the one a plain typed
/// parse names (`from_json`), so `field` is stable; a body that is not JSON
/// at all is one "malformed JSON" error on `body`.
pub fn parse_offer_request(
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<OfferRequest, Vec<FieldError>> {
    let first = match from_json::<OfferRequestDto>(body) {
        Ok(dto) => return dto.into_domain_all(now),
        Err(e) => e,
    };
    if first.message.starts_with("malformed JSON") {
        return Err(vec![first]);
    }
    let mut errs = vec![first];
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for e in all_request_errors(&v, now) {
            // The typed parse names an unknown field by its parent; the
            // field-by-field pass names it by its own path: keep one.
            let same_unknown = e.message.starts_with("is not a field here")
                && errs[0].message.contains(&format!(
                    "unknown field `{}`",
                    e.field.rsplit('.').next().unwrap_or("")
                ));
            if !same_unknown && !errs.iter().any(|x| x.field == e.field) {
                errs.push(e);
            }
        }
    }
    Err(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<OfferRequest, FieldError> {
        let now = DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        from_json::<OfferRequestDto>(s.as_bytes())?.into_domain(now)
    }

    const OK: &str = r#"{"member_id":"M00000001","channel":"checkout","itinerary":{"origin":"PEK","destination":"SHA","departure":"2026-12-01T08:30:00+08:00","cabin":"economy","fare":{"amount":1280,"currency":"CNY"},"passengers":1}}"#;

    #[test]
    fn good_request_parses() {
        let r = parse(OK).unwrap();
        assert_eq!(r.max_offers, 3);
        assert_eq!(r.itinerary.origin.as_str(), "PEK");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (OK.replace("\"cabin\":\"economy\",", ""), "itinerary.cabin"),
            (OK.replace("\"economy\"", "\"deluxe\""), "itinerary.cabin"),
            (OK.replace("\"checkout\"", "\"fax\""), "channel"),
            (OK.replace("\"SHA\"", "\"SH1\""), "itinerary.destination"),
            (OK.replace("1280", "-5"), "itinerary.fare.amount"),
            (
                OK.replace("\"passengers\":1", "\"passengers\":0"),
                "itinerary.passengers",
            ),
            (
                OK.replace("\"passengers\":1", "\"passengers\":50"),
                "itinerary.passengers",
            ),
            (
                OK.replace("\"passengers\":1", "\"passengers\":\"one\""),
                "itinerary.passengers",
            ),
            (
                OK.replace("2026-12-01T08:30:00+08:00", "tomorrow"),
                "itinerary.departure",
            ),
            (
                OK.replace("2026-12-01", "2025-12-01"),
                "itinerary.departure",
            ),
            (OK.replace("}}", "},\"max_offers\":11}"), "max_offers"),
            (OK[..40].to_string(), "body"),
            (OK.replace("\"CNY\"", "\"yuan\""), "itinerary.fare.currency"),
        ];
        for (body, field) in cases {
            let e = parse(&body).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e:?}");
        }
    }
}
