//! The BBS domain actors, the storage actor pool they persist through, and the pure domain
//! rules they apply.
//!
//! Shape: each domain actor owns its records in memory, loaded at start-up; every change is
//! written through the storage pool before it is acknowledged, and reads are served from
//! memory. Per-record locks keep one record's changes in order without serializing others.

pub mod clock;
pub mod domains;
pub mod error;
pub mod keyed_lock;
pub mod mailbox;
pub mod rules;
pub mod storage;

use std::sync::Arc;

use actix::ArbiterHandle;
use bbs_store::Store;

pub use error::{BbsError, BbsResult};
pub use mailbox::Mailbox;
pub use storage::StoragePool;

/// Sizes of the actor system, from the server configuration.
#[derive(Clone, Debug)]
pub struct ActorSettings {
    /// Storage actors, and so concurrent store operations.
    pub storage_actors: usize,
    /// Messages each actor's mailbox holds before senders wait.
    pub mailbox_capacity: usize,
}

/// Handles on every started actor; what the HTTP front door talks to.
#[derive(Clone)]
pub struct Bbs {
    pub storage: StoragePool,
    pub domains: Mailbox<domains::DomainActor>,
}

impl Bbs {
    /// Starts the actors over an opened, migrated store, loading their records.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &ActorSettings,
        arbiters: &[ArbiterHandle],
    ) -> BbsResult<Bbs> {
        let storage = StoragePool::start(
            store,
            settings.storage_actors,
            settings.mailbox_capacity,
            arbiters,
        );
        let domains =
            domains::DomainActor::start(storage.clone(), settings.mailbox_capacity).await?;
        Ok(Bbs { storage, domains })
    }
}
