//! The BBS domain actors, the storage actor pool they persist through, and the pure domain
//! rules they apply.
//!
//! Shape: each domain actor owns its records in memory, loaded at start-up; every change is
//! written through the storage pool before it is acknowledged, and reads are served from
//! memory. Per-record locks keep one record's changes in order without serializing others.

pub mod actual_lrps;
pub mod auctioneer;
pub mod callbacks;
pub mod cells;
pub mod clock;
pub mod codec;
pub mod converger;
pub mod desired_lrps;
pub mod desired_table;
pub mod domains;
pub mod encryptor;
pub mod error;
pub mod events;
mod group_commit;
mod instance_table;
pub mod keyed_lock;
pub mod keyring;
mod load;
pub mod lrp_records;
pub mod lrps;
pub mod mailbox;
pub mod outbound;
pub mod rep;
pub mod rules;
pub mod shared_map;
pub mod standby;
pub mod storage;
pub mod tasks;
pub mod write_through;

use std::sync::Arc;
use std::time::Duration;

use actix::ArbiterHandle;
use bbs_store::Store;
use slog::Logger;

use auctioneer::AuctioneerClient;
use callbacks::CallbackQueue;
use codec::Codec;

pub use error::{BbsError, BbsResult};
pub use mailbox::Mailbox;
pub use outbound::OutboundTls;
pub use storage::StoragePool;

/// Task guids waiting for a callback worker; past this, the next sweep picks them up.
const CALLBACK_QUEUE_CAPACITY: usize = 10_000;

/// Sizes and collaborators of the actor system, from the server configuration.
#[derive(Clone, Debug)]
pub struct ActorSettings {
    /// Storage actors, and so concurrent store operations.
    pub storage_actors: usize,
    /// Bounds on each store read and write (db_read_timeout, db_write_timeout).
    pub store_timeouts: storage::StoreTimeouts,
    /// Messages each actor's mailbox holds before senders wait.
    pub mailbox_capacity: usize,
    pub auctioneer_address: Option<String>,
    /// Timeout of outbound calls (auctioneer, reps, callbacks); zero means none.
    pub communication_timeout: Duration,
    pub max_task_retries: u32,
    pub task_callback_workers: usize,
    /// How long an undelivered task callback waits before it is tried again.
    pub kick_task_duration: Duration,
    /// The encryption keys; `None` stores records unencrypted.
    pub encryption: Option<Arc<keyring::KeyRing>>,
    pub events: events::HubSettings,
    pub converge_repeat_interval: Duration,
    pub expire_pending_task_duration: Duration,
    pub expire_completed_task_duration: Duration,
    pub convergence_workers: usize,
    /// TLS of the calls to the auctioneer, reps and task callbacks.
    pub outbound_tls: OutboundTls,
    /// Where cells are learnt from when not from this server's own registry (locket).
    pub cell_directory: Option<ExternalCells>,
    /// Start without acting (no convergence, no callbacks) until [`Bbs::activate`]: a server
    /// waiting for the lock.
    pub standby: bool,
}

/// Whether this server acts: shared by the parts that act on their own (convergence, the
/// callback sweeps), which do nothing while it stands by.
#[derive(Clone, Debug, Default)]
pub struct Activation(Arc<std::sync::atomic::AtomicBool>);

impl Activation {
    pub fn is_active(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set(&self, active: bool) {
        self.0.store(active, std::sync::atomic::Ordering::Release);
    }
}

/// A cell directory supplied from outside the actors (locket's presences).
#[derive(Clone)]
pub struct ExternalCells(pub cells::Directory);

impl std::fmt::Debug for ExternalCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalCells")
    }
}

impl Default for ActorSettings {
    fn default() -> Self {
        ActorSettings {
            storage_actors: 8,
            store_timeouts: storage::StoreTimeouts::new(
                Duration::from_secs(600),
                Duration::from_secs(600),
            ),
            mailbox_capacity: 1024,
            auctioneer_address: None,
            communication_timeout: Duration::from_secs(10),
            max_task_retries: 3,
            task_callback_workers: 1000,
            kick_task_duration: Duration::from_secs(30),
            encryption: None,
            events: events::HubSettings::default(),
            converge_repeat_interval: Duration::from_secs(30),
            expire_pending_task_duration: Duration::from_secs(30 * 60),
            expire_completed_task_duration: Duration::from_secs(120),
            convergence_workers: 20,
            outbound_tls: OutboundTls::default(),
            cell_directory: None,
            standby: false,
        }
    }
}

/// Handles on every started actor; what the HTTP front door talks to.
#[derive(Clone)]
pub struct Bbs {
    pub storage: StoragePool,
    pub domains: Mailbox<domains::DomainActor>,
    pub tasks: Mailbox<tasks::TaskActor>,
    /// The tasks as the task actor holds them, for reads outside its mailbox.
    pub task_table: tasks::TaskTable,
    pub lrps: lrps::Lrps,
    pub encryptor: Mailbox<encryptor::EncryptorActor>,
    pub events: events::EventHub,
    /// The HTTP-registered cells (used when no locket is configured).
    pub cells: Mailbox<cells::CellActor>,
    /// Where every cell lookup goes: the registry above, or locket.
    pub directory: cells::Directory,
    /// False when cells come from locket: registering over HTTP would be invisible.
    pub registers_cells: bool,
    pub active: Activation,
    pub converger: Mailbox<converger::ConvergerActor>,
}

impl Bbs {
    /// Starts the actors over an opened, migrated store, loading their records.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &ActorSettings,
        arbiters: &[ArbiterHandle],
        log: &Logger,
    ) -> BbsResult<Bbs> {
        let storage = StoragePool::start(
            store,
            settings.storage_actors,
            settings.mailbox_capacity,
            settings.store_timeouts,
            arbiters,
        );
        let domains =
            domains::DomainActor::start(storage.clone(), settings.mailbox_capacity).await?;
        let codec = match &settings.encryption {
            Some(keys) => Codec::with_keys(Arc::clone(keys)),
            None => Codec::new(),
        };
        encryptor::check_recorded_label(&storage, &codec).await?;
        let events = events::EventHub::new(settings.events);
        let cells = cells::CellActor::start(storage.clone(), log).await?;
        let directory: cells::Directory = match &settings.cell_directory {
            Some(ExternalCells(directory)) => Arc::clone(directory),
            None => Arc::new(cells::RegisteredCells {
                mailbox: cells.clone(),
            }),
        };
        let tls = &settings.outbound_tls;
        let rep = rep::RepClient::new(settings.communication_timeout, tls.rep.clone())?;
        let auctioneer = AuctioneerClient::new(
            settings.auctioneer_address.clone(),
            settings.communication_timeout,
            tls,
        )?;
        // Desired and actual LRPs load together: one's read overlaps the other's decoding.
        let ((desired, desired_table), actual) = futures::try_join!(
            desired_lrps::DesiredLrpActor::start(
                storage.clone(),
                codec.clone(),
                settings.mailbox_capacity,
                log,
                events.clone(),
            ),
            actual_lrps::ActualLrps::start(
                storage.clone(),
                codec.clone(),
                arbiters.len().max(1),
                settings.mailbox_capacity,
                arbiters,
                log,
                events.clone(),
            )
        )?;
        let lrps = lrps::Lrps {
            desired,
            desired_table,
            actual,
            auctioneer: auctioneer.clone(),
            cells: directory.clone(),
            rep: rep.clone(),
            log: log.new(slog::o!("component" => "lrps")),
        };
        let active = Activation::default();
        let (callbacks, callback_receiver) = CallbackQueue::new(CALLBACK_QUEUE_CAPACITY);
        let (tasks, task_table) = tasks::TaskActor::start(tasks::TaskActorDeps {
            storage: storage.clone(),
            codec: codec.clone(),
            auctioneer,
            callbacks,
            max_task_retries: settings.max_task_retries,
            redelivery_delay: settings.kick_task_duration,
            mailbox_capacity: settings.mailbox_capacity,
            log: log.new(slog::o!("actor" => "tasks")),
            events: events.clone(),
            cells: directory.clone(),
            rep,
            active: active.clone(),
        })
        .await?;
        callbacks::start_workers(
            callback_receiver,
            settings.task_callback_workers,
            tasks.clone(),
            crate::outbound::http_client(
                settings.communication_timeout,
                settings.outbound_tls.callbacks.as_ref(),
                "ca_file",
            )?,
            log.new(slog::o!("component" => "task-callbacks")),
        );
        let encryptor = encryptor::EncryptorActor::start(
            storage.clone(),
            codec.clone(),
            log.new(slog::o!("actor" => "encryptor")),
        );
        let nanos = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        let converger = converger::ConvergerActor::start(
            lrps.clone(),
            domains.clone(),
            tasks.clone(),
            converger::ConvergerSettings {
                interval: settings.converge_repeat_interval,
                timing: rules::convergence::TaskTiming {
                    kick: nanos(settings.kick_task_duration),
                    expire_pending: nanos(settings.expire_pending_task_duration),
                    expire_completed: nanos(settings.expire_completed_task_duration),
                },
                workers: settings.convergence_workers,
            },
            active.clone(),
        );
        let bbs = Bbs {
            storage,
            domains,
            tasks,
            task_table,
            lrps,
            encryptor,
            events,
            cells,
            directory,
            registers_cells: settings.cell_directory.is_none(),
            active,
            converger,
        };
        if !settings.standby {
            bbs.activate().await?;
        }
        Ok(bbs)
    }

    /// Stops acting on its own (convergence, callback sweeps), before the lock is given up.
    pub fn deactivate(&self) {
        self.active.set(false);
    }

    /// Starts acting: the callbacks owed from before are queued, and convergence and the
    /// callback sweeps run from now on.
    pub async fn activate(&self) -> BbsResult<()> {
        if self.active.is_active() {
            return Ok(());
        }
        self.active.set(true);
        tasks::TaskActor::deliver_owed_callbacks(&self.tasks).await?;
        Ok(())
    }
}
