//! Releases locks and presences whose owner stopped refreshing them (upstream: locket's lock
//! pick and burglar). Every row version seen gets a timer of its TTL; a refresh bumps the
//! version and replaces the timer; a timer that fires releases the row only if it is still
//! the version seen. No clocks are compared, so the holders' and the watchers' clocks may
//! disagree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbs_store::LockRecord;
use slog::Logger;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::rules::Expiry;
use crate::table::LockTable;
use crate::PRESENCE_TYPE;

/// One timer per row identity (key and modified id), for its newest index seen.
type Timers = HashMap<(String, String), (i64, AbortHandle)>;

#[derive(Clone)]
pub struct Expirer {
    table: LockTable,
    timers: Arc<Mutex<Timers>>,
    released: Arc<Notify>,
    log: Logger,
}

impl Expirer {
    pub fn new(table: LockTable, log: Logger) -> Self {
        Expirer {
            table,
            timers: Arc::default(),
            released: Arc::new(Notify::new()),
            log,
        }
    }

    /// Wakes whoever waits for a row to be released by expiry.
    pub fn released(&self) -> Arc<Notify> {
        Arc::clone(&self.released)
    }

    /// Starts the TTL of a row version, unless a newer version of it is already watched.
    pub fn watch(&self, row: LockRecord) {
        if row.owner.is_empty() {
            return;
        }
        let identity = (row.key.clone(), row.modified_id.clone());
        let Ok(mut timers) = self.timers.lock() else {
            return;
        };
        if let Some((index, timer)) = timers.get(&identity) {
            if *index >= row.modified_index {
                return;
            }
            timer.abort();
        }
        let index = row.modified_index;
        let this = self.clone();
        let timer = tokio::spawn(async move {
            let ttl = Duration::from_secs(u64::try_from(row.ttl).unwrap_or(0));
            tokio::time::sleep(ttl).await;
            this.expire(row).await;
        });
        timers.insert(identity, (index, timer.abort_handle()));
    }

    async fn expire(&self, seen: LockRecord) {
        let identity = (seen.key.clone(), seen.modified_id.clone());
        match self.table.expire(&seen).await {
            Ok(Expiry::Released) => {
                slog::info!(self.log, "lock-expired"; "key" => &seen.key, "owner" => &seen.owner, "type" => &seen.lock_type, "modified_index" => seen.modified_index);
                let kind = if seen.lock_type == PRESENCE_TYPE {
                    "presence"
                } else {
                    "lock"
                };
                metrics::counter!("locket_expirations_total", "type" => kind).increment(1);
                self.released.notify_waiters();
            }
            Ok(Expiry::Gone | Expiry::Refreshed) => {}
            Err(e) => {
                slog::error!(self.log, "failed-compare-and-release"; "key" => &seen.key, "error" => %e);
            }
        }
        if let Ok(mut timers) = self.timers.lock() {
            if timers.get(&identity).map(|(i, _)| *i) == Some(seen.modified_index) {
                timers.remove(&identity);
            }
        }
    }

    /// Watches every stored row now and every `interval`, so rows written by another process
    /// (a peer, or this one before a restart) expire too.
    pub async fn sweep(self, interval: Duration) {
        loop {
            match self.table.rows().await {
                Ok(rows) => rows.into_iter().for_each(|row| self.watch(row)),
                Err(e) => slog::error!(self.log, "failed-fetching-locks"; "error" => %e),
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Stops every timer (on shutdown).
    pub fn stop(&self) {
        if let Ok(mut timers) = self.timers.lock() {
            for (_, (_, timer)) in timers.drain() {
                timer.abort();
            }
        }
    }
}
