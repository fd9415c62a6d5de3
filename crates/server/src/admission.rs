//! Who may sync now: at most `syncs_in_flight_max` syncs are worked on at once; the next
//! `syncs_waiting_max` wait their turn, first come first served, for at most
//! `sync_wait_ms_max`, holding at most `sync_waiting_bytes_max` of request bodies between
//! them; anyone past that is answered `503 overloaded` with `Retry-After`.
//!
//! A sync is let in after its body arrived: a place counts the server's work, not a 2G
//! phone's upload. So a sync in line holds its body, and the line is bounded in bytes too.
//!
//! Why a short queue rather than refusing at once: when a city's kader reconnect in the same
//! minute, a refused phone sleeps a second or more before it retries, and the server sits
//! idle in between; refused phones come back together. Waiting a few seconds in line keeps
//! the server busy and serves them in the order they came, so the last phone is done when
//! the work is done, not when its backoff ends. The wait is bounded well inside a phone's
//! stall timeout, and the line is bounded: past it, refusing at once is the honest answer.

use posync_proto::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a sync was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The line was full.
    LineFull,
    /// Its turn did not come within the wait bound.
    WaitedTooLong,
}

/// The sync admission gate. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    working: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    waiting_bytes: Arc<AtomicUsize>,
    waiting_max: usize,
    waiting_bytes_max: usize,
    wait_max: Duration,
}

/// A sync's place among those worked on; dropping it lets the next one in.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Takes one place and `bytes` in the line; gives them back when dropped (also when the
/// wait is cancelled).
struct InLine<'a> {
    waiting: &'a AtomicUsize,
    waiting_bytes: &'a AtomicUsize,
    bytes: usize,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.waiting_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            working: Arc::new(Semaphore::new(limits.syncs_in_flight_max)),
            waiting: Arc::new(AtomicUsize::new(0)),
            waiting_bytes: Arc::new(AtomicUsize::new(0)),
            waiting_max: limits.syncs_waiting_max,
            waiting_bytes_max: limits.sync_waiting_bytes_max,
            wait_max: Duration::from_millis(limits.sync_wait_ms_max),
        }
    }

    /// Let a sync whose body is `body_bytes` long in: at once if a place is free, else after
    /// those before it in line.
    pub async fn enter(&self, body_bytes: usize) -> Result<Admitted, Refused> {
        if let Ok(permit) = self.working.clone().try_acquire_owned() {
            return Ok(Admitted { _permit: permit });
        }
        let in_line = InLine { waiting: &self.waiting, waiting_bytes: &self.waiting_bytes, bytes: body_bytes };
        let places = self.waiting.fetch_add(1, Ordering::AcqRel);
        let bytes = self.waiting_bytes.fetch_add(body_bytes, Ordering::AcqRel);
        if places >= self.waiting_max || bytes.saturating_add(body_bytes) > self.waiting_bytes_max {
            return Err(Refused::LineFull);
        }
        let _in_line = in_line;
        match tokio::time::timeout(self.wait_max, self.working.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Admitted { _permit: permit }),
            // The semaphore is never closed; treat it as a full line if it were.
            Ok(Err(_)) => Err(Refused::LineFull),
            Err(_) => Err(Refused::WaitedTooLong),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(in_flight: usize, waiting: usize, wait_ms: u64) -> Admission {
        Admission::new(&Limits {
            syncs_in_flight_max: in_flight,
            syncs_waiting_max: waiting,
            sync_wait_ms_max: wait_ms,
            sync_waiting_bytes_max: 1_000,
            ..Limits::default()
        })
    }

    fn waiting(gate: &Admission) -> usize {
        gate.waiting.load(Ordering::Acquire)
    }

    /// A sync with a body of `bytes` that has taken its place in line (the places are full).
    async fn in_line(gate: &Admission, bytes: usize) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let before = waiting(gate);
        let task = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(bytes).await.map(drop) }
        });
        while waiting(gate) == before {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test]
    async fn a_sync_past_the_places_waits_its_turn_and_gets_in_when_one_is_free() {
        let gate = gate(1, 4, 10_000);
        let first = gate.enter(10).await.expect("a free place");
        let next = in_line(&gate, 10).await;
        assert!(!next.is_finished(), "it waits while the place is taken");
        drop(first);
        assert_eq!(next.await.expect("task"), Ok(()));
        assert_eq!(waiting(&gate), 0, "the line is empty again");
    }

    #[tokio::test]
    async fn past_the_line_a_sync_is_refused_at_once() {
        let gate = gate(1, 1, 10_000);
        let _first = gate.enter(10).await.expect("a free place");
        let waiter = in_line(&gate, 10).await;
        assert_eq!(gate.enter(10).await.err(), Some(Refused::LineFull));
        assert_eq!(waiting(&gate), 1, "the refused one took no place in line");
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(waiting(&gate), 0, "a cancelled wait gives its place back");
    }

    #[tokio::test]
    async fn a_sync_whose_turn_does_not_come_in_time_is_refused() {
        let gate = gate(1, 8, 50);
        let _first = gate.enter(10).await.expect("a free place");
        assert_eq!(gate.enter(10).await.err(), Some(Refused::WaitedTooLong));
        assert_eq!(waiting(&gate), 0);
    }

    #[tokio::test]
    async fn bodies_past_the_lines_bytes_are_refused_at_once() {
        let gate = gate(1, 8, 10_000);
        let _first = gate.enter(10).await.expect("a free place");
        let waiter = in_line(&gate, 600).await;
        assert_eq!(gate.enter(500).await.err(), Some(Refused::LineFull), "600 + 500 bytes > 1,000");
        assert_eq!(waiting(&gate), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!((waiting(&gate), gate.waiting_bytes.load(Ordering::Acquire)), (0, 0), "all given back");
    }

    #[tokio::test]
    async fn with_no_line_a_busy_server_refuses_at_once() {
        let gate = gate(1, 0, 10_000);
        let _first = gate.enter(10).await.expect("a free place");
        assert_eq!(gate.enter(10).await.err(), Some(Refused::LineFull));
    }
}
