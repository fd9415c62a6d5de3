//! The SDK through its generated Python bindings, as an app would use it: the bindings are
//! generated from the built library by `uniffi-bindgen`, and two "apps" (`two_apps.py`) enrol,
//! capture offline, sync with progress, pull, and conflict, against a real server on 127.0.0.1.

use posync_testkit::{console, district_server};
use std::path::PathBuf;
use std::process::Command;

/// The SDK's shared library as `cargo test` built it: beside this test's executable in
/// `target/<profile>/deps/` (only `cargo build` copies it up to `target/<profile>/`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let deps = exe.parent().expect("deps dir");
    let name = format!("{}posync_sdk{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let lib = deps.join(&name);
    assert!(lib.exists(), "the SDK's cdylib is built with the tests: {}", lib.display());
    lib
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_python_apps_enrol_capture_sync_and_conflict_through_the_bindings() {
    let dir = tempfile::tempdir().expect("dir");
    let bindings = dir.path().join("bindings");
    let generated = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .args(["generate", "--library"])
        .arg(library())
        .args(["--language", "python", "--out-dir"])
        .arg(&bindings)
        .output()
        .expect("run uniffi-bindgen");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    std::fs::copy(library(), bindings.join(library().file_name().expect("name"))).expect("copy the library");

    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let code = |user: &'static str| {
        let admin = &admin;
        let now = server.clock.now();
        async move { admin.issue_enrolment(&console(), user.parse().expect("user"), now).await.expect("code").code }
    };
    let (a, b) = (code("kader-0001").await, code("kader-0002").await);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/two_apps.py");
    let (url, work) = (server.url(), dir.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(&bindings).args([&url, &a, &b]).arg(&work).output()
    })
    .await
    .expect("join")
    .expect("run python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok"), "the Python apps failed:\n{stdout}\n{stderr}");
    server.stop().await;
}
