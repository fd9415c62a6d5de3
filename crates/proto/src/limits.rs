use posync_model::guard::Budget;

/// Bounds on what one sync may carry. The server enforces them; the client packs within them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request body on the wire (compressed, if it is).
    pub body_bytes_max: usize,
    /// Request body after decompression: a gzip bomb stops here.
    pub body_decoded_bytes_max: usize,
    /// Documents pushed in one request.
    pub push_docs_max: usize,
    /// Automerge bytes of one push after inflating its compressed chunks and columns (which
    /// the outer gzip bound does not see): a bomb inside the changes stops here.
    pub push_decoded_bytes_max: usize,
    /// Operations in one pushed change.
    pub change_ops_max: usize,
    /// Operations in one push, over all its documents.
    pub push_ops_max: usize,
    /// Changes in one push, over all its documents.
    pub push_changes_max: usize,
    /// A stored document, saved, after merging a push: every phone of the posyandu downloads it.
    pub doc_bytes_max: usize,
    /// Operations in a stored document after merging a push.
    pub doc_ops_max: usize,
    /// Pulled page, summed over the documents' change bytes. A single document larger than
    /// this is still sent alone, so a page is at most this plus one document.
    pub page_bytes_max: usize,
    /// Documents in one pulled page.
    pub page_docs_max: usize,
    /// Syncs the server works on at once; the next ones wait their turn (below).
    pub syncs_in_flight_max: usize,
    /// Syncs that may wait, first come first served, for a place among those worked on;
    /// one more is answered `503 overloaded` with `Retry-After` at once (a phone retries
    /// later with jitter).
    pub syncs_waiting_max: usize,
    /// How long a waiting sync waits for its turn before it is answered `503 overloaded`;
    /// well inside a phone's stall timeout.
    pub sync_wait_ms_max: u64,
    /// Request bodies held by the syncs waiting their turn, in all (a sync is let in after
    /// its body arrived, so that a slow upload does not hold a place); one more past it is
    /// answered `503 overloaded` at once.
    pub sync_waiting_bytes_max: usize,
    /// Requests to the credential routes (`/v1/auth/*`) from one client address per minute.
    pub auth_per_address_per_minute: u32,
    /// Enrolment attempts per hour with codes that share their first four characters.
    pub enrol_per_code_prefix_per_hour: u32,
    /// Token refreshes per minute by one device.
    pub refresh_per_device_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let push = Budget::PUSH;
        Self {
            body_bytes_max: 8 * 1024 * 1024,
            body_decoded_bytes_max: 16 * 1024 * 1024,
            push_docs_max: 256,
            push_decoded_bytes_max: push.decoded_bytes_max,
            change_ops_max: push.change_ops_max,
            push_ops_max: push.ops_max,
            push_changes_max: push.changes_max,
            doc_bytes_max: 2 * 1024 * 1024,
            doc_ops_max: 100_000,
            page_bytes_max: 1024 * 1024,
            page_docs_max: 500,
            syncs_in_flight_max: 256,
            syncs_waiting_max: 2_048,
            sync_wait_ms_max: 5_000,
            sync_waiting_bytes_max: 128 * 1024 * 1024,
            auth_per_address_per_minute: 120,
            enrol_per_code_prefix_per_hour: 20,
            refresh_per_device_per_minute: 20,
        }
    }
}

impl Limits {
    /// What Automerge may decode from one push.
    pub fn push_budget(&self) -> Budget {
        Budget {
            decoded_bytes_max: self.push_decoded_bytes_max,
            change_ops_max: self.change_ops_max,
            ops_max: self.push_ops_max,
            changes_max: self.push_changes_max,
        }
    }
}
