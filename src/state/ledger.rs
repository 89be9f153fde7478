//! The ledger: what the engine has promised and what happened since.
//!
//! - **Decisions** issued (member, offers, prices, expiries, inventory keys),
//!   kept in a bounded [`DecisionMemory`] until a minute after their last
//!   offer expires, so outcomes can be attributed.
//! - **Suppressions**: an offer a member declined stays hidden from them for
//!   a number of days.
//! - **Contacts**: offers shown per member, day and channel, for the daily cap.
//! - **Inventory**: accepted units per offer and flight (or airport and day).
//!
//! Every method that depends on time takes it as an argument: the apply
//! path passes the log's time, request paths the wall clock.
//!
//! Two-phase changes keep snapshots exact. A live accept first *reserves*
//! (a pending status on the offer, a reserved inventory unit) so concurrent
//! accepts cannot oversell; only when its log record is durable is it
//! *committed* (by the callback that runs in log order). Snapshots contain
//! committed state only, so replaying the records after a snapshot never
//! applies anything twice.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, Day};
use crate::state::expiring::ExpiringMap;

pub use offer_engine_core::records::{
    inventory_key, ms, DecisionRecord, InventoryKey, IssuedOffer,
};

/// Accept status of an issued offer.
pub const OPEN: u8 = 0;
/// An accept is on its way to the log.
pub const PENDING: u8 = 1;
/// Accepted (durable).
pub const ACCEPTED: u8 = 2;

/// A cached decision with per-offer accept status.
#[derive(Debug)]
pub struct LiveDecision {
    /// The record.
    pub record: DecisionRecord,
    /// One status per offer: [`OPEN`], [`PENDING`] or [`ACCEPTED`].
    pub status: Vec<AtomicU8>,
}

impl LiveDecision {
    /// Wraps a record with all offers open.
    pub fn new(record: DecisionRecord) -> LiveDecision {
        let status = record.offers.iter().map(|_| AtomicU8::new(OPEN)).collect();
        LiveDecision { record, status }
    }
    /// Statuses with pending reported as open (what a snapshot keeps).
    pub fn committed_status(&self) -> Vec<u8> {
        self.status
            .iter()
            .map(|s| match s.load(Ordering::Acquire) {
                ACCEPTED => ACCEPTED,
                _ => OPEN,
            })
            .collect()
    }
}

/// Kept this long past a decision's last expiry, so a late event gets "expired", not "unknown".
const KEEP_AFTER_EXPIRY_MS: i64 = 60_000;

/// Decisions by id, bounded in number and time: each is kept until a minute
/// after its last offer expires, and past the capacity the oldest goes first
/// (the one least likely to be accepted still); see [`ExpiringMap`].
#[derive(Debug)]
pub struct DecisionMemory {
    map: ExpiringMap<Arc<LiveDecision>>,
}

impl DecisionMemory {
    /// Remembers at most about `capacity` decisions (rounded up to a multiple of 16).
    pub fn new(capacity: usize) -> DecisionMemory {
        DecisionMemory {
            map: ExpiringMap::new(capacity),
        }
    }

    /// Remembers `record` (keeps an existing decision with the same id: replay is
    /// idempotent) and returns the live entry.
    pub fn insert(&self, record: DecisionRecord, now_ms: i64) -> Arc<LiveDecision> {
        let keep_until = record.last_expiry_ms() + KEEP_AFTER_EXPIRY_MS;
        let id = record.id.clone();
        self.map
            .insert_with(&id, keep_until, now_ms, || {
                Arc::new(LiveDecision::new(record))
            })
            .0
    }

    /// The decision with this id, unless unknown or outlived.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Arc<LiveDecision>> {
        self.map.get(id, now_ms)
    }

    /// Evicts what has outlived its offers (inserts do this too; this is for quiet periods).
    pub fn evict_expired(&self, now_ms: i64) {
        self.map.evict_expired(now_ms)
    }

    /// Calls `f` for every decision not yet outlived at `now_ms`.
    pub fn for_each(&self, now_ms: i64, mut f: impl FnMut(&LiveDecision)) {
        self.map.for_each(now_ms, |_, d| f(d))
    }

    /// Forgets every decision for which `f` is true (erasure: rare, walks the whole map).
    pub fn remove_where(&self, f: impl Fn(&LiveDecision) -> bool) {
        self.map.remove_where(|d| f(d))
    }

    /// Decisions held (outlived ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Accepted and reserved units under one inventory key.
#[derive(Debug, Default, Clone, Copy)]
pub struct Units {
    /// Durable accepts.
    pub committed: u32,
    /// Accepts on their way to the log.
    pub reserved: u32,
}

/// Offers shown to a member on one day, per channel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ContactDay {
    /// The day counted.
    pub day: i32,
    /// Offers shown, by [`Channel::index`].
    pub counts: [u16; 5],
}

/// Member → (offer id, suppressed until ms).
pub type Suppressions = DashMap<Box<str>, Vec<(Arc<str>, i64)>, ahash::RandomState>;

/// What a durable accept took, kept through the attribution window so a
/// refund can give exactly that back, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    /// Member the decision was for.
    pub member_id: String,
    /// Offer id.
    pub offer_id: String,
    /// Position of the offer in the decision.
    pub offer_pos: u8,
    /// When the decision was made, ms (the refund window counts from it).
    pub decision_created_ms: i64,
    /// The offer as issued (its terms check the refund's token), when the
    /// decision was still remembered at the accept.
    pub issued: Option<IssuedOffer>,
    /// Inventory unit taken.
    pub inventory: Option<(InventoryKey, u32)>,
    /// Revenue attributed.
    pub revenue: f64,
    /// Value to the airline.
    pub value: f64,
    /// Points redeemed from the member.
    pub points: u64,
    /// Cost of the points given away.
    pub points_cost: f64,
    /// Experiments the decision carried.
    pub experiments: Vec<offer_engine_core::experiments::Assignment>,
    /// Refunded already.
    pub refunded: bool,
    /// The calendar year whose upgrade voucher the accept used, if it used one.
    pub voucher_year: Option<i32>,
}

/// Key of an accept in the accept book (an offer appears once in a decision).
pub fn taken_key(decision_id: &str, offer_id: &str) -> String {
    format!("{decision_id}#{offer_id}")
}

/// Shared ledger; cloning is shallow.
#[derive(Clone)]
pub struct Ledger {
    /// Decisions by id, until their offers expire.
    decisions: Arc<DecisionMemory>,
    /// Member → (offer id, suppressed until ms).
    suppressions: Arc<Suppressions>,
    /// Member → offers shown today per channel.
    contacts: Arc<DashMap<Box<str>, ContactDay, ahash::RandomState>>,
    /// (offer id, key) → units.
    inventory: Arc<DashMap<(Arc<str>, InventoryKey), Units, ahash::RandomState>>,
    /// Durable accepts by [`taken_key`], through the attribution window.
    accepts: Arc<ExpiringMap<Arc<Taken>>>,
    /// Member → the calendar year whose upgrade voucher they used.
    vouchers: Arc<DashMap<Box<str>, i32, ahash::RandomState>>,
}

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// The offer was already accepted (or an accept is in flight).
    AlreadyAccepted,
    /// No units left.
    SoldOut,
}

impl Ledger {
    /// A ledger remembering at most `max_decisions` decisions.
    pub fn new(max_decisions: u64) -> Ledger {
        Ledger {
            decisions: Arc::new(DecisionMemory::new(max_decisions as usize)),
            suppressions: Arc::new(super::members::growing_map(super::members::fixed_hasher())),
            contacts: Arc::new(super::members::growing_map(super::members::fixed_hasher())),
            inventory: Arc::new(DashMap::with_hasher(super::members::fixed_hasher())),
            accepts: Arc::new(ExpiringMap::new(max_decisions as usize)),
            vouchers: Arc::new(super::members::growing_map(super::members::fixed_hasher())),
        }
    }

    /// Whether `member` used their upgrade voucher of `year`.
    pub fn voucher_used(&self, member: &str, year: i32) -> bool {
        self.vouchers.get(member).is_some_and(|y| *y == year)
    }

    /// `member` uses their upgrade voucher of `year`.
    pub fn use_voucher(&self, member: &str, year: i32) {
        self.vouchers.insert(member.into(), year);
    }

    /// A refund gives `member` their voucher of `year` back.
    pub fn return_voucher(&self, member: &str, year: i32) {
        self.vouchers.remove_if(member, |_, y| *y == year);
    }

    /// Vouchers used, for a snapshot.
    pub fn vouchers_used(&self) -> Vec<(String, i32)> {
        self.vouchers
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect()
    }

    /// Records what a durable accept took, kept until `keep_until` (ms, log
    /// time); an accept already held is kept (replay is idempotent).
    pub fn record_taken(&self, key: &str, taken: Taken, keep_until: i64, now_ms: i64) {
        self.accepts
            .insert_with(key, keep_until, now_ms, || Arc::new(taken));
    }

    /// The accept under `key` if still held (the caller judges the window).
    pub fn taken(&self, key: &str) -> Option<Arc<Taken>> {
        self.accepts.get_held(key)
    }

    /// Marks the accept under `key` refunded; false when it is not held.
    pub fn mark_refunded(&self, key: &str, taken: &Taken) -> bool {
        let mut t = taken.clone();
        t.refunded = true;
        self.accepts.replace(key, Arc::new(t))
    }

    /// A refund gives an inventory unit back.
    pub fn return_unit(&self, offer_id: &str, key: &InventoryKey) {
        if let Some(mut u) = self.inventory.get_mut(&(Arc::from(offer_id), key.clone())) {
            u.committed = u.committed.saturating_sub(1);
        }
    }

    /// Accepts held and not outlived at `now_ms`, for a snapshot.
    pub fn takings(&self, now_ms: i64) -> Vec<(String, Taken)> {
        let mut out = Vec::new();
        self.accepts
            .for_each(now_ms, |k, t| out.push((k.to_string(), (**t).clone())));
        out
    }

    /// Remembers a decision at `now_ms` (replaces none that exists: replay
    /// is idempotent).
    pub fn remember(&self, record: DecisionRecord, now_ms: i64) -> Arc<LiveDecision> {
        self.decisions.insert(record, now_ms)
    }

    /// A decision remembered and not yet forgotten at `now_ms`.
    pub fn decision(&self, id: &str, now_ms: i64) -> Option<Arc<LiveDecision>> {
        self.decisions.get(id, now_ms)
    }

    /// Decisions remembered.
    pub fn decision_count(&self) -> usize {
        self.decisions.len()
    }

    /// Forgets decisions whose offers (plus a minute) expired before `now_ms`.
    pub fn evict_expired(&self, now_ms: i64) {
        self.decisions.evict_expired(now_ms)
    }

    /// The offers `member` declined that are still suppressed at `now_ms`.
    pub fn active_suppressions(&self, member: &str, now_ms: i64) -> Vec<Arc<str>> {
        self.suppressions
            .get(member)
            .map(|v| {
                v.iter()
                    .filter(|(_, until)| *until > now_ms)
                    .map(|(o, _)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether anything is held under `member` (suppressions, contact counts
    /// or remembered decisions).
    pub fn holds_member(&self, member: &str) -> bool {
        self.suppressions.contains_key(member)
            || self.contacts.contains_key(member)
            || self.vouchers.contains_key(member)
            || {
                let mut found = false;
                self.accepts
                    .for_each(i64::MIN, |_, t| found |= t.member_id == member);
                found
            }
            || {
                let mut found = false;
                self.decisions.for_each(i64::MIN, |d| {
                    found |= d.record.member_id == member;
                });
                found
            }
    }

    /// Removes everything held under `member`. Inventory counts hold no
    /// member data and stay. Erasure is rare, so walking the decision memory
    /// is acceptable.
    pub fn erase_member(&self, member: &str) {
        self.suppressions.remove(member);
        self.contacts.remove(member);
        self.decisions
            .remove_where(|d| d.record.member_id == member);
        self.accepts.remove_where(|t| t.member_id == member);
        self.vouchers.remove(member);
    }

    /// A unit of `offer_id` under `key` is durably taken by an accept whose
    /// decision is no longer remembered.
    pub fn commit_unit(&self, offer_id: &str, key: &InventoryKey) {
        let mut u = self
            .inventory
            .entry((offer_id.into(), key.clone()))
            .or_default();
        u.committed += 1;
    }

    /// Whether `offer_id` is suppressed for `member` at `now_ms`.
    pub fn suppressed(&self, member: &str, offer_id: &str, now_ms: i64) -> bool {
        self.suppressions.get(member).is_some_and(|v| {
            v.iter()
                .any(|(o, until)| &**o == offer_id && *until > now_ms)
        })
    }

    /// Suppresses an offer for a member until `until_ms` (keeps the later of two).
    pub fn suppress(&self, member: &str, offer_id: &str, until_ms: i64, now_ms: i64) {
        let mut e = self.suppressions.entry(member.into()).or_default();
        e.retain(|(_, u)| *u > now_ms);
        match e.iter_mut().find(|(o, _)| &**o == offer_id) {
            Some((_, u)) => *u = (*u).max(until_ms),
            None => e.push((offer_id.into(), until_ms)),
        }
    }

    /// The committed parts, for a snapshot: decisions not outlived at
    /// `now_ms` with their committed accept status, suppressions, contact
    /// counts, and units taken.
    #[allow(clippy::type_complexity)]
    pub fn committed(
        &self,
        now_ms: i64,
    ) -> (
        Vec<(DecisionRecord, Vec<u8>)>,
        Vec<(String, Vec<(String, i64)>)>,
        Vec<(String, ContactDay)>,
        Vec<(String, InventoryKey, u32)>,
    ) {
        let mut decisions = Vec::with_capacity(self.decisions.len());
        self.decisions.for_each(now_ms, |d| {
            decisions.push((d.record.clone(), d.committed_status()))
        });
        let suppressions = self
            .suppressions
            .iter()
            .map(|e| {
                (
                    e.key().to_string(),
                    e.value().iter().map(|(o, u)| (o.to_string(), *u)).collect(),
                )
            })
            .collect();
        let contacts = self
            .contacts
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect();
        let inventory = self
            .inventory
            .iter()
            .filter(|e| e.value().committed > 0)
            .map(|e| {
                (
                    e.key().0.to_string(),
                    e.key().1.clone(),
                    e.value().committed,
                )
            })
            .collect();
        (decisions, suppressions, contacts, inventory)
    }

    /// Restores the parts [`Ledger::committed`] returned (decisions are
    /// restored one by one with [`Ledger::remember`]).
    pub fn restore(
        &self,
        suppressions: Vec<(String, Vec<(String, i64)>)>,
        contacts: Vec<(String, ContactDay)>,
        inventory: Vec<(String, InventoryKey, u32)>,
        now_ms: i64,
    ) {
        for (m, list) in suppressions {
            for (o, until) in list {
                self.suppress(&m, &o, until, now_ms);
            }
        }
        for (m, c) in contacts {
            self.contacts.insert(m.into(), c);
        }
        for (o, key, committed) in inventory {
            self.inventory.entry((o.into(), key)).or_default().committed = committed;
        }
    }

    /// Offers shown to `member` on `day` on `channel`.
    pub fn shown(&self, member: &str, day: Day, channel: Channel) -> u16 {
        self.contacts
            .get(member)
            .filter(|c| c.day == day.0)
            .map(|c| c.counts[channel.index()])
            .unwrap_or(0)
    }

    /// Counts `n` offers shown.
    pub fn count_shown(&self, member: &str, day: Day, channel: Channel, n: u16) {
        if n == 0 {
            return;
        }
        let mut e = self.contacts.entry(member.into()).or_default();
        if e.day != day.0 {
            *e = ContactDay {
                day: day.0,
                counts: [0; 5],
            };
        }
        let c = &mut e.counts[channel.index()];
        *c = c.saturating_add(n);
    }

    /// Units taken (committed + reserved) under a key.
    pub fn units(&self, offer_id: &str, key: &InventoryKey) -> Units {
        // Keys are (Arc<str>, key); look up without allocating an Arc on the hot path
        // is not possible with a tuple key, so build one (cheap, rare: capped offers only).
        self.inventory
            .get(&(Arc::from(offer_id), key.clone()))
            .map(|u| *u)
            .unwrap_or_default()
    }

    /// Whether a unit is left under a key.
    pub fn in_stock(&self, offer_id: &str, key: &InventoryKey, cap: u32) -> bool {
        let u = self.units(offer_id, key);
        u.committed + u.reserved < cap
    }

    /// Phase one of an accept: marks the offer pending and reserves a unit.
    pub fn reserve_accept(&self, d: &LiveDecision, offer_pos: usize) -> Result<(), ReserveError> {
        let cap = d.record.offers[offer_pos]
            .inventory
            .as_ref()
            .map(|(_, c)| *c)
            .unwrap_or(0);
        self.reserve_accept_within(d, offer_pos, cap)
    }

    /// [`Ledger::reserve_accept`] within `cap` units (the part of the cap
    /// this member may take: less its reserved units for a member the
    /// offer does not keep them for). Offers without inventory ignore it.
    pub fn reserve_accept_within(
        &self,
        d: &LiveDecision,
        offer_pos: usize,
        cap: u32,
    ) -> Result<(), ReserveError> {
        let status = &d.status[offer_pos];
        if status
            .compare_exchange(OPEN, PENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ReserveError::AlreadyAccepted);
        }
        if let Some((key, _)) = &d.record.offers[offer_pos].inventory {
            let offer_id: Arc<str> = d.record.offers[offer_pos].offer_id.as_str().into();
            let mut u = self.inventory.entry((offer_id, key.clone())).or_default();
            if u.committed + u.reserved >= cap {
                drop(u);
                status.store(OPEN, Ordering::Release);
                return Err(ReserveError::SoldOut);
            }
            u.reserved += 1;
        }
        Ok(())
    }

    /// Undoes [`Ledger::reserve_accept`] (the log write failed or the batch was refused).
    pub fn release_accept(&self, d: &LiveDecision, offer_pos: usize) {
        if let Some((key, _)) = &d.record.offers[offer_pos].inventory {
            let offer_id: Arc<str> = d.record.offers[offer_pos].offer_id.as_str().into();
            if let Some(mut u) = self.inventory.get_mut(&(offer_id, key.clone())) {
                u.reserved = u.reserved.saturating_sub(1);
            }
        }
        let _ = d.status[offer_pos].compare_exchange(
            PENDING,
            OPEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Phase two (live) or replay: the accept is durable. `reserved` says
    /// whether phase one ran in this process (live) or not (replay).
    pub fn commit_accept(&self, d: &LiveDecision, offer_pos: usize, reserved: bool) {
        if let Some((key, _)) = &d.record.offers[offer_pos].inventory {
            let offer_id: Arc<str> = d.record.offers[offer_pos].offer_id.as_str().into();
            let mut u = self.inventory.entry((offer_id, key.clone())).or_default();
            u.committed += 1;
            if reserved {
                u.reserved = u.reserved.saturating_sub(1);
            }
        }
        d.status[offer_pos].store(ACCEPTED, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn record(cap: u32) -> DecisionRecord {
        DecisionRecord {
            id: "d1".into(),
            member_id: "M1".into(),
            channel: Channel::Checkout,
            created_ms: Utc::now().timestamp_millis(),
            offers: vec![IssuedOffer {
                offer_id: "seat".into(),
                price: None,
                points_price: None,
                expires_ms: Utc::now().timestamp_millis() + 60_000,
                inventory: Some((
                    InventoryKey::AirportDay {
                        airport: *b"PEK",
                        day: 1,
                    },
                    cap,
                )),
                suppress_days: 30,
                propensity: 1.0,
            }],
            experiments: Vec::new(),
            covariate: 0.0,
            features: Vec::new(),
        }
    }

    fn decision(id: &str, created_ms: i64, expires_ms: i64) -> DecisionRecord {
        let mut d = record(1);
        d.id = id.into();
        d.created_ms = created_ms;
        d.offers[0].expires_ms = expires_ms;
        d
    }

    #[test]
    fn decision_memory_forgets_outlived_decisions() {
        let m = DecisionMemory::new(1000);
        let now = 1_000_000_000;
        m.insert(decision("short", now, now + 1_000), now);
        m.insert(decision("long", now, now + 3_600_000), now);
        // Within the minute of grace after expiry it is still known ("expired", not "unknown").
        assert!(m.get("short", now + 1_000 + 59_000).is_some());
        assert!(m.get("short", now + 1_000 + 60_000).is_none());
        let mut seen = Vec::new();
        m.for_each(now + 61_000 + 1_000, |d| seen.push(d.record.id.clone()));
        assert_eq!(seen, vec!["long".to_string()]);
        m.evict_expired(now + 1_000 + 60_000);
        assert!(m.get("long", now).is_some());
        // "short" was inserted first, so it is at the front of its ring whichever it is.
        assert!(!m.map.contains("short"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn decision_memory_insert_is_idempotent() {
        let m = DecisionMemory::new(100);
        let now = 1_000_000_000;
        let a = m.insert(decision("x", now, now + 60_000), now);
        a.status[0].store(ACCEPTED, Ordering::Release);
        let b = m.insert(decision("x", now, now + 60_000), now);
        assert!(
            Arc::ptr_eq(&a, &b),
            "the live entry (with its accept) is kept"
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn reserve_commit_release() {
        let l = Ledger::new(100);
        let d = l.remember(record(1), chrono::Utc::now().timestamp_millis());
        assert_eq!(l.reserve_accept(&d, 0), Ok(()));
        assert_eq!(l.reserve_accept(&d, 0), Err(ReserveError::AlreadyAccepted));
        l.release_accept(&d, 0);
        assert_eq!(l.reserve_accept(&d, 0), Ok(()));
        l.commit_accept(&d, 0, true);
        let key = d.record.offers[0].inventory.clone().unwrap().0;
        let u = l.units("seat", &key);
        assert_eq!((u.committed, u.reserved), (1, 0));
        let mut other = record(1);
        other.id = "d2".into();
        let d2 = l.remember(other, chrono::Utc::now().timestamp_millis());
        assert_eq!(l.reserve_accept(&d2, 0), Err(ReserveError::SoldOut));
        assert_eq!(d2.status[0].load(Ordering::Acquire), OPEN);
    }

    #[test]
    fn suppressions_expire_and_keep_the_later_date() {
        let l = Ledger::new(10);
        l.suppress("M1", "o", 1_000, 0);
        l.suppress("M1", "o", 500, 0);
        assert!(l.suppressed("M1", "o", 900));
        assert!(!l.suppressed("M1", "o", 1_000));
        assert!(!l.suppressed("M2", "o", 0));
    }
}
