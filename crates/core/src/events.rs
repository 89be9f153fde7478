//! Outcome events (impression, click, accept, decline) and member events
//! (flights, points, tier, consent, purchases): their wire forms, their
//! checked forms as logged, and the pure functions that apply them.

use serde::Deserialize;

use crate::domain::{
    month_of, ConsentChannel, Day, DowngradeRule, FieldError, Member, Money, Month, Tier,
    TierThresholds,
};
pub use crate::records::{MemberChange, OutcomeKind, OutcomeRecord};

/// Wire form of one outcome event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeEventDto {
    /// Decision the offer was shown in.
    pub decision_id: String,
    /// The offer.
    pub offer_id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: OutcomeKind,
    /// Revenue of an accept; must equal the quoted price. Only an accept carries it.
    #[serde(default)]
    pub revenue: Option<Money>,
    /// When it happened (RFC 3339); informational, the server's clock decides expiry.
    #[serde(default)]
    pub at: Option<String>,
    /// The offer's signed token from the decision; required for an accept
    /// and a refund, checked when given with any other event.
    #[serde(default)]
    pub token: Option<String>,
}

/// `POST /v1/events` takes one event or an array.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OutcomeBody {
    /// A batch.
    Many(Vec<OutcomeEventDto>),
    /// A single event.
    One(OutcomeEventDto),
}

/// Parses `POST /v1/events`: one event or an array of them; says whether it
/// was an array (field paths then name the event: `[2].revenue`). Every
/// event at fault in a batch is reported, not only the first.
pub fn parse_outcome_body(body: &[u8]) -> Result<(Vec<OutcomeEventDto>, bool), Vec<FieldError>> {
    use crate::parse::from_json;
    match from_json::<OutcomeBody>(body) {
        Ok(OutcomeBody::Many(v)) => return Ok((v, true)),
        Ok(OutcomeBody::One(e)) => return Ok((vec![e], false)),
        Err(_) => {}
    }
    // Untagged enums lose the field path: parse again, event by event.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let items = from_json::<Vec<serde_json::Value>>(body).map_err(|e| vec![e])?;
        let mut errs = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let one = serde_json::to_vec(v).unwrap_or_default();
            if let Err(mut e) = from_json::<OutcomeEventDto>(&one) {
                e.field = if e.field == "body" {
                    format!("[{i}]")
                } else {
                    format!("[{i}].{}", e.field)
                };
                errs.push(e);
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
    } else {
        from_json::<OutcomeEventDto>(body).map_err(|e| vec![e])?;
    }
    Err(vec![FieldError::new(
        "body",
        "must be an event object or an array of them",
    )])
}

/// Wire form of a member event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MemberEventDto {
    /// The member flew.
    FlightFlown {
        /// Member id.
        member_id: String,
        /// Day flown (YYYY-MM-DD, default today).
        #[serde(default)]
        date: Option<String>,
        /// Qualifying spend earned, CNY.
        #[serde(default)]
        qualifying_spend: Option<f64>,
        /// Points earned.
        #[serde(default)]
        points: Option<i64>,
    },
    /// Points credited.
    PointsEarned {
        /// Member id.
        member_id: String,
        /// Points (> 0).
        points: i64,
    },
    /// Points spent.
    PointsRedeemed {
        /// Member id.
        member_id: String,
        /// Points (> 0, at most the balance).
        points: i64,
    },
    /// Tier set by the programme.
    TierChanged {
        /// Member id.
        member_id: String,
        /// New tier.
        tier: String,
    },
    /// Marketing consent granted or withdrawn.
    ConsentChanged {
        /// Member id.
        member_id: String,
        /// Channel.
        channel: ConsentChannel,
        /// Granted (true) or withdrawn (false).
        granted: bool,
    },
    /// A purchase (ticket or ancillary).
    Purchase {
        /// Member id.
        member_id: String,
        /// Amount, CNY.
        amount: f64,
        /// Currency (only CNY counts towards qualifying spend).
        #[serde(default = "cny")]
        currency: String,
        /// Whether it counts towards qualifying spend (default true).
        #[serde(default = "yes")]
        qualifying: bool,
    },
}

fn cny() -> String {
    "CNY".into()
}
fn yes() -> bool {
    true
}

impl MemberEventDto {
    /// The member the event is about.
    pub fn member_id(&self) -> &str {
        match self {
            MemberEventDto::FlightFlown { member_id, .. }
            | MemberEventDto::PointsEarned { member_id, .. }
            | MemberEventDto::PointsRedeemed { member_id, .. }
            | MemberEventDto::TierChanged { member_id, .. }
            | MemberEventDto::ConsentChanged { member_id, .. }
            | MemberEventDto::Purchase { member_id, .. } => member_id,
        }
    }

    /// Checks the event into a [`MemberChange`]; `today` is the default flight day.
    pub fn into_change(self, today: Day) -> Result<MemberChange, FieldError> {
        let points = |p: i64, field: &str, allow_zero: bool| {
            u32::try_from(p)
                .ok()
                .filter(|p| allow_zero || *p > 0)
                .filter(|p| *p <= 10_000_000)
                .ok_or_else(|| FieldError::new(field, "must be an integer from 1 to 10000000"))
        };
        Ok(match self {
            MemberEventDto::FlightFlown {
                date,
                qualifying_spend,
                points: p,
                ..
            } => {
                let day = match date {
                    None => today,
                    Some(d) => Day::parse(&d)
                        .ok_or_else(|| FieldError::new("date", "must be YYYY-MM-DD"))?,
                };
                if day.0 > today.0 + 1 {
                    return Err(FieldError::new("date", "is in the future"));
                }
                let spend = qualifying_spend.unwrap_or(0.0);
                if !spend.is_finite() || !(0.0..=1e7).contains(&spend) {
                    return Err(FieldError::new("qualifying_spend", "must be from 0 to 1e7"));
                }
                let p = match p {
                    None => 0,
                    Some(p) => points(p, "points", true)?,
                };
                MemberChange::FlightFlown {
                    day: day.0,
                    spend,
                    points: p,
                }
            }
            MemberEventDto::PointsEarned { points: p, .. } => {
                MemberChange::PointsEarned(points(p, "points", false)?)
            }
            MemberEventDto::PointsRedeemed { points: p, .. } => {
                MemberChange::PointsRedeemed(points(p, "points", false)?)
            }
            MemberEventDto::TierChanged { tier, .. } => {
                MemberChange::TierChanged(Tier::parse(&tier).ok_or_else(|| {
                    FieldError::new(
                        "tier",
                        "must be one of base, silver, gold, platinum, diamond",
                    )
                })?)
            }
            MemberEventDto::ConsentChanged {
                channel, granted, ..
            } => MemberChange::ConsentChanged(channel, granted),
            MemberEventDto::Purchase {
                amount,
                currency,
                qualifying,
                ..
            } => {
                Money {
                    amount,
                    currency: currency.clone(),
                }
                .validate("amount")
                .map_err(|e| {
                    FieldError::new(
                        e.field
                            .replace("amount.amount", "amount")
                            .replace("amount.currency", "currency"),
                        e.message,
                    )
                })?;
                if amount > 1e7 {
                    return Err(FieldError::new("amount", "must be at most 1e7"));
                }
                MemberChange::Purchase {
                    qualifying_amount: if qualifying && currency == "CNY" {
                        amount
                    } else {
                        0.0
                    },
                }
            }
        })
    }
}

impl MemberChange {
    /// snake_case name of the change (metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            MemberChange::FlightFlown { .. } => "flight_flown",
            MemberChange::PointsEarned(_) => "points_earned",
            MemberChange::PointsRedeemed(_) => "points_redeemed",
            MemberChange::TierChanged(_) => "tier_changed",
            MemberChange::ConsentChanged(..) => "consent_changed",
            MemberChange::Purchase { .. } => "purchase",
        }
    }

    /// Applies the change, logged on day `on` (log time), to a member.
    /// Deterministic (replay gives the same result), saturating rather than
    /// failing. Spend and flights go to their month (a flight's own day, a
    /// purchase's log day) of the rolling 12 months; an earned tier is
    /// given at once.
    pub fn apply(&self, m: &mut Member, th: &TierThresholds, on: Day) {
        let now = month_of(on);
        let earn = |m: &mut Member, month: Month, spend: f64, flights: u8| {
            m.history.date(now);
            m.history.roll_to(now);
            m.history.add(month, spend, flights);
            m.refresh_totals();
            let earned = th.tier_for(m.qualifying_spend_12m as f64);
            m.tier = m.tier.max(earned);
            if earned >= m.tier {
                m.history.set_months_short(0);
            }
        };
        match *self {
            MemberChange::FlightFlown { day, spend, points } => {
                m.last_flight = Some(m.last_flight.map_or(Day(day), |d| d.max(Day(day))));
                m.points = m.points.saturating_add(points);
                earn(m, month_of(Day(day)), spend, 1);
            }
            MemberChange::PointsEarned(p) => m.points = m.points.saturating_add(p),
            MemberChange::PointsRedeemed(p) => m.points = m.points.saturating_sub(p),
            MemberChange::TierChanged(t) => {
                m.tier = t;
                m.history.set_months_short(0);
            }
            MemberChange::ConsentChanged(ch, granted) => m.consent.set(ch, granted),
            MemberChange::Purchase { qualifying_amount } => earn(m, now, qualifying_amount, 0),
        }
    }
}

/// What the start of month `into` (by log time) does to a member: the
/// programme's downgrade rule is judged on the 12 full months before it,
/// then the month that falls out of the window ages out. An undated
/// history is dated first (its spread becomes those 12 months). A month
/// already started for the member changes nothing.
pub fn start_month(m: &mut Member, into: Month, th: &TierThresholds) {
    let Some(prev) = into.checked_sub(1) else {
        return;
    };
    if m.history.month().is_some_and(|h| h >= into) {
        return;
    }
    m.history.date(prev);
    m.history.roll_to(prev);
    m.refresh_totals();
    let earned = th.tier_for(m.qualifying_spend_12m as f64);
    if earned >= m.tier {
        m.history.set_months_short(0);
    } else {
        match th.downgrade {
            DowngradeRule::Anniversary => {
                if into % 12 == month_of(m.joined) % 12 {
                    m.tier = earned;
                }
            }
            DowngradeRule::Grace => {
                let short = m.history.months_short().saturating_add(1);
                if short > th.grace_months {
                    m.tier = earned;
                    m.history.set_months_short(0);
                } else {
                    m.history.set_months_short(short);
                }
            }
        }
    }
    m.history.roll_to(into);
    m.refresh_totals();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    #[test]
    fn member_events_parse_and_apply() {
        let th = TierThresholds::default();
        let today = Day::parse("2026-11-23").unwrap();
        let mut m = crate::synth::member(1, 0, today.to_date(), &th);
        m.points = 100;
        let e: MemberEventDto =
            from_json(br#"{"member_id":"M1","type":"points_earned","points":500}"#).unwrap();
        e.into_change(today).unwrap().apply(&mut m, &th, today);
        assert_eq!(m.points, 600);
        let e: MemberEventDto = from_json(
            br#"{"member_id":"M1","type":"consent_changed","channel":"email","granted":false}"#,
        )
        .unwrap();
        e.into_change(today).unwrap().apply(&mut m, &th, today);
        assert!(!m.consent.granted(ConsentChannel::Email));
        let e: MemberEventDto =
            from_json(br#"{"member_id":"M1","type":"flight_flown","qualifying_spend":200000}"#)
                .unwrap();
        e.into_change(today).unwrap().apply(&mut m, &th, today);
        assert_eq!(m.tier, Tier::Diamond);
        assert_eq!(m.last_flight, Some(today));
    }

    #[test]
    fn bad_member_events_name_the_field() {
        let today = Day::parse("2026-11-23").unwrap();
        let e = from_json::<MemberEventDto>(
            br#"{"member_id":"M1","type":"points_earned","points":-5}"#,
        )
        .unwrap()
        .into_change(today)
        .unwrap_err();
        assert_eq!(e.field, "points");
        let e =
            from_json::<MemberEventDto>(br#"{"member_id":"M1","type":"teleported"}"#).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{e:?}");
        let e = from_json::<MemberEventDto>(
            br#"{"member_id":"M1","type":"tier_changed","tier":"bronze"}"#,
        )
        .unwrap()
        .into_change(today)
        .unwrap_err();
        assert_eq!(e.field, "tier");
    }
}
