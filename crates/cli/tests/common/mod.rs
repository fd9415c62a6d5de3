#![allow(dead_code)] // each test binary uses a part of this helper
//! The real `posync serve` as a child process on an ephemeral loopback port, shared by the
//! binary's tests.

use posync_model::{DeviceId, PosyanduId, Role};
use posync_server::TokenKeys;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running server. Dropping it kills the child (SIGKILL: no graceful shutdown, no flush).
pub struct Instance {
    child: Child,
    pub url: String,
}

impl Instance {
    /// The server process's id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size of the server process so far, in bytes (Linux `VmHWM`).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status");
        kb * 1024
    }
}

impl Instance {
    /// Send `signal` (`TERM`, `INT`) and wait for the server to exit, at most `within`.
    pub fn signal_and_wait(mut self, signal: &str, within: std::time::Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(sent.success(), "kill -{signal} {}", self.pid());
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not exit within {within:?} of SIG{signal}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `posync serve --addr 127.0.0.1:0 <args>`, once it prints its listening line.
pub fn serve<I, S>(args: I) -> Instance
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    serve_with_stderr(args, Stdio::null())
}

/// [`serve`], its log (stderr) written to `log`.
pub fn serve_logged<I, S>(args: I, log: &std::path::Path) -> Instance
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    serve_with_stderr(args, Stdio::from(std::fs::File::create(log).expect("log file")))
}

fn serve_with_stderr<I, S>(args: I, stderr: Stdio) -> Instance
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    // POSYNC_BIN runs these tests against another build (an older commit, to show a
    // regression test failing before its fix).
    let bin = std::env::var_os("POSYNC_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_posync").into());
    let mut child = Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start posync serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let url = line.split_whitespace().nth(3).expect("url in the listening line").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"), "{line}");
    Instance { child, url }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A server's files in a test directory: its SQLite store (created) and signing keyset.
pub struct Site {
    pub db: PathBuf,
    pub keys_path: PathBuf,
    pub keys: TokenKeys,
}

impl Site {
    pub fn new(dir: &Path) -> Self {
        let (db, keys_path) = (dir.join("server.sqlite"), dir.join("server.sqlite.keys.json"));
        let keys = TokenKeys::generate(now());
        keys.save(&keys_path).expect("keys");
        drop(posync_store::SqliteStore::open(&db).expect("store"));
        Self { db, keys_path, keys }
    }

    /// Give `device` a user with `role` over `posyandu`; its access token.
    pub fn grant(&self, device: DeviceId, role: Role, posyandu: &[PosyanduId]) -> String {
        let store = posync_store::SqliteStore::open(&self.db).expect("store");
        posync_testkit::grant(&store, device, role, posyandu, now());
        self.keys.issue(&posync_testkit::user_for(device), device, role, now(), 3600).token
    }

    /// `posync serve` on this store and keyset, with `extra` arguments.
    pub fn serve(&self, extra: &[&OsStr]) -> Instance {
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("--db"), self.db.as_os_str(), OsStr::new("--keys"), self.keys_path.as_os_str()];
        args.extend_from_slice(extra);
        serve(args)
    }

    /// [`Site::serve`], its log written to `log`.
    pub fn serve_logged(&self, extra: &[&OsStr], log: &Path) -> Instance {
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("--db"), self.db.as_os_str(), OsStr::new("--keys"), self.keys_path.as_os_str()];
        args.extend_from_slice(extra);
        serve_logged(args, log)
    }
}

/// `posync ARGS` run in `dir`, without POSYNC_* settings from the caller's environment.
pub fn posync_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let bin = std::env::var_os("POSYNC_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_posync").into());
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POSYNC_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).args(args).stdin(Stdio::null()).output().expect("run posync")
}

/// [`posync_in`], which must succeed; its stdout.
pub fn posync_ok(dir: &Path, args: &[&str]) -> String {
    let out = posync_in(dir, args);
    assert!(
        out.status.success(),
        "posync {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The shipped district fixture (Kota Banjar: 40 posyandu, 308 users) imported into
/// `posync.sqlite` in a directory, its server running.
pub struct District {
    pub dir: tempfile::TempDir,
    pub server: Instance,
}

impl District {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/district-kota-banjar.json");
        posync_ok(dir.path(), &["admin", "--create", "--db", "posync.sqlite", "import", fixture]);
        let server = serve([OsStr::new("--db"), dir.path().join("posync.sqlite").as_os_str()]);
        Self { dir, server }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `posync ARGS` in the district's directory; must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        posync_ok(self.path(), args)
    }

    /// `posync ARGS` in the district's directory, as it went.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        posync_in(self.path(), args)
    }

    /// A phone (`replica`, in the directory) enrolled as `user` with a fresh code.
    pub fn enrol(&self, user: &str, replica: &str) {
        let issued: serde_json::Value =
            serde_json::from_str(&self.ok(&["admin", "--db", "posync.sqlite", "enrol", user])).expect("code json");
        let code = issued["code"].as_str().expect("code");
        self.ok(&["kader", "enrol", "--replica", replica, "--server", &self.server.url, "--code", code]);
    }
}
