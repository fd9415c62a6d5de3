//! The posync sync server: axum routes over a [`Store`], bearer-token authentication, scope
//! checks on every document, one mapping from errors to HTTP.
//!
//! [`SyncService`] is the whole sync decision without HTTP: the axum handler decodes, calls it,
//! encodes. Tests and the deterministic simulation call it directly.

pub mod admin;
pub mod auth;
pub mod conflicts;
mod error;
pub mod metrics;
pub mod ratelimit;
pub mod reports;
mod routes;
mod sync;

pub use admin::{AdminCaller, AdminService, IssuedCode};
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
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish in-flight requests, and return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Bind `addr` (port 0 for an ephemeral port) and serve in the background.
pub async fn spawn(
    addr: SocketAddr,
    store: Arc<dyn Store>,
    keys: TokenKeys,
    limits: Limits,
    clock: Clock,
) -> std::io::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(AppState::new(store, keys, limits, clock));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(RunningServer { addr, shutdown: Some(tx), task })
}
