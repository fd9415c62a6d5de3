//! The posync sync server: axum routes over a [`Store`], bearer-token authentication, scope
//! checks on every document, one mapping from errors to HTTP.
//!
//! [`SyncService`] is the whole sync decision without HTTP: the axum handler decodes, calls it,
//! encodes. Tests and the deterministic simulation call it directly.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod charts;
pub mod conflicts;
mod error;
pub mod export_csv;
pub mod fhir;
pub mod metrics;
pub mod people;
pub mod pin;
pub mod ratelimit;
pub mod reports;
mod routes;
mod sync;

pub use admin::{AdminCaller, AdminService, IssuedApiKey, IssuedCode};
pub use auth::{Claims, Principal, TokenKeys, TokenSubject};
pub use error::ApiError;
pub use routes::{AppState, parse_hierarchy, router};
pub use sync::SyncService;

use posync_proto::Limits;
use posync_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// A clock in unix seconds; injected so simulations control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// A server running on a background task.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stop accepting, finish in-flight requests, and return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Bind `addr` (port 0 for an ephemeral port) and serve plain HTTP in the background.
pub async fn spawn(
    addr: SocketAddr,
    store: Arc<dyn Store>,
    keys: TokenKeys,
    limits: Limits,
    clock: Clock,
) -> std::io::Result<RunningServer> {
    spawn_with_tls(addr, store, keys, limits, clock, None).await
}

/// A certificate chain and its private key, PEM files, for serving HTTPS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// [`spawn`], terminating TLS itself (rustls) when `tls` is given.
pub async fn spawn_with_tls(
    addr: SocketAddr,
    store: Arc<dyn Store>,
    keys: TokenKeys,
    limits: Limits,
    clock: Clock,
    tls: Option<TlsFiles>,
) -> std::io::Result<RunningServer> {
    let app = router(AppState::new(store, keys, limits, clock)).into_make_service_with_connect_info::<SocketAddr>();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let Some(tls) = tls else {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        return Ok(RunningServer { addr, scheme: "http", shutdown: Some(tx), task });
    };
    // ring is the one crypto provider built in; a second install (another server in the
    // same process) is refused harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await.map_err(|e| {
        std::io::Error::other(format!("TLS certificate or key ({}, {}): {e}", tls.cert.display(), tls.key.display()))
    })?;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = rx.await;
        // Stop accepting; connections finish their requests in flight.
        stopper.graceful_shutdown(None);
    });
    let task =
        tokio::spawn(async move { axum_server::from_tcp_rustls(listener, config).handle(handle).serve(app).await });
    Ok(RunningServer { addr, scheme: "https", shutdown: Some(tx), task })
}
