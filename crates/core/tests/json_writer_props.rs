//! The hand-written JSON of a checkout answer's offers writes exactly what
//! serde_json writes from the same values: any strings (quotes, control
//! characters, non-ASCII), any floats (NaN and infinities become null), every
//! reason code, with and without `explain`.

use offer_engine_core::domain::{Cabin, Iata, Money, Tier};
use offer_engine_core::reasons::{Lang, Reason, Reasons, Route};
use offer_engine_core::render::{json, OfferOut};
use proptest::prelude::*;

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_\\-.:]{0,30}",
        any::<String>(),
        "[\"\\\\\\x00-\\x1f\\x7f\u{2028}é中]{0,8}",
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        0.0..1.0f64,
        (0u32..100_000).prop_map(|n| f64::from(n) / 100.0),
    ]
}

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::NAN),
        Just(f32::NEG_INFINITY),
        0.0..1.0f32
    ]
}

fn any_tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(vec![
        Tier::Base,
        Tier::Silver,
        Tier::Gold,
        Tier::Platinum,
        Tier::Diamond,
    ])
}

fn any_reason() -> impl Strategy<Value = Reason> {
    let cabin = prop::sample::select(vec![
        Cabin::Economy,
        Cabin::PremiumEconomy,
        Cabin::Business,
        Cabin::First,
    ]);
    let route = prop::sample::select(vec![Route::Domestic, Route::International]);
    let iata = prop::sample::select(vec!["PEK", "SHA", "CAN"])
        .prop_map(|s| Iata::parse(s).expect("a valid code"));
    prop_oneof![
        Just(Reason::NewMember),
        any_tier().prop_map(|tier| Reason::Tier { tier }),
        (any_tier(), any_tier(), any::<u64>()).prop_map(|(tier, current_tier, spend_short)| {
            Reason::NearNextTier {
                tier,
                current_tier,
                spend_short,
            }
        }),
        any::<u64>().prop_map(|lifetime_value| Reason::HighValue { lifetime_value }),
        Just(Reason::Growing),
        any::<i32>().prop_map(|days| Reason::Lapsed { days }),
        Just(Reason::NotFlownYet),
        any::<u64>().prop_map(|points| Reason::PointsBalance { points }),
        (route, any::<u64>(), cabin).prop_map(|(route, km, cabin)| Reason::Trip {
            route,
            km,
            cabin
        }),
        (iata, any::<i64>()).prop_map(|(origin, days)| Reason::Departure { origin, days }),
        any::<u8>().prop_map(|passengers| Reason::Party { passengers }),
        (any_f64(), any_f64())
            .prop_map(|(p, expected_value)| Reason::Propensity { p, expected_value }),
        Just(Reason::BusinessPriority),
    ]
}

fn any_reasons() -> impl Strategy<Value = Reasons> {
    (
        prop::collection::vec(any_reason(), 0..5),
        prop::option::of(prop::sample::select(vec![Lang::En, Lang::Zh])),
    )
        .prop_map(|(list, explain)| Reasons { list, explain })
}

#[derive(Debug, Clone)]
struct Parts {
    offer_id: String,
    title: String,
    price: Option<Money>,
    points_price: Option<u64>,
    score: f32,
    expected_value: f64,
    reasons: Reasons,
    expires_at: String,
    token: Option<String>,
    propensity: f64,
}

fn any_parts() -> impl Strategy<Value = Parts> {
    (
        (any_text(), any_text()),
        prop::option::of(
            (any_f64(), any_text()).prop_map(|(amount, currency)| Money { amount, currency }),
        ),
        prop::option::of(any::<u64>()),
        any_f32(),
        any_f64(),
        any_reasons(),
        any_text(),
        prop::option::of(any_text()),
        any_f64(),
    )
        .prop_map(
            |(
                (offer_id, title),
                price,
                points_price,
                score,
                expected_value,
                reasons,
                expires_at,
                token,
                propensity,
            )| {
                Parts {
                    offer_id,
                    title,
                    price,
                    points_price,
                    score,
                    expected_value,
                    reasons,
                    expires_at,
                    token,
                    propensity,
                }
            },
        )
}

fn out(p: &Parts) -> OfferOut<'_> {
    OfferOut {
        offer_id: &p.offer_id,
        category: "seat_upgrade",
        title: &p.title,
        price: p.price.clone(),
        points_price: p.points_price,
        score: p.score,
        expected_value: p.expected_value,
        reasons: p.reasons.clone(),
        expires_at: p.expires_at.clone(),
        token: p.token.clone(),
        propensity: p.propensity,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn strings_as_serde_writes_them(s in any_text()) {
        let mut mine = Vec::new();
        json::str(&mut mine, &s).unwrap();
        prop_assert_eq!(String::from_utf8(mine).unwrap(), serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn reasons_as_serde_writes_them(r in any_reasons()) {
        let mut mine = Vec::new();
        r.write_json(&mut mine).unwrap();
        prop_assert_eq!(String::from_utf8(mine).unwrap(), serde_json::to_string(&r).unwrap());
    }

    #[test]
    fn offers_as_serde_writes_them(p in any_parts()) {
        let o = out(&p);
        let mut mine = b"prefix".to_vec();
        o.write_json(&mut mine).unwrap();
        let mut theirs = b"prefix".to_vec();
        serde_json::to_writer(&mut theirs, &o).unwrap();
        prop_assert_eq!(String::from_utf8(mine).unwrap(), String::from_utf8(theirs).unwrap());
    }
}

#[test]
fn escapes_what_json_escapes() {
    for s in ["a\"b", "back\\slash", "tab\there", "\u{1}", "nl\n"] {
        assert!(!json::plain(s), "{s:?}");
    }
    for s in ["plain", "中文", "\u{7f}", "\u{2028}", ""] {
        assert!(json::plain(s), "{s:?}");
    }
}
