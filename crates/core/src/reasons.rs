//! Why an offer was chosen: a closed set of structured reasons, each a
//! stable `code` with its figures (`{"code": "near_next_tier", "tier":
//! "platinum", "spend_short": 1200, ...}`), and, on request (`explain`), a
//! sentence for each in English or Simplified Chinese.
//!
//! A decision builds reasons as plain `Copy` values: no sentence is
//! formatted unless a caller asks for one, so the hot path pays for the
//! figures only. The codes are part of the API contract: a code is never
//! renamed nor its figures changed in meaning; new codes may be added.

use serde::{Serialize, Serializer};

use crate::decision::thousands;
use crate::domain::{Cabin, Iata, Tier};

/// One reason behind an offer. Serialized as an object with a `code`
/// (snake_case) and the figures of that code.
/// New codes may be added (hence `non_exhaustive`); none is renamed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// `new_member`: the member is unknown (cold start); the offers are
    /// chosen from the trip alone.
    NewMember,
    /// `tier`: the member's tier (`tier`), when the next tier is not within
    /// reach.
    Tier {
        /// The member's tier.
        #[schema(value_type = String, example = "gold")]
        tier: Tier,
    },
    /// `near_next_tier`: the member is within 20,000 CNY of qualifying spend
    /// of the next tier: `tier` is the next tier, `current_tier` theirs,
    /// `spend_short` the whole CNY of qualifying spend still needed (the
    /// pre-upgrade nudge).
    NearNextTier {
        /// The tier within reach.
        #[schema(value_type = String, example = "platinum")]
        tier: Tier,
        /// The member's tier now.
        #[schema(value_type = String, example = "gold")]
        current_tier: Tier,
        /// Qualifying spend still needed, whole CNY (at least 1).
        spend_short: u64,
    },
    /// `high_value`: a high-value customer; `lifetime_value` is the
    /// customer lifetime value, CNY, rounded to thousands.
    HighValue {
        /// Lifetime value, CNY, to the thousand.
        lifetime_value: u64,
    },
    /// `growing`: a customer whose value is growing.
    Growing,
    /// `lapsed`: a retention offer for a member with no flight for `days` days.
    Lapsed {
        /// Days since the last flight.
        days: i32,
    },
    /// `not_flown_yet`: a retention offer for a member who has not flown yet.
    NotFlownYet,
    /// `points_balance`: the offer has a points price; `points` is the
    /// member's balance.
    PointsBalance {
        /// Points balance.
        points: u64,
    },
    /// `trip`: an upgrade or wifi offer for this flight: `route`
    /// (`domestic` or `international`), great-circle `km`, `cabin` booked.
    Trip {
        /// Domestic or international.
        route: Route,
        /// Great-circle distance, km.
        km: u64,
        /// Cabin booked.
        cabin: Cabin,
    },
    /// `departure`: a lounge or partner offer: the trip departs `origin` in
    /// `days` days.
    Departure {
        /// Departure airport (IATA).
        #[schema(value_type = String, example = "PEK")]
        origin: Iata,
        /// Whole days to departure.
        days: i64,
    },
    /// `party`: a per-passenger offer for a party of `passengers`.
    Party {
        /// Party size.
        passengers: u8,
    },
    /// `propensity`: the model's accept probability `p` (0 to 1, four
    /// decimals) and the offer's `expected_value`, CNY.
    Propensity {
        /// Accept probability.
        p: f64,
        /// Expected value, CNY.
        expected_value: f64,
    },
    /// `business_priority`: the fallback chose the offer by business
    /// priority, without a model score (the answer's `fallback` is true).
    BusinessPriority,
}

/// Domestic or international.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Both airports in one country.
    Domestic,
    /// Across a border.
    International,
}

/// Every code, in documentation order (for tests and the OpenAPI check).
pub const CODES: [&str; 13] = [
    "new_member",
    "tier",
    "near_next_tier",
    "high_value",
    "growing",
    "lapsed",
    "not_flown_yet",
    "points_balance",
    "trip",
    "departure",
    "party",
    "propensity",
    "business_priority",
];

/// The language of explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English (the default).
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The language an `Accept-Language` header prefers among those
    /// supported: the highest `q` among `en*` and `zh*` ranges (a tie goes
    /// to the first listed); English when neither is listed, or `*` only.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut it = part.split(';');
            let range = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q=").map(str::trim))
                .map_or(Some(1.0), |v| v.parse::<f32>().ok())
                .filter(|q| q.is_finite() && *q > 0.0);
            let Some(q) = q else { continue };
            let lang = if range == "zh" || range.starts_with("zh-") {
                Lang::Zh
            } else if range == "en" || range.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }
}

fn tier_zh(t: Tier) -> &'static str {
    match t {
        Tier::Base => "普卡",
        Tier::Silver => "银卡",
        Tier::Gold => "金卡",
        Tier::Platinum => "白金卡",
        Tier::Diamond => "钻石卡",
    }
}

fn cabin_en(c: Cabin) -> &'static str {
    match c {
        Cabin::Economy => "economy",
        Cabin::PremiumEconomy => "premium economy",
        Cabin::Business => "business",
        Cabin::First => "first",
    }
}

fn cabin_zh(c: Cabin) -> &'static str {
    match c {
        Cabin::Economy => "经济舱",
        Cabin::PremiumEconomy => "超级经济舱",
        Cabin::Business => "公务舱",
        Cabin::First => "头等舱",
    }
}

impl Reason {
    /// The reason's code, as serialized.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NewMember => "new_member",
            Reason::Tier { .. } => "tier",
            Reason::NearNextTier { .. } => "near_next_tier",
            Reason::HighValue { .. } => "high_value",
            Reason::Growing => "growing",
            Reason::Lapsed { .. } => "lapsed",
            Reason::NotFlownYet => "not_flown_yet",
            Reason::PointsBalance { .. } => "points_balance",
            Reason::Trip { .. } => "trip",
            Reason::Departure { .. } => "departure",
            Reason::Party { .. } => "party",
            Reason::Propensity { .. } => "propensity",
            Reason::BusinessPriority => "business_priority",
        }
    }

    /// The reason as a sentence in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        match lang {
            Lang::En => self.text_en(),
            Lang::Zh => self.text_zh(),
        }
    }

    fn text_en(&self) -> String {
        match *self {
            Reason::NewMember => "new to the programme: chosen from the trip alone".into(),
            Reason::Tier { tier } => format!("{tier} member"),
            Reason::NearNextTier {
                tier,
                current_tier,
                spend_short,
            } => format!(
                "{current_tier} member, {} CNY qualifying spend from {tier}",
                thousands(spend_short)
            ),
            Reason::HighValue { lifetime_value } => format!(
                "high-value customer (lifetime value about {} CNY)",
                thousands(lifetime_value)
            ),
            Reason::Growing => "growing customer".into(),
            Reason::Lapsed { days } => format!("no flight for {days} days"),
            Reason::NotFlownYet => "has not flown with us yet".into(),
            Reason::PointsBalance { points } => {
                format!("{} points available", thousands(points))
            }
            Reason::Trip { route, km, cabin } => format!(
                "{} km {} flight in {}",
                thousands(km),
                match route {
                    Route::Domestic => "domestic",
                    Route::International => "international",
                },
                cabin_en(cabin)
            ),
            Reason::Departure { origin, days } => format!("departs {origin} in {days} days"),
            Reason::Party { passengers } => format!("party of {passengers}"),
            Reason::Propensity { p, expected_value } => format!(
                "propensity {:.1}%, expected value {:.0} CNY",
                p * 100.0,
                expected_value
            ),
            Reason::BusinessPriority => {
                "chosen by business priority (fallback: no model score)".into()
            }
        }
    }

    fn text_zh(&self) -> String {
        match *self {
            Reason::NewMember => "新会员：仅根据行程推荐".into(),
            Reason::Tier { tier } => format!("{}会员", tier_zh(tier)),
            Reason::NearNextTier {
                tier, spend_short, ..
            } => format!(
                "还差{}元定级消费升级{}",
                thousands(spend_short),
                tier_zh(tier)
            ),
            Reason::HighValue { lifetime_value } => {
                format!("高价值客户（终身价值约{}元）", thousands(lifetime_value))
            }
            Reason::Growing => "成长型客户".into(),
            Reason::Lapsed { days } => format!("已{days}天未乘机"),
            Reason::NotFlownYet => "尚未乘坐过本公司航班".into(),
            Reason::PointsBalance { points } => format!("可用积分{}", thousands(points)),
            Reason::Trip { route, km, cabin } => format!(
                "{}公里{}航班，{}",
                thousands(km),
                match route {
                    Route::Domestic => "国内",
                    Route::International => "国际",
                },
                cabin_zh(cabin)
            ),
            Reason::Departure { origin, days } => format!("{days}天后从{origin}出发"),
            Reason::Party { passengers } => format!("{passengers}人同行"),
            Reason::Propensity { p, expected_value } => {
                format!("接受概率{:.1}%，预期价值{:.0}元", p * 100.0, expected_value)
            }
            Reason::BusinessPriority => "按业务优先级推荐（降级：无模型评分）".into(),
        }
    }
}

/// An offer's reasons as answered: the structured list, and with
/// `explain` a `text` on each in the language asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasons {
    /// The reasons, in order.
    pub list: Vec<Reason>,
    /// Whether to add `text`, and in which language.
    pub explain: Option<Lang>,
}

impl Reasons {
    /// Reasons without text.
    pub fn plain(list: Vec<Reason>) -> Reasons {
        Reasons {
            list,
            explain: None,
        }
    }

    /// The English sentences, joined with `sep` (the CSV column).
    pub fn joined_text(&self, lang: Lang, sep: &str) -> String {
        let mut out = String::new();
        for (i, r) in self.list.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(&r.text(lang));
        }
        out
    }
}

impl Reason {
    /// Appends this reason as JSON, exactly as its `Serialize`
    /// implementation does through serde_json (see [`crate::render::json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        use crate::render::json::{raw, value};
        match self {
            Reason::NewMember => raw(out, "{\"code\":\"new_member\"}"),
            Reason::Tier { tier } => {
                raw(out, "{\"code\":\"tier\",\"tier\":");
                value(out, tier)?;
                raw(out, "}");
            }
            Reason::NearNextTier {
                tier,
                current_tier,
                spend_short,
            } => {
                raw(out, "{\"code\":\"near_next_tier\",\"tier\":");
                value(out, tier)?;
                raw(out, ",\"current_tier\":");
                value(out, current_tier)?;
                raw(out, ",\"spend_short\":");
                value(out, spend_short)?;
                raw(out, "}");
            }
            Reason::HighValue { lifetime_value } => {
                raw(out, "{\"code\":\"high_value\",\"lifetime_value\":");
                value(out, lifetime_value)?;
                raw(out, "}");
            }
            Reason::Growing => raw(out, "{\"code\":\"growing\"}"),
            Reason::Lapsed { days } => {
                raw(out, "{\"code\":\"lapsed\",\"days\":");
                value(out, days)?;
                raw(out, "}");
            }
            Reason::NotFlownYet => raw(out, "{\"code\":\"not_flown_yet\"}"),
            Reason::PointsBalance { points } => {
                raw(out, "{\"code\":\"points_balance\",\"points\":");
                value(out, points)?;
                raw(out, "}");
            }
            Reason::Trip { route, km, cabin } => {
                raw(out, "{\"code\":\"trip\",\"route\":");
                value(out, route)?;
                raw(out, ",\"km\":");
                value(out, km)?;
                raw(out, ",\"cabin\":");
                value(out, cabin)?;
                raw(out, "}");
            }
            Reason::Departure { origin, days } => {
                raw(out, "{\"code\":\"departure\",\"origin\":");
                value(out, origin)?;
                raw(out, ",\"days\":");
                value(out, days)?;
                raw(out, "}");
            }
            Reason::Party { passengers } => {
                raw(out, "{\"code\":\"party\",\"passengers\":");
                value(out, passengers)?;
                raw(out, "}");
            }
            Reason::Propensity { p, expected_value } => {
                raw(out, "{\"code\":\"propensity\",\"p\":");
                value(out, p)?;
                raw(out, ",\"expected_value\":");
                value(out, expected_value)?;
                raw(out, "}");
            }
            Reason::BusinessPriority => raw(out, "{\"code\":\"business_priority\"}"),
        }
        Ok(())
    }
}

impl Reasons {
    /// Appends the reasons as JSON, exactly as `Serialize` does through
    /// serde_json; with `explain` (sentences) through serde_json itself.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if self.explain.is_some() {
            return serde_json::to_writer(&mut *out, self);
        }
        out.push(b'[');
        for (i, r) in self.list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            r.write_json(out)?;
        }
        out.push(b']');
        Ok(())
    }
}

/// A reason with its sentence.
#[derive(Serialize)]
struct Explained<'a> {
    #[serde(flatten)]
    reason: &'a Reason,
    text: String,
}

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.explain {
            None => self.list.serialize(s),
            Some(lang) => s.collect_seq(self.list.iter().map(|r| Explained {
                reason: r,
                text: r.text(lang),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_reason() -> Vec<Reason> {
        vec![
            Reason::NewMember,
            Reason::Tier { tier: Tier::Silver },
            Reason::NearNextTier {
                tier: Tier::Platinum,
                current_tier: Tier::Gold,
                spend_short: 1200,
            },
            Reason::HighValue {
                lifetime_value: 52_000,
            },
            Reason::Growing,
            Reason::Lapsed { days: 120 },
            Reason::NotFlownYet,
            Reason::PointsBalance { points: 12_345 },
            Reason::Trip {
                route: Route::Domestic,
                km: 1076,
                cabin: Cabin::PremiumEconomy,
            },
            Reason::Departure {
                origin: Iata::parse("PEK").unwrap(),
                days: 7,
            },
            Reason::Party { passengers: 2 },
            Reason::Propensity {
                p: 0.0503,
                expected_value: 90.53,
            },
            Reason::BusinessPriority,
        ]
    }

    #[test]
    fn every_code_serializes_as_documented() {
        let all = every_reason();
        assert_eq!(all.len(), CODES.len());
        for (r, code) in all.iter().zip(CODES) {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v["code"], code, "{v}");
            assert_eq!(r.code(), code);
            // Every sentence is non-empty in both languages and figures show.
            assert!(!r.text(Lang::En).is_empty());
            assert!(!r.text(Lang::Zh).is_empty());
        }
        let v = serde_json::to_value(all[2]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "near_next_tier", "tier": "platinum", "current_tier": "gold", "spend_short": 1200})
        );
        let v = serde_json::to_value(all[8]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "trip", "route": "domestic", "km": 1076, "cabin": "premium_economy"})
        );
        assert_eq!(
            serde_json::to_value(all[9]).unwrap()["origin"],
            serde_json::json!("PEK")
        );
    }

    #[test]
    fn explain_adds_text_in_the_language_asked_for() {
        let r = Reasons {
            list: vec![
                Reason::NearNextTier {
                    tier: Tier::Platinum,
                    current_tier: Tier::Gold,
                    spend_short: 1200,
                },
                Reason::Growing,
            ],
            explain: Some(Lang::Zh),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v[0]["text"], "还差1,200元定级消费升级白金卡");
        assert_eq!(v[0]["spend_short"], 1200);
        assert_eq!(
            v[1],
            serde_json::json!({"code": "growing", "text": "成长型客户"})
        );
        let en = Reasons {
            explain: Some(Lang::En),
            ..r.clone()
        };
        let v = serde_json::to_value(&en).unwrap();
        assert_eq!(
            v[0]["text"],
            "gold member, 1,200 CNY qualifying spend from platinum"
        );
        let plain = serde_json::to_value(Reasons::plain(r.list.clone())).unwrap();
        assert!(plain[0].get("text").is_none());
        assert_eq!(plain[1], serde_json::json!({"code": "growing"}));
    }

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        for (h, l) in [
            ("", Lang::En),
            ("*", Lang::En),
            ("zh-CN", Lang::Zh),
            ("zh-Hans-CN,zh;q=0.9,en;q=0.8", Lang::Zh),
            ("en-GB,en;q=0.9,zh;q=0.8", Lang::En),
            ("fr-FR, zh;q=0.5", Lang::Zh),
            ("en;q=0.3, zh-TW;q=0.7", Lang::Zh),
            ("zh;q=0, en", Lang::En),
            ("zh;q=bogus", Lang::En),
            ("ZH", Lang::Zh),
            ("de", Lang::En),
        ] {
            assert_eq!(Lang::from_accept_language(h), l, "{h:?}");
        }
    }
}
