//! How a phone shapes its requests for its link: budgets for pushes and pulled pages that
//! shrink after a request that did not get through and grow after one that did, remembered
//! per replica (`Replica::link_budgets`). See `proto/SYNC-v1.md` section 9.7.

use posync_proto::Limits;

/// Smallest pulled page a client asks for (the server's floor too).
pub const PAGE_BUDGET_MIN: usize = 1024;

/// How the next request is shaped for the link. A client starts at [`RoundPlan::start`],
/// halves the budgets after a request that was cut or lost, doubles them after one that
/// went through (up to the server's limits), and remembers them per replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundPlan {
    /// Bytes of changes to push; a single change larger than this still goes alone.
    pub push_bytes_max: usize,
    /// Pulled page to ask for; `None`: the server's.
    pub page_bytes_max: Option<u32>,
    /// Pull a page in the same request.
    pub pull: bool,
    /// Take documents larger than a page in pieces, and the day's records ahead of the feed
    /// (`SyncRequest::pieces`): on for a phone on a real link, off for tools.
    pub pieces: bool,
}

impl RoundPlan {
    /// Everything at once, as on a good link (the budget stays well under the wire limit,
    /// since Automerge data barely compresses).
    pub fn whole(limits: &Limits) -> Self {
        Self {
            push_bytes_max: limits.body_bytes_max.min(limits.body_decoded_bytes_max) / 2,
            page_bytes_max: None,
            pull: true,
            pieces: false,
        }
    }

    /// Where a new replica starts: requests and answers of a few hundred KB.
    pub fn start(limits: &Limits) -> Self {
        let cap = 256 * 1024;
        Self {
            push_bytes_max: (limits.body_bytes_max.min(limits.body_decoded_bytes_max) / 2).min(cap),
            page_bytes_max: Some(limits.page_bytes_max.min(cap) as u32),
            pull: true,
            pieces: true,
        }
    }

    /// After a request that did not get through: half of what was tried (at least one
    /// change; pages at least [`PAGE_BUDGET_MIN`]). Returns whether anything shrank.
    pub fn shrink(&mut self, pushed_bytes: usize) -> bool {
        let before = *self;
        if pushed_bytes > 0 {
            self.push_bytes_max = (self.push_bytes_max.min(pushed_bytes) / 2).max(1);
        }
        let page = self.page_bytes_max.map_or(1024 * 1024, |p| p as usize);
        self.page_bytes_max = Some((page / 2).max(PAGE_BUDGET_MIN) as u32);
        *self != before
    }

    /// After a request that went through: twice as much, up to `limits`, for each budget
    /// the request used at least half of. A request far smaller than a budget says nothing
    /// about whether the link carries that budget (a run of small pulls must not undo what
    /// a cut taught).
    pub fn grow(&mut self, limits: &Limits, pushed_bytes: usize, pulled_bytes: usize) {
        let whole = Self::whole(limits);
        if pushed_bytes.saturating_mul(2) >= self.push_bytes_max {
            self.push_bytes_max = self.push_bytes_max.saturating_mul(2).min(whole.push_bytes_max);
        }
        let page = self.page_bytes_max.map_or(limits.page_bytes_max, |p| p as usize);
        if pulled_bytes.saturating_mul(2) >= page {
            self.page_bytes_max = Some(page.saturating_mul(2).min(limits.page_bytes_max) as u32);
        }
    }
}
