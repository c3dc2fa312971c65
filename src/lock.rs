//! Which of several BBS servers on one store acts: the one holding the `bbs` lock, taken in
//! locket when `locket_address` is set (upstream's way, bbs-reference §10), or otherwise in the
//! store's own `locks` table with the same rules and expiry, so two servers on one MySQL,
//! PostgreSQL or etcd store are active/passive with no extra process.

use std::sync::Arc;
use std::time::Duration;

use bbs_actors::ExternalCells;
use bbs_locket::client::GrpcLocket;
use bbs_locket::runner::LockRunner;
use bbs_locket::service::LocalLocket;
use bbs_locket::table::LockTable;
use bbs_locket::Locket;
use bbs_store::Store;
use slog::Logger;

use crate::config::{ConfigError, Settings};
use crate::locket_cells::LocketCells;

/// How often a server holding its lock in the store re-reads the lock row. The TTL starts
/// when a row version is first seen, so this bounds how late a passive server notices a dead
/// holder.
const STORE_LOCK_SWEEP: Duration = Duration::from_secs(1);

/// The lock runner and, with locket, where cells come from.
pub struct Activity {
    pub runner: LockRunner,
    pub cells: Option<ExternalCells>,
    local: Option<LocalLocket>,
}

impl Activity {
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        log: &Logger,
    ) -> Result<Activity, ConfigError> {
        let owner = match settings.uuid.as_deref().filter(|u| !u.is_empty()) {
            Some(uuid) => uuid.to_owned(),
            None => {
                let generated = uuid::Uuid::new_v4().to_string();
                slog::warn!(log, "uuid-not-set"; "detail" => "set uuid: a random lock owner is used", "owner" => &generated);
                generated
            }
        };
        let lock = settings.lock_settings(owner);
        let log = log.new(slog::o!("component" => "lock"));
        match settings.locket_client()? {
            Some(client) => {
                let channel = bbs_locket::client::channel(&client)
                    .map_err(|e| crate::config::bad(e.key, e.reason))?;
                let for_lock: Arc<dyn Locket> =
                    Arc::new(GrpcLocket::new(channel.clone(), lock.retry_interval));
                let for_cells: Arc<dyn Locket> =
                    Arc::new(GrpcLocket::new(channel, settings.db_connection_timeout));
                slog::info!(log, "lock-in-locket"; "locket_address" => &client.address);
                Ok(Activity {
                    runner: LockRunner::new(for_lock, lock, None, log.clone()),
                    cells: Some(ExternalCells(Arc::new(LocketCells {
                        locket: for_cells,
                        log: log.new(slog::o!("component" => "locket-cells")),
                    }))),
                    local: None,
                })
            }
            None => {
                let local =
                    LocalLocket::start(LockTable::new(store), STORE_LOCK_SWEEP, log.clone());
                let wake = Some(local.expirer().released());
                slog::info!(log, "lock-in-store");
                Ok(Activity {
                    runner: LockRunner::new(Arc::new(local.clone()), lock, wake, log),
                    cells: None,
                    local: Some(local),
                })
            }
        }
    }

    /// Stops the store lock's expiry timers (nothing to stop with locket).
    pub fn stop(&self) {
        if let Some(local) = &self.local {
            local.expirer().stop();
        }
    }
}
