//! The member store: compact member records in concurrent maps (dashmap),
//! keyed by member id, and the NDJSON reader that fills it.
//!
//! Readers copy the 68-byte [`Member`] out of the map and drop the guard at
//! once, so no shard lock is ever held across an `.await` or while deciding.
//!
//! Memory: ids of the generator's and the usual airline form, `M` and exactly
//! eight digits (`M00000042`), are kept as a `u32` beside the record (72
//! bytes a member, no allocation of their own); any other id is a boxed
//! string in a second map. The store holds 10 million members in 122
//! resident bytes each (the map's slots are about 1.68 times the entries;
//! `member_store_bytes_per_member` in `tests/rolling_window.rs`), under the
//! 150-byte target with the rest of the server
//! (`docs/tiers-and-validity.md`).

use std::io::BufRead;
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{FieldError, Member, MemberRecord};

/// Shared member store; cloning is shallow.
///
/// The hasher has fixed seeds and the shard count is fixed, so iteration
/// order ([`MemberStore::for_each`]: numeric ids first, then the others)
/// depends only on the members and the order they were loaded in, not on the
/// machine: a campaign over the same state writes the same file. (Member ids
/// are not secret and are chosen by the airline, not by the public, so hash
/// flooding is no concern.)
#[derive(Clone)]
pub struct MemberStore {
    /// `M` + eight digits → compact record (the id's number is the key).
    numeric: Arc<DashMap<u32, Member, ahash::RandomState>>,
    /// Any other member id → compact record.
    other: Arc<DashMap<Box<str>, Member, ahash::RandomState>>,
}

/// Shards of each map: fixed, so iteration order does not depend on the CPU count.
const SHARDS: usize = 16;

/// Shards of a map that grows with the population or the traffic (contact
/// counts, experiment exposures, remembered decisions). A DashMap shard
/// rehashes all its entries at once, holding its write lock, when it grows:
/// with dashmap's default (4 per CPU, so 8 here) a shard of a 10-million-member
/// map holds over a million entries and its resize stalled every request
/// touching it for tens of milliseconds (the p99 of checkout at a fixed rate).
/// With 1,024 shards a resize moves about 10,000 entries
/// (well under a millisecond); the cost is about 100 KB of empty shards per map.
pub const GROWING_SHARDS: usize = 1024;

/// An empty map for [`GROWING_SHARDS`]-style growth.
pub fn growing_map<K: Eq + std::hash::Hash, V>(
    hasher: ahash::RandomState,
) -> dashmap::DashMap<K, V, ahash::RandomState> {
    dashmap::DashMap::with_capacity_and_hasher_and_shard_amount(0, hasher, GROWING_SHARDS)
}

pub(crate) fn fixed_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x6f66_6665_722d_656e,
        0x6769_6e65_2d6d_656d,
        0x6265_7273_2d73_746f,
        0x7265_2d76_3100_0000,
    )
}

/// The number of an id of the form `M` + exactly eight ASCII digits.
/// `format!("M{n:08}")` gives the id back, byte for byte.
fn numeric_key(id: &str) -> Option<u32> {
    let b = id.as_bytes();
    if b.len() != 9 || b[0] != b'M' {
        return None;
    }
    let mut n = 0u32;
    for &c in &b[1..] {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// Writes `M` + eight digits of `n` into `buf` and returns it as text.
fn numeric_id(n: u32, buf: &mut [u8; 9]) -> &str {
    buf[0] = b'M';
    let mut x = n;
    for i in (1..9).rev() {
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
    std::str::from_utf8(buf).expect("ASCII digits")
}

impl Default for MemberStore {
    fn default() -> Self {
        MemberStore::with_capacity(0)
    }
}

/// One bad line of an NDJSON input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// Field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Result of loading NDJSON.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LoadReport {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Records applied.
    pub loaded: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// The first rejected lines (at most 100), with reasons.
    pub errors: Vec<LineError>,
}

/// How many line errors a report keeps in full.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Parses one NDJSON member line.
pub fn parse_member_line(line: &str) -> Result<(String, Member), FieldError> {
    // The same reader as request bodies: one JSON value and nothing after it.
    let rec: MemberRecord = crate::parse::from_json(line.as_bytes())?;
    let m = rec.to_member()?;
    Ok((rec.member_id, m))
}

/// Reads NDJSON member lines: `good` gets each valid member; bad lines
/// are counted and the first [`MAX_REPORTED_ERRORS`] reported by number and
/// field. Blank lines count as lines and are skipped.
pub fn read_member_lines<S: AsRef<str>, E>(
    lines: impl Iterator<Item = Result<S, E>>,
    mut good: impl FnMut(String, Member),
) -> Result<LoadReport, E> {
    let mut report = LoadReport::default();
    for line in lines {
        let line = line?;
        let line = line.as_ref();
        report.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_member_line(line) {
            Ok((id, m)) => {
                good(id, m);
                report.loaded += 1;
            }
            Err(e) => {
                report.rejected += 1;
                if report.errors.len() < MAX_REPORTED_ERRORS {
                    report.errors.push(LineError {
                        line: report.lines,
                        field: (!e.field.is_empty()).then_some(e.field),
                        message: e.message,
                    });
                }
            }
        }
    }
    Ok(report)
}

impl MemberStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store sized for `n` members (of the numeric id form).
    pub fn with_capacity(n: usize) -> Self {
        MemberStore {
            numeric: Arc::new(DashMap::with_capacity_and_hasher_and_shard_amount(
                n,
                fixed_hasher(),
                SHARDS,
            )),
            other: Arc::new(DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                fixed_hasher(),
                SHARDS,
            )),
        }
    }

    /// A copy of a member's record.
    pub fn get(&self, id: &str) -> Option<Member> {
        match numeric_key(id) {
            Some(k) => self.numeric.get(&k).map(|r| *r),
            None => self.other.get(id).map(|r| *r),
        }
    }

    /// Inserts or replaces a member; returns the previous record.
    pub fn upsert(&self, id: &str, m: Member) -> Option<Member> {
        match numeric_key(id) {
            Some(k) => self.numeric.insert(k, m),
            None => self.other.insert(id.into(), m),
        }
    }

    /// Applies `f` to a member in place, if present; returns the new record.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Member)) -> Option<Member> {
        let apply = |r: &mut Member| {
            f(r);
            *r
        };
        match numeric_key(id) {
            Some(k) => self.numeric.get_mut(&k).map(|mut r| apply(&mut r)),
            None => self.other.get_mut(id).map(|mut r| apply(&mut r)),
        }
    }

    /// Removes a member.
    pub fn remove(&self, id: &str) -> Option<Member> {
        match numeric_key(id) {
            Some(k) => self.numeric.remove(&k).map(|(_, m)| m),
            None => self.other.remove(id).map(|(_, m)| m),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.numeric.len() + self.other.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.numeric.is_empty() && self.other.is_empty()
    }

    /// Visits every member (order unspecified but deterministic: numeric ids
    /// first, then the others). Holds one shard read lock at a time; never
    /// call it from async code that awaits inside `f`.
    pub fn for_each(&self, mut f: impl FnMut(&str, &Member)) {
        let mut buf = [0u8; 9];
        for r in self.numeric.iter() {
            f(numeric_id(*r.key(), &mut buf), r.value());
        }
        for r in self.other.iter() {
            f(r.key(), r.value());
        }
    }

    /// Applies `f` to every member in place, one shard write lock at a time
    /// (the start of a month: every member's window moves on).
    pub fn update_all(&self, mut f: impl FnMut(&mut Member)) {
        for mut r in self.numeric.iter_mut() {
            f(r.value_mut());
        }
        for mut r in self.other.iter_mut() {
            f(r.value_mut());
        }
    }

    /// Loads NDJSON, applying good lines and reporting bad ones by line number.
    pub fn load_ndjson(&self, reader: impl BufRead) -> std::io::Result<LoadReport> {
        read_member_lines(reader.lines(), |id, m| {
            self.upsert(&id, m);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"member_id":"M1","tier":"gold","points":1200,"qualifying_spend_12m":52000.5,"flights_12m":12,"last_flight":"2026-10-01","joined":"2019-04-02","home_airport":"PEK","birth_month":7,"consent":{"email":true,"sms":false,"app":true},"tags":["business"]}"#;

    #[test]
    fn bad_lines_are_reported_with_line_and_field() {
        let input = format!(
            "{GOOD}\n\n{}\nnot json\n{}\n",
            GOOD.replace("\"gold\"", "\"golden\""),
            GOOD.replace("\"M1\"", "\"M2\"")
                .replace("\"PEK\"", "\"XXX\"")
        );
        let s = MemberStore::new();
        let r = s.load_ndjson(input.as_bytes()).unwrap();
        assert_eq!(r.loaded, 1);
        assert_eq!(r.rejected, 3);
        assert_eq!(r.errors[0].line, 3);
        assert_eq!(r.errors[0].field.as_deref(), Some("tier"));
        assert_eq!(r.errors[1].line, 4);
        assert_eq!(r.errors[2].field.as_deref(), Some("home_airport"));
        assert_eq!(s.get("M1").unwrap().points, 1200);
    }

    #[test]
    fn numeric_and_other_ids_round_trip() {
        let (_, m) = parse_member_line(GOOD).unwrap();
        let s = MemberStore::new();
        let ids = [
            "M00000042",
            "M00000000",
            "M99999999",
            "M1",
            "M0000004",
            "M000000042",
            "m00000042",
            "M0000004x",
            "X00000042",
            "M-0000042",
            "M\u{0663}0000042",
        ];
        for (i, id) in ids.iter().enumerate() {
            let mut mi = m;
            mi.points = i as u32;
            assert_eq!(s.upsert(id, mi), None, "{id}");
        }
        assert_eq!(s.len(), ids.len());
        assert_eq!(numeric_key("M00000042"), Some(42));
        assert_eq!(numeric_key("M000000042"), None);
        assert_eq!(numeric_key("M0000004x"), None);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.get(id).unwrap().points, i as u32, "{id}");
        }
        let mut seen = Vec::new();
        s.for_each(|id, m| seen.push((id.to_string(), m.points)));
        seen.sort_by_key(|(_, p)| *p);
        let want: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.to_string(), i as u32))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(s.update("M00000042", |m| m.points = 7).unwrap().points, 7);
        assert_eq!(s.update("M1", |m| m.points = 8).unwrap().points, 8);
        assert!(s.update("M00000043", |m| m.points = 9).is_none());
        assert_eq!(s.remove("M00000042").unwrap().points, 7);
        assert_eq!(s.remove("M1").unwrap().points, 8);
        assert!(s.get("M00000042").is_none() && s.get("M1").is_none());
        assert_eq!(s.len(), ids.len() - 2);
        assert!(!s.is_empty());
    }

    #[test]
    fn iteration_order_is_deterministic() {
        let (_, m) = parse_member_line(GOOD).unwrap();
        let order = || {
            let s = MemberStore::new();
            for i in 0..2000u32 {
                s.upsert(&format!("M{i:08}"), m);
                s.upsert(&format!("X{i}"), m);
            }
            let mut ids = Vec::new();
            s.for_each(|id, _| ids.push(id.to_string()));
            ids
        };
        assert_eq!(order(), order());
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let e = parse_member_line(&format!("{GOOD} trailing")).unwrap_err();
        assert!(e.message.contains("trailing"), "{e:?}");
        let e = parse_member_line(&format!("{GOOD}{GOOD}")).unwrap_err();
        assert!(e.message.contains("trailing"), "{e:?}");
        let e = parse_member_line(&GOOD.replace(",\"points\":1200", "")).unwrap_err();
        assert_eq!(e.field, "points", "{e:?}");
        let e = parse_member_line(&GOOD.replace("1200", "\"many\"")).unwrap_err();
        assert_eq!(e.field, "points");
    }
}
