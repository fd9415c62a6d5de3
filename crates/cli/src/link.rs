//! Reaching the server from a phone or tablet: the URL, trust, and errors a person can act on.

use crate::progress::{Progress, bytes_id};
use anyhow::{Context, Result, bail};
use posync_replica::{Replica, SyncReport};
use std::path::{Path, PathBuf};

/// A transport or enrolment failure a person can act on: say what to do about it.
pub fn hint(e: posync_replica::ReplicaError) -> anyhow::Error {
    if let posync_replica::ReplicaError::Network(reason) = &e
        && reason.to_lowercase().contains("connection refused")
    {
        let hint = "nothing answers at that address: is the server running, and are the host and port right?";
        return anyhow::Error::new(e).context(hint);
    }
    if let posync_replica::ReplicaError::Enrolment(inner) = &e
        && let posync_replica::ReplicaError::Server { code: posync_proto::ErrorCode::InvalidCredential, .. } = &**inner
    {
        let hint = "the enrolment code is unknown, already used by another phone, or expired: \
                    ask your puskesmas or district admin for a new one (posync admin enrol USER)";
        return anyhow::Error::new(e).context(hint);
    }
    let tls = match &e {
        posync_replica::ReplicaError::Tls(_) => true,
        posync_replica::ReplicaError::Enrolment(inner) => matches!(**inner, posync_replica::ReplicaError::Tls(_)),
        _ => false,
    };
    let hint = "the server's certificate is not trusted here: if the server uses its own CA (a puskesmas \
                server), give that CA's certificate with --ca-file FILE";
    if tls { anyhow::Error::new(e).context(hint) } else { anyhow::Error::new(e) }
}

/// The server URL as given, if it is one a phone can reach: `http://` or `https://`, a host.
pub fn server_url(url: &str) -> Result<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url),
        _ => bail!(
            "the server URL {url:?} must start with http:// or https:// and name a host, \
             e.g. --server http://192.168.1.10:8080 or --server https://puskesmas.example"
        ),
    }
}

/// `client`, also trusting the CA certificates of `ca_file` when given.
pub fn with_ca(client: posync_replica::HttpSync, ca_file: Option<&Path>) -> Result<posync_replica::HttpSync> {
    let Some(path) = ca_file else { return Ok(client) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
    Ok(client.with_ca_pem(&pem)?)
}

pub async fn sync_replica(
    replica: &Path,
    server: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    let mut r = Replica::open(replica)?;
    // --server (or POSYNC_SERVER), else the server this phone enrolled with.
    let server = match server {
        Some(s) => s,
        None => r.server_url()?.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
    };
    let server = server_url(&server)?;
    let client = match token {
        Some(t) => posync_replica::HttpSync::new(server, &t),
        None => posync_replica::HttpSync::enrolled(server),
    };
    let shown = Progress::spinner("Sinkronisasi / syncing");
    let ticker = shown.clone();
    let client = with_ca(client, ca_file.as_deref())?.with_progress(std::sync::Arc::new(move |r: &SyncReport| {
        ticker.say(summary(r));
    }));
    let report = client.sync(&mut r).await.map_err(hint)?;
    shown.done(summary(&report));
    out!("{}", serde_json::to_string(&report)?);
    if !report.rejected.is_empty() {
        let which: Vec<String> = report.rejected.iter().map(|(doc, code)| format!("{doc} ({code})")).collect();
        bail!(
            "the server refused {} document(s): {}. They stay on this phone and are not sent again; \
             show this to your puskesmas or district admin",
            which.len(),
            which.join(", ")
        );
    }
    Ok(())
}

/// A sync so far, as the progress line says it.
fn summary(r: &SyncReport) -> String {
    format!(
        "Sinkronisasi: {} dokumen dikirim, {} diterima ({} terkirim, {} diterima)",
        r.pushed_docs,
        r.pulled_docs,
        bytes_id(r.bytes.up),
        bytes_id(r.bytes.down)
    )
}
