//! The storage actor pool: the only path from domain actors to the store.
//!
//! Each `StoreActor` runs one store operation at a time (an `AtomicResponse`), so the pool
//! size bounds concurrent database work and a full pool pushes back through the bounded
//! mailboxes. Work goes to the least-loaded actor, so one slow write does not hold up requests
//! queued behind it while other actors are idle. The actors are spread over the given
//! arbiters, so the pool is not limited to one core.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, ArbiterHandle, AsyncContext, AtomicResponse, Context, Handler, Message,
    WrapFuture,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use bbs_store::{Backend, RecordWrite, Store, StoreError, StoreResult};

use crate::error::BbsResult;
use crate::group_commit::GroupCommit;
use crate::mailbox::{Mailbox, Metered};

type StoreWork<R> = Box<dyn FnOnce(Arc<dyn Store>) -> BoxFuture<'static, StoreResult<R>> + Send>;

/// One store operation.
pub struct StoreOp<R> {
    work: StoreWork<R>,
    /// When the operation fails as the store being away (db_read_timeout or db_write_timeout
    /// after it was asked for, its wait in the mailbox included); `None` waits as long as the
    /// store takes. One still queued at its deadline is never started, so a write reported
    /// failed cannot run later.
    deadline: Option<(std::time::Instant, Duration)>,
}

impl<R: 'static> Message for StoreOp<R> {
    type Result = StoreResult<R>;
}

pub struct StoreActor {
    store: Arc<dyn Store>,
    capacity: usize,
    /// One actor of the pool exports the connection pool's state.
    reports_pool: bool,
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
        if self.reports_pool {
            export_pool_stats(self.store.as_ref());
            ctx.run_interval(POOL_REPORT_INTERVAL, |actor, _| {
                export_pool_stats(actor.store.as_ref())
            });
        }
    }
}

/// Whether the store answered the last operation: 0 while it is away (refused, reset or
/// silent past the timeout), back to 1 with the first answer after.
pub(crate) fn note_availability<R>(result: &StoreResult<R>) {
    let available = !matches!(result, Err(StoreError::Unavailable(_)));
    metrics::gauge!("bbs_store_available").set(if available { 1.0 } else { 0.0 });
}

/// How often the connection pool's state is exported (upstream: every 60 s).
const POOL_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Upstream's DBOpenConnections / DBWaitCount / DBWaitDuration, under Prometheus names.
fn export_pool_stats(store: &dyn Store) {
    if let Some(stats) = store.pool_stats() {
        metrics::gauge!("bbs_db_open_connections").set(f64::from(stats.open));
        metrics::gauge!("bbs_db_idle_connections").set(f64::from(stats.idle));
        metrics::counter!("bbs_db_wait_count_total").absolute(stats.waited);
        metrics::gauge!("bbs_db_wait_duration_seconds").set(stats.wait_time.as_secs_f64());
        metrics::counter!("bbs_db_pool_timeouts_total").absolute(stats.timed_out);
    }
}

impl<R: Send + 'static> Handler<Metered<StoreOp<R>>> for StoreActor {
    type Result = AtomicResponse<Self, StoreResult<R>>;

    fn handle(&mut self, message: Metered<StoreOp<R>>, _: &mut Self::Context) -> Self::Result {
        let op = message.open();
        // Spawned, so a write that has begun completes even if its caller goes away.
        let deadline = op.deadline;
        let work = match deadline {
            Some((at, limit)) if at <= std::time::Instant::now() => Err(limit),
            _ => Ok((op.work)(Arc::clone(&self.store))),
        };
        let running = tokio::spawn(async move {
            // Upstream's DBQueries* metrics, per store operation (one or a few statements).
            let in_flight = metrics::gauge!("bbs_db_queries_in_flight");
            in_flight.increment(1.0);
            let started = std::time::Instant::now();
            let timed_out = |limit: Duration| {
                StoreError::Unavailable(format!(
                    "no answer from the store in {}",
                    humantime::format_duration(limit)
                ))
            };
            let result = match (work, deadline) {
                (Err(limit), _) => Err(timed_out(limit)),
                (Ok(work), Some((at, limit))) => tokio::time::timeout_at(at.into(), work)
                    .await
                    .unwrap_or_else(|_| Err(timed_out(limit))),
                (Ok(work), None) => work.await,
            };
            in_flight.decrement(1.0);
            metrics::histogram!("bbs_db_query_seconds").record(started.elapsed().as_secs_f64());
            let outcome = if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            };
            note_availability(&result);
            metrics::counter!("bbs_db_queries_total", "result" => outcome).increment(1);
            result
        });
        AtomicResponse::new(Box::pin(
            async move {
                running
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Other(format!("store task failed: {e}"))))
            }
            .into_actor(self)
            .map(|result, _, _| result),
        ))
    }
}

/// Counts an operation against a shard until it is answered or abandoned.
struct LoadMark<'a>(&'a AtomicUsize);

impl<'a> LoadMark<'a> {
    fn new(load: &'a AtomicUsize) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        LoadMark(load)
    }
}

impl Drop for LoadMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shard {
    mailbox: Mailbox<StoreActor>,
    load: AtomicUsize,
}

/// The pool's actors, and the least-loaded choice among them.
#[derive(Clone)]
pub(crate) struct Runner {
    shards: Arc<[Shard]>,
    timeouts: StoreTimeouts,
}

/// How long a store read and a store write may take; `None` is unbounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreTimeouts {
    pub read: Option<Duration>,
    pub write: Option<Duration>,
}

impl StoreTimeouts {
    /// Upstream's settings, where 0 means no limit.
    pub fn new(read: Duration, write: Duration) -> Self {
        let bound = |d: Duration| (!d.is_zero()).then_some(d);
        StoreTimeouts {
            read: bound(read),
            write: bound(write),
        }
    }
}

impl Runner {
    /// Runs one store read on the least-loaded actor, bounded by the read timeout.
    pub(crate) async fn run<R, F, Fut>(&self, work: F) -> BbsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        Ok(self.run_bounded(self.timeouts.read, work).await?)
    }

    /// Runs one store write on the least-loaded actor, bounded by the write timeout; its
    /// failure stays a store error (the group commit tells them apart).
    pub(crate) async fn run_write<R, F, Fut>(&self, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        self.run_bounded(self.timeouts.write, work).await
    }

    async fn run_bounded<R, F, Fut>(&self, timeout: Option<Duration>, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        let shard = self
            .shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("StoragePool::start makes at least one actor");
        let _load = LoadMark::new(&shard.load);
        let op = StoreOp {
            work: Box::new(move |store| work(store).boxed()),
            deadline: timeout.map(|limit| (std::time::Instant::now() + limit, limit)),
        };
        // A closed mailbox (the server stopping) is the store being out of reach.
        shard
            .mailbox
            .call(op)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

/// A cloneable handle on the pool.
#[derive(Clone)]
pub struct StoragePool {
    runner: Runner,
    group_commit: GroupCommit,
    backend: Backend,
}

impl StoragePool {
    /// Starts `size` store actors over `arbiters` (round-robin), each with a mailbox of
    /// `capacity`, and the group commit in front of them.
    pub fn start(
        store: Arc<dyn Store>,
        size: usize,
        capacity: usize,
        timeouts: StoreTimeouts,
        arbiters: &[ArbiterHandle],
    ) -> Self {
        let backend = store.backend();
        let shards: Vec<Shard> = (0..size.max(1))
            .map(|i| {
                let store = Arc::clone(&store);
                let actor = StoreActor {
                    store,
                    capacity,
                    reports_pool: i == 0,
                };
                let addr = match arbiters.get(i % arbiters.len().max(1)) {
                    Some(arbiter) => StoreActor::start_in_arbiter(arbiter, move |_| actor),
                    None => actor.start(),
                };
                Shard {
                    mailbox: Mailbox::new(addr, "storage", capacity),
                    load: AtomicUsize::new(0),
                }
            })
            .collect();
        let runner = Runner {
            shards: shards.into(),
            timeouts,
        };
        let group_commit = GroupCommit::start(runner.clone(), backend, capacity, arbiters.first());
        StoragePool {
            runner,
            group_commit,
            backend,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one store read on the least-loaded actor.
    pub async fn run<R, F, Fut>(&self, work: F) -> BbsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        self.runner.run(work).await
    }

    /// Reads a whole table (start-up's load, a catch-up's versions) with no time bound:
    /// upstream's db_read_timeout bounds each network read, and a 250,000-row table takes
    /// seconds to read whole.
    pub async fn load<R, F, Fut>(&self, work: F) -> BbsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        Ok(self.runner.run_bounded(None, work).await?)
    }

    /// Runs one store write outside the group commit (domains, cells) on the least-loaded
    /// actor, bounded by the write timeout.
    pub async fn run_write<R, F, Fut>(&self, work: F) -> BbsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<R>> + Send + 'static,
    {
        Ok(self.runner.run_write(work).await?)
    }

    /// Writes one request's records (all or none) through the group commit: committed with
    /// whatever other requests' writes are waiting, answered once durable.
    pub async fn write(&self, writes: Vec<RecordWrite>) -> BbsResult<()> {
        self.group_commit.write(writes).await
    }
}
