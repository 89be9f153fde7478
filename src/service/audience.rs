//! What one member may be shown, decided in one place for checkout and
//! campaigns: the member's experiment variant (holdout, ranking, catalog
//! subset, model, exploration), offers they declined recently, the daily
//! contact cap of the channel, and inventory left on the trip. Also the
//! form in which an offer shown is committed ([`issued_offer`]).

use std::sync::Arc;

use crate::catalog::Offer;
use crate::decision::{Constraints, Engine, RankedOffer, VariantPolicy};
use crate::domain::{Channel, Day, Itinerary, Member};
use crate::records::{inventory_key, IssuedOffer};
use crate::state::ledger::Ledger;

/// One member's view of a decision: their variant's policy and the
/// contact and inventory rules that rule offers out.
pub struct Audience<'a> {
    /// The member's variant policy (assignments, holdout, ranking, limits).
    pub policy: VariantPolicy<'a>,
    ledger: Option<&'a Ledger>,
    /// Offers this member declined recently.
    suppressed: Vec<Arc<str>>,
    itinerary: Option<&'a Itinerary>,
    /// Offers the member may still be shown today on the channel.
    remaining: usize,
    /// The member (for the inventory units kept for some tiers or segments).
    member: Option<&'a Member>,
    /// Today.
    day: Day,
    /// Member id.
    member_id: &'a str,
    /// The calendar year of now (an upgrade voucher's period).
    year: i32,
}

/// Who is asking, on which channel, when.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Member id.
    pub member_id: &'a str,
    /// Channel.
    pub channel: Channel,
    /// The trip, at checkout.
    pub itinerary: Option<&'a Itinerary>,
    /// The caller's limit on offers.
    pub max_offers: usize,
    /// Offers a member may be shown per day on the channel.
    pub daily_cap: usize,
    /// Now, ms since the epoch.
    pub now_ms: i64,
}

impl<'a> Audience<'a> {
    /// The member's audience: `ledger` (the live state) applies
    /// suppressions, the daily cap and inventory; without one (a members
    /// file, nothing to remember) none apply.
    pub fn of(engine: &'a Engine, ledger: Option<&'a Ledger>, ask: Ask<'a>) -> Audience<'a> {
        let policy = engine.variant_policy(ask.member_id, ask.max_offers);
        let (suppressed, shown) = match ledger {
            Some(l) if !policy.holdout => (
                l.active_suppressions(ask.member_id, ask.now_ms),
                l.shown(
                    ask.member_id,
                    Day(crate::state::day_of_ms(ask.now_ms)),
                    ask.channel,
                ) as usize,
            ),
            _ => (Vec::new(), 0),
        };
        let remaining = if policy.holdout {
            0
        } else {
            ask.daily_cap.saturating_sub(shown)
        };
        Audience {
            policy,
            ledger,
            suppressed,
            itinerary: ask.itinerary,
            remaining,
            member: None,
            day: Day(crate::state::day_of_ms(ask.now_ms)),
            member_id: ask.member_id,
            year: crate::records::voucher_year(ask.now_ms),
        }
    }

    /// The same audience knowing the member: inventory units an offer
    /// keeps for tiers or value segments count as left only for its members.
    pub fn for_member(mut self, member: Option<&'a Member>) -> Audience<'a> {
        self.member = member;
        self
    }

    /// A holdout member: shown nothing, recorded as exposed.
    pub fn holdout(&self) -> bool {
        self.policy.holdout
    }

    /// Whether the member declined offers that are still suppressed.
    pub fn suppresses_any(&self) -> bool {
        !self.suppressed.is_empty()
    }

    /// The same audience with no offer suppressed (to say whether
    /// suppressions alone left a member without offers).
    pub fn ignoring_suppressions(&self) -> Audience<'a> {
        Audience {
            policy: self.policy.clone(),
            ledger: self.ledger,
            suppressed: Vec::new(),
            itinerary: self.itinerary,
            remaining: self.remaining,
            member: self.member,
            day: self.day,
            member_id: self.member_id,
            year: self.year,
        }
    }
}

impl Constraints for Audience<'_> {
    fn allowed(&self, _index: usize, offer: &Offer) -> bool {
        if self
            .policy
            .categories
            .is_some_and(|c| !c.contains(&offer.category))
        {
            return false;
        }
        if self.suppressed.iter().any(|s| **s == *offer.id) {
            return false;
        }
        match (
            self.ledger,
            self.itinerary.and_then(|it| inventory_key(offer, it)),
        ) {
            (Some(l), Some((key, cap))) => {
                l.in_stock(&offer.id, &key, offer.cap_for(cap, self.member, self.day))
            }
            _ => true,
        }
    }
    fn remaining_contacts(&self) -> usize {
        self.remaining
    }
    fn voucher_unused(&self) -> bool {
        self.ledger
            .is_none_or(|l| !l.voucher_used(self.member_id, self.year))
    }
}

/// An offer as committed with its decision: the terms quoted, the
/// inventory an accept takes from, how long a decline suppresses it.
pub fn issued_offer(
    offer: &Offer,
    o: &RankedOffer,
    itinerary: Option<&Itinerary>,
    suppress_default: u32,
) -> IssuedOffer {
    IssuedOffer {
        offer_id: offer.id.clone(),
        price: o.price.clone(),
        points_price: o.points_price,
        expires_ms: o.expires_at.timestamp_millis(),
        inventory: itinerary.and_then(|it| inventory_key(offer, it)),
        suppress_days: offer
            .contact
            .suppress_days_after_decline
            .unwrap_or(suppress_default),
        propensity: o.slot_propensity,
    }
}
