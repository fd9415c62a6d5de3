//! Sync over HTTP with reqwest. Bodies are framed and compressed by `posync-proto`, so the
//! byte counts reported here are exactly the bodies on the wire.

use crate::error::ReplicaError;
use crate::link::RoundPlan;
use crate::replica::{Credential, Replica};
use posync_proto::{
    AccessToken, CONTENT_TYPE, EnrolRequest, EnrolResponse, ErrorBody, ErrorCode, Limits, RefreshRequest, SyncRequest,
    SyncResponse, decode_response, encode_body, gunzip_bounded,
};
use std::time::Duration;

/// Largest response body we inflate. Pages are bounded by the server; this guards the phone.
const RESPONSE_DECODED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A sync that needs more rounds than this is not converging: stop and report.
const ROUNDS_MAX: usize = 10_000;

/// Body bytes of one exchange as sent and received (after compression).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireBytes {
    pub up: u64,
    pub down: u64,
}

/// What a whole sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub rounds: usize,
    /// Rounds retried after a transient failure.
    pub retries: u32,
    /// Documents the server refused this time, with its error code; kept and not re-pushed.
    pub rejected: Vec<(String, String)>,
    pub pushed_docs: usize,
    pub pulled_docs: usize,
    pub bytes: WireBytes,
    pub cursor: u64,
    /// Old sessions dropped from the device before this run (its window, [`Replica::trim_window`]).
    pub dropped_docs: usize,
}

/// Refresh the access token when it has less than this left: a sync may take a while.
const ACCESS_MARGIN_SECONDS: i64 = 120;

/// How the client authenticates.
#[derive(Clone, Debug)]
enum Auth {
    /// A bearer token given by the caller (tools, tests).
    Bearer(String),
    /// The replica's stored device credential: access tokens are refreshed as needed.
    Device,
}

/// How a client retries a round that failed for a transient reason (network, overloaded,
/// internal): exponential backoff with full jitter, bounded in attempts and delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub retries: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl RetryPolicy {
    pub const NONE: RetryPolicy = RetryPolicy { retries: 0, base_ms: 0, max_ms: 0 };
    /// For phones: a few quick retries, then give up until the next sync.
    pub const PHONE: RetryPolicy = RetryPolicy { retries: 4, base_ms: 500, max_ms: 30_000 };

    /// The wait before retry `n` (0-based): uniform in [0, min(max, base * 2^n)], after a
    /// floor of a second when the server said it is overloaded. The floor is added, not a
    /// lower bound of the draw: phones refused together must not all come back together.
    /// `unit` is a uniform draw in [0, 1).
    pub fn delay(&self, n: u32, overloaded: bool, unit: f64) -> Duration {
        let cap = self.base_ms.saturating_mul(1u64 << n.min(20)).min(self.max_ms);
        let floor = if overloaded { 1_000.min(self.max_ms) } else { 0 };
        let span = cap.min(self.max_ms - floor) as f64;
        Duration::from_millis(floor + (span * unit.clamp(0.0, 1.0)) as u64)
    }
}

/// How long a request may go without a byte arriving before it counts as lost: on 2G a
/// slow answer still trickles in; a dead one does not.
pub const STALL_SECONDS_DEFAULT: u64 = 20;
/// How long one sync run may take in all before it stops (keeping its progress).
pub const RUN_SECONDS_DEFAULT: u64 = 10 * 60;

/// An HTTP sync client for one server.
#[derive(Clone)]
pub struct HttpSync {
    client: reqwest::Client,
    /// Certificates trusted beside the bundled web roots (a puskesmas server's own CA).
    extra_roots: Vec<reqwest::Certificate>,
    stall: Duration,
    base: String,
    url: String,
    auth: Auth,
    limits: Limits,
    retry: RetryPolicy,
    /// The whole run's bound.
    run_max: Duration,
    /// Shape requests for the link (budgets that shrink and grow, probes after a lost
    /// answer); off: everything at once, as tools and tests on a good link want.
    adaptive: bool,
    /// Told the run's totals after every round that went through (a progress display).
    progress: Option<Progress>,
    /// The phone's date for its window; `None`: today at UTC+7 (tools and tests set it).
    today: Option<time::Date>,
}

/// A callback told a sync's totals so far, after each round.
pub type Progress = std::sync::Arc<dyn Fn(&SyncReport) + Send + Sync>;

/// HTTPS with rustls and the bundled web roots (a phone's system store may be old), plus
/// `extra_roots`; plain HTTP still works for a LAN server.
fn http_client(stall: Duration, extra_roots: &[reqwest::Certificate]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        // No fixed per-request timeout: a request fails when nothing arrives for `stall`,
        // and the run as a whole is bounded by `run_max`.
        .read_timeout(stall)
        .connect_timeout(Duration::from_secs(10));
    for root in extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// A transport error as a person can act on it: a certificate problem says so (and is not
/// retried); anything else is a network error, with its cause (reqwest's own text names
/// only the URL).
fn transport_error(e: &reqwest::Error) -> ReplicaError {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls handshake") {
        ReplicaError::Tls(chain)
    } else {
        ReplicaError::Network(chain)
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl HttpSync {
    /// A client that sends `token` as is, and does not retry (tools, tests).
    pub fn new(server_url: &str, token: &str) -> Self {
        Self::with_auth(server_url, Auth::Bearer(token.to_owned()), RetryPolicy::NONE)
    }

    /// A client that authenticates with the replica's enrolled device credential and
    /// retries transient failures with backoff and jitter ([`RetryPolicy::PHONE`]).
    pub fn enrolled(server_url: &str) -> Self {
        Self::with_auth(server_url, Auth::Device, RetryPolicy::PHONE)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn with_auth(server_url: &str, auth: Auth, retry: RetryPolicy) -> Self {
        let base = server_url.trim_end_matches('/').to_owned();
        let adaptive = matches!(auth, Auth::Device);
        Self {
            client: http_client(Duration::from_secs(STALL_SECONDS_DEFAULT), &[]),
            extra_roots: Vec::new(),
            stall: Duration::from_secs(STALL_SECONDS_DEFAULT),
            url: format!("{base}/v1/sync"),
            base,
            auth,
            limits: Limits::default(),
            retry,
            run_max: Duration::from_secs(RUN_SECONDS_DEFAULT),
            adaptive,
            progress: None,
            today: None,
        }
    }

    /// Trim the replica's window as of `today` instead of the phone's date (tools, tests).
    pub fn with_today(mut self, today: time::Date) -> Self {
        self.today = Some(today);
        self
    }

    fn today(&self) -> time::Date {
        self.today.unwrap_or_else(|| (time::OffsetDateTime::now_utc() + Duration::from_secs(7 * 3600)).date())
    }

    /// Take back a document this device dropped from its window (or never held): fetched
    /// whole by id, read within the document budget, checked like a pull, and stored as
    /// held by the server.
    pub async fn fetch(&self, replica: &mut Replica, doc: posync_model::DocId) -> Result<(), ReplicaError> {
        let token = self.token(replica, false).await?;
        let url = format!("{}/v1/docs/{doc}/automerge", self.base);
        let mut resp = self.client.get(&url).bearer_auth(&token).send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let max = self.limits.doc_bytes_max;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&e))? {
            if body.len() + chunk.len() > max {
                return Err(ReplicaError::BadResponse(format!("document {doc} over {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(server_error(status, &body));
        }
        replica.adopt_fetched(doc, &body)
    }

    /// Tell `progress` the run's totals after every round that went through.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Shape requests for the link (on for enrolled phones, off for bearer-token tools):
    /// pushes and pages within budgets that halve after a cut or lost request and double
    /// after one that went through, remembered per replica; after a push whose answer was
    /// lost, a tiny probe asks what committed instead of sending it again.
    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    /// A request counts as lost when no byte arrives for `stall` (default 20 s).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self.client = http_client(stall, &self.extra_roots);
        self
    }

    /// Also trust the certificates of `pem` (a puskesmas server with its own CA), beside
    /// the bundled web roots.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ReplicaError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ReplicaError::BadCaFile(e.to_string()))?;
        if certs.is_empty() {
            return Err(ReplicaError::BadCaFile("no PEM certificate in it".into()));
        }
        self.extra_roots.extend(certs);
        self.client = http_client(self.stall, &self.extra_roots);
        Ok(self)
    }

    /// Bound a whole sync run (default 10 minutes): past it the run stops with
    /// [`ReplicaError::DeadlineExceeded`], keeping everything it achieved.
    pub fn with_run_deadline(mut self, run_max: Duration) -> Self {
        self.run_max = run_max;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn set_token(&mut self, token: &str) {
        self.auth = Auth::Bearer(token.to_owned());
    }

    /// The bearer token to use now: the given one, or the device's access token, refreshed
    /// first if it is missing, expiring, or `force`d (the server said it is stale).
    async fn token(&self, replica: &mut Replica, force: bool) -> Result<String, ReplicaError> {
        let Auth::Bearer(t) = &self.auth else {
            let mut cred = replica.credential()?.ok_or(ReplicaError::NotEnrolled)?;
            if let Some(a) = &cred.access
                && !force
                && a.expires_at > unix_now() + ACCESS_MARGIN_SECONDS
            {
                return Ok(a.token.clone());
            }
            let access = self.refresh(replica.device(), &cred.refresh_token).await?;
            let token = access.token.clone();
            cred.access = Some(access);
            replica.save_credential(&cred)?;
            return Ok(token);
        };
        Ok(t.clone())
    }

    /// Exchange the refresh token for a new access token.
    /// Retried like any request: a sync that must refresh first fails no more often than
    /// one that need not.
    pub async fn refresh(
        &self,
        device: posync_model::DeviceId,
        refresh_token: &str,
    ) -> Result<AccessToken, ReplicaError> {
        let body = RefreshRequest { device, refresh_token: refresh_token.to_owned() };
        self.post_json_retrying(&format!("{}/v1/auth/token", self.base), &body).await
    }

    /// [`HttpSync::post_json`], retrying transient failures as the retry policy allows.
    async fn post_json_retrying<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, ReplicaError> {
        let mut attempt = 0u32;
        loop {
            match self.post_json(url, body).await {
                Err(e) if e.is_transient() && attempt < self.retry.retries => {
                    let overloaded = matches!(e, ReplicaError::Server { code: ErrorCode::Overloaded, .. });
                    tokio::time::sleep(self.retry.delay(attempt, overloaded, rand::random::<f64>())).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, ReplicaError> {
        let resp = self.client.post(url).json(body).send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_error(&e))?;
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ReplicaError::BadResponse(e.to_string()))
    }

    /// One request/response exchange with `token`. The caller decides what to do with the
    /// answer (the fault tests drop it on the floor).
    pub async fn exchange_with(
        &self,
        req: &SyncRequest,
        token: &str,
    ) -> Result<(SyncResponse, WireBytes), ReplicaError> {
        let enc = encode_body(req);
        let up = enc.bytes.len() as u64;
        let mut rb = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        if enc.gzip {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = rb.body(enc.bytes).send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let gzip = resp.headers().get(reqwest::header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"gzip");
        let body = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let wire = WireBytes { up, down: body.len() as u64 };
        if !status.is_success() {
            return Err(server_error(status, &body));
        }
        let raw = if gzip {
            gunzip_bounded(&body, RESPONSE_DECODED_BYTES_MAX).map_err(|e| ReplicaError::BadResponse(e.to_string()))?
        } else {
            body.to_vec()
        };
        let msg = decode_response(&raw).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
        Ok((msg, wire))
    }

    /// One exchange with a bearer client's own token (tests and tools).
    pub async fn exchange(&self, req: &SyncRequest) -> Result<(SyncResponse, WireBytes), ReplicaError> {
        match &self.auth {
            Auth::Bearer(t) => self.exchange_with(req, t).await,
            Auth::Device => Err(ReplicaError::NotEnrolled),
        }
    }

    /// Sync until the outbox is empty and the server has no more pages. One run at a time
    /// per replica: a second one at once returns [`ReplicaError::AlreadySyncing`].
    pub async fn sync(&self, replica: &mut Replica) -> Result<SyncReport, ReplicaError> {
        let _lock = replica.try_sync_lock()?.ok_or(ReplicaError::AlreadySyncing)?;
        self.sync_run(replica).await
    }

    async fn sync_run(&self, replica: &mut Replica) -> Result<SyncReport, ReplicaError> {
        let run_max = self.run_max;
        match tokio::time::timeout(run_max, self.sync_rounds(replica)).await {
            Ok(result) => result,
            // Whatever rounds completed are applied; the next run carries on from there.
            Err(_) => Err(ReplicaError::DeadlineExceeded(run_max)),
        }
    }

    async fn sync_rounds(&self, replica: &mut Replica) -> Result<SyncReport, ReplicaError> {
        // Old sessions go before the first request, which tells the server.
        let dropped_docs = replica.trim_window(self.today())?.dropped.len();
        let mut report = SyncReport { dropped_docs, ..SyncReport::default() };
        let mut resent_whole = std::collections::HashSet::<posync_model::DocId>::new();
        let mut recorded_again = std::collections::HashSet::<posync_model::DocId>::new();
        let mut token = self.token(replica, false).await?;
        let mut refreshed = false;
        let mut retries = 0u32;
        let mut plan = if self.adaptive { replica.link_budgets(&self.limits)? } else { RoundPlan::whole(&self.limits) };
        // After a push whose answer never came: ask what committed of exactly that push
        // (its documents and heads, no changes, no pull) before sending anything else.
        let mut pending_probe: Option<SyncRequest> = None;
        // Once a push and a pull together did not get through, push on their own until the
        // outbox is empty, then pull: a cut answer then never costs a re-upload.
        let mut push_apart = false;
        while report.rounds < ROUNDS_MAX {
            let probing = pending_probe.is_some();
            let req = match &pending_probe {
                Some(probe) => probe.clone(),
                None => {
                    let pull = !push_apart || replica.outbox()?.is_empty();
                    replica.prepare_round(&self.limits, &RoundPlan { pull, ..plan })?
                }
            };
            report.rounds += 1;
            let (resp, wire) = match self.exchange_with(&req, &token).await {
                Ok(ok) => ok,
                Err(e) if e.is_transient() && retries < self.retry.retries => {
                    let overloaded = matches!(e, ReplicaError::Server { code: ErrorCode::Overloaded, .. });
                    let mut shrank = false;
                    if self.adaptive && !overloaded {
                        let pushed: usize = req.push.iter().map(|p| p.changes.len()).sum();
                        if pushed > 0 {
                            pending_probe = Some(probe_of(&req));
                            push_apart |= req.pull != Some(false);
                        }
                        shrank = plan.shrink(pushed);
                        replica.save_link_budgets(&plan)?;
                    }
                    tokio::time::sleep(self.retry.delay(retries, overloaded, rand::random::<f64>())).await;
                    // Trying a smaller request is a new attempt, not a repeat of the failed one.
                    if !shrank {
                        retries += 1;
                    }
                    report.retries += 1;
                    continue;
                }
                Err(ReplicaError::Server { code: ErrorCode::Unauthenticated, .. })
                    if matches!(self.auth, Auth::Device) && !refreshed =>
                {
                    // Expired early, a clock off, a role changed: one refresh, then retry.
                    refreshed = true;
                    token = self.token(replica, true).await?;
                    continue;
                }
                Err(ReplicaError::Server { code: ErrorCode::MissingDependencies, doc: Some(doc), .. })
                    if doc.parse().is_ok_and(|d| resent_whole.insert(d)) =>
                {
                    // The server lacks what we thought it acknowledged: send that document whole.
                    replica.reset_server_heads(doc.parse().map_err(|_| ReplicaError::BadResponse("doc id".into()))?)?;
                    continue;
                }
                Err(ReplicaError::Server { code: ErrorCode::ActorSeqClash, doc: Some(doc), .. })
                    if doc.parse().is_ok_and(|d| recorded_again.insert(d)) =>
                {
                    // This file was restored or copied: our actor's sequence numbers were
                    // used twice. Record the unacknowledged edits again under a new actor.
                    let id = doc.parse().map_err(|_| ReplicaError::BadResponse("doc id".into()))?;
                    replica.record_again(id, unix_now())?;
                    tracing::warn!(%doc, "sequence clash: edits recorded again under a new actor");
                    continue;
                }
                Err(ReplicaError::Server { code, doc: Some(doc), .. })
                    if refuses_document(code) && req.push.iter().any(|p| p.doc.to_string() == doc) =>
                {
                    // One refused document must not hold back every other record on the phone.
                    let id = doc.parse().map_err(|_| ReplicaError::BadResponse("doc id".into()))?;
                    replica.quarantine(id, code.as_str())?;
                    tracing::warn!(%doc, %code, "server refused a document; kept on the device, not re-pushed");
                    report.rejected.push((doc, code.as_str().to_owned()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Progress: the next round gets the whole retry allowance again.
            retries = 0;
            if self.adaptive && !probing {
                let pushed: usize = req.push.iter().map(|p| p.changes.len()).sum();
                let pulled: usize = resp.docs.iter().map(|d| d.changes.len()).sum();
                plan.grow(&self.limits, pushed, pulled);
                replica.save_link_budgets(&plan)?;
            }
            pending_probe = None;
            report.bytes.up += wire.up;
            report.bytes.down += wire.down;
            report.pushed_docs += req.push.len();
            let applied = replica.apply_response(&resp)?;
            replica.dropped_reported(&req.dropped)?;
            report.pulled_docs += applied.pulled;
            report.cursor = applied.cursor;
            if let Some(progress) = &self.progress {
                progress(&report);
            }
            let outbox_left = !replica.outbox()?.is_empty() && !req.push.is_empty();
            if !applied.more && !outbox_left {
                return Ok(report);
            }
        }
        Err(ReplicaError::TooManyRounds(ROUNDS_MAX))
    }
}

/// The request that asks what committed of `req`'s push: the same documents and heads,
/// no changes, no pull (sent after a push whose answer never came).
pub fn probe_of(req: &SyncRequest) -> SyncRequest {
    SyncRequest {
        push: req.push.iter().map(|d| posync_proto::DocPush { changes: Vec::new(), ..d.clone() }).collect(),
        pull: Some(false),
        page_bytes_max: None,
        ..req.clone()
    }
}

fn server_error(status: reqwest::StatusCode, body: &[u8]) -> ReplicaError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ReplicaError::Server {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
            doc: e.error.doc,
        },
        Err(_) => ReplicaError::Server {
            status: status.as_u16(),
            code: ErrorCode::Internal,
            message: format!("HTTP {status} without an error body"),
            doc: None,
        },
    }
}

/// Enrol `replica` with the one-time `code` an admin gave its user: stores the device
/// credential in the replica. Needs the network once; every later sync refreshes by itself.
pub async fn enrol(
    server_url: &str,
    code: &str,
    label: &str,
    replica: &mut Replica,
) -> Result<EnrolResponse, ReplicaError> {
    enrol_via(&HttpSync::enrolled(server_url), code, label, replica).await
}

/// [`enrol`] through a configured client (a CA to trust, timeouts).
pub async fn enrol_via(
    client: &HttpSync,
    code: &str,
    label: &str,
    replica: &mut Replica,
) -> Result<EnrolResponse, ReplicaError> {
    let body = EnrolRequest { code: code.to_owned(), device: replica.device(), label: label.to_owned() };
    // Safe to retry with the same code: the server gives the same device a fresh credential
    // when an earlier answer was lost on the way back.
    let url = format!("{}/v1/auth/enrol", client.base);
    let resp: EnrolResponse =
        client.post_json_retrying(&url, &body).await.map_err(|e| ReplicaError::Enrolment(Box::new(e)))?;
    replica.save_credential(&Credential {
        user: resp.user.clone(),
        role: resp.role,
        refresh_token: resp.refresh_token.clone(),
        access: Some(resp.access.clone()),
    })?;
    Ok(resp)
}

/// Errors about one pushed document that retrying will not fix.
pub fn refuses_document(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Forbidden
            | ErrorCode::DocMismatch
            | ErrorCode::MalformedChanges
            | ErrorCode::HeadsMismatch
            | ErrorCode::ChangesTooLarge
            | ErrorCode::DocumentTooLarge
            | ErrorCode::ForeignAuthor
            | ErrorCode::IdCollision
            | ErrorCode::InvalidField
    )
}

impl Replica {
    /// Sync with `server_url` using bearer `token`. Safe to interrupt at any point.
    pub async fn sync(&mut self, server_url: &str, token: &str) -> Result<SyncReport, ReplicaError> {
        HttpSync::new(server_url, token).sync(self).await
    }

    /// Sync with the device credential stored by [`enrol`], refreshing access as needed.
    pub async fn sync_enrolled(&mut self, server_url: &str) -> Result<SyncReport, ReplicaError> {
        HttpSync::enrolled(server_url).sync(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_bounded() {
        let p = RetryPolicy::PHONE;
        assert_eq!(p.delay(0, false, 0.0), Duration::ZERO);
        assert_eq!(p.delay(0, false, 0.999_999), Duration::from_millis(499));
        assert_eq!(p.delay(3, false, 0.5), Duration::from_millis(2_000));
        assert_eq!(p.delay(30, false, 0.999_999), Duration::from_millis(29_999), "capped at max_ms");
        assert!(p.delay(0, true, 0.0) >= Duration::from_secs(1), "an overloaded server gets at least a second");
        assert!(
            p.delay(0, true, 0.9) > p.delay(0, true, 0.1),
            "phones refused together come back spread out, even on their first retry"
        );
        assert!(p.delay(30, true, 0.999_999) <= Duration::from_millis(30_000), "still capped at max_ms");
        let draws: std::collections::BTreeSet<Duration> = (0..10).map(|i| p.delay(4, false, i as f64 / 10.0)).collect();
        assert_eq!(draws.len(), 10, "jitter spreads phones out");
    }
}
