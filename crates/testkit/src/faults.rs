//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for scenario tests: between phones and the
//! server it drops, truncates, delays and duplicates requests, and drops or cuts responses
//! mid-body, each with a seeded probability. One request per connection (it answers with
//! `Connection: close`), so every request meets its own fate.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Closed before reaching the server.
    DropRequest,
    /// The server gets half the body, then the connection closes.
    TruncateRequest,
    /// Delivered late.
    Delay(u64),
    /// Delivered twice (a retry by some middlebox); the phone sees the second answer.
    Duplicate,
    /// The server commits and answers; the answer never arrives.
    DropResponse,
    /// Half the answer arrives, then the connection is cut.
    TruncateResponse,
}

/// Counts of what the proxy did, for the test's report.
#[derive(Default, Debug)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub faulted: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxy to `upstream`, faulting each request with probability `rate` (seeded).
    pub async fn start(upstream: SocketAddr, rate: f64, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let counts = Arc::new(FaultCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = pick(&rng, rate);
                c.requests.fetch_add(1, Ordering::Relaxed);
                if fault != Fault::Pass {
                    c.faulted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::spawn(async move {
                    let _ = handle(client, upstream, fault).await;
                });
            }
        });
        Ok(Self { addr, counts, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pick(rng: &Mutex<StdRng>, rate: f64) -> Fault {
    let Ok(mut r) = rng.lock() else { return Fault::Pass };
    if !r.random_bool(rate.clamp(0.0, 1.0)) {
        return Fault::Pass;
    }
    match r.random_range(0..6) {
        0 => Fault::DropRequest,
        1 => Fault::TruncateRequest,
        2 => Fault::Delay(r.random_range(10..200)),
        3 => Fault::Duplicate,
        4 => Fault::DropResponse,
        _ => Fault::TruncateResponse,
    }
}

/// Largest request the proxy buffers (sync bodies in these tests are far smaller).
const REQUEST_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Read one HTTP/1.1 request: head and a Content-Length body. Rewrites the head to ask the
/// server to close the connection after answering.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > REQUEST_BYTES_MAX {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut lines: Vec<&str> =
        head.trim_end().split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("Connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&buf[head_end..head_end + len]);
    Ok(out)
}

async fn forward(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(request).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    Ok(response)
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, fault: Fault) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let response = match fault {
        Fault::DropRequest => return Ok(()),
        Fault::TruncateRequest => {
            let mut server = TcpStream::connect(upstream).await?;
            server.write_all(&request[..request.len() / 2]).await?;
            server.shutdown().await?;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut sink)).await;
            return Ok(());
        }
        Fault::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            forward(upstream, &request).await?
        }
        Fault::Duplicate => {
            forward(upstream, &request).await?;
            forward(upstream, &request).await?
        }
        _ => forward(upstream, &request).await?,
    };
    match fault {
        Fault::DropResponse => Ok(()),
        Fault::TruncateResponse => {
            client.write_all(&response[..response.len() / 2]).await?;
            client.shutdown().await
        }
        _ => {
            client.write_all(&response).await?;
            client.shutdown().await
        }
    }
}
