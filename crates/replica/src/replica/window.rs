//! The window a phone keeps (a device budget): the registries, and the sessions of the
//! current month and the `months` before it. Older sessions that hold nothing the server has
//! not acknowledged are dropped from the device; the next request names them
//! (`SyncRequest::dropped`) so the server forgets that the device holds them, and a later
//! change to one arrives whole. A dropped session comes back on demand
//! ([`HttpSync::fetch`](crate::HttpSync::fetch)). Nothing unsynced is ever dropped.

use super::*;

/// What [`Replica::trim_window`] dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Sessions dropped from the device, oldest first.
    pub dropped: Vec<DocId>,
    /// Sessions older than the window kept because they hold what the server has not
    /// acknowledged (or refused): they go when they are synced.
    pub kept_unsynced: usize,
}

/// The first day of the oldest month the window keeps.
pub fn window_start(today: time::Date, months: u32) -> time::Date {
    let mut month = posync_model::report::Month::of(today);
    for _ in 0..months.min(1200) {
        month = month.previous();
    }
    month.first_day()
}

impl Replica {
    /// Keep the sessions of the current month and the `months` before it (`None`: keep
    /// every document, the default). Applied by [`Replica::trim_window`], which a sync runs
    /// first.
    pub fn set_window_months(&self, months: Option<u32>) -> Result<(), ReplicaError> {
        match months {
            Some(m) => meta_set(&self.conn, "window_months", &m.to_string()),
            None => {
                self.conn.execute("DELETE FROM meta WHERE key = 'window_months'", [])?;
                Ok(())
            }
        }
    }

    pub fn window_months(&self) -> Result<Option<u32>, ReplicaError> {
        Ok(meta_get(&self.conn, "window_months")?.and_then(|m| m.parse().ok()))
    }

    /// Drop the sessions dated before the window (as of `today`, the phone's date) that hold
    /// nothing unsynced: not in the outbox, not refused, not a partial piece, their heads
    /// the server's. The registries always stay. Does nothing without a window.
    pub fn trim_window(&mut self, today: time::Date) -> Result<Trimmed, ReplicaError> {
        let Some(months) = self.window_months()? else { return Ok(Trimmed::default()) };
        let start = window_start(today, months);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut trimmed = Trimmed::default();
        for (id, date, synced) in old_sessions(&tx)? {
            if date.is_none_or(|d| d >= start) {
                continue;
            }
            if !synced {
                trimmed.kept_unsynced += 1;
                continue;
            }
            let doc = id.to_string();
            tx.execute("DELETE FROM visits WHERE doc_id = ?1", [&doc])?;
            tx.execute("DELETE FROM docs WHERE doc_id = ?1", [&doc])?;
            stored::drop_chunks(&tx, &doc)?;
            tx.execute("INSERT OR IGNORE INTO dropped_docs (doc_id) VALUES (?1)", [&doc])?;
            trimmed.dropped.push(id);
        }
        tx.commit()?;
        if !trimmed.dropped.is_empty() {
            for id in &trimmed.dropped {
                self.loaded.borrow_mut().forget(*id);
            }
            // Give the freed pages back (a replica created before auto_vacuum keeps them for
            // its next documents) and fold the WAL into the file.
            self.conn.execute_batch("PRAGMA incremental_vacuum")?;
            self.checkpoint()?;
        }
        Ok(trimmed)
    }

    /// Dropped documents the server has not been told of yet, at most `max`.
    pub(crate) fn dropped_unreported(&self, max: usize) -> Result<Vec<DocId>, ReplicaError> {
        let mut stmt = self.conn.prepare_cached("SELECT doc_id FROM dropped_docs ORDER BY doc_id LIMIT ?1")?;
        let ids = stmt.query_map([max as i64], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// The server answered a request that named `docs` as dropped.
    pub fn dropped_reported(&self, docs: &[DocId]) -> Result<(), ReplicaError> {
        let mut stmt = self.conn.prepare_cached("DELETE FROM dropped_docs WHERE doc_id = ?1")?;
        for d in docs {
            stmt.execute([d.to_string()])?;
        }
        Ok(())
    }

    /// Take a document fetched whole by id (`GET /v1/docs/{doc}/automerge`): checked like a
    /// pull (bounded decode, identity, scope), stored as acknowledged by the server.
    pub fn adopt_fetched(&mut self, id: DocId, bytes: &[u8]) -> Result<(), ReplicaError> {
        let bad = |e: &dyn std::fmt::Display| ReplicaError::BadResponse(format!("doc {id}: {e}"));
        let scope = self.scope()?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held = self.loaded.borrow_mut().take(&tx, id)?;
        let mut am = held.unwrap_or_else(Automerge::new);
        am.set_actor(self.device.actor_for(incarnation_in(&tx)?));
        let mut used = guard::Usage::default();
        guard::apply(&mut am, bytes, &guard::Budget::PULL, &mut used).map_err(|e| bad(&e))?;
        if !am.get_missing_deps(&[]).is_empty() {
            return Err(bad(&"fetched document did not load whole"));
        }
        let meta = doc::read_meta(&am)?;
        if meta.doc_id() != id {
            return Err(bad(&"identity differs from its content"));
        }
        if let Some(scope) = &scope
            && !scope.allows(&meta.posyandu)
        {
            return Err(bad(&"outside this device's scope"));
        }
        save_doc(&tx, id, &am, false)?;
        let heads = Heads::new(am.get_heads()).to_bytes();
        // Acknowledged up to what came, unless this device holds more (then it is pushed).
        tx.execute(
            "UPDATE docs SET server_heads = ?2, dirty = (heads != ?2) WHERE doc_id = ?1",
            params![id.to_string(), heads],
        )?;
        tx.execute("DELETE FROM dropped_docs WHERE doc_id = ?1", [id.to_string()])?;
        tx.commit()?;
        Ok(())
    }
}

/// Every session: its date (from its visits; from the document itself if it has none) and
/// whether the server holds all of it.
fn old_sessions(tx: &Transaction<'_>) -> Result<Vec<(DocId, Option<time::Date>, bool)>, ReplicaError> {
    let rows: Vec<(String, Option<String>, bool)> = tx
        .prepare(
            "SELECT doc_id, (SELECT MIN(session_date) FROM visits v WHERE v.doc_id = docs.doc_id),
                    dirty = 0 AND rejected IS NULL AND piece = 0 AND heads = server_heads
             FROM docs WHERE kind = 'session' ORDER BY 2, doc_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (doc, date, synced) in rows {
        let Ok(id) = doc.parse::<DocId>() else { continue };
        let date = match date.as_deref().and_then(posync_model::record::parse_date) {
            Some(d) => Some(d),
            // A session without visits: read its date from the document.
            None => stored::load_doc(tx, id)?.and_then(|am| doc::read_meta(&am).ok()).and_then(|m| m.date),
        };
        out.push((id, date, synced));
    }
    Ok(out)
}
