//! The member store: compact member records in a concurrent map (dashmap),
//! keyed by member id, and the NDJSON reader that fills it.
//!
//! Readers copy the 28-byte [`Member`] out of the map and drop the guard at
//! once, so no shard lock is ever held across an `.await` or while deciding.

use std::io::BufRead;
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{FieldError, Member, MemberRecord};

/// Shared member store; cloning is shallow.
#[derive(Clone, Default)]
pub struct MemberStore {
    /// Member id → compact record.
    map: Arc<DashMap<Box<str>, Member, ahash::RandomState>>,
}

/// One bad line of an NDJSON input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// Field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Result of loading NDJSON.
#[derive(Debug, Clone, Default, serde::Serialize)]
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
    let mut de = serde_json::Deserializer::from_str(line);
    let rec: MemberRecord =
        serde_path_to_error::deserialize(&mut de).map_err(crate::parse::json_field_error)?;
    let m = rec.to_member()?;
    Ok((rec.member_id, m))
}

impl MemberStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store sized for `n` members.
    pub fn with_capacity(n: usize) -> Self {
        MemberStore {
            map: Arc::new(DashMap::with_capacity_and_hasher(
                n,
                ahash::RandomState::new(),
            )),
        }
    }

    /// A copy of a member's record.
    pub fn get(&self, id: &str) -> Option<Member> {
        self.map.get(id).map(|r| *r)
    }

    /// Inserts or replaces a member; returns the previous record.
    pub fn upsert(&self, id: &str, m: Member) -> Option<Member> {
        self.map.insert(id.into(), m)
    }

    /// Applies `f` to a member in place, if present; returns the new record.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Member)) -> Option<Member> {
        self.map.get_mut(id).map(|mut r| {
            f(&mut r);
            *r
        })
    }

    /// Removes a member.
    pub fn remove(&self, id: &str) -> Option<Member> {
        self.map.remove(id).map(|(_, m)| m)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Visits every member (order unspecified). Holds one shard read lock at a
    /// time; never call it from async code that awaits inside `f`.
    pub fn for_each(&self, mut f: impl FnMut(&str, &Member)) {
        for r in self.map.iter() {
            f(r.key(), r.value());
        }
    }

    /// Loads NDJSON, applying good lines and reporting bad ones by line number.
    pub fn load_ndjson(&self, reader: impl BufRead) -> std::io::Result<LoadReport> {
        let mut report = LoadReport::default();
        for line in reader.lines() {
            let line = line?;
            report.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            match parse_member_line(&line) {
                Ok((id, m)) => {
                    self.upsert(&id, m);
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
    fn missing_and_mistyped_fields_are_named() {
        let e = parse_member_line(&GOOD.replace(",\"points\":1200", "")).unwrap_err();
        assert_eq!(e.field, "points", "{e:?}");
        let e = parse_member_line(&GOOD.replace("1200", "\"many\"")).unwrap_err();
        assert_eq!(e.field, "points");
    }
}
