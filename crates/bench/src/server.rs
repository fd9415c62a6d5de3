//! The server under test: `posync serve` as a child process on 127.0.0.1, killed when the
//! guard drops (normal end, error, deadline or Ctrl-C), and probes of its process and file.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// How long the child may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server stores into.
#[derive(Clone, Debug)]
pub enum Target {
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

/// A running `posync serve`. Dropping it kills the child and reaps it.
pub struct ServerProcess {
    child: Child,
    url: String,
    target: Target,
    log: PathBuf,
    // Held so the child's stdout stays open for the whole run.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's stdin is closed, stdout is read for the listening line, stderr (its logs) goes
/// to `log`.
pub async fn start(bin: &Path, target: &Target, log: &Path, keys: &Path) -> Result<ServerProcess> {
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(bin);
    command.arg("serve");
    match target {
        Target::Sqlite(db) => command.arg("--db").arg(db),
        Target::Postgres(url) => command.args(["--database-url", url]),
    };
    let mut child = command
        .args(["--addr", "127.0.0.1:0", "--keys"])
        .arg(keys)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take();
    // From here on the guard owns the child: every early return kills it.
    let mut guard = PendingServer { child: Some(child) };
    let stdout = stdout.context("child stdout was not piped")?;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(BufReader<ChildStdout>, String)> {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok((reader, line))
    });
    let (reader, line) = match tokio::time::timeout(START_TIMEOUT, read).await {
        Ok(joined) => joined.context("reading the server's stdout")?.context("reading the server's stdout")?,
        Err(_) => {
            bail!("server printed nothing in {START_TIMEOUT:?}; log tail:\n{}", log_tail(log, 20))
        }
    };
    let Some(url) = parse_listening(&line) else {
        bail!("server did not print its listening line (got {line:?}); log tail:\n{}", log_tail(log, 20));
    };
    let child = guard.child.take().context("server child")?;
    Ok(ServerProcess { child, url, target: target.clone(), log: log.to_path_buf(), _stdout: reader })
}

/// Kills a child that has not finished starting.
struct PendingServer {
    child: Option<Child>,
}

impl Drop for PendingServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `posync listening on http://127.0.0.1:PORT (db PATH)` → the URL, loopback only.
pub fn parse_listening(line: &str) -> Option<String> {
    let url = line.trim().strip_prefix("posync listening on ")?.split_whitespace().next()?;
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(url.to_owned())
}

impl ServerProcess {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has exited, with the tail of its log.
    pub fn ensure_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("server exited ({status}); log tail:\n{}", log_tail(&self.log, 20));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Peak resident set of the child so far (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        parse_status_kib(&status, "VmHWM:").context("no VmHWM in /proc/<pid>/status")
    }

    /// CPU time (user + system, all threads) the child has used so far, seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// `SELECT COUNT(*) FROM visits` on the server's file, opened read-only.
    pub fn visits_at_server(&self) -> Result<u64> {
        let Target::Sqlite(db) = &self.target else { bail!("visits_at_server reads a SQLite file") };
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("opening {} read-only", db.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM visits", [], |r| r.get(0))?;
        Ok(u64::try_from(n)?)
    }
}

pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process from its `stat` file, seconds.
pub fn proc_cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    let ticks = parse_stat_ticks(&stat).with_context(|| format!("parsing {stat_path}"))?;
    Ok(ticks as f64 / clk_tck())
}

/// Fields 14 and 15 (utime, stime) of `/proc/<pid>/stat`; the command name may hold spaces,
/// so count from the closing parenthesis.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let all: Vec<&str> = s.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// CPU seconds (user + system) of every process named `postgres` on this machine: the
/// database server's share of a run against PostgreSQL (the benchmark is its only client).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(|e| proc_cpu_seconds(&e.path().join("stat").to_string_lossy()).ok())
        .sum()
}

/// A code for `user`, from the server's console.
pub fn enrolment_code(bin: &Path, db: &Path, user: &str) -> Result<String> {
    let out = Command::new(bin)
        .args(["admin", "--db"])
        .arg(db)
        .args(["enrol", user])
        .output()
        .context("posync admin enrol")?;
    if !out.status.success() {
        bail!("admin enrol {user}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("enrol output")?;
    Ok(v["code"].as_str().context("code in the enrol output")?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed_and_loopback_only() {
        assert_eq!(
            parse_listening("posync listening on http://127.0.0.1:40123 (db /tmp/x/server.sqlite)\n").as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(parse_listening("posync listening on http://0.0.0.0:40123 (db x)"), None);
        assert_eq!(parse_listening("posync listening on http://127.0.0.1:0 (db x)"), None);
        assert_eq!(parse_listening(""), None);
    }

    #[test]
    fn proc_files_are_parsed() {
        let status = "Name:\tposync\nVmPeak:\t  100 kB\nVmHWM:\t   52340 kB\nVmRSS:\t 50000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(52_340));
        let stat = "1234 (posync serve) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat_ticks(stat), Some(281));
    }
}
