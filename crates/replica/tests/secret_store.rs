//! A device credential kept in the app's secret store instead of the replica file: an app that
//! adopts a store moves the credential it already has out of the file, and the file's bytes
//! (main file and write-ahead log) no longer hold the refresh token.

use posync_replica::{Credential, Replica, SecretStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Vault(Arc<Mutex<HashMap<String, String>>>);

impl SecretStore for Vault {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn put(&self, key: &str, value: &str) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}

fn file_holds(path: &std::path::Path, needle: &str) -> bool {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_credential_in_the_file_moves_to_the_secret_store_and_leaves_no_trace_in_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let token = "psr_refresh-token-that-must-not-stay-in-the-file";
    let credential = Credential {
        user: "kader-0001".parse().expect("user"),
        role: posync_model::Role::Kader,
        refresh_token: token.to_owned(),
        access: None,
    };
    let mut replica = Replica::open(&path).expect("open");
    replica.save_credential(&credential).expect("save");
    replica.checkpoint().expect("checkpoint");
    assert!(file_holds(&path, token), "the setup keeps it in the file first");

    let vault = Vault::default();
    replica.use_secret_store(Box::new(vault.clone())).expect("adopt the store");
    assert_eq!(replica.credential().expect("read").map(|c| c.refresh_token), Some(token.to_owned()));
    assert!(vault.get("posync.credential").is_some_and(|v| v.contains(token)));
    assert!(!file_holds(&path, token), "the refresh token left the replica file");
    drop(replica);
    let reopened = Replica::open(&path).expect("reopen");
    assert!(reopened.credential().expect("read").is_none(), "the file alone is not enrolled");
}
