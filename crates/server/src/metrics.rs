//! Prometheus metrics, in the text exposition format at `GET /metrics`: counters kept with
//! atomics (no record contents, no per-device labels: cardinality stays bounded).

use posync_proto::ErrorCode;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the store latency histogram buckets.
const STORE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
const CODES: usize = 24;

#[derive(Default)]
pub struct Metrics {
    pub syncs: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub docs_pushed: AtomicU64,
    pub docs_pulled: AtomicU64,
    pub overloaded: AtomicU64,
    pub conflicts_resolved: AtomicU64,
    errors: [AtomicU64; CODES],
    store_buckets: [AtomicU64; STORE_BUCKETS.len()],
    store_count: AtomicU64,
    store_micros: AtomicU64,
}

/// Every code the server can answer with, for stable label order.
const ALL_CODES: [ErrorCode; 20] = [
    ErrorCode::MalformedBody,
    ErrorCode::UnsupportedProtocolVersion,
    ErrorCode::BodyTooLarge,
    ErrorCode::UnsupportedEncoding,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::BatchTooLarge,
    ErrorCode::MalformedChanges,
    ErrorCode::MissingDependencies,
    ErrorCode::HeadsMismatch,
    ErrorCode::DocMismatch,
    ErrorCode::Unauthenticated,
    ErrorCode::InvalidCredential,
    ErrorCode::DeviceRevoked,
    ErrorCode::InvalidRequest,
    ErrorCode::Forbidden,
    ErrorCode::DeviceMismatch,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Overloaded,
    ErrorCode::Internal,
];

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ALL_CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn store_latency(&self, seconds: f64) {
        for (i, le) in STORE_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.store_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.store_count.fetch_add(1, Ordering::Relaxed);
        self.store_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("posync_syncs_total", "Sync requests answered successfully.", g(&self.syncs));
        counter("posync_sync_bytes_received_total", "Sync request body bytes on the wire.", g(&self.bytes_in));
        counter("posync_sync_bytes_sent_total", "Sync response body bytes on the wire.", g(&self.bytes_out));
        counter("posync_docs_pushed_total", "Documents merged from pushes.", g(&self.docs_pushed));
        counter("posync_docs_pulled_total", "Documents sent in pulled pages.", g(&self.docs_pulled));
        counter("posync_overloaded_total", "Syncs refused with 503 because the server was busy.", g(&self.overloaded));
        counter("posync_conflicts_resolved_total", "Conflicts resolved by a person.", g(&self.conflicts_resolved));
        let _ = writeln!(
            out,
            "# HELP posync_errors_total Error answers by stable code.\n# TYPE posync_errors_total counter"
        );
        for (i, code) in ALL_CODES.iter().enumerate() {
            let _ = writeln!(out, "posync_errors_total{{code=\"{code}\"}} {}", g(&self.errors[i]));
        }
        let _ = writeln!(
            out,
            "# HELP posync_store_seconds Latency of store calls made by syncs.\n# TYPE posync_store_seconds histogram"
        );
        for (i, le) in STORE_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "posync_store_seconds_bucket{{le=\"{le}\"}} {}", g(&self.store_buckets[i]));
        }
        let _ = writeln!(out, "posync_store_seconds_bucket{{le=\"+Inf\"}} {}", g(&self.store_count));
        let _ = writeln!(out, "posync_store_seconds_sum {}", g(&self.store_micros) as f64 / 1e6);
        let _ = writeln!(out, "posync_store_seconds_count {}", g(&self.store_count));
        render_process(&mut out);
        out
    }
}

/// Build info and the process's own series, in the names Prometheus' client libraries use
/// (`process_*`), read from `/proc/self` (Linux; elsewhere only what is portable).
fn render_process(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP posync_build_info The running build.\n# TYPE posync_build_info gauge\n\
         posync_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        posync_proto::PROTOCOL_VERSION
    );
    let mut gauge = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge("process_start_time_seconds", "Start time of the process, Unix seconds.", started_at() as f64);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<f64> {
        status.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()
    };
    if let Some(rss) = kib("VmRSS:") {
        gauge("process_resident_memory_bytes", "Resident memory size, bytes.", rss * 1024.0);
    }
    if let Some(peak) = kib("VmHWM:") {
        gauge("posync_process_peak_resident_memory_bytes", "Peak resident memory size, bytes.", peak * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge("process_open_fds", "Open file descriptors.", fds.count() as f64);
    }
    if let Some(cpu) = cpu_seconds() {
        gauge("process_cpu_seconds_total", "User and system CPU time spent, seconds.", cpu);
    }
}

/// Unix seconds when the metrics were first used (the server's start, near enough).
fn started_at() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// utime + stime of `/proc/self/stat`, at the kernel's 100 ticks a second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The process's metrics. One server per process in production; tests compare deltas.
pub fn global() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    started_at();
    M.get_or_init(Metrics::default)
}
