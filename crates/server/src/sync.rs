//! One sync, without HTTP: authorise, push (durably), pull a page.

use crate::Clock;
use crate::auth::Principal;
use crate::error::ApiError;
use posync_model::Role;
use posync_proto::{ErrorCode, Limits, PROTOCOL_VERSION, SyncRequest, SyncResponse};
use posync_store::{Actor, AuditAction, AuditEntry, PageLimits, Store, StoreError};
use std::sync::Arc;

/// Smallest page a client may ask for: below this, paging overhead dominates.
const PAGE_BYTES_MIN: usize = 1024;

#[derive(Clone)]
pub struct SyncService {
    store: Arc<dyn Store>,
    limits: Limits,
    clock: Clock,
}

impl SyncService {
    pub fn new(store: Arc<dyn Store>, limits: Limits, clock: Clock) -> Self {
        Self { store, limits, clock }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handle one decoded request. The push is committed before anything is acknowledged; if
    /// the pull then fails the client retries and the replayed push is a no-op.
    pub async fn handle(&self, who: &Principal, req: SyncRequest) -> Result<SyncResponse, ApiError> {
        if req.device != who.device {
            return Err(ApiError::new(ErrorCode::DeviceMismatch, "request device differs from the token's device"));
        }
        if req.push.len() > self.limits.push_docs_max {
            return Err(ApiError::new(
                ErrorCode::BatchTooLarge,
                format!("{} documents pushed; at most {} per request", req.push.len(), self.limits.push_docs_max),
            ));
        }
        if req.dropped.len() > self.limits.push_docs_max {
            return Err(ApiError::new(
                ErrorCode::BatchTooLarge,
                format!("{} documents dropped; at most {} per request", req.dropped.len(), self.limits.push_docs_max),
            ));
        }
        // An empty push (a probe, or a report of a piece held) writes no record: any role.
        if req.push.iter().any(|p| !p.changes.is_empty()) && !who.role.can_write() {
            return Err(ApiError::new(ErrorCode::Forbidden, "this role is read-only"));
        }
        let pushed = req.push.len();
        let reports_only = req.push.iter().all(|p| p.changes.is_empty());
        // Whether what the device holds ahead of its cursor could be recorded.
        let mut reported = true;
        let acks = if req.push.is_empty() {
            Vec::new()
        } else {
            match self.store.push(who.device, who.scope.clone(), req.push, (self.clock)()).await {
                Ok(acks) => acks,
                Err(StoreError::StorageFull(_)) if reports_only => {
                    // A full disk must not cost a device its read access: serve the pull as
                    // to a device without pieces (whole documents in feed order), which
                    // needs no report. The device reports again later.
                    tracing::warn!(device = %who.device, "storage full: reports not recorded, pulling without pieces");
                    reported = false;
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !req.dropped.is_empty() {
            // What the device says it dropped is only ever forgotten for this device: it
            // can make the server send more, never less, and touches no record.
            self.store.forget_dropped(who.device, req.dropped, (self.clock)()).await?;
        }
        if req.cursor == 0 {
            // Starting over: what it was once acknowledged to hold may be gone from it (but
            // not what it has just pushed). After the push, so a refused request changes nothing.
            self.store.forget_device_heads(who.device, acks.iter().map(|a| a.doc).collect()).await?;
        }
        // The store's incarnation, when the device has not seen this one (first sync, or the
        // server was restored from a backup since its last).
        let incarnation = self.store.incarnation();
        let store = (req.store != Some(incarnation)).then_some(incarnation);
        let digest = who.scope.digest();
        let scope_changed = req.scope_digest.as_deref() != Some(&digest[..]);
        let scope = scope_changed.then(|| who.scope.posyandu().cloned().collect::<Vec<_>>());
        // No page in this answer, only the acknowledgements (and the scope, if it changed):
        // the device syncs again at the same cursor.
        let acks_only = |acks, scope| SyncResponse {
            store,
            v: PROTOCOL_VERSION,
            acks,
            docs: Vec::new(),
            scope,
            cursor: req.cursor,
            more: true,
        };
        if req.pull == Some(false) {
            // A small answer for a link that cuts long ones.
            tracing::info!(device = %who.device, pushed, "sync: push only");
            return Ok(acks_only(acks, scope));
        }
        if scope_changed && req.cursor > 0 {
            // The device's cursor was obtained under another scope: tell it the new one and
            // let it purge and (if the scope grew) start over before pulling anything.
            tracing::info!(device = %who.device, pushed, "sync: scope changed");
            return Ok(acks_only(acks, scope));
        }
        let server_max = self.limits.page_bytes_max;
        // A client may ask for smaller pages, never larger, and never absurdly small ones.
        let bytes_max =
            req.page_bytes_max.map_or(server_max, |b| (b as usize).clamp(PAGE_BYTES_MIN.min(server_max), server_max));
        let pieces = req.pieces == Some(true) && reported;
        let limits = PageLimits { bytes_max, docs_max: self.limits.page_docs_max, pieces };
        let page = if limits.pieces {
            // Today's sessions, then the registries, before older records.
            let first = first_docs(&who.scope, service_day((self.clock)()));
            self.store.pull_first(who.device, who.scope.clone(), req.cursor, first, limits).await?
        } else {
            self.store.pull(who.device, who.scope.clone(), req.cursor, limits).await?
        };
        tracing::info!(device = %who.device, pushed, pulled = page.docs.len(), cursor = page.cursor, more = page.more, "sync");
        if who.role != Role::Kader && !page.docs.is_empty() {
            // Staff reading records of posyandu they do not serve in person: audited.
            let docs: Vec<String> = page.docs.iter().map(|d| d.doc.to_string()).collect();
            let actor = Actor::User { user: who.user.clone(), device: who.device };
            let detail = serde_json::json!({ "role": who.role, "docs": docs });
            let entry = AuditEntry::new((self.clock)(), &actor, AuditAction::RecordsPulled, who.device, detail)
                .concerning(page.docs.first().map(|d| &d.posyandu));
            self.store.append_audit(entry).await?;
        }
        Ok(SyncResponse {
            store,
            v: PROTOCOL_VERSION,
            acks,
            docs: page.docs,
            scope,
            cursor: page.cursor,
            more: page.more,
        })
    }
}

/// Hours east of UTC of the service's day: western Indonesia (WIB). During posyandu hours
/// it is the same date in all three of Indonesia's time zones. The server's clock decides,
/// never a phone's (phone clocks are often wrong).
const SERVICE_UTC_OFFSET_HOURS: i64 = 7;

/// The service's date at unix time `now`.
fn service_day(now: i64) -> time::Date {
    let at = now.saturating_add(SERVICE_UTC_OFFSET_HOURS * 3600);
    time::OffsetDateTime::from_unix_timestamp(at).map_or(time::Date::MIN, |t| t.date())
}

/// What a device whose today is `day` gets before the feed walk: the sessions of that day,
/// then the registries, of every posyandu in its scope (from the server's data).
fn first_docs(scope: &posync_model::Scope, day: time::Date) -> Vec<posync_model::DocId> {
    let sessions = scope.posyandu().map(|p| posync_model::DocId::for_session(p, day));
    let registries = scope.posyandu().map(posync_model::DocId::for_registry);
    sessions.chain(registries).collect()
}
