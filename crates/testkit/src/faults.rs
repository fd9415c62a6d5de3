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
    /// The server gets the first `n` bytes of the request, then the connection is cut (a
    /// link that drops after a few KB of upload).
    CutRequestAfter(usize),
    /// The server commits and answers; the phone gets the first `n` bytes of the answer.
    CutResponseAfter(usize),
    /// Nothing is forwarded and nothing answered for `ms` milliseconds, then the connection
    /// closes: a request never answered.
    Stall(u64),
}

/// A slow, lossy link: every request and answer goes through it.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Bytes per second each way (0: unlimited).
    pub bytes_per_second: u64,
    /// Added once each way.
    pub latency_ms: u64,
    /// A connection drops after this many bytes in either direction (0: never).
    pub drop_after_bytes: usize,
    /// Probability that a request is lost outright.
    pub loss_rate: f64,
}

/// How the proxy picks each request's fate.
enum Policy {
    Random {
        rate: f64,
        rng: StdRng,
    },
    /// The i-th request meets the i-th fault, then everything passes.
    Script(std::collections::VecDeque<Fault>),
    Link {
        link: Link,
        rng: StdRng,
    },
}

/// What the proxy does with one request: a fault, and the link's pacing.
#[derive(Clone, Copy, Debug)]
struct Fate {
    fault: Fault,
    pace: Option<Link>,
}

/// Counts of what the proxy did, for the test's report.
#[derive(Default, Debug)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub faulted: AtomicU64,
    /// Request bytes that reached the proxy (what the phone spent on the link up).
    pub bytes_up: AtomicU64,
    /// Answer bytes the proxy passed back (what the phone spent on the link down).
    pub bytes_down: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxy to `upstream`, faulting each request with probability `rate` (seeded).
    pub async fn start(upstream: SocketAddr, rate: f64, seed: u64) -> std::io::Result<Self> {
        Self::with_policy(upstream, Policy::Random { rate, rng: StdRng::seed_from_u64(seed) }).await
    }

    /// Proxy to `upstream`, the n-th request meeting `script[n]`, every later one passing.
    pub async fn scripted(upstream: SocketAddr, script: Vec<Fault>) -> std::io::Result<Self> {
        Self::with_policy(upstream, Policy::Script(script.into())).await
    }

    /// Proxy to `upstream` through a slow, lossy `link` (seeded).
    pub async fn link(upstream: SocketAddr, link: Link, seed: u64) -> std::io::Result<Self> {
        Self::with_policy(upstream, Policy::Link { link, rng: StdRng::seed_from_u64(seed) }).await
    }

    async fn with_policy(upstream: SocketAddr, policy: Policy) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let policy = Arc::new(Mutex::new(policy));
        let counts = Arc::new(FaultCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fate = decide(&policy);
                c.requests.fetch_add(1, Ordering::Relaxed);
                if fate.fault != Fault::Pass {
                    c.faulted.fetch_add(1, Ordering::Relaxed);
                }
                let counts = c.clone();
                tokio::spawn(async move {
                    let _ = handle(client, upstream, fate, &counts).await;
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

fn decide(policy: &Mutex<Policy>) -> Fate {
    let Ok(mut p) = policy.lock() else { return Fate { fault: Fault::Pass, pace: None } };
    match &mut *p {
        Policy::Random { rate, rng } => Fate { fault: pick(rng, *rate), pace: None },
        Policy::Script(script) => Fate { fault: script.pop_front().unwrap_or(Fault::Pass), pace: None },
        Policy::Link { link, rng } => {
            let fault = if rng.random_bool(link.loss_rate.clamp(0.0, 1.0)) { Fault::DropRequest } else { Fault::Pass };
            Fate { fault, pace: Some(*link) }
        }
    }
}

fn pick(r: &mut StdRng, rate: f64) -> Fault {
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

/// Wait as long as `bytes` take on the link.
async fn pace(link: Option<Link>, bytes: usize) {
    let Some(l) = link else { return };
    let transfer = (bytes as u64 * 1000).checked_div(l.bytes_per_second).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(l.latency_ms + transfer)).await;
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, fate: Fate, counts: &FaultCounts) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    counts.bytes_up.fetch_add(request.len() as u64, Ordering::Relaxed);
    let mut fault = fate.fault;
    if let Some(l) = fate.pace
        && l.drop_after_bytes > 0
        && request.len() > l.drop_after_bytes
    {
        fault = Fault::CutRequestAfter(l.drop_after_bytes);
    }
    pace(fate.pace, request.len().min(fate.pace.map_or(usize::MAX, |l| l.drop_after_bytes.max(1)))).await;
    let response = match fault {
        Fault::DropRequest => return Ok(()),
        Fault::Stall(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Ok(());
        }
        Fault::CutRequestAfter(n) => {
            let mut server = TcpStream::connect(upstream).await?;
            server.write_all(&request[..n.min(request.len())]).await?;
            server.shutdown().await?;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut sink)).await;
            return Ok(());
        }
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
    if let Some(l) = fate.pace
        && l.drop_after_bytes > 0
        && response.len() > l.drop_after_bytes
    {
        fault = Fault::CutResponseAfter(l.drop_after_bytes);
    }
    let sent = match fault {
        Fault::DropResponse => 0,
        Fault::TruncateResponse => response.len() / 2,
        Fault::CutResponseAfter(n) => n.min(response.len()),
        _ => response.len(),
    };
    pace(fate.pace, sent).await;
    counts.bytes_down.fetch_add(sent as u64, Ordering::Relaxed);
    if sent > 0 {
        client.write_all(&response[..sent]).await?;
    }
    client.shutdown().await
}
