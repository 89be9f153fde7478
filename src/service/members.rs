//! Members: whole records (create or replace), bulk NDJSON loads, member
//! events (flights, points, tier, consent, purchases) and erasure. Every
//! write is committed (durable and applied) before it is answered, so the
//! next decision for that member sees it.

use chrono::{DateTime, Utc};

use super::Service;
use crate::domain::{Day, FieldError, Member, MemberRecord};
use crate::durable::LogError;
use crate::events::{MemberChange, MemberEventDto};
use crate::state::members::{read_member_lines, LoadReport};
use crate::state::{LogRecord, MemberWireV2};

/// Why a member write was refused. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// A field is missing, malformed or out of range.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such member.
    #[error("no such member")]
    Unknown,
    /// More points redeemed than the balance holds.
    #[error("points: the balance is {balance} points")]
    InsufficientPoints {
        /// The balance.
        balance: u32,
    },
    /// The log did not take the write.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The answer to a member write.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemberWritten {
    /// Whether the member existed before.
    pub existed: bool,
    /// Log sequence number of the write.
    pub lsn: u64,
}

/// The answer to an accepted member event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemberEventAccepted {
    /// Log sequence number of the change.
    pub lsn: u64,
    /// The member after the change.
    pub member: Option<MemberRecord>,
}

/// The answer to an erasure.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Whether a member record existed.
    pub erased: bool,
    /// Log sequence number of the erasure record.
    pub lsn: u64,
}

impl Service {
    /// A member's record.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.state().members().get(id)
    }

    /// Creates or replaces a member's whole record.
    pub async fn put_member(&self, id: &str, m: &Member) -> Result<MemberWritten, MemberError> {
        let existed = self.member(id).is_some();
        let rec = LogRecord::MembersV2(vec![(id.to_string(), MemberWireV2::from(m))]);
        let lsn = self.durable().commit(rec, "put").await?;
        Ok(MemberWritten { existed, lsn })
    }

    /// Loads NDJSON member lines: good lines are committed as one record,
    /// bad lines reported by number and field.
    pub async fn load_members(&self, text: &str) -> Result<LoadReport, MemberError> {
        let mut good = Vec::new();
        let report = read_member_lines(
            text.lines().map(Ok::<_, std::convert::Infallible>),
            |id, m| good.push((id, MemberWireV2::from(&m))),
        )
        .unwrap_or_else(|never| match never {});
        if !good.is_empty() {
            self.durable()
                .commit(LogRecord::MembersV2(good), "bulk")
                .await?;
        }
        Ok(report)
    }

    /// Applies a member event received at `now`.
    pub async fn member_event(
        &self,
        ev: MemberEventDto,
        now: DateTime<Utc>,
    ) -> Result<MemberEventAccepted, MemberError> {
        let member_id = ev.member_id().to_string();
        crate::domain::validate_member_id(&member_id, "member_id")?;
        let change = ev.into_change(Day::of(now))?;
        let current = self.member(&member_id).ok_or(MemberError::Unknown)?;
        if let MemberChange::PointsRedeemed(p) = change {
            if p > current.points {
                return Err(MemberError::InsufficientPoints {
                    balance: current.points,
                });
            }
        }
        let kind = change.kind();
        let lsn = self
            .durable()
            .commit(
                LogRecord::MemberChange {
                    member_id: member_id.clone(),
                    at_ms: now.timestamp_millis(),
                    change,
                },
                kind,
            )
            .await?;
        let member = self
            .member(&member_id)
            .map(|m| MemberRecord::from_member(&member_id, &m));
        Ok(MemberEventAccepted { lsn, member })
    }

    /// Erases a member and everything held under the id, durably (a log
    /// record that replay applies after the member's earlier records).
    /// Idempotent: erasing an unknown id still clears decisions and
    /// suppressions a cold-start member may have left.
    pub async fn erase_member(&self, id: &str, now: DateTime<Utc>) -> Result<Erased, MemberError> {
        crate::domain::validate_member_id(id, "member_id")?;
        let existed = self.member(id).is_some();
        let lsn = self
            .durable()
            .commit(
                LogRecord::MemberErased {
                    member_id: id.to_string(),
                    at_ms: now.timestamp_millis(),
                },
                "erase",
            )
            .await?;
        tracing::info!(
            member = %self.security().pseudonyms.of(id),
            existed,
            lsn,
            "member erased"
        );
        Ok(Erased {
            erased: existed,
            lsn,
        })
    }
}
