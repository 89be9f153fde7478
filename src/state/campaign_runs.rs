//! Campaign runs and the accepts of their decisions, for the console's
//! Campaigns page: each run's summary as its `CampaignRun` record logged
//! it, and per campaign id the accepts (less refunds) of decisions whose
//! ids it issued. Kept by [`super::State::apply`] from the records only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::records::CampaignRunRecord;

/// Runs kept (the oldest go first): the page shows the recent ones.
pub const MAX_RUNS: usize = 1000;

/// The snapshot form: runs in log order, accepts per campaign id.
pub type CampaignRunsSnapshot = (Vec<CampaignRunRecord>, Vec<(String, u64)>);

/// Runs and accepts; shared by clones.
#[derive(Debug, Clone, Default)]
pub struct CampaignRuns {
    runs: Arc<Mutex<Vec<CampaignRunRecord>>>,
    accepts: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// The campaign id of a campaign decision: ids are
/// `cmp-{campaign_id}-{member_id}`, and the member is known, so the id is
/// read without guessing where a hyphenated campaign id ends.
pub fn campaign_of<'a>(decision_id: &'a str, member_id: &str) -> Option<&'a str> {
    let rest = decision_id.strip_prefix("cmp-")?;
    let id = rest.strip_suffix(member_id)?.strip_suffix('-')?;
    (!id.is_empty()).then_some(id)
}

impl CampaignRuns {
    /// A run logged.
    pub fn run(&self, r: &CampaignRunRecord) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.push(r.clone());
        if runs.len() > MAX_RUNS {
            let extra = runs.len() - MAX_RUNS;
            runs.drain(..extra);
        }
    }

    /// An accept (`+1`) or a refund (`-1`) of decision `decision_id` for `member_id`.
    pub fn outcome(&self, decision_id: &str, member_id: &str, accepted: bool) {
        let Some(id) = campaign_of(decision_id, member_id) else {
            return;
        };
        let mut m = self.accepts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(id.to_string()).or_default();
        *n = if accepted {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    }

    /// The runs kept, in log order.
    pub fn runs(&self) -> Vec<CampaignRunRecord> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Accepts of the campaign's decisions, less refunds.
    pub fn accepts(&self, campaign_id: &str) -> u64 {
        let m = self.accepts.lock().unwrap_or_else(PoisonError::into_inner);
        m.get(campaign_id).copied().unwrap_or(0)
    }

    /// The snapshot form.
    pub fn to_snapshot(&self) -> CampaignRunsSnapshot {
        let m = self.accepts.lock().unwrap_or_else(PoisonError::into_inner);
        (
            self.runs(),
            m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        )
    }

    /// Restores from the snapshot form (into an empty value).
    pub fn restore(&self, snap: CampaignRunsSnapshot) {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(snap.0);
        self.accepts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(snap.1);
    }
}

#[cfg(test)]
mod tests {
    use super::campaign_of;

    #[test]
    fn the_campaign_id_is_read_with_the_member_known() {
        assert_eq!(
            campaign_of("cmp-spring-sale-M0001", "M0001"),
            Some("spring-sale")
        );
        assert_eq!(campaign_of("cmp-x-M-1", "M-1"), Some("x"));
        assert_eq!(campaign_of("cmp--M1", "M1"), None);
        assert_eq!(campaign_of("abc-M1", "M1"), None);
        assert_eq!(campaign_of("cmp-x-M1", "M2"), None);
    }
}
